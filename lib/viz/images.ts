/**
 * Attention and selection images (PNG through sharp): the input upscaled, the CNN importance heatmap
 * overlaid with a colour map, the kept/pruned token grid (pruned patches dimmed and hatched, so that they
 * show on any background, black included), CLS attention per
 * block and attention rollout, and labelled grids of several images.
 *
 * @module
 */
import sharp, { type OverlayOptions } from "./_sharp.ts";
import { colormap, type ColormapName } from "./colormap.ts";
import { type AttentionMatrix, attentionRollout, clsAttention } from "./attention.ts";
import { type ImageInput, type PixelOptions, PngImage, type Rgb, toRgb } from "./png_image.ts";

/** A patch grid: patches per side, or `[rows, cols]`. */
export type Grid = number | [number, number];

/** Output size options shared by the image functions. */
export interface SizeOptions extends PixelOptions {
  /** Integer upscaling factor (default: the largest that keeps the longer side <= 256, at least 1). */
  scale?: number;
  /** Resampling of the upscaling (default `"nearest"`, which keeps pixels and patch edges exact). */
  kernel?: "nearest" | "lanczos3";
}

function gridOf(fn: string, grid: Grid): [number, number] {
  const g: [number, number] = typeof grid === "number" ? [grid, grid] : grid;
  if (!Array.isArray(g) || g.length !== 2 || !g.every((v) => Number.isInteger(v) && v > 0)) {
    throw new RangeError(`${fn}: grid is ${JSON.stringify(grid)}; expected patches per side or [rows, cols]`);
  }
  return g;
}

async function upscaled(fn: string, image: ImageInput, o: SizeOptions): Promise<Rgb> {
  const src = await toRgb(image, o);
  const scale = o.scale ?? Math.max(1, Math.floor(256 / Math.max(src.width, src.height)));
  if (!Number.isInteger(scale) || scale < 1) {
    throw new RangeError(`${fn}: scale is ${scale}; expected an integer >= 1`);
  }
  if (scale === 1) return src;
  const width = src.width * scale, height = src.height * scale;
  const buf = await sharp(src.rgb, { raw: { width: src.width, height: src.height, channels: 3 } })
    .resize(width, height, { kernel: o.kernel ?? "nearest", fit: "fill" })
    .raw()
    .toBuffer();
  return { rgb: new Uint8Array(buf), width, height };
}

/** One flag per patch: 1 when the patch index is in `kept`. */
function keptMask(fn: string, kept: ArrayLike<number>, n: number): Uint8Array {
  const on = new Uint8Array(n);
  for (let i = 0; i < kept.length; i++) {
    const p = kept[i];
    if (!Number.isInteger(p) || p < 0 || p >= n) {
      throw new RangeError(`${fn}: kept[${i}] is ${p}; expected a patch index in [0, ${n})`);
    }
    on[p] = 1;
  }
  return on;
}

/**
 * Colour of the diagonal hatch drawn over dropped (pruned) patches: a light cyan, visible on black, on
 * white and on the inferno/viridis heatmaps (neither map contains it).
 */
export const DROPPED_HATCH_RGB: readonly [number, number, number] = [0, 220, 255];

/** Period in output pixels of the dropped-patch hatch (one hatch pixel per diagonal every 6). */
const HATCH_PERIOD = 6;

/** Whether output pixel (y, x) of a dropped patch is on a hatch line. */
function onHatch(y: number, x: number): boolean {
  return (x + y) % HATCH_PERIOD === 0;
}

/** Patch (row, col) of pixel (y, x) in a `w × h` image cut into a `gh × gw` grid. */
function patchAt(y: number, x: number, h: number, w: number, gh: number, gw: number): number {
  return Math.min(gh - 1, Math.floor((y * gh) / h)) * gw + Math.min(gw - 1, Math.floor((x * gw) / w));
}

/**
 * The input image, upscaled (integer factor, nearest neighbour by default).
 *
 * @example
 * ```ts
 * const img = await renderImage(x0, { normalization: IMAGENET });
 * ```
 */
