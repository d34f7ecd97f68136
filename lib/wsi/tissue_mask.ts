/**
 * CLAM-style tissue segmentation: HSV saturation of a low-resolution view, median blur, a fixed or Otsu
 * threshold, morphological closing, connected components filtered by area, and holes (kept when large,
 * filled when small or beyond the per-component limit).
 *
 * @module
 */
import {
  closing,
  connectedComponents,
  downsampleBox,
  medianBlur,
  otsuThreshold,
  saturation,
} from "./image_ops.ts";
import type { RasterImage } from "./pixels.ts";
import type { SlideSource } from "./slide.ts";

/** Parameters of tissue segmentation (names after CLAM's `seg_params` / `filter_params`). */
export interface TissueParams {
  /** Saturation threshold (0..255): tissue where blurred saturation > it (ignored with `otsu`). */
  saturationThreshold: number;
  /** Median blur kernel size (odd). */
  medianKernel: number;
  /** Closing kernel size in mask pixels (0 or 1: none). */
  closeKernel: number;
  /** Use Otsu's threshold instead of `saturationThreshold`. */
  otsu: boolean;
  /** Minimum tissue component area, in reference patches (`refPatchSize^2` level-0 pixels). */
  minTissueArea: number;
  /** Minimum hole area to keep as a hole, in reference patches; smaller holes are filled. */
  minHoleArea: number;
  /** Keep at most this many (largest) holes per tissue component. */
  maxHoles: number;
  /** Reference patch side at level 0 for the two area thresholds (CLAM: 512). */
  refPatchSize: number;
  /** Downsample (level-0 pixels per mask pixel) of the view segmented (CLAM: 64). */
  downsample: number;
}

/**
 * Named parameter presets. `default` is CLAM's default; `otsu` thresholds adaptively; `biopsy` keeps small
 * fragments (needle biopsies); `resection` is stricter on small debris; `small` suits tiny synthetic or
 * test slides (areas in 64 px reference patches).
 */
export const TISSUE_PRESETS: Readonly<
  Record<"default" | "otsu" | "biopsy" | "resection" | "small", TissueParams>
> = {
  default: {
    saturationThreshold: 8,
    medianKernel: 7,
    closeKernel: 4,
    otsu: false,
    minTissueArea: 100,
    minHoleArea: 16,
    maxHoles: 8,
    refPatchSize: 512,
    downsample: 64,
  },
  otsu: {
    saturationThreshold: 8,
    medianKernel: 7,
    closeKernel: 4,
    otsu: true,
    minTissueArea: 100,
    minHoleArea: 16,
    maxHoles: 8,
    refPatchSize: 512,
    downsample: 64,
  },
  biopsy: {
    saturationThreshold: 15,
    medianKernel: 11,
    closeKernel: 2,
    otsu: false,
    minTissueArea: 1,
    minHoleArea: 1,
    maxHoles: 2,
    refPatchSize: 512,
    downsample: 32,
  },
  resection: {
    saturationThreshold: 8,
    medianKernel: 7,
    closeKernel: 4,
    otsu: true,
    minTissueArea: 200,
    minHoleArea: 32,
    maxHoles: 16,
    refPatchSize: 512,
    downsample: 64,
  },
  small: {
    saturationThreshold: 15,
    medianKernel: 5,
    closeKernel: 2,
    otsu: false,
    minTissueArea: 1,
    minHoleArea: 1,
    maxHoles: 8,
    refPatchSize: 64,
    downsample: 4,
  },
};

/** Name of a tissue preset. */
export type TissuePreset = keyof typeof TISSUE_PRESETS;

/** A binary tissue mask over the whole slide at a low resolution. */
export interface TissueMask {
  /** Mask width (pixels). */
  width: number;
  /** Mask height (pixels). */
  height: number;
  /** 1 = tissue, 0 = background/hole; `width * height` bytes. */
  data: Uint8Array;
  /** Pyramid level the view was read from. */
  level: number;
  /** Level-0 pixels per mask pixel, `[x, y]`. */
  scale: readonly [number, number];
  /** Level-0 slide size. */
  slideSize: readonly [number, number];
  /** Saturation threshold applied (the Otsu value when `otsu`). */
  threshold: number;
  /** Number of tissue components kept. */
  components: number;
  /** Number of holes kept. */
  holes: number;
  /** Fraction of mask pixels that are tissue. */
  tissueFraction: number;
  /** The parameters used. */
  params: TissueParams;
}

/**
 * Resolves a preset name plus overrides into full parameters, checking every value.
 *
 * @example
 * ```ts
 * const p = tissueParams("otsu", { medianKernel: 5 });
 * ```
 */
