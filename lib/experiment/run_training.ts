/**
 * One training run as a library call (what `deno task train` does after parsing its flags): ResNet18, a
 * ViT with a pruning strategy, or the two-stage CNN-ViT hybrid, with checkpoints, resume, a metrics log,
 * a final evaluation, `result.json`, `model.safetensors` and `run.json` in the run folder.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { type BackendChoice, currentBackend, initBackend, parseBackendChoice } from "../backend/mod.ts";
import { AUGMENT_CIFAR, type Dataset, type DatasetName, loadDataset, parseDatasetName } from "../data/mod.ts";
import { macroF1 } from "../metrics/mod.ts";
import { createModel, type Hybrid, listModels, type Model, type ModelFamily } from "../models/mod.ts";
import { parseProfile, profileFromEnv, type ProfileName } from "../profile.ts";
import {
  createStrategy,
  type KeepSchedule,
  maskedHybridForward,
  singleStage,
  type StrategyName,
} from "../pruning/mod.ts";
import { collectRunInfo, type RunInfo } from "../report/mod.ts";
import {
  type BatchSizeReport,
  crossEntropy,
  type EpochInfo,
  findBatchSize,
  train,
  type TrainBatch,
  type TrainCallbacks,
  trainHybridTwoStage,
  trainProfile,
  type TrainResult,
  trainStepTrial,
} from "../train/mod.ts";
import { pathExists, Rng, writeFileAtomic } from "../util/mod.ts";
import { writeSafetensors } from "../weights/safetensors.ts";
import { exportStateDict } from "../weights/state_dict.ts";
import { checkStrategyFor, evaluateStrategy, type SelectionSummary } from "./evaluate_strategy.ts";
import { initFromRun } from "./init_from_run.ts";

export * from "./evaluate_strategy.ts";

/** Options of {@link runTraining} (the flags of `deno task train`, camel-cased). */
export interface TrainingRunOptions {
  /** `"resnet18" | "vit" | "hybrid"` (sized by the profile) or a registry preset (`listModels()`). */
  model: string;
  /** Default: `cnn` for the hybrid, `none` otherwise. */
  strategy?: StrategyName;
  /** Fraction of patch tokens kept, in (0, 1] (default 0.5 with a pruning strategy, 1 without). */
  keep?: number;
  /** Block before which tokens are pruned (default 0; 1 for attention). */
  location?: number;
  /** Default `"auto"`. */
  dataset?: DatasetName;
  /** Default `profileFromEnv("cpu")`. */
  profile?: ProfileName;
  /** Epochs (stage 2 for the hybrid); default from the profile. */
  epochs?: number;
  /** Hybrid stage-1 (CNN) epochs; default from the profile. */
  stage1Epochs?: number;
  /** Batch size (default from the profile; the upper bound with `memoryBudgetMiB`). */
  batchSize?: number;
  /** Pick the largest batch whose training step fits this many MiB of tensors. */
  memoryBudgetMiB?: number;
  /**
   * Gradient checkpointing of the ViT blocks (ViT and hybrid): recompute each block's activations in
   * backward instead of keeping them (same gradients; about a third more compute, far less memory).
   * `"auto"` (needs `memoryBudgetMiB`) turns it on only when it lets a larger batch fit the budget.
   * Default: the profile's (off for quick and cpu, on for full). Recorded in config.json / run.json.
   */
  gradCheckpoint?: boolean | "auto";
  lr?: number;
  weightDecay?: number;
  warmupEpochs?: number;
  /** In [0, 1) (default 0.1). */
  labelSmoothing?: number;
  /** Global gradient-norm clip, 0 = off (default 1). */
  clip?: number;
  /** Hybrid stage 2 (default `"frozen"`). */
  cnnMode?: "frozen" | "lower-lr";
  /** Learning-rate factor of the CNN with `lower-lr` (default 0.1). */
  cnnLrScale?: number;
  /** Hybrid stage 2: weight of KL distillation from the unpruned ViT (default 0). */
  distill?: number;
  /** Hybrid stage 2 selection (default `"topk"`; `"gather"` needs `cnnMode: "lower-lr"`). */
  selection?: "topk" | "threshold" | "gather";
  /** Class-balanced training subset (default from the profile). */
  trainSubset?: number;
  /** Evaluation subset (default from the profile). */
  evalSubset?: number;
  /** Default `"test"`. */
  evalSplit?: "val" | "test";
  /** Random crop / flip (default true). */
  augment?: boolean;
  /** Model config overrides, e.g. `{ embedDim: 96 }`. */
  override?: Record<string, unknown>;
  /** Seed of init, data order and pruning noise (default 0). */
  seed?: number;
  /** Default `results/runs/<runName>`. */
  out?: string;
  /** Continue from the checkpoint in `out`. */
  resume?: boolean;
  /** Progress bars (default true). */
  progress?: boolean;
  /** `[train]` log lines on the console (default true). */
  log?: boolean;
  /**
   * Backend when none is initialised yet (default `$TFJS_BACKEND` or auto). An already initialised
   * backend is kept unless a different one is named here.
   */
  backend?: BackendChoice;
  /**
   * Initialise weights from an earlier run folder (its `model.safetensors`): a ViT run → this ViT or this
   * hybrid's ViT (`vit.*`); a hybrid run → this hybrid (all of it) or this ViT; a ResNet18 run → this
   * ResNet18. Shapes must match; a clear error lists mismatches.
   */
  initFrom?: string;
  /**
   * Hybrid only: initialise the CNN scorer (and its heads, `cnn.*`) from an earlier hybrid run folder and
   * skip stage 1 (so one stage-1 CNN can serve several keep ratios).
   */
  cnnFrom?: string;
  /** Aborting stops after the current step with a checkpoint (`resume` continues). */
  signal?: AbortSignal;
  /** Forwarded to `train()` / both hybrid stages (live curves in notebooks). */
  callbacks?: TrainCallbacks;
  /** Return the trained model (the caller disposes it) instead of disposing it. */
  keepModel?: boolean;
}

