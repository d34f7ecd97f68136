/**
 * The grid of patches kept for a slide: every `stride`-spaced patch of `patchSize` pixels at `level`
 * lying fully inside the slide with enough tissue under it.
 *
 * @module
 */
import type { PatchCoords } from "./coords_file.ts";
import { maskIntegral, tissueFractionIn, type TissueMask } from "./tissue_mask.ts";

/** Options of {@link patchGrid}. */
export interface PatchGridOptions {
  /** Pyramid level the patches are read at (default 0). */
  level?: number;
  /** Patch side in pixels at `level` (default 256). */
  patchSize?: number;
  /** Grid step in pixels at `level` (default `patchSize`: no overlap). */
  stride?: number;
  /** Keep a patch when at least this fraction of it is tissue (default 0.5; 0 keeps every patch). */
  minTissue?: number;
}

/**
 * Patch coordinates (level-0 top-left corners) over the tissue of a slide.
 *
 * @example
 * ```ts
 * const mask = segmentTissue(slide);
 * const coords = patchGrid(mask, slide.levelDownsamples, { level: 0, patchSize: 256, minTissue: 0.5 }, "tumor_001");
 * ```
 */
export function patchGrid(
  mask: TissueMask,
  levelDownsamples: readonly number[],
  opts: PatchGridOptions = {},
  slideId = "slide",
): PatchCoords {
  const level = opts.level ?? 0, size = opts.patchSize ?? 256, stride = opts.stride ?? size;
  const minTissue = opts.minTissue ?? 0.5;
  if (!Number.isInteger(level) || level < 0 || level >= levelDownsamples.length) {
    throw new Error(`patchGrid(): level must be in [0, ${levelDownsamples.length - 1}], got ${level}`);
  }
  if (!Number.isInteger(size) || size < 1) {
    throw new Error(`patchGrid(): patchSize must be a positive integer, got ${size}`);
  }
  if (!Number.isInteger(stride) || stride < 1) {
    throw new Error(`patchGrid(): stride must be a positive integer, got ${stride}`);
  }
  if (!(minTissue >= 0 && minTissue <= 1)) {
    throw new Error(`patchGrid(): minTissue must be in [0, 1], got ${minTissue}`);
  }
  const ds = levelDownsamples[level];
  const [W, H] = mask.slideSize;
  const size0 = size * ds, step0 = stride * ds;
  const integral = maskIntegral(mask);
  const xs: number[] = [], ys: number[] = [], ts: number[] = [];
  for (let j = 0;; j++) {
    const y = Math.round(j * step0);
    if (y + size0 > H + 1e-6) break;
    for (let i = 0;; i++) {
      const x = Math.round(i * step0);
      if (x + size0 > W + 1e-6) break;
      const t = tissueFractionIn(mask, integral, x, y, size0, size0);
      if (t >= minTissue) {
        xs.push(x);
        ys.push(y);
        ts.push(t);
      }
    }
  }
  return {
    slideId,
    level,
    patchSize: size,
    stride,
    downsample: ds,
    slideSize: [W, H],
    x: Int32Array.from(xs),
    y: Int32Array.from(ys),
    tissue: Float32Array.from(ts),
    meta: { minTissue, maskLevel: mask.level, maskScale: mask.scale, tissueParams: mask.params },
  };
}
