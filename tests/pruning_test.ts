import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, assertNoLeak, forEachBackend, relErr, seededRandom } from "./_backends.ts";
import { createModel, type Hybrid } from "../lib/models/mod.ts";
import {
  bipartiteMerge,
  createStrategy,
  gumbelNoise,
  hardTopKMask,
  keepCounts,
  maskedHybridForward,
  mergeSimilarityGmacs,
  mergeToCount,
  parseStrategy,
  selectTopK,
  singleStage,
  straightThroughTopKMask,
  STRATEGIES,
  tokensPerBlock,
  validateKeepSchedule,
} from "../lib/pruning/mod.ts";
import { crossEntropy } from "../lib/train/mod.ts";
import { Rng } from "../lib/util/mod.ts";

function images(tf: typeof import("@tensorflow/tfjs-core"), b = 2, seed = 3) {
  return tf.tensor4d(seededRandom(b * 32 * 32 * 3, seed), [b, 32, 32, 3]);
}

forEachBackend(
  "selectTopK() always keeps the CLS token and the highest scores, in position order",
  async (tf) => {
    const tokens = tf.tensor3d(Float32Array.from({ length: 1 * 6 * 2 }, (_, i) => i), [1, 6, 2]);
    const scores = tf.tensor2d([[0.1, 0.9, 0.3, 0.8, 0.2]]);
    const { tokens: kept, indices } = selectTopK(tokens, scores, { keep: 2 });
    assertEquals(Array.from(await indices.data()), [1, 3]);
    // CLS (row 0) first, then patches 1 and 3 (token rows 2 and 4).
    assertEquals(Array.from(await kept.data()), [0, 1, 4, 5, 8, 9]);
    tf.dispose([tokens, scores, kept, indices]);
  },
);

forEachBackend("every strategy at keep ratio 1 equals the unpruned ViT", async (tf) => {
  const hybrid = createModel("hybrid_test", {}, { seed: 5 }) as Hybrid;
  const x = images(tf);
  await assertNoLeak("strategies at keep 1", async () => {
    const ref = createStrategy("none").forward(hybrid, x, { schedule: singleStage(1) });
    const want = await ref.logits.data();
    for (const name of ["random", "cnn", "merge"] as const) {
      for (const loc of [0, 1]) {
        const out = createStrategy(name, { seed: 1 }).forward(hybrid, x, { schedule: singleStage(1, loc) });
        assertClose(await out.logits.data(), want, 1e-6, `${name} at location ${loc}`);
        out.logits.dispose();
      }
    }
    const att = createStrategy("attention").forward(hybrid, x, { schedule: singleStage(1, 1) });
    assertClose(await att.logits.data(), want, 1e-6, "attention");
    tf.dispose([att.logits, ref.logits]);
  });
  x.dispose();
  hybrid.dispose();
});

forEachBackend("cnn strategy keeps the top importance scores and matches Hybrid.forward", async (tf) => {
  const hybrid = createModel("hybrid_test", { keepRatio: 0.5 }, { seed: 6 }) as Hybrid;
  const x = images(tf, 2, 8);
  const out = createStrategy("cnn").forward(hybrid, x, { schedule: singleStage(0.5), returnAux: true });
  const ref = hybrid.forward(x, { returnAux: true });
  assertClose(await out.logits.data(), await ref.logits.data(), 1e-5, "cnn strategy vs Hybrid.forward");
  const kept = await out.aux!.keptIndices!.array() as number[][];
  const scores = await out.aux!.scores!.array() as number[][];
  assertEquals(out.aux!.tokensPerBlock, [33, 33]);
  for (let b = 0; b < 2; b++) {
    const order = scores[b].map((s, i) => [s, i]).sort((p, q) => q[0] - p[0]).slice(0, 32).map((p) => p[1])
      .sort((p, q) => p - q);
    assertEquals(kept[b], order);
  }
  tf.dispose([
    x,
    out.logits,
    ...Object.values(out.aux!).flat(),
    ref.logits,
    ...Object.values(ref.aux!).flat(),
  ]);
  hybrid.dispose();
});

