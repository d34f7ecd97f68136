/**
 * Patch extraction for one or many slides: tissue mask → patch grid → coordinates file (and optional
 * patch PNGs), with a progress bar per slide, per-slide resume and a bounded number of concurrent slides.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename, extname, join } from "node:path";
import sharp from "./_sharp.ts";
import { pathExists, Progress, writeFileAtomic } from "../util/mod.ts";
import { patchLabels, readAsapXml, type SlideAnnotations } from "./annotations.ts";
import { type PatchCoords, readCoordsFile, writeCoordsFile } from "./coords_file.ts";
import { patchGrid, type PatchGridOptions } from "./patch_grid.ts";
import { Slide } from "./slide.ts";
import {
  segmentTissue,
  type TissueMask,
  type TissueParams,
  tissueParams,
  type TissuePreset,
} from "./tissue_mask.ts";

/** Options of {@link extractPatches}. */
export interface ExtractOptions extends PatchGridOptions {
  /**
   * Output folder: `<outDir>/<slideId>.coords` and, with `savePatches`,
   * `<outDir>/<slideId>/<x>_<y>_L<level>_<size>px.png` (see {@link patchPngName}).
   */
  outDir: string;
  /** Slide identifier (default: file name without extension). */
  slideId?: string;
  /** Tissue preset or parameters (default `"default"`). */
  tissue?: TissuePreset | TissueParams;
  /** Overrides of the tissue parameters. */
  tissueOverrides?: Partial<TissueParams>;
  /** Also write every patch as a PNG (default false). */
  savePatches?: boolean;
  /** ASAP XML path or parsed annotations: patch labels (1 = tumour fraction >= `labelThreshold`). */
  annotations?: string | SlideAnnotations;
  /** Tumour fraction for label 1 (default 0.5). */
  labelThreshold?: number;
  /**
   * Re-extract even when a complete coordinates file with the same settings exists, rewriting every PNG
   * (default false: PNGs of the same name are kept; their name carries level and size).
   */
  overwrite?: boolean;
  /** Show a progress bar (default true). */
  progress?: boolean;
  /** Patch reads in flight per slide when saving PNGs (default 4). */
  readConcurrency?: number;
  /** Called as patches are done (`done` of `total`), e.g. to report progress to a job queue. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link extractPatches} did for one slide. */
export interface ExtractResult {
  slideId: string;
  slidePath: string;
  /** The coordinates file. */
  coordsPath: string;
  /** Patches kept. */
  count: number;
  /** True when a complete earlier result was reused. */
  resumed: boolean;
  /** PNGs written now (existing ones are kept on resume). */
  patchesWritten: number;
  /** Wall-clock seconds. */
  seconds: number;
  /** The tissue mask (absent when resumed). */
  mask?: TissueMask;
  /** The coordinates. */
  coords: PatchCoords;
}

/**
 * Default slide id: the file name without its extension.
 *
 * @example
 * ```ts
 * slideIdOf("/data/camelyon16/tumor_001.tif"); // "tumor_001"
 * ```
 */
export function slideIdOf(path: string): string {
  const b = basename(path);
  return b.slice(0, b.length - extname(b).length) || b;
}

/**
 * Hex SHA-256 of bytes or text (used to key exports by the content of their inputs).
 *
 * @example
 * ```ts
 * sha256Hex(await Deno.readFile("tumor_001.xml")).slice(0, 16);
 * ```
 */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * Content hash of what an annotation source contributes to patch labels: the file's bytes for a path, the
 * tumour and exclusion polygons for parsed annotations; `null` without annotations. Throws naming the file
 * when a path cannot be read.
 *
 * @example
 * ```ts
 * await annotationsHash("data/camelyon16/annotations/tumor_001.xml"); // "9f2c…" (64 hex digits)
 * ```
 */
export async function annotationsHash(ann: string | SlideAnnotations | undefined): Promise<string | null> {
  if (ann === undefined) return null;
  if (typeof ann === "string") {
    try {
      return sha256Hex(await Deno.readFile(ann));
    } catch (e) {
      throw new Error(`annotationsHash(): cannot read annotation file "${ann}": ${(e as Error).message}`);
    }
  }
  const poly = (p: { group: string; points: ArrayLike<number> }) => [p.group, Array.from(p.points)];
  return sha256Hex(JSON.stringify({ tumour: ann.tumour.map(poly), exclusion: ann.exclusion.map(poly) }));
}

/** Everything that shapes an export of {@link extractPatches}; two exports are interchangeable iff equal. */
export interface ExportSettings {
  level: number;
  patchSize: number;
  stride: number;
  minTissue: number;
  /** The preset name, or `"custom"` for explicit parameters. */
  tissuePreset: string;
  /** The resolved parameters (preset plus overrides). */
  tissueParams: TissueParams;
  savePatches: boolean;
  /** SHA-256 of the annotation content (see {@link annotationsHash}), `null` when unlabelled. */
  annotations: string | null;
  labelThreshold: number;
}

/**
 * The settings that key an export: patch size, level, stride, minimum tissue, tissue preset and
 * parameters, whether PNGs are saved, the annotation content hash and the label threshold.
 *
 * @example
 * ```ts
 * const s = await exportSettings({ outDir: "out", patchSize: 256, annotations: "tumor_001.xml" });
 * s.annotations; // sha-256 of the XML file
 * ```
 */
export async function exportSettings(opts: Omit<ExtractOptions, "outDir">): Promise<ExportSettings> {
  const params = tissueParams(opts.tissue ?? "default", opts.tissueOverrides ?? {});
  const preset = typeof opts.tissue === "object" ? "custom" : (opts.tissue ?? "default");
  return {
    level: opts.level ?? 0,
    patchSize: opts.patchSize ?? 256,
    stride: opts.stride ?? opts.patchSize ?? 256,
    minTissue: opts.minTissue ?? 0.5,
    tissuePreset: preset,
    tissueParams: params,
    savePatches: opts.savePatches ?? false,
    annotations: await annotationsHash(opts.annotations),
    labelThreshold: opts.labelThreshold ?? 0.5,
  };
}

/**
 * File name of one saved patch: level-0 corner, level and size, so exports at another level or size never
 * reuse it (`<x>_<y>_L<level>_<size>px.png`).
 *
 * @example
 * ```ts
 * patchPngName(1024, 2048, 1, 256); // "1024_2048_L1_256px.png"
 * ```
 */
export function patchPngName(x: number, y: number, level: number, patchSize: number): string {
  return `${x}_${y}_L${level}_${patchSize}px.png`;
}

/**
 * Size and modification time of a slide file: stored with an export, so a replaced slide is re-extracted.
 *
 * @example
 * ```ts
 * await slideFingerprint("tumor_001.tif"); // { bytes: 1234567, mtimeMs: 1767225600000 }
 * ```
 */
export async function slideFingerprint(path: string): Promise<{ bytes: number; mtimeMs: number | null }> {
  const st = await Deno.stat(path);
  return { bytes: st.size, mtimeMs: st.mtime?.getTime() ?? null };
}

/**
 * Encodes an RGB image as PNG bytes with sharp.
 *
 * @example
 * ```ts
 * const png = await encodePng(slide.readRegion(0, 0, 0, 256, 256));
 * ```
 */
export async function encodePng(
  img: { width: number; height: number; channels: 1 | 3 | 4; data: Uint8Array },
) {
  const buf = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
    .png({ compressionLevel: 3 })
    .toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * Extracts the patch grid of one slide. When `<outDir>/<slideId>.coords` already exists, complete, with the
 * same {@link exportSettings} and the same slide file (size and mtime), the slide is skipped
 * (`resumed: true`); the coordinates file is written last (atomically), so an interrupted slide is redone,
 * keeping the PNGs already written (all of them are rewritten with `overwrite`).
 *
 * @example
 * ```ts
 * const r = await extractPatches("tumor_001.tif", { outDir: "data/patches", patchSize: 256, level: 0 });
 * console.log(r.count, r.coordsPath);
 * ```
 */
export async function extractPatches(slidePath: string, opts: ExtractOptions): Promise<ExtractResult> {
  const t0 = performance.now();
  const slideId = opts.slideId ?? slideIdOf(slidePath);
  const settings = await exportSettings(opts);
  const params = settings.tissueParams;
  const coordsPath = join(opts.outDir, `${slideId}.coords`);
  let source: { bytes: number; mtimeMs: number | null } | undefined;
  try {
    source = await slideFingerprint(slidePath);
  } catch { /* Slide.open() below names the missing file */ }
  if (!opts.overwrite && source && await pathExists(coordsPath)) {
    try {
      const prev = await readCoordsFile(coordsPath);
      if (
        JSON.stringify(prev.meta?.settings) === JSON.stringify(settings) && prev.meta?.complete === true &&
        JSON.stringify(prev.meta?.source) === JSON.stringify(source)
      ) {
        return {
          slideId,
          slidePath,
          coordsPath,
          count: prev.x.length,
          resumed: true,
          patchesWritten: 0,
          seconds: (performance.now() - t0) / 1000,
          coords: prev,
        };
      }
    } catch { /* unreadable or older settings: redo */ }
  }
  const slide = Slide.open(slidePath);
  try {
    const mask = segmentTissue(slide, params);
    const coords = patchGrid(mask, slide.levelDownsamples, opts, slideId);
    coords.slidePath = slidePath;
    const n = coords.x.length;
    if (opts.annotations !== undefined) {
      const ann = typeof opts.annotations === "string"
        ? await readAsapXml(opts.annotations)
        : opts.annotations;
      coords.labels = patchLabels(ann, coords.x, coords.y, coords.patchSize * coords.downsample, {
        threshold: opts.labelThreshold ?? 0.5,
      });
    }
    const bar = new Progress(n, { label: slideId, unit: "patch", silent: opts.progress === false });
    let written = 0, doneCount = 0;
    if (opts.savePatches) {
      const dir = join(opts.outDir, slideId);
      await Deno.mkdir(dir, { recursive: true });
      let next = 0;
      const worker = async () => {
        while (next < n) {
          const i = next++;
          const file = join(dir, patchPngName(coords.x[i], coords.y[i], coords.level, coords.patchSize));
          if (opts.overwrite || !(await pathExists(file))) {
            const img = await slide.readRegionAsync(
              coords.x[i],
              coords.y[i],
              coords.level,
              coords.patchSize,
              coords.patchSize,
            );
            await writeFileAtomic(file, await encodePng(img));
            written++;
          }
          bar.increment();
          opts.onProgress?.(++doneCount, n);
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, opts.readConcurrency ?? 4) }, worker));
    } else {
      bar.update(n);
      opts.onProgress?.(n, n);
    }
    coords.meta = { ...coords.meta, settings, source, complete: true, tissueFraction: mask.tissueFraction };
    await writeCoordsFile(coordsPath, coords);
    await bar.stop({ kept: n });
    return {
      slideId,
      slidePath,
      coordsPath,
      count: n,
      resumed: false,
      patchesWritten: written,
      seconds: (performance.now() - t0) / 1000,
      mask,
      coords,
    };
  } finally {
    slide.close();
  }
}

