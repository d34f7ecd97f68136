/**
 * CAMELYON16-style evaluation of slide inference, and the efficiency question at slide scale: how slide AUC and
 * lesion FROC change with the fraction of tissue patches read at high resolution, when the patches are chosen by
 * the CNN (top-k), at random, or all of them are read.
 *
 * Each slide is passed through both models once over every patch ({@link slidePasses}, via `inferSlide`); every
 * setting is then a subset of those reads. Its wall time is composed from the measured times of the two passes:
 * the CNN pass (for CNN-guided selection and CNN alone) plus the measured seconds per high-resolution read times
 * the patches read.
 *
 * @module
 */
import {
  detectionsFromMap,
  froc,
  type FrocResult,
  type FrocSlide,
  type LesionMask,
  lesionMask,
  slideAuc,
} from "../metrics/mod.ts";
import { Rng } from "../util/mod.ts";
import { rasterizeAnnotations, type SlideAnnotations } from "./annotations.ts";
import type { PatchCoords } from "./coords_file.ts";
import type { SlideSource } from "./slide.ts";
import {
  type Heatmap,
  inferSlide,
  patchHeatmap,
  type SlideInferenceOptions,
  type SlidePatchModels,
} from "./slide_inference.ts";

/** Both models' outputs over every patch of one slide. */
export interface SlidePasses {
  id: string;
  coords: PatchCoords;
  /** CNN tumour probability of every patch (coords order). */
  cnn: Float32Array;
  /** High-resolution model's tumour probability of every patch (coords order). */
  vit: Float32Array;
  /** Measured seconds: the whole CNN pass, and the high-resolution pass per patch. */
  seconds: { cnn: number; vitPerPatch: number };
}

/**
 * Runs the CNN (`models.score`) and the high-resolution model (`models.classify`) over every patch of a slide.
 *
 * @example
 * ```ts
 * const pass = await slidePasses("tumor_001", slide, coords, { score: cnnProb, classify: vitProb });
 * ```
 */
export async function slidePasses(
  id: string,
  slide: SlideSource,
  coords: PatchCoords,
  models: SlidePatchModels,
  opts: Omit<SlideInferenceOptions, "topK"> = {},
): Promise<SlidePasses> {
  const n = coords.x.length;
  if (n === 0) throw new Error(`slidePasses(): slide "${id}" has no patches`);
  const r = await inferSlide(slide, coords, models, { ...opts, topK: n });
  const vit = new Float32Array(n);
  r.selected.forEach((i, k) => (vit[i] = r.probs[k]));
  return {
    id,
    coords,
    cnn: r.scores,
    vit,
    seconds: { cnn: r.seconds.score, vitPerPatch: r.seconds.classify / n },
  };
}

/** How a setting reads a slide. */
export type ReadMode = "cnn-only" | "cnn-topk" | "random" | "all";

/** One slide read under one setting. */
export interface SettingRead {
  /** Tumour probability map (one pixel per patch side): NaN where nothing was read. */
  map: Heatmap;
  /** Slide score: the largest probability read. */
  score: number;
  /** Patches read at high resolution. */
  read: number;
  /** Composed wall time (see the module notes). */
  seconds: number;
}

/**
 * One slide under one setting: `"cnn-only"` uses the CNN probabilities everywhere; `"cnn-topk"` reads the
 * `fraction` of patches the CNN ranks highest at high resolution; `"random"` reads a seeded random `fraction`;
 * `"all"` reads every patch.
 *
 * @example
 * ```ts
 * const r = readSetting(pass, "cnn-topk", 0.1);
 * ```
 */
