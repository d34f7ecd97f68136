/**
 * One row of a comparison table, and helpers that fill it from metric and benchmark results.
 *
 * @module
 */
import {
  accuracy,
  bootstrapMetric,
  type BootstrapOptions,
  type EfficiencyReport,
  macroF1,
  meanStd,
  rocOneVsRest,
  tokenReduction,
} from "../metrics/mod.ts";

/**
 * One model / strategy / keep-ratio result. Fractions are stored as fractions (0.81, not 81);
 * tables print them in percent. Units are in the field names.
 */
export interface ResultRow {
  /** Model name (the study's "Model" column). */
  model: string;
  /** Pruning strategy, e.g. "cnn-topk", "random", "none". */
  strategy?: string;
  /** Dataset name. */
  dataset?: string;
  /** Fraction of patch tokens kept. */
  keepRatio?: number;
  /** Top-1 accuracy (fraction); the mean over seeds when `seeds > 1`. */
  accuracy: number;
  /** 95% bootstrap interval of the accuracy (fractions), on the test set. */
  accuracyCI?: [number, number];
  /** Standard deviation of the accuracy over seeds (fraction). */
  accuracyStd?: number;
  /** Macro-averaged F1 (fraction). */
  macroF1?: number;
  /** ROC AUC (binary) or macro one-vs-rest AUC. */
  auc?: number;
  /** Measured throughput in images per second at `batchSize` on `backend` (the "inference speed"). */
  throughputImgPerS?: number;
  /** Batch-1 latency, median and 95th percentile, milliseconds. */
  latencyMsMedian?: number;
  latencyMsP95?: number;
  /** Peak tfjs tensor memory during a forward pass at `batchSize`, MiB (the "memory" column). */
  peakMemoryMiB?: number;
  /** Process resident set size after that forward pass, MiB. */
  rssMiB?: number;
  /** 1 − kept/total over patch tokens (fraction; CLS excluded). */
  tokenReduction?: number;
  /** Patch tokens kept per image (average for dynamic selection). */
  keptTokens?: number;
  /** Analytic GMACs per image: total, CNN part, ViT part. */
  gmacs?: number;
  gmacsCnn?: number;
  gmacsVit?: number;
  /** Trainable parameters (count). */
  params?: number;
  /** Number of training seeds the row summarizes. */
  seeds?: number;
  /** tfjs backend of the timing columns. */
  backend?: string;
  /** Batch size of the throughput and memory columns. */
  batchSize?: number;
}

/**
 * Accuracy, its seeded 95% bootstrap interval, macro-F1 and (with probabilities) AUC from test-set
 * predictions, as `ResultRow` fields.
 *
 * @example
 * ```ts
 * const row = { model: "ViT", ...classificationFields(labels, preds, { probs, seed: 0 }) };
 * ```
 */
export function classificationFields(
  labels: ArrayLike<number>,
  predicted: ArrayLike<number>,
  options: BootstrapOptions & { probs?: readonly ArrayLike<number>[]; numClasses?: number } = {},
): Pick<ResultRow, "accuracy" | "accuracyCI" | "macroF1" | "auc"> {
  const ci = bootstrapMetric(accuracy, labels, predicted, options);
  const out: Pick<ResultRow, "accuracy" | "accuracyCI" | "macroF1" | "auc"> = {
    accuracy: ci.estimate,
    accuracyCI: [ci.lower, ci.upper],
    macroF1: macroF1(labels, predicted, { numClasses: options.numClasses }),
  };
  if (options.probs) out.auc = rocOneVsRest(labels, options.probs).macroAuc;
  return out;
}

/**
 * The efficiency columns from `benchmarkModel()`: GMACs, parameters, latency, throughput, memory,
 * backend and batch size.
 *
 * @example
 * ```ts
 * const row = { model: "CNN-ViT", ...classificationFields(l, p), ...efficiencyFields(await benchmarkModel(m)) };
 * ```
 */
export function efficiencyFields(e: EfficiencyReport): Partial<ResultRow> {
  const mib = (b: number) => b / 2 ** 20;
  return {
    gmacs: e.gmacs.total,
    ...(e.gmacs.cnn !== undefined ? { gmacsCnn: e.gmacs.cnn } : {}),
    ...(e.gmacs.vit !== undefined ? { gmacsVit: e.gmacs.vit } : {}),
    params: e.params,
    latencyMsMedian: e.latency.medianMs,
    latencyMsP95: e.latency.p95Ms,
    throughputImgPerS: e.throughput.imagesPerSecond,
    peakMemoryMiB: mib(e.memory.tfPeakBytes),
    rssMiB: mib(e.memory.rssBytes),
    backend: e.backend,
    batchSize: e.batchSize,
  };
}

/**
 * Token columns: kept patch tokens per image and the token reduction `1 − kept/total`.
 *
 * @example
 * ```ts
 * tokenFields(32, 64); // {keptTokens: 32, tokenReduction: 0.5, keepRatio: 0.5}
 * ```
 */
export function tokenFields(
  kept: number,
  total: number,
): Pick<ResultRow, "keptTokens" | "tokenReduction" | "keepRatio"> {
  const t = tokenReduction(kept, total);
  return { keptTokens: kept, tokenReduction: t.reduction, keepRatio: t.keepRatio };
}

/**
 * Merges the rows of one configuration trained with several seeds: numeric fields are averaged,
 * `accuracyStd` is the sample std of the accuracy, `seeds` the count. The bootstrap interval is kept
 * only for a single seed. Text fields must agree.
 *
 * @example
 * ```ts
 * summarizeSeeds([{ model: "ViT", accuracy: 0.80 }, { model: "ViT", accuracy: 0.82 }]); // accuracy 0.81 ± 0.014, seeds 2
 * ```
 */
export function summarizeSeeds(rows: readonly ResultRow[]): ResultRow {
  if (rows.length === 0) throw new RangeError("summarizeSeeds: rows is empty; expected one row per seed");
  if (rows.length === 1) return { ...rows[0], seeds: rows[0].seeds ?? 1 };
  const out: Record<string, unknown> = {};
  const keys = new Set(rows.flatMap((r) => Object.keys(r)));
  for (const k of keys) {
    if (k === "accuracyCI" || k === "accuracyStd" || k === "seeds") continue;
    const vals = rows.map((r) => (r as unknown as Record<string, unknown>)[k]);
    if (vals.every((v) => typeof v === "number")) {
      out[k] = meanStd(vals as number[]).mean;
    } else {
      const distinct = [...new Set(vals.map((v) => JSON.stringify(v)))];
      if (distinct.length > 1) {
        throw new RangeError(
          `summarizeSeeds: field "${k}" differs across seeds (${
            distinct.join(", ")
          }); expected one configuration`,
        );
      }
      out[k] = vals[0];
    }
  }
  out.accuracyStd = meanStd(rows.map((r) => r.accuracy)).std;
  out.seeds = rows.length;
  return out as unknown as ResultRow;
}
