/**
 * Memory-lean GELU and layer norm for training on any backend: each is one custom-gradient op
 * that keeps only what its gradient needs (GELU: its input; layer norm: its input and the per-row
 * mean and 1/std), where the op-by-op versions keep 4-6 full-size intermediates each on tfjs' tape.
 * In a ViT-Small training step these two account for about a third of the activation memory.
 *
 * Outputs and gradients equal the op-by-op versions (`x·½(1+erf(x/√2))`, PyTorch's `nn.GELU()`;
 * `nn.LayerNorm` over the last axis) to float32 rounding.
 *
 * Where the current backend has a kernel for the whole op (the native backend with oneDNN:
 * {@link GELU_KERNEL} and friends), forward and backward each run as that one kernel; elsewhere
 * as tfjs ops.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Kernel names a backend may register to run these ops whole (inputs/outputs documented at each). */
/** Inputs `{x}` → exact GELU of `x`. */
export const GELU_KERNEL = "CnnvitGelu";
/** Inputs `{x, dy}` → `dy·GELU'(x)`. */
export const GELU_GRAD_KERNEL = "CnnvitGeluGrad";
/** Inputs `{x, weight, bias}`, attrs `{eps}` → `[y, mean, variance]` (stats shaped `[..., 1]`). */
export const LAYER_NORM_KERNEL = "CnnvitLayerNorm";
/** Inputs `{x, mean, variance, dy, weight}`, attrs `{eps}` → `[dx, dweight, dbias]`. */
export const LAYER_NORM_GRAD_KERNEL = "CnnvitLayerNormGrad";

/**
 * Inputs `{qkv}` (`[b, t, 3·d]`, timm's fused projection), attrs `{heads, keepProbs?}` → the
 * merged-heads attention context `[b, t, d]` = softmax(q·kᵀ/√(d/heads))·v, and with `keepProbs` also
 * the probabilities `[b, heads, t, t]` (`[ctx, probs]`, for the gradient).
 */
export const ATTENTION_KERNEL = "CnnvitAttention";
/** Inputs `{qkv, probs, dctx}`, attrs `{heads}` → `dqkv` `[b, t, 3·d]`. */
export const ATTENTION_GRAD_KERNEL = "CnnvitAttentionGrad";
/**
 * Inputs `{qkv, mask}` (mask `[b, t]`, 1 = kept), attrs `{heads, keepProbs?}` → the context of DynamicViT's
 * attention with a token policy (each query attends to the kept keys and itself), and with `keepProbs`
 * also what its gradient needs: `[ctx, probs, expScores, rowInv, rowArgmax]`.
 */
export const MASKED_ATTENTION_KERNEL = "CnnvitMaskedAttention";
/** Inputs `{qkv, mask, probs, expScores, rowInv, rowArgmax, dctx}`, attrs `{heads}` → `[dqkv, dmask]`. */
export const MASKED_ATTENTION_GRAD_KERNEL = "CnnvitMaskedAttentionGrad";

/** Inputs `{x, weight, bias}` (x NHWC), attrs `{eps}` → `[y, mean, variance]` (batch stats `[c]`, biased). */
export const BATCH_NORM_KERNEL = "CnnvitBatchNorm";
/** Inputs `{x, mean, variance, dy, weight}`, attrs `{eps}` → `[dx, dweight, dbias]`. */
export const BATCH_NORM_GRAD_KERNEL = "CnnvitBatchNormGrad";

/** True while a gradient tape records (inside `tf.grad`/`tf.variableGrads`; tfjs' engine state). */
export function recordingGradients(): boolean {
  return (tf.engine() as unknown as { state: { gradientDepth: number } }).state.gradientDepth > 0;
}

function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

function run(
  name: string,
  inputs: tf.NamedTensorMap,
  attrs: Record<string, number> = {},
): tf.Tensor | tf.Tensor[] {
  return tf.engine().runKernel(name, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor | tf.Tensor[];
}

const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** tfjs types custom-gradient functions loosely (inputs and the save function in one rest array). */
type LooseCustomGrad = Parameters<typeof tf.customGrad>[0];

const geluKernelOp = tf.customGrad(
  ((x: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x]);
    return {
      value: run(GELU_KERNEL, { x }) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        run(GELU_GRAD_KERNEL, { x: saved[0], dy }) as tf.Tensor,
    };
  }) as unknown as LooseCustomGrad,
);

const geluOp = tf.customGrad(
  ((x: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x]);
    const value = tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, INV_SQRT2)), 1)));
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs] = saved;
        return tf.tidy(() => {
          // d/dx x·Φ(x) = Φ(x) + x·φ(x)
          const cdf = tf.mul(tf.add(tf.erf(tf.mul(xs, INV_SQRT2)), 1), 0.5);
          const pdf = tf.mul(tf.exp(tf.mul(tf.square(xs), -0.5)), INV_SQRT_2PI);
          return tf.mul(dy, tf.add(cdf, tf.mul(xs, pdf)));
        });
      },
    };
  }) as unknown as LooseCustomGrad,
);

