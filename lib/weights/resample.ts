/**
 * Bicubic resampling on the CPU, as PyTorch's `F.interpolate(mode="bicubic", align_corners=False)`
 * (with or without `antialias`), and {@link resamplePosEmbed}: timm's `resample_abs_pos_embed`, which
 * adapts a ViT's learned position embeddings to another patch grid.
 *
 * @module
 */

/** Cubic convolution kernel with parameter `a` (PyTorch: -0.75 plain, -0.5 antialiased). */
function cubic(x: number, a: number): number {
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** For each output position: the input indices and weights along one axis. */
function axisWeights(
  inSize: number,
  outSize: number,
  antialias: boolean,
): { idx: Int32Array; w: Float64Array; taps: number } {
  const scale = inSize / outSize;
  if (antialias) {
    // PyTorch's _upsample_bicubic2d_aa (PIL-style separable filter, a = -0.5, support widened when downsampling).
    const support = scale >= 1 ? 2 * scale : 2;
    const invscale = scale >= 1 ? 1 / scale : 1;
    const taps = Math.ceil(support) * 2 + 1;
    const idx = new Int32Array(outSize * taps);
    const w = new Float64Array(outSize * taps);
    for (let i = 0; i < outSize; i++) {
      const center = scale * (i + 0.5);
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xsize = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      let total = 0;
      for (let j = 0; j < Math.min(xsize, taps); j++) {
        const v = cubic((j + xmin - center + 0.5) * invscale, -0.5);
        idx[i * taps + j] = xmin + j;
        w[i * taps + j] = v;
        total += v;
      }
      if (total !== 0) { for (let j = 0; j < taps; j++) w[i * taps + j] /= total; }
    }
    return { idx, w, taps };
  }
  const taps = 4;
  const idx = new Int32Array(outSize * taps);
  const w = new Float64Array(outSize * taps);
  for (let i = 0; i < outSize; i++) {
    const src = scale * (i + 0.5) - 0.5;
    const x0 = Math.floor(src);
    const t = src - x0;
    for (let j = 0; j < 4; j++) {
      idx[i * taps + j] = Math.min(Math.max(x0 - 1 + j, 0), inSize - 1);
      w[i * taps + j] = cubic(t - (j - 1), -0.75);
    }
  }
  return { idx, w, taps };
}

/**
 * Resizes an `[h, w, c]` (channels-last) float image to `[outH, outW, c]` with bicubic
 * interpolation, matching PyTorch's `F.interpolate(..., mode="bicubic", align_corners=False,
 * antialias=antialias)` up to float rounding.
 *
 * @example
 * ```ts
 * const up = resizeBicubic(new Float32Array(2 * 2), 2, 2, 1, 4, 4); // [4, 4, 1]
 * ```
 */
export function resizeBicubic(
  data: Float32Array,
  h: number,
  w: number,
  c: number,
  outH: number,
  outW: number,
  options: { antialias?: boolean } = {},
): Float32Array {
  if (data.length !== h * w * c) {
    throw new Error(`resizeBicubic: ${data.length} values do not make an image [${h}, ${w}, ${c}]`);
  }
  if (!(outH >= 1 && outW >= 1)) {
    throw new Error(`resizeBicubic: output size [${outH}, ${outW}] is not positive`);
  }
  const aa = options.antialias ?? false;
  const ax = axisWeights(w, outW, aa);
  const ay = axisWeights(h, outH, aa);
  // Along W.
  const tmp = new Float64Array(h * outW * c);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < outW; x++) {
      for (let j = 0; j < ax.taps; j++) {
        const wt = ax.w[x * ax.taps + j];
        if (wt === 0) continue;
        const src = (y * w + ax.idx[x * ax.taps + j]) * c;
        const dst = (y * outW + x) * c;
        for (let k = 0; k < c; k++) tmp[dst + k] += wt * data[src + k];
      }
    }
  }
  // Along H.
  const out = new Float32Array(outH * outW * c);
  const acc = new Float64Array(c);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      acc.fill(0);
      for (let j = 0; j < ay.taps; j++) {
        const wt = ay.w[y * ay.taps + j];
        if (wt === 0) continue;
        const src = (ay.idx[y * ay.taps + j] * outW + x) * c;
        for (let k = 0; k < c; k++) acc[k] += wt * tmp[src + k];
      }
      out.set(acc, (y * outW + x) * c);
    }
  }
  return out;
}

/**
 * Resamples position embeddings `[1, P + g², D]` (P prefix tokens, e.g. CLS, kept as they are) to a
 * `newGrid`×`newGrid` patch grid, as timm's `resample_abs_pos_embed` (bicubic, antialias on by default).
 *
 * @example
 * ```ts
 * const { data, shape } = resamplePosEmbed(pos, [1, 197, 384], 8); // 14x14 -> 8x8: [1, 65, 384]
 * ```
 */
export function resamplePosEmbed(
  data: Float32Array,
  shape: number[],
  newGrid: number,
  options: { prefixTokens?: number; antialias?: boolean } = {},
): { data: Float32Array; shape: number[] } {
  const prefix = options.prefixTokens ?? 1;
  if (shape.length !== 3 || shape[0] !== 1) {
    throw new Error(`resamplePosEmbed: shape [${shape}] is not [1, tokens, dim]`);
  }
  const [, t, d] = shape;
  const n = t - prefix;
  const g = Math.round(Math.sqrt(n));
  if (g * g !== n) {
    throw new Error(
      `resamplePosEmbed: ${n} patch positions (${t} tokens - ${prefix} prefix) are not a square grid`,
    );
  }
  if (g === newGrid) return { data: data.slice(), shape: [...shape] };
  const grid = resizeBicubic(data.subarray(prefix * d), g, g, d, newGrid, newGrid, {
    antialias: options.antialias ?? true,
  });
  const out = new Float32Array((prefix + newGrid * newGrid) * d);
  out.set(data.subarray(0, prefix * d), 0);
  out.set(grid, prefix * d);
  return { data: out, shape: [1, prefix + newGrid * newGrid, d] };
}
