/**
 * One training run as a library call (what `deno task train` does after parsing its flags): ResNet18, a
 * ViT with a pruning strategy, or the two-stage CNN-ViT hybrid, with checkpoints, resume, a metrics log,
 * a final evaluation, `result.json`, `model.safetensors` and `run.json` in the run folder.
 *
 * {@link runTraining} runs five steps, each a function of its own: resolve the options
 * (`run_options.ts`), build the model and data ({@link buildRun}), claim the run folder (its identity,
 * `run_identity.ts`), train, then evaluate and record.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { type BackendInfo, currentBackend, initBackend } from "../backend/mod.ts";
import { AUGMENT_CIFAR, type Dataset, loadDataset } from "../data/mod.ts";
import { macroF1 } from "../metrics/mod.ts";
import { createModel, type ForwardOutput, type Hybrid, type Model, type ModelFamily } from "../models/mod.ts";
import { loadModel } from "../weights/model_file.ts";
import {
  createStrategy,
  type KeepSchedule,
  maskedHybridForward,
  singleStage,
  type StrategyName,
  tokenDropoutIndices,
  vitOf,
} from "../pruning/mod.ts";
import { collectRunInfo, type RunInfo } from "../report/mod.ts";
import {
  type BatchSizeReport,
  crossEntropy,
  deitLoss,
  type EpochInfo,
  findBatchSize,
  type LossFn,
  train,
  type TrainBatch,
  trainHybridTwoStage,
  type TrainResult,
  trainStepTrial,
} from "../train/mod.ts";
import { Rng, writeFileAtomic } from "../util/mod.ts";
import { writeSafetensors } from "../weights/safetensors.ts";
import { exportStateDict } from "../weights/state_dict.ts";
import { checkStrategyFor, evaluateStrategy, type SelectionSummary } from "./evaluate_strategy.ts";
import { initFromRun } from "./init_from_run.ts";
import { type ResolvedRunOptions, resolveRunOptions, type TrainingRunOptions } from "./run_options.ts";
import { type ClaimResult, claimRunFolder, datasetIdentity, type RunIdentity } from "./run_identity.ts";

export * from "./evaluate_strategy.ts";
export * from "./run_options.ts";
export * from "./run_identity.ts";

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
  /** DeiT teacher run folder, if any. */
  teacher?: string;
  /**
   * Training cost of the DeiT teacher: GMACs of its forward pass per training image (run once per image
   * and epoch, without gradient). Not an inference cost: the teacher does not run at inference.
   */
  teacherGmacsPerTrainImage?: number;
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
  /** The images the run trained on (e.g. to calibrate the budget mode's threshold without labels). */
  trainDataset: Dataset;
}

/** Everything a run needs once built: backend, data, model, strategy, batch size, sources, config. */
export interface BuiltRun {
  opts: ResolvedRunOptions;
  runName: string;
  outDir: string;
  backend: BackendInfo;
  trainDs: Dataset;
  evalDs: Dataset;
  numClasses: number;
  model: Model;
  hybrid?: Hybrid;
  /** The DeiT teacher (a trained ResNet18), with `teacher`; disposed with the run. */
  teacher?: Model;
  pruned: boolean;
  schedule: KeepSchedule;
  strategy: ReturnType<typeof createStrategy>;
  batchSize: number;
  batchReport?: BatchSizeReport;
  stepsPerEpoch: number;
  evalBatchSize: number;
  trainSource: (epoch: number) => Iterable<TrainBatch>;
  evalSource: () => Iterable<TrainBatch>;
  evalLogits?: (m: Model, b: TrainBatch) => tf.Tensor2D;
  /** The run's configuration (config.json, run.json, the identity). */
  config: Record<string, unknown>;
  say: (msg: string) => void;
}

