/**
 * Two-stage training of the CNN-ViT hybrid, as the study specifies, reusing {@link train} for both:
 *
 * 1. **Stage 1** pre-trains the CNN: its classification head (cross-entropy) and its importance head,
 *    taught where the evidence is: the ground-truth patch mask when batches carry one (`batch.mask`,
 *    `[B, N]`, the synthetic set), otherwise the CNN's own class activation map of the true class
 *    (a constant target, not trained towards the prediction).
 * 2. **Stage 2** trains the ViT and the selection end-to-end through a straight-through top-k mask
 *    (DynamicViT style), with the CNN backbone either frozen (its importance head still learns) or at a
 *    lower learning rate. Loss: CE + optional keep-ratio penalty, KL distillation from the unpruned ViT,
 *    and an auxiliary CNN classification loss. Evaluation uses hard top-k with real gathering.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import type { Hybrid } from "../models/hybrid.ts";
import { gumbelNoise } from "../pruning/topk_mask.ts";
import { maskedHybridForward } from "../pruning/masked_forward.ts";
import { crossEntropy, hybridLoss, type HybridLossWeights, importanceKL } from "./losses.ts";
import type { BatchSource, TrainBatch } from "./batch_source.ts";
import { type LossFn, train, type TrainOptions, type TrainResult } from "./trainer.ts";
import type { Rng } from "../util/rng.ts";
import { createStrategy, type KeepSchedule, type PruningStrategy, singleStage } from "../pruning/mod.ts";

/** How the CNN is treated in stage 2. */
export type CnnMode = "frozen" | "lower-lr";

/** Per-stage settings: everything of {@link TrainOptions} except what the two-stage driver decides. */
export type StageOptions = Omit<
  TrainOptions,
  | "model"
  | "train"
  | "eval"
  | "stepsPerEpoch"
  | "loss"
  | "variables"
  | "evalLogits"
  | "outDir"
  | "resume"
  | "prepare"
>;

/** Options of {@link trainHybridTwoStage}. */
export interface TwoStageOptions {
  /** A hybrid built with `cnnHead: true` (stage 1 trains the CNN's classification head). */
  model: Hybrid;
  train: BatchSource;
  eval?: BatchSource;
  stepsPerEpoch: number;
  stage1: StageOptions & {
    /** Weight of the importance-head loss (default 1). */
    importanceWeight?: number;
    /** Temperature of the target map (default 0.5 for a CAM or mask, 1 for the ViT's attention). */
    importanceTemperature?: number;
    /** What the importance head learns to rank by (default `"auto"`); see {@link SelectorTarget}. */
    importanceTarget?: SelectorTarget;
  };
  stage2: StageOptions & {
    /** `"frozen"` (default) or `"lower-lr"`. */
    cnnMode?: CnnMode;
    /** Learning-rate multiplier of the CNN backbone with `"lower-lr"` (default 0.1). */
    cnnLrScale?: number;
    /** Keep ratio trained for (default the model's). */
    keepRatio?: number;
    /**
     * Draw the keep ratio per batch, uniformly in `[lo, hi]` (from the step's generator), so that one
     * model serves every keep ratio in the range; overrides `keepRatio` during training (evaluation uses
     * `keepRatio`). Default: off.
     */
    keepRatioRange?: [number, number];
    /** Straight-through temperature (default 1). */
    tau?: number;
    /** Scale of the Gumbel noise on the scores during training (default 0.5; 0 = none). */
    noiseScale?: number;
    /**
     * `"topk"` (default): straight-through top-k mask in the attention (the ratio penalty is 0 by
     * construction); `"threshold"`: DynamicViT's per-token decision steered by the ratio penalty;
     * `"gather"`: the hybrid's own forward with real gathering and a straight-through score gate
     * (cheapest steps; no noise, no ratio term; needs `cnnMode: "lower-lr"` for a CNN in training mode).
     */
    selection?: "topk" | "threshold" | "gather";
    /**
     * EViT's dropped-token fusion with `"topk"` (default false): the masked-out tokens enter the blocks as
     * one extra token, their mean weighted by `softmax(scores)`; the per-epoch evaluation fuses the same way.
     */
    fuse?: boolean;
    /** Loss weights: ratio (2), distill (0 = off), aux CNN CE (0.3), label smoothing. */
    loss?: HybridLossWeights;
    /**
     * A control in place of the CNN's top-k: stage 2 trains the ViT under another selection (random or
     * attention tokens) on the hybrid's own tokens (e.g. CNN tokens), with the task loss only
     * (cross-entropy, `loss.labelSmoothing`), the ViT's variables only and the CNN in inference mode; the
     * per-epoch evaluation uses `evalLogits`. The equal-cost controls of a CNN-token hybrid.
     */
    control?: {
      strategy: PruningStrategy;
      schedule: KeepSchedule;
      evalLogits: NonNullable<TrainOptions["evalLogits"]>;
    };
  };
  /** Results folder: stage 1 in `<outDir>/stage1`, stage 2 in `<outDir>/stage2`. */
  outDir?: string;
  /** Resume both stages from their checkpoints. */
  resume?: boolean;
  /**
   * Skip stage 1 (the CNN is already trained, e.g. loaded from an earlier run): nothing is written to
   * `<outDir>/stage1` and the returned `stage1` is an empty, completed result.
   */
  skipStage1?: boolean;
}