/**
 * Runs `fn` over `items` with at most `limit` in flight; results keep the input order.
 *
 * @example
 * ```ts
 * const sizes = await mapConcurrent(paths, 2, async (p) => (await Deno.stat(p)).size);
 * ```
 */
export async function mapConcurrent<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new Error(`mapConcurrent(): limit must be >= 1, got ${limit}`);
  }
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** One slide for {@link extractPatchesMany}: a path, or a path with its own id and annotations. */
export type SlideJob = string | { path: string; slideId?: string; annotations?: string | SlideAnnotations };

/**
 * Extracts several slides with at most `workers` slides in flight (default 2). A failing slide does not
 * stop the others: its error is returned in `failed`.
 *
 * @example
 * ```ts
 * const { done, failed } = await extractPatchesMany(["a.tif", "b.tif"], { outDir: "data/patches" }, 2);
 * ```
 */
export async function extractPatchesMany(
  slides: readonly SlideJob[],
  opts: ExtractOptions,
  workers = 2,
): Promise<{ done: ExtractResult[]; failed: { slidePath: string; error: string }[] }> {
  const done: ExtractResult[] = [], failed: { slidePath: string; error: string }[] = [];
  await mapConcurrent(slides, workers, async (job) => {
    const j = typeof job === "string" ? { path: job } : job;
    try {
      done.push(
        await extractPatches(j.path, {
          ...opts,
          slideId: j.slideId ?? slideIdOf(j.path),
          annotations: j.annotations ?? opts.annotations,
        }),
      );
    } catch (e) {
      failed.push({ slidePath: j.path, error: (e as Error).message });
    }
  });
  return { done, failed };
}