/**
 * Trains one model and writes `<out>/` (identity.json, config.json, checkpoint, metrics.jsonl, result.json,
 * run.json, model.safetensors in PyTorch layout); the library form of `deno task train`. Invalid options
 * throw an Error quoting the value; an `out` folder holding another run is refused unless `resume` (same
 * identity: model, dataset content, training config, seed) or `overwrite` (the old run is moved aside).
 * Uses the backend already initialised, else `initBackend(options.backend)`.
 *
 * @example
 * ```ts
 * const r = await runTraining({ model: "vit", strategy: "random", keep: 0.5, profile: "quick", dataset: "synthetic" });
 * console.log(r.result.accuracy, r.result.gmacs, r.outDir);
 * ```
 */
export async function runTraining(options: TrainingRunOptions): Promise<TrainingRunResult> {
  const opts = await resolveRunOptions(options);
  const t0 = performance.now();
  const run = await buildRun(opts);
  let keepModel = false;
  try {
    const claim = await claimFolder(run);
    const results = await trainRun(run);
    keepModel = options.keepModel ?? false;
    const completed = results.every((r) => r.completed) && (run.hybrid === undefined || results.length === 2);
    if (!completed) return stoppedResult(run, results, keepModel);
    const result = await evaluateRun(run, results);
    await recordRun(run, result, results, claim, t0);
    return {
      runName: run.runName,
      outDir: run.outDir,
      result,
      completed,
      model: keepModel ? run.model : undefined,
      evalDataset: run.evalDs,
      trainDataset: run.trainDs,
    };
  } finally {
    if (!keepModel) run.model.dispose();
    run.teacher?.dispose();
  }
}

/**
 * Step 2 of {@link runTraining}: backend, datasets, model (with initFrom / cnnFrom weights), strategy,
 * batch size (with a memory budget), gradient checkpointing, data sources and the run's config.
 */
export async function buildRun(opts: ResolvedRunOptions): Promise<BuiltRun> {
  const o = opts.raw;
  const say = (msg: string) => {
    if (opts.log) console.log(`[train] ${msg}`);
  };
  const current = currentBackend();
  const backend = current &&
      (opts.backendChoice === undefined || opts.backendChoice === "auto" ||
        opts.backendChoice === current.name)
    ? current
    : await initBackend(opts.backendChoice, { log: opts.log });
  const { trainDs, evalDs } = await loadRunData(opts);
  // The default folder is named after the dataset actually loaded ("auto" resolves to one).
  const runName =
    `${o.model}_${opts.strategyName}_k${opts.keep}_${trainDs.name}_${opts.profileName}_s${opts.seed}`;
  const outDir = o.out ?? join("results", "runs", runName);
  const numClasses = trainDs.classes.length;
  const model = createRunModel(opts, numClasses);
  let teacher: Model | undefined;
  try {
    await initRunWeights(opts, model, say);
    teacher = opts.deit ? await loadTeacher(opts.deit.teacher, numClasses, say) : undefined;
    const schedule: KeepSchedule = singleStage(opts.keep, opts.location);
    const strategy = createStrategy(opts.strategyName, { seed: opts.seed + 1, fuse: opts.fuse });
    const hybrid = opts.family === "hybrid" ? model as Hybrid : undefined;
    const pruned = opts.family !== "resnet18" && opts.strategyName !== "none";
    const mem = await chooseBatchSize(
      opts,
      outDir,
      model,
      trainDs,
      { hybrid, pruned, schedule, strategy },
      say,
    );
    const stepsPerEpoch = trainDs.numBatches(mem.batchSize, true);
    if (stepsPerEpoch < 1) {
      throw new Error(
        `runTraining: the training set (${trainDs.size} images) is smaller than one batch of ${mem.batchSize}; ` +
          `lower batchSize or raise trainSubset`,
      );
    }
    const evalBatchSize = Math.max(mem.batchSize, 128);
    // Each evaluation pass draws random selections from the same seed, so results do not depend on how
    // many evaluations ran before (e.g. after resume).
    let evalRng = new Rng(opts.seed + 2);
    const config = runConfig(opts, model, trainDs, schedule, mem);
    return {
      opts,
      runName,
      outDir,
      backend,
      trainDs,
      evalDs,
      numClasses,
      model,
      hybrid,
      teacher,
      pruned,
      schedule,
      strategy,
      batchSize: mem.batchSize,
      batchReport: mem.batchReport,
      stepsPerEpoch,
      evalBatchSize,
      trainSource: trainSourceOf(opts, trainDs, mem.batchSize, hybrid),
      evalSource: () => {
        evalRng = new Rng(opts.seed + 2);
        return evalDs.batches({ batchSize: evalBatchSize });
      },
      evalLogits: pruned
        ? (m: Model, b: TrainBatch) => strategy.forward(m, b.x, { schedule, rng: evalRng }).logits
        : undefined,
      config,
      say,
    };
  } catch (e) {
    model.dispose();
    teacher?.dispose();
    throw e;
  }
}

