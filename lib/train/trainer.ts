/**
 * The training loop every model and both hybrid stages use: epochs over a batch source, AdamW with a
 * cosine schedule and global-norm clipping, per-epoch evaluation, a JSON-lines metrics log, a progress
 * bar (terminal / Jupyter / CI log), callbacks, seeds, an early stop naming the step of a non-finite loss,
 * and atomic checkpoints from which {@link train} resumes exactly where an interrupted run stopped.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import type { Model } from "../models/types.ts";
import { pathExists, Progress, Rng, writeFileAtomic } from "../util/mod.ts";
import { AdamW, type AdamWOptions } from "./adamw.ts";
import { type BatchSource, disposeBatch, iterateSource, type TrainBatch } from "./batch_source.ts";
import { assignState, loadCheckpoint, saveCheckpoint, type TrainingProgressState } from "./checkpoint.ts";
import { clipGradNorm } from "./clip_grad_norm.ts";
import { cosineSchedule } from "./cosine_schedule.ts";
import { type EvalResult, evaluate } from "./evaluate.ts";
import { crossEntropy } from "./losses.ts";

/** What a loss function sees for one batch. */
export interface StepContext {
  model: Model;
  batch: TrainBatch;
  /** Global optimiser step (0-based) this batch trains. */
  step: number;
  epoch: number;
  /** A generator for this step only (random pruning, Gumbel noise), derived from the run's seed. */
  rng: Rng;
  /** Tensors made by {@link TrainOptions.prepare} for this step (constants to the gradient). */
  prepared: Record<string, tf.Tensor>;
}

/** What a loss function returns: the scalar to minimise, the logits for accuracy, and named terms to log. */
export interface StepOutput {
  loss: tf.Scalar;
  logits: tf.Tensor2D;
  parts?: Record<string, tf.Scalar>;
}

/**
 * A synchronous loss function, called inside `tf.variableGrads` (tensors it creates are freed after the
 * step). Tensors it needs as constants (a teacher's logits) must be made before, e.g. in `prepare`.
 */
export type LossFn = (ctx: StepContext) => StepOutput;

/** Passed to {@link TrainCallbacks.onStep}. */
export interface StepInfo {
  epoch: number;
  /** Batch index within the epoch (0-based). */
  batch: number;
  /** Global step just completed (1-based count of updates). */
  globalStep: number;
  loss: number;
  accuracy: number;
  lr: number;
  gradNorm?: number;
  parts: Record<string, number>;
  /** Images in this batch. */
  images: number;
}

/** One epoch's summary (also a line of the metrics log). */
export interface EpochInfo {
  epoch: number;
  globalStep: number;
  trainLoss: number;
  trainAccuracy: number;
  /** Training images per second (data + step), over this epoch. */
  trainImgPerSec: number;
  seconds: number;
  lr: number;
  eval?: EvalResult;
}

/** Hooks for notebooks and tools. Returning `false` from `onStep` stops the run with a checkpoint. */
export interface TrainCallbacks {
  onStep?(info: StepInfo): void | boolean | Promise<void | boolean>;
  onEpochEnd?(info: EpochInfo): void | Promise<void>;
}

