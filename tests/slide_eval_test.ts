import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "./_assert.ts";
import { initBackend } from "../lib/backend/mod.ts";
import {
  evaluateSetting,
  type PatchCoords,
  patchGrid,
  readPatch,
  readSetting,
  segmentTissue,
  slideLesions,
  type SlidePasses,
  slidePasses,
  SyntheticHeSlide,
} from "../lib/wsi/mod.ts";

/** Four 100-px patches in a row; patch 2 is on a lesion. */
function handPasses(cnn: number[], vit: number[], id = "s"): SlidePasses {
  const coords: PatchCoords = {
    slideId: id,
    level: 0,
    patchSize: 100,
    stride: 100,
    downsample: 1,
    slideSize: [400, 100],
    x: Int32Array.from([0, 100, 200, 300]),
    y: new Int32Array(4),
  };
  return {
    id,
    coords,
    cnn: Float32Array.from(cnn),
    vit: Float32Array.from(vit),
    seconds: { cnn: 1, vitPerPatch: 0.5 },
  };
}

Deno.test("readSetting() reads the CNN's top-k, a random k, or everything, and composes the wall time", () => {
  const p = handPasses([0.1, 0.9, 0.8, 0.2], [0.05, 0.3, 0.95, 0.1]);
  const top = readSetting(p, "cnn-topk", 0.5);
  assertEquals(top.read, 2);
  assertAlmostEquals(top.score, 0.95, 1e-6); // patch 2 read
  assert(Number.isNaN(top.map.data[0]) && Number.isNaN(top.map.data[3]));
  assertEquals(top.seconds, 1 + 2 * 0.5);
  const all = readSetting(p, "all");
  assertEquals([all.read, all.seconds], [4, 2]);
  const cnn = readSetting(p, "cnn-only");
  assertEquals([cnn.read, cnn.seconds], [0, 1]);
  assertAlmostEquals(cnn.score, 0.9, 1e-6);
  const rnd = readSetting(p, "random", 0.25, 3);
  assertEquals([rnd.read, rnd.seconds], [1, 0.5]);
  assertThrows(() => readSetting(p, "random", 0), Error, "got 0");
});

Deno.test("evaluateSetting() scores a tumour and a normal slide with CAMELYON16's AUC and FROC", () => {
  // the lesion covers patch 2 of slide 0; slide 1 is normal
  const ann = {
    tumour: [{
      name: "t",
      group: "Tumor",
      type: "Polygon",
      points: Float64Array.from([210, 10, 290, 10, 290, 90, 210, 90]),
      bbox: [210, 10, 290, 90] as const,
    }],
    exclusion: [],
    other: [],
  };
  const lesions = slideLesions(ann, [400, 100], 10, 10)!; // 10 µm/px: 800 µm lesion, not an ITC
  assertEquals([lesions.count, lesions.itc[0]], [1, false]);
  const passes = [
    handPasses([0.1, 0.2, 0.9, 0.1], [0.1, 0.6, 0.9, 0.1], "tumour"),
    handPasses([0.3, 0.1, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1], "normal"),
  ];
  const truths = [{ tumour: true, lesions }, { tumour: false }];
  const all = evaluateSetting(passes, truths, "all", 1, { nmsRadius: 50 });
  // slide scores 0.9 vs 0.7: AUC 1. Detections: 0.9 TP; 0.6 (slide 0) and 0.7 (slide 1) FP -> at 0.9: 0 FP, sens 1
  assertEquals(all.auc, 1);
  assertEquals(all.froc, 1);
  const one = evaluateSetting(passes, truths, "cnn-topk", 0.25, { nmsRadius: 50 });
  // top-1 by CNN: slide 0 reads patch 2 (0.9), slide 1 reads patch 0 (0.7)
  assertEquals(one.auc, 1);
  assertEquals(one.seconds, 2 * (1 + 0.5));
  const cnnOnly = evaluateSetting(passes, truths, "cnn-only", 1, { nmsRadius: 50 });
  assertEquals(cnnOnly.fraction, 0);
  assertEquals(cnnOnly.froc, 1);
});

Deno.test("slidePasses() returns both models' outputs in patch order on a synthetic H&E slide", async () => {
  await initBackend("cpu", { log: false });
  const slide = SyntheticHeSlide.create(8, { width: 2048, height: 2048, tumour: true });
  const coords = patchGrid(segmentTissue(slide, "biopsy"), slide.levelDownsamples, {
    level: 2,
    patchSize: 32,
  });
  const sub: PatchCoords = { ...coords, x: coords.x.slice(0, 12), y: coords.y.slice(0, 12) };
  const darkness = (x: tf.Tensor4D) => tf.tidy(() => tf.sub(1, tf.mean(x, [1, 2, 3])));
  const before = tf.memory().numTensors;
  const p = await slidePasses("s8", slide, sub, { score: darkness, classify: darkness }, { batchSize: 5 });
  assertEquals(tf.memory().numTensors, before);
  const img = await readPatch(slide, sub.x[7], sub.y[7], 128, 32);
  const expect = 1 - img.data.reduce((a, b) => a + b, 0) / img.data.length / 255;
  assertAlmostEquals(p.vit[7], expect, 1e-5);
  assertAlmostEquals(p.cnn[7], expect, 1e-5);
  assert(p.seconds.cnn >= 0 && p.seconds.vitPerPatch >= 0);
});