/** The DeiT teacher: a ResNet18 run's model.safetensors, checked against the dataset's classes. */
async function loadTeacher(dir: string, numClasses: number, say: (m: string) => void): Promise<Model> {
  const file = dir.endsWith(".safetensors") ? dir : join(dir, "model.safetensors");
  const teacher = await loadModel(file).catch((e: Error) => {
    throw new Error(`runTraining: teacher "${dir}": ${e.message}`);
  });
  const c = teacher.config as { numClasses?: number };
  if (teacher.family !== "resnet18" || c.numClasses !== numClasses) {
    teacher.dispose();
    throw new Error(
      `runTraining: teacher "${dir}" is a ${teacher.family} with ${c.numClasses} classes; expected a resnet18 ` +
        `run with ${numClasses}`,
    );
  }
  say(`teacher ${file}: ${teacher.gmacs().total.toFixed(4)} GMACs per image, once per training image`);
  return teacher;
}

async function loadRunData(opts: ResolvedRunOptions): Promise<{ trainDs: Dataset; evalDs: Dataset }> {
  const trainDs = await loadDataset(opts.datasetName, {
    split: "train",
    subset: opts.trainSubset,
    subsetSeed: opts.seed,
    log: opts.log,
  });
  const evalDs = await loadDataset(trainDs.name, {
    split: opts.evalSplit,
    subset: opts.evalSubset,
    subsetSeed: opts.seed,
    log: false,
  });
  return { trainDs, evalDs };
}

function createRunModel(opts: ResolvedRunOptions, numClasses: number): Model {
  const baseOverrides = opts.asFamily ? opts.prof.models[opts.asFamily].overrides : {};
  const overrides: Record<string, unknown> = opts.family === "hybrid"
    ? { ...baseOverrides, ...opts.override, cnnHead: true, keepRatio: opts.keep }
    : { ...baseOverrides, ...opts.override };
  if (opts.family === "hybrid") {
    const v = (overrides.vit ?? {}) as Record<string, unknown>;
    const r = (overrides.resnet ?? {}) as Record<string, unknown>;
    overrides.vit = { ...v, numClasses };
    overrides.resnet = { ...r, numClasses };
  } else overrides.numClasses = numClasses;
  if (opts.deit) overrides.distillToken = true;
  const model = createModel(opts.preset, overrides, { seed: opts.seed });
  if (opts.family !== "resnet18") {
    // Now that the depth is known.
    try {
      checkStrategyFor(
        opts.family,
        (model.config as { depth?: number; vit?: { depth: number } }).vit?.depth ??
          (model.config as { depth?: number }).depth,
        opts.strategyName,
        opts.keep,
        opts.location,
        "runTraining",
      );
    } catch (e) {
      model.dispose();
      throw e;
    }
  }
  if (opts.family === "hybrid" && opts.strategyName !== "cnn" && !(model as Hybrid).cnnTokens) {
    model.dispose();
    throw new Error(
      `runTraining: a hybrid with strategy "${opts.strategyName}" is a control on CNN tokens; set ` +
        `override { tokens: "cnn" }, or train model "vit" with strategy "${opts.strategyName}" on pixels`,
    );
  }
  return model;
}

