/**
 * Adaptive batch size: the largest batch whose training step fits a memory budget (the study's 8 GB
 * laptop). Peak tensor memory of one step is measured with `tf.profile` (engine-tracked bytes, every
 * backend) at two small batch sizes, extrapolated linearly, and the prediction is verified (halving until
 * it fits). Model state changed by the trial steps (batch-norm statistics) is restored afterwards.
 * Given a switch for gradient checkpointing, it also tries the model with checkpointing when the batch
 * asked for does not fit without, and keeps checkpointing only when that allows a larger batch.
 * On the WebGPU backend each trial runs inside GPU error scopes (an out-of-memory error fails that batch
 * size instead of corrupting later steps), the largest tensor of a step is kept under the adapter's
 * `maxStorageBufferBindingSize` (one buffer cannot be larger), and the GPU buffers pooled by the trials
 * are released afterwards.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Model } from "../models/types.ts";
import { releasePooledGpuBuffers, webgpuAdapter, withGpuErrorScope } from "../backend/webgpu.ts";
import { crossEntropy } from "./losses.ts";

/** One measurement of {@link findBatchSize}. */
export interface BatchSizeTrial {
  batchSize: number;
  /** Peak tensor bytes during the step (NaN if it failed). */
  peakBytes: number;
  /** Bytes of the largest tensor the step made (NaN if it failed). */
  maxTensorBytes?: number;
  /** Error message when the step failed (e.g. out of memory). */
  error?: string;
}

/** What {@link findBatchSize} decided, for the run's provenance. */
export interface BatchSizeReport {
  batchSize: number;
  budgetBytes: number;
  /** Peak tensor bytes measured at the chosen size. */
  peakBytes: number;
  /** Linear model `peak ≈ fixed + perImage · n` fitted from the small trials. */
  fixedBytes: number;
  perImageBytes: number;
  trials: BatchSizeTrial[];
  method: string;
  /**
   * With {@link FindBatchSizeOptions.gradCheckpoint}: whether the chosen size relies on gradient
   * checkpointing (the switch is left in that state).
   */
  gradCheckpoint?: boolean;
  /** With checkpointing chosen: what the search found without it (a size, or why none fitted). */
  withoutCheckpoint?: { batchSize: number; peakBytes: number } | { error: string };
}

/** Options of {@link findBatchSize}. */
export interface FindBatchSizeOptions {
  /** Runs one training step on a batch of `n` and frees everything it made (synchronous). */
  trial: (n: number) => void;
  /** Memory budget for tensors, in bytes. */
  budgetBytes: number;
  /** Upper bound (the batch size asked for). */
  maxBatchSize: number;
  /** Lower bound (default 1); below it the function throws. */
  minBatchSize?: number;
  /** Variables to snapshot and restore around the trials (default none). */
  restore?: Map<string, tf.Variable>;
  /** Round the prediction down to a multiple of this (default 8, or 1 under 8). */
  multipleOf?: number;
  /**
   * Turns the model's gradient checkpointing on or off (e.g. `(on) => model.setGradCheckpointing(on)`).
   * When given, the search runs without checkpointing first and, if the largest fitting batch is below
   * `maxBatchSize` (or none fits), again with it; the larger batch wins (without checkpointing on a
   * tie, since it is faster), the switch is left accordingly and the report says which.
   */
  gradCheckpoint?: (enable: boolean) => void;
}

async function measure(trial: (n: number) => void, n: number): Promise<BatchSizeTrial> {
  try {
    const info = await tf.profile(() =>
      withGpuErrorScope(`training step at batch size ${n}`, () => trial(n))
    );
    let maxTensorBytes = 0;
    for (const k of info.kernels) {
      for (const shape of k.outputShapes) {
        maxTensorBytes = Math.max(maxTensorBytes, 4 * shape.reduce((a, b) => a * b, 1));
      }
    }
    return { batchSize: n, peakBytes: info.peakBytes, maxTensorBytes };
  } catch (e) {
    return { batchSize: n, peakBytes: NaN, error: (e as Error).message.split("\n")[0].slice(0, 200) };
  }
}

/**
 * Finds the largest batch size ≤ `maxBatchSize` whose step peaks under `budgetBytes` of tensor memory
 * (with `gradCheckpoint`: with or without gradient checkpointing, see {@link FindBatchSizeOptions}).
 *
 * @example
 * ```ts
 * const r = await findBatchSize({ trial: trainStepTrial(model, [32, 32, 3], 10), budgetBytes: 2 ** 30, maxBatchSize: 256 });
 * const r2 = await findBatchSize({
 *   trial: trainStepTrial(vit, [32, 32, 3], 10), budgetBytes: 2 ** 30, maxBatchSize: 256,
 *   gradCheckpoint: (on) => vit.setGradCheckpointing?.(on),
 * }); // r2.gradCheckpoint says whether the chosen batch needs it
 * ```
 */
