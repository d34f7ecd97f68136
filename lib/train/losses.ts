/**
 * Training losses: cross-entropy with label smoothing, DynamicViT's keep-ratio loss, KL distillation
 * from an unpruned teacher, DeiT's distillation-token loss, and the hybrid's weighted sum of them with an auxiliary CNN loss.
 * Every function is synchronous and tidy; each returns a scalar tensor the caller owns.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

function checkLogitsLabels(where: string, logits: tf.Tensor, labels: tf.Tensor): void {
  if (logits.rank !== 2) {
    throw new Error(`${where}: logits must be [batch, classes], got shape [${logits.shape}]`);
  }
  if (labels.rank !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new Error(
      `${where}: labels must be [${logits.shape[0]}] (one per logits row), got shape [${labels.shape}]`,
    );
  }
  if (labels.dtype !== "int32") throw new Error(`${where}: labels must be int32, got ${labels.dtype}`);
}

/**
 * Mean cross-entropy of `logits` [B, C] against integer `labels` [B], with label smoothing ε
 * (PyTorch's convention: the target is `(1 − ε)·onehot + ε / C`).
 *
 * @example
 * ```ts
 * const loss = crossEntropy(tf.tensor2d([[2, 0]]), tf.tensor1d([0], "int32"), { labelSmoothing: 0.1 });
 * ```
 */
export function crossEntropy(
  logits: tf.Tensor,
  labels: tf.Tensor,
  options: { labelSmoothing?: number } = {},
): tf.Scalar {
  checkLogitsLabels("crossEntropy", logits, labels);
  const eps = options.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps < 1)) throw new Error(`crossEntropy: labelSmoothing must be in [0, 1), got ${eps}`);
  return tf.tidy(() => {
    const c = logits.shape[1]!;
    const logp = tf.logSoftmax(logits as tf.Tensor2D);
    const onehot = tf.cast(tf.oneHot(labels as tf.Tensor1D, c), "float32");
    const target = eps > 0 ? tf.add(tf.mul(onehot, 1 - eps), eps / c) : onehot;
    return tf.neg(tf.mean(tf.sum(tf.mul(target, logp), 1))) as tf.Scalar;
  });
}

/**
 * DynamicViT's ratio loss: for each pruning stage `s`, `mean_b (mean_n mask[b, n] − target[s])²`,
 * averaged over stages. `masks[s]` is [B, N] (1 = token kept, soft or hard) over patch tokens.
 *
 * @example
 * ```ts
 * ratioLoss([tf.tensor2d([[1, 1, 0, 0]])], [0.5]); // 0
 * ```
 */
export function ratioLoss(masks: tf.Tensor[], targets: number[]): tf.Scalar {
  if (masks.length !== targets.length) {
    throw new Error(
      `ratioLoss: ${masks.length} masks but ${targets.length} target ratios; expected one per stage`,
    );
  }
  for (const [i, r] of targets.entries()) {
    if (!(r >= 0 && r <= 1)) throw new Error(`ratioLoss: target ratio ${i} must be in [0, 1], got ${r}`);
  }
  for (const [i, m] of masks.entries()) {
    if (m.rank !== 2) throw new Error(`ratioLoss: mask ${i} must be [batch, tokens], got shape [${m.shape}]`);
  }
  if (masks.length === 0) return tf.scalar(0);
  return tf.tidy(() => {
    const per = masks.map((m, i) =>
      tf.mean(tf.square(tf.sub(tf.mean(tf.cast(m, "float32"), 1), targets[i])))
    );
    return tf.div(tf.addN(per), masks.length) as tf.Scalar;
  });
}

/**
 * Knowledge distillation: `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over the batch.
 * Compute the teacher's logits outside the gradient function (tfjs has no stop-gradient): a tensor
 * made before `tf.variableGrads` is a constant to it.
 *
 * @example
 * ```ts
 * distillationKL(tf.tensor2d([[1, 2]]), tf.tensor2d([[1, 2]])); // 0
 * ```
 */