async function initRunWeights(opts: ResolvedRunOptions, model: Model, say: (m: string) => void) {
  // Weight mismatches are option errors: they carry the "runTraining:" prefix.
  const init = (dir: string, part: "all" | "cnn", name: string) =>
    initFromRun(model, dir, { part, source: `runTraining: ${name}` }).catch((e: Error) => {
      throw new Error(
        e.message.startsWith("runTraining:") ? e.message : `runTraining: ${name} "${dir}": ${e.message}`,
      );
    });
  if (opts.raw.initFrom !== undefined) {
    const r = await init(opts.raw.initFrom, "all", "initFrom");
    say(`initialised ${r.loaded} tensors${r.prefix ? ` of ${r.prefix}*` : ""} from ${r.file}`);
  }
  if (opts.raw.cnnFrom !== undefined) {
    const r = await init(opts.raw.cnnFrom, "cnn", "cnnFrom");
    say(`initialised the CNN (${r.loaded} tensors) from ${r.file}; stage 1 skipped`);
  }
}

interface MemoryChoice {
  batchSize: number;
  batchReport?: BatchSizeReport;
  gradCheckpoint: boolean;
}

/**
 * Batch size and gradient checkpointing: a resumed run keeps its own (from config.json); else a memory
 * budget searches the largest batch that fits (with checkpointing if "auto" needs it); else the option.
 */
async function chooseBatchSize(
  opts: ResolvedRunOptions,
  outDir: string,
  model: Model,
  trainDs: Dataset,
  fwd: {
    hybrid?: Hybrid;
    pruned: boolean;
    schedule: KeepSchedule;
    strategy: ReturnType<typeof createStrategy>;
  },
  say: (m: string) => void,
): Promise<MemoryChoice> {
  let saved: { batchSize?: number; batchSizeReport?: BatchSizeReport; gradCheckpoint?: unknown } | undefined;
  if (opts.raw.resume) {
    // The batch size (possibly chosen by memoryBudgetMiB) must match the checkpoint's steps per epoch.
    try {
      saved = JSON.parse(await Deno.readTextFile(join(outDir, "config.json")));
    } catch {
      saved = undefined;
    }
  }
  // Gradient checkpointing: the option if true/false, else what a resumed run used, else a
  // `gradCheckpoint` model override, else the profile's; "auto" is decided with the batch size below.
  // ResNet18 has no transformer blocks: always off.
  const cfgOf = model.config as { gradCheckpoint?: boolean; vit?: { gradCheckpoint?: boolean } };
  const overridden = (cfgOf.vit ?? cfgOf).gradCheckpoint;
  const resumedCkpt = typeof saved?.gradCheckpoint === "boolean" ? saved.gradCheckpoint : undefined;
  let gradCheckpoint = opts.family !== "resnet18" &&
    (typeof opts.gradCheckpoint === "boolean"
      ? opts.gradCheckpoint
      : resumedCkpt ?? overridden ?? opts.prof.gradCheckpoint);
  model.setGradCheckpointing?.(gradCheckpoint);
  if (saved?.batchSize !== undefined) {
    say(`resuming with the run's batch size ${saved.batchSize} (from ${join(outDir, "config.json")})`);
    return { batchSize: saved.batchSize, batchReport: saved.batchSizeReport, gradCheckpoint };
  }
  if (opts.budgetMiB === undefined) return { batchSize: opts.batchSizeMax, gradCheckpoint };
  const { hybrid, pruned, schedule, strategy } = fwd;
  const forward = hybrid
    ? (x: tf.Tensor4D) => maskedHybridForward(hybrid, x, { cnnLogits: true }).logits
    : pruned
    ? (x: tf.Tensor4D) => strategy.forward(model, x, { schedule, training: true }).logits
    : undefined;
  const auto = opts.gradCheckpoint === "auto" && model.setGradCheckpointing !== undefined;
  const [h, w, c] = trainDs.imageShape;
  const batchReport = await findBatchSize({
    trial: trainStepTrial(model, [h, w, c], trainDs.classes.length, forward),
    budgetBytes: opts.budgetMiB * 2 ** 20,
    maxBatchSize: opts.batchSizeMax,
    restore: model.stateDict(),
    gradCheckpoint: auto ? (on) => model.setGradCheckpointing!(on) : undefined,
  });
  if (auto) gradCheckpoint = batchReport.gradCheckpoint ?? false;
  say(
    `batch size ${batchReport.batchSize} (largest ≤ ${opts.batchSizeMax} whose step peaks at ` +
      `${(batchReport.peakBytes / 2 ** 20).toFixed(0)} MiB ≤ ${opts.budgetMiB} MiB of tensors` +
      `${gradCheckpoint ? ", with gradient checkpointing" : ""})`,
  );
  return { batchSize: batchReport.batchSize, batchReport, gradCheckpoint };
}

