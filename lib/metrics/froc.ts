/**
 * CAMELYON16's lesion-level FROC: detections (a probability and a level-0 point each) are true positives when
 * they fall inside an annotated lesion (each lesion counted once, at its best detection), ignored when they
 * fall inside an isolated-tumour-cell lesion, false positives anywhere else (every detection on a normal slide
 * is one). The score is the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide.
 *
 * @module
 */
import type { LesionMask } from "./lesion_mask.ts";

/** False-positive rates (per slide) the challenge averages the sensitivity over. */
export const FROC_FP_RATES: readonly number[] = Object.freeze([0.25, 0.5, 1, 2, 4, 8]);

/** One detection: a probability and a level-0 point. */
export interface Detection {
  p: number;
  x: number;
  y: number;
}

/** One slide of the evaluation: its detections and, for a tumour slide, its lesion mask. */
export interface FrocSlide {
  detections: readonly Detection[];
  /** Lesions of a tumour slide; absent (or `undefined`) for a normal slide. */
  lesions?: LesionMask;
}

/** How each detection of one slide was counted. */
export interface SlideHits {
  /** Best probability per lesion (index k-1 for lesion k); 0 when missed; NaN for ITC lesions. */
  lesionProbs: Float64Array;
  /** Probabilities of the false positives. */
  fpProbs: number[];
  /** Detections that landed in ITC lesions (neither TP nor FP). */
  ignored: number;
  /** Detections that hit a lesion already hit by a better or equal detection. */
  duplicates: number;
}

/** What {@link froc} returns. */
export interface FrocResult {
  /** Operating points, threshold high to low: the first is (0 FPs, 0 sensitivity) at threshold Infinity. */
  thresholds: number[];
  /** Mean false positives per slide at each threshold. */
  fpsPerSlide: number[];
  /** Fraction of the (non-ITC) lesions detected at each threshold. */
  sensitivity: number[];
  /** Sensitivity at each of {@link FROC_FP_RATES} (linear interpolation between operating points). */
  sensitivityAt: number[];
  /** The FROC score: the mean of `sensitivityAt`. */
  score: number;
  /** Lesions counted (ITC excluded), slides, and how every detection was counted. */
  lesions: number;
  slides: number;
  perSlide: SlideHits[];
}

/**
 * Counts one slide's detections against its lesions (see the module notes).
 *
 * @example
 * ```ts
 * const hits = slideHits([{ p: 0.9, x: 1200, y: 800 }], lesions);
 * ```
 */
export function slideHits(detections: readonly Detection[], lesions?: LesionMask): SlideHits {
  const lesionProbs = new Float64Array(lesions?.count ?? 0);
  lesions?.itc.forEach((itc, k) => {
    if (itc) lesionProbs[k] = NaN;
  });
  const fpProbs: number[] = [];
  let ignored = 0, duplicates = 0;
  detections.forEach((d, i) => {
    if (!(d.p >= 0 && d.p <= 1) || !Number.isFinite(d.x) || !Number.isFinite(d.y)) {
      throw new Error(
        `slideHits(): detection ${i} must have p in [0, 1] and finite x, y, got ${JSON.stringify(d)}`,
      );
    }
    let label = 0;
    if (lesions) {
      const mx = Math.floor(d.x / lesions.scale), my = Math.floor(d.y / lesions.scale);
      if (mx >= 0 && my >= 0 && mx < lesions.width && my < lesions.height) {
        label = lesions.labels[my * lesions.width + mx];
      }
    }
    if (label === 0) fpProbs.push(d.p);
    else if (lesions!.itc[label - 1]) ignored++;
    else {
      if (lesionProbs[label - 1] > 0) duplicates++;
      lesionProbs[label - 1] = Math.max(lesionProbs[label - 1], d.p);
    }
  });
  return { lesionProbs, fpProbs, ignored, duplicates };
}

/**
 * The sensitivity at a false-positive rate on an FROC curve, with `np.interp`'s rule as the challenge's
 * evaluation code uses it: points in curve order (FP rate non-decreasing); at a rate between two points, the
 * linear interpolation from the last point at or below it to the next one; clamped at both ends.
 *
 * @example
 * ```ts
 * sensitivityAtFps([0, 1, 2], [0, 0.5, 0.75], 1.5); // 0.625
 * ```
 */
