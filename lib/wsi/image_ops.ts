/**
 * Small 8-bit image operations used by tissue segmentation: HSV saturation, median blur, Otsu's
 * threshold, binary morphology and connected components. Pure functions on typed arrays.
 *
 * @module
 */
import type { RasterImage } from "./pixels.ts";

/**
 * The HSV saturation channel (0..255, OpenCV's convention `255 * (max - min) / max`) of an RGB image.
 *
 * @example
 * ```ts
 * saturation({ width: 1, height: 1, channels: 3, data: new Uint8Array([255, 0, 0]) }); // [255]
 * ```
 */
export function saturation(img: RasterImage): Uint8Array {
  if (img.channels !== 3 && img.channels !== 4) {
    throw new Error(`saturation(): expected an RGB or RGBA image, got ${img.channels} channel(s)`);
  }
  const n = img.width * img.height, c = img.channels, d = img.data;
  const out = new Uint8Array(n);
  for (let p = 0, q = 0; p < n; p++, q += c) {
    const r = d[q], g = d[q + 1], b = d[q + 2];
    const max = r > g ? (r > b ? r : b) : (g > b ? g : b);
    const min = r < g ? (r < b ? r : b) : (g < b ? g : b);
    out[p] = max === 0 ? 0 : Math.round((255 * (max - min)) / max);
  }
  return out;
}

/**
 * Median filter with a `k x k` window (odd `k`), edges replicated. Huang's sliding-histogram algorithm,
 * so the cost grows with `k`, not `k^2`.
 *
 * @example
 * ```ts
 * const smooth = medianBlur(new Uint8Array([0, 255, 0, 0, 0, 0, 0, 0, 0]), 3, 3, 3); // all zeros
 * ```
 */
export function medianBlur(src: Uint8Array, width: number, height: number, k: number): Uint8Array {
  if (!Number.isInteger(k) || k < 1 || k % 2 === 0) {
    throw new Error(`medianBlur(): kernel size must be an odd positive integer, got ${k}`);
  }
  if (src.length !== width * height) {
    throw new Error(`medianBlur(): ${src.length} values do not match ${width}x${height}`);
  }
  if (k === 1) return src.slice();
  const r = k >> 1, half = (k * k) >> 1;
  const out = new Uint8Array(width * height);
  const hist = new Int32Array(256);
  const cx = (x: number) => (x < 0 ? 0 : x >= width ? width - 1 : x);
  const rowOf = (y: number) => (y < 0 ? 0 : y >= height ? height - 1 : y) * width;
  const rows = new Int32Array(k);
  for (let y = 0; y < height; y++) {
    for (let j = 0; j < k; j++) rows[j] = rowOf(y - r + j);
    hist.fill(0);
    for (let dx = -r; dx <= r; dx++) {
      const x = cx(dx);
      for (let j = 0; j < k; j++) hist[src[rows[j] + x]]++;
    }
    let m = 0, ltm = 0;
    while (ltm + hist[m] <= half) ltm += hist[m++];
    out[y * width] = m;
    for (let x = 1; x < width; x++) {
      const xo = cx(x - r - 1), xi = cx(x + r);
      for (let j = 0; j < k; j++) {
        const vo = src[rows[j] + xo];
        hist[vo]--;
        if (vo < m) ltm--;
        const vi = src[rows[j] + xi];
        hist[vi]++;
        if (vi < m) ltm++;
      }
      while (ltm > half) ltm -= hist[--m];
      while (ltm + hist[m] <= half) ltm += hist[m++];
      out[y * width + x] = m;
    }
  }
  return out;
}

/**
 * Otsu's threshold: the value `t` maximising the between-class variance of `v <= t` vs `v > t`.
 *
 * @example
 * ```ts
 * otsuThreshold(new Uint8Array([10, 10, 200, 200])); // a value in [10, 200)
 * ```
 */
export function otsuThreshold(values: Uint8Array): number {
  const hist = new Float64Array(256);
  for (let i = 0; i < values.length; i++) hist[values[i]]++;
  const total = values.length;
  if (total === 0) return 0;
  let sumAll = 0;
  for (let i = 0; i < 256; i++) sumAll += i * hist[i];
  let w0 = 0, sum0 = 0, best = 0, bestVar = -1;
  for (let t = 0; t < 256; t++) {
    w0 += hist[t];
    if (w0 === 0) continue;
    const w1 = total - w0;
    if (w1 === 0) break;
    sum0 += t * hist[t];
    const m0 = sum0 / w0, m1 = (sumAll - sum0) / w1;
    const v = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (v > bestVar) {
      bestVar = v;
      best = t;
    }
  }
  return best;
}