/** Options of {@link train}. */
export interface TrainOptions {
  model: Model;
  /** Training batches (a function of the epoch for per-epoch shuffling). The trainer disposes them. */
  train: BatchSource;
  /** Evaluation batches, run after every epoch. */
  eval?: BatchSource;
  epochs: number;
  /** Optimiser steps per epoch (sets the schedule; extra batches of an epoch are skipped). */
  stepsPerEpoch: number;
  /** Peak learning rate (default 1e-3). */
  lr?: number;
  /** Final learning rate of the cosine (default 1e-2 · lr). */
  minLr?: number;
  /** Linear warm-up in steps (default: one epoch, at most 10% of training). */
  warmupSteps?: number;
  /** AdamW options besides `lr` (weight decay default 0.05; no decay on norms, biases, tokens). */
  optimizer?: Omit<AdamWOptions, "lr">;
  /** Clip gradients to this global norm (default 1; 0 disables). */
  clipNorm?: number;
  /** Label smoothing of the default loss (default 0). */
  labelSmoothing?: number;
  /** Variables to train (default `model.trainableVariables()`): a subset freezes the rest. */
  variables?: Map<string, tf.Variable>;
  /** Loss of a batch (default: cross-entropy of `model.forward(x, {training: true}).logits`). */
  loss?: LossFn;
  /**
   * Runs before the gradient function of each step; the tensors it returns reach the loss as
   * `ctx.prepared` and are constants to the gradient (e.g. a teacher's logits). Freed after the step.
   */
  prepare?: (ctx: Omit<StepContext, "prepared">) => Record<string, tf.Tensor>;
  /** Evaluation logits (default `model.forward(x).logits`). */
  evalLogits?: (model: Model, batch: TrainBatch) => tf.Tensor2D;
  /** Seed of the per-step generators (default 0). Data order is the source's business. */
  seed?: number;
  /** Folder for `checkpoint.safetensors` and `metrics.jsonl`; no files without it. */
  outDir?: string;
  /** Continue from `outDir/checkpoint.safetensors` when it exists (default false: start fresh). */
  resume?: boolean;
  /** Resume even though the checkpoint's config differs (otherwise an error lists the differences). */
  forceResume?: boolean;
  /** Run configuration stored in checkpoints (JSON). */
  config?: Record<string, unknown>;
  /** Aborting stops after the current step with a checkpoint (e.g. on SIGINT). */
  signal?: AbortSignal;
  /** Stop (with a checkpoint) once this many global steps are done: time budgets and tests. */
  stopAfterSteps?: number;
  /** Also checkpoint every this many steps (default: only at epoch ends and on stop). */
  checkpointEverySteps?: number;
  /** Write a `type: "step"` metrics line every this many steps (default 10). */
  logEverySteps?: number;
  /** Show a progress bar (default true). */
  progress?: boolean;
  /** Label of the progress bar (default "train"). */
  label?: string;
  callbacks?: TrainCallbacks;
}

/** What {@link train} returns. */
export interface TrainResult {
  /** True when every epoch ran; false when stopped early (checkpoint written when `outDir` is set). */
  completed: boolean;
  globalStep: number;
  /** Epoch summaries of this call (and of earlier calls, when resumed from a log). */
  epochs: EpochInfo[];
  seconds: number;
  /** Where the run stood when it returned. */
  progress: TrainingProgressState;
  /** Why it stopped early. */
  stoppedBy?: "signal" | "stopAfterSteps" | "callback";
}

/**
 * Thrown when the loss becomes NaN or infinite; nothing of that step was applied.
 *
 * @example
 * ```ts
 * try { await train(opts); } catch (e) { if (e instanceof NonFiniteLossError) console.log(e.step); }
 * ```
 */
export class NonFiniteLossError extends Error {
  constructor(readonly step: number, readonly epoch: number, readonly batch: number, readonly value: number) {
    super(
      `train: loss is ${value} at global step ${step} (epoch ${epoch}, batch ${batch}); stopped before applying ` +
        "that update (lower the learning rate, enable clipping, or check the inputs)",
    );
    this.name = "NonFiniteLossError";
  }
}

/** File names inside `outDir`. */
export const CHECKPOINT_FILE = "checkpoint.safetensors";
/** JSON-lines metrics log inside `outDir`. */
export const METRICS_FILE = "metrics.jsonl";

function defaultLoss(labelSmoothing: number): LossFn {
  return ({ model, batch }) => {
    const { logits } = model.forward(batch.x, { training: true });
    return { loss: crossEntropy(logits, batch.y, { labelSmoothing }), logits };
  };
}

function checkOptions(o: TrainOptions): void {
  const posInt = (name: string, v: number | undefined, min = 1) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) {
      throw new Error(`train: ${name} must be an integer ≥ ${min}, got ${v}`);
    }
  };
  posInt("epochs", o.epochs);
  posInt("stepsPerEpoch", o.stepsPerEpoch);
  posInt("warmupSteps", o.warmupSteps, 0);
  posInt("stopAfterSteps", o.stopAfterSteps, 0);
  posInt("checkpointEverySteps", o.checkpointEverySteps);
  posInt("logEverySteps", o.logEverySteps);
  if (o.lr !== undefined && !(o.lr > 0 && Number.isFinite(o.lr))) {
    throw new Error(`train: lr must be > 0, got ${o.lr}`);
  }
  if (o.clipNorm !== undefined && !(o.clipNorm >= 0)) {
    throw new Error(`train: clipNorm must be ≥ 0, got ${o.clipNorm}`);
  }
  if (o.resume && !o.outDir) throw new Error("train: resume needs outDir (where the checkpoint is)");
}

