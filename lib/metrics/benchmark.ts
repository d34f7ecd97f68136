/**
 * Efficiency measurements: latency, throughput and peak memory of any callback, and a one-call
 * benchmark of a {@link Model} (parameters, analytic GMACs, latency at batch 1, throughput at a stated
 * batch, memory) on the current backend.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { ForwardOptions, ForwardOutput, GmacsReport, Model } from "../models/types.ts";
import { quantile } from "./bootstrap.ts";

/** Options of {@link measureLatency} and {@link measureThroughput}. */
export interface TimingOptions {
  /** Untimed calls before measuring (default 3). */
  warmup?: number;
  /** Timed calls (default 20). */
  repeats?: number;
}

/** Wall-clock statistics of repeated calls, in milliseconds. */
export interface LatencyStats {
  medianMs: number;
  p95Ms: number;
  meanMs: number;
  minMs: number;
  maxMs: number;
  warmup: number;
  repeats: number;
  /** Every timed call, in order. */
  samplesMs: number[];
}

function checkTiming(fn: string, o: TimingOptions): Required<TimingOptions> {
  const { warmup = 3, repeats = 20 } = o;
  if (!Number.isInteger(warmup) || warmup < 0) {
    throw new RangeError(`${fn}: warmup is ${warmup}; expected an integer >= 0`);
  }
  if (!Number.isInteger(repeats) || repeats < 1) {
    throw new RangeError(`${fn}: repeats is ${repeats}; expected an integer >= 1`);
  }
  return { warmup, repeats };
}

/**
 * Times `run` (which must finish its work before returning or resolving, e.g. by awaiting `data()`):
 * `warmup` untimed calls, then `repeats` timed ones; median, p95 (linear interpolation), mean, min, max.
 *
 * @example
 * ```ts
 * const lat = await measureLatency(forwardRunner(model, x1), { warmup: 3, repeats: 20 });
 * console.log(lat.medianMs, lat.p95Ms);
 * ```
 */
export async function measureLatency(
  run: () => unknown | Promise<unknown>,
  options: TimingOptions = {},
): Promise<LatencyStats> {
  const { warmup, repeats } = checkTiming("measureLatency", options);
  for (let i = 0; i < warmup; i++) await run();
  const samplesMs: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await run();
    samplesMs.push(performance.now() - t0);
  }
  return {
    medianMs: quantile(samplesMs, 0.5),
    p95Ms: quantile(samplesMs, 0.95),
    meanMs: samplesMs.reduce((a, b) => a + b, 0) / repeats,
    minMs: Math.min(...samplesMs),
    maxMs: Math.max(...samplesMs),
    warmup,
    repeats,
    samplesMs,
  };
}

/** Throughput of a batched callback. */
export interface ThroughputStats {
  /** batchSize · repeats / total timed seconds. */
  imagesPerSecond: number;
  /** Images per call. */
  batchSize: number;
  /** Timing of the batched calls. */
  latency: LatencyStats;
}

/**
 * Images per second of `run`, which processes `batchSize` images per call.
 *
 * @example
 * ```ts
 * const tp = await measureThroughput(forwardRunner(model, x32), { batchSize: 32, repeats: 10 });
 * console.log(`${tp.imagesPerSecond.toFixed(1)} img/s at batch ${tp.batchSize}`);
 * ```
 */
export async function measureThroughput(
  run: () => unknown | Promise<unknown>,
  options: TimingOptions & { batchSize: number },
): Promise<ThroughputStats> {
  const { batchSize } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`measureThroughput: batchSize is ${batchSize}; expected an integer >= 1`);
  }
  const latency = await measureLatency(run, options);
  const totalS = latency.samplesMs.reduce((a, b) => a + b, 0) / 1000;
  return { imagesPerSecond: (batchSize * latency.repeats) / Math.max(totalS, 1e-9), batchSize, latency };
}

/** Memory use around one call. */
export interface MemoryStats {
  /**
   * Peak bytes of all live tfjs tensors during the call (`tf.profile().peakBytes`): weights, inputs and
   * every intermediate still referenced (inside one `tf.tidy`, that is all of them until it returns).
   */
  tfPeakBytes: number;
  /** Bytes of tensors the call created and did not free (0 when it does not leak). */
  tfNewBytes: number;
  /** Process resident set size right after the call (`Deno.memoryUsage().rss`). */
  rssBytes: number;
  /**
   * Highest resident set size of the process so far (Linux `VmHWM`; includes everything run before,
   * so compare models in separate processes), or `null` where the OS does not report it.
   */
  rssPeakBytes: number | null;
}

