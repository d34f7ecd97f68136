/**
 * The study the notebooks run, declared once: which runs exist, where they live, and how each run's
 * test metrics and measured speed are recorded (`metrics.json` beside the run's `result.json`) so that
 * the comparison notebook can assemble the table without re-running anything.
 *
 * Design of the comparison (every pruned variant gets the same budget from the same starting point):
 * the ResNet18 and the ViT are trained from scratch; every pruned ViT (random, attention, and the CNN-guided
 * hybrid) starts from the trained ViT's weights and is fine-tuned for `finetuneEpochs` with its selection in
 * the loop. The hybrid's CNN scorer is pre-trained once (stage 1, at the main keep ratio) and reused, frozen,
 * at the other keep ratios. Strategies are also evaluated on the unpruned ViT without any fine-tuning.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { CIFAR10_ARCHIVE, type Dataset, type DatasetName, findCifar10 } from "../data/mod.ts";
import { createModelFromConfig, type Model } from "../models/mod.ts";
import { assignState, loadCheckpoint } from "../train/mod.ts";
import { forwardRunner, measureLatency, measureMemory, measureThroughput } from "../metrics/mod.ts";
import { createStrategy, singleStage, type StrategyName, vitOf } from "../pruning/mod.ts";
import { classificationFields, type ResultRow, tokenFields } from "../report/mod.ts";
import { profileFromEnv, type ProfileName } from "../profile.ts";
import { pathExistsSync, writeFileAtomic } from "../util/mod.ts";
import { checkRunEvalSet, evaluateStrategy, initFromRun, type StrategyEval } from "./mod.ts";

/** What the study runs for one profile and dataset. */
export interface StudyPlan {
  profile: ProfileName;
  /**
   * Dataset of the main comparison, never `auto`: an `auto` request resolves when the plan is made
   * (CIFAR-10 when its files or archive are in `data/cifar-10`, else Fashion-MNIST), so the run folders,
   * named after it, never mix two datasets.
   */
  dataset: Exclude<DatasetName, "auto">;
  seed: number;
  /** Keep ratios of the sweep (fractions of patch tokens). */
  keepRatios: number[];
  /** Keep ratio of the headline hybrid (and of its stage-1 CNN). */
  mainKeep: number;
  /** Fine-tuning epochs of every pruned variant, from the trained ViT. */
  finetuneEpochs: number;
  /** Control strategies compared with the CNN at the same keep ratios. */
  controls: StrategyName[];
  /** Where the runs go (checkpoints, logs; ignored by git). */
  runsDir: string;
  /** Where each notebook's exported table, figures and run.json go (`<reportDir>/<notebook>/`). */
  reportDir: string;
  /** Batch size of the throughput and memory measurements. */
  benchBatch: number;
  /** Sizes of the selection-quality experiment on the synthetic set (ground-truth masks). */
  selection: { trainSubset: number; evalSubset: number; epochs: number; stage1Epochs: number };
}

const PLANS: Record<ProfileName, Omit<StudyPlan, "profile" | "dataset" | "runsDir" | "reportDir" | "seed">> =
  {
    quick: {
      keepRatios: [0.5],
      mainKeep: 0.5,
      finetuneEpochs: 1,
      controls: ["random", "attention"],
      benchBatch: 16,
      selection: { trainSubset: 512, evalSubset: 128, epochs: 2, stage1Epochs: 1 },
    },
    cpu: {
      keepRatios: [0.4, 0.5, 0.6, 0.8],
      mainKeep: 0.5,
      finetuneEpochs: 2,
      controls: ["random", "attention"],
      benchBatch: 64,
      selection: { trainSubset: 4000, evalSubset: 1000, epochs: 6, stage1Epochs: 2 },
    },
    full: {
      keepRatios: [0.4, 0.5, 0.6, 0.8],
      mainKeep: 0.5,
      finetuneEpochs: 30,
      controls: ["random", "attention"],
      benchBatch: 64,
      selection: { trainSubset: 20000, evalSubset: 2000, epochs: 30, stage1Epochs: 5 },
    },
  };

