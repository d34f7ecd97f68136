/**
 * `deno task profile`: where the time of one inference or training step goes, kernel by kernel.
 *
 * Wraps every kernel of the chosen backend with a timer (nested kernels, such as a native kernel
 * that falls back to a wasm one, count once, at the outer level), runs warm-up steps, then averages
 * a few steps and prints each kernel's milliseconds per step, its calls and its share, plus the time
 * spent outside kernels (tape bookkeeping, JavaScript, garbage collection). This is the table that
 * showed GELU taking a quarter of ViT-Small inference and batch norm a third of ResNet18 training.
 *
 * ```sh
 * deno task profile --model vit_small --mode infer
 * deno task profile --model resnet18 --mode train --batch 64
 * deno task profile --model hybrid_small --keep 0.4 --mode train --grad-checkpoint
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { parseArgs } from "node:util";
import { initBackend, parseBackendChoice } from "../lib/backend/mod.ts";
import { createModel, listModels } from "../lib/models/mod.ts";
import { crossEntropy } from "../lib/train/losses.ts";

const USAGE = `Usage: deno task profile --model MODEL [options]

  --model NAME        a registry model: ${listModels().map((m) => m.name).join(", ")}
  --keep RATIO        keep ratio for hybrid models, in (0, 1]
  --mode M            infer | train (default infer; train = forward, loss and gradients, no optimiser)
  --batch N           batch size (default 64)
  --backend NAME      auto | native | wasm | cpu (default: $TFJS_BACKEND or auto)
  --steps N           measured steps, after 1 warm-up step (default 3)
  --top N             kernels listed (default 25)
  --grad-checkpoint   train with gradient checkpointing of the transformer blocks
  --json              print one JSON object instead of the table`;

/** One kernel's share of a step. */
export interface KernelTime {
  kernel: string;
  msPerStep: number;
  callsPerStep: number;
}

/** What {@link profileStep} measured. */
export interface StepProfile {
  model: string;
  backend: string;
  mode: "infer" | "train";
  batch: number;
  msPerStep: number;
  imagesPerSecond: number;
  msInKernels: number;
  kernels: KernelTime[];
}

/**
 * Times every kernel of the current backend during `steps` runs of `step` (after one warm-up run),
 * then restores the original kernels.
 *
 * @example
 * ```ts
 * const p = await profileKernels(() => model.forward(x).logits.data(), 3);
 * ```
 */
export async function profileKernels(
  step: () => Promise<unknown>,
  steps: number,
): Promise<{ msPerStep: number; kernels: KernelTime[] }> {
  const backendName = tf.getBackend();
  const originals = tf.getKernelsForBackend(backendName);
  const times = new Map<string, { ms: number; n: number }>();
  let depth = 0;
  const swap = (configs: tf.KernelConfig[]) => {
    for (const k of configs) {
      tf.unregisterKernel(k.kernelName, backendName);
      tf.registerKernel(k);
    }
  };
  swap(originals.map((k) => ({
    ...k,
    kernelFunc: (args: Parameters<tf.KernelFunc>[0]) => {
      depth++;
      const t0 = performance.now();
      try {
        return k.kernelFunc(args);
      } finally {
        depth--;
        if (depth === 0) {
          const e = times.get(k.kernelName) ?? { ms: 0, n: 0 };
          e.ms += performance.now() - t0;
          e.n++;
          times.set(k.kernelName, e);
        }
      }
    },
  })));
  try {
    await step();
    times.clear();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await step();
    const msPerStep = (performance.now() - t0) / steps;
    const kernels = [...times]
      .map(([kernel, v]) => ({ kernel, msPerStep: v.ms / steps, callsPerStep: v.n / steps }))
      .sort((a, b) => b.msPerStep - a.msPerStep);
    return { msPerStep, kernels };
  } finally {
    swap(originals);
  }
}

/**
 * Profiles one inference or training step of a registry model on the current backend.
 *
 * @example
 * ```ts
 * const p = await profileStep({ model: "resnet18_test", mode: "train", batch: 4, steps: 1 });
 * ```
 */
