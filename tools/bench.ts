/**
 * `deno task bench`: speed of ResNet18 (CIFAR stem), ViT-Small (patch 4, 32x32) and the CNN-ViT
 * hybrid at several keep ratios on every available backend, side by side with PyTorch on the same
 * machine (`tools/bench_torch.py`, Debian's `python3-torch`), plus raw GEMM / convolution kernels.
 *
 * Each (model, backend) pair runs in its own subprocess so peak memory is per run. The protocol is the
 * same on both sides: every phase (training step, batch inference, batch-1 latency) warms up until its
 * step time is stable (at least `--warmup` 3 steps, until the last 3 agree within `--tolerance` 5%, at
 * most `--max-warmup` 12), then times `--train-iters` / `--infer-iters` 10 steps (`--latency-iters` 20)
 * and takes the median; the whole set of PyTorch/ours pairs runs `--rounds` 3 times, ours first in odd
 * rounds and PyTorch first in even ones, and the tables show the median over rounds with the min-max
 * range, ratios to PyTorch paired within a round. Other processes on the machine slow both sides alike
 * that way; the load average is recorded per round. With `--out`, results are rewritten after every
 * round (marked PARTIAL until the last). `--quick` is a smoke test of the protocol (batch 8, 2 rounds).
 *
 * Training of models with transformer blocks (ViT, hybrid) uses gradient checkpointing (labelled
 * "ckpt"), so a batch-64 ViT-Small step fits the 4 GiB wasm heap and the memory column compares batch 64
 * with PyTorch's batch 64; PyTorch runs without checkpointing, the reference. `--no-grad-checkpoint`
 * measures the plain tape instead (micro-batches where the batch does not fit).
 *
 * ```sh
 * deno task bench                                   # everything (long: wasm training dominates)
 * deno run -A tools/bench.ts --models resnet18 --backends native --no-torch
 * deno run -A tools/bench.ts --models vit_small --backends native --no-kernels   # one model, with PyTorch
 * deno run -A tools/bench.ts --kernels-only
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { fileURLToPath as fromFileUrl } from "node:url";
import { basename, dirname, join } from "node:path";
import {
  type BackendName,
  formatAdapter,
  initBackend,
  loadNativeBackend,
  nativeBackendStatus,
  probeWebGPU,
} from "../lib/backend/mod.ts";
import { writeFileAtomicSync } from "../lib/util/mod.ts";
import { CliError, intFlag, parseCli, runCli } from "./cli.ts";
import { type Spread, spread, type StableTiming, timeUntilStable } from "../lib/metrics/stable_timing.ts";

/** One measured (model, backend) pair. */
interface RunResult {
  model: string;
  backend: string;
  keepRatio?: number;
  gmacs?: number;
  inferImgS?: number;
  trainImgS?: number;
  latencyMs?: number;
  peakRssMiB?: number;
  baseRssMiB?: number;
  trainPeakRssMiB?: number;
  /** Micro-batches used when the whole batch did not fit the wasm heap. */
  trainMicroBatch?: number;
  inferMicroBatch?: number;
  /** Training used gradient checkpointing of the transformer blocks. */
  gradCheckpoint?: boolean;
  error?: string;
  config?: unknown;
  torch?: string;
  /** webgpu: the adapter's name, and whether it is a software rasteriser (then never compared to PyTorch). */
  adapter?: string;
  software?: boolean;
  /** Warm-up and timed steps of each phase (one round). */
  trainTiming?: StableTiming;
  inferTiming?: StableTiming;
  latencyTiming?: StableTiming;
  /** Over the rounds (summaries only): spread of the per-round values. */
  inferImgSSpread?: Spread;
  trainImgSSpread?: Spread;
  latencyMsSpread?: Spread;
  /** Over the rounds (summaries only): this side / PyTorch, paired within each round. */
  inferVsTorch?: Spread;
  trainVsTorch?: Spread;
  /** Rounds that measured this (summaries only). */
  rounds?: number;
  /** The round of a single measurement. */
  round?: number;
}

interface WorkerSpec {
  model: string;
  keepRatio?: number;
  backend: BackendName;
  threads: number;
  batch: number;
  inferIters: number;
  trainIters: number;
  latencyIters: number;
  /** Warm-up steps at least; warm-up ends when the step time is stable (see timeUntilStable). */
  warmup: number;
  /** Warm-up steps at most. */
  maxWarmup: number;
  /** Stable = the last 3 warm-up steps within this fraction of each other. */
  tolerance: number;
  /** Train on micro-batches of this size (gradients averaged, one optimiser step per batch). */
  trainMicroBatch?: number;
  /** Run inference on micro-batches of this size, one after the other. */
  inferMicroBatch?: number;
  /** Train with gradient checkpointing (models with transformer blocks only). */
  gradCheckpoint?: boolean;
}

const RESULT_TAG = "BENCH_RESULT ";
const PHASE_TAG = "BENCH_PHASE ";
const TORCH_SCRIPT = fromFileUrl(new URL("./bench_torch.py", import.meta.url));

function rssMiB(field: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(new RegExp(`${field}:\\s+(\\d+) kB`));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

function seeded(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = s / 4294967296 * 2 - 1;
  }
  return out;
}

// ------------------------------------------------------------------ worker (one model, one backend)

