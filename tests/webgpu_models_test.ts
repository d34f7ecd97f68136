/**
 * Everything trains on webgpu: ResNet18, ViT (pruned by keepIndices, gradient checkpointing), the hybrid
 * (gather of the kept tokens) and every pruning strategy run forward and backward on the webgpu backend
 * and match the cpu backend on the same weights and inputs: logits within relative error 1e-4, every
 * gradient within 1e-3, no tensor left behind. Skipped with the reason where no WebGPU adapter exists.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assertClose, assertNoLeak, seededRandom, WEBGPU_SKIP_REASON } from "./_backends.ts";
import { initBackend } from "../lib/backend/mod.ts";
import { createModel, type Model } from "../lib/models/mod.ts";
import { createStrategy, singleStage, type StrategyName } from "../lib/pruning/mod.ts";
import { crossEntropy } from "../lib/train/mod.ts";

if (WEBGPU_SKIP_REASON) console.warn(`webgpu_models_test: skipping: ${WEBGPU_SKIP_REASON}`);

interface Case {
  name: string;
  model: () => Model;
  /** Logits of a forward pass (training mode when `training`). */
  forward: (m: Model, x: tf.Tensor4D, training: boolean) => tf.Tensor2D;
  size: number;
}

const keepIdx = () => tf.tensor2d([[0, 3, 5, 9, 12, 15], [1, 2, 6, 7, 10, 14]], [2, 6], "int32");

const strategyCase = (s: StrategyName): Case => ({
  name: `hybrid_test, strategy "${s}" at keep 0.5 before block 1`,
  model: () => createModel("hybrid_test", { imgSize: 16, numClasses: 3 }, { seed: 5 }),
  forward: (m, x, training) => {
    // A fresh strategy per call: "random" draws the same tokens on both backends.
    const out = createStrategy(s, { seed: 1 }).forward(m, x, { schedule: singleStage(0.5, 1), training });
    return out.logits;
  },
  size: 16,
});

const CASES: Case[] = [
  {
    name: "resnet18_test (width 8)",
    model: () => createModel("resnet18_test", { imgSize: 16, numClasses: 3 }, { seed: 5 }),
    forward: (m, x, training) => m.forward(x, { training }).logits,
    size: 16,
  },
  {
    name: "vit_test with keepIndices (gathered tokens)",
    model: () => createModel("vit_test", { imgSize: 16, numClasses: 3 }, { seed: 5 }),
    forward: (m, x, training) => tf.tidy(() => m.forward(x, { training, keepIndices: keepIdx() }).logits),
    size: 16,
  },
  {
    name: "vit_test with gradient checkpointing",
    model: () => createModel("vit_test", { imgSize: 16, numClasses: 3, gradCheckpoint: true }, { seed: 5 }),
    forward: (m, x, training) => m.forward(x, { training }).logits,
    size: 16,
  },
  {
    name: "hybrid_test (CNN scores, top-k gather)",
    model: () => createModel("hybrid_test", { imgSize: 16, numClasses: 3 }, { seed: 5 }),
    forward: (m, x, training) => m.forward(x, { training }).logits,
    size: 16,
  },
  ...(["random", "cnn", "attention", "merge"] as const).map(strategyCase),
];

interface Step {
  evalLogits: Float32Array;
  trainLogits: Float32Array;
  grads: Map<string, Float32Array>;
}

async function step(c: Case, m: Model, x: tf.Tensor4D): Promise<Step> {
  const evalOut = c.forward(m, x, false);
  const evalLogits = (await evalOut.data()) as Float32Array;
  evalOut.dispose();
  const vars = m.trainableVariables();
  const nameOf = new Map([...vars].map(([k, v]) => [v.name, k]));
  let logits: tf.Tensor2D | undefined;
  const { value, grads } = tf.variableGrads(() => {
    const l = c.forward(m, x, true);
    logits = tf.keep(l);
    return crossEntropy(l, tf.tensor1d([0, 2], "int32"));
  }, [...vars.values()]);
  try {
    const out = new Map<string, Float32Array>();
    for (const [vn, g] of Object.entries(grads)) out.set(nameOf.get(vn)!, (await g.data()) as Float32Array);
    return { evalLogits, trainLogits: (await logits!.data()) as Float32Array, grads: out };
  } finally {
    value.dispose();
    logits?.dispose();
    tf.dispose(Object.values(grads));
  }
}

for (const c of CASES) {
  Deno.test({
    name: `webgpu matches cpu: ${c.name}, forward and backward, no leaks`,
    ignore: WEBGPU_SKIP_REASON !== undefined,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await initBackend("cpu", { log: false });
      const m = c.model();
      // Batch-norm running statistics move in a training step: restore them between the backends.
      const state = new Map([...m.stateDict()].map(([k, v]) => [k, tf.clone(v)]));
      const x = tf.tensor4d(seededRandom(2 * c.size * c.size * 3, 7), [2, c.size, c.size, 3]);
      try {
        const ref = await step(c, m, x);
        for (const [k, v] of m.stateDict()) v.assign(state.get(k)!);
        await initBackend("webgpu", { log: false });
        await step(c, m, x); // warm-up: moves weights to the GPU, compiles the shaders
        for (const [k, v] of m.stateDict()) v.assign(state.get(k)!);
        const got = await assertNoLeak(`${c.name} on webgpu`, () => step(c, m, x));
        assertClose(got.evalLogits, ref.evalLogits, 1e-4, `${c.name} eval logits`);
        assertClose(got.trainLogits, ref.trainLogits, 1e-4, `${c.name} training logits`);
        if (got.grads.size !== ref.grads.size || got.grads.size === 0) {
          throw new Error(`${c.name}: ${got.grads.size} gradients on webgpu, ${ref.grads.size} on cpu`);
        }
        for (const [k, g] of ref.grads) assertClose(got.grads.get(k)!, g, 1e-3, `${c.name} gradient of ${k}`);
      } finally {
        x.dispose();
        tf.dispose([...state.values()]);
        m.dispose();
      }
    },
  });
}
