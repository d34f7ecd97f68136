/**
 * Slide-level inference with CNN-guided selection: a cheap CNN scores every tissue patch from a
 * low-resolution view, the expensive model (the ViT) reads only the top-k patches at high resolution, and the
 * slide gets a score and heatmaps over its thumbnail. The models are callbacks, so any model (or a stub) fits.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { Progress } from "../util/mod.ts";
import type { PatchCoords } from "./coords_file.ts";
import { mapConcurrent } from "./extract_patches.ts";
import { readPatch } from "./read_patch.ts";
import type { SlideSource } from "./slide.ts";

/** What a model returns per image: a typed array, a plain array or a tensor `[B]` / `[B, 1]`. */
export type PerImageOutput = Float32Array | number[] | tf.Tensor;

/** The two models of slide inference. Inputs are `[B, S, S, 3]` float32 after `preprocess`; do not dispose them. */
export interface SlidePatchModels {
  /** Importance of each low-resolution patch (higher = more worth a high-resolution look). */
  score(x: tf.Tensor4D): PerImageOutput | Promise<PerImageOutput>;
  /** Tumour probability (0..1) of each high-resolution patch. */
  classify(x: tf.Tensor4D): PerImageOutput | Promise<PerImageOutput>;
}

/** Options of {@link inferSlide}. */
export interface SlideInferenceOptions {
  /** Side of the low-resolution patches given to `score` (default 32). */
  lowSize?: number;
  /** Side of the high-resolution patches given to `classify` (default: the patch size of `coords`). */
  highSize?: number;
  /** Patches given to `classify`: a count (>= 1) or a fraction of all patches (< 1). Default 0.1. */
  topK?: number;
  /** Images per model call (default 32). */
  batchSize?: number;
  /** Slide score from the top-k probabilities: `"max"` (default), `"mean"`, or `"noisyOr"`. */
  aggregate?: "max" | "mean" | "noisyOr";
  /** Level-0 pixels per heatmap pixel (default 64). */
  heatmapDownsample?: number;
  /** Turns `[B, S, S, 3]` bytes into model input (default: `/255`, then `(x - mean) / std` when given). */
  preprocess?: (bytes: tf.Tensor4D) => tf.Tensor4D;
  /** Per-channel normalisation for the default `preprocess` (0..1 units). */
  mean?: readonly number[];
  /** See `mean`. */
  std?: readonly number[];
  /** Show progress bars (default false). */
  progress?: boolean;
  /** Called after each batch with the stage (`"score"` or `"classify"`) and patches done of its total. */
  onProgress?: (stage: "score" | "classify", done: number, total: number) => void;
}

/** A per-pixel float map over the slide, `scale` level-0 pixels per pixel; NaN where no patch lies. */
export interface Heatmap {
  width: number;
  height: number;
  scale: number;
  data: Float32Array;
}

/** What {@link inferSlide} returns. */
export interface SlideInference {
  /** Aggregated slide score (tumour probability). */
  slideScore: number;
  /** CNN score of every patch (coords order). */
  scores: Float32Array;
  /** Indices (into coords) of the patches `classify` saw, best score first. */
  selected: Int32Array;
  /** `classify` probability of each selected patch (same order as `selected`). */
  probs: Float32Array;
  /** CNN scores painted over the slide (max where patches overlap). */
  scoreHeatmap: Heatmap;
  /** Probabilities of the selected patches painted over the slide. */
  probHeatmap: Heatmap;
  /** Seconds spent scoring and classifying (reads included). */
  seconds: { score: number; classify: number };
}

async function toArray(out: PerImageOutput, n: number, what: string): Promise<Float32Array> {
  let arr: Float32Array;
  if (out instanceof tf.Tensor) {
    try {
      arr = Float32Array.from(await out.data() as Float32Array);
    } finally {
      out.dispose();
    }
  } else arr = Float32Array.from(out);
  if (arr.length !== n) {
    throw new Error(`inferSlide(): ${what} returned ${arr.length} values for ${n} images`);
  }
  return arr;
}

async function runBatches(
  slide: SlideSource,
  coords: PatchCoords,
  indices: ArrayLike<number>,
  side: number,
  fn: (x: tf.Tensor4D) => PerImageOutput | Promise<PerImageOutput>,
  opts: SlideInferenceOptions,
  label: string,
): Promise<Float32Array> {
  const bs = opts.batchSize ?? 32, n = indices.length;
  const out = new Float32Array(n);
  const size0 = coords.patchSize * coords.downsample;
  const bar = new Progress(n, { label, unit: "patch", silent: !opts.progress });
  const pre = opts.preprocess ?? ((b: tf.Tensor4D) => {
    let x = tf.div(tf.cast(b, "float32"), 255) as tf.Tensor4D;
    if (opts.mean && opts.std) x = tf.div(tf.sub(x, tf.tensor1d([...opts.mean])), tf.tensor1d([...opts.std]));
    return x;
  });
  for (let b = 0; b < n; b += bs) {
    const m = Math.min(bs, n - b);
    const bytes = new Uint8Array(m * side * side * 3);
    await mapConcurrent(Array.from({ length: m }, (_, k) => k), 4, async (k) => {
      const i = indices[b + k];
      const img = await readPatch(slide, coords.x[i], coords.y[i], size0, side);
      bytes.set(img.data, k * side * side * 3);
    });
    const x = tf.tidy(() => pre(tf.tensor4d(bytes, [m, side, side, 3], "int32")));
    try {
      out.set(await toArray(await fn(x), m, label), b);
    } finally {
      x.dispose();
    }
    bar.increment(m);
    opts.onProgress?.(label as "score" | "classify", b + m, n);
  }
  await bar.stop();
  return out;
}

