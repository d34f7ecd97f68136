/**
 * The hybrid's budget mode (DynamicViT's inference): a count of tokens per image from the selector's
 * threshold, the batch gathered to its largest count with the padding masked out of attention.
 */
import * as tf from "@tensorflow/tfjs-core";
import { meanSelectionQuality } from "../lib/metrics/mod.ts";
import { createModel, type Hybrid } from "../lib/models/mod.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";

const images = (n: number, seed: number) =>
  tf.tensor4d(seededRandom(n * 32 * 32 * 3, seed), [n, 32, 32, 3]) as tf.Tensor4D;

forEachBackend(
  "budget mode: a count per image, and padding changes nothing (batched = one image at a time)",
  async () => {
    const m = createModel("hybrid_test", {}, { seed: 3 }) as Hybrid;
    const x = images(4, 7);
    try {
      const scores = tf.tidy(() => m.scores(x)).arraySync() as number[][];
      const above = scores.map((row) => row.map((s, j) => (s > 0 ? j : -1)).filter((j) => j >= 0));
      const expected = above.map((a, i) => (a.length ? a : [scores[i].indexOf(Math.max(...scores[i]))]));
      assert(
        new Set(expected.map((e) => e.length)).size > 1,
        `counts ${expected.map((e) => e.length)} all equal`,
      );
      const { logits, counts } = await assertNoLeak("budget forward", () => {
        const out = m.forward(x, { budget: true, returnAux: true });
        const v = { logits: out.logits.arraySync(), counts: out.aux!.keptCounts! };
        tf.dispose([out.logits, ...Object.values(out.aux!).filter((t) => t instanceof tf.Tensor)]);
        for (const t of out.aux!.attention ?? []) t.dispose();
        return v;
      });
      assertEquals(counts, expected.map((e) => e.length));
      // Each image alone, on exactly its own tokens (no padding): the same logits.
      for (let i = 0; i < 4; i++) {
        const one = tf.tidy(() => {
          const xi = tf.slice(x, [i, 0, 0, 0], [1, 32, 32, 3]) as tf.Tensor4D;
          const keep = tf.tensor2d([expected[i]], [1, expected[i].length], "int32");
          return m.forward(xi, { keepIndices: keep }).logits.arraySync()[0];
        });
        assertClose(logits[i], one, 2e-4, `image ${i} (${counts[i]} tokens)`);
      }
    } finally {
      x.dispose();
      m.dispose();
    }
  },
);

/** A seeded hybrid_test on the wasm backend and `subset` synthetic test images, disposed afterwards. */
async function withHybridAndData(
  subset: number,
  fn: (m: Hybrid, ds: Awaited<ReturnType<typeof import("../lib/data/mod.ts").loadDataset>>) => Promise<void>,
): Promise<void> {
  const { initBackend } = await import("../lib/backend/mod.ts");
  const { loadDataset } = await import("../lib/data/mod.ts");
  await initBackend("wasm", { log: false });
  const m = createModel("hybrid_test", {}, { seed: 3 }) as Hybrid;
  const ds = await loadDataset("synthetic", { split: "test", subset, log: false, progress: false });
  try {
    await fn(m, ds);
  } finally {
    m.dispose();
  }
}

Deno.test({
  name: "evaluateStrategy with budget: GMACs per image at each count, the padded cost beside it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { evaluateStrategy } = await import("../lib/experiment/mod.ts");
    await withHybridAndData(40, async (m, ds) => {
      const r = await evaluateStrategy(m, ds, { strategy: "cnn", keep: 0.5, budget: true, batchSize: 16 });
      const b = r.budget!;
      const n = m.vit.numPatches;
      assert(
        b.minKept >= 1 && b.maxKept <= n && b.minKept <= b.meanKept && b.meanKept <= b.maxKept,
        JSON.stringify(b),
      );
      const lo = m.gmacs({ keepRatio: b.minKept / n }).total,
        hi = m.gmacs({ keepRatio: b.maxKept / n }).total;
      assert(r.gmacs >= lo - 1e-12 && r.gmacs <= hi + 1e-12, `${r.gmacs} not in [${lo}, ${hi}]`);
      assert(b.gmacsPadded >= r.gmacs - 1e-12, `padded ${b.gmacsPadded} < per-image ${r.gmacs}`);
      await assertThrowsAsync(() => evaluateStrategy(m, ds, { strategy: "random", keep: 0.5, budget: true }));
    });
  },
});

async function assertThrowsAsync(fn: () => Promise<unknown>): Promise<void> {
  let err: Error | undefined;
  await fn().catch((e) => err = e);
  assert(err?.message.includes("budget needs the hybrid"), err?.message);
}