/**
 * The study plan of a profile (default `CNNVIT_PROFILE` or `cpu`) and dataset (default `CNNVIT_DATASET` or
 * `auto`), with optional overrides.
 *
 * @example
 * ```ts
 * const plan = studyPlan("quick");
 * plan.keepRatios; // [0.5]
 * ```
 */
export function studyPlan(
  profile: ProfileName = profileFromEnv("cpu"),
  overrides: Partial<Omit<StudyPlan, "dataset">> & { dataset?: DatasetName } = {},
): StudyPlan {
  const asked = overrides.dataset ?? (Deno.env.get("CNNVIT_DATASET") as DatasetName | undefined) ?? "auto";
  const dataset = asked === "auto" ? resolveAutoDataset() : asked;
  const base = structuredClone(PLANS[profile]);
  // `deno task compare --seeds N` runs the study once per seed (CNNVIT_SEED); seed 0 keeps the plain folders.
  const seed = overrides.seed ?? seedFromEnv();
  const suffix = seed ? `_s${seed}` : "";
  // Reports of the default (auto) study keep their short folder; runs are always keyed by dataset.
  const tag = (asked === "auto" ? profile : `${profile}_${dataset}`) + suffix;
  return {
    profile,
    seed,
    runsDir: join("results", "runs", `study_${profile}_${dataset}${suffix}`),
    reportDir: join("results", "study", tag),
    ...base,
    ...overrides,
    dataset,
  };
}

function seedFromEnv(): number {
  const raw = Deno.env.get("CNNVIT_SEED") ?? "0";
  const v = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(v) || v < 0) {
    throw new Error(`CNNVIT_SEED: "${raw}" is not an integer ≥ 0`);
  }
  return v;
}

/**
 * What the study's `auto` dataset is on this machine: `cifar10` when CIFAR-10's files (or its archive) are
 * in `<dataDir>/cifar-10`, else `fashion-mnist`. Decided from files alone, so it never downloads.
 *
 * @example
 * ```ts
 * resolveAutoDataset(); // "fashion-mnist" on a machine without CIFAR-10
 * ```
 */
export function resolveAutoDataset(dataDir = "data"): "cifar10" | "fashion-mnist" {
  const dir = join(dataDir, "cifar-10");
  return findCifar10(dir) || pathExistsSync(join(dir, CIFAR10_ARCHIVE)) ? "cifar10" : "fashion-mnist";
}

/**
 * The run folders of every variant the plan evaluates (what notebooks 01-03 write `metrics.json` into):
 * ResNet18, ViT, each control without fine-tuning and fine-tuned, and the hybrid, at every keep ratio.
 *
 * @example
 * ```ts
 * studyRunDirs(studyPlan("quick")).length; // 2 + 2 + 1 + 2 = 7
 * ```
 */
export function studyRunDirs(plan: StudyPlan): string[] {
  return [
    runDir(plan, "resnet18"),
    runDir(plan, "vit"),
    ...plan.controls.flatMap((c) => plan.keepRatios.map((k) => runDir(plan, `${c}_offshelf`, k))),
    ...plan.keepRatios.map((k) => runDir(plan, "hybrid", k)),
    ...plan.controls.flatMap((c) => plan.keepRatios.map((k) => runDir(plan, c, k))),
  ];
}

/**
 * The folder of one run of the study, e.g. `runDir(plan, "vit")` or `runDir(plan, "hybrid", 0.5)`.
 *
 * @example
 * ```ts
 * runDir(studyPlan("quick"), "random", 0.5); // "results/runs/study_quick/random_k0.5"
 * ```
 */
export function runDir(plan: StudyPlan, name: string, keep?: number): string {
  return join(plan.runsDir, keep === undefined ? name : `${name}_k${keep}`);
}

