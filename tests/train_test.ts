import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";
import { ADAMW_KERNEL, initBackend } from "../lib/backend/mod.ts";
import type { ForwardOptions, ForwardOutput, Model, TensorLayout } from "../lib/models/types.ts";
import {
  AdamW,
  clipGradNorm,
  cosineSchedule,
  crossEntropy,
  defaultDecayRule,
  distillationKL,
  hybridLoss,
  loadCheckpoint,
  NonFiniteLossError,
  ratioLoss,
  saveCheckpoint,
  train,
  type TrainBatch,
} from "../lib/train/mod.ts";

const cpu = { sanitizeOps: false, sanitizeResources: false };
async function useCpu() {
  await initBackend("cpu", { log: false });
}

/** A tiny model honouring the Model contract: flatten → dense → (running mean, non-trainable) → dense. */
class TinyNet implements Model {
  readonly family = "vit" as const;
  readonly config = {
    model: "vit",
    numClasses: 3,
    imgSize: 4,
    patchSize: 2,
    embedDim: 4,
    depth: 1,
    numHeads: 1,
    mlpRatio: 1,
  } as const;
  private vars = new Map<string, tf.Variable>();
  constructor(seed = 1) {
    const mk = (name: string, shape: number[], s: number, trainable = true) => {
      const n = shape.reduce((a, b) => a * b, 1);
      this.vars.set(
        name,
        tf.variable(tf.tensor(seededRandom(n, s), shape), trainable, `tiny${seed}_${name}_${Math.random()}`),
      );
    };
    mk("fc1.weight", [4 * 4 * 1, 8], seed);
    mk("fc1.bias", [8], seed + 1);
    mk("norm.running_mean", [8], seed + 2, false);
    mk("head.weight", [8, 3], seed + 3);
    mk("head.bias", [3], seed + 4);
  }
  forward(x: tf.Tensor4D, options: ForwardOptions = {}): ForwardOutput {
    return tf.tidy(() => {
      const v = (k: string) => this.vars.get(k)!;
      const flat = tf.reshape(x, [x.shape[0], -1]);
      let h = tf.relu(tf.add(tf.matMul(flat, v("fc1.weight")), v("fc1.bias")));
      if (options.training) {
        const rm = v("norm.running_mean");
        rm.assign(tf.add(tf.mul(rm, 0.9), tf.mul(tf.mean(h, 0), 0.1)));
      }
      h = tf.sub(h, v("norm.running_mean"));
      return { logits: tf.add(tf.matMul(h, v("head.weight")), v("head.bias")) as tf.Tensor2D };
    });
  }
  trainableVariables() {
    return new Map([...this.vars].filter(([k]) => !k.includes("running")));
  }
  stateDict() {
    return new Map(this.vars);
  }
  stateLayouts() {
    return new Map<string, TensorLayout>([...this.vars.keys()].map((k) => [k, "plain"]));
  }
  paramCount() {
    return 0;
  }
  gmacs() {
    return { total: 0 };
  }
  dispose() {
    for (const v of this.vars.values()) v.dispose();
  }
}

/** Deterministic batches: a function of the epoch (different order each epoch). */
function toyData(batches: number, batchSize = 6) {
  return (epoch: number): Iterable<TrainBatch> => ({
    *[Symbol.iterator]() {
      for (let i = 0; i < batches; i++) {
        const seed = 1000 + epoch * 97 + i;
        const x = tf.tensor4d(seededRandom(batchSize * 16, seed), [batchSize, 4, 4, 1]);
        const labels = Int32Array.from(
          seededRandom(batchSize, seed + 7),
          (v) => Math.floor((v + 1) * 1.5) % 3,
        );
        yield { x, y: tf.tensor1d(labels, "int32") };
      }
    },
  });
}

async function weightsOf(model: Model): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [k, v] of model.stateDict()) out.set(k, (await v.data()) as Float32Array);
  return out;
}

