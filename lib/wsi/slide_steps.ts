/**
 * The whole-slide steps as units of work for one slide, each writing its outputs to a shared folder keyed by
 * the step and every setting that shapes them: `<out>/<step>/<key>/<slideId>.*`, the record
 * `<slideId>.json` written last (atomically, temp file + rename). The one implementation behind
 * `deno task wsi` (one process, a static shard, or a BullMQ worker) and notebooks.
 *
 * - `segment`: tissue mask → `<slideId>.mask.png` and the record (tissue fraction, components, holes).
 * - `extract`: patch grid (and labels, PNGs) → `<slideId>.coords` (see {@link extractPatches}) and the record.
 * - `infer`: CNN-guided inference over the `extract` output (redone first when missing) → the record with
 *   the slide score and every patch score.
 *
 * A record counts as done only when its key, the slide file (size, mtime) and the annotation content match,
 * so a retried or repeated job resumes (skips) or overwrites cleanly, and two workers writing the same slide
 * write the same bytes, each by an atomic rename.
 *
 * @module
 */
import { hostname } from "node:os";
import { join } from "node:path";
import { pathExists, writeFileAtomic } from "../util/mod.ts";
import type { SlideAnnotations } from "./annotations.ts";
import {
  annotationsHash,
  encodePng,
  type ExportSettings,
  exportSettings,
  extractPatches,
  sha256Hex,
  slideFingerprint,
  slideIdOf,
} from "./extract_patches.ts";
import { readCoordsFile } from "./coords_file.ts";
import { Slide } from "./slide.ts";
import { segmentTissue, type TissueParams, tissueParams, type TissuePreset } from "./tissue_mask.ts";

/** The steps, in pipeline order. */
export const SLIDE_STEPS = ["segment", "extract", "infer"] as const;
/** One of {@link SLIDE_STEPS}. */
export type SlideStep = typeof SLIDE_STEPS[number];

/** Everything that shapes the outputs of the steps (what the command-line flags set). */
export interface SlideStepSettings {
  /** Tissue preset (default `"default"`). */
  tissue?: TissuePreset;
  /** Overrides of the preset's parameters. */
  tissueOverrides?: Partial<TissueParams>;
  /** Pyramid level of the patches (default 0). */
  level?: number;
  /** Patch side at `level` (default 256). */
  patchSize?: number;
  /** Grid step (default `patchSize`). */
  stride?: number;
  /** Minimum tissue fraction of a kept patch (default 0.5). */
  minTissue?: number;
  /** Also write patch PNGs (default false). */
  savePatches?: boolean;
  /**
   * Folder of ASAP XML annotations, `<dir>/<slideId>.xml`; a slide without one is labelled all normal.
   * Absent: patches are unlabelled.
   */
  annotationsDir?: string;
  /** Tumour fraction of a tumour patch (default 0.5). */
  labelThreshold?: number;
  /** Scoring CNN: a registry name (created with `seed`, 2 classes) or a `.safetensors` model file. */
  cnn?: string;
  /** Classifier (the ViT): a registry name or a `.safetensors` model file. */
  vit?: string;
  /** Seed of registry models (default 0). */
  seed?: number;
  /** Low-resolution side for the CNN (default 32). */
  lowSize?: number;
  /** High-resolution side for the classifier (default 64). */
  highSize?: number;
  /** Patches classified: a count, or a fraction (< 1) of all patches (default 0.1). */
  topK?: number;
  /** Images per model call (default 32). */
  batchSize?: number;
  /** Slide score from the top-k probabilities (default `"max"`). */
  aggregate?: "max" | "mean" | "noisyOr";
}

/** Defaults of the model settings of `infer`. */
export const INFER_DEFAULTS = {
  cnn: "resnet18_test",
  vit: "vit_test",
  seed: 0,
  lowSize: 32,
  highSize: 64,
  topK: 0.1,
  batchSize: 32,
  aggregate: "max",
} as const;

/** The resolved settings of one step: what its key is the hash of (recorded as `settings.json`). */
export interface ResolvedStepSettings {
  step: SlideStep;
  tissue: { preset: string; params: TissueParams };
  /** Export settings without the per-slide annotation hash (`annotations` says whether labelled). */
  extract?: Omit<ExportSettings, "annotations"> & { labelled: boolean };
  /** Model settings; model files by content hash. */
  infer?: {
    cnn: string;
    vit: string;
    seed: number;
    lowSize: number;
    highSize: number;
    topK: number;
    batchSize: number;
    aggregate: string;
  };
}

async function modelId(spec: string): Promise<string> {
  if (!spec.endsWith(".safetensors")) return spec;
  try {
    return `file:${sha256Hex(await Deno.readFile(spec))}`;
  } catch (e) {
    throw new Error(`model file "${spec}" cannot be read: ${(e as Error).message}`);
  }
}