export async function renderImage(image: ImageInput, options: SizeOptions = {}): Promise<PngImage> {
  const { rgb, width, height } = await upscaled("renderImage", image, options);
  return PngImage.fromRgb(rgb, width, height);
}

/** Options of {@link heatmapOverlay}. */
export interface HeatmapOptions extends SizeOptions {
  /** The patch grid of `values`. */
  grid: Grid;
  /** Opacity of the heatmap over the image (default 0.5; 1 = heatmap only). */
  alpha?: number;
  /** Colour map (default `"inferno"`). */
  colormap?: ColormapName;
  /** Stretch values to [0, 1] by min-max (default true); otherwise they must already be in [0, 1]. */
  normalize?: boolean;
  /** Bilinear interpolation between patch centres instead of flat patches (default false). */
  smooth?: boolean;
  /**
   * Patches the ViT kept: only these are coloured (and set the min-max range); the others are shown
   * dimmed and hatched like in {@link tokenGridImage}. Default: all patches.
   */
  kept?: ArrayLike<number>;
  /** Brightness of patches not in `kept` (default 0.25). */
  dim?: number;
  /** Draw the {@link DROPPED_HATCH_RGB} diagonal hatch over patches not in `kept` (default true). */
  hatch?: boolean;
}

function normalized(values: ArrayLike<number>, normalize: boolean, on?: Uint8Array): Float64Array {
  const v = Float64Array.from(values);
  if (!normalize) return v;
  let lo = Infinity, hi = -Infinity;
  v.forEach((x, i) => {
    if (!Number.isFinite(x) || (on && !on[i])) return;
    lo = Math.min(lo, x);
    hi = Math.max(hi, x);
  });
  for (let i = 0; i < v.length; i++) v[i] = hi > lo ? (v[i] - lo) / (hi - lo) : 0.5;
  return v;
}

/**
 * Overlays one value per patch (CNN importance scores, attention) on the upscaled image with a colour map.
 *
 * @example
 * ```ts
 * const png = await heatmapOverlay(x0, aux.scores, { grid: 8, colormap: "inferno" });
 * ```
 */
export async function heatmapOverlay(
  image: ImageInput,
  values: ArrayLike<number>,
  options: HeatmapOptions,
): Promise<PngImage> {
  const [gh, gw] = gridOf("heatmapOverlay", options.grid);
  if (values.length !== gh * gw) {
    throw new RangeError(
      `heatmapOverlay: ${values.length} values for a ${gh}x${gw} grid; expected ${gh * gw}`,
    );
  }
  const alpha = options.alpha ?? 0.5;
  if (!(alpha >= 0 && alpha <= 1)) throw new RangeError(`heatmapOverlay: alpha is ${alpha}; expected [0, 1]`);
  const on = options.kept ? keptMask("heatmapOverlay", options.kept, gh * gw) : undefined;
  const dim = options.dim ?? 0.25;
  const hatch = options.hatch ?? true;
  const v = normalized(values, options.normalize ?? true, on);
  const { rgb, width, height } = await upscaled("heatmapOverlay", image, options);
  const cmap = options.colormap ?? "inferno";
  const lut = Array.from({ length: 256 }, (_, i) => colormap(i / 255, cmap));
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      if (on && !on[patchAt(y, x, height, width, gh, gw)]) {
        if (hatch && onHatch(y, x)) out.set(DROPPED_HATCH_RGB, o);
        else for (let k = 0; k < 3; k++) out[o + k] = Math.round(rgb[o + k] * dim);
        continue;
      }
      let val: number;
      if (options.smooth) {
        const fy = Math.min(gh - 1, Math.max(0, ((y + 0.5) * gh) / height - 0.5));
        const fx = Math.min(gw - 1, Math.max(0, ((x + 0.5) * gw) / width - 0.5));
        const y0 = Math.floor(fy),
          x0 = Math.floor(fx),
          y1 = Math.min(gh - 1, y0 + 1),
          x1 = Math.min(gw - 1, x0 + 1);
        const ty = fy - y0, tx = fx - x0;
        val = (1 - ty) * ((1 - tx) * v[y0 * gw + x0] + tx * v[y0 * gw + x1]) +
          ty * ((1 - tx) * v[y1 * gw + x0] + tx * v[y1 * gw + x1]);
      } else val = v[patchAt(y, x, height, width, gh, gw)];
      const c = lut[Math.max(0, Math.min(255, Math.round(val * 255))) || 0];
      for (let k = 0; k < 3; k++) out[o + k] = Math.round((1 - alpha) * rgb[o + k] + alpha * c[k]);
    }
  }
  return PngImage.fromRgb(out, width, height);
}

