/**
 * Expected calibration error.
 *
 * @module
 */
import { checkLabels, checkRows, checkSameLength } from "./_check.ts";
import { argmax } from "./accuracy.ts";

/** One confidence bin of {@link expectedCalibrationError}. */
export interface CalibrationBin {
  /** Bin interval (lo, hi]; the first bin also contains 0. */
  lo: number;
  hi: number;
  /** Samples whose confidence falls in the bin. */
  count: number;
  /** Mean confidence (max probability) in the bin; NaN when empty. */
  confidence: number;
  /** Accuracy in the bin; NaN when empty. */
  accuracy: number;
}

/** Result of {@link expectedCalibrationError}. */
export interface Calibration {
  /** Σ_b (n_b / n) · |accuracy_b − confidence_b|, in [0, 1]. */
  ece: number;
  /** The bins (for a reliability diagram). */
  bins: CalibrationBin[];
}

/**
 * Expected calibration error with `bins` equal-width confidence bins (default 15, as in Guo et al. 2017).
 * `probs` are probabilities (apply {@link softmax} to logits first); confidence is the top probability and
 * the prediction its argmax (ties to the lowest index).
 *
 * @example
 * ```ts
 * expectedCalibrationError([0, 1], [[0.9, 0.1], [0.6, 0.4]]).ece; // (|1-0.9| + |0-0.6|) / 2 = 0.35
 * ```
 */
export function expectedCalibrationError(
  labels: ArrayLike<number>,
  probs: readonly ArrayLike<number>[],
  bins = 15,
): Calibration {
  const c = checkRows("expectedCalibrationError", "probs", probs);
  checkLabels("expectedCalibrationError", "labels", labels, c);
  checkSameLength("expectedCalibrationError", labels, probs, "labels and probs");
  if (!Number.isInteger(bins) || bins < 1) {
    throw new RangeError(`expectedCalibrationError: bins is ${bins}; expected an integer >= 1`);
  }
  const count = new Array<number>(bins).fill(0);
  const conf = new Array<number>(bins).fill(0);
  const hit = new Array<number>(bins).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const p = argmax(probs[i]);
    const q = probs[i][p];
    if (q < 0 || q > 1 + 1e-6) {
      throw new RangeError(
        `expectedCalibrationError: probs[${i}][${p}] is ${q}; expected a probability in [0, 1]`,
      );
    }
    const b = Math.min(bins - 1, Math.max(0, Math.ceil(q * bins) - 1));
    count[b]++;
    conf[b] += q;
    if (p === labels[i]) hit[b]++;
  }
  let ece = 0;
  const out: CalibrationBin[] = [];
  for (let b = 0; b < bins; b++) {
    const n = count[b];
    const confidence = n ? conf[b] / n : NaN, acc = n ? hit[b] / n : NaN;
    if (n) ece += (n / labels.length) * Math.abs(acc - confidence);
    out.push({ lo: b / bins, hi: (b + 1) / bins, count: n, confidence, accuracy: acc });
  }
  return { ece, bins: out };
}
