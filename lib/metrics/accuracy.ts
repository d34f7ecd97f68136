/**
 * Accuracy, top-k accuracy and small helpers to turn model outputs into predictions.
 *
 * @module
 */
import { checkLabels, checkRows, checkSameLength } from "./_check.ts";

/**
 * Splits a flat row-major `[n, numClasses]` array (what `logits.data()` returns) into rows.
 *
 * @example
 * ```ts
 * rowsOf(new Float32Array([1, 2, 3, 4]), 2); // [[1, 2], [3, 4]] as subarrays
 * ```
 */
export function rowsOf(flat: ArrayLike<number>, numClasses: number): Float64Array[] {
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new RangeError(`rowsOf: numClasses is ${numClasses}; expected a positive integer`);
  }
  if (flat.length % numClasses !== 0) {
    throw new RangeError(`rowsOf: length ${flat.length} is not a multiple of numClasses ${numClasses}`);
  }
  const all = Float64Array.from(flat);
  const rows: Float64Array[] = [];
  for (let i = 0; i < all.length; i += numClasses) rows.push(all.subarray(i, i + numClasses));
  return rows;
}

/**
 * Index of the largest value; ties go to the lowest index (like `numpy.argmax`).
 *
 * @example
 * ```ts
 * argmax([0.2, 0.5, 0.5]); // 1
 * ```
 */
export function argmax(row: ArrayLike<number>): number {
  if (row.length === 0) throw new RangeError("argmax: row is empty; expected at least one score");
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

/**
 * Predicted class per row (argmax, ties to the lowest index).
 *
 * @example
 * ```ts
 * predictions([[0.1, 0.9], [0.7, 0.3]]); // [1, 0]
 * ```
 */
export function predictions(scores: readonly ArrayLike<number>[]): number[] {
  checkRows("predictions", "scores", scores);
  return scores.map(argmax);
}

/**
 * Row-wise softmax (numerically stable), e.g. logits to probabilities.
 *
 * @example
 * ```ts
 * softmax([[0, 0]]); // [[0.5, 0.5]]
 * ```
 */
export function softmax(logits: readonly ArrayLike<number>[]): Float64Array[] {
  checkRows("softmax", "logits", logits);
  return logits.map((r) => {
    let m = -Infinity;
    for (let j = 0; j < r.length; j++) m = Math.max(m, r[j]);
    const out = new Float64Array(r.length);
    let s = 0;
    for (let j = 0; j < r.length; j++) s += out[j] = Math.exp(r[j] - m);
    for (let j = 0; j < r.length; j++) out[j] /= s;
    return out;
  });
}

/**
 * Fraction of predictions equal to the labels, in [0, 1].
 *
 * @example
 * ```ts
 * accuracy([0, 1, 1, 2], [0, 1, 2, 2]); // 0.75
 * ```
 */
export function accuracy(labels: ArrayLike<number>, predicted: ArrayLike<number>): number {
  checkLabels("accuracy", "labels", labels);
  checkLabels("accuracy", "predicted", predicted);
  checkSameLength("accuracy", labels, predicted, "labels and predicted");
  let hit = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] === predicted[i]) hit++;
  return hit / labels.length;
}

/**
 * Top-k accuracy: the label is among the k highest scores. Ties are broken like {@link argmax}
 * (lower class index ranks first), so `topKAccuracy(..., 1)` equals the accuracy of the argmax.
 *
 * @example
 * ```ts
 * topKAccuracy([1, 2], [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], 2); // 0.5
 * ```
 */
export function topKAccuracy(
  labels: ArrayLike<number>,
  scores: readonly ArrayLike<number>[],
  k: number,
): number {
  const c = checkRows("topKAccuracy", "scores", scores);
  checkLabels("topKAccuracy", "labels", labels, c);
  checkSameLength("topKAccuracy", labels, scores, "labels and scores");
  if (!Number.isInteger(k) || k < 1) {
    throw new RangeError(`topKAccuracy: k is ${k}; expected an integer >= 1`);
  }
  let hit = 0;
  for (let i = 0; i < labels.length; i++) {
    const row = scores[i], y = labels[i], s = row[y];
    let rank = 0;
    for (let j = 0; j < c; j++) if (row[j] > s || (row[j] === s && j < y)) rank++;
    if (rank < k) hit++;
  }
  return hit / labels.length;
}
