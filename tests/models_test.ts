/**
 * Models: selectTopK, ViT pruning paths (keepIndices, tokenMask, reducer slot, attention), the hybrid
 * (keep ratio 1 == plain ViT, top-k of its scores), batch-norm train/eval semantics, registry, GMACs
 * and parameter counts against PyTorch-hook counts, leak checks, forward/backward of every registered
 * model at a small size.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";
import { initBackend } from "../lib/backend/mod.ts";
import {
  createModel,
  createModelFromConfig,
  type ForwardOptions,
  type Hybrid,
  listModels,
  type Model,
  modelConfigFromPyTorch,
  type ModelOverrides,
  ResNet18,
  type TokenReducer,
  ViT,
  type ViTConfig,
} from "../lib/models/mod.ts";
import { gatherTokens, keepCount, selectTopK } from "../lib/pruning/mod.ts";
import { loadStateDict } from "../lib/weights/mod.ts";

const cpuTest = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await initBackend("cpu", { log: false });
      await fn();
    },
  });

const smallViT: ViTConfig = {
  model: "vit",
  numClasses: 5,
  imgSize: 16,
  patchSize: 4,
  embedDim: 16,
  depth: 2,
  numHeads: 2,
  mlpRatio: 2,
};

function images(b: number, side: number, seed = 1): tf.Tensor4D {
  return tf.tensor4d(seededRandom(b * side * side * 3, seed), [b, side, side, 3]);
}

function crossEntropy(logits: tf.Tensor2D, labels: number[]): tf.Scalar {
  return tf.tidy(() => {
    const oneHot = tf.oneHot(tf.tensor1d(labels, "int32"), logits.shape[1]);
    return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  });
}

// ---------------------------------------------------------------- selectTopK

forEachBackend(
  "selectTopK() always keeps the CLS token and the top-k patches in original order",
  async () => {
    const tokens = tf.tidy(() => tf.reshape(tf.range(0, 2 * 6 * 2, 1, "float32"), [2, 6, 2]) as tf.Tensor3D);
    const scores = tf.tensor2d([[0.1, 0.9, 0.3, 0.8, 0.2], [5, 4, 3, 2, 1]]);
    const r = selectTopK(tokens, scores, { keep: 2 });
    try {
      assertEquals(r.tokens.shape, [2, 3, 2]);
      assertEquals(Array.from(await r.indices.data()), [1, 3, 0, 1]);
      assertEquals(r.indices.dtype, "int32");
      // Row 0: CLS (0,1), patch 1 = token 2 (4,5), patch 3 = token 4 (8,9).
      assertEquals(Array.from(await r.tokens.data()).slice(0, 6), [0, 1, 4, 5, 8, 9]);
      assertEquals(Array.from(await r.tokens.data()).slice(6), [12, 13, 14, 15, 16, 17]);
    } finally {
      tf.dispose([tokens, scores, r.tokens, r.indices]);
    }
  },
);

cpuTest("selectTopK() with every patch kept returns the tokens unchanged", async () => {
  const tokens = tf.tensor3d(seededRandom(2 * 9 * 4), [2, 9, 4]);
  const scores = tf.tensor2d(seededRandom(16, 3), [2, 8]);
  const r = selectTopK(tokens, scores, { keepRatio: 1 });
  assertEquals(Array.from(await r.tokens.data()), Array.from(await tokens.data()));
  assertEquals(Array.from(await r.indices.data()), [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7]);
  tf.dispose([tokens, scores, r.tokens, r.indices]);
});

cpuTest("selectTopK() rejects bad shapes and keep values with messages that quote them", () => {
  const tokens = tf.zeros([1, 5, 2]) as tf.Tensor3D;
  const scores = tf.zeros([1, 3]) as tf.Tensor2D;
  assertThrows(() => selectTopK(tokens, scores, { keep: 1 }), Error, "scores shape [1,3] is not [1, 4]");
  const s4 = tf.zeros([1, 4]) as tf.Tensor2D;
  assertThrows(() => selectTopK(tokens, s4, { keep: 5 }), Error, "keep 5 is not an integer in 1..4");
  assertThrows(() => selectTopK(tokens, s4, {}), Error, "exactly one of keep and keepRatio");
  assertThrows(() => keepCount(64, 1.5), Error, "keep ratio 1.5");
  assertEquals(keepCount(64, 0.5), 32);
  assertEquals(keepCount(64, 0.01), 1);
  tf.dispose([tokens, scores, s4]);
});

cpuTest("gatherTokens() is differentiable with respect to the tokens", async () => {
  const tokens = tf.tensor3d(seededRandom(1 * 5 * 2), [1, 5, 2]);
  const idx = tf.tensor2d([[3, 0]], [1, 2], "int32");
  const g = tf.grad((t: tf.Tensor) => tf.sum(gatherTokens(t as tf.Tensor3D, idx)))(tokens);
  // CLS and patches 0 and 3 (tokens 1 and 4) receive gradient 1; the others 0.
  assertEquals(Array.from(await g.data()), [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]);
  tf.dispose([tokens, idx, g]);
});

// ---------------------------------------------------------------- ViT

forEachBackend("ViT.forward() with keepIndices runs its blocks on CLS + k tokens", async () => {
  const vit = new ViT(smallViT, { seed: 3 });
  const x = images(2, 16);
  const keep = tf.tensor2d([[0, 2, 5, 15], [1, 3, 8, 9]], [2, 4], "int32");
  try {
    const out = await assertNoLeak("pruned forward", () => {
      const o = vit.forward(x, { keepIndices: keep, returnAux: true, returnAttention: true });
      const shapes = {
        logits: o.logits.shape,
        att: o.aux!.attention!.map((a) => a.shape),
        tpb: o.aux!.tokensPerBlock,
      };
      const kept = o.aux!.keptIndices!.arraySync();
      tf.dispose(o as unknown as tf.TensorContainer);
      return { ...shapes, kept };
    });
    assertEquals(out.logits, [2, 5]);
    assertEquals(out.tpb, [5, 5]);
    assertEquals(out.att, [[2, 2, 5, 5], [2, 2, 5, 5]]);
    assertEquals(out.kept, [[0, 2, 5, 15], [1, 3, 8, 9]]);
    // Attention rows are probability distributions.
    const o = vit.forward(x, { returnAttention: true });
    const sums = tf.sum(o.aux!.attention![1], -1);
    const s = await sums.data();
    assert(s.every((v) => Math.abs(v - 1) < 1e-5), "attention rows sum to 1");
    assertEquals(o.aux!.attention![0].shape, [2, 2, 17, 17]);
    tf.dispose([sums, o as unknown as tf.TensorContainer]);
  } finally {
    tf.dispose([x, keep]);
    vit.dispose();
  }
});

forEachBackend("ViT keepIndices with all patches reproduces the unpruned logits exactly", async () => {
  const vit = new ViT(smallViT, { seed: 4 });
  const x = images(2, 16, 2);
  const all = tf.tidy(() => tf.tile(tf.reshape(tf.range(0, 16, 1, "int32"), [1, 16]), [2, 1]) as tf.Tensor2D);
  try {
    const a = vit.forward(x).logits;
    const b = vit.forward(x, { keepIndices: all }).logits;
    assertEquals(Array.from(await b.data()), Array.from(await a.data()));
    tf.dispose([a, b]);
  } finally {
    tf.dispose([x, all]);
    vit.dispose();
  }
});

cpuTest(
  "ViT with a hard tokenMask matches the gather-pruned logits (masked attention, no gather)",
  async () => {
    const vit = new ViT(smallViT, { seed: 5 });
    const x = images(1, 16, 3);
    const keepList = [0, 3, 4, 9, 10, 14];
    const keep = tf.tensor2d([keepList], [1, 6], "int32");
    const maskVals = new Float32Array(16);
    for (const k of keepList) maskVals[k] = 1;
    const mask = tf.tensor2d(maskVals, [1, 16]);
    const ones = tf.ones([1, 16]) as tf.Tensor2D;
    const pruned = vit.forward(x, { keepIndices: keep }).logits;
    const masked = vit.forward(x, { tokenMask: mask }).logits;
    const full = vit.forward(x).logits;
    const allOn = vit.forward(x, { tokenMask: ones }).logits;
    assertClose(await masked.data(), await pruned.data(), 1e-4, "hard mask vs gather");
    assertClose(await allOn.data(), await full.data(), 1e-4, "all-ones mask vs unpruned");
    assertThrows(() => vit.forward(x, { tokenMask: mask, keepIndices: keep }), Error, "not both");
    tf.dispose([x, keep, mask, ones, pruned, masked, full, allOn]);
    vit.dispose();
  },
);

cpuTest("ViT reducer slot: a reducer after block 0 shortens the sequence for later blocks", async () => {
  const vit = new ViT({ ...smallViT, depth: 3 }, { seed: 6 });
  const x = images(2, 16, 4);
  const seen: number[] = [];
  const reducer: TokenReducer = {
    afterBlocks: [0],
    needsAttention: true,
    reduce(tokens, ctx) {
      seen.push(ctx.block, ctx.attention!.shape[2], ctx.keptIndices.shape[1]);
      // Keep CLS + the even patches.
      const idx = tf.tile(tf.reshape(tf.range(0, 16, 2, "int32"), [1, 8]), [
        tokens.shape[0],
        1,
      ]) as tf.Tensor2D;
      return { tokens: gatherTokens(tokens, idx), keptIndices: idx };
    },
  };
  const out = await assertNoLeak("reducer forward", () => {
    const o = vit.forward(x, { reducer, returnAux: true });
    const r = { tpb: o.aux!.tokensPerBlock, kept: o.aux!.keptIndices!.shape };
    tf.dispose(o as unknown as tf.TensorContainer);
    return r;
  });
  assertEquals(seen, [0, 17, 16]);
  assertEquals(out.tpb, [17, 9, 9]);
  assertEquals(out.kept, [2, 8]);
  assertEquals(vit.gmacs({ tokensPerBlock: [17, 9, 9] }).total < vit.gmacs().total, true);
  x.dispose();
  vit.dispose();
});

cpuTest("ViT rejects inputs and keepIndices of the wrong shape, quoting them", () => {
  const vit = new ViT(smallViT);
  const x = tf.zeros([1, 32, 32, 3]) as tf.Tensor4D;
  assertThrows(() => vit.forward(x), Error, "input shape [1,32,32,3] is not [B, 16, 16, 3]");
  const x16 = tf.zeros([1, 16, 16, 3]) as tf.Tensor4D;
  const bad = tf.zeros([2, 3], "int32") as tf.Tensor2D;
  assertThrows(() => vit.forward(x16, { keepIndices: bad }), Error, "keepIndices shape [2,3]");
  assertThrows(
    () => new ViT({ ...smallViT, embedDim: 15 }),
    Error,
    "embedDim 15 is not divisible by numHeads 2",
  );
  assertThrows(
    () => new ViT({ ...smallViT, imgSize: 18 }),
    Error,
    "imgSize 18 is not a multiple of patchSize 4",
  );
  tf.dispose([x, x16, bad]);
  vit.dispose();
});

// ---------------------------------------------------------------- Hybrid

forEachBackend("Hybrid with keep ratio 1 reproduces the plain ViT exactly", async () => {
  const hybrid = createModel("hybrid_test", { keepRatio: 1 }, { seed: 7 }) as Hybrid;
  // A separate plain ViT with the hybrid's ViT weights.
  const vit = new ViT(hybrid.config.vit as ViTConfig, { seed: 99 });
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, v] of hybrid.vit.stateDict()) {
    tensors.set(k, { shape: v.shape, data: v.dataSync() as Float32Array });
  }
  loadStateDict(vit, tensors, { layout: "tfjs" });
  const x = images(3, 32, 5);
  try {
    const h = hybrid.forward(x, { returnAux: true });
    const p = vit.forward(x);
    assertEquals(Array.from(await h.logits.data()), Array.from(await p.logits.data()));
    assertEquals(h.aux!.keptIndices!.shape, [3, 64]);
    tf.dispose([h as unknown as tf.TensorContainer, p.logits]);
  } finally {
    x.dispose();
    hybrid.dispose();
    vit.dispose();
  }
});

forEachBackend("Hybrid keeps CLS + the top-k patches of its importance scores", () => {
  const hybrid = createModel("hybrid_test", { keepRatio: 0.4, cnnHead: true }, { seed: 8 }) as Hybrid;
  const x = images(2, 32, 6);
  try {
    const out = hybrid.forward(x, { returnAux: true });
    const k = keepCount(64, 0.4);
    assertEquals(out.aux!.keptIndices!.shape, [2, k]);
    assertEquals(out.aux!.tokensPerBlock, [k + 1, k + 1]);
    assertEquals(out.aux!.scores!.shape, [2, 64]);
    assertEquals(out.aux!.cnnLogits!.shape, [2, 10]);
    const scores = out.aux!.scores!.arraySync();
    const kept = out.aux!.keptIndices!.arraySync();
    for (let b = 0; b < 2; b++) {
      const order = scores[b].map((s, i) => [s, i]).sort((p, q) => q[0] - p[0] || p[1] - q[1]).slice(0, k)
        .map(([, i]) => i).sort((p, q) => p - q);
      assertEquals(kept[b], order);
    }
    tf.dispose(out as unknown as tf.TensorContainer);
    // keepRatio per call overrides the config.
    const o2 = hybrid.forward(x, { returnAux: true, keepRatio: 1 });
    assertEquals(o2.aux!.tokensPerBlock, [65, 65]);
    tf.dispose(o2 as unknown as tf.TensorContainer);
  } finally {
    x.dispose();
    hybrid.dispose();
  }
});

cpuTest("Hybrid scorer costs a fraction of the ViT GMACs it saves at keep ratio 0.5", () => {
  for (const name of ["hybrid_tiny", "hybrid_small", "hybrid_small_patch16_224"]) {
    const m = createModel(name) as Hybrid;
    const g = m.gmacs();
    const saved = m.gmacs({ keepRatio: 1 }).vit! - g.vit!;
    console.log(
      `  ${name}: scorer ${g.cnn!.toFixed(4)} GMACs, ViT ${g.vit!.toFixed(3)} at keep 0.5 (saves ${
        saved.toFixed(3)
      }), ` +
        `total ${g.total.toFixed(3)}; scorer/saved = ${(g.cnn! / saved).toFixed(3)}`,
    );
    assert(g.cnn! < 0.15 * saved, `${name}: scorer ${g.cnn} GMACs is not below 15% of the saved ${saved}`);
    m.dispose();
  }
});

cpuTest(
  "Hybrid straight-through score gate changes gradients, not values; 'none' leaves the scorer to aux losses",
  async () => {
    const x = images(2, 32, 13);
    const run = async (scoreGradient: "straight_through" | "none") => {
      const m = createModel("hybrid_test", { scoreGradient }, { seed: 21 }) as Hybrid;
      const vars = m.trainableVariables();
      const { value, grads } = tf.variableGrads(
        () => crossEntropy(m.forward(x, { training: true }).logits, [1, 2]),
        [...vars.values()],
      );
      const loss = (await value.data())[0];
      const scorerGrad = grads[vars.get("cnn.importance_head.weight")!.name];
      const hasScorerGrad = scorerGrad !== undefined && (await scorerGrad.data()).some((v) => v !== 0);
      tf.dispose([value, ...Object.values(grads)]);
      m.dispose();
      return { loss, hasScorerGrad };
    };
    const st = await run("straight_through");
    const none = await run("none");
    assertEquals(st.loss, none.loss);
    assertEquals(st.hasScorerGrad, true);
    assertEquals(none.hasScorerGrad, false);
    x.dispose();
  },
);

cpuTest("Hybrid.gmacs() charges what inference runs: the scorer up to scoreStage, not the CNN head", () => {
  // hybrid_test: ResNet18 width 8 with the CIFAR stem (3x3, stride 1, no max-pool), scored after layer1,
  // importance head pooled onto the 8x8 grid, 32x32 input. By hand:
  const stem = 32 * 32 * 8 * 3 * 9; // 3 -> 8 channels at 32x32
  const layer1 = 4 * (32 * 32 * 8 * 8 * 9); // two basic blocks of two 3x3 convs, 8 -> 8 at 32x32
  const head = 8 * 8 * 8; // one linear unit per patch over 8 channels
  const scorer = (stem + layer1 + head) / 1e9;
  const m = createModel("hybrid_test", { cnnHead: true, keepRatio: 0.5 }) as Hybrid;
  try {
    const g = m.gmacs();
    assert(Math.abs(g.cnn! - scorer) < 1e-12, `scorer ${g.cnn} GMACs, expected ${scorer}`);
    assert(Math.abs(g.total - (scorer + g.vit!)) < 1e-12);
    // The CNN's classification path counts only when asked for (it runs for the auxiliary loss).
    const withHead = m.gmacs({ withCnnHead: true });
    assert(withHead.cnn! > 2 * scorer, `with the head ${withHead.cnn} should far exceed ${scorer}`);
    assertEquals(withHead.vit, g.vit);
  } finally {
    m.dispose();
  }
});

cpuTest("Hybrid with a reduced scorer input and an incompatible grid", () => {
  const m = createModel("hybrid_test", { scorerImgSize: 16, scoreStage: 1 }) as Hybrid;
  const x = images(1, 32, 7);
  const out = m.forward(x, { returnAux: true });
  assertEquals(out.aux!.scores!.shape, [1, 64]); // 16x16 map pooled onto the 8x8 grid
  assert(m.gmacs().cnn! < createModel("hybrid_test").gmacs().cnn!, "a smaller scorer input is cheaper");
  tf.dispose([x, out as unknown as tf.TensorContainer]);
  m.dispose();
  assertThrows(
    () => createModel("hybrid_test", { scorerImgSize: 24, scoreStage: 2 }),
    Error,
    "does not pool onto",
  );
});

// ---------------------------------------------------------------- gradient checkpointing

/** Loss and every trainable parameter's gradient (by timm name) of one training step. */
async function stepGrads(
  m: Model,
  loss: () => tf.Scalar,
): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const vars = m.trainableVariables();
  const { value, grads } = tf.variableGrads(loss, [...vars.values()]);
  try {
    const out = new Map<string, Float32Array>();
    for (const [name, v] of vars) {
      assert(grads[v.name] !== undefined, `no gradient for ${name}`);
      out.set(name, (await grads[v.name].data()) as Float32Array);
    }
    return { loss: (await value.data())[0], grads: out };
  } finally {
    value.dispose();
    tf.dispose(Object.values(grads));
  }
}

