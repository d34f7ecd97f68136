/**
 * Learning-rate schedules as pure functions of the step: linear warm-up, then a half cosine down to
 * a floor (timm's `CosineLRScheduler` without restarts, stepped per optimiser update).
 *
 * @module
 */

/** Options of {@link cosineSchedule}. */
export interface CosineScheduleOptions {
  /** Peak learning rate, reached at the end of warm-up. */
  baseLr: number;
  /** Total number of optimiser steps; the schedule reaches `minLr` here and stays there. */
  totalSteps: number;
  /** Linear warm-up steps (default 0). */
  warmupSteps?: number;
  /** Learning rate at step 0 when warming up (default `baseLr / 1000`). */
  warmupStartLr?: number;
  /** Floor at the end (default 0). */
  minLr?: number;
}

/** A learning rate for a 0-based step index. */
export type LrSchedule = (step: number) => number;

/**
 * Linear warm-up from `warmupStartLr` (step 0) to `baseLr` (step `warmupSteps`), then cosine to `minLr`
 * at `totalSteps`.
 *
 * @example
 * ```ts
 * const lr = cosineSchedule({ baseLr: 1e-3, totalSteps: 100, warmupSteps: 10 });
 * lr(10); // 1e-3
 * lr(100); // 0
 * ```
 */
export function cosineSchedule(options: CosineScheduleOptions): LrSchedule {
  const { baseLr, totalSteps } = options;
  const warmup = options.warmupSteps ?? 0;
  const minLr = options.minLr ?? 0;
  const start = options.warmupStartLr ?? baseLr / 1000;
  const check = (name: string, x: number, integer = false) => {
    if (!Number.isFinite(x) || x < 0 || (integer && !Number.isInteger(x))) {
      throw new Error(
        `cosineSchedule: ${name} must be a finite ${integer ? "integer" : "number"} ≥ 0, got ${x}`,
      );
    }
  };
  check("baseLr", baseLr);
  check("minLr", minLr);
  check("warmupStartLr", start);
  check("totalSteps", totalSteps, true);
  check("warmupSteps", warmup, true);
  if (warmup > totalSteps) {
    throw new Error(`cosineSchedule: warmupSteps (${warmup}) must not exceed totalSteps (${totalSteps})`);
  }
  return (step: number): number => {
    if (!Number.isFinite(step) || step < 0) throw new Error(`cosineSchedule: step must be ≥ 0, got ${step}`);
    if (step < warmup) return start + (baseLr - start) * (step / warmup);
    if (step >= totalSteps) return minLr;
    const span = totalSteps - warmup;
    if (span === 0) return minLr;
    const p = (step - warmup) / span;
    return minLr + 0.5 * (baseLr - minLr) * (1 + Math.cos(Math.PI * p));
  };
}
