/**
 * A fair timing protocol for benchmarks that compare two implementations: warm up until the step time is
 * stable (not a fixed number of steps, which under-warms whichever side settles slower), then time a fixed
 * number of steps; and summarise repeated rounds by their median and spread. `tools/bench_protocol.py`
 * implements the same rule for the PyTorch side (a test checks that both agree).
 *
 * @module
 */

/** Options of {@link timeUntilStable}. */
export interface StableTimingOptions {
  /** Warm-up steps always run before the stability check can end the warm-up (default 3). */
  minWarmup?: number;
  /** Warm-up steps at most: timing starts then even if the step time never settled (default 12). */
  maxWarmup?: number;
  /** The last `window` warm-up steps must agree (default 3). */
  window?: number;
  /** ... within this fraction: (max − min) / min ≤ tolerance (default 0.05). */
  tolerance?: number;
  /** Timed steps after the warm-up (default 10). */
  iters?: number;
  /** Clock in milliseconds (default `performance.now`); tests pass a fake one. */
  now?: () => number;
}

/** What {@link timeUntilStable} measured, in seconds. */
export interface StableTiming {
  /** Warm-up steps run. */
  warmupSteps: number;
  /** Whether the warm-up ended because the last `window` steps agreed (false: it hit `maxWarmup`). */
  stable: boolean;
  /** Duration of every warm-up step, in order. */
  warmupS: number[];
  /** Duration of every timed step, in order. */
  samplesS: number[];
  /** Median of the timed steps. */
  medianS: number;
  minS: number;
  maxS: number;
}

/** Median, extremes and quartiles of a sample. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  /** First and third quartiles (linear interpolation). */
  q1: number;
  q3: number;
  n: number;
}

function quantileSorted(s: number[], q: number): number {
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/**
 * Median, min, max and quartiles of `values` (finite numbers, at least one).
 *
 * @example
 * ```ts
 * spread([3, 1, 2]); // { median: 2, min: 1, max: 3, q1: 1.5, q3: 2.5, n: 3 }
 * ```
 */
export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new RangeError("spread: expected at least one value, got none");
  const bad = values.find((v) => !Number.isFinite(v));
  if (bad !== undefined) throw new RangeError(`spread: expected finite numbers, got ${bad}`);
  const s = [...values].sort((a, b) => a - b);
  return {
    median: quantileSorted(s, 0.5),
    min: s[0],
    max: s[s.length - 1],
    q1: quantileSorted(s, 0.25),
    q3: quantileSorted(s, 0.75),
    n: s.length,
  };
}

/**
 * True when the last `window` durations agree within `tolerance`: (max − min) / min ≤ tolerance.
 *
 * @example
 * ```ts
 * isStable([9, 5.0, 5.1, 5.05], 3, 0.05); // true
 * isStable([9, 5.0, 6.0, 5.05], 3, 0.05); // false
 * ```
 */
export function isStable(durations: readonly number[], window = 3, tolerance = 0.05): boolean {
  if (durations.length < window) return false;
  const last = durations.slice(-window);
  const lo = Math.min(...last), hi = Math.max(...last);
  return lo > 0 ? (hi - lo) / lo <= tolerance : hi === lo;
}

function checkInt(name: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min) {
    throw new RangeError(`timeUntilStable: ${name} is ${v}; expected an integer >= ${min}`);
  }
  return v;
}

/**
 * Runs `step` (which must finish its work before resolving) until its duration is stable, then times
 * `iters` more steps. The warm-up runs at least `minWarmup` steps and stops once the last `window` agree
 * within `tolerance`, or after `maxWarmup` steps (then `stable` is false).
 *
 * @example
 * ```ts
 * const t = await timeUntilStable(async () => { await trainStep(); }, { minWarmup: 3, iters: 10 });
 * console.log(`${(64 / t.medianS).toFixed(1)} img/s after ${t.warmupSteps} warm-up steps`);
 * ```
 */
export async function timeUntilStable(
  step: () => unknown | Promise<unknown>,
  options: StableTimingOptions = {},
): Promise<StableTiming> {
  const { minWarmup = 3, window = 3, tolerance = 0.05, iters = 10, now = () => performance.now() } = options;
  const maxWarmup = options.maxWarmup ?? Math.max(12, minWarmup);
  checkInt("minWarmup", minWarmup, 0);
  checkInt("maxWarmup", maxWarmup, minWarmup);
  checkInt("window", window, 1);
  checkInt("iters", iters, 1);
  if (!(tolerance >= 0)) throw new RangeError(`timeUntilStable: tolerance is ${tolerance}; expected >= 0`);
  const timeOne = async () => {
    const t0 = now();
    await step();
    return (now() - t0) / 1000;
  };
  const warmupS: number[] = [];
  let stable = false;
  while (warmupS.length < maxWarmup) {
    if (warmupS.length >= minWarmup && isStable(warmupS, window, tolerance)) {
      stable = true;
      break;
    }
    warmupS.push(await timeOne());
  }
  if (!stable) stable = warmupS.length >= minWarmup && isStable(warmupS, window, tolerance);
  const samplesS: number[] = [];
  for (let i = 0; i < iters; i++) samplesS.push(await timeOne());
  const s = spread(samplesS);
  return {
    warmupSteps: warmupS.length,
    stable,
    warmupS,
    samplesS,
    medianS: s.median,
    minS: s.min,
    maxS: s.max,
  };
}