function slide1d(
  src: Uint8Array,
  dst: Uint8Array,
  width: number,
  height: number,
  horizontal: boolean,
  lo: number,
  hi: number,
  dilate: boolean,
): void {
  // dst(p) = any/all of src over [p - lo, p + hi] along one axis; outside pixels ignored.
  const len = horizontal ? width : height, lines = horizontal ? height : width;
  const step = horizontal ? 1 : width;
  const prefix = new Int32Array(len + 1);
  for (let l = 0; l < lines; l++) {
    const base = horizontal ? l * width : l;
    for (let i = 0; i < len; i++) prefix[i + 1] = prefix[i] + (src[base + i * step] ? 1 : 0);
    for (let i = 0; i < len; i++) {
      const a = Math.max(0, i - lo), b = Math.min(len - 1, i + hi);
      const ones = prefix[b + 1] - prefix[a];
      dst[base + i * step] = dilate ? (ones > 0 ? 1 : 0) : (ones === b - a + 1 ? 1 : 0);
    }
  }
}

/**
 * Binary dilation (`op = "dilate"`) or erosion (`"erode"`) with a `k x k` square; pixels outside the
 * image do not count (so erosion does not eat tissue at the border).
 *
 * @example
 * ```ts
 * morph(new Uint8Array([0, 0, 0, 0, 1, 0, 0, 0, 0]), 3, 3, 3, "dilate"); // all ones
 * ```
 */
export function morph(
  mask: Uint8Array,
  width: number,
  height: number,
  k: number,
  op: "dilate" | "erode",
): Uint8Array {
  if (!Number.isInteger(k) || k < 1) {
    throw new Error(`morph(): kernel size must be a positive integer, got ${k}`);
  }
  const a = k >> 1, b = k - 1 - a;
  // erosion uses the reflected window so that closing = erode(dilate(x)) contains x for even k too
  const [lo, hi] = op === "dilate" ? [a, b] : [b, a];
  const tmp = new Uint8Array(mask.length), out = new Uint8Array(mask.length);
  slide1d(mask, tmp, width, height, true, lo, hi, op === "dilate");
  slide1d(tmp, out, width, height, false, lo, hi, op === "dilate");
  return out;
}

/**
 * Morphological closing (dilate then erode) with a `k x k` square: fills gaps narrower than `k`.
 *
 * @example
 * ```ts
 * const closed = closing(mask, w, h, 4);
 * ```
 */
export function closing(mask: Uint8Array, width: number, height: number, k: number): Uint8Array {
  if (k <= 1) return mask.slice();
  return morph(morph(mask, width, height, k, "dilate"), width, height, k, "erode");
}

/** Result of {@link connectedComponents}. */
export interface Components {
  /** Per pixel: component id (1..count), 0 for pixels not of the wanted value. */
  labels: Int32Array;
  /** Number of components. */
  count: number;
  /** `areas[id]`: pixel count of component `id` (index 0 unused). */
  areas: Int32Array;
  /** `touchesBorder[id]`: 1 when the component reaches the image border. */
  touchesBorder: Uint8Array;
  /** `firstPixel[id]`: raster index of the component's first pixel (top-most, then left-most). */
  firstPixel: Int32Array;
}

/**
 * Labels the connected components of pixels equal to `value` (1 = foreground, 0 = background), with
 * 8- or 4-connectivity.
 *
 * @example
 * ```ts
 * const { count } = connectedComponents(new Uint8Array([1, 0, 0, 1]), 2, 2, { connectivity: 4 }); // 2
 * ```
 */
export function connectedComponents(
  mask: Uint8Array,
  width: number,
  height: number,
  opts: { value?: 0 | 1; connectivity?: 4 | 8 } = {},
): Components {
  const want = opts.value ?? 1, conn = opts.connectivity ?? 8;
  const n = width * height;
  const labels = new Int32Array(n);
  const stack = new Int32Array(n);
  const areas: number[] = [0], border: number[] = [0], first: number[] = [-1];
  const isWanted = (i: number) => (want === 1 ? mask[i] !== 0 : mask[i] === 0);
  let count = 0;
  for (let start = 0; start < n; start++) {
    if (labels[start] !== 0 || !isWanted(start)) continue;
    const id = ++count;
    let top = 0, area = 0, touches = 0;
    stack[top++] = start;
    labels[start] = id;
    while (top > 0) {
      const p = stack[--top];
      area++;
      const x = p % width, y = (p - x) / width;
      if (x === 0 || y === 0 || x === width - 1 || y === height - 1) touches = 1;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          if ((dx === 0 && dy === 0) || (conn === 4 && dx !== 0 && dy !== 0)) continue;
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const q = yy * width + xx;
          if (labels[q] === 0 && isWanted(q)) {
            labels[q] = id;
            stack[top++] = q;
          }
        }
      }
    }
    areas.push(area);
    border.push(touches);
    first.push(start);
  }
  return {
    labels,
    count,
    areas: Int32Array.from(areas),
    touchesBorder: Uint8Array.from(border),
    firstPixel: Int32Array.from(first),
  };
}

