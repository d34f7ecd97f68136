/**
 * Spatially spread top-k: the patch grid is cut into `cell`×`cell` windows, and a score's rank inside its
 * window comes before its value, so top-k first takes the best token of every window, then the second
 * best of every window, and so on (ordered by score within each round). The selector still decides which
 * tokens of a window survive, but it can no longer spend the whole budget on one blob: the diagnosis of the
 * equal-cost study found CNN top-k clustered on the object and below random tokens for the same ViT.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * Scores re-ranked for a spread top-k (see the module notes): `score' = sigmoid(score) − 2·rank`, where
 * `rank` (0 = best) is the token's place inside its window (ties: the lower index first). Top-k of the
 * result keeps every window's best token before any window's second. `scores` is `[B, G·G]` over a
 * row-major `G`×`G` grid (G is read off the shape); `cell` must divide `G`. `cell` 1 keeps the scores' order.
 *
 * @example
 * ```ts
 * // 4×4 grid, 2×2 windows: the 4 kept tokens are one per window.
 * const s = spreadScores(scores, 2);
 * selectTopK(tokens, s, { keep: 4 });
 * ```
 */
export function spreadScores(scores: tf.Tensor2D, cell: number): tf.Tensor2D {
  const [b, n] = scores.shape;
  const grid = Math.round(Math.sqrt(n));
  if (grid * grid !== n) {
    throw new Error(`spreadScores: scores [${scores.shape}] are not a square patch grid per image`);
  }
  if (!(Number.isInteger(cell) && cell >= 1 && grid % cell === 0)) {
    throw new Error(`spreadScores: cell ${cell} is not a whole number ≥ 1 dividing the grid side ${grid}`);
  }
  return tf.tidy(() => {
    const w = grid / cell, c2 = cell * cell;
    // [B, G, G] → [B, w, cell, w, cell] → [B, w, w, cell, cell] → [B, w·w, cell²]: one row per window.
    const byCell = (t: tf.Tensor) =>
      tf.reshape(tf.transpose(tf.reshape(t, [b, w, cell, w, cell]), [0, 1, 3, 2, 4]), [b, w * w, c2]);
    const fromCell = (t: tf.Tensor) =>
      tf.reshape(tf.transpose(tf.reshape(t, [b, w, w, cell, cell]), [0, 1, 3, 2, 4]), [b, n]);
    const s = byCell(tf.cast(scores, "float32"));
    const mine = tf.expandDims(s, 3); // [B, M, c², 1]
    const other = tf.expandDims(s, 2); // [B, M, 1, c²]
    // j beats i when its score is higher, or equal with a lower index inside the window.
    const lower = tf.tensor2d(
      Array.from({ length: c2 * c2 }, (_, k) => (k % c2 < Math.floor(k / c2) ? 1 : 0)),
      [c2, c2],
      "bool",
    );
    const beats = tf.logicalOr(tf.greater(other, mine), tf.logicalAnd(tf.equal(other, mine), lower));
    const rank = tf.sum(tf.cast(beats, "float32"), 3); // [B, M, c²]
    // sigmoid lies in [0, 1] (saturated included) and rounds are 2 apart, so no round overlaps the next.
    return fromCell(tf.sub(tf.sigmoid(s), tf.mul(rank, 2))) as tf.Tensor2D;
  });
}