forEachBackend(
  "straight-through mask and hard top-k with real gathering agree when noise is off",
  async (tf) => {
    const hybrid = createModel("hybrid_test", { keepRatio: 0.5 }, { seed: 7 }) as Hybrid;
    const x = images(tf, 2, 9);
    const masked = maskedHybridForward(hybrid, x, { training: false });
    const hard = createStrategy("cnn").forward(hybrid, x, { schedule: singleStage(0.5), returnAux: true });
    const mask = await masked.mask.array() as number[][];
    const kept = await hard.aux!.keptIndices!.array() as number[][];
    for (let b = 0; b < 2; b++) {
      assertEquals(mask[b].flatMap((m, i) => (m === 1 ? [i] : [])), kept[b], `kept set of image ${b}`);
    }
    const ref = hardTopKMask(masked.scores, 32);
    assertEquals(await ref.data(), await masked.mask.data());
    const e = relErr(await masked.logits.data(), await hard.logits.data());
    assert(e < 1e-4, `masked vs gathered logits: relative error ${e}`);
    tf.dispose([
      x,
      ref,
      masked.logits,
      masked.mask,
      masked.scores,
      hard.logits,
      ...Object.values(hard.aux!).flat(),
    ]);
    hybrid.dispose();
  },
);

forEachBackend(
  "straight-through mask lets the loss gradient reach the importance head, without leaks",
  async (tf) => {
    const hybrid = createModel("hybrid_test", { keepRatio: 0.5 }, { seed: 8 }) as Hybrid;
    const x = images(tf, 2, 10);
    const y = tf.tensor1d([1, 3], "int32");
    const vars = hybrid.trainableVariables();
    const headNames = [...vars.keys()].filter((k) => k.startsWith("cnn.importance"));
    assert(headNames.length > 0, `no importance head parameters in ${[...vars.keys()].join(", ")}`);
    const rng = new Rng(0);
    const step = () => {
      const noise = gumbelNoise([2, 64], rng, 0.1);
      const { value, grads } = tf.variableGrads(() => {
        const out = maskedHybridForward(hybrid, x, { noise });
        return crossEntropy(out.logits, y);
      }, headNames.map((k) => vars.get(k)!));
      const norms = tf.tidy(() => tf.addN(Object.values(grads).map((g) => tf.sum(tf.abs(g)))));
      tf.dispose([value, noise, ...Object.values(grads)]);
      return norms;
    };
    step().dispose(); // warm-up (kernels, caches)
    await assertNoLeak("masked training step", async () => {
      const n = step();
      assert((await n.data())[0] > 0, "importance head got zero gradient");
      n.dispose();
    });
    tf.dispose([x, y]);
    hybrid.dispose();
  },
);

forEachBackend("random strategy is seeded; attention keeps the tokens CLS attends to most", async (tf) => {
  const vit = createModel("vit_test", {}, { seed: 9 });
  const x = images(tf, 2, 11);
  const run = (seed: number) =>
    createStrategy("random", { seed }).forward(vit, x, { schedule: singleStage(0.5), returnAux: true });
  const a = run(1), b = run(1), c = run(2);
  assertEquals(await a.aux!.keptIndices!.data(), await b.aux!.keptIndices!.data());
  assert(
    relErr(await a.aux!.keptIndices!.data(), await c.aux!.keptIndices!.data()) > 0,
    "seeds 1 and 2 chose the same tokens",
  );
  const att = createStrategy("attention").forward(vit, x, {
    schedule: singleStage(0.25, 1),
    returnAux: true,
    returnAttention: true,
  });
  assertEquals(att.aux!.tokensPerBlock, [65, 17]);
  const a0 = await att.aux!.attention![0].array() as number[][][][]; // [B, H, T, T] of block 0
  const kept = await att.aux!.keptIndices!.array() as number[][];
  for (let i = 0; i < 2; i++) {
    const cls = a0[i][0][0].slice(1).map((_, j) => a0[i].reduce((s, head) => s + head[0][j + 1], 0));
    const want = cls.map((s, j) => [s, j]).sort((p, q) => q[0] - p[0]).slice(0, 16).map((p) => p[1]).sort((
      p,
      q,
    ) => p - q);
    assertEquals(kept[i], want);
  }
  assertThrows(
    () => createStrategy("attention").forward(vit, x, { schedule: singleStage(0.5) }),
    Error,
    "location",
  );
  assertThrows(() => createStrategy("cnn").forward(vit, x, { schedule: singleStage(0.5) }), Error, "hybrid");
  tf.dispose([x, ...[a, b, c, att].flatMap((o) => [o.logits, ...Object.values(o.aux!).flat()])]);
  vit.dispose();
});

