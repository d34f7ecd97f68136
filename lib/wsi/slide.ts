/**
 * A whole-slide image opened through OpenSlide: pyramid levels, properties, microns per pixel and
 * region reads into RGB.
 *
 * @module
 */
import { bestLevelForDownsample } from "./best_level.ts";
import { cString, cStringArray, openslide, toCString } from "./openslide_ffi.ts";
import { argbToRgb, argbToRgba, parseHexColor, type RasterImage, type Rgb } from "./pixels.ts";

/** Options of {@link Slide.readRegion}. */
export interface ReadRegionOptions {
  /** Return straight RGBA (un-premultiplied) instead of RGB composited onto the background. */
  alpha?: boolean;
  /** Colour for transparent pixels (default: the slide's `openslide.background-color`, else white). */
  background?: Rgb;
}

/**
 * What slide readers need from a slide: the pyramid and region reads. {@link Slide} (OpenSlide) implements it,
 * and so do procedural slides rendered on demand (`SyntheticHeSlide`).
 *
 * @example
 * ```ts
 * function thumbnail(s: SlideSource) {
 *   return s.readLevel(s.levelCount - 1);
 * }
 * ```
 */
export interface SlideSource {
  /** Where the slide came from (a path, or a generator and its seed). */
  readonly path: string;
  readonly levelCount: number;
  readonly levelDimensions: readonly (readonly [number, number])[];
  readonly levelDownsamples: readonly number[];
  /** Level-0 `[width, height]`. */
  readonly dimensions: readonly [number, number];
  /** Microns per pixel at level 0, if known. */
  readonly mpp: { x: number; y: number } | undefined;
  bestLevelForDownsample(downsample: number): number;
  readRegion(
    x: number,
    y: number,
    level: number,
    width: number,
    height: number,
    opts?: ReadRegionOptions,
  ): RasterImage;
  readRegionAsync(
    x: number,
    y: number,
    level: number,
    width: number,
    height: number,
    opts?: ReadRegionOptions,
  ): Promise<RasterImage>;
  readLevel(level: number, opts?: ReadRegionOptions): RasterImage;
  close(): void;
}

/** Largest region (pixels) one read may return; read bigger areas in tiles. */
export const MAX_REGION_PIXELS = 1 << 28;

/**
 * Microns per pixel at level 0 from slide properties: `openslide.mpp-x/y`, else (generic TIFF) from
 * `tiff.XResolution`/`tiff.YResolution` with `tiff.ResolutionUnit` centimeter or inch.
 *
 * @example
 * ```ts
 * mppFromProperties({ "tiff.XResolution": "40", "tiff.YResolution": "40", "tiff.ResolutionUnit": "centimeter" });
 * // { x: 250, y: 250, source: "tiff" }
 * ```
 */
export function mppFromProperties(
  props: Record<string, string>,
): { x: number; y: number; source: "openslide" | "tiff" } | undefined {
  const ox = Number(props["openslide.mpp-x"]), oy = Number(props["openslide.mpp-y"]);
  if (ox > 0 && oy > 0) return { x: ox, y: oy, source: "openslide" };
  const unit = (props["tiff.ResolutionUnit"] ?? "").toLowerCase();
  const perUnit = unit === "centimeter" ? 1e4 : unit === "inch" ? 25400 : 0;
  const rx = Number(props["tiff.XResolution"]), ry = Number(props["tiff.YResolution"] ?? rx);
  if (perUnit > 0 && rx > 0 && ry > 0) return { x: perUnit / rx, y: perUnit / ry, source: "tiff" };
  return undefined;
}

// Safety net: a Slide that is garbage-collected without close() still releases its OpenSlide handle.
const finalizer = new FinalizationRegistry<{ handle: Deno.PointerValue }>((box) => {
  if (box.handle !== null) {
    try {
      openslide().openslide_close(box.handle);
    } catch { /* library gone at exit */ }
    box.handle = null;
  }
});

