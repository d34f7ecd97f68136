/**
 * Class activation maps of a ResNet18 on the ViT's patch grid: what the trained CNN looks at for a class,
 * the signal its importance head learns from in stage 1 of the hybrid when no ground-truth mask exists.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { ResNet18 } from "../models/mod.ts";

/**
 * CAM of class `classes[i]` for image `i`, ReLU'd and average-pooled onto a `grid x grid` patch grid,
 * `[B, grid*grid]` (row-major patches, like the ViT's tokens). Runs in `tf.tidy`; the caller disposes it.
 *
 * @example
 * ```ts
 * const cam = classActivationMap(resnet, x, predictedClasses, 8); // [B, 64]
 * ```
 */
export function classActivationMap(
  resnet: ResNet18,
  x: tf.Tensor4D,
  classes: ArrayLike<number>,
  grid: number,
): tf.Tensor2D {
  if (classes.length !== x.shape[0]) {
    throw new RangeError(`classActivationMap: ${classes.length} classes for a batch of ${x.shape[0]} images`);
  }
  return tf.tidy(() => {
    const feature = resnet.features(x, 4, false); // [B, h, w, C]
    const w = resnet.stateDict().get("fc.weight");
    if (!w) throw new Error("classActivationMap: the ResNet18 has no classification head (fc.weight)");
    const [b, h, ww, c] = feature.shape;
    const wy = tf.transpose(tf.gather(w, tf.tensor1d(Array.from(classes), "int32"), 1)); // [B, C]
    const cam = tf.relu(tf.sum(tf.mul(feature, tf.reshape(wy, [b, 1, 1, c])), 3, true)) as tf.Tensor4D;
    const onGrid = h === grid && ww === grid ? cam : tf.image.resizeBilinear(cam, [grid, grid]);
    return tf.reshape(onGrid, [b, grid * grid]) as tf.Tensor2D;
  });
}