function paint(coords: PatchCoords, idx: ArrayLike<number>, values: ArrayLike<number>, hm: Heatmap): void {
  const size0 = coords.patchSize * coords.downsample;
  for (let k = 0; k < idx.length; k++) {
    const i = idx[k];
    const x0 = Math.floor(coords.x[i] / hm.scale), y0 = Math.floor(coords.y[i] / hm.scale);
    const x1 = Math.min(hm.width, Math.max(x0 + 1, Math.round((coords.x[i] + size0) / hm.scale)));
    const y1 = Math.min(hm.height, Math.max(y0 + 1, Math.round((coords.y[i] + size0) / hm.scale)));
    for (let y = Math.max(0, y0); y < y1; y++) {
      for (let x = Math.max(0, x0); x < x1; x++) {
        const p = y * hm.width + x;
        if (!(hm.data[p] >= values[k])) hm.data[p] = values[k];
      }
    }
  }
}

/**
 * Paints one value per patch over the slide at `scale` level-0 pixels per pixel (max where patches overlap,
 * NaN where none lies). `indices` picks the patches `values` belong to (default: all, in order).
 *
 * @example
 * ```ts
 * const grid = patchHeatmap(coords, new Float32Array(coords.x.length).fill(1), 64); // where patches are
 * ```
 */
export function patchHeatmap(
  coords: PatchCoords,
  values: ArrayLike<number>,
  scale: number,
  indices?: ArrayLike<number>,
): Heatmap {
  if (!(scale > 0)) throw new Error(`patchHeatmap(): scale must be > 0, got ${scale}`);
  const idx = indices ?? Int32Array.from({ length: coords.x.length }, (_, i) => i);
  if (values.length !== idx.length) {
    throw new Error(`patchHeatmap(): ${values.length} values for ${idx.length} patches`);
  }
  const [W, H] = coords.slideSize;
  const width = Math.max(1, Math.ceil(W / scale)), height = Math.max(1, Math.ceil(H / scale));
  const hm: Heatmap = { width, height, scale, data: new Float32Array(width * height).fill(NaN) };
  paint(coords, idx, values, hm);
  return hm;
}

/**
 * Runs CNN-guided slide inference over the patches of `coords`.
 *
 * @example
 * ```ts
 * const r = await inferSlide(slide, coords, {
 *   score: (x) => cnn.predictScores(x),       // [B] importance
 *   classify: (x) => vit.predictTumour(x),    // [B] probability
 * }, { lowSize: 32, topK: 64 });
 * console.log(r.slideScore, r.selected.length);
 * ```
 */
export async function inferSlide(
  slide: SlideSource,
  coords: PatchCoords,
  models: SlidePatchModels,
  opts: SlideInferenceOptions = {},
): Promise<SlideInference> {
  const n = coords.x.length;
  const topKOpt = opts.topK ?? 0.1;
  if (!(topKOpt > 0)) {
    throw new Error(`inferSlide(): topK must be > 0 (a count or a fraction), got ${topKOpt}`);
  }
  const k = Math.min(n, topKOpt < 1 ? Math.max(1, Math.round(topKOpt * n)) : Math.floor(topKOpt));
  const lowSize = opts.lowSize ?? 32, highSize = opts.highSize ?? coords.patchSize;
  const t0 = performance.now();
  const all = Int32Array.from({ length: n }, (_, i) => i);
  const scores = await runBatches(slide, coords, all, lowSize, models.score.bind(models), opts, "score");
  const t1 = performance.now();
  const selected = all.slice().sort((a, b) => scores[b] - scores[a] || a - b).slice(0, k);
  const probs = await runBatches(
    slide,
    coords,
    selected,
    highSize,
    models.classify.bind(models),
    opts,
    "classify",
  );
  const t2 = performance.now();
  let slideScore = 0;
  const agg = opts.aggregate ?? "max";
  if (k > 0) {
    if (agg === "max") slideScore = probs.reduce((a, b) => Math.max(a, b), 0);
    else if (agg === "mean") slideScore = probs.reduce((a, b) => a + b, 0) / k;
    else if (agg === "noisyOr") {
      slideScore = 1 - probs.reduce((a, p) => a * (1 - Math.min(1, Math.max(0, p))), 1);
    } else throw new Error(`inferSlide(): aggregate must be "max", "mean" or "noisyOr", got "${agg}"`);
  }
  const scale = opts.heatmapDownsample ?? 64;
  const scoreHeatmap = patchHeatmap(coords, scores, scale);
  const probHeatmap = patchHeatmap(coords, probs, scale, selected);
  return {
    slideScore,
    scores,
    selected,
    probs,
    scoreHeatmap,
    probHeatmap,
    seconds: { score: (t1 - t0) / 1000, classify: (t2 - t1) / 1000 },
  };
}