/**
 * An open slide. Always close it (`slide.close()`, `using slide = Slide.open(...)`, or {@link withSlide}).
 *
 * @example
 * ```ts
 * const slide = Slide.open("tumor_001.tif");
 * try {
 *   const { data } = slide.readRegion(1000, 2000, 0, 256, 256); // RGB bytes
 * } finally {
 *   slide.close();
 * }
 * ```
 */
export class Slide implements SlideSource {
  /** The path the slide was opened from. */
  readonly path: string;
  /** OpenSlide's vendor/format name (e.g. `"generic-tiff"`, `"aperio"`). */
  readonly vendor: string;
  /** Number of pyramid levels. */
  readonly levelCount: number;
  /** `[width, height]` of each level. */
  readonly levelDimensions: readonly (readonly [number, number])[];
  /** Downsample of each level relative to level 0. */
  readonly levelDownsamples: readonly number[];
  /** All OpenSlide properties. */
  readonly properties: Readonly<Record<string, string>>;
  /** Background colour for transparent areas (`openslide.background-color`, else white). */
  readonly backgroundColor: Rgb;
  /** Names of associated images (label, macro, thumbnail), if any. */
  readonly associatedImages: readonly string[];
  #handle: Deno.PointerValue;
  #box: { handle: Deno.PointerValue };
  #pending = 0;
  #closeRequested = false;

  private constructor(path: string, handle: Deno.PointerValue, vendor: string) {
    this.path = path;
    this.#handle = handle;
    this.#box = { handle };
    this.vendor = vendor;
    const os = openslide();
    try {
      this.levelCount = os.openslide_get_level_count(handle);
      this.#checkError("reading the level count");
      const w = new BigInt64Array(1), h = new BigInt64Array(1);
      const dims: [number, number][] = [];
      const ds: number[] = [];
      for (let l = 0; l < this.levelCount; l++) {
        os.openslide_get_level_dimensions(handle, l, w, h);
        dims.push([Number(w[0]), Number(h[0])]);
        ds.push(os.openslide_get_level_downsample(handle, l));
      }
      this.levelDimensions = dims;
      this.levelDownsamples = ds;
      const props: Record<string, string> = {};
      for (const name of cStringArray(os.openslide_get_property_names(handle))) {
        props[name] = cString(os.openslide_get_property_value(handle, toCString(name))) ?? "";
      }
      this.properties = props;
      this.backgroundColor = parseHexColor(props["openslide.background-color"]) ?? [255, 255, 255];
      this.associatedImages = cStringArray(os.openslide_get_associated_image_names(handle));
      this.#checkError("reading the slide metadata");
    } catch (e) {
      os.openslide_close(handle);
      this.#handle = null;
      throw e;
    }
    finalizer.register(this, this.#box, this.#box);
    if (this.levelCount <= 0) {
      this.close();
      throw new Error(`Slide.open(): "${path}" has no pyramid levels`);
    }
  }

  /**
   * Opens a slide; throws a clear error for a missing file, a file OpenSlide does not recognise, or a
   * recognised but broken file (with OpenSlide's message).
   *
   * @example
   * ```ts
   * using slide = Slide.open("slide.tif");
   * console.log(slide.dimensions, slide.levelCount);
   * ```
   */
  static open(path: string): Slide {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(path);
    } catch (e) {
      throw new Error(`Slide.open(): cannot read "${path}": ${(e as Error).message}`);
    }
    if (!info.isFile) throw new Error(`Slide.open(): "${path}" is not a file`);
    const os = openslide();
    const cpath = toCString(path);
    const vendor = cString(os.openslide_detect_vendor(cpath));
    if (vendor === undefined) {
      throw new Error(
        `Slide.open(): "${path}" is not a slide OpenSlide can read (expected a pyramidal tiled TIFF, .svs, ` +
          `.ndpi, .mrxs, ...)`,
      );
    }
    const handle = os.openslide_open(cpath);
    if (handle === null) {
      throw new Error(`Slide.open(): OpenSlide could not open "${path}" (vendor ${vendor})`);
    }
    const err = cString(os.openslide_get_error(handle));
    if (err !== undefined) {
      os.openslide_close(handle);
      throw new Error(`Slide.open(): OpenSlide failed on "${path}": ${err}`);
    }
    return new Slide(path, handle, vendor);
  }