Deno.test({
  name: "AdamW.step() matches a hand-computed step (decoupled decay on weights, none on biases)",
  ...cpu,
  fn: async () => {
    await useCpu();
    const w = tf.variable(tf.tensor2d([[1, -2], [0.5, 3]]));
    const b = tf.variable(tf.tensor1d([0.1, -0.1]));
    const vars = new Map<string, tf.Variable>([["fc.weight", w], ["fc.bias", b]]);
    const opt = new AdamW({ lr: 0.1, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.5 });
    const gW = [0.2, -0.4, 1.0, 0.0], gB = [0.3, -0.6];
    const g1 = new Map<string, tf.Tensor>([["fc.weight", tf.tensor2d(gW, [2, 2])], [
      "fc.bias",
      tf.tensor1d(gB),
    ]]);
    opt.step(vars, g1);
    opt.step(vars, g1, 0.05); // second step, different lr
    // By hand, two steps with the same gradient g: m2 = (1-b1)(1+b1) g, v2 = (1-b2)(1+b2) g².
    const hand = (p0: number, g: number, decay: boolean) => {
      let p = p0, m = 0, v = 0;
      for (const [t, lr] of [[1, 0.1], [2, 0.05]]) {
        if (decay) p *= 1 - lr * 0.5;
        m = 0.9 * m + 0.1 * g;
        v = 0.99 * v + 0.01 * g * g;
        const mh = m / (1 - 0.9 ** t), vh = v / (1 - 0.99 ** t);
        p -= lr * mh / (Math.sqrt(vh) + 1e-8);
      }
      return p;
    };
    const wv = await w.data(), bv = await b.data();
    [1, -2, 0.5, 3].forEach((p0, i) => assertAlmostEquals(wv[i], hand(p0, gW[i], true), 1e-6));
    [0.1, -0.1].forEach((p0, i) => assertAlmostEquals(bv[i], hand(p0, gB[i], false), 1e-6));
    assertEquals(opt.stepCount, 2);
    const s = opt.state();
    assertEquals([...s.m.keys()].sort(), ["fc.bias", "fc.weight"]);
    tf.dispose([...s.m.values(), ...s.v.values(), ...g1.values(), w, b]);
    opt.dispose();
  },
});

Deno.test("defaultDecayRule() skips norms, biases, position embeddings and tokens", () => {
  assertEquals(defaultDecayRule("blocks.0.attn.qkv.weight", [192, 576]), true);
  assertEquals(defaultDecayRule("layer1.0.conv1.weight", [3, 3, 64, 64]), true);
  assertEquals(defaultDecayRule("blocks.0.attn.qkv.bias", [576]), false);
  assertEquals(defaultDecayRule("blocks.0.norm1.weight", [192]), false);
  assertEquals(defaultDecayRule("pos_embed", [1, 65, 192]), false);
  assertEquals(defaultDecayRule("cls_token", [1, 1, 192]), false);
  assertEquals(defaultDecayRule("bn1.weight", [64]), false);
});

Deno.test("cosineSchedule() hits its endpoints: warm-up start, peak, floor", () => {
  const lr = cosineSchedule({
    baseLr: 1e-3,
    totalSteps: 100,
    warmupSteps: 10,
    warmupStartLr: 1e-5,
    minLr: 1e-6,
  });
  assertAlmostEquals(lr(0), 1e-5, 1e-15);
  assertAlmostEquals(lr(5), 1e-5 + (1e-3 - 1e-5) / 2, 1e-15);
  assertAlmostEquals(lr(10), 1e-3, 1e-15);
  assertAlmostEquals(lr(55), 1e-6 + (1e-3 - 1e-6) / 2, 1e-12);
  assertAlmostEquals(lr(100), 1e-6, 1e-15);
  assertAlmostEquals(lr(1000), 1e-6, 1e-15);
  for (let s = 10; s < 100; s++) assert(lr(s + 1) <= lr(s), `not decreasing at ${s}`);
  const noWarm = cosineSchedule({ baseLr: 2, totalSteps: 4 });
  assertEquals(noWarm(0), 2);
  assertEquals(noWarm(4), 0);
  assertThrows(() => cosineSchedule({ baseLr: 1, totalSteps: 5, warmupSteps: 6 }), Error, "warmupSteps (6)");
  assertThrows(() => cosineSchedule({ baseLr: -1, totalSteps: 5 }), Error, "baseLr");
});