export function sensitivityAtFps(fps: readonly number[], sens: readonly number[], rate: number): number {
  if (fps.length === 0 || fps.length !== sens.length) {
    throw new Error(
      `sensitivityAtFps(): need equal, non-empty fps and sens, got ${fps.length} and ${sens.length}`,
    );
  }
  for (let i = 1; i < fps.length; i++) {
    if (fps[i] < fps[i - 1]) {
      throw new Error(`sensitivityAtFps(): fps must be non-decreasing, got ${fps[i]} after ${fps[i - 1]}`);
    }
  }
  if (rate < fps[0]) return sens[0];
  let j = 0;
  while (j + 1 < fps.length && fps[j + 1] <= rate) j++;
  if (j === fps.length - 1) return sens[j];
  return sens[j] + ((sens[j + 1] - sens[j]) * (rate - fps[j])) / (fps[j + 1] - fps[j]);
}

/**
 * The lesion-level FROC over a set of slides (tumour and normal), as CAMELYON16 defines it.
 *
 * @example
 * ```ts
 * const r = froc([{ detections: dets1, lesions: lesions1 }, { detections: dets2 }]); // tumour, normal
 * console.log(r.score, r.sensitivityAt);
 * ```
 */
export function froc(slides: readonly FrocSlide[], rates: readonly number[] = FROC_FP_RATES): FrocResult {
  if (slides.length === 0) throw new Error("froc(): no slides");
  const perSlide = slides.map((s) => slideHits(s.detections, s.lesions));
  const tp: number[] = [], fp: number[] = [];
  for (const h of perSlide) {
    for (const p of h.lesionProbs) if (!Number.isNaN(p)) tp.push(p);
    fp.push(...h.fpProbs);
  }
  const lesions = tp.length;
  if (lesions === 0) {
    throw new Error("froc(): no lesions (ITC excluded) in any slide; sensitivity is undefined");
  }
  // Operating points at every distinct detection probability (a missed lesion has 0: never counted).
  const ts = [...new Set([...tp.filter((p) => p > 0), ...fp.filter((p) => p > 0)])].sort((a, b) => b - a);
  tp.sort((a, b) => b - a);
  fp.sort((a, b) => b - a);
  const thresholds = [Infinity], fpsPerSlide = [0], sensitivity = [0];
  let i = 0, j = 0;
  for (const t of ts) {
    while (i < tp.length && tp[i] >= t) i++;
    while (j < fp.length && fp[j] >= t) j++;
    thresholds.push(t);
    fpsPerSlide.push(j / slides.length);
    sensitivity.push(i / lesions);
  }
  const sensitivityAt = rates.map((r) => sensitivityAtFps(fpsPerSlide, sensitivity, r));
  return {
    thresholds,
    fpsPerSlide,
    sensitivity,
    sensitivityAt,
    score: sensitivityAt.reduce((a, b) => a + b, 0) / sensitivityAt.length,
    lesions,
    slides: slides.length,
    perSlide,
  };
}

/** A probability map over a slide (`scale` level-0 pixels per pixel; NaN = not evaluated). */
export interface ProbabilityMap {
  width: number;
  height: number;
  scale: number;
  data: ArrayLike<number>;
}

/**
 * Detections from a probability map by non-maximum suppression: repeatedly take the most probable pixel at or
 * above `threshold`, report its centre (level-0), and suppress every pixel within `radius` level-0 pixels.
 *
 * @example
 * ```ts
 * const dets = detectionsFromMap(heatmap, { threshold: 0.5, radius: 256 });
 * ```
 */
export function detectionsFromMap(
  map: ProbabilityMap,
  opts: { threshold?: number; radius?: number } = {},
): Detection[] {
  const { width: w, height: h, scale } = map;
  if (map.data.length !== w * h) {
    throw new Error(`detectionsFromMap(): data has ${map.data.length} values, expected ${w}x${h}`);
  }
  const t = opts.threshold ?? 0.5, r = (opts.radius ?? 2 * scale) / scale;
  const order: number[] = [];
  for (let i = 0; i < w * h; i++) if (map.data[i] >= t) order.push(i);
  order.sort((a, b) => map.data[b] - map.data[a] || a - b);
  const gone = new Uint8Array(w * h);
  const out: Detection[] = [];
  const R = Math.floor(r);
  for (const i of order) {
    if (gone[i]) continue;
    const x = i % w, y = (i - x) / w;
    out.push({ p: Math.min(1, Math.max(0, map.data[i])), x: (x + 0.5) * scale, y: (y + 0.5) * scale });
    for (let dy = -R; dy <= R; dy++) {
      for (let dx = -R; dx <= R; dx++) {
        const xx = x + dx, yy = y + dy;
        if (xx >= 0 && yy >= 0 && xx < w && yy < h && dx * dx + dy * dy <= r * r) gone[yy * w + xx] = 1;
      }
    }
  }
  return out;
}