  /** Level-0 `[width, height]`. */
  get dimensions(): readonly [number, number] {
    return this.levelDimensions[0];
  }

  /** Microns per pixel at level 0 (`openslide.mpp-*`, else from the TIFF resolution), if known. */
  get mpp(): { x: number; y: number; source: "openslide" | "tiff" } | undefined {
    return mppFromProperties(this.properties);
  }

  /** Objective power (`openslide.objective-power`), if known. */
  get objectivePower(): number | undefined {
    const v = Number(this.properties["openslide.objective-power"]);
    return v > 0 ? v : undefined;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closeRequested;
  }

  /**
   * The level to read for a wanted downsample (OpenSlide's rule: the largest level not finer than asked).
   *
   * @example
   * ```ts
   * const level = slide.bestLevelForDownsample(32);
   * ```
   */
  bestLevelForDownsample(downsample: number): number {
    return bestLevelForDownsample(this.levelDownsamples, downsample);
  }

  /**
   * The same answer from the C library (`openslide_get_best_level_for_downsample`), for cross-checks.
   *
   * @example
   * ```ts
   * slide.openslideBestLevel(32) === slide.bestLevelForDownsample(32);
   * ```
   */
  openslideBestLevel(downsample: number): number {
    return openslide().openslide_get_best_level_for_downsample(this.#live("openslideBestLevel"), downsample);
  }

  #live(what: string): Deno.PointerValue {
    if (this.#closeRequested || this.#handle === null) {
      throw new Error(`Slide.${what}(): slide "${this.path}" is closed`);
    }
    return this.#handle;
  }

  #checkError(what: string): void {
    if (this.#handle === null) return;
    const err = cString(openslide().openslide_get_error(this.#handle));
    if (err !== undefined) throw new Error(`Slide: OpenSlide error while ${what} in "${this.path}": ${err}`);
  }

  #checkRegion(x: number, y: number, level: number, width: number, height: number): void {
    for (const [k, v] of Object.entries({ x, y, width, height })) {
      if (!Number.isSafeInteger(v)) throw new Error(`Slide.readRegion(): ${k} must be an integer, got ${v}`);
    }
    if (!Number.isInteger(level) || level < 0 || level >= this.levelCount) {
      throw new Error(`Slide.readRegion(): level must be in [0, ${this.levelCount - 1}], got ${level}`);
    }
    if (width <= 0 || height <= 0) {
      throw new Error(`Slide.readRegion(): size must be positive, got ${width}x${height}`);
    }
    if (width * height > MAX_REGION_PIXELS) {
      throw new Error(
        `Slide.readRegion(): ${width}x${height} exceeds ${MAX_REGION_PIXELS} pixels; read it in tiles`,
      );
    }
  }

  #convert(argb: Uint32Array, width: number, height: number, opts: ReadRegionOptions): RasterImage {
    if (opts.alpha) return { width, height, channels: 4, data: argbToRgba(argb) };
    return { width, height, channels: 3, data: argbToRgb(argb, opts.background ?? this.backgroundColor) };
  }

  /**
   * Reads a `width x height` region of `level`; `(x, y)` is the top-left corner in LEVEL-0 coordinates
   * (OpenSlide's convention). Areas outside the slide come back as the background colour. Only the tiles
   * under the region are decoded.
   *
   * @example
   * ```ts
   * const img = slide.readRegion(0, 0, slide.levelCount - 1, 512, 512); // { width, height, channels: 3, data }
   * ```
   */
  readRegion(
    x: number,
    y: number,
    level: number,
    width: number,
    height: number,
    opts: ReadRegionOptions = {},
  ): RasterImage {
    const handle = this.#live("readRegion");
    this.#checkRegion(x, y, level, width, height);
    const argb = new Uint32Array(width * height);
    openslide().openslide_read_region(
      handle,
      argb,
      BigInt(x),
      BigInt(y),
      level,
      BigInt(width),
      BigInt(height),
    );
    this.#checkError(`reading region (${x}, ${y}) level ${level} ${width}x${height}`);
    return this.#convert(argb, width, height, opts);
  }

