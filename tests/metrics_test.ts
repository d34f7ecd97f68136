import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertNotEquals, assertThrows } from "./_assert.ts";
import { assertNoLeak } from "./_backends.ts";
import { initBackend } from "../lib/backend/mod.ts";
import { createModel, type Model } from "../lib/models/mod.ts";
import {
  accuracy,
  argmax,
  benchmarkModel,
  bootstrapCI,
  bootstrapMetric,
  confusionMatrix,
  expectedCalibrationError,
  formatMeanStd,
  forwardRunner,
  macroF1,
  meanSelectionQuality,
  meanStd,
  measureLatency,
  measureMemory,
  measureThroughput,
  patchMask,
  perClassMetrics,
  predictions,
  quantile,
  rocCurve,
  rocOneVsRest,
  rowsOf,
  selectionQuality,
  softmax,
  tokenReduction,
  topKAccuracy,
} from "../lib/metrics/mod.ts";

const tfTest = { sanitizeOps: false, sanitizeResources: false };

Deno.test("accuracy() counts exact matches", () => {
  assertEquals(accuracy([0, 1, 1, 2], [0, 1, 2, 2]), 0.75);
  assertEquals(accuracy([3, 1], [3, 1]), 1);
});

Deno.test("accuracy() rejects mismatched or invalid input with the offending value", () => {
  assertThrows(() => accuracy([0, 1], [0]), RangeError, "different lengths (2 vs 1)");
  assertThrows(() => accuracy([0, 1.5], [0, 1]), RangeError, "labels[1] is 1.5");
  assertThrows(() => accuracy([], []), RangeError, "labels is empty");
});

Deno.test("argmax() and predictions() break ties towards the lowest index", () => {
  assertEquals(argmax([0.2, 0.5, 0.5]), 1);
  assertEquals(predictions([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]]), [1, 0, 0]);
});

Deno.test("rowsOf() and softmax() turn flat logits into probability rows", () => {
  const rows = rowsOf(new Float32Array([0, 0, 1, 1, 0, Math.log(3)]), 2);
  assertEquals(rows.length, 3);
  const p = softmax(rows);
  assertAlmostEquals(p[0][0], 0.5, 1e-12);
  assertAlmostEquals(p[2][1], 0.75, 1e-7);
  assertThrows(() => rowsOf([1, 2, 3], 2), RangeError, "not a multiple");
});

Deno.test("topKAccuracy() ranks ties like argmax so top-1 equals accuracy", () => {
  const scores = [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]];
  assertEquals(topKAccuracy([1, 2], scores, 1), 0);
  assertEquals(topKAccuracy([1, 2], scores, 2), 0.5);
  assertEquals(topKAccuracy([1, 2], scores, 3), 1);
  const tied = [[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]];
  assertEquals(topKAccuracy([0, 1], tied, 1), 0.5);
  assertEquals(topKAccuracy([0, 1], tied, 1), accuracy([0, 1], predictions(tied)));
  assertThrows(() => topKAccuracy([0], [[1, 2]], 0), RangeError, "k is 0");
});

Deno.test("confusionMatrix() puts true classes in rows and keeps empty classes", () => {
  assertEquals(confusionMatrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4), [
    [1, 1, 0, 0],
    [0, 2, 0, 0],
    [1, 0, 0, 0],
    [0, 0, 0, 0],
  ]);
  assertEquals(confusionMatrix([0, 1, 1], [0, 0, 1]), [[1, 0], [1, 1]]);
  assertThrows(
    () => confusionMatrix([0, 5], [0, 1], 3),
    RangeError,
    "labels[1] is 5; expected an integer in [0, 3)",
  );
});

Deno.test("perClassMetrics() matches hand-computed precision, recall and F1, with zeros for empty classes", () => {
  const m = perClassMetrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4);
  assertEquals(m[0], { cls: 0, precision: 0.5, recall: 0.5, f1: 0.5, support: 2, predicted: 2 });
  assertAlmostEquals(m[1].precision, 2 / 3, 1e-12);
  assertEquals(m[1].recall, 1);
  assertAlmostEquals(m[1].f1, 0.8, 1e-12);
  assertEquals(m[2], { cls: 2, precision: 0, recall: 0, f1: 0, support: 1, predicted: 0 });
  assertEquals(m[3], { cls: 3, precision: 0, recall: 0, f1: 0, support: 0, predicted: 0 });
});

