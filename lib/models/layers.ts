/**
 * The functional layers the models share: PyTorch-padded convolution, batch norm with PyTorch's
 * train/eval semantics, layer norm, linear, exact-erf GELU, multi-head self-attention.
 *
 * All functions are synchronous and meant to be called inside the caller's `tf.tidy`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { batchNormTrainKernel, geluLean, layerNormLean, recordingGradients } from "../backend/mod.ts";

/**
 * 2D convolution with PyTorch's symmetric zero padding (`padding=pad`), NHWC input, HWIO kernel.
 *
 * @example
 * ```ts
 * const y = conv2d(tf.zeros([1, 8, 8, 3]) as tf.Tensor4D, tf.zeros([3, 3, 3, 4]) as tf.Tensor4D, 2, 1); // [1,4,4,4]
 * ```
 */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: number): tf.Tensor4D {
  return tf.conv2d(x, w, stride, pad === 0 ? "valid" : pad);
}

/** Batch-norm parameters and running statistics (tfjs variables). */
export interface BatchNormParams {
  weight: tf.Variable;
  bias: tf.Variable;
  runningMean: tf.Variable;
  runningVar: tf.Variable;
}

/**
 * Batch norm over N, H, W with PyTorch semantics. In training it normalises with the biased batch
 * variance and updates the running stats as `(1 - momentum) * old + momentum * batch`, with the
 * unbiased variance for `running_var`; in evaluation it uses the running stats.
 *
 * @example
 * ```ts
 * const y = batchNorm(x, params, { training: true, eps: 1e-5, momentum: 0.1 });
 * ```
 */
export function batchNorm(
  x: tf.Tensor4D,
  p: BatchNormParams,
  opts: { training: boolean; eps: number; momentum: number },
): tf.Tensor4D {
  if (!opts.training) {
    const scale = tf.mul(p.weight, tf.rsqrt(tf.add(p.runningVar, opts.eps)));
    const shift = tf.sub(p.bias, tf.mul(p.runningMean, scale));
    return tf.add(tf.mul(x, scale), shift);
  }
  const n = x.shape[0] * x.shape[1] * x.shape[2];
  const m = opts.momentum;
  const fused = batchNormTrainKernel(x, p.weight, p.bias, opts.eps);
  if (fused) {
    // One kernel forward and one backward (oneDNN on the native backend); the batch statistics
    // it returns update the running ones exactly as below.
    updateRunningStats(p, fused.mean, fused.variance, n, m);
    tf.dispose([fused.mean, fused.variance]);
    return fused.y;
  }
  const mean = spatialMean(x);
  const centered = tf.sub(x, mean);
  const variance = spatialMean(tf.square(centered) as tf.Tensor4D);
  // Running statistics: not part of the gradient.
  updateRunningStats(p, mean, variance, n, m);
  // PyTorch's CPU formula: y = x * alpha + beta, alpha = w / sqrt(var + eps), beta = b - mean * alpha.
  const alpha = tf.mul(tf.rsqrt(tf.add(variance, opts.eps)), p.weight);
  return tf.add(tf.mul(x, alpha), tf.sub(p.bias, tf.mul(mean, alpha)));
}

/**
 * Mean over N, H, W in three stages (W, then H, then N): the same value as `tf.mean(x, [0, 1, 2])`
 * with a much smaller float32 summation error on backends that accumulate in float32 (wasm).
 */
/** PyTorch's running-statistics update from a batch's mean and biased variance over `n` values. */
function updateRunningStats(
  p: BatchNormParams,
  mean: tf.Tensor,
  variance: tf.Tensor,
  n: number,
  m: number,
): void {
  tf.tidy(() => {
    const unbiased = n > 1 ? tf.mul(variance, n / (n - 1)) : variance;
    p.runningMean.assign(tf.add(tf.mul(p.runningMean, 1 - m), tf.mul(mean, m)));
    p.runningVar.assign(tf.add(tf.mul(p.runningVar, 1 - m), tf.mul(unbiased, m)));
  });
}

function spatialMean(x: tf.Tensor4D): tf.Tensor1D {
  return tf.mean(tf.mean(tf.mean(x, 2), 1), 0) as tf.Tensor1D;
}

/**
 * Layer norm over the last axis (biased variance, as `torch.nn.LayerNorm`), as one custom-gradient op
 * that keeps only the input and the per-row statistics for backward (`layerNormLean`).
 *
 * @example
 * ```ts
 * const y = layerNorm(x, gamma, beta, 1e-6);
 * ```
 */
export function layerNorm<T extends tf.Tensor>(x: T, weight: tf.Tensor, bias: tf.Tensor, eps: number): T {
  return layerNormLean(x, weight, bias, eps);
}

/** tfjs types custom-gradient functions loosely (inputs and the save function in one rest array). */
type LooseCustomGrad = Parameters<typeof tf.customGrad>[0];

/** `x·w + b` for `[n, in]`·`[in, out]` as one op whose gradient keeps only `x` and `w`. */
const linearWithBias = tf.customGrad(
  ((x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, save: tf.GradSaveFunc) => {
    save([x, w]);
    return {
      value: tf.fused.matMul({ a: x, b: w, bias: b }),
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
        const [xs, ws] = saved as tf.Tensor2D[];
        return [tf.matMul(dy, ws, false, true), tf.matMul(xs, dy, true, false), tf.sum(dy, 0)];
      },
    };
  }) as unknown as LooseCustomGrad,
) as unknown as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor) => tf.Tensor2D;

/**
 * `x @ w + b` over the last axis of `x` (any rank), with `w` as `[in, out]`.
 *
 * @example
 * ```ts
 * const y = linear(tf.ones([2, 5, 8]), tf.ones([8, 4]), tf.zeros([4])); // [2, 5, 4]
 * ```
 */
export function linear<T extends tf.Tensor>(x: T, w: tf.Tensor, b?: tf.Tensor): T {
  const inDim = x.shape[x.rank - 1];
  const outDim = w.shape[1] as number;
  const flat = x.rank === 2 ? (x as unknown as tf.Tensor2D) : tf.reshape(x, [-1, inDim]) as tf.Tensor2D;
  // The bias goes into the matrix product (one pass less over the output). Under a gradient tape
  // tfjs' own fused op would also keep its output for the backward pass; linearWithBias keeps only
  // what a plain matmul keeps (x and w).
  const fuse = b !== undefined && b.rank === 1 && flat.dtype === "float32";
  let y: tf.Tensor;
  if (!fuse) {
    y = tf.matMul(flat, w as tf.Tensor2D);
    if (b) y = tf.add(y, b);
  } else if (recordingGradients()) y = linearWithBias(flat, w as tf.Tensor2D, b!);
  else y = tf.fused.matMul({ a: flat, b: w as tf.Tensor2D, bias: b });
  return (x.rank === 2 ? y : tf.reshape(y, [...(x.shape as number[]).slice(0, -1), outDim])) as T;
}

/**
 * Exact (erf) GELU, as `torch.nn.GELU()`, keeping only its input for backward (`geluLean`).
 *
 * @example
 * ```ts
 * gelu(tf.tensor([0, 1])); // [0, 0.8413]
 * ```
 */
export function gelu<T extends tf.Tensor>(x: T): T {
  return geluLean(x);
}
