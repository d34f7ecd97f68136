/**
 * CAMELYON16's slide-level metric: the ROC AUC of one tumour score per slide, tumour slides against normal.
 *
 * @module
 */
import { type RocCurve, rocCurve } from "./roc.ts";

/**
 * Slide-level ROC (tumour slides positive) from one score per slide; `auc` is the challenge's first metric.
 *
 * @example
 * ```ts
 * slideAuc([true, false, true], [0.9, 0.2, 0.4]).auc; // 1
 * ```
 */
export function slideAuc(tumour: ArrayLike<boolean | number>, scores: ArrayLike<number>): RocCurve {
  return rocCurve(tumour, scores);
}