/** The row a run contributes to the comparison, plus what the notebooks plot. */
export interface RunMetrics extends ResultRow {
  /** How the variant was obtained: trained from scratch, fine-tuned with pruning, or pruned without training. */
  training: "scratch" | "finetuned" | "none";
  /** Selection quality against ground-truth masks (synthetic set only). */
  selectionPrecision?: number;
  selectionRecall?: number;
  /** The run folder the numbers come from. */
  run: string;
}

/** Options of {@link recordRunMetrics}. */
export interface RecordOptions {
  /** Display name of the model in the table ("ResNet18", "ViT", "CNN-ViT hybrid"). */
  label: string;
  strategy: StrategyName;
  keep: number;
  location?: number;
  training: RunMetrics["training"];
  /** Batch of the throughput / memory measurement. */
  benchBatch: number;
  seed?: number;
  /** Where to write `metrics.json` (default: nowhere). */
  outDir?: string;
  /**
   * The training run the model comes from (default `outDir`): recorded in the row, and `dataset` must be
   * the run's own evaluation set ({@link checkRunEvalSet}), so a table never mixes evaluation subsets.
   */
  run?: string;
  /** Short timing (2 warm-up, 5 repeats) unless more is asked. */
  repeats?: number;
  /**
   * Measure images/s, latency and memory (default true). Off for repeated seeds of a variant whose speed
   * was measured already: speed does not depend on the seed.
   */
  measureSpeed?: boolean;
  /** EViT fusion of the dropped tokens (evaluation and speed; default false). */
  fuse?: boolean;
  /** Spread top-k over `spread`×`spread` windows (evaluation and speed; default: the model's own). */
  spread?: number;
  /**
   * Hybrid with strategy `cnn`: evaluate in the budget mode (tokens per image from the selector's
   * threshold; `keep` ignored, the row's keep ratio and GMACs are the mean per image). Speed is not measured.
   */
  budget?: boolean;
  /** The budget mode's threshold (default 0; see `calibrateBudgetThreshold`). */
  budgetThreshold?: number;
}

/**
 * Evaluates `model` on `dataset` with a strategy at a keep ratio, measures its speed and memory at
 * `benchBatch` on the current backend, and returns (and writes, with `outDir`) the comparison row:
 * accuracy with a seeded 95% bootstrap interval, macro-F1, one-vs-rest AUC, GMACs (CNN and ViT parts),
 * tokens kept, images/s, batch-1 latency and peak tensor memory.
 *
 * @example
 * ```ts
 * const row = await recordRunMetrics(model, testSet, { label: "ViT", strategy: "none", keep: 1, training: "scratch", benchBatch: 64 });
 * ```
 */
export async function recordRunMetrics(
  model: Model,
  dataset: Dataset,
  options: RecordOptions,
): Promise<{ row: RunMetrics; eval: StrategyEval }> {
  const run = options.run ?? options.outDir;
  if (run) await checkRunEvalSet(run, dataset, "recordRunMetrics");
  const location = options.location ?? (options.strategy === "attention" ? 1 : 0);
  const ev = await evaluateStrategy(model, dataset, {
    strategy: options.strategy,
    keep: options.keep,
    location,
    seed: options.seed ?? 0,
    fuse: options.fuse,
    spread: options.spread,
    budget: options.budget,
    budgetThreshold: options.budgetThreshold,
  });
  const numClasses = dataset.classes.length;
  const probs: Float32Array[] = [];
  for (let i = 0; i < ev.labels.length; i++) {
    probs.push(ev.probs.subarray(i * numClasses, (i + 1) * numClasses));
  }
  const cls = classificationFields(ev.labels, ev.predictions, { probs, seed: options.seed ?? 0, numClasses });
  const speed = options.measureSpeed === false || options.budget ? {} : await measureSpeed(
    model,
    options.strategy,
    options.keep,
    location,
    options.benchBatch,
    options.repeats,
    options.fuse,
    options.spread,
  );
  const isVit = model.family !== "resnet18";
  const numPatches = isVit ? vitOf(model).numPatches : undefined;
  const gm = model.gmacs(isVit ? { keepRatio: options.keep } : {});
  const row: RunMetrics = {
    model: options.label,
    strategy: options.strategy,
    dataset: dataset.name,
    ...cls,
    gmacs: ev.gmacs,
    ...(gm.cnn !== undefined && options.strategy === "cnn" ? { gmacsCnn: gm.cnn } : {}),
    ...(isVit ? { gmacsVit: ev.gmacs - (options.strategy === "cnn" ? gm.cnn ?? 0 : 0) } : {}),
    params: model.paramCount(),
    ...(numPatches !== undefined
      ? ev.budget
        ? tokenFields(ev.budget.meanKept, numPatches)
        : tokenFields(Math.round(options.keep * numPatches), numPatches)
      : {}),
    ...speed,
    backend: tf.getBackend(),
    batchSize: options.benchBatch,
    seeds: 1,
    training: options.training,
    ...(ev.selection
      ? { selectionPrecision: ev.selection.precision, selectionRecall: ev.selection.recall }
      : {}),
    run: run ?? "",
  };
  if (options.outDir) {
    await writeFileAtomic(join(options.outDir, "metrics.json"), JSON.stringify(row, null, 2) + "\n");
  }
  return { row, eval: ev };
}