/**
 * Box-downsamples an RGB(A)/grey image by an integer `factor` (each output pixel = mean of a block).
 *
 * @example
 * ```ts
 * const small = downsampleBox(img, 4);
 * ```
 */
export function downsampleBox(img: RasterImage, factor: number): RasterImage {
  if (!Number.isInteger(factor) || factor < 1) {
    throw new Error(`downsampleBox(): factor must be a positive integer, got ${factor}`);
  }
  if (factor === 1) return img;
  const w = Math.max(1, Math.floor(img.width / factor)), h = Math.max(1, Math.floor(img.height / factor));
  const c = img.channels;
  const out = new Uint8Array(w * h * c);
  const acc = new Float64Array(w * c);
  for (let y = 0; y < h; y++) {
    acc.fill(0);
    let rowsUsed = 0;
    for (let sy = y * factor; sy < Math.min(img.height, (y + 1) * factor); sy++) {
      rowsUsed++;
      const base = sy * img.width * c;
      for (let x = 0; x < w; x++) {
        for (let sx = x * factor; sx < Math.min(img.width, (x + 1) * factor); sx++) {
          for (let ch = 0; ch < c; ch++) acc[x * c + ch] += img.data[base + sx * c + ch];
        }
      }
    }
    for (let x = 0; x < w; x++) {
      const cols = Math.min(img.width, (x + 1) * factor) - x * factor;
      for (let ch = 0; ch < c; ch++) {
        out[(y * w + x) * c + ch] = Math.round(acc[x * c + ch] / (cols * rowsUsed));
      }
    }
  }
  return { width: w, height: h, channels: c, data: out };
}

function areaWeights(inLen: number, outLen: number): { start: Int32Array; weights: Float64Array[] } {
  const scale = inLen / outLen;
  const start = new Int32Array(outLen);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outLen; o++) {
    const a = o * scale, b = Math.min(inLen, (o + 1) * scale);
    const i0 = Math.floor(a), i1 = Math.min(inLen - 1, Math.ceil(b) - 1);
    const w = new Float64Array(i1 - i0 + 1);
    for (let i = i0; i <= i1; i++) w[i - i0] = (Math.min(b, i + 1) - Math.max(a, i)) / (b - a);
    start[o] = i0;
    weights.push(w);
  }
  return { start, weights };
}

/**
 * Resizes an 8-bit image by exact area averaging (any ratio; best for shrinking, like OpenCV's INTER_AREA).
 *
 * @example
 * ```ts
 * const small = resizeArea(patch, 32, 32);
 * ```
 */
export function resizeArea(img: RasterImage, outW: number, outH: number): RasterImage {
  if (!(Number.isInteger(outW) && Number.isInteger(outH) && outW > 0 && outH > 0)) {
    throw new Error(`resizeArea(): output size must be positive integers, got ${outW}x${outH}`);
  }
  if (outW === img.width && outH === img.height) return img;
  const c = img.channels;
  const hx = areaWeights(img.width, outW), hy = areaWeights(img.height, outH);
  const tmp = new Float64Array(outW * img.height * c);
  for (let y = 0; y < img.height; y++) {
    const row = y * img.width * c;
    for (let ox = 0; ox < outW; ox++) {
      const w = hx.weights[ox], s = hx.start[ox];
      for (let ch = 0; ch < c; ch++) {
        let acc = 0;
        for (let k = 0; k < w.length; k++) acc += w[k] * img.data[row + (s + k) * c + ch];
        tmp[(y * outW + ox) * c + ch] = acc;
      }
    }
  }
  const out = new Uint8Array(outW * outH * c);
  for (let oy = 0; oy < outH; oy++) {
    const w = hy.weights[oy], s = hy.start[oy];
    for (let i = 0; i < outW * c; i++) {
      let acc = 0;
      for (let k = 0; k < w.length; k++) acc += w[k] * tmp[(s + k) * outW * c + i];
      out[oy * outW * c + i] = Math.round(acc);
    }
  }
  return { width: outW, height: outH, channels: c, data: out };
}