/** Results of both stages. */
export interface TwoStageResult {
  stage1: TrainResult;
  stage2?: TrainResult;
}

/** CNN logits and importance scores of the hybrid's CNN (inside tidy / variableGrads). */
function cnnForward(hybrid: Hybrid, x: tf.Tensor4D, training: boolean) {
  const c = hybrid.config;
  const s = c.scorerImgSize;
  const input = s && s !== x.shape[1] ? tf.image.resizeBilinear(x, [s, s]) : x;
  const feature = hybrid.cnn.features(input, c.scoreStage, training);
  const scores = hybrid.cnn.importanceScores(feature);
  let y = feature;
  for (let st = c.scoreStage + 1; st <= 4; st++) y = hybrid.cnn.layer(st, y, training);
  return { scores, final: y, logits: hybrid.cnn.head(y) };
}

/** Class activation map of class `labels` on the patch grid, `[B, N]` (ReLU'd, before softmax). */
function camOnGrid(hybrid: Hybrid, final: tf.Tensor4D, labels: tf.Tensor1D, grid: number): tf.Tensor2D {
  const w = hybrid.cnn.stateDict().get("fc.weight")!; // [C, classes]
  const wy = tf.transpose(tf.gather(w, labels, 1)); // [B, C]
  const [b, h, ww, ch] = final.shape;
  const cam = tf.relu(tf.sum(tf.mul(final, tf.reshape(wy, [b, 1, 1, ch])), 3, true)) as tf.Tensor4D;
  const onGrid = h === grid && ww === grid ? cam : tf.image.resizeBilinear(cam, [grid, grid]);
  return tf.reshape(onGrid, [b, grid * grid]) as tf.Tensor2D;
}

/**
 * What stage 1 teaches the importance head to rank by:
 * - `"cam"`: the CNN's own class activation map of the true class (a blob on the object);
 * - `"mask"`: the batch's ground-truth patch mask (synthetic set);
 * - `"vit_attention"`: the ViT's own ranking, the CLS token's attention in its last block averaged over
 *   heads of the hybrid's ViT, which should be the trained full-token ViT (`initFrom`): the teacher says
 *   which tokens it reads;
 * - `"vit_attention_first"`: the same from the ViT's first block, the criterion attention (EViT) selection
 *   prunes by after block 0 (late blocks' CLS attention gathers on a few background tokens);
 * - `"auto"`: `mask` when the batch has one, else `cam` (the original design).
 */
export type SelectorTarget = "auto" | "cam" | "mask" | "vit_attention" | "vit_attention_first";

/** The selector targets, for option parsing. */
export const SELECTOR_TARGETS: readonly SelectorTarget[] = [
  "auto",
  "cam",
  "mask",
  "vit_attention",
  "vit_attention_first",
];

/**
 * The ViT's CLS attention over the patches in its last (or first) block, averaged over heads, as
 * log-probabilities `[B, N]` (so `softmax(target)` is the attention distribution). Computed without a
 * gradient tape. Prefix tokens other than CLS (a distillation token) are not patches and are left out.
 *
 * @example
 * ```ts
 * const target = tf.tidy(() => vitAttentionTarget(hybrid, x)); // [B, 64]
 * ```
 */