/**
 * Resolves and checks the settings of `step` (only those that shape its outputs).
 *
 * @example
 * ```ts
 * const r = await resolveStepSettings("extract", { patchSize: 256, tissue: "default" });
 * stepKey(r); // "3f9a0c1d2e4b"
 * ```
 */
export async function resolveStepSettings(
  step: SlideStep,
  s: SlideStepSettings,
): Promise<ResolvedStepSettings> {
  if (!(SLIDE_STEPS as readonly string[]).includes(step)) {
    throw new Error(`resolveStepSettings(): step must be one of ${SLIDE_STEPS.join(", ")}, got "${step}"`);
  }
  const params = tissueParams(s.tissue ?? "default", s.tissueOverrides ?? {});
  const out: ResolvedStepSettings = { step, tissue: { preset: s.tissue ?? "default", params } };
  if (step === "segment") return out;
  const { annotations: _, ...ex } = await exportSettings({
    tissue: s.tissue,
    tissueOverrides: s.tissueOverrides,
    level: s.level,
    patchSize: s.patchSize,
    stride: s.stride,
    minTissue: s.minTissue,
    savePatches: s.savePatches,
    labelThreshold: s.labelThreshold,
  });
  out.extract = { ...ex, labelled: s.annotationsDir !== undefined };
  if (step === "extract") return out;
  const d = INFER_DEFAULTS;
  const topK = s.topK ?? d.topK;
  if (!(topK > 0)) throw new Error(`topK must be > 0 (a count or a fraction), got ${topK}`);
  const aggregate = s.aggregate ?? d.aggregate;
  if (!["max", "mean", "noisyOr"].includes(aggregate)) {
    throw new Error(`aggregate must be "max", "mean" or "noisyOr", got "${aggregate}"`);
  }
  out.infer = {
    cnn: await modelId(s.cnn ?? d.cnn),
    vit: await modelId(s.vit ?? d.vit),
    seed: s.seed ?? d.seed,
    lowSize: s.lowSize ?? d.lowSize,
    highSize: s.highSize ?? d.highSize,
    topK,
    batchSize: s.batchSize ?? d.batchSize,
    aggregate,
  };
  return out;
}

/**
 * The 12-hex-digit key of resolved settings: the output folder `<out>/<step>/<key>/`.
 *
 * @example
 * ```ts
 * stepKey(await resolveStepSettings("segment", {})); // same settings, same key, on every machine
 * ```
 */
export function stepKey(r: ResolvedStepSettings): string {
  return sha256Hex(JSON.stringify(r)).slice(0, 12);
}

/**
 * Output folder of a step's settings under the shared folder `out`.
 *
 * @example
 * ```ts
 * stepDir("/shared/wsi", await resolveStepSettings("infer", {})); // "/shared/wsi/infer/<key>"
 * ```
 */
export function stepDir(out: string, r: ResolvedStepSettings): string {
  return join(out, r.step, stepKey(r));
}

/** The record `<slideId>.json` a step writes last for a slide. */
export interface SlideStepRecord {
  step: SlideStep;
  key: string;
  slideId: string;
  slidePath: string;
  /** Slide file size and mtime when processed. */
  source: { bytes: number; mtimeMs: number | null };
  /** SHA-256 of the slide's annotation content (`null`: unlabelled). */
  annotations: string | null;
  /** The step's result (see {@link runSlideStep}). */
  result: Record<string, unknown>;
  /** Who wrote it and how long it took (not compared between runs). */
  run: { host: string; pid: number; seconds: number; finishedAt: string; backend?: string };
}

/** A unit of work: one step of one slide. */
export interface SlideStepJob {
  step: SlideStep;
  slidePath: string;
  /** Default: the file name without its extension. */
  slideId?: string;
  settings: SlideStepSettings;
  /** The shared output folder. */
  out: string;
}

/** Options of {@link runSlideStep}. */
export interface RunSlideStepOptions {
  /** Progress of the current slide: stage name, done, total. */
  onProgress?: (stage: string, done: number, total: number) => void;
  /** Redo even when a matching record exists (default false). */
  overwrite?: boolean;
  /** Show progress bars (default false). */
  progress?: boolean;
}

function annotationsPathOf(s: SlideStepSettings, slideId: string): string | undefined {
  return s.annotationsDir === undefined ? undefined : join(s.annotationsDir, `${slideId}.xml`);
}

async function slideAnnotations(
  s: SlideStepSettings,
  slideId: string,
): Promise<string | SlideAnnotations | undefined> {
  const p = annotationsPathOf(s, slideId);
  if (p === undefined) return undefined;
  return (await pathExists(p)) ? p : { tumour: [], exclusion: [], other: [] };
}

