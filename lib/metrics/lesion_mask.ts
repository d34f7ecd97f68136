/**
 * CAMELYON16's evaluation mask: the annotated tumour, grown by 75 µm / 2 (so lesions closer than the size of
 * about five tumour cells merge into one), holes filled, split into 8-connected lesions; lesions whose major
 * axis is shorter than 275 µm are isolated tumour cells (ITC), which the lesion-level FROC neither rewards nor
 * penalises.
 *
 * @module
 */

/** Challenge constants, in micrometres. */
export const CAMELYON16_EVAL = Object.freeze({
  /** Lesions within this distance of each other merge (the mask is grown by half of it). */
  mergeDistanceUm: 75,
  /** Lesions whose major axis is shorter than this are isolated tumour cells (excluded). */
  itcMajorAxisUm: 275,
});

/** Options of {@link lesionMask}. */
export interface LesionMaskOptions {
  /** Micrometres per level-0 pixel of the slide (CAMELYON16: about 0.243). */
  mpp: number;
  /** Level-0 pixels per mask pixel (the resolution the tumour raster was drawn at). */
  scale: number;
  /** Merge distance in µm (default 75: the mask is grown by half of it). */
  mergeDistanceUm?: number;
  /** ITC threshold on the major axis in µm (default 275). */
  itcMajorAxisUm?: number;
}

/** Labelled lesions of one slide. */
export interface LesionMask {
  width: number;
  height: number;
  /** Level-0 pixels per mask pixel. */
  scale: number;
  /** 0 outside lesions, else the lesion number 1..count. */
  labels: Int32Array;
  /** Number of lesions (ITC included). */
  count: number;
  /** `itc[k - 1]` is true when lesion `k` is an isolated tumour cell cluster (excluded from FROC). */
  itc: boolean[];
  /** Major axis of each lesion in µm (the moments ellipse, as scikit-image's `regionprops`). */
  majorAxisUm: number[];
}

/** Exact squared Euclidean distance (in pixels) to the nearest `mask` pixel (Felzenszwalb & Huttenlocher). */
function squaredDistance(mask: Uint8Array, w: number, h: number): Float64Array {
  const INF = 1e20;
  const d = new Float64Array(w * h);
  for (let i = 0; i < d.length; i++) d[i] = mask[i] ? 0 : INF;
  const n = Math.max(w, h);
  const f = new Float64Array(n), out = new Float64Array(n), z = new Float64Array(n + 1);
  const v = new Int32Array(n);
  const pass = (len: number, get: (i: number) => number, set: (i: number, x: number) => void) => {
    for (let i = 0; i < len; i++) f[i] = get(i);
    let k = 0;
    v[0] = 0;
    z[0] = -Infinity;
    z[1] = Infinity;
    for (let q = 1; q < len; q++) {
      let s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
      while (s <= z[k]) {
        k--;
        s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
      }
      k++;
      v[k] = q;
      z[k] = s;
      z[k + 1] = Infinity;
    }
    k = 0;
    for (let q = 0; q < len; q++) {
      while (z[k + 1] < q) k++;
      out[q] = (q - v[k]) * (q - v[k]) + f[v[k]];
    }
    for (let i = 0; i < len; i++) set(i, out[i]);
  };
  for (let x = 0; x < w; x++) pass(h, (y) => d[y * w + x], (y, val) => (d[y * w + x] = val));
  for (let y = 0; y < h; y++) pass(w, (x) => d[y * w + x], (x, val) => (d[y * w + x] = val));
  return d;
}

