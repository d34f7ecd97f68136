/**
 * `deno task train`: trains one model (ResNet18, ViT with a pruning strategy, or the two-stage CNN-ViT
 * hybrid) outside notebooks, with checkpoints, resume, a metrics log and provenance in `results/runs/<run>/`.
 * This file only parses and checks the flags; the run itself is `runTraining` of lib/experiment.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseBackendChoice } from "../lib/backend/mod.ts";
import { parseDatasetName } from "../lib/data/mod.ts";
import { runTraining, type TrainingRunOptions } from "../lib/experiment/mod.ts";
import { listModels } from "../lib/models/mod.ts";
import { parseProfile } from "../lib/profile.ts";
import { parseStrategy } from "../lib/pruning/mod.ts";
import { SELECTOR_TARGETS } from "../lib/train/mod.ts";
import { exitUsage } from "./cli.ts";

const USAGE = `Usage: deno task train --model MODEL [options]

Trains one model and writes results/runs/<run>/ (config.json, checkpoint, metrics.jsonl, result.json,
run.json, model.safetensors in PyTorch layout). Interrupt with Ctrl-C: a checkpoint is written; --resume continues.

  --model NAME          resnet18 | vit | hybrid (sized by the profile), or a registry preset:
                        ${listModels().map((m) => m.name).join(", ")}
  --strategy NAME       none | random | cnn | attention | merge (default: cnn for the hybrid, none otherwise);
                        used in training and evaluation (ViT or hybrid; a hybrid with CNN tokens also takes
                        random | attention | none: the ViT on the same frozen CNN's tokens, a control)
  --keep RATIO          fraction of patch tokens kept, in (0, 1] (default 0.5 with a pruning strategy)
  --location N          block before which tokens are pruned (default 0; 1 for attention)
  --dataset NAME        auto | cifar10 | fashion-mnist | synthetic | synthetic-he | pcam (default auto)
  --profile NAME        quick | cpu | full (default: $CNNVIT_PROFILE or cpu)
  --epochs N            epochs (stage 2 for the hybrid; default from the profile)
  --stage1-epochs N     hybrid stage-1 (CNN) epochs (default from the profile)
  --batch-size N        batch size (default from the profile; the upper bound with --memory-budget)
  --memory-budget MIB   pick the largest batch whose training step fits this many MiB of tensors
  --grad-checkpoint M   on | off | auto: gradient checkpointing of the ViT blocks (same gradients, about a
                        third more compute, far less memory); auto (with --memory-budget) turns it on only
                        when it lets a larger batch fit (default: the profile's, on for full only)
  --lr X                peak learning rate (default from the profile)
  --weight-decay X      AdamW decoupled weight decay (default from the profile)
  --decay-on WHICH      weights (not norms, biases, tokens) | all (PyTorch's AdamW on every parameter)
                        (default from the profile: all for cpu, weights for quick and full)
  --warmup-epochs N     linear warm-up epochs (default from the profile)
  --label-smoothing X   in [0, 1) (default 0.1)
  --clip X              global gradient-norm clip, 0 = off (default 1)
  --cnn-mode MODE       hybrid stage 2: frozen | lower-lr (default frozen)
  --cnn-lr-scale X      learning-rate factor of the CNN with lower-lr (default 0.1)
  --distill X           hybrid stage 2: weight of KL distillation from the unpruned ViT (default 0)
  --selection MODE      hybrid stage 2: topk (straight-through mask, default) | threshold (DynamicViT,
                        with the ratio penalty) | gather (real gathering, cheapest; needs --cnn-mode lower-lr)
                        | hard (the ViT alone on the frozen scorer's hard top-k, task loss only)
  --selector-target T   hybrid stage 1: what the selector learns to rank by: auto (mask, else the CNN's CAM;
                        default) | cam | mask | vit_attention (the ViT's last-block CLS attention; with --init-from
                        a ViT) | vit_attention_first (its first block's)
  --fuse                ViT with --strategy random|attention, or the hybrid (--selection topk|hard): EViT
                        fusion of the dropped tokens into one extra token, while training and in the final
                        evaluation
  --rank-distill X      hybrid stage 2: weight of KL(ViT's CLS attention ‖ selector scores) (default 0)
  --keep-range LO,HI    hybrid stage 2: keep ratio drawn per batch in [LO, HI] (one model for every ratio)
  --train-subset N      class-balanced training subset (default from the profile)
  --eval-subset N       evaluation subset (default from the profile)
  --eval-split NAME     val | test (default test)
  --token-dropout R     ViT (strategy none): train on a random subset of the patch tokens per image, keep
                        ratio drawn per batch uniformly in [R, 1] ("MIN,MAX" for another upper end)
  --teacher DIR         ViT: DeiT distillation from a trained ResNet18 run folder (adds a distillation token
                        and head; inference averages both heads)
  --distill-mode MODE   with --teacher: hard (CE on the teacher's class, default) | soft (KL)
  --distill-temperature T  with --distill-mode soft (default 1)
  --no-augment          no random crop / flip
  --override JSON       model config overrides, e.g. '{"embedDim":96}'
  --seed N              seed of init, data order and pruning noise (default 0)
  --init-from DIR       initialise the weights from an earlier run folder (its model.safetensors): a ViT run
                        → this ViT or the hybrid's ViT; a hybrid run → this hybrid
  --cnn-from DIR        hybrid: take the CNN scorer (and heads) from an earlier hybrid run; skips stage 1
  --backend NAME        auto | webgpu | node | native | wasm | cpu (default: $TFJS_BACKEND or auto)
  --out DIR             output folder (default results/runs/<model>_<strategy>_k<keep>_<dataset>_<profile>_s<seed>)
  --resume              continue from the checkpoint in --out (its model, dataset and config must match)
  --force-resume        with --resume: continue although they differ (the differences are recorded)
  --overwrite           start anew in an --out folder that holds a run (the old run is moved aside)
  --quiet               no progress bar
  --help                this text
`;

function fail(msg: string): never {
  return exitUsage("train", msg);
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
function keepRange(raw: string | undefined): [number, number] | undefined {
  if (raw === undefined) return undefined;
  const v = raw.split(",").map((x) => Number(x.trim()));
  if (v.length !== 2 || !(v[0] > 0 && v[0] <= v[1] && v[1] <= 1)) {
    fail(`--keep-range "${raw}" is not LO,HI with 0 < LO <= HI <= 1`);
  }
  return [v[0], v[1]];
}
const tryParse = <T>(f: () => T): T => {
  try {
    return f();
  } catch (e) {
    fail((e as Error).message);
  }
};
const oneOf = <T extends string>(
  name: string,
  raw: string | undefined,
  allowed: readonly T[],
): T | undefined => {
  if (raw === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(raw)) {
    fail(`--${name} "${raw}" is not ${allowed.map((x) => `"${x}"`).join(" or ")}`);
  }
  return raw as T;
};

function tokenDropoutFlag(raw: string | undefined): { min: number; max: number } | undefined {
  if (raw === undefined) return undefined;
  const parts = raw.split(",").map((p) => Number(p));
  const [min, max] = parts.length === 1 ? [parts[0], 1] : parts;
  const ok = parts.length <= 2 && raw.trim() !== "" && min > 0 && min <= max && max <= 1;
  if (!ok) fail(`--token-dropout "${raw}" is not MIN or MIN,MAX with 0 < MIN <= MAX <= 1`);
  return { min, max };
}

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
      "grad-checkpoint": { type: "string" },
      lr: { type: "string" },
      "weight-decay": { type: "string" },
      "decay-on": { type: "string" },
      "warmup-epochs": { type: "string" },
      "label-smoothing": { type: "string" },
      clip: { type: "string" },
      "cnn-mode": { type: "string" },
      "cnn-lr-scale": { type: "string" },
      distill: { type: "string" },
      selection: { type: "string" },
      "selector-target": { type: "string" },
      "rank-distill": { type: "string" },
      fuse: { type: "boolean" },
      "keep-range": { type: "string" },
      "train-subset": { type: "string" },
      "eval-subset": { type: "string" },
      "eval-split": { type: "string" },
      "no-augment": { type: "boolean" },
      "token-dropout": { type: "string" },
      teacher: { type: "string" },
      "distill-mode": { type: "string" },
      "distill-temperature": { type: "string" },
      override: { type: "string" },
      seed: { type: "string" },
      "init-from": { type: "string" },
      "cnn-from": { type: "string" },
      backend: { type: "string" },
      out: { type: "string" },
      resume: { type: "boolean" },
      "force-resume": { type: "boolean" },
      overwrite: { type: "boolean" },
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

let override: Record<string, unknown> | undefined;
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
const options: TrainingRunOptions = {
  model: a.model,
  strategy: a.strategy === undefined ? undefined : tryParse(() => parseStrategy(a.strategy!, "--strategy")),
  keep: num("keep", a.keep, (v) => v > 0 && v <= 1, "a ratio in (0, 1]"),
  location: num("location", a.location, isInt(0), "an integer ≥ 0"),
  dataset: a.dataset === undefined ? undefined : tryParse(() => parseDatasetName(a.dataset!, "--dataset")),
  profile: a.profile === undefined ? undefined : tryParse(() => parseProfile(a.profile!, "--profile")),
  epochs: num("epochs", a.epochs, isInt(1), "an integer ≥ 1"),
  stage1Epochs: num("stage1-epochs", a["stage1-epochs"], isInt(1), "an integer ≥ 1"),
  batchSize: num("batch-size", a["batch-size"], isInt(1), "an integer ≥ 1"),
  memoryBudgetMiB: num("memory-budget", a["memory-budget"], (v) => v > 0, "a positive number of MiB"),
  gradCheckpoint: ((m) => m === undefined ? undefined : m === "auto" ? "auto" : m === "on")(
    oneOf("grad-checkpoint", a["grad-checkpoint"], ["on", "off", "auto"] as const),
  ),
  lr: num("lr", a.lr, (v) => v > 0, "a positive number"),
  weightDecay: num("weight-decay", a["weight-decay"], (v) => v >= 0, "a number ≥ 0"),
  decayOn: oneOf("decay-on", a["decay-on"], ["weights", "all"] as const),
  warmupEpochs: num("warmup-epochs", a["warmup-epochs"], isInt(0), "an integer ≥ 0"),
  labelSmoothing: num("label-smoothing", a["label-smoothing"], (v) => v >= 0 && v < 1, "in [0, 1)"),
  clip: num("clip", a.clip, (v) => v >= 0, "a number ≥ 0"),
  cnnMode: oneOf("cnn-mode", a["cnn-mode"], ["frozen", "lower-lr"] as const),
  cnnLrScale: num("cnn-lr-scale", a["cnn-lr-scale"], (v) => v > 0, "a positive number"),
  distill: num("distill", a.distill, (v) => v >= 0, "a number ≥ 0"),
  selection: oneOf("selection", a.selection, ["topk", "threshold", "gather", "hard"] as const),
  selectorTarget: oneOf("selector-target", a["selector-target"], SELECTOR_TARGETS),
  fuse: a.fuse,
  rankDistill: num("rank-distill", a["rank-distill"], (v) => v >= 0, "a number ≥ 0"),
  keepRange: keepRange(a["keep-range"]),
  trainSubset: num("train-subset", a["train-subset"], isInt(1), "an integer ≥ 1"),
  evalSubset: num("eval-subset", a["eval-subset"], isInt(1), "an integer ≥ 1"),
  evalSplit: oneOf("eval-split", a["eval-split"], ["val", "test"] as const),
  augment: !a["no-augment"],
  tokenDropout: tokenDropoutFlag(a["token-dropout"]),
  teacher: a.teacher,
  distillMode: oneOf("distill-mode", a["distill-mode"], ["hard", "soft"] as const),
  distillTemperature: num("distill-temperature", a["distill-temperature"], (v) => v > 0, "a positive number"),
  override,
  seed: num("seed", a.seed, isInt(0), "an integer ≥ 0"),
  initFrom: a["init-from"],
  cnnFrom: a["cnn-from"],
  backend: a.backend === undefined ? undefined : tryParse(() => parseBackendChoice(a.backend!, "--backend")),
  out: a.out,
  resume: a.resume,
  forceResume: a["force-resume"],
  overwrite: a.overwrite,
  progress: !a.quiet,
};

const ac = new AbortController();
const onSigint = () => {
  if (ac.signal.aborted) Deno.exit(130);
  console.error(
    "\n[train] interrupted: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)",
  );
  ac.abort();
};
Deno.addSignalListener("SIGINT", onSigint);
let run;
try {
  run = await runTraining({ ...options, signal: ac.signal });
} catch (e) {
  // Option errors (thrown before anything is loaded or trained) are usage errors.
  const msg = (e as Error).message;
  if (msg.startsWith("runTraining:")) fail(msg.slice("runTraining:".length).trim());
  throw e;
} finally {
  Deno.removeSignalListener("SIGINT", onSigint);
}
// runTraining logged where the checkpoint is; --resume continues.
if (!run.completed) Deno.exit(130);
