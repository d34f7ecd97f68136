/** EViT's dropped-token fusion: one extra token, the weighted mean of the dropped ones, for every strategy. */
import * as tf from "@tensorflow/tfjs-core";
import { createModel, type Model, type ViT } from "../lib/models/mod.ts";
import type { Hybrid } from "../lib/models/hybrid.ts";
import { crossEntropy } from "../lib/train/losses.ts";
import { createStrategy, fuseDropped, maskedHybridForward, singleStage } from "../lib/pruning/mod.ts";
import { TINY_RUN, withTinyRuns } from "./_tiny_run.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";

forEachBackend("fuseDropped() is the weighted mean of the dropped tokens only", async () => {
  // 1 CLS + 4 patches, D = 2; patches 0 and 2 kept.
  const tokens = tf.tensor3d([[[9, 9], [1, 2], [3, 4], [5, 6], [7, 8]]]);
  const weights = tf.tensor2d([[0.5, 1, 100, 3]]);
  const keep = tf.tensor2d([[1, 0, 1, 0]]);
  const fused = await assertNoLeak("fuseDropped", () => {
    const f = fuseDropped(tokens, weights, keep);
    const v = f.arraySync();
    f.dispose();
    return v;
  });
  // Dropped: patch 1 ([3, 4], weight 1) and patch 3 ([7, 8], weight 3): (1·[3,4] + 3·[7,8]) / 4.
  assertClose(fused[0][0], [6, 7], 1e-6, "fused token");
  tf.dispose([tokens, weights, keep]);
});

const images = (n: number, seed: number) =>
  tf.tensor4d(seededRandom(n * 32 * 32 * 3, seed), [n, 32, 32, 3]) as tf.Tensor4D;

forEachBackend("strategies with fuse run the blocks on k + 2 tokens and count them in GMACs", async () => {
  const vit = createModel("vit_test", {}, { seed: 1 }) as unknown as ViT & Model;
  const hybrid = createModel("hybrid_test", {}, { seed: 1 });
  const x = images(2, 5);
  try {
    for (
      const [name, model, schedule] of [
        ["random", vit, singleStage(0.5, 0)],
        ["attention", vit, singleStage(0.5, 1)],
        ["cnn", hybrid, singleStage(0.5, 0)],
      ] as const
    ) {
      const plain = createStrategy(name, { seed: 2 }), fused = createStrategy(name, { seed: 2, fuse: true });
      const tpb = await assertNoLeak(`${name} with fuse`, () => {
        const out = fused.forward(model, x, { schedule, returnAux: true });
        const t = out.aux!.tokensPerBlock!;
        assertEquals(out.logits.shape, [2, 10]);
        tf.dispose(out as unknown as tf.TensorContainer);
        return t;
      });
      const want = name === "attention" ? [65, 34] : [34, 34]; // CLS + 32 kept + 1 fused after the location
      assertEquals(tpb, want, `${name}: tokens per block`);
      const v = name === "cnn" ? (model as unknown as { vit: ViT }).vit : vit;
      const extra = fused.gmacs(model, schedule) - plain.gmacs(model, schedule);
      const without = name === "attention" ? [65, 33] : [33, 33];
      const byHand = v.gmacs({ tokensPerBlock: want }).total - v.gmacs({ tokensPerBlock: without }).total;
      assert(
        extra > 0 && Math.abs(extra - byHand) < 1e-12,
        `${name}: fused token costs ${extra} GMACs, by hand ${byHand}`,
      );
      // Keeping every token: nothing to fuse, identical to the plain strategy.
      const all = singleStage(1, schedule.locations[0]);
      const [a, b] = tf.tidy(() => [
        plain.forward(model, x, { schedule: all }).logits.arraySync(),
        fused.forward(model, x, { schedule: all }).logits.arraySync(),
      ]) as number[][][];
      assertEquals(a, b, `${name} at keep 1`);
    }
    assertThrows(
      () =>
        createStrategy("random", { fuse: true }).forward(vit, x, {
          schedule: { locations: [0, 1], ratios: [0.8, 0.5] },
        }),
      Error,
      "one location",
    );
    assertThrows(() => createStrategy("none", { fuse: true }), Error, "drops no tokens");
  } finally {
    x.dispose();
    vit.dispose();
    hybrid.dispose();
  }
});

