/**
 * `deno task train`: trains one model (ResNet18, ViT with a pruning strategy, or the two-stage CNN-ViT
 * hybrid) outside notebooks, with checkpoints, resume, a metrics log and provenance in `results/runs/<run>/`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { initBackend, parseBackendChoice } from "../lib/backend/mod.ts";
import { AUGMENT_CIFAR, type Dataset, loadDataset, parseDatasetName } from "../lib/data/mod.ts";
import { createModel, type Hybrid, listModels, type Model } from "../lib/models/mod.ts";
import { parseProfile, profileFromEnv } from "../lib/profile.ts";
import {
  createStrategy,
  type KeepSchedule,
  maskedHybridForward,
  parseStrategy,
  singleStage,
  type StrategyName,
  vitOf,
} from "../lib/pruning/mod.ts";
import { meanSelectionQuality } from "../lib/metrics/mod.ts";
import { collectRunInfo } from "../lib/report/mod.ts";
import {
  type BatchSizeReport,
  crossEntropy,
  evaluate,
  findBatchSize,
  train,
  type TrainBatch,
  trainHybridTwoStage,
  trainProfile,
  type TrainResult,
  trainStepTrial,
} from "../lib/train/mod.ts";
import { Rng, writeFileAtomic } from "../lib/util/mod.ts";
import { writeSafetensors } from "../lib/weights/safetensors.ts";
import { exportStateDict } from "../lib/weights/state_dict.ts";

const USAGE = `Usage: deno task train --model MODEL [options]

Trains one model and writes results/runs/<run>/ (config.json, checkpoint, metrics.jsonl, result.json,
run.json, model.safetensors in PyTorch layout). Interrupt with Ctrl-C: a checkpoint is written; --resume continues.

  --model NAME          resnet18 | vit | hybrid (sized by the profile), or a registry preset:
                        ${listModels().map((m) => m.name).join(", ")}
  --strategy NAME       none | random | cnn | attention | merge (default: cnn for the hybrid, none otherwise);
                        used in training and evaluation (ViT or hybrid)
  --keep RATIO          fraction of patch tokens kept, in (0, 1] (default 0.5 with a pruning strategy)
  --location N          block before which tokens are pruned (default 0; 1 for attention)
  --dataset NAME        auto | cifar10 | fashion-mnist | synthetic (default auto)
  --profile NAME        quick | cpu | full (default: $CNNVIT_PROFILE or cpu)
  --epochs N            epochs (stage 2 for the hybrid; default from the profile)
  --stage1-epochs N     hybrid stage-1 (CNN) epochs (default from the profile)
  --batch-size N        batch size (default from the profile; the upper bound with --memory-budget)
  --memory-budget MIB   pick the largest batch whose training step fits this many MiB of tensors
  --lr X                peak learning rate (default from the profile)
  --weight-decay X      AdamW decoupled weight decay (default from the profile)
  --warmup-epochs N     linear warm-up epochs (default from the profile)
  --label-smoothing X   in [0, 1) (default 0.1)
  --clip X              global gradient-norm clip, 0 = off (default 1)
  --cnn-mode MODE       hybrid stage 2: frozen | lower-lr (default frozen)
  --cnn-lr-scale X      learning-rate factor of the CNN with lower-lr (default 0.1)
  --distill X           hybrid stage 2: weight of KL distillation from the unpruned ViT (default 0)
  --selection MODE      hybrid stage 2: topk (straight-through mask, default) | threshold (DynamicViT,
                        with the ratio penalty) | gather (real gathering, cheapest; needs --cnn-mode lower-lr)
  --train-subset N      class-balanced training subset (default from the profile)
  --eval-subset N       evaluation subset (default from the profile)
  --eval-split NAME     val | test (default test)
  --no-augment          no random crop / flip
  --override JSON       model config overrides, e.g. '{"embedDim":96}'
  --seed N              seed of init, data order and pruning noise (default 0)
  --backend NAME        auto | node | native | wasm | cpu (default: $TFJS_BACKEND or auto)
  --out DIR             output folder (default results/runs/<model>_<strategy>_k<keep>_<dataset>_<profile>_s<seed>)
  --resume              continue from the checkpoint in --out
  --quiet               no progress bar
  --help                this text
`;

function fail(msg: string): never {
  console.error(`train: ${msg}\n(see --help)`);
  Deno.exit(2);
}

function num(
  name: string,
  raw: string | undefined,
  check: (v: number) => boolean,
  expected: string,
): number | undefined {
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(v) || !check(v)) fail(`--${name} "${raw}" is not ${expected}`);
  return v;
}
const isInt = (min: number) => (v: number) => Number.isInteger(v) && v >= min;

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string" },
      strategy: { type: "string" },
      keep: { type: "string" },
      location: { type: "string" },
      dataset: { type: "string" },
      profile: { type: "string" },
      epochs: { type: "string" },
      "stage1-epochs": { type: "string" },
      "batch-size": { type: "string" },
      "memory-budget": { type: "string" },
      lr: { type: "string" },
      "weight-decay": { type: "string" },
      "warmup-epochs": { type: "string" },
      "label-smoothing": { type: "string" },
      clip: { type: "string" },
      "cnn-mode": { type: "string" },
      "cnn-lr-scale": { type: "string" },
      distill: { type: "string" },
      selection: { type: "string" },
      "train-subset": { type: "string" },
      "eval-subset": { type: "string" },
      "eval-split": { type: "string" },
      "no-augment": { type: "boolean" },
      override: { type: "string" },
      seed: { type: "string" },
      backend: { type: "string" },
      out: { type: "string" },
      resume: { type: "boolean" },
      quiet: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
} catch (e) {
  fail((e as Error).message);
}
const a = parsed.values;
if (a.help) {
  console.log(USAGE);
  Deno.exit(0);
}
if (!a.model) fail("--model is required");

const tryParse = <T>(f: () => T): T => {
  try {
    return f();
  } catch (e) {
    fail((e as Error).message);
  }
};
const profileName = tryParse(
  () => (a.profile ? parseProfile(a.profile, "--profile") : profileFromEnv("cpu")),
);
const prof = trainProfile(profileName);
const datasetName = tryParse(() => parseDatasetName(a.dataset ?? "auto", "--dataset"));
const backendChoice = tryParse(() => (a.backend ? parseBackendChoice(a.backend, "--backend") : undefined));
const presets = listModels();
const families = ["resnet18", "vit", "hybrid"] as const;
type Family = typeof families[number];
const asFamily = (families as readonly string[]).includes(a.model) ? a.model as Family : undefined;
const preset = asFamily ? prof.models[asFamily].preset : a.model;
const presetInfo = presets.find((p) => p.name === preset);
if (!presetInfo) {
  fail(
    `--model "${a.model}" is not resnet18, vit, hybrid or a registered preset (${
      presets.map((p) => p.name).join(", ")
    })`,
  );
}
const family = presetInfo.family;
const defaultStrategy: StrategyName = family === "hybrid" ? "cnn" : "none";
const strategyName = tryParse(() => (a.strategy ? parseStrategy(a.strategy, "--strategy") : defaultStrategy));
if (family === "resnet18" && strategyName !== "none") {
  fail(`--strategy "${strategyName}" needs a ViT or the hybrid; ResNet18 has no tokens`);
}
if (strategyName === "cnn" && family !== "hybrid") {
  fail(`--strategy cnn needs --model hybrid (the CNN importance head); got "${a.model}"`);
}
if (family === "hybrid" && strategyName !== "cnn") {
  fail(
    `--model hybrid trains with --strategy cnn; for ${strategyName} pruning train --model vit --strategy ${strategyName}`,
  );
}
const keep = num("keep", a.keep, (v) => v > 0 && v <= 1, "a ratio in (0, 1]") ??
  (strategyName === "none" ? 1 : 0.5);
if (strategyName === "none" && keep !== 1) {
  fail(`--keep ${keep} needs a pruning strategy (--strategy random|cnn|attention|merge)`);
}
const location = num("location", a.location, isInt(0), "an integer ≥ 0") ??
  (strategyName === "attention" ? 1 : 0);
if (strategyName === "attention" && location < 1) {
  fail("--location must be ≥ 1 for attention (it needs a block's attention first)");
}
if (strategyName === "cnn" && location !== 0) {
  fail("--location must be 0 for the hybrid (the CNN scores before the ViT)");
}
const epochs = num("epochs", a.epochs, isInt(1), "an integer ≥ 1") ?? prof.epochs;
const stage1Epochs = num("stage1-epochs", a["stage1-epochs"], isInt(1), "an integer ≥ 1") ??
  prof.stage1Epochs;
const batchSizeMax = num("batch-size", a["batch-size"], isInt(1), "an integer ≥ 1") ?? prof.batchSize;
const budgetMiB = num("memory-budget", a["memory-budget"], (v) => v > 0, "a positive number of MiB");
const lr = num("lr", a.lr, (v) => v > 0, "a positive number") ?? prof.lr;
const weightDecay = num("weight-decay", a["weight-decay"], (v) => v >= 0, "a number ≥ 0") ?? prof.weightDecay;
const warmupEpochs = num("warmup-epochs", a["warmup-epochs"], isInt(0), "an integer ≥ 0") ??
  prof.warmupEpochs;
const labelSmoothing = num("label-smoothing", a["label-smoothing"], (v) => v >= 0 && v < 1, "in [0, 1)") ??
  0.1;
const clipNorm = num("clip", a.clip, (v) => v >= 0, "a number ≥ 0") ?? 1;
const cnnMode = a["cnn-mode"] ?? "frozen";
if (cnnMode !== "frozen" && cnnMode !== "lower-lr") {
  fail(`--cnn-mode "${cnnMode}" is not "frozen" or "lower-lr"`);
}
const cnnLrScale = num("cnn-lr-scale", a["cnn-lr-scale"], (v) => v > 0, "a positive number") ?? 0.1;
const distill = num("distill", a.distill, (v) => v >= 0, "a number ≥ 0") ?? 0;
const selectionMode = a.selection ?? "topk";
if (selectionMode !== "topk" && selectionMode !== "threshold" && selectionMode !== "gather") {
  fail(`--selection "${selectionMode}" is not "topk", "threshold" or "gather"`);
}
if (selectionMode === "gather" && cnnMode === "frozen") {
  fail("--selection gather needs --cnn-mode lower-lr (it trains the CNN's batch norm)");
}
const trainSubset = num("train-subset", a["train-subset"], isInt(1), "an integer ≥ 1") ?? prof.trainSubset;
const evalSubset = num("eval-subset", a["eval-subset"], isInt(1), "an integer ≥ 1") ?? prof.evalSubset;
const evalSplit = a["eval-split"] ?? "test";
if (evalSplit !== "val" && evalSplit !== "test") fail(`--eval-split "${evalSplit}" is not "val" or "test"`);
const seed = num("seed", a.seed, isInt(0), "an integer ≥ 0") ?? 0;
let override: Record<string, unknown> = {};
if (a.override !== undefined) {
  try {
    override = JSON.parse(a.override);
  } catch (e) {
    fail(`--override is not JSON (${(e as Error).message}): ${a.override}`);
  }
  if (typeof override !== "object" || override === null || Array.isArray(override)) {
    fail(`--override must be a JSON object, got ${a.override}`);
  }
}
const runName = `${a.model}_${strategyName}_k${keep}_${datasetName}_${profileName}_s${seed}`;
const outDir = a.out ?? join("results", "runs", runName);
if (a.resume) {
  try {
    Deno.statSync(outDir);
  } catch {
    fail(`--resume: "${outDir}" does not exist; nothing to resume (drop --resume to start a run)`);
  }
}

// ---- set-up ----
const t0 = performance.now();
const backend = await initBackend(backendChoice);
const trainDs: Dataset = await loadDataset(datasetName, {
  split: "train",
  subset: trainSubset,
  subsetSeed: seed,
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
const model: Model = tryParse(() => createModel(preset, modelOverrides, { seed }));
const schedule: KeepSchedule = singleStage(keep, location);
const strategy = createStrategy(strategyName, { seed: seed + 1 });
const hybrid = family === "hybrid" ? model as Hybrid : undefined;
const pruned = family !== "resnet18" && strategyName !== "none";
const [h, w, c] = trainDs.imageShape;

let batchSize = batchSizeMax;
let batchReport: BatchSizeReport | undefined;
let resumedBatch: number | undefined;
if (a.resume) {
  // The batch size (possibly chosen by --memory-budget) must match the checkpoint's steps per epoch.
  try {
    const saved = JSON.parse(Deno.readTextFileSync(join(outDir, "config.json")));
    resumedBatch = saved.batchSize;
    batchReport = saved.batchSizeReport;
  } catch {
    resumedBatch = undefined;
  }
}
if (resumedBatch !== undefined) {
  batchSize = resumedBatch;
  console.log(
    `[train] resuming with the run's batch size ${batchSize} (from ${join(outDir, "config.json")})`,
  );
} else if (budgetMiB !== undefined) {
  const forward = hybrid
    ? (x: tf.Tensor4D) => maskedHybridForward(hybrid, x, { cnnLogits: true }).logits
    : pruned
    ? (x: tf.Tensor4D) => strategy.forward(model, x, { schedule, training: true }).logits
    : undefined;
  batchReport = await findBatchSize({
    trial: trainStepTrial(model, [h, w, c], numClasses, forward),
    budgetBytes: budgetMiB * 2 ** 20,
    maxBatchSize: batchSizeMax,
    restore: model.stateDict(),
  });
  batchSize = batchReport.batchSize;
  console.log(
    `[train] batch size ${batchSize} (largest ≤ ${batchSizeMax} whose step peaks at ` +
      `${(batchReport.peakBytes / 2 ** 20).toFixed(0)} MiB ≤ ${budgetMiB} MiB of tensors)`,
  );
}
const stepsPerEpoch = trainDs.numBatches(batchSize, true);
if (stepsPerEpoch < 1) {
  fail(`the training set (${trainDs.size} images) is smaller than one batch of ${batchSize}`);
}
const grid = hybrid ? hybrid.vit.gridSize : undefined;
const withMask = (ds: Dataset, b: TrainBatch & { indices: Int32Array }): TrainBatch => {
  if (!ds.masks || !ds.patchGrid || !grid || ds.patchGrid[0] !== grid || ds.patchGrid[1] !== grid) return b;
  return { ...b, mask: tf.tensor2d(ds.masksOf(b.indices), [b.y.shape[0], grid * grid], "float32") };
};
const trainSource = (epoch: number) => {
  const it = trainDs.batches({
    batchSize,
    shuffle: true,
    seed,
    epoch,
    dropLast: true,
    augment: a["no-augment"] ? undefined : AUGMENT_CIFAR,
  });
  return (function* () {
    for (const b of it) yield withMask(trainDs, b as TrainBatch & { indices: Int32Array });
  })();
};
// Each evaluation pass draws random selections from the same seed, so results do not depend on how
// many evaluations ran before (e.g. after --resume).
let evalRng = new Rng(seed + 2);
const evalSource = () => {
  evalRng = new Rng(seed + 2);
  return evalDs.batches({ batchSize: Math.max(batchSize, 128) });
};
const evalLogits = pruned
  ? (m: Model, b: TrainBatch) => strategy.forward(m, b.x, { schedule, rng: evalRng }).logits
  : undefined;

const ac = new AbortController();
const onSigint = () => {
  if (ac.signal.aborted) Deno.exit(130);
  console.error(
    "\n[train] interrupted: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)",
  );
  ac.abort();
};
Deno.addSignalListener("SIGINT", onSigint);

const config = {
  model: a.model,
  preset,
  modelConfig: model.config,
  strategy: strategyName,
  schedule,
  dataset: trainDs.name,
  profile: profileName,
  epochs,
  stage1Epochs: family === "hybrid" ? stage1Epochs : undefined,
  batchSize,
  lr,
  weightDecay,
  warmupEpochs,
  labelSmoothing,
  clipNorm,
  cnnMode: family === "hybrid" ? cnnMode : undefined,
  cnnLrScale: family === "hybrid" && cnnMode === "lower-lr" ? cnnLrScale : undefined,
  distill: family === "hybrid" ? distill : undefined,
  selection: family === "hybrid" ? selectionMode : undefined,
  augment: !a["no-augment"],
  seed,
};
console.log(`[train] ${runName}: ${JSON.stringify(config)}`);
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
  signal: ac.signal,
  progress: !a.quiet,
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
    resume: a.resume,
  });
  results = r.stage2 ? [r.stage1, r.stage2] : [r.stage1];
} else {
  const loss = pruned
    ? (
      { model: m, batch, rng }: { model: Model; batch: TrainBatch; rng: import("../lib/util/mod.ts").Rng },
    ) => {
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
      resume: a.resume,
    }),
  ];
}
Deno.removeSignalListener("SIGINT", onSigint);
const last = results[results.length - 1];
const completed = results.every((r) => r.completed) && (family !== "hybrid" || results.length === 2);
if (!completed) {
  console.error(
    `[train] stopped at global step ${last.globalStep}; checkpoint in ${outDir}. Continue with --resume.`,
  );
  Deno.exit(130);
}

// ---- final evaluation, result and provenance ----
const final = await evaluate(model, evalSource, { logits: evalLogits });
const gmacs = family === "resnet18" ? model.gmacs().total : strategy.gmacs(model, schedule);
// Selection precision/recall against the ground-truth patch masks (synthetic set), on the eval split.
let selection: { precision: number; recall: number; f1: number; images: number } | undefined;
const vitGrid = family === "resnet18" ? undefined : vitOf(model).gridSize;
if (
  pruned && evalDs.masks && evalDs.patchGrid && evalDs.patchGrid[0] === vitGrid &&
  evalDs.patchGrid[1] === vitGrid
) {
  const rng = new Rng(seed + 2);
  const n = vitGrid * vitGrid;
  const sums = { precision: 0, recall: 0, f1: 0, images: 0 };
  for (const b of evalDs.batches({ batchSize: Math.max(batchSize, 128) })) {
    try {
      const out = strategy.forward(model, b.x, { schedule, rng, returnAux: true });
      const kept = (await out.aux!.keptIndices!.array()) as number[][];
      tf.dispose([
        out.logits,
        ...Object.values(out.aux!).filter((v): v is tf.Tensor => v instanceof tf.Tensor),
      ]);
      const masks = evalDs.masksOf(b.indices);
      const rel = kept.map((_, i) => masks.subarray(i * n, (i + 1) * n));
      const q = meanSelectionQuality(kept, rel);
      for (const k of ["precision", "recall", "f1"] as const) sums[k] += q[k] * q.images;
      sums.images += q.images;
    } finally {
      tf.dispose([b.x, b.y]);
    }
  }
  const d = Math.max(sums.images, 1);
  selection = {
    precision: sums.precision / d,
    recall: sums.recall / d,
    f1: sums.f1 / d,
    images: sums.images,
  };
}
const result = {
  run: runName,
  model: a.model,
  preset,
  family,
  strategy: strategyName,
  keepRatio: keep,
  location,
  dataset: trainDs.name,
  evalSplit,
  evalImages: final.count,
  accuracy: final.accuracy,
  loss: final.loss,
  gmacs,
  selection,
  params: model.paramCount(),
  evalImgPerSec: final.imgPerSec,
  evalBatchSize: Math.max(batchSize, 128),
  batchSize,
  backend: backend.name,
  epochs: results.flatMap((r) => r.epochs),
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
    batchSize: batchReport ?? { batchSize, method: "fixed (no --memory-budget)" },
    backendReason: backend.reason,
  },
});
await writeFileAtomic(join(outDir, "run.json"), JSON.stringify(info, null, 2) + "\n");
console.log(
  `[train] ${runName}: ${evalSplit} accuracy ${
    (100 * final.accuracy).toFixed(2)
  }% on ${final.count} images, ` +
    `${gmacs.toFixed(4)} GMACs, ${(model.paramCount() / 1e6).toFixed(2)}M params` +
    (selection
      ? `, selection precision ${(100 * selection.precision).toFixed(1)}% recall ${
        (100 * selection.recall).toFixed(1)
      }%`
      : "") +
    ` → ${outDir}`,
);
model.dispose();