Deno.test("macroF1() averages present classes by default and all classes on request", () => {
  const labels = [0, 0, 1, 1, 2], preds = [0, 1, 1, 1, 0];
  assertAlmostEquals(macroF1(labels, preds, { numClasses: 4 }), (0.5 + 0.8 + 0) / 3, 1e-12);
  assertAlmostEquals(macroF1(labels, preds, { numClasses: 4, average: "all" }), (0.5 + 0.8) / 4, 1e-12);
  assertAlmostEquals(macroF1([0, 0, 1, 1], [0, 1, 1, 1]), (2 / 3 + 0.8) / 2, 1e-12);
});

Deno.test("a perfect classifier scores 1 everywhere and 0 calibration error", () => {
  const labels = [0, 1, 2, 2, 1, 0];
  const probs = labels.map((y) => [0, 1, 2].map((k) => (k === y ? 1 : 0)));
  assertEquals(accuracy(labels, predictions(probs)), 1);
  assertEquals(macroF1(labels, predictions(probs)), 1);
  assertEquals(topKAccuracy(labels, probs, 1), 1);
  assertEquals(rocOneVsRest(labels, probs).macroAuc, 1);
  assertEquals(expectedCalibrationError(labels, probs).ece, 0);
  const ci = bootstrapMetric(accuracy, labels, predictions(probs), { seed: 3, resamples: 200 });
  assertEquals([ci.estimate, ci.lower, ci.upper], [1, 1, 1]);
});

Deno.test("rocCurve() matches a hand-computed curve and AUC", () => {
  const r = rocCurve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]);
  assertEquals(r.fpr, [0, 0, 0.5, 0.5, 1]);
  assertEquals(r.tpr, [0, 0.5, 0.5, 1, 1]);
  assertEquals(r.thresholds, [Infinity, 0.9, 0.8, 0.7, 0.1]);
  assertEquals(r.auc, 0.75);
});

Deno.test("rocCurve() gives tied positive/negative scores half credit", () => {
  assertEquals(rocCurve([1, 0], [0.5, 0.5]).auc, 0.5);
  assertEquals(rocCurve([1, 0], [0.5, 0.5]).fpr, [0, 1]);
  assertEquals(rocCurve([true, true, false, false], [0.8, 0.5, 0.5, 0.2]).auc, 0.875);
  assertEquals(rocCurve([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]).auc, 0);
});

Deno.test("rocCurve() refuses a single-class sample", () => {
  assertThrows(() => rocCurve([1, 1], [0.2, 0.3]), RangeError, "only positive samples");
});

Deno.test("rocOneVsRest() skips classes absent from the labels and averages the rest", () => {
  const labels = [0, 0, 1, 1];
  const scores = [[0.9, 0.1, 0], [0.4, 0.6, 0], [0.3, 0.7, 0], [0.6, 0.4, 0]];
  const r = rocOneVsRest(labels, scores);
  assertEquals(r.skipped, [2]);
  assertEquals(r.curves[2], null);
  // class 0: positives 0.9, 0.4 vs negatives 0.3, 0.6 -> (1 + 1 + 1 + 0) / 4
  assertEquals(r.curves[0]!.auc, 0.75);
  assertEquals(r.curves[1]!.auc, 0.75);
  assertEquals(r.macroAuc, 0.75);
});

Deno.test("expectedCalibrationError() matches a hand-computed value", () => {
  const c = expectedCalibrationError([0, 1], [[0.9, 0.1], [0.6, 0.4]], 10);
  assertAlmostEquals(c.ece, 0.35, 1e-12);
  assertEquals(c.bins[8].count, 1);
  assertEquals(c.bins[5].count, 1);
  assertEquals(c.bins[5].accuracy, 0);
  assert(Number.isNaN(c.bins[0].accuracy));
  assertThrows(() => expectedCalibrationError([0], [[2, -1]]), RangeError, "expected a probability");
});

Deno.test("quantile() interpolates linearly like numpy", () => {
  assertEquals(quantile([4, 1, 3, 2], 0.5), 2.5);
  assertAlmostEquals(quantile(Array.from({ length: 20 }, (_, i) => i + 1), 0.95), 19.05, 1e-12);
  assertEquals(quantile([7], 0.95), 7);
});

