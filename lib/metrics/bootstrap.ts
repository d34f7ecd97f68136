/**
 * Seeded bootstrap confidence intervals.
 *
 * @module
 */
import { Rng } from "../util/mod.ts";

/** Options of {@link bootstrapCI}. */
export interface BootstrapOptions {
  /** Number of resamples (default 1000). */
  resamples?: number;
  /** Seed of the resampling; the same seed gives the same interval (default 0). */
  seed?: number;
  /** Confidence level (default 0.95). */
  level?: number;
}

/** A point estimate with a percentile bootstrap interval. */
export interface ConfidenceInterval {
  /** The statistic on the full sample. */
  estimate: number;
  /** Lower and upper bounds (percentiles (1−level)/2 and (1+level)/2 of the resampled statistic). */
  lower: number;
  upper: number;
  level: number;
  /** Resamples whose statistic was finite (undefined statistics, e.g. AUC with one class, are left out). */
  resamples: number;
  seed: number;
}

/**
 * The q-quantile of `values` with linear interpolation (numpy's default).
 *
 * @example
 * ```ts
 * quantile([1, 2, 3, 4], 0.5); // 2.5
 * ```
 */
export function quantile(values: ArrayLike<number>, q: number): number {
  if (values.length === 0) throw new RangeError("quantile: values is empty; expected at least one value");
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile: q is ${q}; expected a number in [0, 1]`);
  const s = Float64Array.from(values).sort();
  const pos = q * (s.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/**
 * Percentile bootstrap interval of a statistic over `n` samples. `statistic(indices)` computes the
 * statistic on the samples at `indices` (drawn with replacement); it is called once with `0..n-1`
 * for the estimate. Reproducible: the same seed gives the same interval.
 *
 * @example
 * ```ts
 * const ci = bootstrapCI(labels.length, (idx) => accuracy(pick(labels, idx), pick(preds, idx)), { seed: 1 });
 * ```
 */
export function bootstrapCI(
  n: number,
  statistic: (indices: Int32Array) => number,
  options: BootstrapOptions = {},
): ConfidenceInterval {
  const { resamples = 1000, seed = 0, level = 0.95 } = options;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`bootstrapCI: n is ${n}; expected an integer >= 1`);
  if (!Number.isInteger(resamples) || resamples < 1) {
    throw new RangeError(`bootstrapCI: resamples is ${resamples}; expected an integer >= 1`);
  }
  if (!(level > 0 && level < 1)) {
    throw new RangeError(`bootstrapCI: level is ${level}; expected a number in (0, 1)`);
  }
  const all = new Int32Array(n);
  for (let i = 0; i < n; i++) all[i] = i;
  const estimate = statistic(all);
  const rng = new Rng(seed);
  const stats: number[] = [];
  const idx = new Int32Array(n);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < n; i++) idx[i] = rng.int(n);
    const v = statistic(idx);
    if (Number.isFinite(v)) stats.push(v);
  }
  if (stats.length === 0) {
    throw new RangeError(`bootstrapCI: the statistic was not finite on any of ${resamples} resamples`);
  }
  return {
    estimate,
    lower: quantile(stats, (1 - level) / 2),
    upper: quantile(stats, (1 + level) / 2),
    level,
    resamples: stats.length,
    seed,
  };
}

/**
 * Bootstrap interval of a metric of `(labels, predicted)`, e.g. accuracy or macro-F1.
 *
 * @example
 * ```ts
 * bootstrapMetric(accuracy, labels, preds, { seed: 0 }); // {estimate, lower, upper, ...}
 * ```
 */
export function bootstrapMetric<T>(
  metric: (labels: number[], other: T[]) => number,
  labels: ArrayLike<number>,
  other: ArrayLike<T>,
  options: BootstrapOptions = {},
): ConfidenceInterval {
  if (labels.length !== other.length) {
    throw new RangeError(
      `bootstrapMetric: labels (${labels.length}) and the second array (${other.length}) differ`,
    );
  }
  return bootstrapCI(labels.length, (idx) => {
    const l = new Array<number>(idx.length), o = new Array<T>(idx.length);
    for (let i = 0; i < idx.length; i++) {
      l[i] = labels[idx[i]];
      o[i] = other[idx[i]];
    }
    return metric(l, o);
  }, options);
}