/**
 * Exact (erf) GELU with a lean gradient: keeps only `x` for the backward pass.
 *
 * @example
 * ```ts
 * const y = geluLean(tf.tensor([0, 1])); // [0, 0.8413]
 * ```
 */
export function geluLean<T extends tf.Tensor>(x: T): T {
  if (x.dtype === "float32" && hasKernel(GELU_KERNEL) && hasKernel(GELU_GRAD_KERNEL)) {
    return geluKernelOp(x) as T;
  }
  return geluOp(x) as T;
}

/**
 * Layer norm over the last axis (`(x − mean) / √(var + eps) · weight + bias`, biased variance, as
 * `torch.nn.LayerNorm`) with a lean gradient: keeps `x` and the per-row mean and 1/std.
 *
 * @example
 * ```ts
 * const y = layerNormLean(tf.ones([2, 5, 8]), tf.ones([8]), tf.zeros([8]), 1e-6);
 * ```
 */
export function layerNormLean<T extends tf.Tensor>(x: T, weight: tf.Tensor, bias: tf.Tensor, eps: number): T {
  const d = x.shape[x.rank - 1];
  if (weight.size !== d || bias.size !== d) {
    throw new Error(
      `layerNormLean: weight and bias must have ${d} elements (the last axis of x [${x.shape}]), ` +
        `got [${weight.shape}] and [${bias.shape}]`,
    );
  }
  const axis = x.rank - 1;
  if (
    x.dtype === "float32" && weight.dtype === "float32" && bias.dtype === "float32" && weight.rank === 1 &&
    bias.rank === 1 && hasKernel(LAYER_NORM_KERNEL) && hasKernel(LAYER_NORM_GRAD_KERNEL)
  ) {
    const { y, mean, variance } = normKernelOp(
      LAYER_NORM_KERNEL,
      LAYER_NORM_GRAD_KERNEL,
      x,
      weight,
      bias,
      eps,
    );
    tf.dispose([mean, variance]);
    return y as T;
  }
  const op = tf.customGrad(
    ((xi: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
      const [mean, rstd] = tf.tidy(() => {
        const m = tf.mean(xi, axis, true);
        const v = tf.mean(tf.square(tf.sub(xi, m)), axis, true);
        return [m, tf.rsqrt(tf.add(v, eps))];
      });
      save([xi, mean, rstd, w]);
      const value = tf.tidy(() => tf.add(tf.mul(tf.mul(tf.sub(xi, mean), rstd), w), b));
      return {
        value,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [xs, m, r, ws] = saved;
          return tf.tidy(() => {
            const xhat = tf.mul(tf.sub(xs, m), r);
            const lead = Array.from({ length: xs.rank - 1 }, (_, i) => i);
            const dw = tf.sum(tf.mul(dy, xhat), lead);
            const db = tf.sum(dy, lead);
            const g = tf.mul(dy, ws);
            // dx = r · (g − mean(g) − x̂ · mean(g · x̂))
            const dx = tf.mul(
              tf.sub(tf.sub(g, tf.mean(g, axis, true)), tf.mul(xhat, tf.mean(tf.mul(g, xhat), axis, true))),
              r,
            );
            return [dx, tf.reshape(dw, ws.shape), tf.reshape(db, ws.shape)];
          });
        },
      };
    }) as unknown as LooseCustomGrad,
  );
  return op(x, weight, bias) as T;
}

/**
 * Training-mode batch norm of an NHWC tensor as one kernel where the backend has one (the native
 * backend with oneDNN), else `undefined` (callers then use tfjs ops). Returns the output and the
 * batch's mean and biased variance (`[c]`, for the running statistics; the caller disposes them).
 *
 * @example
 * ```ts
 * const r = batchNormTrainKernel(x, gamma, beta, 1e-5);
 * if (r) { use(r.y); tf.dispose([r.mean, r.variance]); }
 * ```
 */
export function batchNormTrainKernel(
  x: tf.Tensor4D,
  weight: tf.Tensor,
  bias: tf.Tensor,
  eps: number,
): { y: tf.Tensor4D; mean: tf.Tensor1D; variance: tf.Tensor1D } | undefined {
  if (
    x.dtype !== "float32" || weight.rank !== 1 || bias.rank !== 1 || !hasKernel(BATCH_NORM_KERNEL) ||
    !hasKernel(BATCH_NORM_GRAD_KERNEL)
  ) {
    return undefined;
  }
  const r = normKernelOp(BATCH_NORM_KERNEL, BATCH_NORM_GRAD_KERNEL, x, weight, bias, eps);
  return { y: r.y as tf.Tensor4D, mean: r.mean as tf.Tensor1D, variance: r.variance as tf.Tensor1D };
}

