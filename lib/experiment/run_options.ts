/**
 * The options of {@link runTraining} and their validation: every option is checked and defaulted from the
 * profile before anything is loaded, and an invalid one throws an Error quoting the value.
 *
 * @module
 */
import { join } from "node:path";
import type { BackendChoice } from "../backend/mod.ts";
import { parseBackendChoice } from "../backend/mod.ts";
import type { DatasetName } from "../data/mod.ts";
import { parseDatasetName } from "../data/mod.ts";
import { listModels, type ModelFamily } from "../models/mod.ts";
import { parseProfile, profileFromEnv, type ProfileName } from "../profile.ts";
import { checkTokenDropout, type StrategyName, type TokenDropout } from "../pruning/mod.ts";
import {
  SELECTOR_TARGETS,
  type SelectorTarget,
  type TrainCallbacks,
  type TrainProfile,
  trainProfile,
} from "../train/mod.ts";
import { pathExists } from "../util/mod.ts";
import { checkStrategyFor } from "./evaluate_strategy.ts";

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
  /**
   * Which parameters weight decay applies to: `"weights"` (timm's rule: not norms, biases, position
   * embedding and tokens) or `"all"` (PyTorch's `AdamW(model.parameters())`). Default: the profile's
   * (`"all"` for cpu, `"weights"` for quick and full).
   */
  decayOn?: "weights" | "all";
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
  /**
   * Hybrid stage 2 selection (default `"topk"`; `"gather"` needs `cnnMode: "lower-lr"`; `"hard"`: the ViT
   * trains on the frozen scorer's hard top-k, gathered, with the task loss only, as the controls on CNN
   * tokens train; the selector does not move in stage 2).
   */
  selection?: "topk" | "threshold" | "gather" | "hard";
  /**
   * Hybrid stage 1: what the selector learns to rank by (default `"auto"`: the mask where the data has one,
   * else the CNN's class activation map; `"vit_attention"`: the ViT's own CLS attention, for a hybrid whose
   * ViT is the trained full-token ViT via `initFrom`).
   */
  selectorTarget?: SelectorTarget;
  /**
   * EViT's dropped-token fusion while training and in the final evaluation, for a ViT with strategy
   * `random` or `attention` or the hybrid (selection `"topk"` or `"hard"`): the dropped tokens enter the
   * blocks as one extra token, their score-weighted mean (attention: CLS attention; hybrid: softmax of
   * the CNN's scores) or plain mean (random). Counted in GMACs. Default false.
   */
  fuse?: boolean;
  /** Hybrid stage 2: weight of the ranking distillation to the ViT's CLS attention (default 0). */
  rankDistill?: number;
  /** Hybrid stage 2: draw the keep ratio per batch in `[lo, hi]` (one model for every ratio; default off). */
  keepRange?: [number, number];
  /** Class-balanced training subset (default from the profile). */
  trainSubset?: number;
  /** Evaluation subset (default from the profile). */
  evalSubset?: number;
  /** Default `"test"`. */
  evalSplit?: "val" | "test";
  /** Random crop / flip (default true). */
  augment?: boolean;
  /**
   * ViT (strategy none) only: token dropout while training. Each batch keeps a ratio drawn uniformly in
   * `[min, max]` of the patch tokens, a random subset per image, gathered (the blocks run on fewer
   * tokens). A number `m` means `{min: m, max: 1}`. Default: none. Evaluation uses the full grid.
   */
  tokenDropout?: TokenDropout | number;
  /**
   * ViT only: DeiT-style distillation from a trained ResNet18 run folder (its `model.safetensors`). The ViT
   * gets a distillation token and head (`dist_token`, `head_dist`); inference averages both heads.
   */
  teacher?: string;
  /** With `teacher`: `"hard"` (default, CE on the teacher's class) or `"soft"` (KL at `distillTemperature`). */
  distillMode?: "hard" | "soft";
  /** With `teacher` and `distillMode: "soft"`: temperature (default 1). */
  distillTemperature?: number;
  /** Model config overrides, e.g. `{ embedDim: 96 }`. */
  override?: Record<string, unknown>;
  /** Seed of init, data order and pruning noise (default 0). */
  seed?: number;
  /** Default `results/runs/<runName>`. */
  out?: string;
  /** Continue from the checkpoint in `out` (the run's identity must match what `out` recorded). */
  resume?: boolean;
  /**
   * Resume even though the configuration or dataset differs from the run in `out`; the differences are
   * recorded in `identity.json` and `run.json`. For deliberate changes only.
   */
  forceResume?: boolean;
  /**
   * Start anew in an `out` folder that already holds a run: the old run is moved aside
   * (`<out>.replaced-<time>`) first. Without it, an occupied folder is refused.
   */
  overwrite?: boolean;
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

