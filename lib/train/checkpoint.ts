/**
 * Training checkpoints: ONE safetensors file holding the model's whole state (trainable weights and
 * batch-norm statistics, timm names, tfjs layouts), the AdamW moments, and in its metadata the step/epoch
 * counters, the RNG state and the run's config. Written atomically (temp file + rename), so an interrupted
 * write never replaces a good checkpoint; a single file means weights and optimiser state can never disagree.
 *
 * Tensor names: `model.<name>`, `optim.exp_avg.<name>`, `optim.exp_avg_sq.<name>`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { readSafetensors, type TensorToWrite, writeSafetensors } from "../weights/safetensors.ts";
import type { AdamWState } from "./adamw.ts";

/** Format tag stored in the metadata. */
export const CHECKPOINT_FORMAT = "cnnvit-train-checkpoint/1";

/** Counters and RNG state that let training continue exactly where it stopped. */
export interface TrainingProgressState {
  /** Epoch being run (0-based) when the checkpoint was taken. */
  epoch: number;
  /** Batches of that epoch already consumed (0 = the epoch has not started). */
  stepInEpoch: number;
  /** Optimiser steps taken in total. */
  globalStep: number;
  /** State of the trainer's {@link Rng} (`rng.state`). */
  rngState: number;
  /** Anything else the trainer wants back (best metric, batch size, stage...). JSON-serialisable. */
  extra?: Record<string, unknown>;
}

/** Everything a checkpoint holds, as read back. The caller disposes the tensors. */
export interface Checkpoint {
  /** Model state by name (float32 tensors in tfjs layout). */
  model: Map<string, tf.Tensor>;
  /** Optimiser state. */
  optimizer: AdamWState;
  progress: TrainingProgressState;
  /** The run configuration stored with it. */
  config: Record<string, unknown>;
}

/**
 * Writes a checkpoint atomically. `model` is usually `model.stateDict()`.
 *
 * @example
 * ```ts
 * await saveCheckpoint("results/run/checkpoint.safetensors", model.stateDict(), opt.state(), progress, config);
 * ```
 */
export async function saveCheckpoint(
  path: string,
  model: Map<string, tf.Tensor>,
  optimizer: AdamWState,
  progress: TrainingProgressState,
  config: Record<string, unknown> = {},
): Promise<void> {
  const tensors = new Map<string, TensorToWrite>();
  const put = async (name: string, t: tf.Tensor) => {
    if (t.dtype !== "float32" && t.dtype !== "int32") {
      throw new Error(
        `saveCheckpoint: tensor "${name}" has dtype ${t.dtype}; only float32 and int32 are stored`,
      );
    }
    const data = (await t.data()) as Float32Array | Int32Array;
    tensors.set(name, { shape: [...t.shape], data: data.slice() });
  };
  for (const [k, t] of model) await put(`model.${k}`, t);
  for (const [k, t] of optimizer.m) await put(`optim.exp_avg.${k}`, t);
  for (const [k, t] of optimizer.v) await put(`optim.exp_avg_sq.${k}`, t);
  await writeSafetensors(path, tensors, {
    format: CHECKPOINT_FORMAT,
    layout: "tfjs",
    optimizer: JSON.stringify({ type: "adamw", step: optimizer.step }),
    progress: JSON.stringify(progress),
    config: JSON.stringify(config),
  });
}

/**
 * Reads a checkpoint written by {@link saveCheckpoint}; errors name the file and what is wrong.
 *
 * @example
 * ```ts
 * const ckpt = await loadCheckpoint("results/run/checkpoint.safetensors");
 * ```
 */
export async function loadCheckpoint(path: string): Promise<Checkpoint> {
  const file = await readSafetensors(path);
  const meta = file.metadata;
  if (meta.format !== CHECKPOINT_FORMAT) {
    throw new Error(
      `loadCheckpoint: "${path}" has format ${
        JSON.stringify(meta.format)
      }, expected "${CHECKPOINT_FORMAT}" ` +
        "(a training checkpoint written by saveCheckpoint; plain weights load with lib/weights)",
    );
  }
  let progress: TrainingProgressState, opt: { step: number }, config: Record<string, unknown>;
  try {
    progress = JSON.parse(meta.progress);
    opt = JSON.parse(meta.optimizer);
    config = JSON.parse(meta.config ?? "{}");
  } catch (e) {
    throw new Error(`loadCheckpoint: "${path}" has unreadable metadata (${(e as Error).message})`);
  }
  for (const k of ["epoch", "stepInEpoch", "globalStep", "rngState"] as const) {
    if (!Number.isInteger(progress[k])) {
      throw new Error(
        `loadCheckpoint: "${path}" progress.${k} is ${JSON.stringify(progress[k])}, expected an integer`,
      );
    }
  }
  const model = new Map<string, tf.Tensor>();
  const m = new Map<string, tf.Tensor>();
  const v = new Map<string, tf.Tensor>();
  for (const [name, raw] of file.tensors) {
    const dtype = raw.data instanceof Int32Array ? "int32" : "float32";
    const t = () => tf.tensor(raw.data, raw.shape, dtype);
    if (name.startsWith("model.")) model.set(name.slice(6), t());
    else if (name.startsWith("optim.exp_avg_sq.")) v.set(name.slice(17), t());
    else if (name.startsWith("optim.exp_avg.")) m.set(name.slice(14), t());
    else {
      tf.dispose([...model.values(), ...m.values(), ...v.values()]);
      throw new Error(
        `loadCheckpoint: "${path}" has an unexpected tensor "${name}" (expected model.*, optim.*)`,
      );
    }
  }
  return { model, optimizer: { step: opt.step, m, v }, progress, config };
}

/**
 * Copies checkpoint tensors into the model's variables. Every state tensor must be present with the
 * same shape; missing, unknown or mis-shaped names are listed in the error (nothing is assigned then).
 *
 * @example
 * ```ts
 * assignState(model.stateDict(), ckpt.model, "checkpoint.safetensors");
 * ```
 */
export function assignState(
  target: Map<string, tf.Variable>,
  source: Map<string, tf.Tensor>,
  where = "state",
): void {
  const missing = [...target.keys()].filter((k) => !source.has(k));
  const unknown = [...source.keys()].filter((k) => !target.has(k));
  const misShaped = [...target.keys()].filter((k) =>
    source.has(k) && source.get(k)!.shape.join(",") !== target.get(k)!.shape.join(",")
  ).map((k) => `${k} [${source.get(k)!.shape}] vs model [${target.get(k)!.shape}]`);
  if (missing.length || unknown.length || misShaped.length) {
    throw new Error(
      `${where}: does not match the model: missing [${missing.join(", ")}], unknown [${
        unknown.join(", ")
      }], ` +
        `mis-shaped [${misShaped.join("; ")}]`,
    );
  }
  for (const [k, variable] of target) variable.assign(source.get(k)!);
}