export async function findBatchSize(options: FindBatchSizeOptions): Promise<BatchSizeReport> {
  const { budgetBytes, maxBatchSize } = options;
  const minBs = options.minBatchSize ?? 1;
  if (!(budgetBytes > 0)) throw new Error(`findBatchSize: budgetBytes must be > 0, got ${budgetBytes}`);
  if (!(Number.isInteger(maxBatchSize) && maxBatchSize >= minBs && minBs >= 1)) {
    throw new Error(
      `findBatchSize: need integers 1 ≤ minBatchSize (${minBs}) ≤ maxBatchSize (${maxBatchSize})`,
    );
  }
  const toggle = options.gradCheckpoint;
  if (!toggle) return await search(options);
  toggle(false);
  let plain: BatchSizeReport | undefined;
  let plainError = "";
  try {
    plain = await search(options);
    if (plain.batchSize >= options.maxBatchSize) return { ...plain, gradCheckpoint: false };
  } catch (e) {
    plainError = (e as Error).message;
  }
  toggle(true);
  let ckpt: BatchSizeReport;
  try {
    ckpt = await search(options);
  } catch (e) {
    toggle(false);
    if (plain) return { ...plain, gradCheckpoint: false };
    throw new Error(`${plainError}; with gradient checkpointing: ${(e as Error).message}`);
  }
  if (plain && plain.batchSize >= ckpt.batchSize) {
    toggle(false);
    return { ...plain, gradCheckpoint: false };
  }
  return {
    ...ckpt,
    gradCheckpoint: true,
    withoutCheckpoint: plain
      ? { batchSize: plain.batchSize, peakBytes: plain.peakBytes }
      : { error: plainError },
    method: ckpt.method + "; without gradient checkpointing the batch was smaller, so checkpointing is on",
  };
}

async function search(options: FindBatchSizeOptions): Promise<BatchSizeReport> {
  const { trial, budgetBytes, maxBatchSize } = options;
  const minBs = options.minBatchSize ?? 1;
  const snapshot = options.restore
    ? new Map([...options.restore].map(([k, v]) => [k, tf.clone(v)]))
    : undefined;
  const trials: BatchSizeTrial[] = [];
  try {
    const n1 = Math.min(maxBatchSize, Math.max(minBs, 2));
    const n2 = Math.min(maxBatchSize, Math.max(n1 * 2, 4));
    const t1 = await measure(trial, n1);
    trials.push(t1);
    let perImage = 0, fixed = t1.peakBytes;
    if (n2 > n1) {
      const t2 = await measure(trial, n2);
      trials.push(t2);
      perImage = Math.max(0, (t2.peakBytes - t1.peakBytes) / (n2 - n1));
      fixed = t1.peakBytes - perImage * n1;
    }
    const mult = options.multipleOf ?? 8;
    let guess = perImage > 0 ? Math.floor((budgetBytes - fixed) / perImage) : maxBatchSize;
    // WebGPU: no tensor may exceed what one storage buffer binding holds (the largest tensor of a step
    // grows with the batch: activations, attention scores).
    const gpu = tf.getBackend() === "webgpu" ? webgpuAdapter() : undefined;
    let limitNote = "";
    if (gpu && t1.maxTensorBytes) {
      const limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
      const byLimit = Math.floor(limit / (t1.maxTensorBytes / n1));
      if (byLimit < guess) {
        guess = byLimit;
        limitNote =
          `; capped by the adapter's maxStorageBufferBindingSize (${(limit / 2 ** 20).toFixed(0)} MiB, ` +
          `"${gpu.name}")`;
      }
    }
    guess = Math.min(maxBatchSize, Math.max(minBs, guess));
    if (guess >= mult && guess < maxBatchSize) guess = Math.floor(guess / mult) * mult;
    for (let n = guess; n >= minBs; n = n === minBs ? minBs - 1 : Math.max(minBs, Math.floor(n / 2))) {
      const t = trials.find((x) => x.batchSize === n) ?? await measure(trial, n);
      if (!trials.includes(t)) trials.push(t);
      if (!t.error && t.peakBytes <= budgetBytes) {
        return {
          batchSize: n,
          budgetBytes,
          peakBytes: t.peakBytes,
          fixedBytes: fixed,
          perImageBytes: perImage,
          trials,
          method:
            "tf.profile peakBytes of one training step; linear fit from two small batches, then verified" +
            limitNote,
        };
      }
    }
    throw new Error(
      `findBatchSize: even batch size ${minBs} does not fit ${(budgetBytes / 2 ** 20).toFixed(0)} MiB ` +
        `(trials: ${
          trials.map((t) => `${t.batchSize}: ${t.error ?? (t.peakBytes / 2 ** 20).toFixed(1) + " MiB"}`).join(
            ", ",
          )
        })`,
    );
  } finally {
    if (snapshot && options.restore) {
      for (const [k, v] of options.restore) v.assign(snapshot.get(k)!);
      tf.dispose([...snapshot.values()]);
    }
    releasePooledGpuBuffers(); // tfjs-webgpu pools a buffer of every size the trials made
  }
}

/**
 * A trial for {@link findBatchSize}: forward and backward of cross-entropy (or `forward`'s logits) on
 * random images of `imageShape`, everything freed.
 *
 * @example
 * ```ts
 * const trial = trainStepTrial(model, [32, 32, 3], 10);
 * ```
 */
export function trainStepTrial(
  model: Model,
  imageShape: readonly [number, number, number],
  numClasses: number,
  forward: (x: tf.Tensor4D) => tf.Tensor2D = (x) => model.forward(x, { training: true }).logits,
): (n: number) => void {
  const vars = [...model.trainableVariables().values()];
  return (n) => {
    tf.tidy(() => {
      const x = tf.randomNormal([n, ...imageShape]) as tf.Tensor4D;
      const y = tf.cast(tf.mod(tf.range(0, n, 1, "int32"), numClasses), "int32") as tf.Tensor1D;
      const { value, grads } = tf.variableGrads(() => crossEntropy(forward(x), y), vars);
      tf.dispose([value, ...Object.values(grads)]);
    });
  };
}