export async function profileStep(o: {
  model: string;
  keepRatio?: number;
  mode: "infer" | "train";
  batch: number;
  steps: number;
  gradCheckpoint?: boolean;
}): Promise<StepProfile> {
  const model = createModel(o.model, {
    ...(o.keepRatio !== undefined ? { keepRatio: o.keepRatio } : {}),
  });
  if (o.gradCheckpoint) {
    if (!model.setGradCheckpointing) {
      throw new Error(`--grad-checkpoint: ${o.model} has no transformer blocks to checkpoint`);
    }
    model.setGradCheckpointing(true);
  }
  const cfg = model.config as {
    imgSize?: number;
    numClasses?: number;
    vit?: { imgSize: number; numClasses: number };
  };
  const size = cfg.vit?.imgSize ?? cfg.imgSize!, classes = cfg.vit?.numClasses ?? cfg.numClasses!;
  const x = tf.randomNormal([o.batch, size, size, 3], 0, 1, "float32", 1) as tf.Tensor4D;
  const y = tf.tensor1d(Array.from({ length: o.batch }, (_, i) => i % classes), "int32");
  const vars = [...model.trainableVariables().values()];
  const step = async () => {
    if (o.mode === "infer") {
      const out = model.forward(x);
      await out.logits.data();
      tf.dispose(out as unknown as tf.TensorContainer);
    } else {
      const { value, grads } = tf.variableGrads(
        () => crossEntropy(model.forward(x, { training: true }).logits, y),
        vars,
      );
      await value.data();
      tf.dispose([value, ...Object.values(grads)]);
    }
  };
  try {
    const r = await profileKernels(step, o.steps);
    return {
      model: o.keepRatio !== undefined ? `${o.model}@${o.keepRatio}` : o.model,
      backend: tf.getBackend(),
      mode: o.mode,
      batch: o.batch,
      msPerStep: r.msPerStep,
      imagesPerSecond: o.batch / (r.msPerStep / 1000),
      msInKernels: r.kernels.reduce((a, k) => a + k.msPerStep, 0),
      kernels: r.kernels,
    };
  } finally {
    tf.dispose([x, y]);
    model.dispose();
  }
}

function positiveInt(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag}: expected a positive integer, got "${v}"`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      keep: { type: "string" },
      mode: { type: "string", default: "infer" },
      batch: { type: "string" },
      backend: { type: "string" },
      steps: { type: "string" },
      top: { type: "string" },
      "grad-checkpoint": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.model) throw new Error(`--model is required\n\n${USAGE}`);
  if (values.mode !== "infer" && values.mode !== "train") {
    throw new Error(`--mode: expected infer or train, got "${values.mode}"`);
  }
  let keepRatio: number | undefined;
  if (values.keep !== undefined) {
    keepRatio = Number(values.keep);
    if (!(keepRatio > 0 && keepRatio <= 1)) {
      throw new Error(`--keep: expected a ratio in (0, 1], got "${values.keep}"`);
    }
  }
  const choice = parseBackendChoice(values.backend ?? Deno.env.get("TFJS_BACKEND") ?? "auto", "--backend");
  await initBackend(choice, { log: false });
  const top = positiveInt("--top", values.top, 25);
  const p = await profileStep({
    model: values.model,
    keepRatio,
    mode: values.mode,
    batch: positiveInt("--batch", values.batch, 64),
    steps: positiveInt("--steps", values.steps, 3),
    gradCheckpoint: values["grad-checkpoint"],
  });
  if (values.json) {
    console.log(JSON.stringify(p));
    return;
  }
  console.log(
    `${p.model} ${p.mode} on ${p.backend}, batch ${p.batch}: ${p.msPerStep.toFixed(1)} ms/step ` +
      `(${p.imagesPerSecond.toFixed(1)} img/s); kernels ${p.msInKernels.toFixed(1)} ms, ` +
      `outside kernels ${(p.msPerStep - p.msInKernels).toFixed(1)} ms`,
  );
  console.log(
    `${"kernel".padEnd(28)} ${"ms/step".padStart(9)} ${"share".padStart(6)} ${"calls".padStart(6)}`,
  );
  for (const k of p.kernels.slice(0, top)) {
    console.log(
      `${k.kernel.padEnd(28)} ${k.msPerStep.toFixed(1).padStart(9)} ${
        (100 * k.msPerStep / p.msPerStep).toFixed(1).padStart(5)
      }% ${k.callsPerStep.toFixed(0).padStart(6)}`,
    );
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`profile: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
