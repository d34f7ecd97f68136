/**
 * OpenSlide's rule for choosing a pyramid level, as a pure function.
 *
 * @module
 */

/**
 * The index of the level to read for a wanted `downsample`: the largest level whose downsample does not
 * exceed it (level 0 when the wanted downsample is below every level, the last level when above all).
 * This is `openslide_get_best_level_for_downsample`'s rule.
 *
 * @example
 * ```ts
 * bestLevelForDownsample([1, 4, 16], 5); // 1
 * bestLevelForDownsample([1, 4, 16], 0.5); // 0
 * ```
 */
export function bestLevelForDownsample(downsamples: readonly number[], downsample: number): number {
  if (downsamples.length === 0) {
    throw new Error("bestLevelForDownsample(): expected at least one level, got []");
  }
  if (!(downsample > 0) || !Number.isFinite(downsample)) {
    throw new Error(`bestLevelForDownsample(): expected a positive finite downsample, got ${downsample}`);
  }
  if (downsample < downsamples[0]) return 0;
  for (let i = 1; i < downsamples.length; i++) {
    if (downsample < downsamples[i]) return i - 1;
  }
  return downsamples.length - 1;
}
