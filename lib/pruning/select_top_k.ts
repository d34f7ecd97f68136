/**
 * {@link selectTopK}: keep the k highest-scoring patch tokens (plus the prefix tokens, e.g. CLS),
 * in their original order, by a real gather, so the blocks that follow run on a shorter sequence.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Options of {@link selectTopK}. Give exactly one of `keep` and `keepRatio`. */
export interface SelectTopKOptions {
  /** Number of patch tokens to keep (1..N). */
  keep?: number;
  /** Fraction of patch tokens to keep, in (0, 1]; k = max(1, round(ratio * N)). */
  keepRatio?: number;
  /** Tokens at the front that are always kept and not scored (CLS: 1, the default). */
  prefixTokens?: number;
}

/**
 * Number of patch tokens kept out of `n` at `ratio` (at least 1): `max(1, round(ratio * n))`.
 *
 * @example
 * ```ts
 * keepCount(64, 0.5); // 32
 * ```
 */
export function keepCount(n: number, ratio: number): number {
  if (!(ratio > 0 && ratio <= 1)) throw new Error(`keepCount: keep ratio ${ratio} is not in (0, 1]`);
  return Math.max(1, Math.min(n, Math.round(ratio * n)));
}

/**
 * Gathers `[B, P + N, D]` tokens down to the `P` prefix tokens plus the patch tokens at `indices`
 * (`[B, k]` int32, 0..N-1, in the order given). Differentiable with respect to `tokens` (the gradient
 * scatters back onto the kept positions); `indices` are treated as constants, so they may come from
 * scores that depend on trainable variables (a top-k is not differentiable) without breaking
 * `tf.variableGrads`.
 *
 * @example
 * ```ts
 * const kept = gatherTokens(tokens, tf.tensor2d([[0, 5]], [1, 2], "int32")); // [1, 3, D]
 * ```
 */
export function gatherTokens(tokens: tf.Tensor3D, indices: tf.Tensor2D, prefixTokens = 1): tf.Tensor3D {
  const [b, t, d] = tokens.shape;
  const n = t - prefixTokens;
  if (indices.rank !== 2 || indices.shape[0] !== b) {
    throw new Error(
      `gatherTokens: indices shape [${indices.shape}] is not [${b}, k] for tokens [${tokens.shape}]`,
    );
  }
  if (indices.dtype !== "int32") {
    throw new Error(`gatherTokens: indices dtype is ${indices.dtype}, expected int32`);
  }
  const k = indices.shape[1];
  // A custom gradient keeps the (integer) indices off the gradient tape; they are saved for backprop.
  const gather = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    const flat = tf.tidy(() =>
      tf.reshape(
        tf.add(indices, tf.reshape(tf.mul(tf.range(0, b, 1, "int32"), tf.scalar(n, "int32")), [b, 1])),
        [b * k],
      )
    ) as tf.Tensor1D;
    const value = tf.tidy(() => {
      const patches = tf.reshape(tf.slice(x, [0, prefixTokens, 0], [b, n, d]), [b * n, d]);
      const kept = tf.reshape(tf.gather(patches, flat, 0), [b, k, d]);
      if (prefixTokens === 0) return kept;
      return tf.concat([tf.slice(x, [0, 0, 0], [b, prefixTokens, d]), kept], 1);
    });
    save([flat]);
    flat.dispose();
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const dyKept = tf.reshape(tf.slice(dy, [0, prefixTokens, 0], [b, k, d]), [b * k, d]);
        const dPatches = tf.reshape(tf.unsortedSegmentSum(dyKept, saved[0] as tf.Tensor1D, b * n), [b, n, d]);
        if (prefixTokens === 0) return dPatches;
        return tf.concat([tf.slice(dy, [0, 0, 0], [b, prefixTokens, d]), dPatches], 1);
      });
    return { value, gradFunc };
  });
  return gather(tokens) as tf.Tensor3D;
}

/**
 * Keeps the prefix tokens (CLS) and the top-k patch tokens by `scores` (`[B, N]`), sorted by their
 * original position. Returns the kept tokens `[B, P + k, D]` and their patch indices `[B, k]` (int32,
 * ascending). Ties go to the lower index. With k = N it returns the tokens unchanged (identity gather).
 *
 * @example
 * ```ts
 * const { tokens: kept, indices } = selectTopK(tokens, scores, { keepRatio: 0.5 });
 * ```
 */
export function selectTopK(
  tokens: tf.Tensor3D,
  scores: tf.Tensor2D,
  options: SelectTopKOptions,
): { tokens: tf.Tensor3D; indices: tf.Tensor2D } {
  const prefix = options.prefixTokens ?? 1;
  const [b, t] = tokens.shape;
  const n = t - prefix;
  if (scores.rank !== 2 || scores.shape[0] !== b || scores.shape[1] !== n) {
    throw new Error(
      `selectTopK: scores shape [${scores.shape}] is not [${b}, ${n}] for tokens [${tokens.shape}] with ${prefix} prefix token(s)`,
    );
  }
  if ((options.keep === undefined) === (options.keepRatio === undefined)) {
    throw new Error(`selectTopK: give exactly one of keep and keepRatio (got ${JSON.stringify(options)})`);
  }
  const k = options.keep ?? keepCount(n, options.keepRatio!);
  if (!(Number.isInteger(k) && k >= 1 && k <= n)) {
    throw new Error(`selectTopK: keep ${k} is not an integer in 1..${n}`);
  }
  return tf.tidy(() => {
    let indices: tf.Tensor2D;
    if (k === n) {
      indices = tf.tile(tf.reshape(tf.range(0, n, 1, "int32"), [1, n]), [b, 1]) as tf.Tensor2D;
    } else {
      const top = tf.topk(tf.cast(scores, "float32"), k, true).indices;
      // Sort the chosen indices ascending: top-k of their negation.
      indices = tf.cast(
        tf.neg(tf.topk(tf.neg(tf.cast(top, "float32")), k, true).values),
        "int32",
      ) as tf.Tensor2D;
    }
    return { tokens: gatherTokens(tokens, indices, prefix), indices };
  });
}