forEachBackend(
  "bipartiteMerge() averages the most similar pairs; mergeToCount() reaches the target",
  async (tf) => {
    // 4 patch tokens: A = {t0, t2}, B = {t1, t3}; t0 ≈ t1 (most similar), t2 ⟂ everything else.
    const tokens = tf.tensor3d([[[9, 9], [1, 0], [1, 0.1], [0, 1], [-1, 0]]]);
    const idx = tf.tensor2d([[10, 11, 12, 13]], [1, 4], "int32");
    const r = bipartiteMerge(tokens, idx, 1);
    assertEquals(r.tokens.shape, [1, 4, 2]);
    const out = await r.tokens.array() as number[][][];
    assertEquals(out[0][0], [9, 9]); // CLS untouched
    assertEquals(await r.keptIndices.data(), Int32Array.from([12, 11, 13]));
    assertClose(out[0][2], [1, 0.05], 1e-6, "merged token is the mean");
    assertEquals(Array.from(await r.sizes.data()), [1, 2, 1]);
    const x = tf.tensor3d(seededRandom(2 * 65 * 8, 4), [2, 65, 8]);
    const all = tf.tile(tf.reshape(tf.range(0, 64, 1, "int32"), [1, 64]), [
      2,
      1,
    ]) as import("@tensorflow/tfjs-core").Tensor2D;
    const m = mergeToCount(x, all, 13);
    assertEquals(m.tokens.shape, [2, 14, 8]);
    const sizes = await m.sizes.array() as number[][];
    assertEquals(sizes.map((s) => s.reduce((p, q) => p + q, 0)), [64, 64]);
    tf.dispose([tokens, idx, r.tokens, r.keptIndices, r.sizes, x, all, m.tokens, m.keptIndices, m.sizes]);
  },
);

forEachBackend(
  "straightThroughTopKMask() value is the hard top-k; gradient is the soft surrogate's",
  async (tf) => {
    const s = tf.tensor2d([[0.1, 0.9, 0.5, 0.3]]);
    const m = straightThroughTopKMask(s, 2, { tau: 0.5 });
    assertEquals(Array.from(await m.data()), [0, 1, 1, 0]);
    const g = tf.grad((z: import("@tensorflow/tfjs-core").Tensor) =>
      tf.sum(
        tf.mul(
          straightThroughTopKMask(z as import("@tensorflow/tfjs-core").Tensor2D, 2, { tau: 0.5 }),
          tf.tensor2d([[1, 2, 3, 4]]),
        ),
      )
    )(s);
    const theta = 0.4; // halfway between the 2nd (0.5) and 3rd (0.3) scores
    const want = [0.1, 0.9, 0.5, 0.3].map((v, i) => {
      const sig = 1 / (1 + Math.exp(-(v - theta) / 0.5));
      return (i + 1) * sig * (1 - sig) / 0.5;
    });
    assertClose(await g.data(), want, 1e-5, "straight-through gradient");
    tf.dispose([s, m, g]);
  },
);