Deno.test({
  name: "clipGradNorm() scales to the global norm and leaves small gradients alone",
  ...cpu,
  fn: async () => {
    await useCpu();
    await assertNoLeak("clipGradNorm", async () => {
      const g = new Map<string, tf.Tensor>([["a", tf.tensor1d([3, 0])], ["b", tf.tensor1d([0, 4])]]);
      const { grads, norm } = clipGradNorm(g, 1);
      assertAlmostEquals((await norm.data())[0], 5, 1e-5);
      const a = await grads.get("a")!.data(), b = await grads.get("b")!.data();
      assertAlmostEquals(a[0], 0.6, 1e-5);
      assertAlmostEquals(b[1], 0.8, 1e-5);
      const big = clipGradNorm(g, 10);
      assertAlmostEquals((await big.grads.get("a")!.data())[0], 3, 1e-5);
      tf.dispose([...g.values(), ...grads.values(), norm, ...big.grads.values(), big.norm]);
    });
  },
});

Deno.test({
  name: "losses: label-smoothed CE, ratio loss, KL distillation and the hybrid sum match hand values",
  ...cpu,
  fn: async () => {
    await useCpu();
    await assertNoLeak("losses", async () => {
      const logits = tf.tensor2d([[2, 0, -1], [0, 1, 0]]);
      const y = tf.tensor1d([0, 2], "int32");
      const lse = (r: number[]) => Math.log(r.reduce((a, v) => a + Math.exp(v), 0));
      const rows = [[2, 0, -1], [0, 1, 0]];
      const lp = rows.map((r) => r.map((v) => v - lse(r)));
      const ce0 = -(lp[0][0] + lp[1][2]) / 2;
      const eps = 0.1;
      const ceS = -[0, 1].reduce((acc, i) => {
        const t = [0, 1, 2].map((c) => (c === [0, 2][i] ? 1 - eps : 0) + eps / 3);
        return acc + t.reduce((a, tc, c) => a + tc * lp[i][c], 0);
      }, 0) / 2;
      const a = crossEntropy(logits, y), b = crossEntropy(logits, y, { labelSmoothing: eps });
      assertAlmostEquals((await a.data())[0], ce0, 1e-5);
      assertAlmostEquals((await b.data())[0], ceS, 1e-5);
      const m = tf.tensor2d([[1, 1, 0, 0], [1, 0, 0, 0]]);
      const r = ratioLoss([m], [0.5]);
      assertAlmostEquals((await r.data())[0], (0 + 0.25 ** 2) / 2, 1e-6);
      const same = distillationKL(logits, logits);
      assertAlmostEquals((await same.data())[0], 0, 1e-6);
      const teacher = tf.tensor2d([[0, 0, 0], [0, 0, 0]]);
      const kl = distillationKL(logits, teacher);
      const klHand = lp.reduce((acc, row) =>
        acc + row.reduce((s, l) => s + (1 / 3) * (Math.log(1 / 3) - l), 0), 0) / 2;
      assertAlmostEquals((await kl.data())[0], klHand, 1e-5);
      const h = hybridLoss({
        logits,
        labels: y,
        keepMasks: [m],
        keepTargets: [0.5],
        teacherLogits: teacher,
        cnnLogits: logits,
      }, {
        ratio: 2,
        distill: 0.5,
        aux: 0.3,
      });
      assertAlmostEquals(
        (await h.total.data())[0],
        ce0 + 2 * (0.25 ** 2 / 2) + 0.5 * klHand + 0.3 * ce0,
        1e-5,
      );
      assertEquals(Object.keys(h.parts).sort(), ["aux", "ce", "distill", "ratio"]);
      const y3 = tf.tensor1d([0, 1, 2], "int32");
      assertThrows(() => crossEntropy(logits, y3), Error, "labels must be [2]");
      y3.dispose();
      tf.dispose([logits, y, a, b, m, r, same, teacher, kl, h.total, ...Object.values(h.parts)]);
    });
  },
});