function trainSourceOf(
  opts: ResolvedRunOptions,
  trainDs: Dataset,
  batchSize: number,
  hybrid?: Hybrid,
): (epoch: number) => Iterable<TrainBatch> {
  const grid = hybrid ? hybrid.vit.gridSize : undefined;
  const withMask = (b: TrainBatch & { indices: Int32Array }): TrainBatch => {
    const ds = trainDs;
    if (!ds.masks || !ds.patchGrid || !grid || ds.patchGrid[0] !== grid || ds.patchGrid[1] !== grid) {
      return b;
    }
    return { ...b, mask: tf.tensor2d(ds.masksOf(b.indices), [b.y.shape[0], grid * grid], "float32") };
  };
  return (epoch: number) => {
    const it = trainDs.batches({
      batchSize,
      shuffle: true,
      seed: opts.seed,
      epoch,
      dropLast: true,
      // A dataset may declare its own augmentation (histology: dihedral + stain jitter); CIFAR's otherwise.
      augment: opts.augment ? (trainDs.augmentation ?? AUGMENT_CIFAR) : undefined,
    });
    return (function* () {
      for (const b of it) yield withMask(b as TrainBatch & { indices: Int32Array });
    })();
  };
}

/** The run's configuration: what config.json, run.json and the identity record. */
function runConfig(
  opts: ResolvedRunOptions,
  model: Model,
  trainDs: Dataset,
  schedule: KeepSchedule,
  mem: MemoryChoice,
): Record<string, unknown> {
  const dataset = trainDs.name;
  const hybrid = opts.family === "hybrid";
  return {
    model: opts.raw.model,
    preset: opts.preset,
    modelConfig: model.config,
    strategy: opts.strategyName,
    schedule,
    dataset,
    profile: opts.profileName,
    epochs: opts.epochs,
    stage1Epochs: hybrid && opts.raw.cnnFrom === undefined ? opts.stage1Epochs : undefined,
    batchSize: mem.batchSize,
    gradCheckpoint: opts.family === "resnet18" ? undefined : mem.gradCheckpoint,
    lr: opts.lr,
    weightDecay: opts.weightDecay,
    decayOn: opts.decayOn,
    warmupEpochs: opts.warmupEpochs,
    labelSmoothing: opts.labelSmoothing,
    clipNorm: opts.clipNorm,
    cnnMode: hybrid ? opts.cnnMode : undefined,
    cnnLrScale: hybrid && opts.cnnMode === "lower-lr" ? opts.cnnLrScale : undefined,
    distill: hybrid ? opts.distill : undefined,
    selection: hybrid ? opts.selection : undefined,
    selectorTarget: hybrid && opts.selectorTarget !== "auto" ? opts.selectorTarget : undefined,
    rankDistill: hybrid && opts.rankDistill > 0 ? opts.rankDistill : undefined,
    keepRange: hybrid ? opts.keepRange : undefined,
    augment: opts.augment,
    // Recorded only where it is not CIFAR's crop + flip (so runs from before keep their identity).
    augmentation: opts.augment && trainDs.augmentation ? trainDs.augmentation : undefined,
    tokenDropout: opts.tokenDropout,
    // Recorded only when on, so runs from before keep their identity.
    fuse: opts.fuse || undefined,
    teacher: opts.deit?.teacher,
    distillMode: opts.deit?.mode,
    distillTemperature: opts.deit?.mode === "soft" ? opts.deit.temperature : undefined,
    seed: opts.seed,
    initFrom: opts.raw.initFrom,
    cnnFrom: opts.raw.cnnFrom,
  };
}