/** Model families `runTraining` accepts by name (sized by the profile). */
export const TRAIN_FAMILIES = ["resnet18", "vit", "hybrid"] as const;

/** {@link TrainingRunOptions} validated, with every default filled in. */
export interface ResolvedRunOptions {
  raw: TrainingRunOptions;
  profileName: ProfileName;
  prof: TrainProfile;
  datasetName: DatasetName;
  backendChoice?: BackendChoice;
  /** The family name the model was asked by, if it was one (`resnet18`, `vit`, `hybrid`). */
  asFamily?: typeof TRAIN_FAMILIES[number];
  preset: string;
  family: ModelFamily;
  strategyName: StrategyName;
  keep: number;
  location: number;
  epochs: number;
  stage1Epochs: number;
  batchSizeMax: number;
  budgetMiB?: number;
  gradCheckpoint?: boolean | "auto";
  lr: number;
  weightDecay: number;
  decayOn: "weights" | "all";
  warmupEpochs: number;
  labelSmoothing: number;
  clipNorm: number;
  cnnMode: "frozen" | "lower-lr";
  cnnLrScale: number;
  distill: number;
  selectorTarget: SelectorTarget;
  rankDistill: number;
  keepRange?: [number, number];
  selection: "topk" | "threshold" | "gather" | "hard";
  trainSubset?: number;
  evalSubset?: number;
  evalSplit: "val" | "test";
  seed: number;
  override: Record<string, unknown>;
  augment: boolean;
  tokenDropout?: TokenDropout;
  /** EViT fusion of the dropped tokens (ViT with random or attention, hybrid with topk or hard). */
  fuse: boolean;
  /** DeiT distillation (with `teacher`). */
  deit?: { teacher: string; mode: "hard" | "soft"; temperature: number };
  log: boolean;
}

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

/** The model: a family name sized by the profile, or a registry preset. */
function resolveModel(o: TrainingRunOptions, prof: TrainProfile) {
  const presets = listModels();
  if (typeof o.model !== "string") {
    throw new Error(
      `runTraining: model ${JSON.stringify(o.model)} is not a string (resnet18, vit, hybrid or a preset)`,
    );
  }
  const asFamily = (TRAIN_FAMILIES as readonly string[]).includes(o.model)
    ? o.model as typeof TRAIN_FAMILIES[number]
    : undefined;
  const preset = asFamily ? prof.models[asFamily].preset : o.model;
  const presetInfo = presets.find((p) => p.name === preset);
  if (!presetInfo) {
    throw new Error(
      `runTraining: model "${o.model}" is not resnet18, vit, hybrid or a registered preset (${
        presets.map((p) => p.name).join(", ")
      })`,
    );
  }
  return { asFamily, preset, family: presetInfo.family as ModelFamily };
}

/** Strategy, keep ratio and location, checked against the family. */
function resolveStrategy(o: TrainingRunOptions, family: ModelFamily) {
  if (family === "hybrid" && o.strategy !== undefined && !HYBRID_STRATEGIES.includes(o.strategy)) {
    throw new Error(
      `runTraining: the hybrid trains with strategy "cnn" (or "random" / "attention" / "none" as controls on ` +
        `CNN tokens); for ${JSON.stringify(o.strategy)} train model "vit" with strategy ${
          JSON.stringify(o.strategy)
        }`,
    );
  }
  const requested = o.strategy ?? (family === "hybrid" ? "cnn" : "none");
  const keepIn = optional(o.keep, "keep", isNum((v) => v > 0 && v <= 1), "a ratio in (0, 1]") ??
    (requested === "none" ? 1 : 0.5);
  const r = checkStrategyFor(
    family,
    undefined,
    requested,
    keepIn,
    optional(o.location, "location", isInt(0), "an integer ≥ 0"),
    "runTraining",
  );
  return { strategyName: r.strategy, keep: r.keep, location: r.location };
}

/**
 * Strategies a hybrid trains with: its CNN's top-k, or a control on the same tokens (with CNN tokens: the
 * ViT on the CNN's tokens under random or attention selection, or on all of them with `none`; CNN frozen).
 */
