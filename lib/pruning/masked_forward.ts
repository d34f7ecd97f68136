/**
 * The hybrid's training-time forward (DynamicViT style): the CNN scores the patches, a straight-through
 * top-k mask (optionally with Gumbel noise) selects them, and the ViT runs with that mask in its attention,
 * so gradients reach the importance head. With no noise the mask holds exactly the tokens that inference's
 * hard top-k gathers, and the logits agree with the gathered forward (tested).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Hybrid } from "../models/hybrid.ts";
import { keepCount } from "./select_top_k.ts";
import { fuseDropped, hybridFuseWeights } from "./strategies.ts";
import { straightThroughThresholdMask, straightThroughTopKMask } from "./topk_mask.ts";

/** Options of {@link maskedHybridForward}. */
export interface MaskedForwardOptions {
  /** Fraction of patch tokens kept (default the hybrid's `keepRatio`). */
  keepRatio?: number;
  /** Temperature of the straight-through surrogate (default 1). */
  tau?: number;
  /** Noise `[B, N]` added to the scores before selection (e.g. `gumbelNoise`). */
  noise?: tf.Tensor2D;
  /** Batch norm in training mode (default true). */
  training?: boolean;
  /** Batch norm of the CNN in training mode (default `training`; false for a frozen CNN). */
  cnnTraining?: boolean;
  /**
   * `"topk"` (default): exactly k tokens, the same set inference gathers. `"threshold"`: DynamicViT's
   * per-token decision `score > 0` (a varying count, steered by a ratio loss).
   */
  selection?: "topk" | "threshold";
  /** Also run the rest of the CNN and return its logits (needs `cnnHead` in the config). */
  cnnLogits?: boolean;
  /**
   * EViT's dropped-token fusion (`"topk"` only): one extra token, always kept, the mean of the masked-out
   * tokens weighted by `softmax(scores)`, as strategy `cnn` with `fuse` computes it at inference. The mask's
   * straight-through gradient reaches the scores through the fused token too.
   */
  fuse?: boolean;
}

/** What {@link maskedHybridForward} returns (the caller disposes). */
export interface MaskedForwardOutput {
  logits: tf.Tensor2D;
  /** `[B, N]` hard 0/1 mask (straight-through gradients to `scores`). */
  mask: tf.Tensor2D;
  /** Importance scores `[B, N]`. */
  scores: tf.Tensor2D;
  /** The CNN's classification logits, when asked for. */
  cnnLogits?: tf.Tensor2D;
}

/**
 * Scores → straight-through top-k mask → ViT with masked attention. Synchronous and tidy.
 *
 * @example
 * ```ts
 * const { logits, mask } = maskedHybridForward(hybrid, x, { keepRatio: 0.5, noise: gumbelNoise([b, 64], rng) });
 * ```
 */
export function maskedHybridForward(
  hybrid: Hybrid,
  x: tf.Tensor4D,
  options: MaskedForwardOptions = {},
): MaskedForwardOutput {
  const training = options.training ?? true;
  const c = hybrid.config;
  const ratio = options.keepRatio ?? c.keepRatio;
  if (options.selection !== undefined && options.selection !== "topk" && options.selection !== "threshold") {
    throw new Error(`maskedHybridForward: selection "${options.selection}" is not "topk" or "threshold"`);
  }
  if (options.fuse && options.selection === "threshold") {
    throw new Error(
      'maskedHybridForward: fuse needs selection "topk" (the budget mode\'s inference does not fuse)',
    );
  }
  if (options.cnnLogits && !c.cnnHead) {
    throw new Error(
      "maskedHybridForward: cnnLogits needs a hybrid built with cnnHead: true (the CNN's later stages)",
    );
  }
  const out = tf.tidy(() => {
    const s = c.scorerImgSize;
    const input = s && s !== x.shape[1] ? tf.image.resizeBilinear(x, [s, s]) : x;
    const cnnTraining = options.cnnTraining ?? training;
    const feature = hybrid.cnn.features(input, c.scoreStage, cnnTraining);
    const scores = hybrid.cnn.importanceScores(feature);
    const n = scores.shape[1];
    const st = { tau: options.tau, noise: options.noise, spread: c.spread };
    const mask = options.selection === "threshold"
      ? straightThroughThresholdMask(scores, st)
      : straightThroughTopKMask(scores, keepCount(n, ratio), st);
    let tokens = hybrid.vit.embed(hybrid.cnnTokens ? feature : x);
    let tokenMask = mask;
    if (options.fuse) {
      const b = mask.shape[0];
      tokens = tf.concat([tokens, fuseDropped(tokens, hybridFuseWeights(scores), mask)], 1) as tf.Tensor3D;
      tokenMask = tf.concat([mask, tf.ones([b, 1])], 1) as tf.Tensor2D;
    }
    const r = hybrid.vit.forwardTokens(tokens, { training, tokenMask });
    const logits = hybrid.vit.forwardHead(r.tokens);
    const res: Record<string, tf.Tensor> = { logits, mask, scores };
    if (options.cnnLogits) {
      let y = feature;
      for (let st = c.scoreStage + 1; st <= 4; st++) y = hybrid.cnn.layer(st, y, cnnTraining);
      res.cnnLogits = hybrid.cnn.head(y);
    }
    return res;
  });
  return out as unknown as MaskedForwardOutput;
}