/**
 * Step 3: the run folder becomes this run's (a new run into an empty folder, a resume of the same
 * identity, or `overwrite` after moving the old run aside), then config.json is written.
 */
async function claimFolder(run: BuiltRun): Promise<ClaimResult> {
  const o = run.opts.raw;
  const identity: RunIdentity = {
    config: JSON.parse(JSON.stringify(run.config)),
    dataset: { train: await datasetIdentity(run.trainDs), eval: await datasetIdentity(run.evalDs) },
    seed: run.opts.seed,
  };
  const claim = await claimRunFolder(run.outDir, identity, {
    resume: o.resume,
    forceResume: o.forceResume,
    overwrite: o.overwrite,
  });
  if (claim.movedAside) run.say(`moved the old run in ${run.outDir} aside to ${claim.movedAside}`);
  if (claim.status === "forced") {
    console.warn(`[train] resuming ${run.outDir} despite: ${claim.differences.join("; ")} (forceResume)`);
  }
  run.say(`${run.runName}: ${JSON.stringify(run.config)}`);
  if (claim.status === "new") {
    const saved = { ...run.config, batchSizeReport: run.batchReport };
    await writeFileAtomic(join(run.outDir, "config.json"), JSON.stringify(saved, null, 2) + "\n");
  }
  return claim;
}

/** Step 4: one `train()` call, or the hybrid's two stages. */
async function trainRun(run: BuiltRun): Promise<TrainResult[]> {
  const { opts, hybrid } = run;
  const o = opts.raw;
  const common = {
    lr: opts.lr,
    warmupSteps: opts.warmupEpochs * run.stepsPerEpoch,
    optimizer: { weightDecay: opts.weightDecay, decay: opts.decayOn === "all" ? () => true : undefined },
    clipNorm: opts.clipNorm,
    labelSmoothing: opts.labelSmoothing,
    seed: opts.seed,
    signal: o.signal,
    progress: o.progress ?? true,
    callbacks: o.callbacks,
    config: run.config,
    forceResume: o.forceResume,
  };
  if (hybrid) {
    const r = await trainHybridTwoStage({
      model: hybrid,
      train: run.trainSource,
      eval: run.evalSource,
      stepsPerEpoch: run.stepsPerEpoch,
      stage1: { ...common, epochs: opts.stage1Epochs, lr: opts.lr, importanceTarget: opts.selectorTarget },
      stage2: {
        ...common,
        epochs: opts.epochs,
        cnnMode: opts.cnnMode,
        cnnLrScale: opts.cnnLrScale,
        keepRatio: opts.keep,
        keepRatioRange: opts.keepRange,
        selection: opts.selection === "hard" ? undefined : opts.selection,
        // With "hard" the control's strategy (created with fuse) fuses; with "topk" the masked forward does.
        fuse: opts.selection === "topk" && opts.fuse,
        loss: { labelSmoothing: opts.labelSmoothing, distill: opts.distill, rankDistill: opts.rankDistill },
        // The controls, and the hybrid with selection "hard", train the ViT under the strategy's own forward.
        control: opts.strategyName === "cnn" && opts.selection !== "hard" ? undefined : {
          strategy: run.strategy,
          schedule: run.schedule,
          // Strategy "none" (all tokens) is not "pruned": its evaluation is the strategy's plain forward.
          evalLogits: run.evalLogits ??
            ((m: Model, b: TrainBatch) => run.strategy.forward(m, b.x, { schedule: run.schedule }).logits),
        },
      },
      outDir: run.outDir,
      resume: o.resume,
      skipStage1: o.cnnFrom !== undefined,
    });
    return r.stage2 ? [r.stage1, r.stage2] : [r.stage1];
  }
  return [
    await train({
      ...common,
      model: run.model,
      train: run.trainSource,
      eval: run.evalSource,
      stepsPerEpoch: run.stepsPerEpoch,
      epochs: opts.epochs,
      loss: singleModelLoss(run),
      prepare: run.teacher ? ({ batch }) => ({ teacher: run.teacher!.forward(batch.x).logits }) : undefined,
      evalLogits: run.evalLogits,
      outDir: run.outDir,
      resume: o.resume,
    }),
  ];
}