/** Sets to 1 every 0-pixel not 4-connected to the border (scipy's `binary_fill_holes`). */
function fillHoles(m: Uint8Array, w: number, h: number): void {
  const outside = new Uint8Array(w * h);
  const stack: number[] = [];
  const push = (i: number) => {
    if (!m[i] && !outside[i]) {
      outside[i] = 1;
      stack.push(i);
    }
  };
  for (let x = 0; x < w; x++) {
    push(x);
    push((h - 1) * w + x);
  }
  for (let y = 0; y < h; y++) {
    push(y * w);
    push(y * w + w - 1);
  }
  while (stack.length) {
    const i = stack.pop()!, x = i % w, y = (i - x) / w;
    if (x > 0) push(i - 1);
    if (x < w - 1) push(i + 1);
    if (y > 0) push(i - w);
    if (y < h - 1) push(i + w);
  }
  for (let i = 0; i < m.length; i++) if (!outside[i]) m[i] = 1;
}

/**
 * Builds the evaluation mask of one tumour slide from its tumour raster (`width x height`, 1 = tumour,
 * `scale` level-0 pixels per pixel, e.g. from `rasterizeAnnotations`), following the CAMELYON16 evaluation:
 * grow by 37.5 µm, fill holes, label 8-connected lesions, flag lesions with a major axis under 275 µm as ITC.
 *
 * @example
 * ```ts
 * const gt = rasterizeAnnotations(ann, w, h, 32);
 * const lesions = lesionMask(gt, w, h, { mpp: 0.243, scale: 32 });
 * console.log(lesions.count, lesions.itc);
 * ```
 */
export function lesionMask(
  tumour: Uint8Array,
  width: number,
  height: number,
  opts: LesionMaskOptions,
): LesionMask {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new Error(`lesionMask(): width and height must be positive integers, got ${width}x${height}`);
  }
  if (tumour.length !== width * height) {
    throw new Error(`lesionMask(): tumour has ${tumour.length} pixels, expected ${width}x${height}`);
  }
  if (!(opts.mpp > 0) || !(opts.scale > 0)) {
    throw new Error(`lesionMask(): mpp and scale must be positive, got mpp ${opts.mpp}, scale ${opts.scale}`);
  }
  const umPerPixel = opts.mpp * opts.scale;
  const grow = (opts.mergeDistanceUm ?? CAMELYON16_EVAL.mergeDistanceUm) / 2 / umPerPixel;
  const d2 = squaredDistance(tumour, width, height);
  const m = new Uint8Array(width * height);
  for (let i = 0; i < m.length; i++) m[i] = d2[i] < grow * grow ? 1 : 0;
  fillHoles(m, width, height);
  // 8-connected components
  const labels = new Int32Array(width * height);
  const mom: { n: number; sx: number; sy: number; sxx: number; syy: number; sxy: number }[] = [];
  let count = 0;
  const stack: number[] = [];
  for (let s = 0; s < m.length; s++) {
    if (!m[s] || labels[s]) continue;
    const id = ++count;
    const acc = { n: 0, sx: 0, sy: 0, sxx: 0, syy: 0, sxy: 0 };
    labels[s] = id;
    stack.push(s);
    while (stack.length) {
      const i = stack.pop()!, x = i % width, y = (i - x) / width;
      acc.n++;
      acc.sx += x;
      acc.sy += y;
      acc.sxx += x * x;
      acc.syy += y * y;
      acc.sxy += x * y;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const j = yy * width + xx;
          if (m[j] && !labels[j]) {
            labels[j] = id;
            stack.push(j);
          }
        }
      }
    }
    mom.push(acc);
  }
  const itcUm = opts.itcMajorAxisUm ?? CAMELYON16_EVAL.itcMajorAxisUm;
  const majorAxisUm = mom.map(({ n, sx, sy, sxx, syy, sxy }) => {
    const mx = sx / n, my = sy / n;
    const a = sxx / n - mx * mx, c = syy / n - my * my, b = sxy / n - mx * my;
    const l1 = (a + c) / 2 + Math.sqrt(((a - c) / 2) ** 2 + b * b);
    return 4 * Math.sqrt(Math.max(0, l1)) * umPerPixel;
  });
  return {
    width,
    height,
    scale: opts.scale,
    labels,
    count,
    itc: majorAxisUm.map((a) => a < itcUm),
    majorAxisUm,
  };
}