function assertSameGrads(
  got: { loss: number; grads: Map<string, Float32Array> },
  want: { loss: number; grads: Map<string, Float32Array> },
  what: string,
): void {
  assert(
    Math.abs(got.loss - want.loss) <= 1e-6 * Math.abs(want.loss),
    `${what}: loss ${got.loss} vs ${want.loss}`,
  );
  assertEquals([...got.grads.keys()], [...want.grads.keys()]);
  for (const [name, g] of want.grads) {
    assertClose(got.grads.get(name)!, g, 1e-5, `${what}: gradient of ${name}`);
  }
}

forEachBackend(
  "ViT gradient checkpointing gives the same loss and gradients of every parameter, without tensor leaks",
  async () => {
    const cfg = { ...smallViT, depth: 3 };
    const plain = new ViT(cfg, { seed: 21 });
    const ckpt = new ViT({ ...cfg, gradCheckpoint: true }, { seed: 21 });
    const x = images(2, 16, 22);
    const keep = tf.tensor2d([[0, 2, 5, 7, 11, 15], [1, 3, 4, 8, 9, 14]], [2, 6], "int32");
    const soft = tf.tensor2d(seededRandom(2 * 16, 23).map((v) => (v + 1) / 2), [2, 16]);
    // Two reducers: one that needs block 0's attention (that block is then not checkpointed), one that
    // does not (every block checkpointed, the reducer's gather on the tape between them).
    const reducer = (needsAttention: boolean): TokenReducer => ({
      afterBlocks: [needsAttention ? 0 : 1],
      needsAttention,
      reduce(tokens, ctx) {
        const idx = tf.tile(tf.reshape(tf.range(0, 16, 2, "int32"), [1, 8]), [tokens.shape[0], 1]);
        const sel = needsAttention
          ? tf.mul(gatherTokens(tokens, idx as tf.Tensor2D), tf.sum(ctx.attention!)) as tf.Tensor3D
          : gatherTokens(tokens, idx as tf.Tensor2D);
        return { tokens: sel, keptIndices: idx as tf.Tensor2D };
      },
    });
    const cases: [string, ForwardOptions][] = [
      ["plain", {}],
      ["keepIndices", { keepIndices: keep }],
      ["soft tokenMask", { tokenMask: soft }],
      ["reducer with attention", { reducer: reducer(true) }],
      ["reducer without attention", { reducer: reducer(false) }],
    ];
    try {
      for (const [what, opts] of cases) {
        const run = (m: ViT) => () => crossEntropy(m.forward(x, { ...opts, training: true }).logits, [1, 4]);
        const want = await stepGrads(plain, run(plain));
        const got = await assertNoLeak(`${what} training step`, () => stepGrads(ckpt, run(ckpt)));
        assertSameGrads(got, want, what);
      }
      // The token mask's own gradient (DynamicViT trains its predictor through it) matches too.
      const maskGrad = (m: ViT) =>
        tf.tidy(() =>
          tf.grad((mk: tf.Tensor) => tf.sum(m.forward(x, { tokenMask: mk as tf.Tensor2D }).logits))(soft)
        );
      const [gp, gc] = [maskGrad(plain), maskGrad(ckpt)];
      assertClose(await gc.data(), await gp.data(), 1e-5, "gradient of the token mask");
      tf.dispose([gp, gc]);
    } finally {
      tf.dispose([x, keep, soft]);
      plain.dispose();
      ckpt.dispose();
    }
  },
);