export function readSetting(pass: SlidePasses, mode: ReadMode, fraction = 1, seed = 0): SettingRead {
  const { coords, cnn, vit, seconds } = pass;
  const n = cnn.length, scale = coords.patchSize * coords.downsample;
  if (mode === "cnn-only") {
    let best = 0;
    for (const p of cnn) best = Math.max(best, p);
    return { map: patchHeatmap(coords, cnn, scale), score: best, read: 0, seconds: seconds.cnn };
  }
  if (!(fraction > 0 && fraction <= 1)) {
    throw new Error(`readSetting(): fraction must be in (0, 1], got ${fraction}`);
  }
  const k = mode === "all" ? n : Math.max(1, Math.round(fraction * n));
  let order: ArrayLike<number>;
  if (mode === "cnn-topk") {
    order = Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => cnn[b] - cnn[a] || a - b);
  } else if (mode === "random") order = new Rng(seed).permutation(n);
  else if (mode === "all") order = Int32Array.from({ length: n }, (_, i) => i);
  else {throw new Error(
      `readSetting(): mode must be "cnn-only", "cnn-topk", "random" or "all", got "${mode}"`,
    );}
  const sel = Int32Array.from(Array.prototype.slice.call(order, 0, k) as number[]);
  const probs = Float32Array.from(sel, (i) => vit[i]);
  let score = 0;
  for (const p of probs) score = Math.max(score, p);
  return {
    map: patchHeatmap(coords, probs, scale, sel),
    score,
    read: k,
    seconds: (mode === "cnn-topk" ? seconds.cnn : 0) + k * seconds.vitPerPatch,
  };
}

/** Ground truth of one slide for the evaluation. */
export interface SlideTruth {
  /** Tumour slide (has metastases, ITC-only included) or normal. */
  tumour: boolean;
  /** Lesions (tumour slides): see {@link slideLesions}. */
  lesions?: LesionMask;
}

/**
 * The CAMELYON16 lesion mask of a slide from its annotations, at `scale` level-0 pixels per mask pixel.
 *
 * @example
 * ```ts
 * const lesions = slideLesions(slide.annotations(), slide.dimensions, 0.25, 32);
 * ```
 */
export function slideLesions(
  ann: SlideAnnotations,
  size: readonly [number, number],
  mpp: number,
  scale = 32,
): LesionMask | undefined {
  if (ann.tumour.length === 0) return undefined;
  const w = Math.ceil(size[0] / scale), h = Math.ceil(size[1] / scale);
  return lesionMask(rasterizeAnnotations(ann, w, h, scale), w, h, { mpp, scale });
}

/** One row of the evaluation: a setting over all slides. */
export interface SettingResult {
  mode: ReadMode;
  /** Fraction of tissue patches read at high resolution. */
  fraction: number;
  /** Slide-level AUC (tumour vs normal slides). */
  auc: number;
  /** FROC score (mean sensitivity at 1/4..8 FPs per slide) and the curve. */
  froc: number;
  curve: FrocResult;
  /** Composed wall time over all slides (seconds). */
  seconds: number;
}

/** Options of {@link evaluateSetting}. */
export interface EvaluateOptions {
  /** Lowest probability kept as a detection (default 0.05). */
  detectionThreshold?: number;
  /** Non-maximum suppression radius in level-0 pixels (default: 1.5 patch sides). */
  nmsRadius?: number;
  /** Seed of random selection (default 0; slide `i` uses `seed + i`). */
  seed?: number;
}

/**
 * Slide AUC, lesion FROC and composed wall time of one setting over a set of slides.
 *
 * @example
 * ```ts
 * const row = evaluateSetting(passes, truths, "cnn-topk", 0.1);
 * console.log(row.auc, row.froc, row.seconds);
 * ```
 */
export function evaluateSetting(
  passes: readonly SlidePasses[],
  truths: readonly SlideTruth[],
  mode: ReadMode,
  fraction = 1,
  opts: EvaluateOptions = {},
): SettingResult & { reads: SettingRead[] } {
  if (passes.length !== truths.length) {
    throw new Error(`evaluateSetting(): ${passes.length} slides but ${truths.length} truths`);
  }
  const reads = passes.map((p, i) => readSetting(p, mode, fraction, (opts.seed ?? 0) + i));
  const frocSlides: FrocSlide[] = reads.map((r, i) => ({
    detections: detectionsFromMap(r.map, {
      threshold: opts.detectionThreshold ?? 0.05,
      radius: opts.nmsRadius ?? 1.5 * r.map.scale,
    }),
    lesions: truths[i].lesions,
  }));
  const curve = froc(frocSlides);
  const auc = slideAuc(truths.map((t) => t.tumour), reads.map((r) => r.score)).auc;
  return {
    mode,
    fraction: mode === "cnn-only" ? 0 : mode === "all" ? 1 : fraction,
    auc,
    froc: curve.score,
    curve,
    seconds: reads.reduce((a, r) => a + r.seconds, 0),
    reads,
  };
}
