/**
 * The keep-ratio schedule, declared once as data and shared by model, loss and notebooks
 * (EViT/DynamicViT style): `locations[i]` is the block index BEFORE which tokens are reduced
 * (0 = right after the position embedding, so the whole ViT runs on fewer tokens), and `ratios[i]` is
 * the fraction of the ORIGINAL patch tokens still present after that location (non-increasing).
 * The CLS token is never counted and never dropped.
 *
 * @module
 */

/** Where and how much to prune. */
export interface KeepSchedule {
  /** Block indices before which to reduce, strictly increasing (0 = before the first block). */
  locations: number[];
  /** Fraction of the original patch tokens kept after each location, in (0, 1], non-increasing. */
  ratios: number[];
}

/**
 * One reduction of the patch tokens to `keepRatio`, before block `location` (default 0).
 *
 * @example
 * ```ts
 * singleStage(0.5); // { locations: [0], ratios: [0.5] }
 * ```
 */
export function singleStage(keepRatio: number, location = 0): KeepSchedule {
  const s = { locations: [location], ratios: [keepRatio] };
  validateKeepSchedule(s);
  return s;
}

/**
 * Checks the schedule's form (and that locations fit `depth` when given); throws naming the bad field.
 *
 * @example
 * ```ts
 * validateKeepSchedule({ locations: [3, 6, 9], ratios: [0.7, 0.49, 0.343] }, 12);
 * ```
 */
export function validateKeepSchedule(s: KeepSchedule, depth?: number): void {
  const show = JSON.stringify(s);
  if (!s || !Array.isArray(s.locations) || !Array.isArray(s.ratios)) {
    throw new Error(`keep schedule: expected {locations: number[], ratios: number[]}, got ${show}`);
  }
  if (s.locations.length !== s.ratios.length) {
    throw new Error(
      `keep schedule: ${s.locations.length} locations but ${s.ratios.length} ratios in ${show}`,
    );
  }
  for (const [i, l] of s.locations.entries()) {
    if (!Number.isInteger(l) || l < 0) {
      throw new Error(`keep schedule: location ${l} is not an integer ≥ 0 in ${show}`);
    }
    if (i > 0 && l <= s.locations[i - 1]) {
      throw new Error(`keep schedule: locations must increase strictly in ${show}`);
    }
    if (depth !== undefined && l >= depth) {
      throw new Error(
        `keep schedule: location ${l} is not a block of a depth-${depth} ViT (0..${depth - 1}) in ${show}`,
      );
    }
  }
  for (const [i, r] of s.ratios.entries()) {
    if (!(r > 0 && r <= 1)) throw new Error(`keep schedule: ratio ${r} is not in (0, 1] in ${show}`);
    if (i > 0 && r > s.ratios[i - 1]) throw new Error(`keep schedule: ratios must not increase in ${show}`);
  }
}

/**
 * Number of patch tokens kept after each location for `numPatches` patches: `max(1, round(r·N))`.
 *
 * @example
 * ```ts
 * keepCounts(singleStage(0.5), 64); // [32]
 * ```
 */
export function keepCounts(s: KeepSchedule, numPatches: number): number[] {
  validateKeepSchedule(s);
  if (!Number.isInteger(numPatches) || numPatches < 1) {
    throw new Error(`keepCounts: numPatches must be an integer ≥ 1, got ${numPatches}`);
  }
  return s.ratios.map((r) => Math.min(numPatches, Math.max(1, Math.round(r * numPatches))));
}

/**
 * Tokens (CLS included) entering each of `depth` blocks under the schedule.
 *
 * @example
 * ```ts
 * tokensPerBlock(singleStage(0.5, 1), 64, 3); // [65, 33, 33]
 * ```
 */
export function tokensPerBlock(s: KeepSchedule, numPatches: number, depth: number): number[] {
  validateKeepSchedule(s, depth);
  const counts = keepCounts(s, numPatches);
  const out: number[] = [];
  let cur = numPatches;
  for (let b = 0; b < depth; b++) {
    const i = s.locations.indexOf(b);
    if (i >= 0) cur = Math.min(cur, counts[i]);
    out.push(cur + 1);
  }
  return out;
}