Deno.test({
  name: "saveCheckpoint()/loadCheckpoint() round-trip weights, optimiser moments and counters exactly",
  ...cpu,
  fn: async () => {
    await useCpu();
    const dir = await Deno.makeTempDir();
    try {
      const model = new TinyNet(3);
      const opt = new AdamW();
      const grads = new Map([...model.trainableVariables()].map(([k, v]) => [k, tf.onesLike(v)]));
      opt.step(model.trainableVariables(), grads);
      const st = opt.state();
      const path = `${dir}/c.safetensors`;
      await saveCheckpoint(path, model.stateDict(), st, {
        epoch: 1,
        stepInEpoch: 2,
        globalStep: 7,
        rngState: 123,
      }, { a: 1 });
      const ck = await loadCheckpoint(path);
      assertEquals(ck.progress.globalStep, 7);
      assertEquals(ck.config, { a: 1 });
      assertEquals(ck.optimizer.step, 1);
      for (const [k, v] of model.stateDict()) assertEquals(await ck.model.get(k)!.data(), await v.data());
      for (const [k, v] of st.v) assertEquals(await ck.optimizer.v.get(k)!.data(), await v.data());
      await Deno.writeFile(`${dir}/bad.safetensors`, new Uint8Array([1, 2, 3]));
      await assertRejects(() => loadCheckpoint(`${dir}/bad.safetensors`), Error, "bad.safetensors");
      tf.dispose([
        ...grads.values(),
        ...st.m.values(),
        ...st.v.values(),
        ...ck.model.values(),
        ...ck.optimizer.m.values(),
        ...ck.optimizer.v.values(),
      ]);
      opt.dispose();
      model.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "train() resumed after an interrupted epoch gives bitwise the same weights as an uninterrupted run",
  ...cpu,
  fn: async () => {
    await useCpu();
    const dirA = await Deno.makeTempDir(), dirB = await Deno.makeTempDir();
    try {
      const common = { epochs: 2, stepsPerEpoch: 3, lr: 0.05, seed: 4, progress: false, logEverySteps: 1 };
      const a = new TinyNet(1);
      const ra = await train({ ...common, model: a, train: toyData(3), eval: toyData(2), outDir: dirA });
      assert(ra.completed);
      assertEquals(ra.globalStep, 6);

      const b1 = new TinyNet(1);
      const rb1 = await train({
        ...common,
        model: b1,
        train: toyData(3),
        eval: toyData(2),
        outDir: dirB,
        stopAfterSteps: 4,
      });
      assertEquals([rb1.completed, rb1.stoppedBy, rb1.progress.epoch, rb1.progress.stepInEpoch], [
        false,
        "stopAfterSteps",
        1,
        1,
      ]);
      b1.dispose();
      const b2 = new TinyNet(99); // different initial weights: everything must come from the checkpoint
      const rb2 = await train({
        ...common,
        model: b2,
        train: toyData(3),
        eval: toyData(2),
        outDir: dirB,
        resume: true,
      });
      assert(rb2.completed);
      const wa = await weightsOf(a), wb = await weightsOf(b2);
      for (const [k, v] of wa) assertEquals(wb.get(k), v, `weights of ${k} differ`);
      // The logs agree too (the resumed log has one extra "resume" line).
      const lines = async (d: string) =>
        (await Deno.readTextFile(`${d}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l))
          .filter((r) => r.type === "step").map((r) => [r.globalStep, r.loss]);
      assertEquals(await lines(dirB), await lines(dirA));
      assertEquals(rb2.epochs.map((e) => e.trainLoss), ra.epochs.map((e) => e.trainLoss));
      await assertRejects(
        () =>
          train({ ...common, stepsPerEpoch: 2, model: b2, train: toyData(3), outDir: dirB, resume: true }),
        Error,
        "stepsPerEpoch 3",
      );
      // A changed learning rate is another run: refused (it was a warning), unless forced.
      await assertRejects(
        () => train({ ...common, lr: 0.01, model: b2, train: toyData(3), outDir: dirB, resume: true }),
        Error,
        "lr: 0.05 → 0.01",
      );
      const forced = await train({
        ...common,
        lr: 0.01,
        model: b2,
        train: toyData(3),
        outDir: dirB,
        resume: true,
        forceResume: true,
      });
      assert(forced.completed);
      a.dispose();
      b2.dispose();
    } finally {
      await Deno.remove(dirA, { recursive: true });
      await Deno.remove(dirB, { recursive: true });
    }
  },
});

Deno.test({
  name: "train() leaks no tensors across training steps, evaluation and checkpoints",
  ...cpu,
  fn: async () => {
    await useCpu();
    const model = new TinyNet(2);
    const dir = await Deno.makeTempDir();
    try {
      await train({ model, epochs: 1, stepsPerEpoch: 1, train: toyData(1), progress: false }); // warm up
      await assertNoLeak(
        "train",
        () =>
          train({
            model,
            epochs: 1,
            stepsPerEpoch: 2,
            train: toyData(2),
            eval: toyData(1),
            outDir: dir,
            progress: false,
          }),
      );
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "train() stops on a non-finite loss with a message naming the step, before applying it",
  ...cpu,
  fn: async () => {
    await useCpu();
    const model = new TinyNet(5);
    const before = await weightsOf(model);
    const err = await assertRejects(
      () =>
        train({
          model,
          epochs: 1,
          stepsPerEpoch: 3,
          train: toyData(3),
          progress: false,
          loss: ({ model, batch, step }) => {
            const { logits } = model.forward(batch.x, { training: false });
            const ce = crossEntropy(logits, batch.y);
            return { loss: (step === 0 ? tf.mul(ce, NaN) : ce) as tf.Scalar, logits };
          },
        }),
      NonFiniteLossError,
      "global step 0",
    );
    assertEquals((err as NonFiniteLossError).step, 0);
    const after = await weightsOf(model);
    for (const [k, v] of before) assertEquals(after.get(k), v);
    model.dispose();
  },
});

Deno.test({
  name: "train() validates its options and the batch source",
  ...cpu,
  fn: async () => {
    await useCpu();
    const model = new TinyNet(6);
    await assertRejects(() => train({ model, epochs: 0, stepsPerEpoch: 1, train: [] }), Error, "epochs");
    await assertRejects(
      () => train({ model, epochs: 1, stepsPerEpoch: 2, train: toyData(1), progress: false }),
      Error,
      "yielded 1 batches",
    );
    await assertRejects(
      () =>
        train({
          model,
          epochs: 1,
          stepsPerEpoch: 1,
          train: [{ x: 1 } as unknown as TrainBatch],
          progress: false,
        }),
      Error,
      "batch 0",
    );
    model.dispose();
  },
});

Deno.test({
  name:
    "trainHybridTwoStage(): stage 1 trains only the CNN; stage 2 with a frozen CNN trains the ViT and importance head",
  ...cpu,
  fn: async () => {
    await initBackend("wasm", { log: false }); // the pure-JS cpu backend takes ~14 s here
    const { createModel } = await import("../lib/models/mod.ts");
    const { trainHybridTwoStage } = await import("../lib/train/mod.ts");
    const hybrid = createModel("hybrid_test", { cnnHead: true, keepRatio: 0.5 }, {
      seed: 3,
    }) as import("../lib/models/mod.ts").Hybrid;
    const data = (epoch: number): Iterable<TrainBatch> => ({
      *[Symbol.iterator]() {
        for (let i = 0; i < 2; i++) {
          const s = 50 + epoch * 10 + i;
          yield {
            x: tf.tensor4d(seededRandom(4 * 32 * 32 * 3, s), [4, 32, 32, 3]),
            y: tf.tensor1d([0, 1, 2, 3], "int32"),
          };
        }
      },
    });
    const snap = async () => await weightsOf(hybrid);
    const w0 = await snap();
    let afterStage1: Map<string, Float32Array> | undefined;
    const changed = (a: Map<string, Float32Array>, b: Map<string, Float32Array>) =>
      [...a.keys()].filter((k) => a.get(k)!.some((v, i) => v !== b.get(k)![i]));
    const r = await trainHybridTwoStage({
      model: hybrid,
      train: data,
      stepsPerEpoch: 2,
      stage1: {
        epochs: 1,
        lr: 1e-3,
        progress: false,
        callbacks: {
          onEpochEnd: async () => {
            afterStage1 = await snap();
          },
        },
      },
      stage2: { epochs: 1, lr: 1e-3, progress: false, cnnMode: "frozen", loss: { distill: 0.5 } },
    });
    assert(r.stage1.completed && r.stage2?.completed);
    const c1 = changed(w0, afterStage1!);
    assert(c1.length > 0 && c1.every((k) => k.startsWith("cnn.")), `stage 1 changed ${c1.join(", ")}`);
    assert(c1.some((k) => k.startsWith("cnn.importance_head.")), "stage 1 did not train the importance head");
    const c2 = changed(afterStage1!, await snap());
    assert(c2.some((k) => k.startsWith("vit.")), "stage 2 did not train the ViT");
    assert(c2.some((k) => k.startsWith("cnn.importance_head.")), "stage 2 did not train the importance head");
    const frozen = c2.filter((k) => k.startsWith("cnn.") && !k.startsWith("cnn.importance_head."));
    assertEquals(frozen, [], "frozen CNN changed in stage 2 (incl. batch-norm statistics)");
    hybrid.dispose();
  },
});

Deno.test({
  name: "findBatchSize() picks the largest batch under the memory budget and restores the model state",
  ...cpu,
  fn: async () => {
    await useCpu();
    const { findBatchSize, trainStepTrial } = await import("../lib/train/mod.ts");
    const model = new TinyNet(7);
    const before = await weightsOf(model);
    const trial = trainStepTrial(model, [4, 4, 1], 3);
    const big = await findBatchSize({
      trial,
      budgetBytes: 2 ** 30,
      maxBatchSize: 64,
      restore: model.stateDict(),
    });
    assertEquals(big.batchSize, 64);
    // A budget between the measured peaks of the two probe sizes forces a smaller batch.
    const perImage = big.perImageBytes;
    assert(perImage > 0, `per-image bytes ${perImage}`);
    const budget = big.fixedBytes + perImage * 20;
    const small = await findBatchSize({
      trial,
      budgetBytes: budget,
      maxBatchSize: 64,
      restore: model.stateDict(),
    });
    assert(small.batchSize >= 8 && small.batchSize <= 20, `chose ${small.batchSize}`);
    assert(small.peakBytes <= budget);
    await assertRejects(
      () => findBatchSize({ trial, budgetBytes: 1, maxBatchSize: 4, restore: model.stateDict() }),
      Error,
      "does not fit",
    );
    const after = await weightsOf(model);
    for (const [k, v] of before) assertEquals(after.get(k), v, `${k} changed by the trials`);
    model.dispose();
  },
});

Deno.test({
  name:
    "findBatchSize() with a gradient-checkpointing switch turns it on only when that lets a larger batch fit",
  ...cpu,
  fn: async () => {
    await useCpu();
    const { findBatchSize, trainStepTrial } = await import("../lib/train/mod.ts");
    const { ViT } = await import("../lib/models/mod.ts");
    const vit = new ViT({
      model: "vit",
      numClasses: 3,
      imgSize: 16,
      patchSize: 4,
      embedDim: 32,
      depth: 4,
      numHeads: 4,
      mlpRatio: 2,
    });
    try {
      const trial = trainStepTrial(vit, [16, 16, 3], 3);
      const toggle = (on: boolean) => vit.setGradCheckpointing(on);
      const max = 16;
      const peakAt = async (on: boolean) => {
        toggle(on);
        return (await tf.profile(() => trial(max))).peakBytes;
      };
      const [plain, ckpt] = [await peakAt(false), await peakAt(true)];
      assert(ckpt < plain, `checkpointed peak ${ckpt} B is not below ${plain} B`);
      // A budget between the two peaks: only the checkpointed step fits the whole batch.
      const mid = await findBatchSize({
        trial,
        budgetBytes: (plain + ckpt) / 2,
        maxBatchSize: max,
        gradCheckpoint: toggle,
      });
      assertEquals([mid.batchSize, mid.gradCheckpoint, vit.gradCheckpointing], [max, true, true]);
      const without = mid.withoutCheckpoint as { batchSize: number };
      assert(without.batchSize < max, `without checkpointing: ${JSON.stringify(mid.withoutCheckpoint)}`);
      // Room for the plain step: checkpointing stays off (it would only cost time).
      const roomy = await findBatchSize({
        trial,
        budgetBytes: 2 * plain,
        maxBatchSize: max,
        gradCheckpoint: toggle,
      });
      assertEquals([roomy.batchSize, roomy.gradCheckpoint, vit.gradCheckpointing], [max, false, false]);
      assertEquals(roomy.withoutCheckpoint, undefined);
    } finally {
      vit.dispose();
    }
  },
});

async function runTrainCli(args: string[]): Promise<{ code: number; out: string }> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-ffi", new URL("../tools/train.ts", import.meta.url).pathname, ...args],
    env: { TFJS_BACKEND: "wasm", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
  const o = await cmd.output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

Deno.test("tools/train.ts: --help, and every bad argument is rejected with the value quoted", async () => {
  const help = await runTrainCli(["--help"]);
  assertEquals(help.code, 0);
  assert(help.out.includes("--memory-budget"));
  for (
    const [args, want] of [
      [["--model", "vit", "--keep", "0"], '--keep "0"'],
      [["--model", "nope"], '"nope"'],
      [["--model", "resnet18", "--strategy", "random"], "ResNet18 has no tokens"],
      [["--model", "vit", "--strategy", "attention", "--location", "0"], "location 0"],
      [["--model", "vit", "--dataset", "mnist"], '"mnist"'],
      [["--model", "vit", "--epochs", "1.5"], '--epochs "1.5"'],
      [["--model", "vit", "--override", "{bad"], "--override"],
      [["--model", "vit", "--resume", "--out", "/nonexistent/run"], "nothing to resume"],
      [["--model", "vit", "--frobnicate"], "frobnicate"],
      [["--model", "vit", "--init-from", "/nonexistent/run"], '"/nonexistent/run"'],
      [["--model", "vit", "--cnn-from", "/nonexistent/run"], "needs the hybrid"],
      [["--model", "vit", "--grad-checkpoint", "maybe"], '--grad-checkpoint "maybe"'],
      [["--model", "vit", "--grad-checkpoint", "auto"], "needs memoryBudgetMiB"],
    ] as const
  ) {
    const r = await runTrainCli([...args]);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.out}`);
    assert(r.out.includes(want), `${args.join(" ")}: expected "${want}" in ${r.out}`);
  }
});

Deno.test("tools/train.ts trains a tiny ViT with random pruning and writes result, run.json, weights", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await runTrainCli([
      "--model=vit",
      "--strategy=random",
      "--keep=0.5",
      "--dataset=synthetic",
      "--profile=quick",
      "--epochs=1",
      "--train-subset=64",
      "--eval-subset=32",
      "--batch-size=32",
      "--quiet",
      `--out=${dir}`,
    ]);
    assertEquals(r.code, 0, r.out);
    const result = JSON.parse(await Deno.readTextFile(`${dir}/result.json`));
    assertEquals([result.strategy, result.keepRatio, result.evalImages], ["random", 0.5, 32]);
    // The synthetic set has ground-truth patch masks: selection quality is reported.
    assert(result.selection.images === 32 && result.selection.recall >= 0 && result.selection.recall <= 1);
    const run = JSON.parse(await Deno.readTextFile(`${dir}/run.json`));
    assertEquals(run.profile, "quick");
    assertEquals(run.config.batchSize, 32);
    for (const f of ["model.safetensors", "checkpoint.safetensors", "metrics.jsonl"]) {
      await Deno.stat(`${dir}/${f}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "resume is bitwise exact with random pruning noise and across the two hybrid stages",
  ...cpu,
  fn: async () => {
    await initBackend("wasm", { log: false }); // bitwise on one backend; wasm keeps this fast
    const { createModel } = await import("../lib/models/mod.ts");
    const { createStrategy, singleStage } = await import("../lib/pruning/mod.ts");
    const { trainHybridTwoStage } = await import("../lib/train/mod.ts");
    type Hybrid = import("../lib/models/mod.ts").Hybrid;
    const data = (epoch: number): Iterable<TrainBatch> => ({
      *[Symbol.iterator]() {
        for (let i = 0; i < 2; i++) {
          const s = 70 + epoch * 10 + i;
          yield {
            x: tf.tensor4d(seededRandom(4 * 32 * 32 * 3, s), [4, 32, 32, 3]),
            y: tf.tensor1d([0, 1, 2, 3], "int32"),
          };
        }
      },
    });
    const dirs = [
      await Deno.makeTempDir(),
      await Deno.makeTempDir(),
      await Deno.makeTempDir(),
      await Deno.makeTempDir(),
    ];
    try {
      // ViT trained through random pruning: the per-step generator must resume exactly.
      const random = createStrategy("random");
      const loss = (
        { model, batch, rng }: { model: Model; batch: TrainBatch; rng: import("../lib/util/mod.ts").Rng },
      ) => {
        const { logits } = random.forward(model, batch.x, {
          schedule: singleStage(0.5),
          training: true,
          rng,
        });
        return { loss: crossEntropy(logits, batch.y), logits };
      };
      const vit = (seed: number) => createModel("vit_test", {}, { seed });
      const base = { epochs: 2, stepsPerEpoch: 2, train: data, loss, progress: false, seed: 3 };
      const a = vit(1);
      await train({ ...base, model: a, outDir: dirs[0] });
      const b = vit(1);
      assertEquals((await train({ ...base, model: b, outDir: dirs[1], stopAfterSteps: 3 })).completed, false);
      const b2 = vit(2);
      await train({ ...base, model: b2, outDir: dirs[1], resume: true });
      const [wa, wb] = [await weightsOf(a), await weightsOf(b2)];
      for (const [k, v] of wa) assertEquals(wb.get(k), v, `ViT ${k}`);
      [a, b, b2].forEach((m) => m.dispose());

      // Hybrid: interrupted in stage 2, resumed with a fresh model.
      const hyb = (seed: number) => createModel("hybrid_test", { cnnHead: true }, { seed }) as Hybrid;
      const two = (model: Hybrid, outDir: string, stop?: number) =>
        trainHybridTwoStage({
          model,
          train: data,
          stepsPerEpoch: 2,
          outDir,
          resume: true,
          stage1: { epochs: 1, lr: 1e-3, progress: false },
          stage2: { epochs: 1, lr: 1e-3, progress: false, stopAfterSteps: stop, noiseScale: 1 },
        });
      const h1 = hyb(1);
      await two(h1, dirs[2]);
      const h2 = hyb(1);
      assertEquals((await two(h2, dirs[3], 1)).stage2?.completed, false);
      const h3 = hyb(5);
      assertEquals((await two(h3, dirs[3])).stage2?.completed, true);
      const [w1, w3] = [await weightsOf(h1), await weightsOf(h3)];
      for (const [k, v] of w1) assertEquals(w3.get(k), v, `hybrid ${k}`);
      [h1, h2, h3].forEach((m) => m.dispose());
    } finally {
      for (const d of dirs) await Deno.remove(d, { recursive: true });
    }
  },
});

forEachBackend(
  "AdamW.step() equals the hand-computed step on every backend (fused one-pass kernel on wasm/native)",
  async (t, backend) => {
    // wasm and native run the update as one kernel per tensor, cpu as tfjs ops: both must match.
    assertEquals(t.getKernel(ADAMW_KERNEL, t.getBackend()) !== undefined, backend !== "cpu");
    const before = t.memory().numTensors;
    const [w, b] = t.tidy(
      () => [t.variable(t.tensor2d([[1, -2], [0.5, 3]])), t.variable(t.tensor1d([0.1, -0.1]))],
    );
    const vars = new Map<string, tf.Variable>([["fc.weight", w], ["fc.bias", b]]);
    const opt = new AdamW({
      lr: 0.1,
      betas: [0.9, 0.99],
      eps: 1e-8,
      weightDecay: 0.5,
      lrScale: (n) => n === "fc.bias" ? 2 : 1,
    });
    const gW = [0.2, -0.4, 1.0, 0.0], gB = [0.3, -0.6];
    const grads = new Map<string, tf.Tensor>([["fc.weight", t.tensor2d(gW, [2, 2])], [
      "fc.bias",
      t.tensor1d(gB),
    ]]);
    opt.step(vars, grads);
    opt.step(vars, grads, 0.05);
    opt.step(vars, grads, 0.02);
    const hand = (p0: number, g: number, decay: boolean, scale: number) => {
      let p = p0, m = 0, v = 0;
      for (const [step, base] of [[1, 0.1], [2, 0.05], [3, 0.02]]) {
        const lr = base * scale;
        if (decay) p *= 1 - lr * 0.5;
        m = 0.9 * m + 0.1 * g;
        v = 0.99 * v + 0.01 * g * g;
        p -= lr * (m / (1 - 0.9 ** step)) / (Math.sqrt(v / (1 - 0.99 ** step)) + 1e-8);
      }
      return p;
    };
    const wv = await w.data(), bv = await b.data();
    [1, -2, 0.5, 3].forEach((p0, i) => assertAlmostEquals(wv[i], hand(p0, gW[i], true, 1), 1e-6));
    [0.1, -0.1].forEach((p0, i) => assertAlmostEquals(bv[i], hand(p0, gB[i], false, 2), 1e-6));
    t.dispose([...grads.values(), w, b]);
    opt.dispose();
    assertEquals(t.memory().numTensors, before, "AdamW leaked tensors");
  },
);