forEachBackend("keptMask needs gathered tokens; budget is for inference", () => {
  const m = createModel("hybrid_test", {}, { seed: 3 }) as Hybrid;
  const x = images(2, 1);
  try {
    assertThrows(
      () => tf.tidy(() => m.vit.forward(x, { keptMask: tf.ones([2, 4]) as tf.Tensor2D }).logits),
      Error,
      "needs keepIndices",
    );
    assertThrows(
      () => tf.tidy(() => m.forward(x, { budget: true, training: true }).logits),
      Error,
      "threshold",
    );
  } finally {
    x.dispose();
    m.dispose();
  }
}, { backends: ["cpu"] });

Deno.test({
  name: "recordRunMetrics with budget: the row's tokens and keep ratio are the mean per image",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { recordRunMetrics } = await import("../lib/experiment/study.ts");
    await withHybridAndData(24, async (m, ds) => {
      const { row, eval: ev } = await recordRunMetrics(m, ds, {
        label: "hybrid",
        strategy: "cnn",
        keep: 0.5,
        training: "none",
        benchBatch: 8,
        budget: true,
      });
      assertClose(
        [row.keptTokens!, row.keepRatio!],
        [ev.budget!.meanKept, ev.budget!.meanKept / 64],
        1e-12,
        "row",
      );
      assertEquals(row.throughputImgPerS, undefined, "no speed for a per-image count");
    });
  },
});

Deno.test({
  name:
    "calibrateBudgetThreshold: the pooled-score quantile; the budget mode at it keeps the target share on average",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { calibrateBudgetThreshold, evaluateStrategy } = await import("../lib/experiment/mod.ts");
    await withHybridAndData(40, async (m, ds) => {
      const n = m.vit.numPatches;
      // The hand count: every image's scores, pooled, and the share above a threshold.
      const all: number[] = [];
      for (const b of ds.batches({ batchSize: 16 })) {
        all.push(...(tf.tidy(() => m.scores(b.x)).arraySync() as number[][]).flat());
        tf.dispose([b.x, b.y]);
      }
      const share = (t: number) => all.filter((s) => s > t).length / all.length;
      for (const keep of [0.25, 0.5, 0.8]) {
        const before = tf.memory().numTensors;
        const c = await calibrateBudgetThreshold(m, ds, keep, { batchSize: 16 });
        assertEquals(tf.memory().numTensors, before, "no tensor left behind");
        assertEquals(c.images, 40);
        assertClose([c.keepRatio, c.keepRatioAtZero], [share(c.threshold), share(0)], 1e-12, `keep ${keep}`);
        assertEquals(Math.round(c.keepRatio * all.length), Math.round(keep * all.length), `keep ${keep}`);
        // The budget mode at that threshold on the same images keeps that share (every image keeps at
        // least its best patch, so a little more where an image has none above it).
        const r = await evaluateStrategy(m, ds, {
          strategy: "cnn",
          keep,
          budget: true,
          budgetThreshold: c.threshold,
          batchSize: 16,
        });
        const expected = c.keepRatio * n;
        assert(
          r.budget!.meanKept >= expected - 1e-9 && r.budget!.meanKept <= expected + 1,
          `keep ${keep}: mean ${r.budget!.meanKept} tokens, calibrated ${expected}`,
        );
        assertEquals(r.budget!.threshold, c.threshold);
        // Selection quality counts each image's kept patches, not the padding up to the batch's largest
        // count: by hand, the patches above the threshold (or the best one) against the object masks.
        const kept = Array.from({ length: ds.size }, (_, i) => {
          const row = all.slice(i * n, (i + 1) * n);
          const above = row.flatMap((v, j) => (v > c.threshold ? [j] : []));
          return above.length ? above : [row.indexOf(Math.max(...row))];
        });
        const masks = ds.masksOf(Array.from({ length: ds.size }, (_, i) => i));
        const q = meanSelectionQuality(kept, kept.map((_, i) => masks.subarray(i * n, (i + 1) * n)));
        assertClose(
          [r.selection!.precision, r.selection!.recall],
          [q.precision, q.recall],
          1e-9,
          `keep ${keep}`,
        );
      }
      await assertRejects(() => calibrateBudgetThreshold(m, ds, 0), "not a ratio in (0, 1]");
    });
  },
});

async function assertRejects(fn: () => Promise<unknown>, message: string): Promise<void> {
  let err: Error | undefined;
  await fn().catch((e) => err = e);
  assert(err?.message.includes(message), err?.message);
}