/** Options of {@link tokenGridImage}. */
export interface TokenGridOptions extends SizeOptions {
  /** The ViT patch grid. */
  grid: Grid;
  /** Brightness factor of pruned patches (default 0.25: pixel · 0.25). */
  dim?: number;
  /**
   * Draw a diagonal hatch in {@link DROPPED_HATCH_RGB} over pruned patches (default true), so that they
   * are visible where the image is black and dimming changes nothing.
   */
  hatch?: boolean;
  /** Darken the first row and column of pixels of every patch to show the grid (default true). */
  gridLines?: boolean;
}

/**
 * The upscaled image with pruned patches marked: patches not in `kept` (patch indices, CLS excluded,
 * row-major) are multiplied by `dim` and hatched with {@link DROPPED_HATCH_RGB} lines.
 *
 * @example
 * ```ts
 * const png = await tokenGridImage(x0, keptIndices, { grid: 8 });
 * ```
 */
export async function tokenGridImage(
  image: ImageInput,
  kept: ArrayLike<number>,
  options: TokenGridOptions,
): Promise<PngImage> {
  const [gh, gw] = gridOf("tokenGridImage", options.grid);
  const dim = options.dim ?? 0.25;
  if (!(dim >= 0 && dim <= 1)) throw new RangeError(`tokenGridImage: dim is ${dim}; expected [0, 1]`);
  const on = keptMask("tokenGridImage", kept, gh * gw);
  const { rgb, width, height } = await upscaled("tokenGridImage", image, options);
  const lines = options.gridLines ?? true;
  const hatch = options.hatch ?? true;
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < height; y++) {
    const edgeY = lines && y > 0 && Math.floor((y * gh) / height) !== Math.floor(((y - 1) * gh) / height);
    for (let x = 0; x < width; x++) {
      const edgeX = lines && x > 0 && Math.floor((x * gw) / width) !== Math.floor(((x - 1) * gw) / width);
      const keptHere = on[patchAt(y, x, height, width, gh, gw)] === 1;
      const o = (y * width + x) * 3;
      if (!keptHere && hatch && onHatch(y, x)) {
        out.set(DROPPED_HATCH_RGB, o);
        continue;
      }
      const f = (keptHere ? 1 : dim) * (edgeX || edgeY ? 0.6 : 1);
      for (let k = 0; k < 3; k++) out[o + k] = Math.round(rgb[o + k] * f);
    }
  }
  return PngImage.fromRgb(out, width, height);
}