forEachBackend(
  "Hybrid with gradient checkpointing: same gradients (scorer included), gather and mask paths",
  async () => {
    const { maskedHybridForward } = await import("../lib/pruning/mod.ts");
    const plain = createModel("hybrid_test", { keepRatio: 0.5 }, { seed: 24 }) as Hybrid;
    const over = { keepRatio: 0.5, vit: { gradCheckpoint: true } };
    const ckpt = createModel("hybrid_test", over, { seed: 24 }) as Hybrid;
    assert(ckpt.vit.gradCheckpointing && !plain.vit.gradCheckpointing);
    const x = images(2, 32, 25);
    try {
      const gather = (m: Hybrid) => () => crossEntropy(m.forward(x, { training: true }).logits, [0, 7]);
      const masked = (m: Hybrid) => () => crossEntropy(maskedHybridForward(m, x).logits, [0, 7]);
      for (const [what, f] of [["top-k gather", gather], ["straight-through mask", masked]] as const) {
        const want = await stepGrads(plain, f(plain));
        const got = await assertNoLeak(`hybrid ${what} training step`, () => stepGrads(ckpt, f(ckpt)));
        assertSameGrads(got, want, `hybrid ${what}`);
      }
    } finally {
      x.dispose();
      plain.dispose();
      ckpt.dispose();
    }
  },
);