async function worker(spec: WorkerSpec): Promise<RunResult> {
  const info = await initBackend(spec.backend, { log: false, threads: spec.threads });
  const { createModel } = await import("../lib/models/mod.ts");
  const { AdamW } = await import("../lib/train/adamw.ts");
  const { crossEntropy } = await import("../lib/train/losses.ts");
  const base = rssMiB("VmRSS");
  const model = createModel(spec.model, spec.keepRatio !== undefined ? { keepRatio: spec.keepRatio } : {});
  // Only training records a tape, so checkpointing changes nothing else.
  const ckpt = (spec.gradCheckpoint ?? false) && model.setGradCheckpointing !== undefined;
  if (ckpt) model.setGradCheckpointing!(true);
  const cfg = model.config as {
    model: string;
    imgSize?: number;
    numClasses?: number;
    vit?: { imgSize: number; numClasses: number };
  };
  const size = cfg.vit ? cfg.vit.imgSize : cfg.imgSize!;
  const classes = cfg.vit ? cfg.vit.numClasses : cfg.numClasses!;
  const b = spec.batch;
  const x = tf.tensor4d(seeded(b * size * size * 3, 1), [b, size, size, 3]);
  const x1 = tf.slice(x, [0, 0, 0, 0], [1, size, size, 3]);
  const y = tf.tensor1d(Array.from({ length: b }, (_, i) => i % classes), "int32");
  const result: RunResult = {
    model: spec.model,
    backend: spec.backend,
    keepRatio: spec.keepRatio,
    gmacs: model.gmacs().total,
    baseRssMiB: base,
    gradCheckpoint: ckpt,
    config: model.config,
    ...(info.adapter ? { adapter: info.adapter.name, software: info.adapter.software } : {}),
  };
  const owned: tf.Tensor[] = [];
  // Warm up until the step time is stable, then the median of the timed steps: one slow step (a GC,
  // another process) does not move it. tools/bench_torch.py follows the same rule.
  const timeIt = (fn: () => Promise<void>, iters: number) =>
    timeUntilStable(fn, {
      minWarmup: spec.warmup,
      maxWarmup: spec.maxWarmup,
      tolerance: spec.tolerance,
      iters,
    });
  try {
    // Micro-batches (when the full batch does not fit the 4 GiB wasm heap): training
    // averages the chunk gradients and takes one optimiser step; inference runs the chunks in turn.
    const chunksOf = (micro: number) => {
      const chunks: { xs: tf.Tensor4D; ys: tf.Tensor1D }[] = [];
      for (let s0 = 0; s0 < b; s0 += micro) {
        const n = Math.min(micro, b - s0);
        const xs = n === b ? x : tf.slice(x, [s0, 0, 0, 0], [n, size, size, 3]);
        const ys = n === b ? y : tf.slice(y, [s0], [n]);
        if (n !== b) owned.push(xs, ys);
        chunks.push({ xs, ys });
      }
      return chunks;
    };
    if (spec.trainIters > 0) {
      console.log(PHASE_TAG + "train"); // tells the orchestrator which phase ran out of heap
      result.trainMicroBatch = Math.min(spec.trainMicroBatch ?? b, b);
      const chunks = chunksOf(result.trainMicroBatch);
      const vars = model.trainableVariables();
      const byTfName = new Map([...vars].map(([name, v]) => [v.name, name]));
      const opt = new AdamW({ lr: 1e-3, weightDecay: 0.05 });
      const step = async () => {
        let acc: Map<string, tf.Tensor> | undefined;
        let lastLoss: tf.Scalar | undefined;
        for (const { xs, ys } of chunks) {
          const { value, grads } = tf.variableGrads(
            () => crossEntropy(model.forward(xs, { training: true }).logits, ys),
            [...vars.values()],
          );
          const scale = xs.shape[0] / b;
          const named = new Map(Object.entries(grads).map(([k, g]) => [byTfName.get(k)!, g]));
          if (chunks.length > 1) {
            const scaled = new Map([...named].map(([k, g]) => [k, tf.mul(g, scale)]));
            tf.dispose([...named.values()]);
            if (acc) {
              const sum = new Map([...acc].map(([k, g]) => [k, tf.add(g, scaled.get(k)!)]));
              tf.dispose([...acc.values(), ...scaled.values()]);
              acc = sum;
            } else acc = scaled;
          } else acc = named;
          lastLoss?.dispose();
          lastLoss = value;
        }
        try {
          opt.step(vars, acc!);
          await lastLoss!.data();
        } finally {
          tf.dispose([lastLoss!, ...acc!.values()]);
        }
      };
      result.trainTiming = await timeIt(step, spec.trainIters);
      result.trainImgS = b / result.trainTiming.medianS;
      result.trainPeakRssMiB = rssMiB("VmHWM");
    }
    if (spec.inferIters > 0 || spec.latencyIters > 0) console.log(PHASE_TAG + "infer");
    if (spec.inferIters > 0) {
      result.inferMicroBatch = Math.min(spec.inferMicroBatch ?? b, b);
      const chunks = chunksOf(result.inferMicroBatch);
      const infer = async () => {
        for (const { xs } of chunks) {
          const out = model.forward(xs);
          try {
            await out.logits.data();
          } finally {
            tf.dispose(out as unknown as tf.TensorContainer);
          }
        }
      };
      result.inferTiming = await timeIt(infer, spec.inferIters);
      result.inferImgS = b / result.inferTiming.medianS;
    }
    if (spec.latencyIters > 0) {
      const one = async () => {
        const out = model.forward(x1 as tf.Tensor4D);
        try {
          await out.logits.data();
        } finally {
          tf.dispose(out as unknown as tf.TensorContainer);
        }
      };
      result.latencyTiming = await timeIt(one, spec.latencyIters);
      result.latencyMs = result.latencyTiming.medianS * 1000;
    }
  } finally {
    tf.dispose([x, x1, y, ...owned]);
    model.dispose();
  }
  result.peakRssMiB = rssMiB("VmHWM");
  return result;
}

// ------------------------------------------------------------------ kernels (in process)

interface KernelResult {
  backend: string;
  kernel: string;
  gmacs: number;
  ms: number;
  gmacPerS: number;
}