/** An image with an optional caption, for {@link imageGrid}. */
export interface LabelledImage {
  image: PngImage;
  label?: string;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** Options of {@link imageGrid}. */
export interface ImageGridOptions {
  /** Columns (default: up to 4). */
  cols?: number;
  /** Space between cells in pixels (default 6). */
  pad?: number;
  /** Height of the caption line above each image (default 20). */
  labelHeight?: number;
  /** A bold title line above the grid. */
  title?: string;
  /**
   * A legend line below the grid: a small {@link DROPPED_HATCH_RGB} hatched swatch (when `swatch` is
   * `"dropped"`) followed by the text.
   */
  legend?: { text: string; swatch?: "dropped" };
}

/**
 * Lays images out in a grid with a caption above each (cells as large as the largest image), an
 * optional title above and an optional legend below.
 *
 * @example
 * ```ts
 * const grid = await imageGrid([{ image: a, label: "input" }, { image: b, label: "kept 50%" }], { cols: 2 });
 * ```
 */
export async function imageGrid(
  items: readonly (LabelledImage | PngImage)[],
  options: ImageGridOptions = {},
): Promise<PngImage> {
  if (items.length === 0) throw new RangeError("imageGrid: items is empty; expected at least one image");
  const list = items.map((it) => (it instanceof PngImage ? { image: it } : it));
  list.forEach((it, i) => {
    if (!(it.image instanceof PngImage)) {
      throw new TypeError(`imageGrid: items[${i}] is not a PngImage or {image, label}`);
    }
  });
  const cols = Math.min(options.cols ?? Math.min(list.length, 4), list.length);
  if (!Number.isInteger(cols) || cols < 1) {
    throw new RangeError(`imageGrid: cols is ${options.cols}; expected >= 1`);
  }
  const rows = Math.ceil(list.length / cols);
  const pad = options.pad ?? 6;
  const hasLabels = list.some((it) => it.label);
  const lh = hasLabels ? (options.labelHeight ?? 20) : 0;
  const th = options.title ? 26 : 0;
  const legendH = options.legend ? 22 : 0;
  const cw = Math.max(...list.map((it) => it.image.width)),
    ch = Math.max(...list.map((it) => it.image.height));
  const width = pad + cols * (cw + pad), height = th + pad + rows * (lh + ch + pad) + legendH;
  const composites: OverlayOptions[] = [];
  const font = `font-family="DejaVu Sans, Arial, sans-serif"`;
  list.forEach((it, i) => {
    const left = pad + (i % cols) * (cw + pad), top = th + pad + Math.floor(i / cols) * (lh + ch + pad);
    composites.push({ input: it.image.png, left, top: top + lh });
    if (it.label) {
      const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${cw}" height="${lh}">` +
        `<text x="${cw / 2}" y="${lh - 5}" text-anchor="middle" font-size="${
          Math.round(lh * 0.7)
        }" ${font} ` +
        `fill="#222">${escapeXml(it.label)}</text></svg>`;
      composites.push({ input: new TextEncoder().encode(svg), left, top });
    }
  });
  if (options.title) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${th}">` +
      `<text x="${width / 2}" y="${th - 6}" text-anchor="middle" font-size="17" font-weight="bold" ${font} ` +
      `fill="#111">${escapeXml(options.title)}</text></svg>`;
    composites.push({ input: new TextEncoder().encode(svg), left: 0, top: 0 });
  }
  if (options.legend) {
    const [r, g, b] = DROPPED_HATCH_RGB;
    const swatch = options.legend.swatch === "dropped"
      ? `<defs><pattern id="h" width="${HATCH_PERIOD}" height="${HATCH_PERIOD}" patternUnits="userSpaceOnUse" ` +
        `patternTransform="rotate(45)"><rect width="${HATCH_PERIOD}" height="${HATCH_PERIOD}" fill="#333"/>` +
        `<rect width="1.5" height="${HATCH_PERIOD}" fill="rgb(${r},${g},${b})"/></pattern></defs>` +
        `<rect x="${pad}" y="3" width="28" height="16" fill="url(#h)" stroke="#666"/>`
      : "";
    const x = pad + (swatch ? 36 : 0);
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${legendH}">${swatch}` +
      `<text x="${x}" y="${legendH - 7}" font-size="13" ${font} fill="#222">${
        escapeXml(options.legend.text)
      }</text></svg>`;
    composites.push({ input: new TextEncoder().encode(svg), left: 0, top: height - legendH });
  }
  const png = await sharp({ create: { width, height, channels: 3, background: "#ffffff" } })
    .composite(composites)
    .png()
    .toBuffer();
  return new PngImage(new Uint8Array(png), width, height);
}

/** Options of {@link attentionMapsImage}. */
export interface AttentionMapsOptions extends SizeOptions {
  /** The full ViT patch grid. */
  grid: Grid;
  /** Patch index of each non-CLS token (from `aux.keptIndices`) when the ViT ran on a subset. */
  keptIndices?: ArrayLike<number>;
  /** Which blocks to show (default all). */
  blocks?: number[];
  /** Add the attention rollout panel (default true). */
  rollout?: boolean;
  colormap?: ColormapName;
  /** Heatmap opacity (default 0.6). */
  alpha?: number;
  cols?: number;
  title?: string;
}