/**
 * The path of a slide's record for a step, and whether it is done (a record with the same key, slide file
 * and annotation content).
 *
 * @example
 * ```ts
 * const { done, recordPath } = await slideStepStatus({ step: "extract", slidePath: "a.tif", settings: {}, out: "/shared" });
 * ```
 */
export async function slideStepStatus(
  job: SlideStepJob,
): Promise<{ done: boolean; recordPath: string; key: string; record?: SlideStepRecord }> {
  const r = await resolveStepSettings(job.step, job.settings);
  const slideId = job.slideId ?? slideIdOf(job.slidePath);
  if (slideId === "settings" || !slideId || slideId.includes("/")) {
    throw new Error(`slide id "${slideId}" of "${job.slidePath}" is reserved or not a file name`);
  }
  const recordPath = join(stepDir(job.out, r), `${slideId}.json`);
  const key = stepKey(r);
  let record: SlideStepRecord;
  try {
    record = JSON.parse(await Deno.readTextFile(recordPath));
  } catch {
    return { done: false, recordPath, key };
  }
  let source, ann;
  try {
    source = await slideFingerprint(job.slidePath);
    ann = job.step === "segment"
      ? null
      : await annotationsHash(await slideAnnotations(job.settings, slideId));
  } catch {
    return { done: false, recordPath, key, record };
  }
  const done = record.key === key && JSON.stringify(record.source) === JSON.stringify(source) &&
    record.annotations === ann;
  return { done, recordPath, key, record };
}

// Models of `infer`, cached per process (a worker loads them once).
type Models = import("./slide_inference.ts").SlidePatchModels;
const modelCache = new Map<string, Promise<Models>>();

async function loadModels(
  r: NonNullable<ResolvedStepSettings["infer"]>,
  s: SlideStepSettings,
): Promise<Models> {
  const id = JSON.stringify(r);
  let m = modelCache.get(id);
  if (!m) {
    m = (async () => {
      const { currentBackend, initBackend } = await import("../backend/mod.ts");
      if (!currentBackend()) await initBackend(undefined, { log: false });
      const tf = await import("@tensorflow/tfjs-core");
      const { createModel } = await import("../models/mod.ts");
      const { loadModel } = await import("../weights/mod.ts");
      const make = async (spec: string, imgSize: number) =>
        spec.endsWith(".safetensors")
          ? await loadModel(spec)
          : createModel(spec, { numClasses: 2, imgSize }, { seed: r.seed });
      const cnn = await make(s.cnn ?? INFER_DEFAULTS.cnn, r.lowSize);
      const vit = await make(s.vit ?? INFER_DEFAULTS.vit, r.highSize);
      const prob = (model: typeof cnn) => (x: import("@tensorflow/tfjs-core").Tensor4D) =>
        tf.tidy(() => tf.softmax(model.forward(x).logits).slice([0, 1], [-1, 1]).reshape([-1]));
      return { score: prob(cnn), classify: prob(vit) };
    })();
    modelCache.set(id, m);
    m.catch(() => modelCache.delete(id));
  }
  return await m;
}

/**
 * Runs one step of one slide unless a matching record exists (then returns it with `skipped: true`).
 * Throws with the slide's path in the message when the slide cannot be processed.
 *
 * @example
 * ```ts
 * const { record } = await runSlideStep({ step: "extract", slidePath: "tumor_001.tif", out: "/shared/wsi",
 *   settings: { patchSize: 256, annotationsDir: "annotations" } });
 * record.result.patches;
 * ```
 */
