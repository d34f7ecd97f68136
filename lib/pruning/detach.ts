/**
 * {@link detach}: a copy of a tensor that the gradient tape does not know about.
 *
 * Hard selection (top-k, argmax) needs no gradient, but tfjs still back-propagates into integer indices
 * derived from trainable values and then fails ("The gradient of input indices must have 'float32'
 * dtype"). Selecting on a detached copy of the scores avoids that.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * Same values, no tape connection: a new tensor on the same backend data (no copy, no read: the
 * WebGPU backend cannot read GPU data synchronously in Deno), created outside any kernel so the gradient
 * tape does not see it. Tracked by the enclosing `tf.tidy` like any tensor.
 *
 * @example
 * ```ts
 * const idx = tf.topk(detach(scores), k).indices; // safe to gather with inside tf.variableGrads
 * ```
 */
export function detach<T extends tf.Tensor>(x: T): T {
  const engine = tf.engine() as unknown as {
    state: { tensorInfo: WeakMap<object, { backend: tf.KernelBackend }> };
  };
  const owner = engine.state.tensorInfo.get(x.dataId)?.backend ?? tf.backend();
  // The backend counts references per data id: the alias holds one, so disposing either tensor keeps
  // the data for the other.
  owner.incRef(x.dataId);
  return tf.engine().makeTensorFromTensorInfo(
    { dataId: x.dataId, shape: x.shape, dtype: x.dtype },
    owner,
  ) as T;
}