forEachBackend(
  "ViT gradient checkpointing keeps block inputs, not activations: a step's peak memory drops",
  async () => {
    const cfg: ViTConfig = { ...smallViT, embedDim: 32, depth: 6, numHeads: 4 };
    const x = images(8, 16, 26);
    const peak = async (on: boolean) => {
      const m = new ViT({ ...cfg, gradCheckpoint: on }, { seed: 27 });
      try {
        const vars = [...m.trainableVariables().values()];
        const info = await tf.profile(() => {
          const { value, grads } = tf.variableGrads(
            () => crossEntropy(m.forward(x, { training: true }).logits, [0, 1, 2, 3, 4, 0, 1, 2]),
            vars,
          );
          tf.dispose([value, ...Object.values(grads)]);
        });
        return info.peakBytes;
      } finally {
        m.dispose();
      }
    };
    try {
      const [without, withCkpt] = [await peak(false), await peak(true)];
      assert(withCkpt < 0.5 * without, `peak ${withCkpt} B with checkpointing vs ${without} B without`);
    } finally {
      x.dispose();
    }
  },
);

cpuTest(
  "gradCheckpoint: config field, createModel override, setGradCheckpointing, inference unchanged",
  async () => {
    const vit = createModel("vit_test", { gradCheckpoint: true }) as ViT;
    const hybrid = createModel("hybrid_test") as Hybrid;
    const x = images(1, 32, 28);
    try {
      assertEquals([(vit.config as ViTConfig).gradCheckpoint, vit.gradCheckpointing], [true, true]);
      const a = vit.forward(x).logits;
      vit.setGradCheckpointing(false);
      assertEquals([(vit.config as ViTConfig).gradCheckpoint, vit.gradCheckpointing], [false, false]);
      const b = vit.forward(x).logits;
      assertEquals(Array.from(await a.data()), Array.from(await b.data()));
      tf.dispose([a, b]);
      // A config that never named the field keeps it absent when turned off; turning it on records it.
      hybrid.setGradCheckpointing(false);
      assertEquals("gradCheckpoint" in hybrid.config.vit, false);
      hybrid.setGradCheckpointing(true);
      assertEquals([hybrid.config.vit.gradCheckpoint, hybrid.vit.gradCheckpointing], [true, true]);
      const again = createModelFromConfig(structuredClone(hybrid.config)) as Hybrid;
      assert(again.vit.gradCheckpointing, "round-trips through the config");
      again.dispose();
      assertThrows(
        () => new ViT({ ...smallViT, gradCheckpoint: "yes" as unknown as boolean }),
        Error,
        'gradCheckpoint "yes" is not a boolean',
      );
    } finally {
      x.dispose();
      vit.dispose();
      hybrid.dispose();
    }
  },
);

