/**
 * ROC curves and the area under them, binary and one-vs-rest.
 *
 * @module
 */
import { checkLabels, checkNumbers, checkRows, checkSameLength } from "./_check.ts";

/** Points of a ROC curve, from (0, 0) to (1, 1). */
export interface RocCurve {
  /** False positive rate at each threshold. */
  fpr: number[];
  /** True positive rate at each threshold. */
  tpr: number[];
  /** Score threshold (predict positive when score >= threshold); the first is `Infinity`. */
  thresholds: number[];
  /** Area under the curve (trapezoids; tied scores count half, i.e. the Mann-Whitney statistic). */
  auc: number;
}

/**
 * ROC curve of a binary problem: `positive[i]` is 1 (or true) for the positive class, `scores[i]` higher
 * means more positive. Tied scores form one point, so a tie between a positive and a negative earns half
 * credit. Throws when only one class occurs (the curve is undefined).
 *
 * @example
 * ```ts
 * rocCurve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]).auc; // 0.75
 * ```
 */
export function rocCurve(positive: ArrayLike<number | boolean>, scores: ArrayLike<number>): RocCurve {
  const y = Array.from(positive, (v) => (v === true ? 1 : v === false ? 0 : v));
  checkLabels("rocCurve", "positive", y, 2);
  checkNumbers("rocCurve", "scores", scores);
  checkSameLength("rocCurve", y, scores, "positive and scores");
  let p = 0;
  for (const v of y) p += v;
  const n = y.length - p;
  if (p === 0 || n === 0) {
    throw new RangeError(
      `rocCurve: only ${p === 0 ? "negative" : "positive"} samples (${y.length}); ROC needs both classes`,
    );
  }
  const order = Array.from(y.keys()).sort((a, b) => scores[b] - scores[a]);
  const fpr = [0], tpr = [0], thresholds = [Infinity];
  let tp = 0, fp = 0;
  for (let i = 0; i < order.length; i++) {
    const idx = order[i];
    if (y[idx] === 1) tp++;
    else fp++;
    const next = order[i + 1];
    if (next === undefined || scores[next] !== scores[idx]) {
      fpr.push(fp / n);
      tpr.push(tp / p);
      thresholds.push(scores[idx]);
    }
  }
  return { fpr, tpr, thresholds, auc: auc(fpr, tpr) };
}

/**
 * Trapezoidal area under a curve given by increasing `x`.
 *
 * @example
 * ```ts
 * auc([0, 1], [0, 1]); // 0.5
 * ```
 */
export function auc(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkNumbers("auc", "x", x);
  checkNumbers("auc", "y", y);
  checkSameLength("auc", x, y, "x and y");
  let a = 0;
  for (let i = 1; i < x.length; i++) {
    if (x[i] < x[i - 1]) {
      throw new RangeError(`auc: x[${i}] = ${x[i]} < x[${i - 1}] = ${x[i - 1]}; expected increasing x`);
    }
    a += ((x[i] - x[i - 1]) * (y[i] + y[i - 1])) / 2;
  }
  return a;
}

/** One-vs-rest ROC curves of a multi-class problem. */
export interface OneVsRestRoc {
  /** Curve of each class against the rest; `null` for a class absent from the labels (undefined ROC). */
  curves: (RocCurve | null)[];
  /** Mean AUC over the classes that have a curve (macro average, like scikit-learn's `multi_class="ovr"`). */
  macroAuc: number;
  /** Classes left out of the average because they never occur in the labels. */
  skipped: number[];
}

/**
 * One-vs-rest ROC curve per class from per-class scores (probabilities or logits), and the macro AUC.
 * For two classes, `curves[1].auc` is the usual binary AUC.
 *
 * @example
 * ```ts
 * rocOneVsRest([0, 1, 2], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]).macroAuc; // 1
 * ```
 */
export function rocOneVsRest(labels: ArrayLike<number>, scores: readonly ArrayLike<number>[]): OneVsRestRoc {
  const c = checkRows("rocOneVsRest", "scores", scores);
  checkLabels("rocOneVsRest", "labels", labels, c);
  checkSameLength("rocOneVsRest", labels, scores, "labels and scores");
  const curves: (RocCurve | null)[] = [];
  const skipped: number[] = [];
  for (let k = 0; k < c; k++) {
    const pos = Array.from(labels, (v) => (v === k ? 1 : 0));
    const count = pos.reduce((a: number, b) => a + b, 0);
    if (count === 0 || count === labels.length) {
      curves.push(null);
      skipped.push(k);
      continue;
    }
    curves.push(rocCurve(pos, scores.map((r) => r[k])));
  }
  const present = curves.filter((x): x is RocCurve => x !== null);
  if (present.length === 0) {
    throw new RangeError(`rocOneVsRest: every label is class ${labels[0]}; ROC needs at least two classes`);
  }
  return { curves, macroAuc: present.reduce((a, r) => a + r.auc, 0) / present.length, skipped };
}