const HYBRID_STRATEGIES: readonly StrategyName[] = ["cnn", "random", "attention", "none"];

/** A hybrid trained as a control (strategy random or attention) takes none of the selector's options. */
function checkControlOptions(o: TrainingRunOptions, family: ModelFamily, strategy: StrategyName) {
  if (family !== "hybrid" || strategy === "cnn") return;
  const selectorOnly: string[] = [];
  if (o.distill) selectorOnly.push("distill");
  if (o.rankDistill) selectorOnly.push("rankDistill");
  if (o.keepRange !== undefined) selectorOnly.push("keepRange");
  if (o.selection !== undefined && o.selection !== "topk") selectorOnly.push("selection");
  if (o.cnnMode === "lower-lr") selectorOnly.push("cnnMode");
  if (selectorOnly.length > 0) {
    throw new Error(
      `runTraining: a hybrid with strategy "${strategy}" is a control (the ViT trained under ${strategy} ` +
        `selection on the CNN's tokens, CNN frozen); ${
          selectorOnly.join(", ")
        } belong to the CNN selector: ` +
        `drop them, or use strategy "cnn"`,
    );
  }
}

/** Hybrid stage-2 options. */
function resolveHybrid(o: TrainingRunOptions) {
  const cnnMode = o.cnnMode ?? "frozen";
  check(cnnMode === "frozen" || cnnMode === "lower-lr", "cnnMode", cnnMode, '"frozen" or "lower-lr"');
  const cnnLrScale = optional(o.cnnLrScale, "cnnLrScale", isNum((v) => v > 0), "a positive number") ?? 0.1;
  const distill = optional(o.distill, "distill", isNum((v) => v >= 0), "a number ≥ 0") ?? 0;
  const selection = o.selection ?? "topk";
  check(
    selection === "topk" || selection === "threshold" || selection === "gather" || selection === "hard",
    "selection",
    selection,
    '"topk", "threshold", "gather" or "hard"',
  );
  if (selection === "hard" && (cnnMode !== "frozen" || distill > 0 || o.keepRange || o.rankDistill)) {
    throw new Error(
      'runTraining: selection "hard" trains the ViT alone on the frozen scorer\'s top-k with the task loss; ' +
        "it takes cnnMode frozen and no distill, rankDistill or keepRange",
    );
  }
  if (selection === "gather" && cnnMode === "frozen") {
    throw new Error(
      'runTraining: selection "gather" needs cnnMode "lower-lr" (it trains the CNN\'s batch norm)',
    );
  }
  const selectorTarget = o.selectorTarget ?? "auto";
  check(
    SELECTOR_TARGETS.includes(selectorTarget),
    "selectorTarget",
    selectorTarget,
    SELECTOR_TARGETS.join(", "),
  );
  if (selectorTarget.startsWith("vit_attention") && o.override?.tokens === "cnn") {
    throw new Error(
      `runTraining: selectorTarget "${selectorTarget}" needs pixel tokens: with override { tokens: "cnn" } the ` +
        "ViT's tokens come from the CNN that stage 1 is training (and a pixel ViT from initFrom has no patch " +
        "embedding for them), so its attention is no target; use rankDistill to fit the selector to the " +
        "ViT's attention in stage 2, or pixel tokens",
    );
  }
  const rankDistill = optional(o.rankDistill, "rankDistill", isNum((v) => v >= 0), "a number ≥ 0") ?? 0;
  const keepRange = optional(
    o.keepRange,
    "keepRange",
    (v) => Array.isArray(v) && v.length === 2 && v[0] > 0 && v[0] <= v[1] && v[1] <= 1,
    "[lo, hi] with 0 < lo <= hi <= 1",
  );
  return { cnnMode, cnnLrScale, distill, selection, selectorTarget, rankDistill, keepRange };
}