/**
 * A labelled grid: the input, the CLS attention of each block (head average) and the attention
 * rollout, overlaid on the image. Pruned patches show as zero attention.
 *
 * @example
 * ```ts
 * const a = await imageAux(out.aux!, 0);
 * await attentionMapsImage(x0, a.attention!, { grid: 8, keptIndices: a.keptIndices });
 * ```
 */
export async function attentionMapsImage(
  image: ImageInput,
  attention: readonly AttentionMatrix[],
  options: AttentionMapsOptions,
): Promise<PngImage> {
  const [gh, gw] = gridOf("attentionMapsImage", options.grid);
  const mapping = { numPatches: gh * gw, keptIndices: options.keptIndices };
  const blocks = options.blocks ?? attention.map((_, i) => i);
  const heat = { ...options, alpha: options.alpha ?? 0.6, kept: options.keptIndices };
  const items: LabelledImage[] = [{ image: await renderImage(image, options), label: "input" }];
  for (const b of blocks) {
    if (!attention[b]) {
      throw new RangeError(`attentionMapsImage: block ${b} not in 0..${attention.length - 1}`);
    }
    items.push({
      image: await heatmapOverlay(image, clsAttention(attention[b], mapping), heat),
      label: `block ${b}`,
    });
  }
  if (options.rollout ?? true) {
    items.push({
      image: await heatmapOverlay(image, attentionRollout(attention, mapping), heat),
      label: "rollout",
    });
  }
  const legend = options.keptIndices ? { text: DROPPED_LEGEND, swatch: "dropped" as const } : undefined;
  return imageGrid(items, { cols: options.cols, title: options.title, legend });
}

/** Options of {@link selectionPanel}. */
export interface SelectionPanelOptions extends SizeOptions {
  grid: Grid;
  /** CNN importance score per patch. */
  scores?: ArrayLike<number>;
  /** Patch indices kept (CLS excluded). */
  keptIndices?: ArrayLike<number>;
  /** Per block attention (for the rollout panel). */
  attention?: readonly AttentionMatrix[];
  title?: string;
  /** Add the legend line for the dropped-token hatch below the panel when `keptIndices` is given (default true). */
  legend?: boolean;
}

/** The legend under panels that show dropped tokens. */
export const DROPPED_LEGEND = "hatched patches: tokens dropped before the ViT (it never sees them)";

/**
 * One row per image: input, CNN importance heatmap, kept/pruned tokens, attention rollout (the panels
 * whose data is given).
 *
 * @example
 * ```ts
 * const a = await imageAux(out.aux!, 0);
 * show(await selectionPanel(x0, { grid: 8, ...a }));
 * ```
 */
export async function selectionPanel(image: ImageInput, options: SelectionPanelOptions): Promise<PngImage> {
  const [gh, gw] = gridOf("selectionPanel", options.grid);
  const items: LabelledImage[] = [{ image: await renderImage(image, options), label: "input" }];
  if (options.scores) {
    items.push({ image: await heatmapOverlay(image, options.scores, options), label: "CNN importance" });
  }
  if (options.keptIndices) {
    const pct = ((100 * options.keptIndices.length) / (gh * gw)).toFixed(0);
    items.push({
      image: await tokenGridImage(image, options.keptIndices, options),
      label: `kept ${options.keptIndices.length}/${gh * gw} (${pct}%)`,
    });
  }
  if (options.attention?.length) {
    const map = attentionRollout(options.attention, {
      numPatches: gh * gw,
      keptIndices: options.keptIndices,
    });
    const heat = { ...options, alpha: 0.6, kept: options.keptIndices };
    items.push({ image: await heatmapOverlay(image, map, heat), label: "ViT rollout" });
  }
  const legend = options.keptIndices && (options.legend ?? true)
    ? { text: DROPPED_LEGEND, swatch: "dropped" as const }
    : undefined;
  return imageGrid(items, { cols: items.length, title: options.title, legend });
}