/**
 * A whole-op normalization kernel (`{x, weight, bias}` → `[y, mean, variance]`) with its gradient kernel
 * (`{x, mean, variance, dy, weight}` → `[dx, dweight, dbias]`) as one differentiable op. Returns the output
 * and the statistics, kept out of any enclosing tidy (the caller disposes them).
 */
function normKernelOp(
  kernel: string,
  gradKernel: string,
  x: tf.Tensor,
  weight: tf.Tensor,
  bias: tf.Tensor,
  eps: number,
): { y: tf.Tensor; mean: tf.Tensor; variance: tf.Tensor } {
  let stats: tf.Tensor[] = [];
  const op = tf.customGrad(
    ((xi: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
      const [y, mean, variance] = run(kernel, { x: xi, weight: w, bias: b }, { eps }) as tf.Tensor[];
      save([xi, mean, variance, w]);
      stats = [tf.keep(mean), tf.keep(variance)];
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [xs, m, v, ws] = saved;
          return run(gradKernel, { x: xs, mean: m, variance: v, dy, weight: ws }, { eps }) as tf.Tensor[];
        },
      };
    }) as unknown as LooseCustomGrad,
  );
  const y = op(x, weight, bias);
  return { y, mean: stats[0], variance: stats[1] };
}

/**
 * Self-attention context from the fused `qkv` projection as one kernel where the backend has one
 * (the native backend with oneDNN), else `undefined` (callers then split heads and use tfjs ops).
 * Under a gradient tape it is one custom-gradient op that keeps `qkv` and the probabilities.
 *
 * @example
 * ```ts
 * const ctx = attentionKernel(qkv, 6) ?? opByOpAttention(qkv);
 * ```
 */
export function attentionKernel(qkv: tf.Tensor3D, heads: number): tf.Tensor3D | undefined {
  if (qkv.dtype !== "float32" || !hasKernel(ATTENTION_KERNEL) || !hasKernel(ATTENTION_GRAD_KERNEL)) {
    return undefined;
  }
  if (!recordingGradients()) return run(ATTENTION_KERNEL, { qkv }, { heads }) as tf.Tensor3D;
  const op = tf.customGrad(
    ((x: tf.Tensor, save: tf.GradSaveFunc) => {
      const [ctx, probs] = run(ATTENTION_KERNEL, { qkv: x }, { heads, keepProbs: 1 }) as tf.Tensor[];
      save([x, probs]);
      return {
        value: ctx,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
          run(ATTENTION_GRAD_KERNEL, { qkv: saved[0], probs: saved[1], dctx: dy }, { heads }) as tf.Tensor,
      };
    }) as unknown as LooseCustomGrad,
  );
  return op(qkv) as tf.Tensor3D;
}

/**
 * {@link attentionKernel} with DynamicViT's token policy: `mask` `[b, t]` (1 = kept, float32, possibly a
 * straight-through mask that carries a gradient) lets each query attend to the kept keys and itself, as
 * the ViT's op-by-op `tokenMask` path computes it. One kernel where the backend has one (the native backend
 * with oneDNN), else `undefined`. Under a gradient tape it is one custom-gradient op with gradients for
 * `qkv` and for the mask.
 *
 * @example
 * ```ts
 * const ctx = maskedAttentionKernel(qkv, mask, 4) ?? opByOpMaskedAttention(qkv, mask);
 * ```
 */
export function maskedAttentionKernel(
  qkv: tf.Tensor3D,
  mask: tf.Tensor2D,
  heads: number,
): tf.Tensor3D | undefined {
  if (
    qkv.dtype !== "float32" || mask.dtype !== "float32" || !hasKernel(MASKED_ATTENTION_KERNEL) ||
    !hasKernel(MASKED_ATTENTION_GRAD_KERNEL)
  ) {
    return undefined;
  }
  if (!recordingGradients()) return run(MASKED_ATTENTION_KERNEL, { qkv, mask }, { heads }) as tf.Tensor3D;
  const op = tf.customGrad(
    ((x: tf.Tensor, m: tf.Tensor, save: tf.GradSaveFunc) => {
      const [ctx, probs, expScores, rowInv, rowArgmax] = run(
        MASKED_ATTENTION_KERNEL,
        { qkv: x, mask: m },
        { heads, keepProbs: 1 },
      ) as tf.Tensor[];
      save([x, m, probs, expScores, rowInv, rowArgmax]);
      return {
        value: ctx,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [xs, ms, p, e, r, a] = saved;
          return run(
            MASKED_ATTENTION_GRAD_KERNEL,
            { qkv: xs, mask: ms, probs: p, expScores: e, rowInv: r, rowArgmax: a, dctx: dy },
            { heads },
          ) as tf.Tensor[];
        },
      };
    }) as unknown as LooseCustomGrad,
  );
  return op(qkv, mask) as tf.Tensor3D;
}