async function benchKernels(backends: BackendName[], threads: number): Promise<KernelResult[]> {
  const out: KernelResult[] = [];
  const cases: {
    name: string;
    gmacs: number;
    make: () => { run: () => tf.Tensor | tf.Tensor[]; inputs: tf.Tensor[] };
  }[] = [
    {
      name: "GEMM 4160x384 · 384x1152 (ViT-S qkv, b64)",
      gmacs: 4160 * 384 * 1152 / 1e9,
      make: () => {
        const a = tf.tensor2d(seeded(4160 * 384, 1), [4160, 384]),
          w = tf.tensor2d(seeded(384 * 1152, 2), [384, 1152]);
        return { inputs: [a, w], run: () => tf.matMul(a, w) };
      },
    },
    {
      name: "GEMM 4160x1536 · 1536x384 (ViT-S fc2, b64)",
      gmacs: 4160 * 1536 * 384 / 1e9,
      make: () => {
        const a = tf.tensor2d(seeded(4160 * 1536, 1), [4160, 1536]),
          w = tf.tensor2d(seeded(1536 * 384, 2), [1536, 384]);
        return { inputs: [a, w], run: () => tf.matMul(a, w) };
      },
    },
    {
      name: "batched q·kᵀ 384x(65x64 · 64x65) (ViT-S attn, b64)",
      gmacs: 384 * 65 * 64 * 65 / 1e9,
      make: () => {
        const q = tf.tensor3d(seeded(384 * 65 * 64, 1), [384, 65, 64]),
          k = tf.tensor3d(seeded(384 * 65 * 64, 2), [384, 65, 64]);
        return { inputs: [q, k], run: () => tf.matMul(q, k, false, true) };
      },
    },
    {
      name: "conv 3x3 64→64 32x32 b64 forward",
      gmacs: 64 * 32 * 32 * 9 * 64 * 64 / 1e9,
      make: () => {
        const x = tf.tensor4d(seeded(64 * 32 * 32 * 64, 1), [64, 32, 32, 64]);
        const w = tf.tensor4d(seeded(9 * 64 * 64, 2), [3, 3, 64, 64]);
        return { inputs: [x, w], run: () => tf.conv2d(x, w, 1, "same") };
      },
    },
    {
      name: "conv 3x3 64→64 32x32 b64 both gradients",
      gmacs: 2 * 64 * 32 * 32 * 9 * 64 * 64 / 1e9,
      make: () => {
        const x = tf.tensor4d(seeded(64 * 32 * 32 * 64, 1), [64, 32, 32, 64]);
        const w = tf.tensor4d(seeded(9 * 64 * 64, 2), [3, 3, 64, 64]);
        const dy = tf.tensor4d(seeded(64 * 32 * 32 * 64, 3), [64, 32, 32, 64]);
        return {
          inputs: [x, w, dy],
          run: () => [
            tf.conv2dTranspose(dy, w, [64, 32, 32, 64], 1, "same"),
            tf.tidy(() =>
              tf.grad((ww: tf.Tensor) => tf.mul(tf.conv2d(x, ww as tf.Tensor4D, 1, "same"), dy).sum())(w)
            ),
          ],
        };
      },
    },
  ];
  for (const backend of backends) {
    try {
      await initBackend(backend, { log: false, threads });
    } catch (e) {
      console.log(`  ${backend}: unavailable (${e instanceof Error ? e.message : e})`);
      continue;
    }
    for (const c of cases) {
      const { inputs, run } = c.make();
      try {
        const once = async () => {
          const r = run();
          const rs = Array.isArray(r) ? r : [r];
          await Promise.all(rs.map((t) => t.data()));
          tf.dispose(rs);
        };
        await once();
        const reps = backend === "cpu" ? 1 : 3;
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) await once();
        const ms = (performance.now() - t0) / reps;
        out.push({ backend, kernel: c.name, gmacs: c.gmacs, ms, gmacPerS: c.gmacs / (ms / 1000) });
      } finally {
        tf.dispose(inputs);
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------ orchestration

async function runJson(
  cmd: string,
  args: string[],
  env?: Record<string, string>,
): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  const line = stdout.split("\n").reverse().find((l) => l.startsWith(RESULT_TAG) || l.startsWith("{"));
  if (!out.success || !line) {
    const why = (stderr.trim().split("\n").filter((l) =>
      /error|Error/.test(l)
    ).pop() ?? stderr.trim().split("\n").pop() ??
      "") || `exit code ${out.code}`;
    const phase = stdout.split("\n").reverse().find((l) => l.startsWith(PHASE_TAG))?.slice(PHASE_TAG.length);
    throw Object.assign(new Error(why.slice(0, 300)), { phase });
  }
  return JSON.parse(line.startsWith(RESULT_TAG) ? line.slice(RESULT_TAG.length) : line);
}

async function torchAvailable(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("/usr/bin/python3", {
      args: ["-c", "import torch; print(torch.__version__)"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

function machineState(): string {
  const read = (p: string) => {
    try {
      return Deno.readTextFileSync(p);
    } catch {
      return "";
    }
  };
  const cpu = read("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? Deno.build.arch;
  const load = read("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  const mem = read("/proc/meminfo").match(/MemTotal:\s+(\d+)/)?.[1];
  return `${new Date().toISOString()} | ${cpu} | ${navigator.hardwareConcurrency} cores | ` +
    `${mem ? (Number(mem) / 1024 / 1024).toFixed(0) + " GiB" : "?"} | load avg ${
      load || "?"
    } | deno ${Deno.version.deno}`;
}

function fmt(v: number | undefined, digits = 1): string {
  return v === undefined || !Number.isFinite(v) ? "-" : v.toFixed(digits);
}

function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
  return [line(header), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line)].join("\n");
}

/** Everything one bench run measured, as written to `--out`. */
interface BenchReport {
  machine: string;
  protocol: Record<string, number>;
  kernels: KernelResult[];
  /** Our backends: the median over rounds, with spreads. */
  runs: RunResult[];
  /** PyTorch: the median over rounds, with spreads. */
  torchRuns: RunResult[];
  /** Rounds finished (less than protocol.rounds in a partial file). */
  roundsCompleted?: number;
  /** Every single measurement, round by round. */
  rounds: { round: number; order: string[]; loadAvgStart: string; loadAvgEnd: string; runs: RunResult[] }[];
}

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

/**
 * The order in which the sides run in round `round` (1-based): as given in odd rounds, reversed in even
 * ones, so PyTorch and ours alternate who goes first (and who meets a busy spell of a shared machine).
 *
 * @example
 * ```ts
 * roundOrder(1, ["native", "torch"]); // ["native", "torch"]
 * roundOrder(2, ["native", "torch"]); // ["torch", "native"]
 * ```
 */
export function roundOrder(round: number, sides: readonly string[]): string[] {
  if (!Number.isInteger(round) || round < 1) {
    throw new RangeError(`roundOrder: round is ${round}; expected an integer >= 1`);
  }
  return round % 2 === 1 ? [...sides] : [...sides].reverse();
}

/**
 * One summary per (model, keep ratio, backend) from the measurements of every round: img/s and latency
 * are the median over the rounds that succeeded with their spread, ratios to PyTorch are taken within a
 * round (ours and PyTorch measured minutes apart) and then summarised the same way. A pair that failed
 * in every round keeps the last error.
 *
 * @example
 * ```ts
 * const [ours] = summarizeRounds([
 *   [{ model: "vit_small", backend: "native", inferImgS: 120 }, { model: "vit_small", backend: "torch", inferImgS: 60 }],
 *   [{ model: "vit_small", backend: "native", inferImgS: 100 }, { model: "vit_small", backend: "torch", inferImgS: 40 }],
 * ]);
 * ours.inferImgS; // 110
 * ours.inferVsTorch; // { median: 2.25, min: 2, max: 2.5, ... }
 * ```
 */
export function summarizeRounds(rounds: readonly (readonly RunResult[])[]): RunResult[] {
  const key = (r: RunResult) => `${modelLabel(r)}|${r.backend}`;
  const keys: string[] = [];
  for (const runs of rounds) for (const r of runs) if (!keys.includes(key(r))) keys.push(key(r));
  const torchKey = (r: RunResult) => `${modelLabel(r)}|torch`;
  const out: RunResult[] = [];
  for (const k of keys) {
    const all = rounds.map((runs) => runs.find((r) => key(r) === k));
    const ok = all.filter((r): r is RunResult => r !== undefined && !r.error);
    if (ok.length === 0) {
      const last = all.filter((r) => r !== undefined).pop()!;
      out.push({ ...last, round: undefined, rounds: 0 });
      continue;
    }
    const field = (
      f: "inferImgS" | "trainImgS" | "latencyMs" | "trainPeakRssMiB" | "baseRssMiB" | "peakRssMiB",
    ) => {
      const v = ok.map((r) => r[f]).filter((x): x is number => x !== undefined && Number.isFinite(x));
      return v.length ? spread(v) : undefined;
    };
    const ratio = (f: "inferImgS" | "trainImgS") => {
      const v: number[] = [];
      rounds.forEach((runs, i) => {
        const ours = all[i];
        const t = runs.find((r) => key(r) === torchKey(ours ?? ok[0]));
        if (ours && !ours.error && t && !t.error && ours[f] && t[f]) v.push(ours[f]! / t[f]!);
      });
      return v.length ? spread(v) : undefined;
    };
    const first = ok[0];
    const s: RunResult = {
      model: first.model,
      backend: first.backend,
      keepRatio: first.keepRatio,
      gmacs: first.gmacs,
      config: first.config,
      torch: first.torch,
      gradCheckpoint: first.gradCheckpoint,
      trainMicroBatch: ok.map((r) => r.trainMicroBatch).find((x) => x !== undefined),
      inferMicroBatch: ok.map((r) => r.inferMicroBatch).find((x) => x !== undefined),
      inferImgS: field("inferImgS")?.median,
      trainImgS: field("trainImgS")?.median,
      latencyMs: field("latencyMs")?.median,
      trainPeakRssMiB: field("trainPeakRssMiB")?.median,
      baseRssMiB: field("baseRssMiB")?.median,
      peakRssMiB: field("peakRssMiB")?.median,
      inferImgSSpread: field("inferImgS"),
      trainImgSSpread: field("trainImgS"),
      latencyMsSpread: field("latencyMs"),
      rounds: ok.length,
    };
    if (first.backend !== "torch") {
      s.inferVsTorch = ratio("inferImgS");
      s.trainVsTorch = ratio("trainImgS");
    }
    for (const f of Object.keys(s) as (keyof RunResult)[]) if (s[f] === undefined) delete s[f];
    out.push(s);
  }
  return out;
}

function modelLabel(r: { model: string; keepRatio?: number }): string {
  return r.keepRatio !== undefined ? `${r.model}@${r.keepRatio}` : r.model;
}

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, {
    worker: { type: "string" },
    backends: { type: "string" },
    models: {
      type: "string",
      default: "resnet18,vit_small,hybrid_small@0.4,hybrid_small@0.5,hybrid_small@0.6",
    },
    batch: { type: "string", default: "64" },
    threads: { type: "string", default: "2" },
    "infer-iters": { type: "string", default: "10" },
    "train-iters": { type: "string", default: "10" },
    "latency-iters": { type: "string", default: "20" },
    warmup: { type: "string", default: "3" },
    "max-warmup": { type: "string", default: "12" },
    tolerance: { type: "string", default: "0.05" },
    rounds: { type: "string", default: "3" },
    quick: { type: "boolean", default: false },
    "no-torch": { type: "boolean", default: false },
    "kernels-only": { type: "boolean", default: false },
    "no-kernels": { type: "boolean", default: false },
    "no-grad-checkpoint": { type: "boolean", default: false },
    out: { type: "string" },
    help: { type: "boolean", default: false },
  });
  if (values.out && !values.worker && !values.help) {
    benchRunJsonPath(values.out); // refuse now, not after the bench: a run.json there records another run
    provenance = import("../lib/report/mod.ts").then((m) => m.collectRunInfo({ experiment: "bench" }));
    const log = console.log;
    console.log = (...a: unknown[]) => {
      printed.push(a.map(String).join(" "));
      log(...a);
    };
  }
  if (values.help) {
    console.log(
      "usage: deno run -A tools/bench.ts [--backends native,wasm[,webgpu][,cpu]] [--models resnet18,vit_small,hybrid_small@0.5]\n" +
        "  [--batch 64] [--threads 2] [--infer-iters 10] [--train-iters 10] [--latency-iters 20]\n" +
        "  [--warmup 3] [--max-warmup 12] [--tolerance 0.05] [--rounds 3] [--quick]\n" +
        "  [--no-torch] [--kernels-only] [--no-kernels] [--no-grad-checkpoint] [--out results/bench/bench.json]\n" +
        "  Each phase warms up (at least --warmup steps, until the last 3 agree within --tolerance, at most\n" +
        "  --max-warmup), then times its iterations; the whole set of PyTorch/ours pairs runs --rounds times,\n" +
        "  in alternating order, and tables show the median over rounds with the min-max range.\n" +
        "  --quick: batch 8, 2 rounds, 1-3 warm-up steps, 2 timed steps, no kernels (a smoke test, not a claim).\n" +
        '  ViT and hybrid training use gradient checkpointing ("ckpt") unless --no-grad-checkpoint;\n' +
        "  PyTorch never does (the reference). Default backends: native,wasm, plus webgpu on a hardware GPU;\n" +
        "  on a software adapter (llvmpipe, lavapipe, SwiftShader) webgpu runs only when asked and is not\n" +
        "  compared to PyTorch.",
    );
    return;
  }
  if (values.worker) {
    const r = await worker(JSON.parse(values.worker) as WorkerSpec);
    console.log(RESULT_TAG + JSON.stringify(r));
    return;
  }
  const int = intFlag;
  if (values.quick) {
    // A smoke test of the protocol, not a measurement: flags given explicitly still win.
    const given = (f: string) => Deno.args.some((a) => a === `--${f}` || a.startsWith(`--${f}=`));
    const quick: Record<string, string> = {
      batch: "8",
      rounds: "2",
      warmup: "1",
      "max-warmup": "3",
      "infer-iters": "2",
      "train-iters": "2",
      "latency-iters": "2",
    };
    for (const [k, v] of Object.entries(quick)) if (!given(k)) (values as Record<string, unknown>)[k] = v;
    if (!given("no-kernels")) values["no-kernels"] = true;
  }
  const batch = int("batch", values.batch!, 1), threads = int("threads", values.threads!, 1);
  const inferIters = int("infer-iters", values["infer-iters"]!, 0);
  const trainIters = int("train-iters", values["train-iters"]!, 0);
  const latencyIters = int("latency-iters", values["latency-iters"]!, 0);
  const warmup = int("warmup", values.warmup!, 0);
  const maxWarmup = int("max-warmup", values["max-warmup"]!, warmup);
  const rounds = int("rounds", values.rounds!, 1);
  const tolerance = Number(values.tolerance);
  if (!(tolerance >= 0 && tolerance < 1)) {
    throw new Error(`--tolerance: expected a fraction in [0, 1), got "${values.tolerance}"`);
  }
  const gradCheckpoint = !values["no-grad-checkpoint"];
  const gpu = await probeWebGPU();
  const requested =
    (values.backends ?? (gpu.ok && !gpu.report.software ? "native,wasm,webgpu" : "native,wasm"))
      .split(",").map((s) => s.trim()).filter(Boolean);
  for (const b of requested) {
    if (!["native", "wasm", "webgpu", "cpu", "node"].includes(b)) {
      throw new CliError(`--backends: unknown backend "${b}"; expected native, wasm, webgpu, cpu or node`);
    }
  }
  const models = values.models!.split(",").map((s) => s.trim()).filter(Boolean).map((m) => {
    const [model, keep] = m.split("@");
    const keepRatio = keep === undefined ? undefined : Number(keep);
    if (keepRatio !== undefined && !(keepRatio > 0 && keepRatio <= 1)) {
      throw new CliError(`--models: keep ratio in "${m}" must be in (0, 1]`);
    }
    return { model, keepRatio };
  });

  console.log(`# bench: ${machineState()}`);
  console.log(
    `# batch ${batch}, ${threads} threads, timed steps infer ${inferIters} / train ${trainIters} / latency ` +
      `${latencyIters}; each phase warms up until the last 3 steps agree within ${tolerance * 100}% ` +
      `(at least ${warmup}, at most ${maxWarmup} steps), both sides. ${rounds} round(s), PyTorch and ours in ` +
      "alternating order; img/s from the median step of a round, tables show the median over rounds " +
      "[min-max], ratios paired within a round. Other processes on this machine (load average above) slow " +
      "both sides; the alternation keeps the ratio fair." +
      (values.quick ? " QUICK: a smoke test, not a claim." : ""),
  );
  console.log(
    gradCheckpoint
      ? "# training: ViT and hybrid with gradient checkpointing (ckpt); PyTorch without (the reference)"
      : "# training: no gradient checkpointing (--no-grad-checkpoint)",
  );
  const backends: BackendName[] = [];
  for (const b of requested as BackendName[]) {
    if (b === "webgpu") {
      if (!gpu.ok) {
        console.log(`# webgpu: unavailable, skipped: ${gpu.reason}`);
        continue;
      }
      console.log(`# webgpu: adapter ${formatAdapter(gpu.report)}`);
      if (gpu.report.software) {
        console.log(
          "# webgpu: SOFTWARE adapter (the GPU is emulated on the CPU): its numbers are measured but not " +
            "compared to PyTorch (vs torch: sw)",
        );
      }
    }
    if (b === "native") {
      const r = await loadNativeBackend({ threads });
      if (!r.ok) {
        console.log(`# native: unavailable, skipped: ${r.reason}`);
        continue;
      }
      console.log(
        `# native: BLAS ${nativeBackendStatus()?.library}, ${nativeBackendStatus()?.threads} threads`,
      );
    }
    backends.push(b);
  }
  if (!requested.includes("cpu")) {
    console.log("# cpu backend not run (pure JS, ~100x slower; add it with --backends ...,cpu)");
  }
  const torch = values["no-torch"] ? undefined : await torchAvailable();
  if (values["no-torch"]) console.log("# PyTorch: skipped (--no-torch)");
  else if (!torch) {
    console.log(
      "# PyTorch: NOT AVAILABLE (/usr/bin/python3 cannot import torch; `apt-get install python3-torch`): no ratios",
    );
  } else {
    console.log(
      `# PyTorch: ${torch} (/usr/bin/python3, torch.set_num_threads(${threads}), ` +
        `OMP_WAIT_POLICY=${Deno.env.get("OMP_WAIT_POLICY") ?? "PASSIVE"})`,
    );
  }

  const report: BenchReport = {
    machine: machineState(),
    protocol: { batch, threads, inferIters, trainIters, latencyIters, warmup, maxWarmup, tolerance, rounds },
    kernels: [],
    runs: [],
    torchRuns: [],
    rounds: [],
  };

  if (!values["no-kernels"]) {
    console.log("\n## Kernels (GMAC/s; native = BLAS, wasm = XNNPACK)\n");
    report.kernels = await benchKernels(backends, threads);
    console.log(table(
      ["kernel", "backend", "GMACs", "ms", "GMAC/s"],
      report.kernels.map((k) => [k.kernel, k.backend, fmt(k.gmacs, 3), fmt(k.ms, 1), fmt(k.gmacPerS, 1)]),
    ));
  }
  if (values["kernels-only"]) return await finish(report, values.out);

  const self = fromFileUrl(import.meta.url);
  const fitted = new Map<string, { train: number; infer: number }>();
  const configs = new Map<string, unknown>();
  const runOurs = async (
    m: { model: string; keepRatio?: number },
    backend: BackendName,
  ): Promise<RunResult> => {
    const spec: WorkerSpec = {
      ...m,
      backend,
      threads,
      batch,
      inferIters,
      trainIters,
      latencyIters,
      warmup,
      maxWarmup,
      tolerance,
      gradCheckpoint,
    };
    // A batch that does not fit the wasm heap (4 GiB) aborts the worker: retry the phase that failed
    // (training or inference) with micro-batches.
    const micro = { ...(fitted.get(modelLabel(m)) ?? { train: batch, infer: batch }) };
    for (;;) {
      try {
        const r = await runJson(
          Deno.execPath(),
          [
            "run",
            "-A",
            "--unstable-ffi",
            self,
            "--worker",
            JSON.stringify({ ...spec, trainMicroBatch: micro.train, inferMicroBatch: micro.infer }),
          ],
          { BLAS_THREADS: String(threads) },
        ) as unknown as RunResult;
        fitted.set(modelLabel(m), micro); // the next backend (and round) shares the 4 GiB heap limit
        if (!configs.has(modelLabel(m))) configs.set(modelLabel(m), r.config);
        return r;
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        const phase = (e as { phase?: "train" | "infer" }).phase;
        if (phase && micro[phase] > 8 && /Abort|memory|alloc|RangeError/i.test(msg)) {
          console.error(
            `  ${modelLabel(m)} on ${backend}: ${phase} at batch ${micro[phase]} ran out of memory, retrying`,
          );
          micro[phase] = Math.ceil(micro[phase] / 2);
          continue;
        }
        return { ...m, backend, error: msg };
      }
    }
  };
  const runTorch = async (m: { model: string; keepRatio?: number }): Promise<RunResult> => {
    const cfg = configs.get(modelLabel(m));
    if (!cfg) return { ...m, backend: "torch", error: "no model config (every tfjs run failed)" };
    // PyTorch trains without gradient checkpointing: the fair reference (its config says so too).
    const plainCfg = structuredClone(cfg) as { gradCheckpoint?: boolean; vit?: { gradCheckpoint?: boolean } };
    delete plainCfg.gradCheckpoint;
    if (plainCfg.vit) delete plainCfg.vit.gradCheckpoint;
    const spec = {
      config: plainCfg,
      batch,
      threads,
      inferIters,
      trainIters,
      latencyIters,
      warmup,
      maxWarmup,
      tolerance,
    };
    try {
      // PASSIVE: OpenMP threads sleep instead of spinning at barriers. On a shared machine spinning
      // threads starve each other (ViT-S batch-1 latency 824 ms instead of 37 ms here).
      const r = await runJson("/usr/bin/python3", [TORCH_SCRIPT, JSON.stringify(spec)], {
        OMP_NUM_THREADS: String(threads),
        OMP_WAIT_POLICY: Deno.env.get("OMP_WAIT_POLICY") ?? "PASSIVE",
      });
      return { ...m, backend: "torch", ...r } as RunResult;
    } catch (e) {
      return { ...m, backend: "torch", error: e instanceof Error ? e.message : String(e) };
    }
  };
  // The summary and tables of the rounds done so far; with --out, written after every round (marked
  // partial until the last), so a run stopped early keeps its complete rounds.
  const summarize = async (final: boolean) => {
    const mark = printed.length;
    if (!final) console.log(`\n# PARTIAL: ${report.rounds.length} of ${rounds} rounds done`);
    for (const r of report.rounds) {
      console.log(
        `# round ${r.round}: ${r.order.join(" then ")}, load avg ${r.loadAvgStart} -> ${r.loadAvgEnd}`,
      );
    }
    const phases = report.rounds.flatMap((r) => r.runs).flatMap((r) =>
      [r.trainTiming, r.inferTiming, r.latencyTiming].filter((t) => t !== undefined)
    );
    console.log(
      `# warm-up settled (last 3 steps within ${tolerance * 100}%) in ${
        phases.filter((t) => t.stable).length
      } of ${phases.length} phases (the others stopped at ${maxWarmup} warm-up steps); mean ${
        (phases.reduce((a, t) => a + t.warmupSteps, 0) / Math.max(1, phases.length)).toFixed(1)
      } warm-up steps`,
    );
    const summary = summarizeRounds(report.rounds.map((r) => r.runs));
    report.runs = summary.filter((r) => r.backend !== "torch");
    report.torchRuns = summary.filter((r) => r.backend === "torch");
    printModels(report.runs, report.torchRuns, batch);
    report.roundsCompleted = report.rounds.length;
    await finish(report, values.out);
    if (!final) printed.length = mark;
  };
  // Rounds: every (model, side) pair once per round, PyTorch and ours in alternating order, so slow
  // phases of a shared machine fall on both sides alike; ratios are paired within a round.
  const sides: string[] = [...backends, ...(torch ? ["torch"] : [])];
  for (let round = 1; round <= rounds; round++) {
    const runs: RunResult[] = [];
    const load = loadAverage();
    for (const m of models) {
      for (const side of roundOrder(round, sides)) {
        const t0 = performance.now();
        // The first round runs ours first: PyTorch needs the model config our worker reports.
        const r = side === "torch" ? await runTorch(m) : await runOurs(m, side as BackendName);
        runs.push({ ...r, round });
        console.error(
          `  round ${round}/${rounds} ${modelLabel(m)} on ${side}: ${
            ((performance.now() - t0) / 1000).toFixed(0)
          } s`,
        );
      }
    }
    report.rounds.push({
      round,
      order: roundOrder(round, sides),
      loadAvgStart: load,
      loadAvgEnd: loadAverage(),
      runs,
    });
    if (round < rounds && values.out) await summarize(false);
  }
  await summarize(true);
}

function printModels(runs: RunResult[], torchRuns: RunResult[], batch: number): void {
  const torchOf = (r: RunResult) =>
    torchRuns.find((t) => t.model === r.model && t.keepRatio === r.keepRatio && !t.error);
  const gm = (r: RunResult) =>
    runs.find((x) => x.model === r.model && x.keepRatio === r.keepRatio && x.gmacs)?.gmacs;
  const rows: string[][] = [];
  for (const r of [...runs, ...torchRuns]) {
    if (r.error) {
      rows.push([
        modelLabel(r),
        r.backend,
        "-",
        `error: ${r.error.slice(0, 80)}`,
        ...new Array<string>(8).fill(""),
      ]);
      continue;
    }
    const g = gm(r);
    const t = r.backend === "torch" ? undefined : torchOf(r);
    const ratio = (a?: number, b?: number) =>
      r.software ? "sw" : a !== undefined && b ? `${(a / b).toFixed(2)}x` : "-";
    const trainMem = (x?: RunResult) =>
      x?.trainPeakRssMiB !== undefined && x.baseRssMiB !== undefined
        ? x.trainPeakRssMiB - x.baseRssMiB
        : undefined;
    const notes = [
      r.gradCheckpoint ? "ckpt" : "",
      r.trainMicroBatch !== undefined && r.trainMicroBatch < batch ? `µb ${r.trainMicroBatch}` : "",
    ].filter(Boolean).join(", ");
    // Median over rounds [min-max over rounds]; ratios paired within a round.
    const range = (v: number | undefined, sp?: Spread) =>
      sp && sp.n > 1 ? `${fmt(v)} [${fmt(sp.min)}-${fmt(sp.max)}]` : fmt(v);
    const ratioRange = (sp: Spread | undefined, a?: number, b?: number) =>
      sp && !r.software
        ? `${sp.median.toFixed(2)}x` + (sp.n > 1 ? ` [${sp.min.toFixed(2)}-${sp.max.toFixed(2)}]` : "")
        : ratio(a, b);
    rows.push([
      modelLabel(r),
      r.adapter ? `${r.backend} (${r.adapter}${r.software ? ", software" : ""})` : r.backend,
      fmt(g, 3),
      r.inferMicroBatch !== undefined && r.inferMicroBatch < batch
        ? `${range(r.inferImgS, r.inferImgSSpread)} (µb ${r.inferMicroBatch})`
        : range(r.inferImgS, r.inferImgSSpread),
      fmt(r.inferImgS && g ? r.inferImgS * g : undefined),
      r.backend === "torch" ? "1.00x" : ratioRange(r.inferVsTorch, r.inferImgS, t?.inferImgS),
      notes && r.trainImgS !== undefined
        ? `${range(r.trainImgS, r.trainImgSSpread)} (${notes})`
        : range(r.trainImgS, r.trainImgSSpread),
      fmt(r.trainImgS && g ? r.trainImgS * g * 3 : undefined),
      r.backend === "torch" ? "1.00x" : ratioRange(r.trainVsTorch, r.trainImgS, t?.trainImgS),
      fmt(r.latencyMs, 2),
      notes && trainMem(r) !== undefined ? `${fmt(trainMem(r), 0)} (${notes})` : fmt(trainMem(r), 0),
      r.backend === "torch" ? "1.00x" : ratio(trainMem(r), trainMem(t)),
    ]);
  }
  console.log(
    `\n## Models (batch ${batch}; GMACs per image = multiply-accumulates; train GMAC/s counts 3x forward)\n`,
  );
  console.log(table(
    [
      "model",
      "backend",
      "GMACs",
      "infer img/s",
      "infer GMAC/s",
      "vs torch",
      "train img/s",
      "train GMAC/s",
      "vs torch",
      "lat b1 ms",
      "train mem MiB",
      "vs torch",
    ],
    rows,
  ));
  console.log(
    "  (img/s: median over rounds [min-max over rounds]; vs torch: median of the per-round ratios [min-max]);",
  );
  console.log("  (train mem = peak RSS during the training steps minus RSS before the model was built;");
  console.log(
    "   ckpt = gradient checkpointing of the transformer blocks; PyTorch never checkpoints, the reference;",
  );
  console.log(
    "   µb n = the batch did not fit the 4 GiB wasm heap and ran as micro-batches of n, one optimiser step;\n" +
      "   sw = webgpu on a software adapter: measured, not compared; webgpu train mem is host RSS, not GPU memory)",
  );

  // Hybrid efficiency: measured speed-up over the plain ViT vs what the GMACs ratio promises.
  const vitRuns = [...runs, ...torchRuns].filter((r) => r.model.startsWith("vit") && !r.error);
  const lines: string[][] = [];
  for (const h of [...runs, ...torchRuns].filter((r) => r.model.startsWith("hybrid") && !r.error)) {
    const v = vitRuns.find((r) => r.backend === h.backend);
    const gh = gm(h), gv = v ? gm(v) : undefined;
    if (!v || !gh || !gv || !h.inferImgS || !v.inferImgS) continue;
    const promised = gv / gh, measured = h.inferImgS / v.inferImgS;
    const trainMeasured = h.trainImgS && v.trainImgS ? h.trainImgS / v.trainImgS : undefined;
    lines.push([
      modelLabel(h),
      h.backend,
      `${promised.toFixed(2)}x`,
      `${measured.toFixed(2)}x`,
      `${(100 * measured / promised).toFixed(0)}%`,
      trainMeasured ? `${trainMeasured.toFixed(2)}x` : "-",
      trainMeasured ? `${(100 * trainMeasured / promised).toFixed(0)}%` : "-",
    ]);
  }
  if (lines.length) {
    console.log("\n## Hybrid speed-up over the plain ViT (target: measured >= 90% of the GMACs promise)\n");
    console.log(
      table([
        "model",
        "backend",
        "GMACs ratio",
        "infer speed-up",
        "of promise",
        "train speed-up",
        "of promise",
      ], lines),
    );
  }
}

/**
 * Where `--out` writes its provenance: `run.json` beside the output. A `run.json` already there is
 * replaced only when it records a bench run that wrote this same output file; any other (a study's, a
 * training run's, a bench writing another file) is refused with an error naming both files, before the
 * bench starts.
 *
 * @example
 * ```ts
 * benchRunJsonPath("results/bench/bench.json"); // "results/bench/run.json"
 * ```
 */
export function benchRunJsonPath(out: string): string {
  const path = join(dirname(out), "run.json");
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return path;
    throw e;
  }
  let prev: { experiment?: unknown; outputs?: unknown; command?: unknown } | null = null;
  try {
    prev = JSON.parse(text);
  } catch { /* not JSON: not ours either */ }
  const name = basename(out);
  const outOf = (cmd: unknown) => {
    if (!Array.isArray(cmd)) return undefined;
    const i = cmd.indexOf("--out");
    const v = i >= 0
      ? cmd[i + 1]
      : cmd.find((a) => typeof a === "string" && a.startsWith("--out="))?.slice(6);
    return typeof v === "string" ? basename(v) : undefined;
  };
  const ours = prev !== null && typeof prev === "object" && prev.experiment === "bench" &&
    (Array.isArray(prev.outputs) ? prev.outputs.includes(name) : outOf(prev.command) === name);
  if (!ours) {
    const what = prev !== null && typeof prev === "object"
      ? `experiment ${JSON.stringify(prev.experiment ?? null)}` +
        (Array.isArray(prev.outputs) ? `, outputs ${JSON.stringify(prev.outputs)}` : "")
      : "not a run record";
    throw new CliError(
      `--out "${out}": "${path}" already records another run (${what}) and the bench would overwrite it; ` +
        `write the bench into a folder of its own, e.g. --out results/bench/bench.json`,
    );
  }
  return path;
}

/** What main() printed, kept when `--out` is given so the tables land beside the JSON. */
const printed: string[] = [];

/**
 * Provenance (commit and whether the tree had changes, machine, versions, command), taken when the
 * run starts: by the end, rewriting the committed results themselves would mark the tree as changed.
 */
let provenance: Promise<unknown> | undefined;

async function finish(report: { machine: string }, out: string | undefined): Promise<void> {
  if (!out) return;
  const runPath = benchRunJsonPath(out);
  const txt = out.replace(/\.json$/, "") + ".txt";
  const run = {
    ...(await provenance) as object,
    outputs: [basename(out), basename(txt)],
    finishedAt: new Date().toISOString(),
    machineState: report.machine,
    machineStateEnd: machineState(),
  };
  writeFileAtomicSync(out, JSON.stringify(report, null, 2) + "\n");
  writeFileAtomicSync(txt, printed.join("\n") + "\n");
  writeFileAtomicSync(runPath, JSON.stringify(run, null, 2) + "\n");
  console.log(`\nwrote ${out} (and .txt, the tables above) and ${runPath}`);
}

if (import.meta.main) await runCli("bench", main);