Deno.test("bootstrapCI() is reproducible with a seed and brackets the estimate", () => {
  const labels = Array.from({ length: 200 }, (_, i) => i % 3);
  const preds = labels.map((y, i) => (i % 5 === 0 ? (y + 1) % 3 : y));
  const a = bootstrapMetric(accuracy, labels, preds, { seed: 7, resamples: 300 });
  const b = bootstrapMetric(accuracy, labels, preds, { seed: 7, resamples: 300 });
  const c = bootstrapMetric(accuracy, labels, preds, { seed: 8, resamples: 300 });
  assertEquals(a, b);
  assertNotEquals([a.lower, a.upper], [c.lower, c.upper]);
  assertEquals(a.estimate, 0.8);
  assert(a.lower < 0.8 && a.upper > 0.8, `interval [${a.lower}, ${a.upper}] should contain 0.8`);
  // binomial standard error sqrt(0.8*0.2/200) = 0.028: the 95% interval is about ±0.055
  assert(a.upper - a.lower > 0.07 && a.upper - a.lower < 0.15, `width ${a.upper - a.lower}`);
  assertEquals(a.level, 0.95);
});

Deno.test("bootstrapCI() leaves out resamples where the statistic is undefined", () => {
  const pos = [1, 0, 0, 0, 0, 0];
  const s = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5];
  const ci = bootstrapCI(pos.length, (idx) => {
    try {
      return rocCurve(Array.from(idx, (i) => pos[i]), Array.from(idx, (i) => s[i])).auc;
    } catch {
      return NaN;
    }
  }, { seed: 1, resamples: 100 });
  assert(ci.resamples < 100 && ci.resamples > 0);
  assertEquals([ci.estimate, ci.lower, ci.upper], [1, 1, 1]);
});

Deno.test("meanStd() uses the sample standard deviation and formats as mean ± std", () => {
  const m = meanStd([0.9, 0.92, 0.94]);
  assertAlmostEquals(m.mean, 0.92, 1e-12);
  assertAlmostEquals(m.std, 0.02, 1e-12);
  assertEquals(m.n, 3);
  assertEquals(formatMeanStd(m, { scale: 100, digits: 1 }), "92.0 ± 2.0");
  assertEquals(meanStd([0.5]).std, 0);
  assertEquals(formatMeanStd(meanStd([0.5]), { digits: 2 }), "0.50");
});

Deno.test("patchMask() flags patches covered by the pixel mask", () => {
  // 2x4 image, patch 2: left patch fully on, right patch 1/4 on
  assertEquals(patchMask([1, 1, 0, 1, 1, 1, 0, 0], 2, 4, { patchSize: 2 }), new Uint8Array([1, 0]));
  assertEquals(
    patchMask([1, 1, 0, 1, 1, 1, 0, 0], 2, 4, { patchSize: 2, minFraction: 0.25 }),
    new Uint8Array([1, 1]),
  );
  assertThrows(() => patchMask([1, 1], 2, 4, { patchSize: 2 }), RangeError, "expected height*width = 8");
});

Deno.test("selectionQuality() computes precision and recall of kept patches", () => {
  const q = selectionQuality([0, 1], [1, 0, 1, 0]);
  assertEquals([q.precision, q.recall, q.f1, q.hits], [0.5, 0.5, 0.5, 1]);
  const cls = selectionQuality([0, 1, 3], [1, 0, 1, 0], { prefixTokens: 1 });
  assertEquals([cls.precision, cls.recall, cls.kept], [1, 1, 2]);
  assert(Number.isNaN(selectionQuality([], [1, 0]).precision));
  assertThrows(() => selectionQuality([4], [1, 0, 1, 0]), RangeError, "kept[0] is 4");
  assertThrows(() => selectionQuality([1, 1], [1, 0]), RangeError, "appears twice");
});

Deno.test("meanSelectionQuality() averages over images, skipping undefined values", () => {
  const q = meanSelectionQuality([[0], [1], []], [[1, 0], [1, 0], [0, 0]]);
  assertEquals(q, { precision: 0.5, recall: 0.5, f1: 0.5, images: 3 });
  assertThrows(() => meanSelectionQuality([[0]], []), RangeError, "1 kept rows and 0 masks");
});

Deno.test("tokenReduction() is 1 - kept/total over patch tokens", () => {
  assertEquals(tokenReduction(98, 196), { kept: 98, total: 196, keepRatio: 0.5, reduction: 0.5 });
  assertEquals(tokenReduction(64, 64).reduction, 0);
  assertThrows(() => tokenReduction(70, 64), RangeError, "kept is 70");
});