export function vitAttentionTarget(
  hybrid: Hybrid,
  x: tf.Tensor4D,
  block: "first" | "last" = "last",
): tf.Tensor2D {
  return tf.tidy(() => {
    const out = hybrid.vit.forward(hybrid.vitInput(x), { returnAttention: true });
    const att = out.aux!.attention!;
    const a = att[block === "first" ? 0 : att.length - 1]; // [B, H, T, T]
    const [b, h, t] = a.shape;
    const p = hybrid.vit.numPrefixTokens;
    const cls = tf.slice(a, [0, 0, 0, p], [b, h, 1, t - p]); // CLS row, patch columns
    const mean = tf.reshape(tf.mean(cls, 1), [b, t - p]);
    return tf.log(tf.add(mean, 1e-8)) as tf.Tensor2D;
  });
}

/**
 * Stage-1 loss: CE of the CNN's logits + `importanceWeight` · KL(target ‖ softmax(scores)), the target
 * chosen by `target` ({@link SelectorTarget}). `vit_attention` reads `prepared.attention`, which
 * {@link stage1Prepare} computes once per batch outside the gradient tape.
 *
 * @example
 * ```ts
 * await train({ model: hybrid, loss: stage1Loss(hybrid), ... });
 * ```
 */
export function stage1Loss(
  hybrid: Hybrid,
  options: {
    importanceWeight?: number;
    temperature?: number;
    labelSmoothing?: number;
    target?: SelectorTarget;
  } = {},
): LossFn {
  const wImp = options.importanceWeight ?? 1;
  const kind = options.target ?? "auto";
  if (!SELECTOR_TARGETS.includes(kind)) {
    throw new Error(
      `stage1Loss: target ${JSON.stringify(kind)} is not one of ${SELECTOR_TARGETS.join(", ")}`,
    );
  }
  const fromVit = kind === "vit_attention" || kind === "vit_attention_first";
  const temp = options.temperature ?? (fromVit ? 1 : 0.5);
  const grid = hybrid.vit.gridSize;
  return ({ batch, prepared }) => {
    const { scores, final, logits } = cnnForward(hybrid, batch.x, true);
    const ce = crossEntropy(logits, batch.y, { labelSmoothing: options.labelSmoothing });
    const parts: Record<string, tf.Scalar> = { ce };
    if (wImp === 0) return { loss: ce, logits, parts };
    const mask = batch.mask instanceof tf.Tensor ? batch.mask : undefined;
    if (mask && (mask.rank !== 2 || mask.shape[1] !== grid * grid)) {
      throw new Error(
        `stage1Loss: batch.mask must be [B, ${grid * grid}] (the patch grid), got [${mask.shape}]`,
      );
    }
    if (kind === "mask" && !mask) {
      throw new Error('stage1Loss: target "mask" needs batches with a patch mask (the synthetic set)');
    }
    let target: tf.Tensor2D;
    if (fromVit) {
      const att = prepared.attention;
      if (!att) {
        throw new Error(`stage1Loss: target "${kind}" needs stage1Prepare (prepared.attention)`);
      }
      target = att as tf.Tensor2D;
    } else if (mask && kind !== "cam") {
      // A mask of 0/1 becomes a log-odds target (0 → −4/T apart).
      target = tf.mul(tf.cast(mask, "float32"), 4) as tf.Tensor2D;
    } else {
      // A CAM is standardised per image.
      target = standardise(camOnGrid(hybrid, final, batch.y, grid));
    }
    const imp = importanceKL(scores, target, { temperature: temp });
    parts.importance = imp;
    return { loss: tf.add(ce, tf.mul(imp, wImp)) as tf.Scalar, logits, parts };
  };
}

/**
 * Stage-1 `prepare`: the ViT's attention target once per batch (only for `vit_attention`).
 *
 * @example
 * ```ts
 * const prepare = stage1Prepare(hybrid, "vit_attention");
 * ```
 */
export function stage1Prepare(hybrid: Hybrid, target: SelectorTarget = "auto"): TrainOptions["prepare"] {
  if (target !== "vit_attention" && target !== "vit_attention_first") return undefined;
  const block = target === "vit_attention_first" ? "first" : "last";
  return ({ batch }) => ({ attention: vitAttentionTarget(hybrid, batch.x, block) });
}

