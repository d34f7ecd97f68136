/** Spread top-k: every window of the patch grid gives its best token before any window gives a second. */
import * as tf from "@tensorflow/tfjs-core";
import { createModel, type Hybrid, type Model, type ViT } from "../lib/models/mod.ts";
import {
  createStrategy,
  selectTopK,
  singleStage,
  spreadScores,
  straightThroughTopKMask,
} from "../lib/pruning/mod.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";
import { TINY_RUN, withTinyRuns } from "./_tiny_run.ts";

/** Window (2×2 on a 4×4 grid) of a row-major patch index. */
const window4 = (i: number) => 2 * Math.floor(Math.floor(i / 4) / 2) + Math.floor((i % 4) / 2);

forEachBackend(
  "spreadScores(): top-k takes one token per window first, the best of each, then the next",
  async () => {
    // 4×4 grid; the 4 highest scores all sit in the top-left window (patches 0, 1, 4, 5).
    const raw = [9, 8, 1, 2, 7, 6, 3, 0.5, 0.1, 0.2, 0.3, 0.4, 4, 5, -1, -2];
    const scores = tf.tensor2d([raw, raw.map((v) => -v)]);
    const tokens = tf.tensor3d(Array.from({ length: 2 }, () => Array.from({ length: 17 }, (_, t) => [t])));
    const picked = await assertNoLeak("spread top-k", () =>
      tf.tidy(() => {
        const s = spreadScores(scores, 2);
        return [4, 8].map((k) => selectTopK(tokens, s, { keep: k }).indices.arraySync() as number[][]);
      }));
    // keep 4: the best of each window. Windows: {0,1,4,5} best 0; {2,3,6,7} best 6 (3); {8,9,12,13} best 13 (5);
    // {10,11,14,15} best 11 (0.4).
    assertEquals(picked[0][0], [0, 6, 11, 13]);
    // keep 8: two per window; the second of each: 1 (8), 7... window {2,3,6,7} second is 3 (2); 12 (4); 10 (0.3).
    assertEquals(picked[1][0], [0, 1, 3, 6, 10, 11, 12, 13]);
    for (const row of picked[0]) assertEquals(new Set(row.map(window4)).size, 4, "one per window");
    // cell 1: the plain order.
    const plain = tf.tidy(() => selectTopK(tokens, spreadScores(scores, 1), { keep: 4 }).indices.arraySync());
    assertEquals((plain as number[][])[0], [0, 1, 4, 5]);
    // Equal scores: ties go to the lower index in each window, still one per window.
    const flat = tf.tidy(() =>
      selectTopK(tokens, spreadScores(tf.zeros([2, 16]) as tf.Tensor2D, 2), { keep: 4 }).indices
        .arraySync()
    ) as number[][];
    assertEquals(flat[0], [0, 2, 8, 10]);
    const notSquare = tf.zeros([1, 12]) as tf.Tensor2D;
    assertThrows(() => spreadScores(notSquare, 1), Error, "not a square patch grid");
    notSquare.dispose();
    assertThrows(() => spreadScores(scores, 3), Error, "dividing the grid side 4");
    tf.dispose([scores, tokens]);
  },
);

forEachBackend(
  "strategies with spread keep their tokens spread over the grid, and reject what cannot rank",
  async () => {
    const vit = createModel("vit_test", {}, { seed: 1 }) as unknown as ViT & Model;
    const hybrid = createModel("hybrid_test", {}, { seed: 1 });
    const x = tf.tensor4d(seededRandom(2 * 32 * 32 * 3, 3), [2, 32, 32, 3]) as tf.Tensor4D;
    try {
      const g = Math.round(Math.sqrt(vit.numPatches));
      const cell = 2, windows = (g / cell) ** 2;
      for (
        const [name, model, location] of [["random", vit, 0], ["attention", vit, 1], [
          "cnn",
          hybrid,
          0,
        ]] as const
      ) {
        const s = createStrategy(name, { seed: 2, spread: cell });
        const kept = await assertNoLeak(`${name} with spread`, () => {
          const out = s.forward(model, x, {
            schedule: singleStage(windows / (g * g), location),
            returnAux: true,
          });
          const k = out.aux!.keptIndices!.arraySync() as number[][];
          tf.dispose(out as unknown as tf.TensorContainer);
          return k;
        });
        for (const row of kept) {
          const w = row.map((i) =>
            Math.floor(Math.floor(i / g) / cell) * (g / cell) + Math.floor((i % g) / cell)
          );
          assertEquals(new Set(w).size, windows, `${name}: one token in each of the ${windows} windows`);
        }
        // Spread changes which tokens, not how many: the cost is the plain strategy's.
        const sch = singleStage(0.5, location);
        assert(s.gmacs(model, sch) === createStrategy(name, {}).gmacs(model, sch), `${name}: same GMACs`);
      }
      assertThrows(() => createStrategy("none", { spread: 2 }), Error, "ranks no tokens");
      assertThrows(
        () =>
          createStrategy("random", { spread: 2 }).forward(vit, x, {
            schedule: { locations: [0, 1], ratios: [0.8, 0.5] },
          }),
        Error,
        "with spread prunes at one location only",
      );
      assertThrows(() => createStrategy("cnn", { spread: 0 }), Error, "window side");
    } finally {
      x.dispose();
      vit.dispose();
      hybrid.dispose();
    }
  },
);

