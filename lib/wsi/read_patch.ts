/**
 * Reading one square patch at any output resolution from the cheapest pyramid level.
 *
 * @module
 */
import { resizeArea } from "./image_ops.ts";
import type { RasterImage } from "./pixels.ts";
import type { SlideSource } from "./slide.ts";

/**
 * Reads the level-0 square `(x0, y0, size0)` as an `outSize x outSize` RGB image: from the level OpenSlide's
 * rule picks for downsample `size0 / outSize`, then area-resized. Only the tiles under the patch are decoded.
 *
 * @example
 * ```ts
 * const thumbPatch = await readPatch(slide, 40960, 81920, 1024, 32); // a 1024 px area seen at 32 px
 * ```
 */
export async function readPatch(
  slide: SlideSource,
  x0: number,
  y0: number,
  size0: number,
  outSize: number,
): Promise<RasterImage> {
  if (!(size0 > 0 && Number.isInteger(outSize) && outSize > 0)) {
    throw new Error(
      `readPatch(): expected size0 > 0 and a positive integer outSize, got ${size0}, ${outSize}`,
    );
  }
  const level = slide.bestLevelForDownsample(size0 / outSize);
  const ds = slide.levelDownsamples[level];
  const side = Math.max(1, Math.round(size0 / ds));
  const img = await slide.readRegionAsync(Math.round(x0), Math.round(y0), level, side, side);
  return resizeArea(img, outSize, outSize);
}