function standardise(x: tf.Tensor2D): tf.Tensor2D {
  const { mean, variance } = tf.moments(x, 1, true);
  return tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-6))) as tf.Tensor2D;
}

/**
 * Stage-2 loss: the hybrid through a straight-through mask (Gumbel noise from the step's generator),
 * `hybridLoss` of its logits, the mask, the unpruned teacher (`ctx.prepared.teacher`, from
 * {@link stage2Prepare}) and the CNN logits.
 *
 * @example
 * ```ts
 * await train({ model: hybrid, loss: stage2Loss(hybrid, { keepRatio: 0.5 }), prepare: stage2Prepare(hybrid, {}), ... });
 * ```
 */
export function stage2Loss(
  hybrid: Hybrid,
  options: {
    keepRatio?: number;
    keepRatioRange?: [number, number];
    tau?: number;
    noiseScale?: number;
    selection?: "topk" | "threshold" | "gather";
    /** Dropped-token fusion (`"topk"` only; as `maskedHybridForward`'s `fuse`). */
    fuse?: boolean;
    loss?: HybridLossWeights;
    cnnTraining?: boolean;
  } = {},
): LossFn {
  const fixed = options.keepRatio ?? hybrid.config.keepRatio;
  const range = options.keepRatioRange;
  if (range && !(range.length === 2 && range[0] > 0 && range[0] <= range[1] && range[1] <= 1)) {
    throw new Error(
      `stage2Loss: keepRatioRange ${JSON.stringify(range)} is not [lo, hi] with 0 < lo <= hi <= 1`,
    );
  }
  /** This step's keep ratio: fixed, or drawn from the range with the step's generator. */
  const ratioOf = (rng: Rng) => (range ? range[0] + (range[1] - range[0]) * rng.next() : fixed);
  const w = options.loss ?? {};
  // The auxiliary CNN loss trains the CNN: with a frozen CNN (cnnTraining false) it reaches no trained
  // variable (the importance head branches off before the later stages), so it is not computed: the
  // same gradients, about 30% less time per step.
  const wantCnn = (w.aux ?? 0.3) > 0 && (hybrid.config.cnnHead ?? false) && options.cnnTraining !== false;
  const noiseScale = options.noiseScale ?? 0.5;
  if (options.fuse && (options.selection ?? "topk") !== "topk") {
    throw new Error(`stage2Loss: fuse needs selection "topk"; got "${options.selection}"`);
  }
  if (options.selection === "gather") {
    // Real gathering during training (the hybrid's own straight-through score gate): cheaper steps,
    // no mask, so no ratio term and no Gumbel exploration.
    return ({ batch, prepared, rng }) => {
      const ratio = ratioOf(rng);
      const rank = w.rankDistill ?? 0;
      const out = hybrid.forward(batch.x, {
        training: true,
        keepRatio: ratio,
        returnAux: wantCnn || rank > 0,
      });
      const r = hybridLoss({
        logits: out.logits,
        labels: batch.y,
        teacherLogits: prepared.teacher,
        cnnLogits: wantCnn ? out.aux?.cnnLogits : undefined,
      }, { ...w, aux: wantCnn ? w.aux : 0 });
      const parts = r.parts;
      const total = addRankDistill(parts, r.total, out.aux?.scores, prepared, rank);
      if (range) parts.keepRatio = tf.scalar(ratio);
      return { loss: total, logits: out.logits, parts };
    };
  }
  return ({ batch, rng, prepared }) => {
    const ratio = ratioOf(rng);
    const b = batch.x.shape[0];
    const n = hybrid.vit.numPatches;
    const noise = noiseScale > 0 ? gumbelNoise([b, n], rng, noiseScale) : undefined;
    const out = maskedHybridForward(hybrid, batch.x, {
      keepRatio: ratio,
      tau: options.tau,
      noise,
      selection: options.selection as "topk" | "threshold" | undefined,
      fuse: options.fuse,
      training: true,
      cnnTraining: options.cnnTraining,
      cnnLogits: wantCnn,
    });
    const r = hybridLoss({
      logits: out.logits,
      labels: batch.y,
      keepMasks: [out.mask],
      keepTargets: [ratio],
      teacherLogits: prepared.teacher,
      cnnLogits: out.cnnLogits,
    }, { ...w, aux: wantCnn ? w.aux : 0 });
    const parts = r.parts;
    const total = addRankDistill(parts, r.total, out.scores, prepared, w.rankDistill ?? 0);
    if (range) parts.keepRatio = tf.scalar(ratio);
    return { loss: total, logits: out.logits, parts };
  };
}

