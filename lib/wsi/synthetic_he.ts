/**
 * Procedural H&E lymph-node tissue with a learnable tumour signal, rendered on demand: every pixel is a pure
 * function of the slide's seed and its level-0 coordinates, so any region of an arbitrarily large slide costs
 * only the time to draw it.
 *
 * Colour follows Beer-Lambert with two stains (haematoxylin, eosin): eosin-pink stroma with fibrous texture,
 * small round haematoxylin nuclei (lymphocytes), fat (white adipocytes with thin pink membranes) and near-white
 * background. Tumour regions (metastases from isolated cells to large deposits, polygons that are also the
 * ASAP XML annotation) hold larger, denser, more variable, elongated and darker nuclei on a more eosinophilic
 * cytoplasm. Stain vectors and intensities vary between slides.
 *
 * @module
 */
import { type AnnotationPolygon, pointInPolygon, type SlideAnnotations, toAsapXml } from "./annotations.ts";
import { bestLevelForDownsample } from "./best_level.ts";
import { writeFileAtomic } from "../util/mod.ts";
import type { RasterImage } from "./pixels.ts";
import type { ReadRegionOptions, SlideSource } from "./slide.ts";

/** A tumour region: a smooth irregular polygon (level-0 pixels) and its size class. */
export interface TumourRegion {
  /** Name in the annotation (e.g. `"macro 0"`). */
  name: string;
  /** Size class: isolated tumour cells (< 200 µm), micro-metastasis, or a large deposit. */
  kind: "itc" | "micro" | "macro";
  cx: number;
  cy: number;
  /** Mean radius in level-0 pixels. */
  radius: number;
  /** Polygon vertices `[x0, y0, x1, y1, ...]`. */
  points: Float64Array;
  bbox: readonly [number, number, number, number];
}

/** Everything a synthetic slide is drawn from (derived from the seed by {@link syntheticHeSpec}). */
export interface SyntheticHeSpec {
  seed: number;
  width: number;
  height: number;
  /** Microns per level-0 pixel. */
  mpp: number;
  /** Tissue pieces: rotated ellipses with a noisy border. */
  tissue: { cx: number; cy: number; rx: number; ry: number; angle: number }[];
  tumours: TumourRegion[];
  /** Optical density per unit stain (RGB) of haematoxylin and eosin, and their intensity on this slide. */
  stain: { h: [number, number, number]; e: [number, number, number]; hScale: number; eScale: number };
}

/** Options of {@link syntheticHeSpec}. */
export interface SyntheticHeOptions {
  /** Level-0 width (default 12288: 3 mm at 0.25 µm/px). */
  width?: number;
  /** Level-0 height (default 9216). */
  height?: number;
  /** Microns per level-0 pixel (default 0.25, close to CAMELYON16's 0.243). */
  mpp?: number;
  /** Whether the slide has metastases (default: decided by the seed, half of the slides). */
  tumour?: boolean;
  /** Number of regions of each size class on a tumour slide (default: drawn from the seed). */
  lesions?: { itc?: number; micro?: number; macro?: number };
}

// ---- deterministic hashing and noise ----

