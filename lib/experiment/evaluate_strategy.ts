/**
 * Evaluation of a trained model under a pruning strategy at a keep ratio, without training: accuracy,
 * GMACs, per-image labels / predictions / probabilities, and selection quality against ground-truth
 * patch masks when the dataset has them.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Dataset } from "../data/mod.ts";
import { meanSelectionQuality } from "../metrics/mod.ts";
import type { Hybrid, Model, ModelFamily } from "../models/mod.ts";
import { createStrategy, parseStrategy, singleStage, type StrategyName, vitOf } from "../pruning/mod.ts";
import { crossEntropy } from "../train/mod.ts";
import { Rng } from "../util/mod.ts";

/** Options of {@link evaluateStrategy}. */
export interface StrategyEvalOptions {
  strategy: StrategyName;
  /** Fraction of patch tokens kept, in (0, 1]; must be 1 for `"none"`. */
  keep: number;
  /** Block before which tokens are pruned (default 1 for `"attention"`, 0 otherwise). */
  location?: number;
  /**
   * Seed (default 0): `random` draws from `Rng(seed + 2)` restarted for every call, as the training run's
   * evaluation does, so a run's accuracy is reproduced with the run's seed.
   */
  seed?: number;
  /** Evaluation batch size (default 128). */
  batchSize?: number;
  /** EViT fusion of the dropped tokens into one extra token (random, attention, cnn; default false). */
  fuse?: boolean;
  /** Spread the kept tokens over `spread`×`spread` windows of the patch grid (see `spreadScores`). */
  spread?: number;
  /**
   * Hybrid with strategy `cnn`: the budget mode (a learned count of tokens per image, scores above 0;
   * `keep` is ignored). `gmacs` is then the mean over images of each image's cost; `budget` says more.
   */
  budget?: boolean;
  /** The budget mode's score threshold (default 0; see {@link calibrateBudgetThreshold}). */
  budgetThreshold?: number;
}

/** Mean selection precision / recall / F1 of kept patches against ground-truth masks. */
export interface SelectionSummary {
  precision: number;
  recall: number;
  f1: number;
  images: number;
}

/** What {@link evaluateStrategy} measured. */
export interface StrategyEval {
  strategy: StrategyName;
  keep: number;
  location: number;
  accuracy: number;
  /** GMACs per image (ViT at its real token counts, plus the scorer for `cnn`). */
  gmacs: number;
  labels: Int32Array;
  predictions: Int32Array;
  /** Class probabilities, `[n, classes]` row-major. */
  probs: Float32Array;
  /** Present when the dataset has patch masks on the model's ViT grid and tokens are pruned. */
  selection?: SelectionSummary;
  /** Mean cross-entropy (no label smoothing). */
  loss: number;
  /** Images per second of the evaluation (incl. data and metric overhead). */
  imgPerSec: number;
  /**
   * Budget mode: mean patch tokens kept per image, their spread, and the GMACs as run (each batch at its
   * largest count: what the padding costs) next to `gmacs` (each image at its own count).
   */
  budget?: { meanKept: number; minKept: number; maxKept: number; gmacsPadded: number; threshold: number };
}

/**
 * Validates a strategy, keep ratio and location for a model family (and ViT depth when known); throws
 * an Error quoting the offending value. Returns the location with its default filled in.
 *
 * @example
 * ```ts
 * checkStrategyFor("vit", 4, "attention", 0.5, undefined, "myTool"); // { ..., location: 1 }
 * ```
 */
export function checkStrategyFor(
  family: ModelFamily,
  depth: number | undefined,
  strategy: StrategyName,
  keep: number,
  location: number | undefined,
  source: string,
): { strategy: StrategyName; keep: number; location: number } {
  const name = parseStrategy(String(strategy), `${source}: strategy`);
  if (typeof keep !== "number" || !(keep > 0 && keep <= 1)) {
    throw new Error(`${source}: keep ${JSON.stringify(keep)} is not a ratio in (0, 1]`);
  }
  if (family === "resnet18" && name !== "none") {
    throw new Error(`${source}: strategy "${name}" needs a ViT or the hybrid; ResNet18 has no tokens`);
  }
  if (name === "cnn" && family !== "hybrid") {
    throw new Error(`${source}: strategy "cnn" needs the hybrid (its CNN importance head); got a ${family}`);
  }
  if (name === "none" && keep !== 1) {
    throw new Error(
      `${source}: keep ${keep} needs a pruning strategy (random, cnn, attention, merge); "none" keeps every token`,
    );
  }
  const loc = location ?? (name === "attention" ? 1 : 0);
  if (!Number.isInteger(loc) || loc < 0) {
    throw new Error(`${source}: location ${JSON.stringify(location)} is not an integer ≥ 0`);
  }
  if (name === "attention" && loc < 1) {
    throw new Error(
      `${source}: location ${loc} must be ≥ 1 for strategy "attention" (it needs a block's attention first)`,
    );
  }
  if (name === "cnn" && loc !== 0) {
    throw new Error(
      `${source}: location ${loc} must be 0 for strategy "cnn" (the CNN scores before the ViT)`,
    );
  }
  if (depth !== undefined && family !== "resnet18") {
    if (loc >= depth) {
      throw new Error(
        `${source}: location ${loc} is not a block of the ViT (depth ${depth}); expected 0..${depth - 1}`,
      );
    }
  }
  return { strategy: name, keep, location: loc };
}