/**
 * Stage-2 `prepare`: the unpruned ViT's logits as the distillation teacher (only when `distill > 0`).
 *
 * @example
 * ```ts
 * const prepare = stage2Prepare(hybrid, { distill: 0.5 });
 * ```
 */
export function stage2Prepare(hybrid: Hybrid, weights: HybridLossWeights): TrainOptions["prepare"] {
  const logits = (weights.distill ?? 0) > 0, rank = (weights.rankDistill ?? 0) > 0;
  if (!logits && !rank) return undefined;
  return ({ batch }) => ({
    ...(logits ? { teacher: tf.tidy(() => hybrid.vit.forward(hybrid.vitInput(batch.x)).logits) } : {}),
    ...(rank ? { attention: vitAttentionTarget(hybrid, batch.x) } : {}),
  });
}

/** The ranking-distillation term of stage 2 (0 weight or no prepared attention: none). */
function addRankDistill(
  parts: Record<string, tf.Scalar>,
  total: tf.Scalar,
  scores: tf.Tensor2D | undefined,
  prepared: Record<string, tf.Tensor>,
  weight: number,
): tf.Scalar {
  if (!(weight > 0)) return total;
  if (!scores || !prepared.attention) {
    throw new Error("stage2Loss: rankDistill needs the selector's scores and stage2Prepare's attention");
  }
  parts.rank = importanceKL(scores, prepared.attention, { temperature: 1 });
  return tf.add(total, tf.mul(parts.rank, weight)) as tf.Scalar;
}

/**
 * Runs stage 1 then stage 2 on the same trainer. With `resume`, a finished stage is skipped (its
 * checkpoint restores the weights) and an interrupted one continues.
 *
 * @example
 * ```ts
 * const r = await trainHybridTwoStage({
 *   model: hybrid, train: src, eval: test, stepsPerEpoch: 100,
 *   stage1: { epochs: 2, lr: 1e-3 }, stage2: { epochs: 5, lr: 5e-4, cnnMode: "frozen" },
 *   outDir: "results/runs/hybrid",
 * });
 * ```
 */