// ---------------------------------------------------------------- ResNet18 / batch norm

cpuTest(
  "batch norm: training uses batch stats and updates running stats (momentum 0.1, unbiased var)",
  async () => {
    const net = new ResNet18({ model: "resnet18", numClasses: 3, width: 4, stem: "cifar", imgSize: 8 }, {
      seed: 1,
    });
    const x = images(2, 8, 8);
    const state = net.stateDict();
    // Batch statistics of conv1's output, computed independently.
    const conv = tf.conv2d(x, state.get("conv1.weight") as tf.Variable as unknown as tf.Tensor4D, 1, 1);
    const vals = await conv.data();
    const n = vals.length / 4;
    const mean = [0, 0, 0, 0], sq = [0, 0, 0, 0];
    for (let i = 0; i < vals.length; i++) mean[i % 4] += vals[i] / n;
    for (let i = 0; i < vals.length; i++) sq[i % 4] += (vals[i] - mean[i % 4]) ** 2;
    const unbiased = sq.map((s) => s / (n - 1));
    const evalBefore = net.forward(x).logits;
    const trainOut = net.forward(x, { training: true }).logits;
    assertClose(await state.get("bn1.running_mean")!.data(), mean.map((m) => 0.1 * m), 1e-5, "running_mean");
    assertClose(
      await state.get("bn1.running_var")!.data(),
      unbiased.map((v) => 0.9 + 0.1 * v),
      1e-5,
      "running_var",
    );
    // Eval mode uses the running stats: with them changed the eval output changes; training-mode does not depend on them.
    const evalAfter = net.forward(x).logits;
    const trainAgain = net.forward(x, { training: true }).logits;
    assert(
      (await evalAfter.data()).some((v, i) => v !== evalBefore.dataSync()[i]),
      "eval output follows running stats",
    );
    assertClose(await trainAgain.data(), await trainOut.data(), 1e-6, "training output uses batch stats");
    tf.dispose([x, conv, evalBefore, trainOut, evalAfter, trainAgain]);
    net.dispose();
  },
);