export async function runSlideStep(
  job: SlideStepJob,
  opts: RunSlideStepOptions = {},
): Promise<{ record: SlideStepRecord; skipped: boolean; recordPath: string }> {
  const t0 = performance.now();
  const st = await slideStepStatus(job);
  if (st.done && !opts.overwrite) return { record: st.record!, skipped: true, recordPath: st.recordPath };
  const s = job.settings;
  const r = await resolveStepSettings(job.step, s);
  const dir = stepDir(job.out, r);
  const slideId = job.slideId ?? slideIdOf(job.slidePath);
  let source;
  try {
    source = await slideFingerprint(job.slidePath);
  } catch (e) {
    throw new Error(`cannot read slide "${job.slidePath}": ${(e as Error).message}`);
  }
  await writeFileAtomic(join(dir, "settings.json"), JSON.stringify(r, null, 2) + "\n");
  const progress = opts.onProgress ?? (() => {});
  let result: Record<string, unknown>;
  let annotations: string | null = null;
  let backend: string | undefined;
  if (job.step === "segment") {
    const slide = Slide.open(job.slidePath);
    try {
      progress("segment", 0, 1);
      const m = segmentTissue(slide, r.tissue.params);
      const png = await encodePng({
        width: m.width,
        height: m.height,
        channels: 1,
        data: m.data.map((v) => v * 255),
      });
      await writeFileAtomic(join(dir, `${slideId}.mask.png`), png);
      progress("segment", 1, 1);
      result = {
        maskFile: `${slideId}.mask.png`,
        maskSize: [m.width, m.height],
        scale: m.scale,
        slideSize: m.slideSize,
        tissueFraction: m.tissueFraction,
        components: m.components,
        holes: m.holes,
        threshold: m.threshold,
      };
    } finally {
      slide.close();
    }
  } else {
    const ann = await slideAnnotations(s, slideId);
    annotations = await annotationsHash(ann);
    const extractDir = job.step === "extract"
      ? dir
      : stepDir(job.out, await resolveStepSettings("extract", s));
    const ex = await extractPatches(job.slidePath, {
      outDir: extractDir,
      slideId,
      tissue: s.tissue,
      tissueOverrides: s.tissueOverrides,
      level: s.level,
      patchSize: s.patchSize,
      stride: s.stride,
      minTissue: s.minTissue,
      savePatches: s.savePatches,
      annotations: ann,
      labelThreshold: s.labelThreshold,
      overwrite: job.step === "extract" && opts.overwrite,
      progress: opts.progress ?? false,
      onProgress: (d, n) => progress("extract", d, n),
    });
    const labels = ex.coords.labels;
    const tumourPatches = labels ? labels.reduce((a, b) => a + b, 0) : null;
    const tissueFraction = (ex.coords.meta?.tissueFraction as number | undefined) ?? null;
    if (job.step === "extract") {
      result = {
        coordsFile: `${slideId}.coords`,
        patches: ex.count,
        tumourPatches,
        tissueFraction,
        pngsWritten: ex.patchesWritten,
      };
    } else {
      const inf = r.infer!;
      const models = await loadModels(inf, s);
      const { inferSlide } = await import("./slide_inference.ts");
      const tf = await import("@tensorflow/tfjs-core");
      backend = tf.getBackend();
      const coords = ex.resumed ? await readCoordsFile(ex.coordsPath) : ex.coords;
      const slide = Slide.open(job.slidePath);
      try {
        const out = await inferSlide(slide, coords, models, {
          lowSize: inf.lowSize,
          highSize: inf.highSize,
          topK: inf.topK,
          batchSize: inf.batchSize,
          aggregate: inf.aggregate as "max" | "mean" | "noisyOr",
          progress: opts.progress ?? false,
          onProgress: (stage, d, n) => progress(stage, d, n),
        });
        const selectedTumour = labels ? Array.from(out.selected).filter((i) => labels[i] === 1).length : null;
        result = {
          coordsFile: join(
            "..",
            "..",
            "extract",
            stepKey(await resolveStepSettings("extract", s)),
            `${slideId}.coords`,
          ),
          patches: coords.x.length,
          tumourPatches,
          label: tumourPatches === null ? null : tumourPatches > 0 ? 1 : 0,
          slideScore: out.slideScore,
          selected: Array.from(out.selected),
          selectedTumour,
          probs: Array.from(out.probs),
          scores: Array.from(out.scores),
          seconds: out.seconds,
        };
      } finally {
        slide.close();
      }
    }
  }
  const record: SlideStepRecord = {
    step: job.step,
    key: stepKey(r),
    slideId,
    slidePath: job.slidePath,
    source,
    annotations,
    result,
    run: {
      host: hostname(),
      pid: Deno.pid,
      seconds: (performance.now() - t0) / 1000,
      finishedAt: new Date().toISOString(),
      ...(backend ? { backend } : {}),
    },
  };
  await writeFileAtomic(st.recordPath, JSON.stringify(record) + "\n");
  return { record, skipped: false, recordPath: st.recordPath };
}

/**
 * Reads every record of one step's settings (`<out>/<step>/<key>/*.json` but `settings.json`), sorted by
 * slide id; unreadable records are returned in `bad` with the reason.
 *
 * @example
 * ```ts
 * const { records } = await readStepRecords("/shared/wsi/infer/3f9a0c1d2e4b");
 * ```
 */
export async function readStepRecords(
  dir: string,
): Promise<{ records: SlideStepRecord[]; bad: { file: string; error: string }[] }> {
  const records: SlideStepRecord[] = [], bad: { file: string; error: string }[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    throw new Error(`readStepRecords(): cannot read "${dir}": ${(e as Error).message}`);
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".json") || e.name === "settings.json") continue;
    const file = join(dir, e.name);
    try {
      const rec = JSON.parse(await Deno.readTextFile(file)) as SlideStepRecord;
      if (typeof rec.slideId !== "string" || typeof rec.result !== "object") {
        throw new Error("not a step record");
      }
      records.push(rec);
    } catch (err) {
      bad.push({ file, error: (err as Error).message });
    }
  }
  records.sort((a, b) => (a.slideId < b.slideId ? -1 : a.slideId > b.slideId ? 1 : 0));
  return { records, bad };
}