forEachBackend("strategies cost the same ViT GMACs at the same schedule, and less when pruning", (_tf) => {
  const hybrid = createModel("hybrid_test", {}, { seed: 1 }) as Hybrid;
  const sched = singleStage(0.5);
  const vitFull = createStrategy("none").gmacs(hybrid, sched);
  const random = createStrategy("random").gmacs(hybrid, sched);
  const merge = createStrategy("merge").gmacs(hybrid, sched);
  const cnn = createStrategy("cnn").gmacs(hybrid, sched);
  // Merge runs the same blocks on as many tokens, plus its similarity matmuls (a hand count for 64 → 32).
  const vit = hybrid.vit;
  const n = vit.numPatches, d = vit.config.embedDim;
  assertEquals(merge, random + Math.ceil(n / 2) * Math.floor(n / 2) * d / 1e9);
  // 64 → 13 in three rounds: 32·32·8 + 16·16·8 + 8·8·8 MACs.
  assertEquals(mergeSimilarityGmacs(64, 13, 8), (8192 + 2048 + 512) / 1e9);
  assertEquals(mergeSimilarityGmacs(64, 64, 8), 0);
  assert(random < vitFull, `pruned ${random} ≥ full ${vitFull}`);
  assertEquals(cnn, random + (hybrid.gmacs().cnn ?? 0));
  assert(
    Math.abs(cnn - hybrid.gmacs({ keepRatio: 0.5 }).total) < 1e-12,
    "cnn strategy GMACs differ from Hybrid.gmacs",
  );
  const late = createStrategy("attention").gmacs(hybrid, singleStage(0.5, 1));
  assert(late > random && late < vitFull, `attention at location 1 costs ${late}`);
  hybrid.dispose();
}, { backends: ["cpu"] });

Deno.test("keep schedules are validated and counted", () => {
  assertEquals(keepCounts({ locations: [0, 3], ratios: [0.5, 0.25] }, 64), [32, 16]);
  assertEquals(tokensPerBlock({ locations: [1, 2], ratios: [0.5, 0.25] }, 64, 4), [65, 33, 17, 17]);
  assertThrows(() => validateKeepSchedule({ locations: [2, 1], ratios: [0.5, 0.4] }), Error, "increase");
  assertThrows(() => validateKeepSchedule({ locations: [0], ratios: [1.5] }), Error, "1.5");
  assertThrows(() => validateKeepSchedule({ locations: [0, 1], ratios: [0.4, 0.5] }), Error, "not increase");
  assertThrows(() => validateKeepSchedule({ locations: [12], ratios: [0.5] }, 12), Error, "depth-12");
  assertThrows(() => parseStrategy("tome"), Error, '"tome"');
  assertEquals(STRATEGIES.map((s) => parseStrategy(s.toUpperCase())), [...STRATEGIES]);
});

forEachBackend(
  "training through random, attention and merge pruning reaches the ViT weights, without leaks",
  async (tf) => {
    const vit = createModel("vit_test", {}, { seed: 12 });
    const x = images(tf, 2, 13);
    const y = tf.tensor1d([1, 2], "int32");
    const vars = [...vit.trainableVariables().values()];
    for (
      const [name, sched] of [["random", singleStage(0.5)], ["attention", singleStage(0.5, 1)], [
        "merge",
        singleStage(0.5, 1),
      ]] as const
    ) {
      const strategy = createStrategy(name, { seed: 1 });
      const step = () => {
        const { value, grads } = tf.variableGrads(
          () => crossEntropy(strategy.forward(vit, x, { schedule: sched, training: true }).logits, y),
          vars,
        );
        const n = tf.tidy(() => tf.addN(Object.values(grads).map((g) => tf.sum(tf.abs(g)))));
        tf.dispose([value, ...Object.values(grads)]);
        return n;
      };
      step().dispose();
      await assertNoLeak(`${name} training step`, async () => {
        const n = step();
        assert((await n.data())[0] > 0, `${name}: zero gradient`);
        n.dispose();
      });
    }
    tf.dispose([x, y]);
    vit.dispose();
  },
);