cpuTest("ResNet18 importance head gives one score per patch of the configured grid", () => {
  const net = new ResNet18({
    model: "resnet18",
    numClasses: 3,
    width: 4,
    stem: "cifar",
    imgSize: 32,
    importance: { stage: 1, grid: 8 },
  });
  const x = images(2, 32, 9);
  const out = net.forward(x, { returnAux: true });
  assertEquals(out.aux!.scores!.shape, [2, 64]);
  assertEquals(out.aux!.cnnLogits!.shape, [2, 3]);
  tf.dispose([x, out as unknown as tf.TensorContainer]);
  net.dispose();
  assertThrows(
    () =>
      new ResNet18({ model: "resnet18", numClasses: 3, width: 4, stem: "resnet" as "cifar", imgSize: 32 }),
    Error,
    'stem "resnet"',
  );
});

// ---------------------------------------------------------------- registry, GMACs, params

cpuTest("listModels() covers resnet18, vit_tiny, vit_small and hybrid variants", () => {
  const names = listModels().map((m) => m.name);
  for (const n of ["resnet18", "resnet18_imagenet", "vit_tiny", "vit_small", "hybrid_tiny", "hybrid_small"]) {
    assert(names.includes(n), `${n} is registered`);
  }
  assertThrows(() => createModel("vit_huge"), Error, 'unknown model "vit_huge"');
  assertThrows(() => createModel("vit_tiny", { embed_dim: 3 }), Error, 'unknown config field "embed_dim"');
});

