/**
 * Metrics: classification quality (accuracy, top-k, per-class P/R/F1, macro-F1, confusion matrix,
 * ROC/AUC, calibration), uncertainty (seeded bootstrap intervals, mean ± std over seeds), selection
 * quality against ground-truth masks, token reduction, and efficiency (latency, throughput, memory,
 * parameters, GMACs). Everything except the efficiency timers is a pure function on plain arrays.
 *
 * @example
 * ```ts
 * import { accuracy, bootstrapMetric, macroF1 } from "./lib/metrics/mod.ts";
 * const acc = accuracy(labels, preds);
 * const ci = bootstrapMetric(accuracy, labels, preds, { seed: 0 });
 * ```
 *
 * @module
 */
export * from "./accuracy.ts";
export * from "./confusion_matrix.ts";
export * from "./roc.ts";
export * from "./calibration.ts";
export * from "./bootstrap.ts";
export * from "./mean_std.ts";
export * from "./selection.ts";
export * from "./tokens.ts";
export * from "./benchmark.ts";
export * from "./lesion_mask.ts";
export * from "./froc.ts";
export * from "./slide_auc.ts";
export * from "./stable_timing.ts";
