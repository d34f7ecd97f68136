/**
 * Confusion matrix, per-class precision / recall / F1 and macro-F1.
 *
 * @module
 */
import { checkLabels, checkSameLength, inferNumClasses } from "./_check.ts";

/**
 * Confusion matrix `m[true][predicted]` (rows are true classes, like scikit-learn).
 * `numClasses` defaults to the largest label seen + 1; pass it so classes absent from a subset still get a row.
 *
 * @example
 * ```ts
 * confusionMatrix([0, 1, 1], [0, 0, 1], 2); // [[1, 0], [1, 1]]
 * ```
 */
export function confusionMatrix(
  labels: ArrayLike<number>,
  predicted: ArrayLike<number>,
  numClasses?: number,
): number[][] {
  const c = numClasses ?? inferNumClasses(labels, predicted);
  if (!Number.isInteger(c) || c < 1) {
    throw new RangeError(`confusionMatrix: numClasses is ${c}; expected an integer >= 1`);
  }
  checkLabels("confusionMatrix", "labels", labels, c);
  checkLabels("confusionMatrix", "predicted", predicted, c);
  checkSameLength("confusionMatrix", labels, predicted, "labels and predicted");
  const m = Array.from({ length: c }, () => new Array<number>(c).fill(0));
  for (let i = 0; i < labels.length; i++) m[labels[i]][predicted[i]]++;
  return m;
}

/** Precision, recall, F1 and support of one class. */
export interface ClassMetrics {
  /** Class index. */
  cls: number;
  /** tp / (tp + fp); 0 when the class is never predicted (scikit-learn's `zero_division=0`). */
  precision: number;
  /** tp / (tp + fn); 0 when the class never occurs. */
  recall: number;
  /** Harmonic mean of precision and recall; 0 when both are 0. */
  f1: number;
  /** Number of samples whose true class is this one. */
  support: number;
  /** Number of samples predicted as this class. */
  predicted: number;
}

/**
 * Per-class precision, recall, F1 and support.
 *
 * @example
 * ```ts
 * perClassMetrics([0, 0, 1], [0, 1, 1])[1]; // {cls: 1, precision: 0.5, recall: 1, f1: 0.667, support: 1, ...}
 * ```
 */
export function perClassMetrics(
  labels: ArrayLike<number>,
  predicted: ArrayLike<number>,
  numClasses?: number,
): ClassMetrics[] {
  const m = confusionMatrix(labels, predicted, numClasses);
  return m.map((row, k) => {
    const tp = row[k];
    const support = row.reduce((a, b) => a + b, 0);
    let pred = 0;
    for (const r of m) pred += r[k];
    const precision = pred > 0 ? tp / pred : 0;
    const recall = support > 0 ? tp / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    return { cls: k, precision, recall, f1, support, predicted: pred };
  });
}

/** Options of {@link macroF1}. */
export interface MacroF1Options {
  /** Number of classes (default: largest label seen + 1). */
  numClasses?: number;
  /**
   * Which classes to average over: `"present"` (default, like scikit-learn without `labels=`): classes that
   * occur in the labels or the predictions; `"all"`: every class in [0, numClasses), empty ones count as F1 0.
   */
  average?: "present" | "all";
}

/**
 * Unweighted mean of the per-class F1 scores.
 *
 * @example
 * ```ts
 * macroF1([0, 0, 1, 1], [0, 1, 1, 1]); // (0.667 + 0.8) / 2
 * ```
 */
export function macroF1(
  labels: ArrayLike<number>,
  predicted: ArrayLike<number>,
  options: MacroF1Options = {},
): number {
  const per = perClassMetrics(labels, predicted, options.numClasses);
  const used = options.average === "all" ? per : per.filter((c) => c.support > 0 || c.predicted > 0);
  if (options.average !== undefined && options.average !== "all" && options.average !== "present") {
    throw new RangeError(
      `macroF1: average is ${JSON.stringify(options.average)}; expected "present" or "all"`,
    );
  }
  return used.reduce((a, c) => a + c.f1, 0) / used.length;
}