cpuTest("createModelFromConfig(model.config) rebuilds the same architecture", () => {
  for (const name of ["resnet18_test", "vit_test", "hybrid_test"]) {
    const m = createModel(name, { numClasses: 7 });
    const json = JSON.parse(JSON.stringify(m.config));
    const again = createModelFromConfig(json);
    assertEquals(again.paramCount(), m.paramCount());
    assertEquals([...again.stateDict().keys()], [...m.stateDict().keys()]);
    m.dispose();
    again.dispose();
  }
});

Deno.test("modelConfigFromPyTorch() maps the fixtures' snake_case configs, hybrids included", () => {
  assertEquals(modelConfigFromPyTorch({ model: "resnet18", num_classes: 10, width: 16, stem: "cifar" }, 32), {
    model: "resnet18",
    numClasses: 10,
    width: 16,
    stem: "cifar",
    imgSize: 32,
  });
  const h = modelConfigFromPyTorch({
    model: "hybrid",
    vit: {
      num_classes: 10,
      img_size: 32,
      patch_size: 4,
      embed_dim: 64,
      depth: 2,
      num_heads: 4,
      mlp_ratio: 4.0,
    },
    resnet: { num_classes: 10, width: 8, stem: "cifar" },
    score_stage: 1,
    keep_ratio: 0.5,
  });
  assertEquals(h.model === "hybrid" && [h.resnet.imgSize, h.vit.embedDim, h.scoreStage, h.keepRatio], [
    32,
    64,
    1,
    0.5,
  ]);
  assertThrows(() => modelConfigFromPyTorch({ model: "convnext" }), Error, 'unknown model "convnext"');
});