/** What `result.json` of a run holds. */
export interface TrainingResultJson {
  run: string;
  model: string;
  preset: string;
  family: ModelFamily;
  strategy: StrategyName;
  keepRatio: number;
  location: number;
  dataset: string;
  evalSplit: "val" | "test";
  evalImages: number;
  accuracy: number;
  /** Macro-averaged F1 over the classes present (lib/metrics `macroF1`). */
  macroF1: number;
  loss: number;
  /** GMACs per image at the run's strategy and keep ratio. */
  gmacs: number;
  /** Selection quality against ground-truth patch masks (synthetic set, pruned runs). */
  selection?: SelectionSummary;
  params: number;
  evalImgPerSec: number;
  evalBatchSize: number;
  batchSize: number;
  backend: string;
  /** Run folder whose weights initialised this run, if any. */
  initFrom?: string;
  /** Hybrid run folder whose CNN was reused (stage 1 skipped), if any. */
  cnnFrom?: string;
  /** Epoch summaries of every stage. */
  epochs: EpochInfo[];
  /** Provenance (`run.json`), attached by {@link loadRunResult}; not stored in `result.json`. */
  provenance?: RunInfo;
}

/** What {@link runTraining} returns. */
export interface TrainingRunResult {
  runName: string;
  outDir: string;
  /**
   * Exactly what `result.json` holds. When the run was stopped (`completed` false), no evaluation ran:
   * `accuracy`, `macroF1`, `loss`, `gmacs` are NaN and `evalImages` 0, and no result.json is written.
   */
  result: TrainingResultJson;
  /** False when stopped by the signal or a callback (checkpoint written; `resume` continues). */
  completed: boolean;
  /** The trained model with `keepModel` (the caller disposes it). */
  model?: Model;
  /** The evaluation split used (compute metrics or maps on it). */
  evalDataset: Dataset;
}