/** Images/s at `batch`, batch-1 latency and peak tensor memory of a strategy's forward pass. */
async function measureSpeed(
  model: Model,
  strategy: StrategyName,
  keep: number,
  location: number,
  batch: number,
  repeats = 5,
  fuse = false,
  spread?: number,
): Promise<
  Pick<ResultRow, "throughputImgPerS" | "latencyMsMedian" | "latencyMsP95" | "peakMemoryMiB" | "rssMiB">
> {
  const s = createStrategy(strategy, { seed: 0, fuse, spread });
  const schedule = singleStage(keep, location);
  const size = "vit" in model
    ? (model as unknown as { vit: { config: { imgSize: number } } }).vit.config.imgSize
    : (model.config as { imgSize: number }).imgSize;
  const run = (x: tf.Tensor4D) =>
    model.family === "resnet18" || strategy === "none" ? model.forward(x) : s.forward(model, x, { schedule });
  const x1 = tf.randomUniform([1, size, size, 3], 0, 1, "float32", 1) as tf.Tensor4D;
  const xb = tf.randomUniform([batch, size, size, 3], 0, 1, "float32", 2) as tf.Tensor4D;
  try {
    const opts = { warmup: 2, repeats };
    const latency = await measureLatency(forwardRunner(run, x1), opts);
    const thr = await measureThroughput(forwardRunner(run, xb), { ...opts, batchSize: batch });
    const mem = await measureMemory(forwardRunner(run, xb));
    return {
      throughputImgPerS: thr.imagesPerSecond,
      latencyMsMedian: latency.medianMs,
      latencyMsP95: latency.p95Ms,
      peakMemoryMiB: mem.tfPeakBytes / 2 ** 20,
      rssMiB: mem.rssBytes / 2 ** 20,
    };
  } finally {
    tf.dispose([x1, xb]);
  }
}

/**
 * Reads the `metrics.json` of every variant of the plan ({@link studyRunDirs}), sorted by model, strategy
 * and keep ratio. Other folders under the runs folder (variants of an earlier plan) are not read; a missing
 * variant is an error naming it.
 *
 * @example
 * ```ts
 * const rows = await loadStudyRows(studyPlan("quick"));
 * ```
 */