export function distillationKL(
  studentLogits: tf.Tensor,
  teacherLogits: tf.Tensor,
  options: { temperature?: number } = {},
): tf.Scalar {
  const temp = options.temperature ?? 1;
  if (!(temp > 0)) throw new Error(`distillationKL: temperature must be > 0, got ${temp}`);
  if (studentLogits.shape.join(",") !== teacherLogits.shape.join(",") || studentLogits.rank !== 2) {
    throw new Error(
      `distillationKL: student [${studentLogits.shape}] and teacher [${teacherLogits.shape}] logits must both be [batch, classes]`,
    );
  }
  return tf.tidy(() => {
    const ls = tf.logSoftmax(tf.div(studentLogits, temp) as tf.Tensor2D);
    const lt = tf.logSoftmax(tf.div(teacherLogits, temp) as tf.Tensor2D);
    return tf.mul(tf.mean(tf.sum(tf.mul(tf.exp(lt), tf.sub(lt, ls)), 1)), temp * temp) as tf.Scalar;
  });
}

/** Weights of the terms of {@link hybridLoss}; a term with weight 0 or missing inputs is skipped. */
export interface HybridLossWeights {
  /** Label smoothing of the classification terms (default 0). */
  labelSmoothing?: number;
  /** Weight of the keep-ratio penalty (default 2, as DynamicViT). */
  ratio?: number;
  /** Weight of the distillation term (default 0.5 when teacher logits are given). */
  distill?: number;
  /** Distillation temperature (default 1). */
  temperature?: number;
  /** Weight of the auxiliary CNN classification loss (default 0.3 when CNN logits are given). */
  aux?: number;
  /**
   * Hybrid stage 2: weight of the ranking distillation, KL(ViT's CLS attention on all tokens ‖ softmax of
   * the selector's scores), which keeps the selector ranking what the transformer reads while both train
   * (default 0 = off; the attention comes from `stage2Prepare`).
   */
  rankDistill?: number;
}

/** Inputs of {@link hybridLoss}. */
export interface HybridLossInputs {
  /** ViT logits [B, C]. */
  logits: tf.Tensor;
  /** Labels [B] int32. */
  labels: tf.Tensor;
  /** Per-stage keep masks [B, N] (training-time soft/straight-through masks), with `keepTargets`. */
  keepMasks?: tf.Tensor[];
  /** Target keep ratio per stage. */
  keepTargets?: number[];
  /** Logits of the unpruned teacher, computed outside the gradient function. */
  teacherLogits?: tf.Tensor;
  /** The CNN's own classification logits. */
  cnnLogits?: tf.Tensor;
}

/** Options of {@link deitLoss}. */
export interface DeitLossOptions {
  /** `"hard"` (default): cross-entropy against the teacher's argmax; `"soft"`: {@link distillationKL}. */
  mode?: "hard" | "soft";
  /** Weight of the distillation term; the label term gets `1 − alpha` (default 0.5, DeiT's). */
  alpha?: number;
  /** Temperature of the soft mode (default 1). */
  temperature?: number;
  /** Label smoothing of the label term (the hard distillation term is unsmoothed, as DeiT). */
  labelSmoothing?: number;
}

/**
 * DeiT's distillation loss: `(1 − α)·CE(clsLogits, labels) + α·D`, with `D` the cross-entropy of the
 * distillation head against the teacher's predicted class (hard) or `T²·KL(teacher ‖ student)` at
 * temperature T (soft, averaged per image; DeiT divides its summed KL by batch × classes instead).
 * The teacher's logits must be a constant to the gradient (made outside `tf.variableGrads`).
 *
 * @example
 * ```ts
 * const loss = deitLoss(cls, dist, labels, teacherLogits, { mode: "hard" });
 * ```
 */
export function deitLoss(
  clsLogits: tf.Tensor2D,
  distLogits: tf.Tensor2D,
  labels: tf.Tensor1D,
  teacherLogits: tf.Tensor2D,
  options: DeitLossOptions = {},
): { loss: tf.Scalar; parts: { ce: tf.Scalar; distill: tf.Scalar } } {
  const mode = options.mode ?? "hard";
  const alpha = options.alpha ?? 0.5;
  if (mode !== "hard" && mode !== "soft") throw new Error(`deitLoss: mode "${mode}" is not "hard" or "soft"`);
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`deitLoss: alpha ${alpha} is not in [0, 1]`);
  const ce = crossEntropy(clsLogits, labels, { labelSmoothing: options.labelSmoothing });
  const distill = mode === "hard"
    ? tf.tidy(() => crossEntropy(distLogits, tf.cast(tf.argMax(teacherLogits, 1), "int32")))
    : distillationKL(distLogits, teacherLogits, { temperature: options.temperature });
  const loss = tf.tidy(() => tf.add(tf.mul(ce, 1 - alpha), tf.mul(distill, alpha)) as tf.Scalar);
  return { loss, parts: { ce, distill } };
}