/**
 * Evaluates `model` on every image of `dataset` with a pruning strategy at a keep ratio, in evaluation
 * mode, without training. Reuses the same seeds as a training run's final evaluation, so a run's
 * `result.json` accuracy is reproduced with the run's strategy, keep ratio and seed.
 *
 * @example
 * ```ts
 * const r = await evaluateStrategy(model, evalDs, { strategy: "random", keep: 0.5 });
 * console.log(r.accuracy, r.gmacs, r.selection?.recall);
 * ```
 */
export async function evaluateStrategy(
  model: Model,
  dataset: Dataset,
  options: StrategyEvalOptions,
): Promise<StrategyEval> {
  const { strategy: name, keep, location } = checkStrategyFor(
    model.family,
    model.family === "resnet18" ? undefined : vitOf(model).config.depth,
    options.strategy,
    options.keep,
    options.location,
    "evaluateStrategy",
  );
  const seed = options.seed ?? 0;
  const batchSize = options.batchSize ?? 128;
  if (!Number.isInteger(seed) || seed < 0) {
    throw new Error(`evaluateStrategy: seed ${JSON.stringify(options.seed)} is not an integer ≥ 0`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`evaluateStrategy: batchSize ${JSON.stringify(options.batchSize)} is not an integer ≥ 1`);
  }
  const strategy = createStrategy(name, {
    seed: seed + 1,
    fuse: options.fuse ?? false,
    spread: options.spread,
  });
  const budget = options.budget ?? false;
  if (budget && (name !== "cnn" || model.family !== "hybrid")) {
    throw new Error(`evaluateStrategy: budget needs the hybrid with strategy "cnn"; got strategy "${name}"`);
  }
  const counts: number[] = [];
  let paddedGmacs = 0;
  const schedule = singleStage(keep, location);
  const isCnn = model.family === "resnet18";
  const grid = isCnn ? undefined : vitOf(model).gridSize;
  const withSelection = name !== "none" && !!dataset.masks && !!dataset.patchGrid &&
    dataset.patchGrid[0] === grid && dataset.patchGrid[1] === grid;
  const rng = new Rng(seed + 2);
  const classes = dataset.classes.length;
  const n = dataset.size;
  const labels = new Int32Array(n);
  const predictions = new Int32Array(n);
  const probs = new Float32Array(n * classes);
  const sums = { precision: 0, recall: 0, f1: 0, images: 0 };
  let count = 0, sumLoss = 0;
  const t0 = performance.now();
  for (const b of dataset.batches({ batchSize })) {
    let outs: tf.Tensor[] = [];
    try {
      outs = tf.tidy(() => {
        const out = isCnn
          ? model.forward(b.x)
          : budget
          ? model.forward(b.x, { budget: true, budgetThreshold: options.budgetThreshold, returnAux: true })
          : strategy.forward(model, b.x, { schedule, rng, returnAux: withSelection });
        if (budget) {
          const c = out.aux!.keptCounts!;
          counts.push(...c);
          const n = vitOf(model).numPatches;
          paddedGmacs += c.length * model.gmacs({ keepRatio: Math.max(...c) / n }).total;
        }
        const logits = out.logits;
        if (logits.shape[1] !== classes) {
          throw new Error(
            `evaluateStrategy: the model has ${
              logits.shape[1]
            } classes but the dataset "${dataset.name}" has ${classes}`,
          );
        }
        const p = tf.softmax(logits);
        const l = tf.mul(crossEntropy(logits, b.y), b.y.shape[0]);
        const r: tf.Tensor[] = [p, l];
        if (withSelection) r.push(out.aux!.keptIndices!);
        // The budget mode gathers every image to the batch's largest count: only the kept ones count.
        if (withSelection && budget) r.push(out.aux!.keptMask!);
        return r;
      });
      const m = b.y.shape[0];
      const p = (await outs[0].data()) as Float32Array;
      sumLoss += (await outs[1].data())[0];
      const y = (await b.y.data()) as Int32Array;
      for (let i = 0; i < m; i++) {
        labels[count + i] = y[i];
        let best = 0;
        for (let c = 1; c < classes; c++) if (p[i * classes + c] > p[i * classes + best]) best = c;
        predictions[count + i] = best;
      }
      probs.set(p.subarray(0, m * classes), count * classes);
      if (withSelection) {
        let kept = (await outs[2].array()) as number[][];
        if (budget) {
          const mask = (await outs[3].array()) as number[][];
          kept = kept.map((row, i) => row.filter((_, j) => mask[i][j] > 0));
        }
        const masks = dataset.masksOf(b.indices);
        const np = grid! * grid!;
        const rel = kept.map((_, i) => masks.subarray(i * np, (i + 1) * np));
        const q = meanSelectionQuality(kept, rel);
        for (const k of ["precision", "recall", "f1"] as const) sums[k] += q[k] * q.images;
        sums.images += q.images;
      }
      count += m;
    } finally {
      tf.dispose([...outs, b.x, b.y]);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  let correct = 0;
  for (let i = 0; i < count; i++) if (labels[i] === predictions[i]) correct++;
  const d = Math.max(sums.images, 1);
  return {
    strategy: name,
    keep,
    location,
    accuracy: count ? correct / count : NaN,
    gmacs: isCnn
      ? model.gmacs().total
      : budget
      ? counts.reduce((a, c) => a + model.gmacs({ keepRatio: c / vitOf(model).numPatches }).total, 0) /
        Math.max(counts.length, 1)
      : strategy.gmacs(model, schedule),
    labels: labels.subarray(0, count),
    predictions: predictions.subarray(0, count),
    probs: probs.subarray(0, count * classes),
    selection: withSelection
      ? { precision: sums.precision / d, recall: sums.recall / d, f1: sums.f1 / d, images: sums.images }
      : undefined,
    loss: count ? sumLoss / count : NaN,
    imgPerSec: count / Math.max(seconds, 1e-9),
    ...(budget
      ? {
        budget: {
          meanKept: counts.reduce((a, c) => a + c, 0) / Math.max(counts.length, 1),
          minKept: Math.min(...counts),
          maxKept: Math.max(...counts),
          gmacsPadded: paddedGmacs / Math.max(counts.length, 1),
          threshold: options.budgetThreshold ?? 0,
        },
      }
      : {}),
  };
}

/** What {@link calibrateBudgetThreshold} found. */
export interface BudgetCalibration {
  /** Score threshold: images keep the patches scored above it. */
  threshold: number;
  /** The share of patch tokens the calibration images keep above it, on average (the target up to ties). */
  keepRatio: number;
  /** What they kept at threshold 0 (the uncalibrated budget mode), for comparison. */
  keepRatioAtZero: number;
  images: number;
}

/**
 * The budget mode's threshold at which images keep `keep` of their patch tokens on average: the
 * `(1 − keep)` quantile of the hybrid's importance scores pooled over `dataset` (the mean count over images
 * above a threshold is the pooled count over the number of images). Uses images only, no labels: calibrate
 * on training images and nothing about the evaluation split is chosen. Training keeps `scores + noise > 0`
 * and the ratio loss holds that noisy count at the target, but inference's noiseless count at 0 is
 * another number (66% kept against 50% asked in the synthetic ablation).
 *
 * @example
 * ```ts
 * const { threshold } = await calibrateBudgetThreshold(hybrid, trainDs, 0.5);
 * await evaluateStrategy(hybrid, evalDs, { strategy: "cnn", keep: 0.5, budget: true, budgetThreshold: threshold });
 * ```
 */
export async function calibrateBudgetThreshold(
  model: Model,
  dataset: Dataset,
  keep: number,
  options: { batchSize?: number } = {},
): Promise<BudgetCalibration> {
  if (model.family !== "hybrid") {
    throw new Error(`calibrateBudgetThreshold: needs the hybrid; got a ${model.family}`);
  }
  if (!(keep > 0 && keep <= 1)) {
    throw new RangeError(`calibrateBudgetThreshold: keep ${keep} is not a ratio in (0, 1]`);
  }
  const hybrid = model as Hybrid;
  const n = hybrid.vit.numPatches;
  const all = new Float32Array(dataset.size * n);
  let filled = 0;
  for (const b of dataset.batches({ batchSize: options.batchSize ?? 128 })) {
    try {
      const s = tf.tidy(() => hybrid.scores(b.x));
      all.set(await s.data() as Float32Array, filled);
      filled += s.size;
      s.dispose();
    } finally {
      tf.dispose([b.x, b.y]);
    }
  }
  const scores = all.subarray(0, filled).sort().reverse();
  const images = filled / n;
  // Exactly round(keep × all) scores above the threshold: halfway between the last kept and the first not.
  const k = Math.min(Math.max(Math.round(keep * filled), 1), filled);
  const threshold = k === filled ? scores[filled - 1] - 1 : (scores[k - 1] + scores[k]) / 2;
  const above = (t: number) => scores.reduce((a, v) => a + (v > t ? 1 : 0), 0) / filled;
  return { threshold, keepRatio: above(threshold), keepRatioAtZero: above(0), images };
}
