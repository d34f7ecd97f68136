/**
 * Training-time token selection that lets gradients reach the scorer (DynamicViT style): the forward
 * value is the HARD top-k mask (exactly the tokens inference keeps), the backward pass uses the
 * derivative of a soft mask `sigmoid((s − θ) / τ)` around the top-k threshold θ (straight-through).
 * Optional Gumbel noise on the scores explores other selections during training.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Rng } from "../util/mod.ts";
import { spreadScores } from "./spread.ts";

/** Options of {@link straightThroughTopKMask}. */
export interface TopKMaskOptions {
  /** Temperature of the soft surrogate used for gradients (default 1). */
  tau?: number;
  /** Noise `[B, N]` added to the scores before selection (e.g. {@link gumbelNoise}); none by default. */
  noise?: tf.Tensor2D;
  /**
   * Spread top-k over a square patch grid in `spread`×`spread` windows (`spreadScores`): the mask is the
   * top-k of the re-ranked scores, and the surrogate is the sigmoid around the threshold of those (its
   * gradient through the re-ranking's `sigmoid(score)`; the in-window ranks are constant). Default off.
   */
  spread?: number;
}

/**
 * Hard top-k mask `[B, N]` (1 on the k highest scores of each row), without gradient.
 *
 * @example
 * ```ts
 * hardTopKMask(tf.tensor2d([[0.1, 0.9, 0.5]]), 2); // [[0, 1, 1]]
 * ```
 */
export function hardTopKMask(scores: tf.Tensor2D, k: number): tf.Tensor2D {
  checkK("hardTopKMask", scores, k);
  return tf.tidy(() => {
    const n = scores.shape[1];
    const { indices } = tf.topk(scores, k, true);
    return tf.cast(tf.sum(tf.oneHot(indices, n), 1), "float32") as tf.Tensor2D;
  });
}

function checkK(where: string, scores: tf.Tensor, k: number): void {
  if (scores.rank !== 2) {
    throw new Error(`${where}: scores must be [batch, tokens], got shape [${scores.shape}]`);
  }
  const n = scores.shape[1]!;
  if (!Number.isInteger(k) || k < 1 || k > n) {
    throw new Error(`${where}: k must be an integer in [1, ${n}], got ${k}`);
  }
}

/**
 * Straight-through top-k mask: the value is {@link hardTopKMask} of `scores + noise`; the gradient with
 * respect to `scores` is that of `sigmoid((scores + noise − θ) / τ)`, θ halfway between the k-th and
 * (k+1)-th largest values of each row. With no noise it selects exactly what inference's hard top-k keeps.
 *
 * @example
 * ```ts
 * const mask = straightThroughTopKMask(scores, 32, { tau: 0.5, noise: gumbelNoise([8, 64], rng) });
 * ```
 */
export function straightThroughTopKMask(
  scores: tf.Tensor2D,
  k: number,
  options: TopKMaskOptions = {},
): tf.Tensor2D {
  checkK("straightThroughTopKMask", scores, k);
  const tau = options.tau ?? 1;
  if (!(tau > 0)) throw new Error(`straightThroughTopKMask: tau must be > 0, got ${tau}`);
  const noise = options.noise;
  if (noise && noise.shape.join(",") !== scores.shape.join(",")) {
    throw new Error(
      `straightThroughTopKMask: noise shape [${noise.shape}] must equal the scores' [${scores.shape}]`,
    );
  }
  const n = scores.shape[1];
  const cell = options.spread;
  const st = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const z = args[0] as tf.Tensor2D;
    const save = args[1] as tf.GradSaveFunc;
    // With spread, rank and threshold the re-ranked scores z' = sigmoid(z) − 2·rank (dz'/dz = σ'(z)).
    const z2 = cell ? spreadScores(z, cell) : z;
    const { values, indices } = tf.topk(z2, Math.min(k + 1, n), true);
    const hard = tf.cast(tf.sum(tf.oneHot(tf.slice(indices, [0, 0], [-1, k]), n), 1), "float32");
    const vk = tf.slice(values, [0, k - 1], [-1, 1]);
    const theta = k < n ? tf.div(tf.add(vk, tf.slice(values, [0, k], [-1, 1])), 2) : tf.sub(vk, tau);
    const sig = tf.sigmoid(tf.div(tf.sub(z2, theta), tau));
    const dSurrogate = tf.div(tf.mul(sig, tf.sub(1, sig)), tau);
    const sz = tf.sigmoid(z);
    save([cell ? tf.mul(dSurrogate, tf.mul(sz, tf.sub(1, sz))) : dSurrogate]);
    return { value: hard, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, saved[0]) };
  });
  return tf.tidy(() => st(noise ? tf.add(scores, noise) : scores) as tf.Tensor2D);
}

/**
 * Gumbel(0, 1) noise `[B, N]` from a seeded generator (reproducible, checkpointable through `rng.state`).
 *
 * @example
 * ```ts
 * const noise = gumbelNoise([2, 64], new Rng(0));
 * ```
 */
export function gumbelNoise(shape: [number, number], rng: Rng, scale = 1): tf.Tensor2D {
  const n = shape[0] * shape[1];
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    v[i] = -Math.log(-Math.log(Math.min(Math.max(rng.next(), 1e-10), 1 - 1e-7))) * scale;
  }
  return tf.tensor2d(v, shape);
}

/**
 * Straight-through threshold mask (DynamicViT's per-token keep decision): the value is 1 where
 * `scores + noise > 0`, the gradient that of `sigmoid((scores + noise) / τ)`. The number kept varies per
 * image, so a keep-ratio loss (`ratioLoss`) steers it towards the target; inference uses hard top-k.
 *
 * @example
 * ```ts
 * const mask = straightThroughThresholdMask(scores, { tau: 1, noise: gumbelNoise([8, 64], rng) });
 * ```
 */
export function straightThroughThresholdMask(
  scores: tf.Tensor2D,
  options: TopKMaskOptions = {},
): tf.Tensor2D {
  if (scores.rank !== 2) {
    throw new Error(
      `straightThroughThresholdMask: scores must be [batch, tokens], got shape [${scores.shape}]`,
    );
  }
  const tau = options.tau ?? 1;
  if (!(tau > 0)) throw new Error(`straightThroughThresholdMask: tau must be > 0, got ${tau}`);
  const noise = options.noise;
  if (noise && noise.shape.join(",") !== scores.shape.join(",")) {
    throw new Error(
      `straightThroughThresholdMask: noise shape [${noise.shape}] must equal the scores' [${scores.shape}]`,
    );
  }
  const st = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const z = args[0] as tf.Tensor2D;
    const save = args[1] as tf.GradSaveFunc;
    const hard = tf.cast(tf.greater(z, 0), "float32");
    const sig = tf.sigmoid(tf.div(z, tau));
    save([tf.div(tf.mul(sig, tf.sub(1, sig)), tau)]);
    return { value: hard, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, saved[0]) };
  });
  return tf.tidy(() => st(noise ? tf.add(scores, noise) : scores) as tf.Tensor2D);
}