export function tissueParams(
  preset: TissuePreset | TissueParams = "default",
  overrides: Partial<TissueParams> = {},
): TissueParams {
  let base: TissueParams;
  if (typeof preset === "string") {
    if (!(preset in TISSUE_PRESETS)) {
      throw new Error(
        `tissueParams(): unknown preset "${preset}"; expected one of ${
          Object.keys(TISSUE_PRESETS).join(", ")
        }`,
      );
    }
    base = TISSUE_PRESETS[preset];
  } else base = preset;
  const p = { ...base, ...overrides };
  if (!Number.isInteger(p.medianKernel) || p.medianKernel < 1 || p.medianKernel % 2 === 0) {
    throw new Error(`tissueParams(): medianKernel must be an odd positive integer, got ${p.medianKernel}`);
  }
  for (
    const k of ["minTissueArea", "minHoleArea", "maxHoles", "closeKernel", "saturationThreshold"] as const
  ) {
    if (!(p[k] >= 0)) throw new Error(`tissueParams(): ${k} must be >= 0, got ${p[k]}`);
  }
  for (const k of ["refPatchSize", "downsample"] as const) {
    if (!(p[k] > 0)) throw new Error(`tissueParams(): ${k} must be > 0, got ${p[k]}`);
  }
  return p;
}

/**
 * Segments tissue in an RGB view of a slide whose pixels are `scale` level-0 pixels wide.
 *
 * @example
 * ```ts
 * const m = segmentTissueImage(thumb, [64, 64], tissueParams("default"));
 * ```
 */
export function segmentTissueImage(
  img: RasterImage,
  scale: readonly [number, number],
  params: TissueParams,
  meta: { level?: number; slideSize?: readonly [number, number] } = {},
): TissueMask {
  const { width: w, height: h } = img;
  const sat = medianBlur(saturation(img), w, h, params.medianKernel);
  const threshold = params.otsu ? otsuThreshold(sat) : params.saturationThreshold;
  let bin: Uint8Array = new Uint8Array(w * h);
  for (let i = 0; i < bin.length; i++) bin[i] = sat[i] > threshold ? 1 : 0;
  bin = closing(bin, w, h, params.closeKernel);

  const refArea = (params.refPatchSize * params.refPatchSize) / (scale[0] * scale[1]); // mask px per ref patch
  const minTissue = params.minTissueArea * refArea, minHole = params.minHoleArea * refArea;
  const fg = connectedComponents(bin, w, h, { value: 1, connectivity: 8 });
  const bg = connectedComponents(bin, w, h, { value: 0, connectivity: 4 });
  // every background component not touching the border is a hole of the tissue component just above it
  const holesOf = new Map<number, number[]>();
  for (let id = 1; id <= bg.count; id++) {
    if (bg.touchesBorder[id]) continue;
    const parent = fg.labels[bg.firstPixel[id] - w];
    if (!holesOf.has(parent)) holesOf.set(parent, []);
    holesOf.get(parent)!.push(id);
  }
  const keepFg = new Uint8Array(fg.count + 1);
  const fillBg = new Uint8Array(bg.count + 1); // holes filled as tissue
  let components = 0, holes = 0;
  for (let id = 1; id <= fg.count; id++) {
    const hs = holesOf.get(id) ?? [];
    if (fg.areas[id] > minTissue) {
      keepFg[id] = 1;
      components++;
      const big = hs.filter((b) => bg.areas[b] > minHole).sort((a, b) => bg.areas[b] - bg.areas[a])
        .slice(0, params.maxHoles);
      const keep = new Set(big);
      holes += keep.size;
      for (const b of hs) if (!keep.has(b)) fillBg[b] = 1;
    }
  }
  const out = new Uint8Array(w * h);
  let tissue = 0;
  for (let i = 0; i < out.length; i++) {
    const v = bin[i] ? keepFg[fg.labels[i]] : fillBg[bg.labels[i]];
    out[i] = v;
    tissue += v;
  }
  return {
    width: w,
    height: h,
    data: out,
    level: meta.level ?? -1,
    scale,
    slideSize: meta.slideSize ?? [Math.round(w * scale[0]), Math.round(h * scale[1])],
    threshold,
    components,
    holes,
    tissueFraction: tissue / Math.max(1, out.length),
    params,
  };
}

/**
 * Reads the slide at about `downsample` (the pyramid level OpenSlide's rule picks; when that level is still
 * much finer, it is read in tiles and box-downsampled, so a single-level slide works too).
 *
 * @example
 * ```ts
 * const { image, level, scale } = readSlideAtDownsample(slide, 64);
 * ```
 */