/**
 * The hybrid's loss: CE(ViT) + ratio·ratioLoss + distill·KL(teacher) + aux·CE(CNN). Returns the total
 * and each term (all scalars the caller disposes).
 *
 * @example
 * ```ts
 * const { total, parts } = hybridLoss({ logits, labels, cnnLogits }, { aux: 0.3 });
 * ```
 */
export function hybridLoss(
  inputs: HybridLossInputs,
  weights: HybridLossWeights = {},
): { total: tf.Scalar; parts: Record<string, tf.Scalar> } {
  const parts: Record<string, tf.Scalar> = {};
  const ls = weights.labelSmoothing ?? 0;
  parts.ce = crossEntropy(inputs.logits, inputs.labels, { labelSmoothing: ls });
  const terms: tf.Scalar[] = [];
  const add = (name: string, w: number, make: () => tf.Scalar) => {
    if (!(w >= 0)) throw new Error(`hybridLoss: weight "${name}" must be ≥ 0, got ${w}`);
    if (w === 0) return;
    const t = make();
    parts[name] = t;
    terms.push(tf.tidy(() => tf.mul(t, w) as tf.Scalar));
  };
  if (inputs.keepMasks && inputs.keepMasks.length > 0) {
    if (!inputs.keepTargets) throw new Error("hybridLoss: keepMasks given without keepTargets");
    add("ratio", weights.ratio ?? 2, () => ratioLoss(inputs.keepMasks!, inputs.keepTargets!));
  }
  if (inputs.teacherLogits) {
    add(
      "distill",
      weights.distill ?? 0.5,
      () => distillationKL(inputs.logits, inputs.teacherLogits!, { temperature: weights.temperature }),
    );
  }
  if (inputs.cnnLogits) {
    add(
      "aux",
      weights.aux ?? 0.3,
      () => crossEntropy(inputs.cnnLogits!, inputs.labels, { labelSmoothing: ls }),
    );
  }
  const total = tf.tidy(() =>
    (terms.length ? tf.addN([parts.ce, ...terms]) : tf.clone(parts.ce)) as tf.Scalar
  );
  for (const t of terms) t.dispose();
  return { total, parts };
}

/**
 * Identity whose gradient is zero: the value flows forward, nothing flows back (tfjs has no stop-gradient).
 *
 * @example
 * ```ts
 * const target = stopGradient(camScores); // a training target that must not be trained towards the prediction
 * ```
 */
export function stopGradient<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const v = args[0] as tf.Tensor;
    return { value: tf.clone(v), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
  });
  return f(x) as T;
}

/**
 * Soft-target loss between importance `scores` `[B, N]` and a target map `[B, N]` (treated as a constant):
 * `KL(softmax(target / T) ‖ softmax(scores))`, averaged over the batch. Used to teach the importance head
 * where the CNN's class evidence is (class activation maps) or where a ground-truth mask is.
 *
 * @example
 * ```ts
 * const l = importanceKL(scores, camMap, { temperature: 0.5 });
 * ```
 */
export function importanceKL(
  scores: tf.Tensor,
  target: tf.Tensor,
  options: { temperature?: number } = {},
): tf.Scalar {
  const temp = options.temperature ?? 1;
  if (!(temp > 0)) throw new Error(`importanceKL: temperature must be > 0, got ${temp}`);
  if (scores.rank !== 2 || scores.shape.join(",") !== target.shape.join(",")) {
    throw new Error(
      `importanceKL: scores [${scores.shape}] and target [${target.shape}] must both be [batch, patches]`,
    );
  }
  return tf.tidy(() => {
    const lt = tf.logSoftmax(tf.div(stopGradient(target), temp) as tf.Tensor2D);
    const ls = tf.logSoftmax(scores as tf.Tensor2D);
    return tf.mean(tf.sum(tf.mul(tf.exp(lt), tf.sub(lt, ls)), 1)) as tf.Scalar;
  });
}