/** Batch size, memory budget and gradient checkpointing. */
function resolveMemory(o: TrainingRunOptions, prof: TrainProfile, family: ModelFamily) {
  const batchSizeMax = optional(o.batchSize, "batchSize", isInt(1), "an integer ≥ 1") ?? prof.batchSize;
  const budgetMiB = optional(
    o.memoryBudgetMiB,
    "memoryBudgetMiB",
    isNum((v) => v > 0),
    "a positive number of MiB",
  );
  const gradCheckpoint = optional<boolean | "auto">(
    o.gradCheckpoint,
    "gradCheckpoint",
    (v) => typeof v === "boolean" || v === "auto",
    'true, false or "auto"',
  );
  if (gradCheckpoint === "auto" && budgetMiB === undefined) {
    throw new Error(
      'runTraining: gradCheckpoint "auto" needs memoryBudgetMiB (it decides by what fits the budget)',
    );
  }
  if (gradCheckpoint === true && family === "resnet18") {
    throw new Error(
      `runTraining: gradCheckpoint true needs a ViT or the hybrid (transformer blocks); model "${o.model}" is a resnet18`,
    );
  }
  return { batchSizeMax, budgetMiB, gradCheckpoint };
}

function checkDecayOn(v: unknown): "weights" | "all" {
  const d = v ?? "weights";
  check(d === "weights" || d === "all", "decayOn", v, '"weights" or "all"');
  return d as "weights" | "all";
}

/** Optimiser and schedule. */
function resolveOptimizer(o: TrainingRunOptions, prof: TrainProfile) {
  return {
    epochs: optional(o.epochs, "epochs", isInt(1), "an integer ≥ 1") ?? prof.epochs,
    stage1Epochs: optional(o.stage1Epochs, "stage1Epochs", isInt(1), "an integer ≥ 1") ??
      prof.stage1Epochs,
    lr: optional(o.lr, "lr", isNum((v) => v > 0), "a positive number") ?? prof.lr,
    weightDecay: optional(o.weightDecay, "weightDecay", isNum((v) => v >= 0), "a number ≥ 0") ??
      prof.weightDecay,
    decayOn: checkDecayOn(o.decayOn ?? prof.decayOn),
    warmupEpochs: optional(o.warmupEpochs, "warmupEpochs", isInt(0), "an integer ≥ 0") ??
      prof.warmupEpochs,
    labelSmoothing:
      optional(o.labelSmoothing, "labelSmoothing", isNum((v) => v >= 0 && v < 1), "in [0, 1)") ?? 0.1,
    clipNorm: optional(o.clip, "clip", isNum((v) => v >= 0), "a number ≥ 0") ?? 1,
  };
}

/** Data subsets, split, seed, overrides, augmentation. */
function resolveData(o: TrainingRunOptions, prof: TrainProfile) {
  const evalSplit = o.evalSplit ?? "test";
  check(evalSplit === "val" || evalSplit === "test", "evalSplit", evalSplit, '"val" or "test"');
  const override = o.override ?? {};
  check(
    typeof override === "object" && override !== null && !Array.isArray(override),
    "override",
    override,
    "an object of model config overrides",
  );
  const augment = o.augment ?? true;
  check(typeof augment === "boolean", "augment", augment, "a boolean");
  return {
    trainSubset: optional(o.trainSubset, "trainSubset", isInt(1), "an integer ≥ 1") ?? prof.trainSubset,
    evalSubset: optional(o.evalSubset, "evalSubset", isInt(1), "an integer ≥ 1") ?? prof.evalSubset,
    evalSplit,
    seed: optional(o.seed, "seed", isInt(0), "an integer ≥ 0") ?? 0,
    override,
    augment,
  };
}

/** Token dropout: a range (or its lower end), for a plain ViT only. */
function resolveTokenDropout(o: TrainingRunOptions, family: ModelFamily, strategy: StrategyName) {
  if (o.tokenDropout === undefined) return undefined;
  const d = typeof o.tokenDropout === "number" ? { min: o.tokenDropout, max: 1 } : o.tokenDropout;
  checkTokenDropout(d, "runTraining: tokenDropout");
  if (family !== "vit" || strategy !== "none") {
    throw new Error(
      `runTraining: tokenDropout needs model "vit" with strategy "none"; got a ${family} with strategy "${strategy}"`,
    );
  }
  return { min: d.min, max: d.max };
}

/**
 * EViT fusion: where tokens are dropped by a strategy: a ViT under random or attention selection, or the
 * hybrid with its CNN's top-k (selection `"topk"` through the mask, or `"hard"` through the strategy).
 */