export function readSlideAtDownsample(
  slide: SlideSource,
  downsample: number,
  opts: { tile?: number } = {},
): { image: RasterImage; level: number; scale: [number, number] } {
  const level = slide.bestLevelForDownsample(downsample);
  const [lw, lh] = slide.levelDimensions[level];
  const lds = slide.levelDownsamples[level];
  const factor = Math.max(1, Math.floor(downsample / lds + 1e-6));
  const [W, H] = slide.dimensions;
  if (factor === 1) {
    const image = slide.readLevel(level);
    return { image, level, scale: [W / lw, H / lh] };
  }
  const tile = Math.max(factor, Math.floor((opts.tile ?? 4096) / factor) * factor);
  const ow = Math.max(1, Math.floor(lw / factor)), oh = Math.max(1, Math.floor(lh / factor));
  const data = new Uint8Array(ow * oh * 3);
  for (let ty = 0; ty < oh * factor; ty += tile) {
    for (let tx = 0; tx < ow * factor; tx += tile) {
      const tw = Math.min(tile, ow * factor - tx), th = Math.min(tile, oh * factor - ty);
      const region = slide.readRegion(Math.round(tx * lds), Math.round(ty * lds), level, tw, th);
      const small = downsampleBox(region, factor);
      const ox = tx / factor, oy = ty / factor;
      for (let y = 0; y < small.height; y++) {
        data.set(
          small.data.subarray(y * small.width * 3, (y + 1) * small.width * 3),
          ((oy + y) * ow + ox) * 3,
        );
      }
    }
  }
  return { image: { width: ow, height: oh, channels: 3, data }, level, scale: [W / ow, H / oh] };
}

/**
 * Segments the tissue of a slide (CLAM-style), reading only a low-resolution view.
 *
 * @example
 * ```ts
 * using slide = Slide.open("tumor_001.tif");
 * const mask = segmentTissue(slide, "default");
 * console.log(mask.tissueFraction, mask.components);
 * ```
 */
export function segmentTissue(
  slide: SlideSource,
  preset: TissuePreset | TissueParams = "default",
  overrides: Partial<TissueParams> = {},
): TissueMask {
  const params = tissueParams(preset, overrides);
  const { image, level, scale } = readSlideAtDownsample(slide, params.downsample);
  return segmentTissueImage(image, scale, params, { level, slideSize: slide.dimensions });
}

/**
 * Fraction of tissue under a level-0 rectangle, from an integral image of the mask (see {@link maskIntegral}).
 *
 * @example
 * ```ts
 * const integral = maskIntegral(mask);
 * const f = tissueFractionIn(mask, integral, 0, 0, 512, 512);
 * ```
 */
export function tissueFractionIn(
  mask: TissueMask,
  integral: Float64Array,
  x0: number,
  y0: number,
  w0: number,
  h0: number,
): number {
  const W = mask.width + 1;
  const fx0 = x0 / mask.scale[0], fy0 = y0 / mask.scale[1];
  const fx1 = (x0 + w0) / mask.scale[0], fy1 = (y0 + h0) / mask.scale[1];
  // area-weighted sum over fractional mask pixels via bilinear sampling of the integral image
  const S = (fx: number, fy: number) => {
    fx = Math.min(Math.max(fx, 0), mask.width);
    fy = Math.min(Math.max(fy, 0), mask.height);
    const ix = Math.min(Math.floor(fx), mask.width - 1), iy = Math.min(Math.floor(fy), mask.height - 1);
    const ax = fx - ix, ay = fy - iy;
    const I = (x: number, y: number) => integral[y * W + x];
    const v00 = I(ix, iy), v10 = I(ix + 1, iy), v01 = I(ix, iy + 1), v11 = I(ix + 1, iy + 1);
    return v00 + ax * (v10 - v00) + ay * (v01 - v00) + ax * ay * (v11 - v10 - v01 + v00);
  };
  const area = (fx1 - fx0) * (fy1 - fy0);
  if (area <= 0) return 0;
  const s = S(fx1, fy1) - S(fx0, fy1) - S(fx1, fy0) + S(fx0, fy0);
  return Math.min(1, Math.max(0, s / area));
}

/**
 * The summed-area table of a mask, `(width + 1) * (height + 1)` values.
 *
 * @example
 * ```ts
 * const integral = maskIntegral(mask);
 * ```
 */
export function maskIntegral(mask: { width: number; height: number; data: Uint8Array }): Float64Array {
  const W = mask.width + 1;
  const out = new Float64Array(W * (mask.height + 1));
  for (let y = 0; y < mask.height; y++) {
    let row = 0;
    for (let x = 0; x < mask.width; x++) {
      row += mask.data[y * mask.width + x];
      out[(y + 1) * W + x + 1] = out[y * W + x + 1] + row;
    }
  }
  return out;
}
