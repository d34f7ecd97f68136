/**
 * Mean ± standard deviation over repeated runs (seeds).
 *
 * @module
 */
import { checkNumbers } from "./_check.ts";

/** Summary of repeated runs. */
export interface MeanStd {
  mean: number;
  /** Sample standard deviation (n − 1 in the denominator); 0 for a single run. */
  std: number;
  /** Number of runs. */
  n: number;
  min: number;
  max: number;
}

/**
 * Mean and sample standard deviation of per-seed results.
 *
 * @example
 * ```ts
 * meanStd([0.90, 0.92, 0.94]); // {mean: 0.92, std: 0.02, n: 3, min: 0.9, max: 0.94}
 * ```
 */
export function meanStd(values: ArrayLike<number>): MeanStd {
  checkNumbers("meanStd", "values", values);
  const n = values.length;
  let s = 0, min = Infinity, max = -Infinity;
  for (let i = 0; i < n; i++) {
    s += values[i];
    min = Math.min(min, values[i]);
    max = Math.max(max, values[i]);
  }
  const mean = s / n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (values[i] - mean) ** 2;
  return { mean, std: n > 1 ? Math.sqrt(v / (n - 1)) : 0, n, min, max };
}

/**
 * Formats a {@link MeanStd} as `"mean ± std"`, with `scale` (e.g. 100 for percent) and `digits`.
 * A single run prints without the ±.
 *
 * @example
 * ```ts
 * formatMeanStd(meanStd([0.9, 0.92, 0.94]), { scale: 100, digits: 1 }); // "92.0 ± 2.0"
 * ```
 */
export function formatMeanStd(m: MeanStd, options: { scale?: number; digits?: number } = {}): string {
  const { scale = 1, digits = 3 } = options;
  const mean = (m.mean * scale).toFixed(digits);
  return m.n > 1 ? `${mean} ± ${(m.std * scale).toFixed(digits)}` : mean;
}