  /**
   * {@link readRegion} on a background thread, so several slides (or regions) can be read concurrently.
   *
   * @example
   * ```ts
   * const [a, b] = await Promise.all([s1.readRegionAsync(0, 0, 0, 256, 256), s2.readRegionAsync(0, 0, 0, 256, 256)]);
   * ```
   */
  async readRegionAsync(
    x: number,
    y: number,
    level: number,
    width: number,
    height: number,
    opts: ReadRegionOptions = {},
  ): Promise<RasterImage> {
    const handle = this.#live("readRegionAsync");
    this.#checkRegion(x, y, level, width, height);
    const argb = new Uint32Array(width * height);
    this.#pending++;
    try {
      await openslide().openslide_read_region_nonblocking(
        handle,
        argb,
        BigInt(x),
        BigInt(y),
        level,
        BigInt(width),
        BigInt(height),
      );
      this.#checkError(`reading region (${x}, ${y}) level ${level} ${width}x${height}`);
    } finally {
      this.#pending--;
      if (this.#closeRequested && this.#pending === 0) this.#release();
    }
    return this.#convert(argb, width, height, opts);
  }

  /**
   * Reads a whole level as RGB (for low-resolution levels: thumbnails, tissue masks).
   *
   * @example
   * ```ts
   * const thumb = slide.readLevel(slide.levelCount - 1);
   * ```
   */
  readLevel(level: number, opts: ReadRegionOptions = {}): RasterImage {
    const [w, h] = this.levelDimensions[level] ?? [0, 0];
    return this.readRegion(0, 0, level, w, h, opts);
  }

  /**
   * Reads an associated image (e.g. `"label"`, `"macro"`, `"thumbnail"`) as RGB.
   *
   * @example
   * ```ts
   * if (slide.associatedImages.includes("label")) slide.readAssociatedImage("label");
   * ```
   */
  readAssociatedImage(name: string): RasterImage {
    const handle = this.#live("readAssociatedImage");
    if (!this.associatedImages.includes(name)) {
      throw new Error(
        `Slide.readAssociatedImage(): no image "${name}"; available: ${
          JSON.stringify(this.associatedImages)
        }`,
      );
    }
    const os = openslide();
    const w = new BigInt64Array(1), h = new BigInt64Array(1);
    const cname = toCString(name);
    os.openslide_get_associated_image_dimensions(handle, cname, w, h);
    const width = Number(w[0]), height = Number(h[0]);
    const argb = new Uint32Array(width * height);
    os.openslide_read_associated_image(handle, cname, argb);
    this.#checkError(`reading associated image "${name}"`);
    return this.#convert(argb, width, height, {});
  }

  #release(): void {
    if (this.#handle !== null) {
      finalizer.unregister(this.#box);
      this.#box.handle = null;
      openslide().openslide_close(this.#handle);
      this.#handle = null;
    }
  }

  /**
   * Closes the slide (idempotent). Reads still running on background threads finish first.
   *
   * @example
   * ```ts
   * slide.close();
   * ```
   */
  close(): void {
    this.#closeRequested = true;
    if (this.#pending === 0) this.#release();
  }

  /** Closes the slide at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens a slide, runs `fn`, and closes the slide even when `fn` throws.
 *
 * @example
 * ```ts
 * const dims = await withSlide("slide.tif", (s) => s.dimensions);
 * ```
 */
export async function withSlide<T>(path: string, fn: (slide: Slide) => T | Promise<T>): Promise<T> {
  const slide = Slide.open(path);
  try {
    return await fn(slide);
  } finally {
    slide.close();
  }
}
