/**
 * Model throughput baseline: inference and training images/s at batch 64 on 32x32 input for every
 * model family, with GMACs. Run with `deno bench -A --unstable-ffi tests/models_bench.ts`; the backend
 * comes from `TFJS_BACKEND` (default auto). `BENCH_SIZE=full` benches the registered sizes (slow on a
 * CPU); the default uses reduced widths/depths so the whole file takes well under a minute.
 *
 * A summary table (img/s = 64 / mean time per batch) is printed when the run ends.
 */
import * as tf from "@tensorflow/tfjs-core";
import { backendFromEnv, initBackend } from "../lib/backend/mod.ts";
import { createModel, type Model, type ModelOverrides } from "../lib/models/mod.ts";
import { maskedAttentionKernel } from "../lib/backend/mod.ts";
import { opByOpAttention } from "../lib/models/vit.ts";

const info = await initBackend(backendFromEnv(), { log: false });
const full = Deno.env.get("BENCH_SIZE") === "full";
const BATCH = 64;

const vitQuick = { embedDim: 192, depth: 4, numHeads: 3 };
const MODELS: [string, string, ModelOverrides][] = full
  ? [
    ["resnet18", "resnet18", {}],
    ["vit_tiny", "vit_tiny", {}],
    ["vit_small", "vit_small", {}],
    ["hybrid_tiny keep 1.0", "hybrid_tiny", { keepRatio: 1 }],
    ["hybrid_tiny keep 0.5", "hybrid_tiny", { keepRatio: 0.5 }],
    ["hybrid_small keep 0.5", "hybrid_small", { keepRatio: 0.5 }],
  ]
  : [
    ["resnet18 w16", "resnet18", { width: 16 }],
    ["vit 192/4/3", "vit_tiny", vitQuick],
    ["hybrid 192/4/3 keep 1.0", "hybrid_tiny", { vit: vitQuick, keepRatio: 1 }],
    ["hybrid 192/4/3 keep 0.5", "hybrid_tiny", { vit: vitQuick, keepRatio: 0.5 }],
  ];

const rows: Record<string, { GMACs: number; "infer img/s"?: number; "train img/s"?: number }> = {};
const x = tf.randomNormal([BATCH, 32, 32, 3], 0, 1, "float32", 1) as tf.Tensor4D;
const labels = tf.oneHot(tf.tensor1d(Array.from({ length: BATCH }, (_, i) => i % 10), "int32"), 10);

function timed(label: string, key: "infer img/s" | "train img/s", fn: () => Promise<void>) {
  let total = 0, n = 0;
  return async (b: Deno.BenchContext) => {
    b.start();
    const t0 = performance.now();
    await fn();
    total += performance.now() - t0;
    n++;
    b.end();
    rows[label][key] = Math.round((BATCH * n) / (total / 1000));
  };
}

for (const [label, name, overrides] of MODELS) {
  const model: Model = createModel(name, overrides);
  rows[label] = { GMACs: Number(model.gmacs().total.toFixed(4)) };
  const vars = [...model.trainableVariables().values()];
  Deno.bench({
    name: `${label}: inference, batch ${BATCH} [${info.name}]`,
    group: label,
    n: 4,
    warmup: 1,
    fn: timed(label, "infer img/s", async () => {
      const out = model.forward(x);
      await out.logits.data();
      out.logits.dispose();
    }),
  });
  Deno.bench({
    name: `${label}: training step (forward + backward), batch ${BATCH} [${info.name}]`,
    group: label,
    n: 3,
    warmup: 1,
    fn: timed(label, "train img/s", async () => {
      const { value, grads } = tf.variableGrads(() => {
        const logits = model.forward(x, { training: true }).logits;
        return tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;
      }, vars);
      await value.data();
      value.dispose();
      tf.dispose(Object.values(grads));
    }),
  });
}

// The hybrid's training-time attention (DynamicViT's token policy, a straight-through keep mask): one
// block's attention forward + backward at the cpu profile's shape (65 tokens, 128 wide, 4 heads), as
// tfjs ops and as the fused kernel where the backend has one; the summary prints their ratio.
const attnMs: Record<string, number> = {};
{
  const [b, t, d, heads] = [128, 65, 128, 4];
  const qkv = tf.randomNormal([b, t, 3 * d], 0, 1, "float32", 2) as tf.Tensor3D;
  const mask = tf.cast(
    tf.greater(tf.randomUniform([b, t], 0, 1, "float32", 3), 0.5),
    "float32",
  ) as tf.Tensor2D;
  const up = tf.randomNormal([b, t, d], 0, 1, "float32", 4);
  const paths: [string, (x: tf.Tensor3D, m: tf.Tensor2D) => tf.Tensor3D | undefined][] = [
    ["masked attention, tfjs ops", (x, m) => opByOpAttention(x, heads, m).ctx],
    ["masked attention, fused kernel", (x, m) => maskedAttentionKernel(x, m, heads)],
  ];
  for (const [label, f] of paths) {
    if (!tf.tidy(() => f(qkv, mask) !== undefined)) continue; // no fused kernel on this backend
    let total = 0, n = 0;
    Deno.bench({
      name: `${label}: forward + backward, [${b}, ${t}, ${d}], ${heads} heads [${info.name}]`,
      group: "masked attention",
      n: 5,
      warmup: 1,
      fn: async (bc) => {
        bc.start();
        const t0 = performance.now();
        const g = tf.grads((x: tf.Tensor, m: tf.Tensor) =>
          tf.sum(tf.mul(f(x as tf.Tensor3D, m as tf.Tensor2D)!, up))
        )([qkv, mask]);
        await Promise.all(g.map((x) => x.data()));
        total += performance.now() - t0;
        n++;
        bc.end();
        tf.dispose(g);
        attnMs[label] = total / n;
      },
    });
  }
}

globalThis.addEventListener("unload", () => {
  console.log(`\nmodels_bench (${info.name}, batch ${BATCH}, 32x32, ${full ? "full" : "quick"} sizes):`);
  console.table(rows);
  const [ops, fused] = [attnMs["masked attention, tfjs ops"], attnMs["masked attention, fused kernel"]];
  if (ops && fused) {
    console.log(
      `masked attention forward + backward: tfjs ops ${ops.toFixed(1)} ms, fused ${fused.toFixed(1)} ms ` +
        `(${(ops / fused).toFixed(2)}× faster)`,
    );
  }
});