/**
 * The loss of a ResNet18 or ViT run: under its pruning strategy and/or with token dropout; with a
 * teacher, DeiT's loss on both heads (the teacher's logits come from `prepare`). Undefined: the default.
 */
function singleModelLoss(run: BuiltRun): LossFn | undefined {
  const { opts, strategy, schedule } = run;
  const dropout = opts.tokenDropout;
  const deit = opts.deit;
  if (!run.pruned && !dropout && !deit) return undefined;
  const labelSmoothing = opts.labelSmoothing;
  return ({ model: m, batch, rng, prepared }) => {
    let out: ForwardOutput;
    if (run.pruned) out = strategy.forward(m, batch.x, { schedule, training: true, rng, returnAux: !!deit });
    else {
      const keepIndices = dropout
        ? tokenDropoutIndices(rng, batch.x.shape[0], vitOf(m).numPatches, dropout)
        : undefined;
      out = m.forward(batch.x, { training: true, keepIndices, returnAux: !!deit });
    }
    if (!deit) return { loss: crossEntropy(out.logits, batch.y, { labelSmoothing }), logits: out.logits };
    const { clsLogits, distLogits } = out.aux!;
    const r = deitLoss(clsLogits!, distLogits!, batch.y as tf.Tensor1D, prepared.teacher as tf.Tensor2D, {
      mode: deit.mode,
      temperature: deit.temperature,
      labelSmoothing,
    });
    return { loss: r.loss, logits: out.logits, parts: r.parts };
  };
}

/** The fields of result.json every run has, finished or not. */
function resultBase(run: BuiltRun, results: TrainResult[]) {
  const { opts } = run;
  return {
    run: run.runName,
    model: opts.raw.model,
    preset: opts.preset,
    family: opts.family,
    strategy: opts.strategyName,
    keepRatio: opts.keep,
    location: opts.location,
    dataset: run.trainDs.name,
    evalSplit: opts.evalSplit,
    params: run.model.paramCount(),
    evalBatchSize: run.evalBatchSize,
    batchSize: run.batchSize,
    backend: run.backend.name,
    initFrom: opts.raw.initFrom,
    cnnFrom: opts.raw.cnnFrom,
    teacher: opts.deit?.teacher,
    teacherGmacsPerTrainImage: run.teacher?.gmacs().total,
    epochs: results.flatMap((r) => r.epochs),
  };
}

function stoppedResult(run: BuiltRun, results: TrainResult[], keepModel: boolean): TrainingRunResult {
  const last = results[results.length - 1];
  run.say(`stopped at global step ${last.globalStep}; checkpoint in ${run.outDir}. Continue with resume.`);
  const result: TrainingResultJson = {
    ...resultBase(run, results),
    evalImages: 0,
    accuracy: NaN,
    macroF1: NaN,
    loss: NaN,
    gmacs: NaN,
    evalImgPerSec: NaN,
  };
  return {
    runName: run.runName,
    outDir: run.outDir,
    result,
    completed: false,
    model: keepModel ? run.model : undefined,
    evalDataset: run.evalDs,
    trainDataset: run.trainDs,
  };
}