/** The process's peak resident set size (Linux `VmHWM`) in bytes, or `null` if unavailable. */
export function peakRss(): number | null {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/^VmHWM:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * Peak tfjs tensor bytes during one call of `run`, plus process RSS.
 *
 * @example
 * ```ts
 * const mem = await measureMemory(forwardRunner(model, x1));
 * console.log((mem.tfPeakBytes / 2 ** 20).toFixed(1), "MiB");
 * ```
 */
export async function measureMemory(run: () => unknown | Promise<unknown>): Promise<MemoryStats> {
  const info = await tf.profile(async () => {
    await run();
    return [] as tf.Tensor[];
  });
  return {
    tfPeakBytes: info.peakBytes,
    tfNewBytes: info.newBytes,
    rssBytes: Deno.memoryUsage().rss,
    rssPeakBytes: peakRss(),
  };
}

/** Disposes every tensor of a forward output (logits and aux). */
export function disposeOutput(out: ForwardOutput | tf.Tensor): void {
  if (out instanceof tf.Tensor) {
    out.dispose();
    return;
  }
  out.logits.dispose();
  const a = out.aux;
  if (!a) return;
  a.cnnLogits?.dispose();
  a.scores?.dispose();
  a.keptIndices?.dispose();
  a.attention?.forEach((t) => t.dispose());
}

/** Something with a forward pass: a {@link Model}, or a function from images to logits / a forward output. */
export type Forward =
  | Pick<Model, "forward">
  | ((x: tf.Tensor4D) => tf.Tensor | ForwardOutput);

/**
 * A callback that runs one forward pass on `x`, waits for the logits (`await data()`) and frees every
 * output tensor, for {@link measureLatency} / {@link measureThroughput} / {@link measureMemory}.
 *
 * @example
 * ```ts
 * const run = forwardRunner(model, tf.zeros([1, 32, 32, 3]), { keepRatio: 0.5 });
 * await run();
 * ```
 */
export function forwardRunner(model: Forward, x: tf.Tensor4D, options?: ForwardOptions): () => Promise<void> {
  return async () => {
    const out = typeof model === "function" ? model(x) : model.forward(x, options);
    try {
      await (out instanceof tf.Tensor ? out : out.logits).data();
    } finally {
      disposeOutput(out);
    }
  };
}

/** Options of {@link benchmarkModel}. */
export interface BenchmarkOptions extends TimingOptions {
  /** Input side in pixels (default: the model config's `imgSize`, or the hybrid's ViT `imgSize`). */
  imgSize?: number;
  /** Input channels (default 3). */
  channels?: number;
  /** Batch of the throughput measurement (default 32); latency is always at batch 1. */
  batchSize?: number;
  /** Forward options, e.g. `{ keepRatio: 0.5 }` for the hybrid. */
  forward?: ForwardOptions;
}

/** What {@link benchmarkModel} measured, with its units in the field names. */
export interface EfficiencyReport {
  /** Trainable parameters. */
  params: number;
  /** Analytic GMACs per image at the benchmarked keep ratio (CNN and ViT separately and together). */
  gmacs: GmacsReport;
  /** Batch-1 latency. */
  latency: LatencyStats;
  /** Throughput at `batchSize`. */
  throughput: ThroughputStats;
  /** Memory at batch `batchSize` (one forward). */
  memory: MemoryStats;
  /** tfjs backend the numbers were measured on. */
  backend: string;
  batchSize: number;
  imgSize: number;
}

function configImgSize(model: Model): number {
  const c = model.config;
  return c.model === "hybrid" ? c.vit.imgSize : c.imgSize;
}

/**
 * Parameters, analytic GMACs, batch-1 latency (median, p95), throughput at `batchSize` and peak memory
 * of a model on the current tfjs backend, on random inputs.
 *
 * @example
 * ```ts
 * const eff = await benchmarkModel(model, { batchSize: 16, forward: { keepRatio: 0.5 } });
 * console.log(eff.gmacs.total, eff.latency.medianMs, eff.throughput.imagesPerSecond);
 * ```
 */
export async function benchmarkModel(
  model: Model,
  options: BenchmarkOptions = {},
): Promise<EfficiencyReport> {
  const imgSize = options.imgSize ?? configImgSize(model);
  const { channels = 3, batchSize = 32 } = options;
  if (!Number.isInteger(imgSize) || imgSize < 1) {
    throw new RangeError(`benchmarkModel: imgSize is ${imgSize}; expected a positive integer`);
  }
  const x1 = tf.randomUniform([1, imgSize, imgSize, channels], 0, 1, "float32", 1) as tf.Tensor4D;
  const xb = tf.randomUniform([batchSize, imgSize, imgSize, channels], 0, 1, "float32", 2) as tf.Tensor4D;
  try {
    const latency = await measureLatency(forwardRunner(model, x1, options.forward), options);
    const throughput = await measureThroughput(forwardRunner(model, xb, options.forward), {
      ...options,
      batchSize,
    });
    const memory = await measureMemory(forwardRunner(model, xb, options.forward));
    const keepRatio = options.forward?.keepRatio;
    return {
      params: model.paramCount(),
      gmacs: model.gmacs(keepRatio !== undefined ? { keepRatio, imgSize } : { imgSize }),
      latency,
      throughput,
      memory,
      backend: tf.getBackend(),
      batchSize,
      imgSize,
    };
  } finally {
    x1.dispose();
    xb.dispose();
  }
}
