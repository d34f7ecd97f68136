/**
 * Gradient clipping by global norm (PyTorch's `clip_grad_norm_`).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * Scales every gradient by `min(1, maxNorm / (‖g‖ + 1e-6))` where `‖g‖` is the L2 norm over all
 * gradients together. Returns new tensors (the inputs are not disposed) and the norm before clipping
 * as a scalar tensor; the caller disposes both.
 *
 * @example
 * ```ts
 * const { grads: clipped, norm } = clipGradNorm(grads, 1.0);
 * console.log("grad norm", (await norm.data())[0]);
 * ```
 */
export function clipGradNorm(
  grads: Map<string, tf.Tensor>,
  maxNorm: number,
): { grads: Map<string, tf.Tensor>; norm: tf.Scalar } {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new Error(`clipGradNorm: maxNorm must be a finite number > 0, got ${maxNorm}`);
  }
  const names = [...grads.keys()];
  if (names.length === 0) return { grads: new Map(), norm: tf.scalar(0) };
  // tf.tidy only tracks tensors in arrays and plain objects, not in a Map: return an array.
  const [norm, ...scaled] = tf.tidy(() => {
    const sq = tf.addN(names.map((k) => tf.sum(tf.square(grads.get(k)!))));
    const norm = tf.sqrt(sq) as tf.Scalar;
    const scale = tf.minimum(1, tf.div(maxNorm, tf.add(norm, 1e-6)));
    return [norm, ...names.map((k) => tf.mul(grads.get(k)!, scale))];
  });
  return { grads: new Map(names.map((k, i) => [k, scaled[i]])), norm: norm as tf.Scalar };
}