export async function loadStudyRows(plan: StudyPlan): Promise<RunMetrics[]> {
  const rows: RunMetrics[] = [];
  const missing: string[] = [];
  for (const dir of studyRunDirs(plan)) {
    const file = join(dir, "metrics.json");
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch {
      missing.push(dir);
      continue;
    }
    try {
      rows.push(JSON.parse(text));
    } catch (e) {
      throw new Error(`loadStudyRows: "${file}" is not JSON (${(e as Error).message}); re-run its notebook`);
    }
  }
  if (missing.length) {
    throw new Error(
      `loadStudyRows: ${missing.length} variant(s) of the ${plan.profile} plan have no metrics.json: ` +
        `${missing.join(", ")}; run notebooks 01-03 with profile "${plan.profile}" first ` +
        `(deno task compare --profile ${plan.profile})`,
    );
  }
  const order = (r: RunMetrics) =>
    `${r.model}|${r.training}|${r.strategy}|${(1 - (r.keepRatio ?? 1)).toFixed(2)}`;
  return rows.sort((a, b) => order(a).localeCompare(order(b)));
}

/** Where a study result's weights came from: each training run's commit and when it finished. */
export interface TrainingProvenance {
  /** `training_runs/<run>.run.json` copies, for `writeReport({ files })`. */
  files: Record<string, string>;
  /** Per training run folder: the commit that trained it and whether its tree was dirty. */
  runs: Record<string, { commit: string | null; dirty: boolean | null; createdAt: string }>;
  /** The distinct commits that trained the weights. */
  commits: string[];
}

/**
 * Collects the `run.json` of every training run a result used, so the result carries the provenance of
 * its weights (commit, dirty flag, backend, config), not only of the notebook that evaluated them. Folders
 * without a `run.json` (evaluations without training) are skipped.
 *
 * @example
 * ```ts
 * const prov = await trainingProvenance([runDir(plan, "vit")]);
 * await writeReport(dir, { table, run: { ...info, extra: { trainedAt: prov.runs } }, files: prov.files });
 * ```
 */
export async function trainingProvenance(runDirs: readonly string[]): Promise<TrainingProvenance> {
  const files: Record<string, string> = {};
  const runs: TrainingProvenance["runs"] = {};
  for (const dir of new Set(runDirs)) {
    let text: string;
    try {
      text = await Deno.readTextFile(join(dir, "run.json"));
    } catch {
      continue;
    }
    const info = JSON.parse(text) as {
      git?: { commit: string | null; dirty: boolean | null };
      createdAt: string;
    };
    // `<runs folder>/<run>`: the study's and the synthetic set's runs folders both have a "vit".
    const name = dir.split(/[\\/]/).filter(Boolean).slice(-2).join("/");
    files[`training_runs/${name}.run.json`] = text;
    runs[dir] = {
      commit: info.git?.commit ?? null,
      dirty: info.git?.dirty ?? null,
      createdAt: info.createdAt,
    };
  }
  const commits = [...new Set(Object.values(runs).map((r) => r.commit).filter((c): c is string => !!c))];
  return { files, runs, commits };
}

/** The per-epoch numbers of a run as plot-ready records (`trainingCurvesPlot`). */
export interface EpochLike {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  lr: number;
  eval?: { loss: number; accuracy: number };
}

/**
 * Turns a run's epoch summaries into records for `trainingCurvesPlot`: train/eval loss, train/eval
 * accuracy and learning rate per epoch (epochs counted from 1).
 *
 * @example
 * ```ts
 * await show(trainingCurvesPlot(epochHistory(run.result.epochs)));
 * ```
 */
export function epochHistory(epochs: readonly EpochLike[]): Record<string, number | undefined>[] {
  return epochs.map((e, i) => ({
    epoch: i + 1,
    train_loss: e.trainLoss,
    eval_loss: e.eval?.loss,
    train_acc: e.trainAccuracy,
    eval_acc: e.eval?.accuracy,
    lr: e.lr,
  }));
}

/**
 * Image `i` of a dataset as raw bytes for the viz functions (un-normalised, `[H, W, C]`).
 *
 * @example
 * ```ts
 * await show(await renderImage(datasetImage(testSet, 0)));
 * ```
 */