export async function trainHybridTwoStage(options: TwoStageOptions): Promise<TwoStageResult> {
  const h = options.model;
  if (!h.config.cnnHead) {
    throw new Error(
      "trainHybridTwoStage: stage 1 trains the CNN's classification head; build the hybrid with cnnHead: true " +
        '(e.g. createModel("hybrid_tiny", { cnnHead: true }))',
    );
  }
  const all = h.trainableVariables();
  const cnnVars = new Map([...all].filter(([k]) => k.startsWith("cnn.")));
  const isHead = (k: string) => k.startsWith("cnn.importance_head.");
  const s1 = options.stage1, s2 = options.stage2;
  const mode = s2.cnnMode ?? "frozen";
  if (mode !== "frozen" && mode !== "lower-lr") {
    throw new Error(`trainHybridTwoStage: stage2.cnnMode "${mode}" is not "frozen" or "lower-lr"`);
  }
  if (s2.selection === "gather" && mode === "frozen") {
    throw new Error(
      'trainHybridTwoStage: stage2.selection "gather" runs the CNN in training mode (its batch-norm statistics ' +
        'would move); use cnnMode "lower-lr" with it, or selection "topk" with a frozen CNN',
    );
  }
  const dir = (s: string) => (options.outDir ? join(options.outDir, s) : undefined);
  const stage1: TrainResult = options.skipStage1
    ? {
      completed: true,
      globalStep: 0,
      epochs: [],
      seconds: 0,
      progress: { epoch: 0, stepInEpoch: 0, globalStep: 0, rngState: 0 },
    }
    : await train({
      ...s1,
      label: s1.label ?? "stage 1 (CNN)",
      model: h,
      train: options.train,
      eval: options.eval,
      stepsPerEpoch: options.stepsPerEpoch,
      variables: cnnVars,
      prepare: stage1Prepare(h, s1.importanceTarget),
      loss: stage1Loss(h, {
        importanceWeight: s1.importanceWeight,
        temperature: s1.importanceTemperature,
        target: s1.importanceTarget,
        labelSmoothing: s1.labelSmoothing,
      }),
      evalLogits: (_m, b: TrainBatch) => tf.tidy(() => cnnForward(h, b.x, false).logits),
      outDir: dir("stage1"),
      resume: options.resume,
      config: { ...s1.config, stage: 1 },
    });
  if (!stage1.completed) return { stage1 };
  if (s2.control) return { stage1, stage2: await trainControl(options, mode, dir("stage2")) };
  const scale = s2.cnnLrScale ?? 0.1;
  const variables = mode === "frozen"
    ? new Map([...all].filter(([k]) => !k.startsWith("cnn.") || isHead(k)))
    : all;
  const userScale = s2.optimizer?.lrScale;
  const weights = s2.loss ?? {};
  // With fusion the per-epoch evaluation is the fused gathered forward, as the final one.
  const fused = s2.fuse ? createStrategy("cnn", { fuse: true }) : undefined;
  const stage2 = await train({
    ...s2,
    label: s2.label ?? `stage 2 (ViT + selection, CNN ${mode})`,
    model: h,
    train: options.train,
    eval: options.eval,
    stepsPerEpoch: options.stepsPerEpoch,
    variables,
    optimizer: {
      ...s2.optimizer,
      lrScale: (k) =>
        (userScale ? userScale(k) : 1) *
        (mode === "lower-lr" && k.startsWith("cnn.") && !isHead(k) ? scale : 1),
    },
    loss: stage2Loss(h, {
      keepRatio: s2.keepRatio,
      keepRatioRange: s2.keepRatioRange,
      tau: s2.tau,
      noiseScale: s2.noiseScale,
      selection: s2.selection,
      fuse: s2.fuse,
      loss: weights,
      cnnTraining: mode !== "frozen",
    }),
    prepare: stage2Prepare(h, weights),
    evalLogits: fused
      ? (_m, b: TrainBatch) =>
        fused.forward(h, b.x, { schedule: singleStage(s2.keepRatio ?? h.config.keepRatio, 0) }).logits
      : s2.keepRatio === undefined
      ? undefined
      : (_m, b: TrainBatch) => h.forward(b.x, { keepRatio: s2.keepRatio }).logits,
    outDir: dir("stage2"),
    resume: options.resume,
    config: { ...s2.config, stage: 2, cnnMode: mode, cnnLrScale: mode === "lower-lr" ? scale : undefined },
  });
  return { stage1, stage2 };
}

/**
 * Stage 2 of a control ({@link TwoStageOptions} `stage2.control`): the ViT trained under the control's
 * selection with cross-entropy; the CNN (frozen) only makes the tokens.
 */
function trainControl(options: TwoStageOptions, mode: CnnMode, outDir?: string): Promise<TrainResult> {
  const h = options.model, s2 = options.stage2, control = s2.control!;
  if (mode !== "frozen") {
    throw new Error('trainHybridTwoStage: stage2.control trains the ViT only; use cnnMode "frozen" with it');
  }
  const labelSmoothing = s2.loss?.labelSmoothing ?? s2.labelSmoothing;
  const loss: LossFn = ({ batch, rng }) => {
    const logits = control.strategy.forward(h, batch.x, {
      schedule: control.schedule,
      training: true,
      cnnTraining: false,
      rng,
    }).logits;
    const ce = crossEntropy(logits, batch.y, { labelSmoothing });
    return { loss: ce, logits, parts: { ce } };
  };
  return train({
    ...s2,
    label: s2.label ?? `stage 2 (ViT under ${control.strategy.name} selection, CNN frozen)`,
    model: h,
    train: options.train,
    eval: options.eval,
    stepsPerEpoch: options.stepsPerEpoch,
    variables: new Map([...h.trainableVariables()].filter(([k]) => k.startsWith("vit."))),
    loss,
    evalLogits: control.evalLogits,
    outDir,
    resume: options.resume,
    config: { ...s2.config, stage: 2, cnnMode: mode, control: control.strategy.name },
  });
}