function resolveFuse(
  o: TrainingRunOptions,
  family: ModelFamily,
  strategy: StrategyName,
  selection: ResolvedRunOptions["selection"],
): boolean {
  if (o.fuse === undefined || o.fuse === false) return false;
  check(o.fuse === true, "fuse", o.fuse, "a boolean");
  const vit = family === "vit" && (strategy === "random" || strategy === "attention");
  const hybrid = family === "hybrid" && strategy === "cnn" && (selection === "topk" || selection === "hard");
  if (!vit && !hybrid) {
    throw new Error(
      `runTraining: fuse needs model "vit" with strategy "random" or "attention", or the hybrid with strategy ` +
        `"cnn" and selection "topk" or "hard"; got a ${family} with strategy "${strategy}"` +
        (family === "hybrid" ? ` and selection "${selection}"` : ""),
    );
  }
  return true;
}

/** DeiT distillation: a teacher run folder for a ViT, hard or soft. */
function resolveDeit(o: TrainingRunOptions, family: ModelFamily) {
  if (o.teacher === undefined) {
    for (const k of ["distillMode", "distillTemperature"] as const) {
      if (o[k] !== undefined) throw new Error(`runTraining: ${k} ${JSON.stringify(o[k])} needs teacher`);
    }
    return undefined;
  }
  check(typeof o.teacher === "string" && o.teacher.length > 0, "teacher", o.teacher, "a run folder");
  if (family !== "vit") {
    throw new Error(`runTraining: teacher ${JSON.stringify(o.teacher)} needs model "vit"; got a ${family}`);
  }
  const mode = o.distillMode ?? "hard";
  check(mode === "hard" || mode === "soft", "distillMode", mode, '"hard" or "soft"');
  const temperature = optional(o.distillTemperature, "distillTemperature", isNum((v) => v > 0), "> 0") ?? 1;
  return { teacher: o.teacher, mode, temperature };
}

/** initFrom / cnnFrom must name finished runs; resume / overwrite / forceResume must be booleans. */
async function checkRunFolders(o: TrainingRunOptions, family: ModelFamily): Promise<void> {
  if (o.cnnFrom !== undefined && family !== "hybrid") {
    throw new Error(
      `runTraining: cnnFrom ${JSON.stringify(o.cnnFrom)} needs the hybrid; model "${o.model}" is a ${family}`,
    );
  }
  for (
    const [name, dir] of [["initFrom", o.initFrom], ["cnnFrom", o.cnnFrom], ["teacher", o.teacher]] as const
  ) {
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
  for (const name of ["resume", "forceResume", "overwrite"] as const) {
    optional(o[name], name, (v) => typeof v === "boolean", "a boolean");
  }
  if (o.overwrite && o.resume) {
    throw new Error("runTraining: resume and overwrite contradict each other; pass one of them");
  }
  if (o.forceResume && !o.resume) throw new Error("runTraining: forceResume needs resume");
  if (o.resume && typeof o.out === "string" && !(await pathExists(o.out))) {
    throw new Error(
      `runTraining: resume: "${o.out}" does not exist; nothing to resume (start a run without resume)`,
    );
  }
}

/**
 * Validates {@link TrainingRunOptions} and fills in the profile's defaults, before anything is loaded.
 *
 * @example
 * ```ts
 * const r = await resolveRunOptions({ model: "vit", strategy: "random", profile: "quick" });
 * r.keep; // 0.5
 * ```
 */
export async function resolveRunOptions(o: TrainingRunOptions): Promise<ResolvedRunOptions> {
  if (typeof o !== "object" || o === null) {
    throw new Error(`runTraining: options ${String(o)} is not an object`);
  }
  const profileName = parseProfile(String(o.profile ?? profileFromEnv("cpu")), "runTraining: profile");
  const prof = trainProfile(profileName);
  const model = resolveModel(o, prof);
  const resolved: ResolvedRunOptions = {
    raw: o,
    profileName,
    prof,
    datasetName: parseDatasetName(String(o.dataset ?? "auto"), "runTraining: dataset"),
    backendChoice: o.backend === undefined
      ? undefined
      : parseBackendChoice(String(o.backend), "runTraining: backend"),
    ...model,
    ...resolveStrategy(o, model.family),
    ...resolveOptimizer(o, prof),
    ...resolveMemory(o, prof, model.family),
    ...resolveHybrid(o),
    ...resolveData(o, prof),
    fuse: false,
    log: o.log ?? true,
  };
  checkControlOptions(o, model.family, resolved.strategyName);
  resolved.tokenDropout = resolveTokenDropout(o, model.family, resolved.strategyName);
  resolved.deit = resolveDeit(o, model.family);
  resolved.fuse = resolveFuse(o, model.family, resolved.strategyName, resolved.selection);
  await checkRunFolders(o, model.family);
  return resolved;
}