export function datasetImage(
  ds: Dataset,
  i: number,
): { data: Uint8Array; height: number; width: number; channels: number } {
  const [height, width, channels] = ds.imageShape;
  const n = height * width * channels;
  if (!Number.isInteger(i) || i < 0 || i >= ds.size) {
    throw new RangeError(`datasetImage: index ${i}; expected an integer in [0, ${ds.size})`);
  }
  return { data: ds.images.subarray(i * n, (i + 1) * n), height, width, channels };
}

/**
 * True when `dir` holds an earlier (possibly interrupted or finished) run that `runTraining` can resume:
 * notebooks pass `resume: canResume(dir)` so that re-running a cell continues instead of starting over.
 *
 * @example
 * ```ts
 * await runTraining({ model: "vit", out: dir, resume: canResume(dir) });
 * ```
 */
export function canResume(dir: string): boolean {
  return pathExistsSync(join(dir, "config.json"));
}

/** What {@link scorerProbe} measured. */
export interface ScorerProbe {
  keep: number;
  /** Accuracy of the unchanged ViT on the tokens the stage-1 CNN keeps. */
  cnn: number;
  /** Accuracy of the same ViT on as many random tokens (the control). */
  random: number;
  /** The same ViT on all tokens. */
  none: number;
}

/**
 * A hybrid made of a run's stage-1 CNN scorer (its `stage1/checkpoint.safetensors`) and the unchanged ViT of
 * `vitRunDir`: the selector as stage 1 left it, in front of the ViT it was fitted to. The caller disposes it.
 *
 * @example
 * ```ts
 * const m = await stage1Hybrid(runDir(plan, "hybrid", 0.5), runDir(plan, "vit"));
 * ```
 */
export async function stage1Hybrid(hybridRunDir: string, vitRunDir: string): Promise<Model> {
  const config = JSON.parse(await Deno.readTextFile(join(hybridRunDir, "config.json"))).modelConfig;
  if (config?.model !== "hybrid") throw new Error(`stage1Hybrid: "${hybridRunDir}" is not a hybrid run`);
  const ckPath = join(hybridRunDir, "stage1", "checkpoint.safetensors");
  if (!pathExistsSync(ckPath)) {
    throw new Error(
      `stage1Hybrid: no stage-1 checkpoint at "${ckPath}" (a run made with cnnFrom skips stage 1)`,
    );
  }
  const model = createModelFromConfig(config);
  const ck = await loadCheckpoint(ckPath);
  try {
    await initFromRun(model, vitRunDir, { part: "all" });
    const cnnState = new Map([...model.stateDict()].filter(([k]) => k.startsWith("cnn.")));
    const cnnSaved = new Map([...ck.model].filter(([k]) => k.startsWith("cnn.")));
    assignState(cnnState, cnnSaved, ckPath);
    return model;
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    tf.dispose([...ck.model.values(), ...ck.optimizer.m.values(), ...ck.optimizer.v.values()]);
  }
}

/**
 * Diagnosis of the hybrid's stage 1: puts the stage-1 CNN scorer of a hybrid run in front of the unchanged
 * ViT of `vitRunDir` ({@link stage1Hybrid}) — before stage 2 adapts the ViT — and measures accuracy with the
 * CNN's top-k tokens, with random tokens and with all tokens.
 *
 * @example
 * ```ts
 * const p = await scorerProbe(runDir(plan, "hybrid", 0.5), runDir(plan, "vit"), testSet, 0.5);
 * ```
 */
export async function scorerProbe(
  hybridRunDir: string,
  vitRunDir: string,
  dataset: Dataset,
  keep: number,
  seed = 0,
): Promise<ScorerProbe> {
  await checkRunEvalSet(hybridRunDir, dataset, "scorerProbe");
  const model = await stage1Hybrid(hybridRunDir, vitRunDir);
  try {
    const acc = async (strategy: StrategyName, k: number) =>
      (await evaluateStrategy(model, dataset, { strategy, keep: k, seed })).accuracy;
    return {
      keep,
      cnn: await acc("cnn", keep),
      random: await acc("random", keep),
      none: await acc("none", 1),
    };
  } finally {
    model.dispose();
  }
}