/** Step 5a: the final evaluation on the evaluation split, under the run's strategy. */
async function evaluateRun(run: BuiltRun, results: TrainResult[]): Promise<TrainingResultJson> {
  const { opts } = run;
  const final = await evaluateStrategy(run.model, run.evalDs, {
    strategy: opts.strategyName,
    keep: opts.keep,
    location: opts.location,
    seed: opts.seed,
    batchSize: run.evalBatchSize,
    fuse: opts.fuse,
  });
  return {
    ...resultBase(run, results),
    evalImages: final.labels.length,
    accuracy: final.accuracy,
    macroF1: macroF1(final.labels, final.predictions, { numClasses: run.numClasses }),
    loss: final.loss,
    gmacs: final.gmacs,
    selection: final.selection,
    evalImgPerSec: final.imgPerSec,
  };
}

/** Step 5b: result.json, model.safetensors and run.json (provenance), each written atomically. */
async function recordRun(
  run: BuiltRun,
  result: TrainingResultJson,
  results: TrainResult[],
  claim: ClaimResult,
  t0: number,
): Promise<void> {
  const { opts, trainDs, evalDs, outDir } = run;
  await writeFileAtomic(join(outDir, "result.json"), JSON.stringify(result, null, 2) + "\n");
  await writeSafetensors(join(outDir, "model.safetensors"), await exportStateDict(run.model), {
    format: "pt",
    config: JSON.stringify(run.model.config),
  });
  const info = await collectRunInfo({
    experiment: `train ${run.runName}`,
    backend: run.backend.name,
    profile: opts.profileName,
    dataset: {
      name: trainDs.name,
      source: trainDs.source,
      reason: trainDs.reason,
      trainImages: trainDs.size,
      evalImages: evalDs.size,
      evalSplit: opts.evalSplit,
    },
    config: run.config,
    seeds: [opts.seed],
    durations: {
      totalSeconds: (performance.now() - t0) / 1000,
      trainSeconds: results.reduce((s, r) => s + r.seconds, 0),
    },
    extra: {
      batchSize: run.batchReport ?? { batchSize: run.batchSize, method: "fixed (no memoryBudgetMiB)" },
      backendReason: run.backend.reason,
      backendRejected: run.backend.rejected,
      ...(claim.status === "forced" ? { forcedResume: claim.differences } : {}),
    },
  });
  await writeFileAtomic(
    join(outDir, "run.json"),
    JSON.stringify(await keepTrainingProvenance(outDir, info, claim), null, 2) + "\n",
  );
  const sel = result.selection;
  run.say(
    `${run.runName}: ${opts.evalSplit} accuracy ${(100 * result.accuracy).toFixed(2)}% on ` +
      `${result.evalImages} images, macro-F1 ${(100 * result.macroF1).toFixed(2)}%, ` +
      `${result.gmacs.toFixed(4)} GMACs, ${(run.model.paramCount() / 1e6).toFixed(2)}M params` +
      (sel
        ? `, selection precision ${(100 * sel.precision).toFixed(1)}% recall ${
          (100 * sel.recall).toFixed(1)
        }%`
        : "") +
      ` → ${outDir}`,
  );
}

/**
 * The run.json to write when a run is recorded: a finished run resumed with the same identity trained
 * nothing now (its run.json exists only once training completed), so its training provenance (commit,
 * createdAt, durations) stays that of the invocation that trained it, and this recording is appended to
 * `extra.recordedAgain`. A new or force-resumed run records the current invocation.
 */
async function keepTrainingProvenance(outDir: string, info: RunInfo, claim: ClaimResult): Promise<RunInfo> {
  if (claim.status !== "resumed") return info;
  let previous: RunInfo;
  try {
    previous = JSON.parse(await Deno.readTextFile(join(outDir, "run.json"))) as RunInfo;
  } catch {
    return info; // interrupted before it finished: this invocation completed the training
  }
  const again = (previous.extra?.recordedAgain as unknown[] | undefined) ?? [];
  return {
    ...info,
    git: previous.git,
    createdAt: previous.createdAt,
    durations: previous.durations,
    extra: {
      ...info.extra,
      recordedAgain: [...again, { git: info.git, createdAt: info.createdAt, backend: info.backend }],
    },
  };
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