cpuTest("GMACs and parameter counts match PyTorch-hook counts of the reference models", () => {
  const cases: [string, ModelOverrides, number, number][] = [
    ["resnet18_imagenet", {}, 1.814, 11.69],
    ["resnet18", {}, 0.555, 11.17],
    ["vit_small_patch16_224", {}, 4.599, 22.05],
    ["vit_small", {}, 1.420, 21.34],
    ["vit_tiny", {}, 0.365, 5.36],
  ];
  for (const [name, over, gmacs, params] of cases) {
    const m = createModel(name, over);
    const g = m.gmacs().total;
    const p = m.paramCount() / 1e6;
    assert(Math.abs(g - gmacs) < 0.0005 + 1e-9, `${name}: ${g.toFixed(4)} GMACs, expected ${gmacs}`);
    assert(Math.abs(p - params) < 0.005 + 1e-9, `${name}: ${p.toFixed(3)}M params, expected ${params}M`);
    m.dispose();
  }
  const vit = createModel("vit_small");
  // Keep ratio 0.5: 32 + 1 tokens in every block.
  assert(
    Math.abs(vit.gmacs({ keepRatio: 0.5 }).total - 0.712) < 0.001,
    `${vit.gmacs({ keepRatio: 0.5 }).total}`,
  );
  vit.dispose();
});

// ---------------------------------------------------------------- leaks and every registered model

/** Small overrides that keep each registered model's family and stem but make it cheap. */
function smallOverrides(name: string): ModelOverrides {
  const info = listModels().find((m) => m.name === name)!;
  const vitSmall = { embedDim: 16, depth: 2, numHeads: 2, imgSize: 32, patchSize: 8, numClasses: 4 };
  if (info.family === "vit") return vitSmall;
  if (info.family === "resnet18") return { width: 4, imgSize: 32, numClasses: 4 };
  return { vit: vitSmall, resnet: { width: 4, imgSize: 32, numClasses: 4 }, scoreStage: 1 };
}

for (const info of listModels()) {
  forEachBackend(`${info.name}: forward and backward at a small size, without tensor leaks`, async () => {
    const m: Model = createModel(info.name, smallOverrides(info.name), { seed: 11 });
    const x = images(2, 32, 12);
    try {
      await assertNoLeak(`${info.name} forward`, async () => {
        const out = m.forward(x, { returnAux: true, returnAttention: true });
        assertEquals(out.logits.shape, [2, 4]);
        assert((await out.logits.data()).every(Number.isFinite), "finite logits");
        tf.dispose(out as unknown as tf.TensorContainer);
      });
      const vars = m.trainableVariables();
      await assertNoLeak(`${info.name} training step`, async () => {
        const { value, grads } = tf.variableGrads(
          () => crossEntropy(m.forward(x, { training: true }).logits, [0, 3]),
          [...vars.values()],
        );
        try {
          assert(Number.isFinite((await value.data())[0]), "finite loss");
          const got = new Set(Object.keys(grads));
          // Every parameter, the hybrid's scorer included (straight-through gate past the top-k).
          for (const [name, v] of vars) assert(got.has(v.name), `${info.name}: no gradient for ${name}`);
          for (const g of Object.values(grads)) {
            assert((await g.data()).every(Number.isFinite), "finite gradients");
          }
        } finally {
          value.dispose();
          tf.dispose(Object.values(grads));
        }
      });
    } finally {
      x.dispose();
      m.dispose();
    }
  });
}