Deno.test("measureLatency() runs warm-up plus repeats and reports ordered statistics", async () => {
  let calls = 0;
  const lat = await measureLatency(() => {
    calls++;
  }, { warmup: 2, repeats: 5 });
  assertEquals(calls, 7);
  assertEquals(lat.samplesMs.length, 5);
  assert(lat.minMs <= lat.medianMs && lat.medianMs <= lat.p95Ms && lat.p95Ms <= lat.maxMs);
  const tp = await measureThroughput(async () => {}, { batchSize: 8, warmup: 0, repeats: 3 });
  assertEquals(tp.batchSize, 8);
  assert(tp.imagesPerSecond > 0);
  await (async () => {
    let err: unknown;
    try {
      await measureThroughput(() => {}, { batchSize: 0 });
    } catch (e) {
      err = e;
    }
    assert(err instanceof RangeError && err.message.includes("batchSize is 0"));
  })();
});

Deno.test({
  name: "measureMemory() reports the peak tfjs bytes of the call and no leak",
  ...tfTest,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const mem = await measureMemory(async () => {
      const a = tf.zeros([1000]); // 4000 bytes
      const b = tf.add(a, 1); // 8000 bytes live
      await b.data();
      a.dispose();
      b.dispose();
    });
    assert(mem.tfPeakBytes >= 8000, `peak ${mem.tfPeakBytes}`);
    assertEquals(mem.tfNewBytes, 0);
    assert(mem.rssBytes > 0);
    if (Deno.build.os === "linux") assert(mem.rssPeakBytes! >= mem.rssBytes * 0.5);
  },
});

function fakeModel(): Model {
  const w = tf.variable(tf.ones([3, 2]));
  return {
    family: "vit",
    config: {
      model: "vit",
      numClasses: 2,
      imgSize: 8,
      patchSize: 4,
      embedDim: 8,
      depth: 1,
      numHeads: 1,
      mlpRatio: 1,
    },
    forward: (x) => ({ logits: tf.tidy(() => tf.matMul(tf.mean(x, [1, 2]) as tf.Tensor2D, w)) }),
    paramCount: () => 6,
    gmacs: (o = {}) => ({ total: (o.keepRatio ?? 1) * 0.5, vit: (o.keepRatio ?? 1) * 0.5 }),
    trainableVariables: () => new Map([["w", w]]),
    stateDict: () => new Map([["w", w]]),
    stateLayouts: () => new Map([["w", "linear"]]),
    dispose: () => w.dispose(),
  };
}

Deno.test({
  name: "forwardRunner() and benchmarkModel() free every tensor they create",
  ...tfTest,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const model = fakeModel();
    try {
      const x = tf.ones([2, 8, 8, 3]) as tf.Tensor4D;
      await assertNoLeak("forwardRunner", () => forwardRunner(model, x)());
      await assertNoLeak("forwardRunner(fn)", () => forwardRunner((t) => tf.mean(t, [1, 2, 3]), x)());
      x.dispose();
      const eff = await assertNoLeak(
        "benchmarkModel",
        () => benchmarkModel(model, { batchSize: 4, warmup: 1, repeats: 2, forward: { keepRatio: 0.5 } }),
      );
      assertEquals(eff.params, 6);
      assertEquals(eff.gmacs.total, 0.25);
      assertEquals([eff.backend, eff.batchSize, eff.imgSize], ["cpu", 4, 8]);
      assertEquals(eff.latency.repeats, 2);
      assert(eff.throughput.imagesPerSecond > 0);
      assert(
        eff.memory.tfPeakBytes >= 4 * 8 * 8 * 3 * 4,
        `peak ${eff.memory.tfPeakBytes} below the input size`,
      );
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "benchmarkModel() reports a hybrid's GMACs split into CNN and ViT, smaller at a lower keep ratio",
  ...tfTest,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const model = createModel("hybrid_test", { numClasses: 3 });
    try {
      const opts = { batchSize: 2, warmup: 0, repeats: 1 };
      const full = await assertNoLeak(
        "benchmark",
        () => benchmarkModel(model, { ...opts, forward: { keepRatio: 1 } }),
      );
      const half = await benchmarkModel(model, { ...opts, forward: { keepRatio: 0.5 } });
      assertAlmostEquals(full.gmacs.total, full.gmacs.cnn! + full.gmacs.vit!, 1e-12);
      assertEquals(half.gmacs.cnn, full.gmacs.cnn);
      assert(half.gmacs.vit! < 0.6 * full.gmacs.vit!, `ViT GMACs ${half.gmacs.vit} vs ${full.gmacs.vit}`);
      assertEquals(full.params, model.paramCount());
      assertEquals(full.imgSize, 32);
    } finally {
      model.dispose();
    }
  },
});
