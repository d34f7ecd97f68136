/**
 * Per-example gathering along the token axis, written as a flat `tf.gather` so its gradient is the
 * plain gather gradient on every backend.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * `out[b, i, ...] = x[b, idx[b, i], ...]` for `x` `[B, N, ...]` and int32 `idx` `[B, k]`.
 *
 * @example
 * ```ts
 * batchGather(tf.tensor3d([[[1], [2], [3]]]), tf.tensor2d([[2, 0]], [1, 2], "int32")); // [[[3], [1]]]
 * ```
 */
export function batchGather<T extends tf.Tensor>(x: T, idx: tf.Tensor2D): T {
  if (x.rank < 2) throw new Error(`batchGather: x must be at least [batch, tokens], got shape [${x.shape}]`);
  if (idx.rank !== 2 || idx.shape[0] !== x.shape[0]) {
    throw new Error(`batchGather: idx must be [${x.shape[0]}, k], got shape [${idx.shape}]`);
  }
  if (idx.dtype !== "int32") throw new Error(`batchGather: idx must be int32, got ${idx.dtype}`);
  return tf.tidy(() => {
    const [b, n, ...rest] = x.shape;
    const k = idx.shape[1];
    const offsets = tf.reshape(tf.range(0, b * n, n, "int32"), [b, 1]);
    const flatIdx = tf.reshape(tf.add(idx, offsets), [b * k]);
    const flat = tf.reshape(x, [b * n, ...rest]);
    return tf.reshape(tf.gather(flat, flatIdx, 0), [b, k, ...rest]) as T;
  });
}