forEachBackend(
  "the hybrid's masked training forward with fuse equals the gathered top-k with fusion; the selector learns",
  async () => {
    for (const tokens of ["pixels", "cnn"] as const) {
      const hybrid = createModel("hybrid_test", tokens === "cnn" ? { tokens } : {}, { seed: 3 }) as Hybrid;
      const x = images(2, 11);
      try {
        const [masked, gathered] = await assertNoLeak(
          `masked forward with fuse (${tokens})`,
          () =>
            tf.tidy(() => {
              const m = maskedHybridForward(hybrid, x, { training: false, keepRatio: 0.5, fuse: true });
              const g = createStrategy("cnn", { fuse: true }).forward(hybrid, x, {
                schedule: singleStage(0.5, 0),
              });
              return [m.logits.arraySync(), g.logits.arraySync()];
            }),
        );
        assertClose(masked.flat(), gathered.flat(), 1e-4, `${tokens}: masked + fused vs gathered + fused`);
        // Without fusion the logits differ: the fused token does something.
        const plain = tf.tidy(() =>
          maskedHybridForward(hybrid, x, { training: false, keepRatio: 0.5 }).logits.arraySync()
        );
        assert(
          plain.flat().some((v, i) => Math.abs(v - masked.flat()[i]) > 1e-4),
          `${tokens}: fuse changed nothing`,
        );
        // The importance head gets a gradient through the mask and the fused token's weights.
        const vars = hybrid.trainableVariables();
        const head = [...vars.keys()].filter((k) => k.startsWith("cnn.importance")).map((k) => vars.get(k)!);
        const y = tf.tensor1d([1, 3], "int32");
        const norm = tf.tidy(() => {
          const { grads } = tf.variableGrads(
            () => crossEntropy(maskedHybridForward(hybrid, x, { keepRatio: 0.5, fuse: true }).logits, y),
            head,
          );
          return tf.addN(Object.values(grads).map((g) => tf.sum(tf.abs(g)))).arraySync() as number;
        });
        y.dispose();
        assert(norm > 0, `${tokens}: the importance head got no gradient`);
        assertThrows(
          () => maskedHybridForward(hybrid, x, { selection: "threshold", fuse: true }),
          Error,
          'fuse needs selection "topk"',
        );
      } finally {
        x.dispose();
        hybrid.dispose();
      }
    }
  },
);

Deno.test({
  name:
    "runTraining() fine-tunes and evaluates a ViT with fusion: recorded, counted in GMACs, refused elsewhere",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { join } = await import("node:path");
    await withTinyRuns("fusion_test_", async (runTraining, root) => {
      const tiny = TINY_RUN;
      for (const strategy of ["random", "attention"] as const) {
        const before = tf.memory().numTensors;
        const r = await runTraining({
          ...tiny,
          model: "vit",
          strategy,
          keep: 0.5,
          fuse: true,
          out: join(root, strategy),
          keepModel: true,
        });
        assert(r.completed);
        const config = JSON.parse(await Deno.readTextFile(join(r.outDir, "config.json")));
        assertEquals(config.fuse, true);
        // k + CLS + the fused token in every block after the pruning location.
        const location = strategy === "attention" ? 1 : 0;
        const fused = createStrategy(strategy, { fuse: true }).gmacs(r.model!, singleStage(0.5, location));
        const plain = createStrategy(strategy).gmacs(r.model!, singleStage(0.5, location));
        assertClose([r.result.gmacs], [fused], 1e-12, `${strategy} GMACs`);
        assert(fused > plain, `${strategy}: fused ${fused} ≤ plain ${plain}`);
        r.model!.dispose();
        assertEquals(tf.memory().numTensors, before, `${strategy}: tensors leaked by a fused run`);
      }
      // The hybrid trains through its masked top-k with the fused token, and is evaluated and charged with it.
      const before = tf.memory().numTensors;
      const h = await runTraining({
        ...tiny,
        model: "hybrid",
        stage1Epochs: 1,
        keep: 0.5,
        fuse: true,
        out: join(root, "hybrid"),
        keepModel: true,
      });
      assert(h.completed);
      assertEquals(JSON.parse(await Deno.readTextFile(join(h.outDir, "config.json"))).fuse, true);
      const fusedCost = createStrategy("cnn", { fuse: true }).gmacs(h.model!, singleStage(0.5, 0));
      assertClose([h.result.gmacs], [fusedCost], 1e-12, "hybrid GMACs");
      assert(
        fusedCost > createStrategy("cnn").gmacs(h.model!, singleStage(0.5, 0)),
        "hybrid: fused token free",
      );
      h.model!.dispose();
      assertEquals(tf.memory().numTensors, before, "tensors leaked by a fused hybrid run");
      let err: Error | undefined;
      await runTraining({
        ...tiny,
        model: "hybrid",
        selection: "threshold",
        fuse: true,
        out: join(root, "thr"),
      })
        .catch((e) => err = e);
      assert(err?.message.includes('selection "topk" or "hard"'), err?.message);
      let err2: Error | undefined;
      await runTraining({ ...tiny, model: "vit", fuse: true, out: join(root, "none") }).catch((e) =>
        err2 = e
      );
      assert(err2?.message.includes('strategy "none"'), err2?.message);
    });
  },
});