function hash3(a: number, b: number, c: number): number {
  let h = Math.imul(a | 0, 0x27d4eb2d) ^ Math.imul(b | 0, 0x165667b1) ^ Math.imul(c | 0, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

function smooth(t: number): number {
  return t * t * (3 - 2 * t);
}

/** Value noise in [0, 1] with lattice spacing `cell` (level-0 pixels). */
function valueNoise(x: number, y: number, cell: number, seed: number): number {
  const gx = x / cell, gy = y / cell;
  const ix = Math.floor(gx), iy = Math.floor(gy);
  const fx = smooth(gx - ix), fy = smooth(gy - iy);
  const a = hash3(ix, iy, seed), b = hash3(ix + 1, iy, seed);
  const c = hash3(ix, iy + 1, seed), d = hash3(ix + 1, iy + 1, seed);
  return a + (b - a) * fx + (c - a) * fy + (a - b - c + d) * fx * fy;
}

/** A small seeded generator for the slide layout. */
function layoutRng(seed: number): () => number {
  let i = 0;
  return () => hash3(seed, 0x5eed, i++);
}

function normalise(v: [number, number, number]): [number, number, number] {
  const n = Math.hypot(...v);
  return [v[0] / n, v[1] / n, v[2] / n];
}

// Level-0 sizes at 0.25 µm/px are converted with the slide's mpp.
const UM = {
  normalCell: 10, // lymphocyte lattice spacing
  normalRadius: [2.5, 3.5],
  tumourCell: 9,
  tumourRadius: [4, 6.5],
  fatCell: 80,
  fibre: 8,
};

/**
 * Derives a slide's layout from its seed: tissue pieces, metastases (tumour slides only) and stain.
 *
 * @example
 * ```ts
 * const spec = syntheticHeSpec(7, { tumour: true });
 * console.log(spec.tumours.map((t) => t.kind));
 * ```
 */
export function syntheticHeSpec(seed: number, opts: SyntheticHeOptions = {}): SyntheticHeSpec {
  const width = opts.width ?? 12288, height = opts.height ?? 9216, mpp = opts.mpp ?? 0.25;
  for (const [k, v] of Object.entries({ width, height })) {
    if (!(Number.isInteger(v) && v >= 64 && v < 2 ** 31)) {
      throw new Error(`syntheticHeSpec(): ${k} must be an integer in [64, 2^31), got ${v}`);
    }
  }
  if (!(mpp > 0)) throw new Error(`syntheticHeSpec(): mpp must be > 0, got ${mpp}`);
  if (!Number.isInteger(seed)) throw new Error(`syntheticHeSpec(): seed must be an integer, got ${seed}`);
  const r = layoutRng(seed);
  const pieces = 1 + Math.floor(r() * 2);
  const tissue: SyntheticHeSpec["tissue"] = [];
  for (let i = 0; i < pieces; i++) {
    const f = pieces === 1 ? 0.5 : (i + 0.5) / pieces;
    tissue.push({
      cx: width * (pieces === 1 ? 0.5 : f) + (r() - 0.5) * width * 0.05,
      cy: height * (0.5 + (r() - 0.5) * 0.1),
      rx: (width / pieces) * (0.36 + r() * 0.08),
      ry: height * (0.3 + r() * 0.12),
      angle: (r() - 0.5) * 0.6,
    });
  }
  const isTumour = opts.tumour ?? r() < 0.5;
  const tumours: TumourRegion[] = [];
  if (isTumour) {
    const n = {
      macro: opts.lesions?.macro ?? (r() < 0.5 ? 1 : 0),
      micro: opts.lesions?.micro ?? 1 + Math.floor(r() * 2),
      itc: opts.lesions?.itc ?? 1 + Math.floor(r() * 2),
    };
    const radiusUm = { macro: [400, 750], micro: [120, 350], itc: [25, 60] } as const;
    for (const kind of ["macro", "micro", "itc"] as const) {
      for (let k = 0; k < n[kind]; k++) {
        const [lo, hi] = radiusUm[kind];
        const radius = Math.min((lo + r() * (hi - lo)) / mpp, 0.25 * Math.min(width, height));
        // a centre well inside a tissue piece
        const t = tissue[Math.floor(r() * tissue.length)];
        const a = r() * 2 * Math.PI, d = Math.sqrt(r()) * 0.6;
        const ex = Math.cos(a) * d * t.rx, ey = Math.sin(a) * d * t.ry;
        const cx = t.cx + ex * Math.cos(t.angle) - ey * Math.sin(t.angle);
        const cy = t.cy + ex * Math.sin(t.angle) + ey * Math.cos(t.angle);
        const m = 32, points = new Float64Array(2 * m);
        const amp = [r() * 0.15, r() * 0.1, r() * 0.06], ph = [r(), r(), r()].map((p) => p * 2 * Math.PI);
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (let v = 0; v < m; v++) {
          const th = (v / m) * 2 * Math.PI;
          const rr = radius * (1 + amp[0] * Math.sin(2 * th + ph[0]) + amp[1] * Math.sin(3 * th + ph[1]) +
            amp[2] * Math.sin(5 * th + ph[2]));
          const x = Math.round(Math.min(width - 1, Math.max(0, cx + rr * Math.cos(th))) * 4) / 4;
          const y = Math.round(Math.min(height - 1, Math.max(0, cy + rr * Math.sin(th))) * 4) / 4;
          points[2 * v] = x;
          points[2 * v + 1] = y;
          x0 = Math.min(x0, x);
          y0 = Math.min(y0, y);
          x1 = Math.max(x1, x);
          y1 = Math.max(y1, y);
        }
        tumours.push({ name: `${kind} ${k}`, kind, cx, cy, radius, points, bbox: [x0, y0, x1, y1] });
      }
    }
  }
  const jitter = (v: [number, number, number]) =>
    normalise(v.map((c) => Math.max(0.02, c + (r() - 0.5) * 0.12)) as [number, number, number]);
  const stain = {
    h: jitter([0.65, 0.70, 0.29]),
    e: jitter([0.07, 0.99, 0.11]),
    hScale: 0.8 + r() * 0.4,
    eScale: 0.75 + r() * 0.5,
  };
  return { seed, width, height, mpp, tissue, tumours, stain };
}

const asPolygon = (t: TumourRegion): AnnotationPolygon => ({
  name: t.name,
  group: "Tumor",
  type: "Polygon",
  points: t.points,
  bbox: t.bbox,
});

/**
 * A synthetic H&E slide rendered on demand (a {@link SlideSource}: tissue masks, patch grids, `readPatch` and
 * `inferSlide` take it like an OpenSlide slide). Levels halve down to about 512 pixels.
 *
 * @example
 * ```ts
 * const slide = new SyntheticHeSlide(syntheticHeSpec(3, { tumour: true }));
 * const img = slide.readRegion(4096, 4096, 2, 256, 256); // RGB at 1 µm/px, drawn on demand
 * const xml = slide.toAsapXml(); // the tumour regions as ASAP XML
 * ```
 */
export class SyntheticHeSlide implements SlideSource {
  readonly spec: SyntheticHeSpec;
  readonly path: string;
  readonly levelCount: number;
  readonly levelDimensions: readonly (readonly [number, number])[];
  readonly levelDownsamples: readonly number[];
  readonly #polys: AnnotationPolygon[];
  readonly #cells: { normal: number; tumour: number; fat: number; fibre: number };
  readonly #radius: { normal: [number, number]; tumour: [number, number] };
  readonly #bg: [number, number, number];
  readonly #memo = new Map<number, boolean>();
  readonly #pieces: { cx: number; cy: number; rx: number; ry: number; cos: number; sin: number }[];

  constructor(spec: SyntheticHeSpec) {
    this.spec = spec;
    this.path = `synthetic-he:${spec.seed}`;
    const dims: [number, number][] = [], ds: number[] = [];
    for (let l = 0;; l++) {
      const d = 2 ** l;
      dims.push([Math.ceil(spec.width / d), Math.ceil(spec.height / d)]);
      ds.push(d);
      if (spec.width / d <= 512 && spec.height / d <= 512) break;
    }
    this.levelDimensions = dims;
    this.levelDownsamples = ds;
    this.levelCount = dims.length;
    this.#polys = spec.tumours.map(asPolygon);
    const px = (um: number) => um / spec.mpp;
    this.#cells = {
      normal: px(UM.normalCell),
      tumour: px(UM.tumourCell),
      fat: px(UM.fatCell),
      fibre: px(UM.fibre),
    };
    this.#radius = {
      normal: [px(UM.normalRadius[0]), px(UM.normalRadius[1])],
      tumour: [px(UM.tumourRadius[0]), px(UM.tumourRadius[1])],
    };
    this.#bg = [241, 239, 240];
    this.#pieces = spec.tissue.map((t) => ({ ...t, cos: Math.cos(t.angle), sin: Math.sin(t.angle) }));
  }

  /**
   * A slide from a seed (see {@link syntheticHeSpec}).
   *
   * @example
   * ```ts
   * const normal = SyntheticHeSlide.create(1, { tumour: false, width: 4096, height: 4096 });
   * ```
   */
  static create(seed: number, opts: SyntheticHeOptions = {}): SyntheticHeSlide {
    return new SyntheticHeSlide(syntheticHeSpec(seed, opts));
  }

  get dimensions(): readonly [number, number] {
    return this.levelDimensions[0];
  }

  get mpp(): { x: number; y: number } {
    return { x: this.spec.mpp, y: this.spec.mpp };
  }

  /** Whether the slide has metastases (ITC-only slides count as tumour slides). */
  get isTumour(): boolean {
    return this.spec.tumours.length > 0;
  }

  bestLevelForDownsample(downsample: number): number {
    return bestLevelForDownsample(this.levelDownsamples, downsample);
  }

  /**
   * Whether a level-0 point is inside a metastasis (the same test the annotation gives).
   *
   * @example
   * ```ts
   * slide.tumourAt(5000, 6000);
   * ```
   */
  tumourAt(x: number, y: number): boolean {
    for (const p of this.#polys) if (pointInPolygon(p, x, y)) return true;
    return false;
  }

  /**
   * Whether a level-0 point is tissue (tumour always is).
   *
   * @example
   * ```ts
   * slide.tissueAt(100, 100); // false: the slide corner is background
   * ```
   */
  tissueAt(x: number, y: number): boolean {
    const s = this.spec;
    const wobble = 0.3 * (valueNoise(x, y, 0.15 * Math.min(s.width, s.height), s.seed ^ 0x71) - 0.5);
    for (const t of this.#pieces) {
      const dx = x - t.cx, dy = y - t.cy, c = t.cos, sn = t.sin;
      const u = (dx * c + dy * sn) / t.rx, v = (-dx * sn + dy * c) / t.ry;
      if (u * u + v * v < 1 + wobble) return true;
    }
    return this.tumourAt(x, y);
  }

  /** The metastases as ASAP annotations (group `Tumor`). */
  annotations(): SlideAnnotations {
    return { tumour: this.#polys.slice(), exclusion: [], other: [] };
  }

  /**
   * The metastases as ASAP XML, coordinates divided by `downsample` (for a TIFF written from a coarser level).
   *
   * @example
   * ```ts
   * await Deno.writeTextFile("tumor_synth_3.xml", slide.toAsapXml());
   * ```
   */
  toAsapXml(downsample = 1): string {
    return toAsapXml(this.spec.tumours.map((t) => ({
      name: t.name,
      group: "Tumor",
      points: Array.from(t.points, (v) => v / downsample),
    })));
  }

  /** Nucleus coverage: returns [haematoxylin, eosin] concentration added at a level-0 point. */
  #nuclei(x: number, y: number, inTumour: boolean): [number, number] {
    const seed = this.spec.seed;
    const near = inTumour || this.#nearTumour(x, y);
    let h = 0, e = 0;
    // lymphocytes: a jittered lattice whose density varies; follicles hold larger, paler nuclei (a look-alike
    // of tumour); absent inside tumour
    const cn = this.#cells.normal, [rn0, rn1] = this.#radius.normal;
    const density = 0.3 + 0.55 * valueNoise(x, y, 40 * cn, seed ^ 0x1212);
    const follicle = smooth(Math.min(1, Math.max(0, (valueNoise(x, y, 60 * cn, seed ^ 0x1313) - 0.6) * 5)));
    const ix = Math.floor(x / cn), iy = Math.floor(y / cn);
    for (let j = iy - 1; j <= iy + 1; j++) {
      for (let i = ix - 1; i <= ix + 1; i++) {
        if (hash3(i, j, seed ^ 0x1111) > density + 0.15 * follicle) continue;
        const nx = (i + hash3(i, j, seed ^ 0x2222)) * cn, ny = (j + hash3(i, j, seed ^ 0x3333)) * cn;
        const rad = (rn0 + (rn1 - rn0) * hash3(i, j, seed ^ 0x4444)) * (1 + 0.4 * follicle);
        const d2 = (x - nx) ** 2 + (y - ny) ** 2;
        if (d2 < rad * rad && !(near && this.#cellInTumour(0, i, j, nx, ny))) {
          const dark = (0.85 + 0.25 * hash3(i, j, seed ^ 0x5555)) * (1 - 0.3 * follicle);
          h = Math.max(h, dark * (0.85 + 0.3 * hash3(Math.floor(x / 3), Math.floor(y / 3), seed ^ 0x6666)));
        }
      }
    }
    if (!near) return [h, e];
    // tumour cells: denser, larger, elongated, more variable and darker
    const ct = this.#cells.tumour, [rt0, rt1] = this.#radius.tumour;
    const tDensity = 0.45 + 0.45 * valueNoise(x, y, 30 * ct, seed ^ 0x1414);
    const tx = Math.floor(x / ct), ty = Math.floor(y / ct);
    for (let j = ty - 1; j <= ty + 1; j++) {
      for (let i = tx - 1; i <= tx + 1; i++) {
        if (hash3(i, j, seed ^ 0x7777) > tDensity) continue;
        const nx = (i + hash3(i, j, seed ^ 0x8888)) * ct, ny = (j + hash3(i, j, seed ^ 0x9999)) * ct;
        if (!this.#cellInTumour(1, i, j, nx, ny)) continue;
        const rad = rt0 + (rt1 - rt0) * hash3(i, j, seed ^ 0xaaaa) ** 0.7;
        const ecc = 1 + 0.6 * hash3(i, j, seed ^ 0xbbbb), ang = Math.PI * hash3(i, j, seed ^ 0xcccc);
        const dx = x - nx, dy = y - ny, c = Math.cos(ang), s = Math.sin(ang);
        const u = (dx * c + dy * s) * Math.sqrt(ecc), v = (-dx * s + dy * c) / Math.sqrt(ecc);
        const q = (u * u + v * v) / (rad * rad);
        if (q < 1) {
          const dark = 0.8 + 0.75 * hash3(i, j, seed ^ 0xdddd);
          // coarse chromatin and a darker rim
          const chrom = 0.75 + 0.5 * hash3(Math.floor(x / 4), Math.floor(y / 4), seed ^ 0xeeee);
          h = Math.max(h, dark * chrom * (q > 0.75 ? 1.15 : 1));
          e = Math.max(e, 0.1);
        }
      }
    }
    return [h, e];
  }

  /** `tumourAt` of a lattice nucleus centre, memoised during one render. */
  #cellInTumour(lattice: 0 | 1, i: number, j: number, x: number, y: number): boolean {
    const key = (i * 1_000_003 + j) * 2 + lattice;
    let v = this.#memo.get(key);
    if (v === undefined) {
      v = this.tumourAt(x, y);
      if (this.#memo.size > 1 << 20) this.#memo.clear();
      this.#memo.set(key, v);
    }
    return v;
  }

  #nearTumour(x: number, y: number): boolean {
    const m = this.#cells.tumour * 1.5;
    for (const p of this.#polys) {
      const [a, b, c, d] = p.bbox;
      if (x >= a - m && x <= c + m && y >= b - m && y <= d + m) return true;
    }
    return false;
  }

  /** Haematoxylin and eosin concentrations at a level-0 point; `ds` >= 16 draws nuclei as mean coverage. */
  #stains(x: number, y: number, ds: number): [number, number] {
    const s = this.spec;
    if (!this.tissueAt(x, y)) {
      const n = valueNoise(x, y, 200, s.seed ^ 0x4242);
      return [0.01 * n, 0.02 * n];
    }
    const inTumour = this.tumourAt(x, y);
    if (!inTumour && valueNoise(x, y, 0.08 * Math.min(s.width, s.height), s.seed ^ 0x3131) > 0.68) {
      // fat: adipocytes (Worley F2 - F1 small = membrane)
      const cf = this.#cells.fat, ix = Math.floor(x / cf), iy = Math.floor(y / cf);
      let f1 = Infinity, f2 = Infinity;
      for (let j = iy - 1; j <= iy + 1; j++) {
        for (let i = ix - 1; i <= ix + 1; i++) {
          const d = Math.hypot(
            x - (i + hash3(i, j, s.seed ^ 0x5151)) * cf,
            y - (j + hash3(i, j, s.seed ^ 0x6161)) * cf,
          );
          if (d < f1) [f1, f2] = [d, f1];
          else if (d < f2) f2 = d;
        }
      }
      const membrane = f2 - f1 < Math.max(4, ds) ? 0.35 : 0.02;
      return [0.02, membrane];
    }
    const fb = this.#cells.fibre;
    const fibre = valueNoise(x * 0.35, y, fb, s.seed ^ 0x2727) * 0.6 +
      valueNoise(x, y, fb * 6, s.seed ^ 0x2828) * 0.4;
    let h = 0.06, e = 0.22 + 0.3 * fibre;
    if (inTumour) e += 0.12; // eosinophilic cytoplasm
    if (ds >= 16) {
      // nuclei below the pixel size: their mean coverage
      const cover = inTumour ? 0.62 : 0.3;
      h += cover * (inTumour ? 1.3 : 0.95);
    } else {
      const [nh, ne] = this.#nuclei(x, y, inTumour);
      if (nh > 0) {
        h = nh;
        e = Math.max(ne, e * 0.4);
      }
    }
    return [h, e];
  }

  #render(x: number, y: number, ds: number, width: number, height: number, alpha: boolean): RasterImage {
    const ch = alpha ? 4 : 3;
    const data = new Uint8Array(width * height * ch);
    const { h: H, e: E, hScale, eScale } = this.spec.stain;
    const W0 = this.spec.width, H0 = this.spec.height;
    for (let j = 0; j < height; j++) {
      const py = y + (j + 0.5) * ds;
      for (let i = 0; i < width; i++) {
        const px = x + (i + 0.5) * ds;
        const o = (j * width + i) * ch;
        if (px < 0 || py < 0 || px >= W0 || py >= H0) {
          if (!alpha) data.set(this.#bg, o);
          continue;
        }
        const [ch0, ce0] = this.#stains(px, py, ds);
        const ch1 = ch0 * hScale, ce1 = ce0 * eScale;
        for (let c = 0; c < 3; c++) {
          const od = ch1 * H[c] + ce1 * E[c];
          data[o + c] = Math.max(0, Math.min(255, Math.round(this.#bg[c] * Math.exp(-od * 1.1))));
        }
        if (alpha) data[o + 3] = 255;
      }
    }
    return { width, height, channels: ch as 3 | 4, data };
  }

  readRegion(
    x: number,
    y: number,
    level: number,
    width: number,
    height: number,
    opts: ReadRegionOptions = {},
  ): RasterImage {
    if (!Number.isInteger(level) || level < 0 || level >= this.levelCount) {
      throw new Error(
        `SyntheticHeSlide.readRegion(): level must be in [0, ${this.levelCount - 1}], got ${level}`,
      );
    }
    if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
      throw new Error(
        `SyntheticHeSlide.readRegion(): size must be positive integers, got ${width}x${height}`,
      );
    }
    return this.#render(x, y, this.levelDownsamples[level], width, height, opts.alpha ?? false);
  }

  readRegionAsync(
    x: number,
    y: number,
    level: number,
    width: number,
    height: number,
    opts: ReadRegionOptions = {},
  ): Promise<RasterImage> {
    try {
      return Promise.resolve(this.readRegion(x, y, level, width, height, opts));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  readLevel(level: number, opts: ReadRegionOptions = {}): RasterImage {
    const [w, h] = this.levelDimensions[level] ?? [0, 0];
    return this.readRegion(0, 0, level, w, h, opts);
  }

  /** Nothing to release (kept for the {@link SlideSource} contract). */
  close(): void {}

  [Symbol.dispose](): void {}
}

/** Options of {@link writeSyntheticHeTiff}. */
export interface WriteSyntheticHeOptions {
  /** Level of the synthetic slide that becomes the TIFF's full resolution (default 0). */
  level?: number;
  /** Tile side (default 256). */
  tileSize?: number;
  /** Tile compression (default `"jpeg"`; `"deflate"` is lossless). */
  compression?: "jpeg" | "deflate";
  /** JPEG quality (default 90). */
  quality?: number;
}

/** What {@link writeSyntheticHeTiff} wrote. */
export interface SyntheticHeFiles {
  /** The pyramidal tiled TIFF (OpenSlide `generic-tiff`). */
  tiff: string;
  /** Its ASAP XML annotation (`<name>.xml` beside the TIFF; written for normal slides too, with no regions). */
  xml: string;
  /** Microns per pixel of the TIFF's level 0. */
  mpp: number;
  /** `[width, height]` of the TIFF's level 0. */
  size: [number, number];
}

/** Largest level {@link writeSyntheticHeTiff} renders in memory (pixels). */
export const MAX_TIFF_PIXELS = 1 << 27;

/**
 * Writes a synthetic slide as a real pyramidal tiled TIFF (libvips through sharp; resolution tags give the
 * mpp) plus its ASAP XML annotation, for the OpenSlide path. `level` picks the resolution written (coordinates
 * in the XML are that level's pixels).
 *
 * @example
 * ```ts
 * const slide = SyntheticHeSlide.create(3, { tumour: true });
 * const files = await writeSyntheticHeTiff(slide, "data/synthetic-he/tumor_003.tif", { level: 1 });
 * using s = Slide.open(files.tiff);
 * ```
 */
export async function writeSyntheticHeTiff(
  slide: SyntheticHeSlide,
  path: string,
  opts: WriteSyntheticHeOptions = {},
): Promise<SyntheticHeFiles> {
  const level = opts.level ?? 0, tile = opts.tileSize ?? 256;
  if (!(Number.isInteger(level) && level >= 0 && level < slide.levelCount)) {
    throw new Error(`writeSyntheticHeTiff(): level must be in [0, ${slide.levelCount - 1}], got ${level}`);
  }
  if (!path.toLowerCase().endsWith(".tif") && !path.toLowerCase().endsWith(".tiff")) {
    throw new Error(`writeSyntheticHeTiff(): path must end in .tif or .tiff, got "${path}"`);
  }
  const [w, h] = slide.levelDimensions[level];
  if (w * h > MAX_TIFF_PIXELS) {
    throw new Error(
      `writeSyntheticHeTiff(): level ${level} is ${w}x${h} (> ${MAX_TIFF_PIXELS} pixels); write a coarser level`,
    );
  }
  const ds = slide.levelDownsamples[level];
  const rgb = new Uint8Array(w * h * 3);
  const strip = 256;
  for (let y = 0; y < h; y += strip) {
    const sh = Math.min(strip, h - y);
    rgb.set(slide.readRegion(0, y * ds, level, w, sh).data, y * w * 3);
  }
  const mpp = slide.spec.mpp * ds;
  const { default: sharp } = await import("./_sharp.ts");
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    await sharp(rgb, { raw: { width: w, height: h, channels: 3 }, limitInputPixels: false }).tiff({
      tile: true,
      pyramid: true,
      tileWidth: tile,
      tileHeight: tile,
      compression: opts.compression ?? "jpeg",
      quality: opts.quality ?? 90,
      xres: 1000 / mpp,
      yres: 1000 / mpp,
      resolutionUnit: "cm",
    }).toFile(tmp);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  const xml = path.replace(/\.tiff?$/i, ".xml");
  await writeFileAtomic(xml, new TextEncoder().encode(slide.toAsapXml(ds)));
  return { tiff: path, xml, mpp, size: [w, h] };
}
