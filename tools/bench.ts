/**
 * `deno task bench`: speed of ResNet18 (CIFAR stem), ViT-Small (patch 4, 32x32) and the CNN-ViT
 * hybrid at several keep ratios on every available backend, side by side with PyTorch on the same
 * machine (`tools/bench_torch.py`, Debian's `python3-torch`), plus raw GEMM / convolution kernels.
 *
 * Each (model, backend) pair runs in its own subprocess so peak memory is per run. Numbers taken while
 * other processes use the CPU are noisy: the header prints the load average.
 *
 * Training of models with transformer blocks (ViT, hybrid) uses gradient checkpointing (labelled
 * "ckpt"), so a batch-64 ViT-Small step fits the 4 GiB wasm heap and the memory column compares batch 64
 * with PyTorch's batch 64; PyTorch runs without checkpointing, the reference. `--no-grad-checkpoint`
 * measures the plain tape instead (micro-batches where the batch does not fit).
 *
 * ```sh
 * deno task bench                                   # everything (a few minutes)
 * deno run -A tools/bench.ts --models resnet18 --backends native --no-torch
 * deno run -A tools/bench.ts --models vit_small --backends native --no-kernels   # one model, with PyTorch
 * deno run -A tools/bench.ts --kernels-only
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { parseArgs } from "node:util";
import { fileURLToPath as fromFileUrl } from "node:url";
import { dirname, join } from "node:path";
import {
  type BackendName,
  formatAdapter,
  initBackend,
  loadNativeBackend,
  nativeBackendStatus,
  probeWebGPU,
} from "../lib/backend/mod.ts";
import { writeFileAtomicSync } from "../lib/util/mod.ts";

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
  warmup: number;
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
  // Median of the timed iterations: one slow iteration (a GC, another process) does not move it.
  const timeIt = async (fn: () => Promise<void>, iters: number) => {
    for (let i = 0; i < spec.warmup; i++) await fn();
    const ts: number[] = [];
    for (let i = 0; i < iters; i++) {
      const t0 = performance.now();
      await fn();
      ts.push((performance.now() - t0) / 1000);
    }
    ts.sort((a, b) => a - b);
    const mid = ts.length >> 1;
    return ts.length % 2 ? ts[mid] : (ts[mid - 1] + ts[mid]) / 2;
  };
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
      result.trainImgS = b / await timeIt(step, spec.trainIters);
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
      result.inferImgS = b / await timeIt(infer, spec.inferIters);
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
      for (let i = 0; i <= spec.warmup; i++) await one();
      const ts: number[] = [];
      for (let i = 0; i < spec.latencyIters; i++) {
        const t0 = performance.now();
        await one();
        ts.push(performance.now() - t0);
      }
      ts.sort((p, q) => p - q);
      result.latencyMs = ts[Math.floor(ts.length / 2)];
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

function modelLabel(r: { model: string; keepRatio?: number }): string {
  return r.keepRatio !== undefined ? `${r.model}@${r.keepRatio}` : r.model;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      worker: { type: "string" },
      backends: { type: "string" },
      models: {
        type: "string",
        default: "resnet18,vit_small,hybrid_small@0.4,hybrid_small@0.5,hybrid_small@0.6",
      },
      batch: { type: "string", default: "64" },
      threads: { type: "string", default: "2" },
      "infer-iters": { type: "string", default: "5" },
      "train-iters": { type: "string", default: "3" },
      "latency-iters": { type: "string", default: "10" },
      warmup: { type: "string", default: "1" },
      "no-torch": { type: "boolean", default: false },
      "kernels-only": { type: "boolean", default: false },
      "no-kernels": { type: "boolean", default: false },
      "no-grad-checkpoint": { type: "boolean", default: false },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.out && !values.worker) {
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
        "  [--batch 64] [--threads 2] [--infer-iters 3] [--train-iters 2] [--latency-iters 10] [--warmup 1]\n" +
        "  [--no-torch] [--kernels-only] [--no-kernels] [--no-grad-checkpoint] [--out results/bench.json]\n" +
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
  const int = (name: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`--${name}: expected an integer >= ${min}, got "${v}"`);
    }
    return n;
  };
  const batch = int("batch", values.batch!, 1), threads = int("threads", values.threads!, 1);
  const inferIters = int("infer-iters", values["infer-iters"]!, 0);
  const trainIters = int("train-iters", values["train-iters"]!, 0);
  const latencyIters = int("latency-iters", values["latency-iters"]!, 0);
  const warmup = int("warmup", values.warmup!, 0);
  const gradCheckpoint = !values["no-grad-checkpoint"];
  const gpu = await probeWebGPU();
  const requested =
    (values.backends ?? (gpu.ok && !gpu.report.software ? "native,wasm,webgpu" : "native,wasm"))
      .split(",").map((s) => s.trim()).filter(Boolean);
  for (const b of requested) {
    if (!["native", "wasm", "webgpu", "cpu", "node"].includes(b)) {
      throw new Error(`--backends: unknown backend "${b}"; expected native, wasm, webgpu, cpu or node`);
    }
  }
  const models = values.models!.split(",").map((s) => s.trim()).filter(Boolean).map((m) => {
    const [model, keep] = m.split("@");
    const keepRatio = keep === undefined ? undefined : Number(keep);
    if (keepRatio !== undefined && !(keepRatio > 0 && keepRatio <= 1)) {
      throw new Error(`--models: keep ratio in "${m}" must be in (0, 1]`);
    }
    return { model, keepRatio };
  });

  console.log(`# bench: ${machineState()}`);
  console.log(
    `# batch ${batch}, ${threads} threads, iters infer ${inferIters} / train ${trainIters} / latency ${latencyIters}` +
      `, warmup ${warmup}; img/s from the median iteration (both sides). Other processes on this machine make ` +
      "numbers noisy; compare within one run.",
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

  const report: { machine: string; kernels: KernelResult[]; runs: RunResult[]; torchRuns: RunResult[] } = {
    machine: machineState(),
    kernels: [],
    runs: [],
    torchRuns: [],
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
  for (const m of models) {
    for (const backend of backends) {
      const spec: WorkerSpec = {
        ...m,
        backend,
        threads,
        batch,
        inferIters,
        trainIters,
        latencyIters,
        warmup,
        gradCheckpoint,
      };
      const t0 = performance.now();
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
          );
          report.runs.push(r as unknown as RunResult);
          fitted.set(modelLabel(m), micro); // the next backend shares the 4 GiB heap limit
          break;
        } catch (e) {
          const msg = e instanceof Error ? e.message : String(e);
          const phase = (e as { phase?: "train" | "infer" }).phase;
          if (phase && micro[phase] > 8 && /Abort|memory|alloc|RangeError/i.test(msg)) {
            console.error(
              `  ${modelLabel(m)} on ${backend}: ${phase} at batch ${
                micro[phase]
              } ran out of memory, retrying`,
            );
            micro[phase] = Math.ceil(micro[phase] / 2);
            continue;
          }
          report.runs.push({ ...m, backend, error: msg });
          break;
        }
      }
      console.error(`  ${modelLabel(m)} on ${backend}: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
    if (torch) {
      const cfg = report.runs.find((r) => r.model === m.model && r.keepRatio === m.keepRatio && r.config)
        ?.config;
      if (!cfg) {
        report.torchRuns.push({ ...m, backend: "torch", error: "no model config (every tfjs run failed)" });
        continue;
      }
      // PyTorch trains without gradient checkpointing: the fair reference (its config says so too).
      const plainCfg = structuredClone(cfg) as {
        gradCheckpoint?: boolean;
        vit?: { gradCheckpoint?: boolean };
      };
      delete plainCfg.gradCheckpoint;
      if (plainCfg.vit) delete plainCfg.vit.gradCheckpoint;
      const spec = { config: plainCfg, batch, threads, inferIters, trainIters, latencyIters, warmup };
      try {
        // PASSIVE: OpenMP threads sleep instead of spinning at barriers. On a shared machine spinning
        // threads starve each other (ViT-S batch-1 latency 824 ms instead of 37 ms here).
        const r = await runJson("/usr/bin/python3", [TORCH_SCRIPT, JSON.stringify(spec)], {
          OMP_NUM_THREADS: String(threads),
          OMP_WAIT_POLICY: Deno.env.get("OMP_WAIT_POLICY") ?? "PASSIVE",
        });
        report.torchRuns.push({ ...m, backend: "torch", ...r } as RunResult);
      } catch (e) {
        report.torchRuns.push({ ...m, backend: "torch", error: e instanceof Error ? e.message : String(e) });
      }
    }
  }
  printModels(report.runs, report.torchRuns, batch);
  await finish(report, values.out);
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
    rows.push([
      modelLabel(r),
      r.adapter ? `${r.backend} (${r.adapter}${r.software ? ", software" : ""})` : r.backend,
      fmt(g, 3),
      r.inferMicroBatch !== undefined && r.inferMicroBatch < batch
        ? `${fmt(r.inferImgS)} (µb ${r.inferMicroBatch})`
        : fmt(r.inferImgS),
      fmt(r.inferImgS && g ? r.inferImgS * g : undefined),
      r.backend === "torch" ? "1.00x" : ratio(r.inferImgS, t?.inferImgS),
      notes && r.trainImgS !== undefined ? `${fmt(r.trainImgS)} (${notes})` : fmt(r.trainImgS),
      fmt(r.trainImgS && g ? r.trainImgS * g * 3 : undefined),
      r.backend === "torch" ? "1.00x" : ratio(r.trainImgS, t?.trainImgS),
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
  console.log("  (train mem = peak RSS during the training steps minus RSS before the model was built;");
  console.log(
    "   ckpt = gradient checkpointing of the transformer blocks; PyTorch never checkpoints, the reference;",
  );
  console.log(
    "   µb n = the batch did not fit the 4 GiB wasm heap and ran as micro-batches of n, one optimiser step;",
  );
  console.log(
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

/** What main() printed, kept when `--out` is given so the tables land beside the JSON. */
const printed: string[] = [];

/**
 * Provenance (commit and whether the tree had changes, machine, versions, command), taken when the
 * run starts: by the end, rewriting the committed results themselves would mark the tree as changed.
 */
let provenance: Promise<unknown> | undefined;

async function finish(report: { machine: string }, out: string | undefined): Promise<void> {
  if (!out) return;
  const run = {
    ...(await provenance) as object,
    finishedAt: new Date().toISOString(),
    machineState: report.machine,
  };
  writeFileAtomicSync(out, JSON.stringify(report, null, 2) + "\n");
  writeFileAtomicSync(out.replace(/\.json$/, "") + ".txt", printed.join("\n") + "\n");
  const runPath = join(dirname(out), "run.json");
  writeFileAtomicSync(runPath, JSON.stringify(run, null, 2) + "\n");
  console.log(`\nwrote ${out} (and .txt, the tables above) and ${runPath}`);
}

if (import.meta.main) await main();
