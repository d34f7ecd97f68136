/**
 * Patch extraction for one or many slides: tissue mask → patch grid → coordinates file (and optional
 * patch PNGs), with a progress bar per slide, per-slide resume and a bounded number of concurrent slides.
 *
 * @module
 */
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
  /** Output folder: `<outDir>/<slideId>.coords` and, with `savePatches`, `<outDir>/<slideId>/<x>_<y>.png`. */
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
  /** Re-extract even when a complete coordinates file with the same settings exists (default false). */
  overwrite?: boolean;
  /** Show a progress bar (default true). */
  progress?: boolean;
  /** Patch reads in flight per slide when saving PNGs (default 4). */
  readConcurrency?: number;
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

function settingsOf(opts: ExtractOptions, params: TissueParams): Record<string, unknown> {
  return {
    level: opts.level ?? 0,
    patchSize: opts.patchSize ?? 256,
    stride: opts.stride ?? opts.patchSize ?? 256,
    minTissue: opts.minTissue ?? 0.5,
    tissueParams: params,
    labelled: opts.annotations !== undefined,
    labelThreshold: opts.labelThreshold ?? 0.5,
  };
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
 * Extracts the patch grid of one slide. When `<outDir>/<slideId>.coords` already exists with the same
 * settings the slide is skipped (`resumed: true`); the coordinates file is written last (atomically), so an
 * interrupted slide is redone, keeping the PNGs already written.
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
  const params = tissueParams(opts.tissue ?? "default", opts.tissueOverrides ?? {});
  const settings = settingsOf(opts, params);
  const coordsPath = join(opts.outDir, `${slideId}.coords`);
  if (!opts.overwrite && await pathExists(coordsPath)) {
    try {
      const prev = await readCoordsFile(coordsPath);
      if (JSON.stringify(prev.meta?.settings) === JSON.stringify(settings) && prev.meta?.complete === true) {
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
    let written = 0;
    if (opts.savePatches) {
      const dir = join(opts.outDir, slideId);
      await Deno.mkdir(dir, { recursive: true });
      let next = 0;
      const worker = async () => {
        while (next < n) {
          const i = next++;
          const file = join(dir, `${coords.x[i]}_${coords.y[i]}.png`);
          if (!(await pathExists(file))) {
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
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, opts.readConcurrency ?? 4) }, worker));
    } else bar.update(n);
    coords.meta = { ...coords.meta, settings, complete: true, tissueFraction: mask.tissueFraction };
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