const FAMILIES = ["resnet18", "vit", "hybrid"] as const;
type Family = typeof FAMILIES[number];

function check(ok: boolean, name: string, value: unknown, expected: string): void {
  if (!ok) throw new Error(`runTraining: ${name} ${JSON.stringify(value)} is not ${expected}`);
}
const isInt = (min: number) => (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= min;
const isNum = (ok: (v: number) => boolean) => (v: unknown) =>
  typeof v === "number" && Number.isFinite(v) && ok(v);

function optional<T>(
  value: T | undefined,
  name: string,
  ok: (v: unknown) => boolean,
  expected: string,
): T | undefined {
  if (value !== undefined) check(ok(value), name, value, expected);
  return value;
}

/**
 * Trains one model and writes `<out>/` (config.json, checkpoint, metrics.jsonl, result.json, run.json,
 * model.safetensors in PyTorch layout); the library form of `deno task train`. Invalid options throw an
 * Error quoting the value. Uses the backend already initialised, else `initBackend(options.backend)`.
 *
 * @example
 * ```ts
 * const r = await runTraining({ model: "vit", strategy: "random", keep: 0.5, profile: "quick", dataset: "synthetic" });
 * console.log(r.result.accuracy, r.result.gmacs, r.outDir);
 * ```
 */
export async function runTraining(options: TrainingRunOptions): Promise<TrainingRunResult> {
  const o = options;
  if (typeof o !== "object" || o === null) {
    throw new Error(`runTraining: options ${String(o)} is not an object`);
  }
  // ---- validation (before anything is loaded) ----
  const profileName = parseProfile(String(o.profile ?? profileFromEnv("cpu")), "runTraining: profile");
  const prof = trainProfile(profileName);
  const datasetName = parseDatasetName(String(o.dataset ?? "auto"), "runTraining: dataset");
  const backendChoice = o.backend === undefined
    ? undefined
    : parseBackendChoice(String(o.backend), "runTraining: backend");
  const presets = listModels();
  if (typeof o.model !== "string") {
    throw new Error(
      `runTraining: model ${JSON.stringify(o.model)} is not a string (resnet18, vit, hybrid or a preset)`,
    );
  }
  const asFamily = (FAMILIES as readonly string[]).includes(o.model) ? o.model as Family : undefined;
  const preset = asFamily ? prof.models[asFamily].preset : o.model;
  const presetInfo = presets.find((p) => p.name === preset);
  if (!presetInfo) {
    throw new Error(
      `runTraining: model "${o.model}" is not resnet18, vit, hybrid or a registered preset (${
        presets.map((p) => p.name).join(", ")
      })`,
    );
  }
  const family = presetInfo.family as ModelFamily;
  if (family === "hybrid" && o.strategy !== undefined && o.strategy !== "cnn") {
    throw new Error(
      `runTraining: the hybrid trains with strategy "cnn"; for ${JSON.stringify(o.strategy)} pruning train ` +
        `model "vit" with strategy ${JSON.stringify(o.strategy)}`,
    );
  }
  const requested = o.strategy ?? (family === "hybrid" ? "cnn" : "none");
  const keepIn = optional(o.keep, "keep", isNum((v) => v > 0 && v <= 1), "a ratio in (0, 1]") ??
    (requested === "none" ? 1 : 0.5);
  const { strategy: strategyName, keep, location } = checkStrategyFor(
    family,
    undefined,
    requested,
    keepIn,
    optional(o.location, "location", isInt(0), "an integer ≥ 0"),
    "runTraining",
  );
  const epochs = optional(o.epochs, "epochs", isInt(1), "an integer ≥ 1") ?? prof.epochs;
  const stage1Epochs = optional(o.stage1Epochs, "stage1Epochs", isInt(1), "an integer ≥ 1") ??
    prof.stage1Epochs;
  const batchSizeMax = optional(o.batchSize, "batchSize", isInt(1), "an integer ≥ 1") ?? prof.batchSize;
  const budgetMiB = optional(
    o.memoryBudgetMiB,
    "memoryBudgetMiB",
    isNum((v) => v > 0),
    "a positive number of MiB",
  );
  const ckptIn = optional<boolean | "auto">(
    o.gradCheckpoint,
    "gradCheckpoint",
    (v) => typeof v === "boolean" || v === "auto",
    'true, false or "auto"',
  );
  if (ckptIn === "auto" && budgetMiB === undefined) {
    throw new Error(
      'runTraining: gradCheckpoint "auto" needs memoryBudgetMiB (it decides by what fits the budget)',
    );
  }
  if (ckptIn === true && family === "resnet18") {
    throw new Error(
      `runTraining: gradCheckpoint true needs a ViT or the hybrid (transformer blocks); model "${o.model}" is a resnet18`,
    );
  }
  const lr = optional(o.lr, "lr", isNum((v) => v > 0), "a positive number") ?? prof.lr;
  const weightDecay = optional(o.weightDecay, "weightDecay", isNum((v) => v >= 0), "a number ≥ 0") ??
    prof.weightDecay;
  const warmupEpochs = optional(o.warmupEpochs, "warmupEpochs", isInt(0), "an integer ≥ 0") ??
    prof.warmupEpochs;
  const labelSmoothing =
    optional(o.labelSmoothing, "labelSmoothing", isNum((v) => v >= 0 && v < 1), "in [0, 1)") ??
      0.1;
  const clipNorm = optional(o.clip, "clip", isNum((v) => v >= 0), "a number ≥ 0") ?? 1;
  const cnnMode = o.cnnMode ?? "frozen";
  check(cnnMode === "frozen" || cnnMode === "lower-lr", "cnnMode", cnnMode, '"frozen" or "lower-lr"');
  const cnnLrScale = optional(o.cnnLrScale, "cnnLrScale", isNum((v) => v > 0), "a positive number") ?? 0.1;
  const distill = optional(o.distill, "distill", isNum((v) => v >= 0), "a number ≥ 0") ?? 0;
  const selectionMode = o.selection ?? "topk";
  check(
    selectionMode === "topk" || selectionMode === "threshold" || selectionMode === "gather",
    "selection",
    selectionMode,
    '"topk", "threshold" or "gather"',
  );
  if (selectionMode === "gather" && cnnMode === "frozen") {
    throw new Error(
      'runTraining: selection "gather" needs cnnMode "lower-lr" (it trains the CNN\'s batch norm)',
    );
  }
  const trainSubset = optional(o.trainSubset, "trainSubset", isInt(1), "an integer ≥ 1") ?? prof.trainSubset;
  const evalSubset = optional(o.evalSubset, "evalSubset", isInt(1), "an integer ≥ 1") ?? prof.evalSubset;
  const evalSplit = o.evalSplit ?? "test";
  check(evalSplit === "val" || evalSplit === "test", "evalSplit", evalSplit, '"val" or "test"');
  const seed = optional(o.seed, "seed", isInt(0), "an integer ≥ 0") ?? 0;
  const override = o.override ?? {};
  check(
    typeof override === "object" && override !== null && !Array.isArray(override),
    "override",
    override,
    "an object of model config overrides",
  );
  const augment = o.augment ?? true;
  check(typeof augment === "boolean", "augment", augment, "a boolean");
  if (o.cnnFrom !== undefined && family !== "hybrid") {
    throw new Error(
      `runTraining: cnnFrom ${JSON.stringify(o.cnnFrom)} needs the hybrid; model "${o.model}" is a ${family}`,
    );
  }
  for (const [name, dir] of [["initFrom", o.initFrom], ["cnnFrom", o.cnnFrom]] as const) {
    if (dir === undefined) continue;
    check(typeof dir === "string" && dir.length > 0, name, dir, "a run folder");
    if (
      !(await pathExists(join(dir, "model.safetensors"))) &&
      !(dir.endsWith(".safetensors") && await pathExists(dir))
    ) {
      throw new Error(
        `runTraining: ${name} ${
          JSON.stringify(dir)
        } has no model.safetensors; expected a finished run folder`,
      );
    }
  }
  const log = o.log ?? true;
  const say = (msg: string) => {
    if (log) console.log(`[train] ${msg}`);
  };
  const runName = `${o.model}_${strategyName}_k${keep}_${datasetName}_${profileName}_s${seed}`;
  const outDir = o.out ?? join("results", "runs", runName);
  if (o.resume && !(await pathExists(outDir))) {
    throw new Error(
      `runTraining: resume: "${outDir}" does not exist; nothing to resume (start a run without resume)`,
    );
  }

  // ---- set-up ----
  const t0 = performance.now();
  const current = currentBackend();
  const backend =
    current && (backendChoice === undefined || backendChoice === "auto" || backendChoice === current.name)
      ? current
      : await initBackend(backendChoice, { log });
  const trainDs: Dataset = await loadDataset(datasetName, {
    split: "train",
    subset: trainSubset,
    subsetSeed: seed,
    log,
  });
  const evalDs: Dataset = await loadDataset(trainDs.name, {
    split: evalSplit,
    subset: evalSubset,
    subsetSeed: seed,
    log: false,
  });
  const numClasses = trainDs.classes.length;
  const baseOverrides = asFamily ? prof.models[asFamily].overrides : {};
  const modelOverrides: Record<string, unknown> = family === "hybrid"
    ? { ...baseOverrides, ...override, cnnHead: true, keepRatio: keep }
    : { ...baseOverrides, ...override };
  if (family === "hybrid") {
    const v = (modelOverrides.vit ?? {}) as Record<string, unknown>;
    const r = (modelOverrides.resnet ?? {}) as Record<string, unknown>;
    modelOverrides.vit = { ...v, numClasses };
    modelOverrides.resnet = { ...r, numClasses };
  } else modelOverrides.numClasses = numClasses;
  const model: Model = createModel(preset, modelOverrides, { seed });
  let keepModel = false;
  try {
    if (family !== "resnet18") {
      // Now that the depth is known.
      checkStrategyFor(
        family,
        (model.config as { depth?: number; vit?: { depth: number } }).vit?.depth ??
          (model.config as { depth?: number }).depth,
        strategyName,
        keep,
        location,
        "runTraining",
      );
    }
    // Weight mismatches are option errors: they carry the "runTraining:" prefix.
    const init = (dir: string, part: "all" | "cnn", name: string) =>
      initFromRun(model, dir, { part, source: `runTraining: ${name}` }).catch((e: Error) => {
        throw new Error(
          e.message.startsWith("runTraining:") ? e.message : `runTraining: ${name} "${dir}": ${e.message}`,
        );
      });
    if (o.initFrom !== undefined) {
      const r = await init(o.initFrom, "all", "initFrom");
      say(`initialised ${r.loaded} tensors${r.prefix ? ` of ${r.prefix}*` : ""} from ${r.file}`);
    }
    if (o.cnnFrom !== undefined) {
      const r = await init(o.cnnFrom, "cnn", "cnnFrom");
      say(`initialised the CNN (${r.loaded} tensors) from ${r.file}; stage 1 skipped`);
    }
    const schedule: KeepSchedule = singleStage(keep, location);
    const strategy = createStrategy(strategyName, { seed: seed + 1 });
    const hybrid = family === "hybrid" ? model as Hybrid : undefined;
    const pruned = family !== "resnet18" && strategyName !== "none";
    const [h, w, c] = trainDs.imageShape;

    let batchSize = batchSizeMax;
    let batchReport: BatchSizeReport | undefined;
    let resumedBatch: number | undefined;
    let resumedCkpt: boolean | undefined;
    if (o.resume) {
      // The batch size (possibly chosen by memoryBudgetMiB) must match the checkpoint's steps per epoch.
      try {
        const saved = JSON.parse(await Deno.readTextFile(join(outDir, "config.json")));
        resumedBatch = saved.batchSize;
        batchReport = saved.batchSizeReport;
        if (typeof saved.gradCheckpoint === "boolean") resumedCkpt = saved.gradCheckpoint;
      } catch {
        resumedBatch = undefined;
      }
    }
    // Gradient checkpointing: the option if true/false, else what a resumed run used, else a
    // `gradCheckpoint` model override, else the profile's; "auto" is decided with the batch size below.
    // ResNet18 has no transformer blocks: always off.
    const cfgOf = model.config as { gradCheckpoint?: boolean; vit?: { gradCheckpoint?: boolean } };
    const overridden = (cfgOf.vit ?? cfgOf).gradCheckpoint;
    let gradCheckpoint = family !== "resnet18" &&
      (typeof ckptIn === "boolean" ? ckptIn : resumedCkpt ?? overridden ?? prof.gradCheckpoint);
    model.setGradCheckpointing?.(gradCheckpoint);
    if (resumedBatch !== undefined) {
      batchSize = resumedBatch;
      say(`resuming with the run's batch size ${batchSize} (from ${join(outDir, "config.json")})`);
    } else if (budgetMiB !== undefined) {
      const forward = hybrid
        ? (x: tf.Tensor4D) => maskedHybridForward(hybrid, x, { cnnLogits: true }).logits
        : pruned
        ? (x: tf.Tensor4D) => strategy.forward(model, x, { schedule, training: true }).logits
        : undefined;
      const auto = ckptIn === "auto" && model.setGradCheckpointing !== undefined;
      batchReport = await findBatchSize({
        trial: trainStepTrial(model, [h, w, c], numClasses, forward),
        budgetBytes: budgetMiB * 2 ** 20,
        maxBatchSize: batchSizeMax,
        restore: model.stateDict(),
        gradCheckpoint: auto ? (on) => model.setGradCheckpointing!(on) : undefined,
      });
      batchSize = batchReport.batchSize;
      if (auto) gradCheckpoint = batchReport.gradCheckpoint ?? false;
      say(
        `batch size ${batchSize} (largest ≤ ${batchSizeMax} whose step peaks at ` +
          `${(batchReport.peakBytes / 2 ** 20).toFixed(0)} MiB ≤ ${budgetMiB} MiB of tensors` +
          `${gradCheckpoint ? ", with gradient checkpointing" : ""})`,
      );
    }
    const stepsPerEpoch = trainDs.numBatches(batchSize, true);
    if (stepsPerEpoch < 1) {
      throw new Error(
        `runTraining: the training set (${trainDs.size} images) is smaller than one batch of ${batchSize}; ` +
          `lower batchSize or raise trainSubset`,
      );
    }
    const grid = hybrid ? hybrid.vit.gridSize : undefined;
    const withMask = (ds: Dataset, b: TrainBatch & { indices: Int32Array }): TrainBatch => {
      if (!ds.masks || !ds.patchGrid || !grid || ds.patchGrid[0] !== grid || ds.patchGrid[1] !== grid) {
        return b;
      }
      return { ...b, mask: tf.tensor2d(ds.masksOf(b.indices), [b.y.shape[0], grid * grid], "float32") };
    };
    const trainSource = (epoch: number) => {
      const it = trainDs.batches({
        batchSize,
        shuffle: true,
        seed,
        epoch,
        dropLast: true,
        augment: augment ? AUGMENT_CIFAR : undefined,
      });
      return (function* () {
        for (const b of it) yield withMask(trainDs, b as TrainBatch & { indices: Int32Array });
      })();
    };
    const evalBatchSize = Math.max(batchSize, 128);
    // Each evaluation pass draws random selections from the same seed, so results do not depend on how
    // many evaluations ran before (e.g. after resume).
    let evalRng = new Rng(seed + 2);
    const evalSource = () => {
      evalRng = new Rng(seed + 2);
      return evalDs.batches({ batchSize: evalBatchSize });
    };
    const evalLogits = pruned
      ? (m: Model, b: TrainBatch) => strategy.forward(m, b.x, { schedule, rng: evalRng }).logits
      : undefined;

    const config = {
      model: o.model,
      preset,
      modelConfig: model.config,
      strategy: strategyName,
      schedule,
      dataset: trainDs.name,
      profile: profileName,
      epochs,
      stage1Epochs: family === "hybrid" && o.cnnFrom === undefined ? stage1Epochs : undefined,
      batchSize,
      gradCheckpoint: family === "resnet18" ? undefined : gradCheckpoint,
      lr,
      weightDecay,
      warmupEpochs,
      labelSmoothing,
      clipNorm,
      cnnMode: family === "hybrid" ? cnnMode : undefined,
      cnnLrScale: family === "hybrid" && cnnMode === "lower-lr" ? cnnLrScale : undefined,
      distill: family === "hybrid" ? distill : undefined,
      selection: family === "hybrid" ? selectionMode : undefined,
      augment,
      seed,
      initFrom: o.initFrom,
      cnnFrom: o.cnnFrom,
    };
    say(`${runName}: ${JSON.stringify(config)}`);
    if (resumedBatch === undefined) {
      const saved = { ...config, batchSizeReport: batchReport };
      await writeFileAtomic(join(outDir, "config.json"), JSON.stringify(saved, null, 2) + "\n");
    }
    const common = {
      lr,
      warmupSteps: warmupEpochs * stepsPerEpoch,
      optimizer: { weightDecay },
      clipNorm,
      labelSmoothing,
      seed,
      signal: o.signal,
      progress: o.progress ?? true,
      callbacks: o.callbacks,
      config,
    };

    // ---- training ----
    let results: TrainResult[];
    if (hybrid) {
      const r = await trainHybridTwoStage({
        model: hybrid,
        train: trainSource,
        eval: evalSource,
        stepsPerEpoch,
        stage1: { ...common, epochs: stage1Epochs, lr },
        stage2: {
          ...common,
          epochs,
          cnnMode,
          cnnLrScale,
          keepRatio: keep,
          selection: selectionMode,
          loss: { labelSmoothing, distill },
        },
        outDir,
        resume: o.resume,
        skipStage1: o.cnnFrom !== undefined,
      });
      results = r.stage2 ? [r.stage1, r.stage2] : [r.stage1];
    } else {
      const loss = pruned
        ? ({ model: m, batch, rng }: { model: Model; batch: TrainBatch; rng: Rng }) => {
          const { logits } = strategy.forward(m, batch.x, { schedule, training: true, rng });
          return { loss: crossEntropy(logits, batch.y, { labelSmoothing }), logits };
        }
        : undefined;
      results = [
        await train({
          ...common,
          model,
          train: trainSource,
          eval: evalSource,
          stepsPerEpoch,
          epochs,
          loss,
          evalLogits,
          outDir,
          resume: o.resume,
        }),
      ];
    }
    const last = results[results.length - 1];
    const completed = results.every((r) => r.completed) && (family !== "hybrid" || results.length === 2);
    const base = {
      run: runName,
      model: o.model,
      preset,
      family,
      strategy: strategyName,
      keepRatio: keep,
      location,
      dataset: trainDs.name,
      evalSplit,
    };
    const tail = {
      params: model.paramCount(),
      evalBatchSize,
      batchSize,
      backend: backend.name,
      initFrom: o.initFrom,
      cnnFrom: o.cnnFrom,
      epochs: results.flatMap((r) => r.epochs),
    };
    if (!completed) {
      say(`stopped at global step ${last.globalStep}; checkpoint in ${outDir}. Continue with resume.`);
      const result: TrainingResultJson = {
        ...base,
        evalImages: 0,
        accuracy: NaN,
        macroF1: NaN,
        loss: NaN,
        gmacs: NaN,
        evalImgPerSec: NaN,
        ...tail,
      };
      keepModel = o.keepModel ?? false;
      return {
        runName,
        outDir,
        result,
        completed,
        model: keepModel ? model : undefined,
        evalDataset: evalDs,
      };
    }

    // ---- final evaluation, result and provenance ----
    const final = await evaluateStrategy(model, evalDs, {
      strategy: strategyName,
      keep,
      location,
      seed,
      batchSize: evalBatchSize,
    });
    const result: TrainingResultJson = {
      ...base,
      evalImages: final.labels.length,
      accuracy: final.accuracy,
      macroF1: macroF1(final.labels, final.predictions, { numClasses }),
      loss: final.loss,
      gmacs: final.gmacs,
      selection: final.selection,
      evalImgPerSec: final.imgPerSec,
      ...tail,
    };
    await writeFileAtomic(join(outDir, "result.json"), JSON.stringify(result, null, 2) + "\n");
    await writeSafetensors(join(outDir, "model.safetensors"), await exportStateDict(model), {
      format: "pt",
      config: JSON.stringify(model.config),
    });
    const info = await collectRunInfo({
      experiment: `train ${runName}`,
      backend: backend.name,
      profile: profileName,
      dataset: {
        name: trainDs.name,
        source: trainDs.source,
        reason: trainDs.reason,
        trainImages: trainDs.size,
        evalImages: evalDs.size,
        evalSplit,
      },
      config,
      seeds: [seed],
      durations: {
        totalSeconds: (performance.now() - t0) / 1000,
        trainSeconds: results.reduce((s, r) => s + r.seconds, 0),
      },
      extra: {
        batchSize: batchReport ?? { batchSize, method: "fixed (no memoryBudgetMiB)" },
        backendReason: backend.reason,
      },
    });
    await writeFileAtomic(join(outDir, "run.json"), JSON.stringify(info, null, 2) + "\n");
    say(
      `${runName}: ${evalSplit} accuracy ${
        (100 * result.accuracy).toFixed(2)
      }% on ${result.evalImages} images, ` +
        `macro-F1 ${(100 * result.macroF1).toFixed(2)}%, ${result.gmacs.toFixed(4)} GMACs, ` +
        `${(model.paramCount() / 1e6).toFixed(2)}M params` +
        (result.selection
          ? `, selection precision ${(100 * result.selection.precision).toFixed(1)}% recall ${
            (100 * result.selection.recall).toFixed(1)
          }%`
          : "") +
        ` → ${outDir}`,
    );
    keepModel = o.keepModel ?? false;
    return { runName, outDir, result, completed, model: keepModel ? model : undefined, evalDataset: evalDs };
  } finally {
    if (!keepModel) model.dispose();
  }
}

/**
 * Reads a run folder's `result.json` back, with its `run.json` (provenance) attached as `provenance`
 * when present. Throws a clear error when the folder or result.json is missing or not JSON.
 *
 * @example
 * ```ts
 * const r = await loadRunResult("results/runs/vit_none_k1_cifar10_cpu_s0");
 * console.log(r.accuracy, r.provenance?.commit);
 * ```
 */
export async function loadRunResult(dir: string): Promise<TrainingResultJson> {
  const file = join(dir, "result.json");
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new Error(
      `loadRunResult: cannot read "${file}" (${(e as Error).message}); expected a finished run folder ` +
        `(result.json is written when a run completes; an interrupted run continues with resume)`,
    );
  }
  let result: TrainingResultJson;
  try {
    result = JSON.parse(text);
  } catch (e) {
    throw new Error(`loadRunResult: "${file}" is not JSON (${(e as Error).message})`);
  }
  if (typeof result !== "object" || result === null || typeof result.accuracy !== "number") {
    throw new Error(`loadRunResult: "${file}" is not a run result (no numeric "accuracy")`);
  }
  try {
    result.provenance = JSON.parse(await Deno.readTextFile(join(dir, "run.json")));
  } catch {
    // run.json is optional provenance.
  }
  return result;
}
