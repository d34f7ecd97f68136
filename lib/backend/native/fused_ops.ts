/**
 * Memory-lean GELU and layer norm for training on any backend: each is one custom-gradient op
 * that keeps only what its gradient needs (GELU: its input; layer norm: its input and the per-row
 * mean and 1/std), where the op-by-op versions keep 4-6 full-size intermediates each on tfjs' tape.
 * In a ViT-Small training step these two account for about a third of the activation memory.
 *
 * Outputs and gradients equal the op-by-op versions (`x·½(1+erf(x/√2))`, PyTorch's `nn.GELU()`;
 * `nn.LayerNorm` over the last axis) to float32 rounding.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** tfjs types custom-gradient functions loosely (inputs and the save function in one rest array). */
type LooseCustomGrad = Parameters<typeof tf.customGrad>[0];

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