forEachBackend(
  "a hybrid with spread keeps one token per window in forward, the cnn strategy and training's mask",
  async () => {
    const cell = 2;
    const hybrid = createModel("hybrid_test", { spread: cell }, { seed: 4 }) as Hybrid;
    const x = tf.tensor4d(seededRandom(2 * 32 * 32 * 3, 8), [2, 32, 32, 3]) as tf.Tensor4D;
    try {
      const n = hybrid.vit.numPatches, g = Math.round(Math.sqrt(n)), windows = (g / cell) ** 2;
      const inWindows = (row: number[]) =>
        new Set(
          row.map((i) => Math.floor(Math.floor(i / g) / cell) * (g / cell) + Math.floor((i % g) / cell)),
        ).size;
      const keepRatio = windows / n;
      const [fromForward, fromStrategy] = await assertNoLeak("spread hybrid forward", () =>
        tf.tidy(() => {
          const a = hybrid.forward(x, { keepRatio, returnAux: true }).aux!.keptIndices!
            .arraySync() as number[][];
          const b = createStrategy("cnn").forward(hybrid, x, {
            schedule: singleStage(keepRatio, 0),
            returnAux: true,
          })
            .aux!.keptIndices!.arraySync() as number[][];
          return [a, b];
        }));
      for (const row of fromForward) assertEquals(inWindows(row), windows, "forward: one per window");
      assertEquals(fromStrategy, fromForward, "the cnn strategy follows the model's spread");
      // Training's straight-through mask: the same tokens as inference, and a gradient that reaches the scores.
      const scores = tf.tidy(() => hybrid.scoresAndVitInput(x, false).scores);
      const { mask, grad } = tf.tidy(() => {
        const mask = straightThroughTopKMask(scores, windows, { spread: cell });
        const grad = tf.grad((s: tf.Tensor) =>
          tf.sum(tf.mul(straightThroughTopKMask(s as tf.Tensor2D, windows, { spread: cell }), tf.range(0, n)))
        )(scores);
        return { mask: mask.arraySync() as number[][], grad: grad.arraySync() as number[][] };
      });
      mask.forEach((row, b) => {
        const kept = row.flatMap((v, i) => (v === 1 ? [i] : []));
        assertEquals(kept, fromForward[b], "training mask = inference selection");
      });
      assert(
        grad.flat().every(Number.isFinite) && grad.flat().some((v) => v !== 0),
        "non-zero finite gradient",
      );
      scores.dispose();
      assertThrows(() => createModel("hybrid_test", { spread: 3 }), Error, "dividing the patch grid side");
    } finally {
      x.dispose();
      hybrid.dispose();
    }
  },
);

Deno.test({
  name:
    "stage1Hybrid() joins a run's stage-1 CNN to the unchanged ViT, and a spread hybrid trains end to end",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { join } = await import("node:path");
    const { stage1Hybrid } = await import("../lib/experiment/study.ts");
    const { loadCheckpoint } = await import("../lib/train/mod.ts");
    await withTinyRuns("spread_test_", async (runTraining, root) => {
      const vit = await runTraining({ ...TINY_RUN, model: "vit", out: join(root, "vit"), keepModel: true });
      const before = tf.memory().numTensors;
      const hyb = await runTraining({
        ...TINY_RUN,
        model: "hybrid",
        initFrom: vit.outDir,
        override: { spread: 2 },
        out: join(root, "hybrid"),
      });
      assert(hyb.completed && Number.isFinite(hyb.result.accuracy), "the spread hybrid trained");
      const config = JSON.parse(await Deno.readTextFile(join(hyb.outDir, "config.json")));
      assertEquals(config.modelConfig.spread, 2);
      const m = await stage1Hybrid(hyb.outDir, vit.outDir) as Hybrid;
      const ck = await loadCheckpoint(join(hyb.outDir, "stage1", "checkpoint.safetensors"));
      const state = m.stateDict(), vitState = vit.model!.stateDict();
      for (const [k, v] of ck.model) {
        if (k.startsWith("cnn.")) assertEquals(state.get(k)!.dataSync(), v.dataSync(), k);
      }
      for (const [k, v] of vitState) assertEquals(state.get(`vit.${k}`)!.dataSync(), v.dataSync(), k);
      tf.dispose([...ck.model.values(), ...ck.optimizer.m.values(), ...ck.optimizer.v.values()]);
      m.dispose();
      assertEquals(tf.memory().numTensors, before, "tensors leaked");
      let err: Error | undefined;
      await stage1Hybrid(vit.outDir, vit.outDir).catch((e: Error) => err = e);
      assert(err?.message.includes("is not a hybrid run"), err?.message);
      vit.model!.dispose();
    });
  },
});