/**
 * Trains `model` and returns the epoch summaries. Deterministic for a given seed, source and backend;
 * `resume: true` continues from the last checkpoint so that the final weights equal an uninterrupted run's.
 *
 * @example
 * ```ts
 * const result = await train({
 *   model, epochs: 3, stepsPerEpoch: ds.numBatches(128, true),
 *   train: (epoch) => ds.batches({ batchSize: 128, shuffle: true, seed: 1, epoch, dropLast: true }),
 *   eval: () => test.batches({ batchSize: 256 }), lr: 1e-3, outDir: "results/runs/vit", resume: true,
 * });
 * ```
 */
export async function train(options: TrainOptions): Promise<TrainResult> {
  checkOptions(options);
  const t0 = performance.now();
  const { model, epochs, stepsPerEpoch } = options;
  const totalSteps = epochs * stepsPerEpoch;
  const lr = options.lr ?? 1e-3;
  const warmup = options.warmupSteps ?? Math.min(stepsPerEpoch, Math.floor(totalSteps / 10));
  const schedule = cosineSchedule({
    baseLr: lr,
    totalSteps,
    warmupSteps: warmup,
    minLr: options.minLr ?? lr * 1e-2,
  });
  const variables = options.variables ?? model.trainableVariables();
  const varList = [...variables.values()];
  const nameOf = new Map<string, string>([...variables].map(([k, v]) => [v.name, k]));
  const opt = new AdamW({ ...options.optimizer, lr });
  const clip = options.clipNorm ?? 1;
  const lossFn = options.loss ?? defaultLoss(options.labelSmoothing ?? 0);
  const logEvery = options.logEverySteps ?? 10;
  const rng = new Rng(options.seed ?? 0);
  const ckptPath = options.outDir ? join(options.outDir, CHECKPOINT_FILE) : undefined;
  const logPath = options.outDir ? join(options.outDir, METRICS_FILE) : undefined;
  const config = {
    ...options.config,
    epochs,
    stepsPerEpoch,
    lr,
    warmupSteps: warmup,
    clipNorm: clip,
    seed: options.seed ?? 0,
  };

  let state: TrainingProgressState = { epoch: 0, stepInEpoch: 0, globalStep: 0, rngState: rng.state };
  // Running sums of the epoch in progress (saved so a resumed epoch reports the same averages).
  let acc = { loss: 0, correct: 0, images: 0, seconds: 0 };
  let logLines: string[] = [];
  const epochInfos: EpochInfo[] = [];

  if (options.resume && ckptPath && (await pathExists(ckptPath))) {
    const ckpt = await loadCheckpoint(ckptPath);
    if (ckpt.config.stepsPerEpoch !== undefined && ckpt.config.stepsPerEpoch !== stepsPerEpoch) {
      tf.dispose([...ckpt.model.values(), ...ckpt.optimizer.m.values(), ...ckpt.optimizer.v.values()]);
      throw new Error(
        `train: cannot resume from "${ckptPath}": it was written with stepsPerEpoch ${ckpt.config.stepsPerEpoch}, ` +
          `this run has ${stepsPerEpoch} (a different batch size or dataset); use a new outDir`,
      );
    }
    const differs = Object.keys(config).filter((k) =>
      JSON.stringify((config as Record<string, unknown>)[k]) !== JSON.stringify(ckpt.config[k])
    );
    if (differs.length && !options.forceResume) {
      tf.dispose([...ckpt.model.values(), ...ckpt.optimizer.m.values(), ...ckpt.optimizer.v.values()]);
      throw new Error(
        `train: cannot resume from "${ckptPath}": the config changed (${
          differs.map((k) =>
            `${k}: ${JSON.stringify(ckpt.config[k])} → ${
              JSON.stringify((config as Record<string, unknown>)[k])
            }`
          ).join("; ")
        }); use a new outDir, or forceResume to continue deliberately`,
      );
    }
    if (differs.length) {
      console.warn(
        `[train] resuming "${ckptPath}" with a changed config: ${
          differs.join(", ")
        } (forceResume: the new values apply)`,
      );
    }
    try {
      assignState(model.stateDict(), ckpt.model, ckptPath);
      opt.loadState(ckpt.optimizer);
    } finally {
      tf.dispose([...ckpt.model.values(), ...ckpt.optimizer.m.values(), ...ckpt.optimizer.v.values()]);
    }
    state = ckpt.progress;
    rng.state = state.rngState;
    const extra = (state.extra ?? {}) as { acc?: typeof acc };
    if (extra.acc) acc = { ...extra.acc };
    if (logPath && (await pathExists(logPath))) {
      // Keep the log up to the checkpoint only: the steps after it are run again.
      logLines = (await Deno.readTextFile(logPath)).split("\n").filter((l) => {
        if (!l.trim()) return false;
        try {
          const rec = JSON.parse(l);
          if (rec.type === "epoch") {
            if (rec.epoch < state.epoch) epochInfos.push(rec as EpochInfo);
            return rec.epoch < state.epoch;
          }
          return typeof rec.globalStep === "number" && rec.globalStep <= state.globalStep;
        } catch {
          return false;
        }
      });
    }
    logLines.push(
      JSON.stringify({
        type: "resume",
        globalStep: state.globalStep,
        epoch: state.epoch,
        time: new Date().toISOString(),
      }),
    );
  }

  const flushLog = async () => {
    if (logPath) await writeFileAtomic(logPath, logLines.map((l) => l + "\n").join(""));
  };
  const checkpoint = async () => {
    if (!ckptPath) return;
    const optState = opt.state();
    try {
      state.rngState = rng.state;
      state.extra = { ...state.extra, acc };
      await saveCheckpoint(ckptPath, model.stateDict(), optState, state, config);
    } finally {
      tf.dispose([...optState.m.values(), ...optState.v.values()]);
    }
    await flushLog();
  };
  const stop = async (by: TrainResult["stoppedBy"]): Promise<TrainResult> => {
    await checkpoint();
    opt.dispose();
    return {
      completed: false,
      globalStep: state.globalStep,
      epochs: epochInfos,
      seconds: (performance.now() - t0) / 1000,
      progress: { ...state },
      stoppedBy: by,
    };
  };

  for (let epoch = state.epoch; epoch < epochs; epoch++) {
    const skip = epoch === state.epoch ? state.stepInEpoch : 0;
    if (skip === 0) acc = { loss: 0, correct: 0, images: 0, seconds: 0 };
    state.epoch = epoch;
    let bar: Progress | undefined;
    let b = 0;
    const epochStart = performance.now();
    let lastLr = schedule(Math.min(state.globalStep, totalSteps));
    for await (const batch of iterateSource(options.train, epoch)) {
      if (b >= stepsPerEpoch) {
        disposeBatch(batch);
        break;
      }
      if (b < skip) {
        disposeBatch(batch);
        b++;
        continue;
      }
      const stepStart = performance.now();
      const images = batch.y.shape[0];
      if (!bar && options.progress !== false) {
        // A resumed epoch shows only its remaining batches, so images/s and ETA stay right.
        bar = new Progress((stepsPerEpoch - skip) * images, {
          label: `${options.label ?? "train"} epoch ${epoch + 1}/${epochs}${
            skip ? ` (resumed at batch ${skip})` : ""
          }`,
          unit: "img",
        });
      }
      const stepLr = schedule(state.globalStep);
      lastLr = stepLr;
      const stepRng = rng.fork();
      let kept: tf.Tensor[] = [];
      let partNames: string[] = [];
      let value: tf.Scalar | undefined;
      let grads: tf.NamedTensorMap = {};
      let clipped: Map<string, tf.Tensor> | undefined;
      let normT: tf.Scalar | undefined;
      let prepared: Record<string, tf.Tensor> = {};
      try {
        const base = { model, batch, step: state.globalStep, epoch, rng: stepRng };
        if (options.prepare) prepared = options.prepare(base);
        const r = tf.variableGrads(() => {
          const out = lossFn({ ...base, prepared });
          const hits = tf.sum(
            tf.cast(tf.equal(tf.cast(tf.argMax(out.logits, 1), "int32"), batch.y), "int32"),
          );
          const parts = Object.entries(out.parts ?? {});
          kept = [tf.keep(hits), ...parts.map(([, t]) => tf.keep(t))];
          partNames = parts.map(([k]) => k);
          return out.loss;
        }, varList);
        value = r.value;
        grads = r.grads;
        const lossVal = (await value.data())[0];
        if (!Number.isFinite(lossVal)) throw new NonFiniteLossError(state.globalStep, epoch, b, lossVal);
        const named = new Map<string, tf.Tensor>();
        for (const [tfName, g] of Object.entries(grads)) named.set(nameOf.get(tfName) ?? tfName, g);
        let gradNorm: number | undefined;
        if (clip > 0) {
          const c = clipGradNorm(named, clip);
          clipped = c.grads;
          normT = c.norm;
          gradNorm = (await normT.data())[0];
        }
        opt.step(variables, clipped ?? named, stepLr);
        const correct = (await kept[0].data())[0];
        const parts: Record<string, number> = {};
        for (let i = 0; i < partNames.length; i++) parts[partNames[i]] = (await kept[i + 1].data())[0];
        state.globalStep++;
        b++;
        state.stepInEpoch = b;
        const secs = (performance.now() - stepStart) / 1000;
        acc.loss += lossVal * images;
        acc.correct += correct;
        acc.images += images;
        acc.seconds += secs;
        const info: StepInfo = {
          epoch,
          batch: b - 1,
          globalStep: state.globalStep,
          loss: lossVal,
          accuracy: correct / images,
          lr: stepLr,
          gradNorm,
          parts,
          images,
        };
        if (state.globalStep % logEvery === 0) {
          logLines.push(JSON.stringify({ type: "step", ...info, imgPerSec: images / Math.max(secs, 1e-9) }));
        }
        bar?.update((b - skip) * images, {
          loss: acc.loss / acc.images,
          acc: acc.correct / acc.images,
          lr: stepLr,
        });
        const verdict = await options.callbacks?.onStep?.(info);
        if (verdict === false) {
          await bar?.stop();
          return await stop("callback");
        }
      } finally {
        disposeBatch(batch);
        tf.dispose([...kept, ...Object.values(grads), ...Object.values(prepared)]);
        if (value) value.dispose();
        if (clipped) tf.dispose([...clipped.values()]);
        normT?.dispose();
      }
      if (options.signal?.aborted) {
        await bar?.stop();
        return await stop("signal");
      }
      if (options.stopAfterSteps !== undefined && state.globalStep >= options.stopAfterSteps) {
        await bar?.stop();
        return await stop("stopAfterSteps");
      }
      if (options.checkpointEverySteps && state.globalStep % options.checkpointEverySteps === 0) {
        await checkpoint();
      }
      if (b >= stepsPerEpoch) break;
    }
    if (b < stepsPerEpoch) {
      throw new Error(
        `train: the batch source yielded ${b} batches in epoch ${epoch}, expected stepsPerEpoch = ${stepsPerEpoch}`,
      );
    }
    const info: EpochInfo = {
      epoch,
      globalStep: state.globalStep,
      trainLoss: acc.loss / acc.images,
      trainAccuracy: acc.correct / acc.images,
      trainImgPerSec: acc.images / Math.max(acc.seconds, 1e-9),
      seconds: (performance.now() - epochStart) / 1000,
      lr: lastLr,
    };
    if (options.eval) {
      info.eval = await evaluate(model, options.eval, { logits: options.evalLogits, epoch });
    }
    await bar?.stop(info.eval ? { evalAcc: info.eval.accuracy } : {});
    epochInfos.push(info);
    logLines.push(JSON.stringify({ type: "epoch", ...info }));
    state = { ...state, epoch: epoch + 1, stepInEpoch: 0 };
    await checkpoint();
    await options.callbacks?.onEpochEnd?.(info);
  }
  opt.dispose();
  return {
    completed: true,
    globalStep: state.globalStep,
    epochs: epochInfos,
    seconds: (performance.now() - t0) / 1000,
    progress: { ...state, rngState: rng.state },
  };
}
