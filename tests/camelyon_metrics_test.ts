import { assert, assertAlmostEquals, assertEquals, assertThrows } from "./_assert.ts";
import {
  detectionsFromMap,
  froc,
  type LesionMask,
  lesionMask,
  sensitivityAtFps,
  slideAuc,
  slideHits,
} from "../lib/metrics/mod.ts";

/** Slide 1 of the hand case: lesions 1 and 2 count, lesion 3 is an ITC; mask pixels are 10 level-0 px. */
function handLesions(): LesionMask {
  return {
    width: 10,
    height: 1,
    scale: 10,
    labels: Int32Array.from([1, 1, 0, 2, 2, 0, 3, 0, 0, 0]),
    count: 3,
    itc: [false, false, true],
    majorAxisUm: [500, 500, 100],
  };
}

Deno.test("slideHits() counts a lesion hit twice once, ignores an ITC hit, and counts background as FP", () => {
  const h = slideHits([
    { p: 0.9, x: 5, y: 5 }, // lesion 1
    { p: 0.6, x: 15, y: 5 }, // lesion 1 again
    { p: 0.8, x: 65, y: 5 }, // ITC
    { p: 0.7, x: 25, y: 5 }, // background: FP
    { p: 0.4, x: 45, y: 5 }, // lesion 2
  ], handLesions());
  assertEquals(Array.from(h.lesionProbs.slice(0, 2)), [0.9, 0.4]);
  assert(Number.isNaN(h.lesionProbs[2]));
  assertEquals(h.fpProbs, [0.7]);
  assertEquals(h.ignored, 1);
  assertEquals(h.duplicates, 1);
});

Deno.test("froc() matches a hand computation over a tumour, a normal and a missed-lesion slide", () => {
  const one: LesionMask = { ...handLesions() };
  const three: LesionMask = {
    width: 4,
    height: 1,
    scale: 10,
    labels: Int32Array.from([0, 1, 1, 0]),
    count: 1,
    itc: [false],
    majorAxisUm: [400],
  };
  const r = froc([
    {
      lesions: one,
      detections: [
        { p: 0.9, x: 5, y: 5 },
        { p: 0.6, x: 15, y: 5 },
        { p: 0.8, x: 65, y: 5 },
        { p: 0.7, x: 25, y: 5 },
        { p: 0.4, x: 45, y: 5 },
      ],
    },
    { detections: [{ p: 0.95, x: 100, y: 100 }, { p: 0.5, x: 300, y: 10 }] }, // normal slide: both FP
    { lesions: three, detections: [{ p: 0.3, x: 35, y: 5 }] }, // lesion missed, one FP
  ]);
  // TP probs [0.9, 0.4, 0] over 3 lesions; FP probs [0.95, 0.7, 0.5, 0.3] over 3 slides.
  assertEquals(r.lesions, 3);
  assertEquals(r.thresholds, [Infinity, 0.95, 0.9, 0.7, 0.5, 0.4, 0.3]);
  const third = 1 / 3;
  const near = (a: number[], b: number[]) => a.forEach((v, i) => assertAlmostEquals(v, b[i], 1e-12));
  near(r.fpsPerSlide, [0, third, third, 2 * third, 1, 1, 4 * third]);
  near(r.sensitivity, [0, 0, third, third, third, 2 * third, 2 * third]);
  // np.interp on that curve: 1/4 FP lies between (0, 0) and (1/3, 0): 0; 1/2 FP: 1/3; 1 FP onwards: 2/3.
  near(r.sensitivityAt, [0, third, 2 * third, 2 * third, 2 * third, 2 * third]);
  assertAlmostEquals(r.score, 0.5, 1e-12);
});

Deno.test("froc() refuses a set without countable lesions and bad detections", () => {
  assertThrows(() => froc([{ detections: [{ p: 0.5, x: 0, y: 0 }] }]), Error, "no lesions");
  assertThrows(() => slideHits([{ p: 1.5, x: 0, y: 0 }]), Error, '"p":1.5');
});

Deno.test("sensitivityAtFps() interpolates linearly and clamps at the ends", () => {
  assertAlmostEquals(sensitivityAtFps([0, 1, 2], [0, 0.5, 0.75], 1.5), 0.625, 1e-12);
  assertEquals(sensitivityAtFps([0, 1, 2], [0, 0.5, 0.75], 8), 0.75);
  assertThrows(() => sensitivityAtFps([0, 2, 1], [0, 0.5, 0.75], 1), Error, "non-decreasing");
});

Deno.test("lesionMask() grows by 37.5 µm, merges close lesions and flags those under 275 µm as ITC", () => {
  // 25 µm per mask pixel: lesions grow by 1.5 px (8-neighbours), ITC below 11 px of major axis.
  const w = 40, h = 20, t = new Uint8Array(w * h);
  for (let y = 2; y < 6; y++) for (let x = 2; x < 14; x++) t[y * w + x] = 1; // 12 x 4 px: a lesion
  t[10 * w + 30] = 1; // one pixel: an ITC (grown to 3 x 3)
  t[16 * w + 20] = t[16 * w + 23] = 1; // two pixels 3 px apart: they merge into one small lesion
  const m = lesionMask(t, w, h, { mpp: 0.25, scale: 100 });
  assertEquals(m.count, 3);
  assertEquals(m.labels[2 * w + 2], 1);
  assertEquals(m.labels[1 * w + 1], 1); // grown diagonally by one pixel
  assertEquals(m.labels[0], 0);
  assertEquals(m.labels[16 * w + 20], m.labels[16 * w + 23]); // merged
  assertEquals(m.itc, [false, true, true]);
  // 3 x 3 square: variance 2/3 per axis, major axis 4 * sqrt(2/3) pixels of 25 µm
  assertAlmostEquals(m.majorAxisUm[1], 4 * Math.sqrt(2 / 3) * 25, 1e-9);
  assertThrows(() => lesionMask(t, w, h + 1, { mpp: 0.25, scale: 100 }), Error, "40x21");
});

Deno.test("lesionMask() fills holes inside a lesion", () => {
  const w = 12, h = 12, t = new Uint8Array(w * h);
  for (let y = 1; y < 11; y++) {
    for (let x = 1; x < 11; x++) if (x < 3 || x > 8 || y < 3 || y > 8) t[y * w + x] = 1;
  }
  const m = lesionMask(t, w, h, { mpp: 1, scale: 1, mergeDistanceUm: 1 }); // grow 0.5 px: nothing
  assertEquals(m.count, 1);
  assertEquals(m.labels[6 * w + 6], 1);
});

Deno.test("detectionsFromMap() keeps local maxima above the threshold and suppresses their neighbours", () => {
  const data = new Float64Array(10 * 4).fill(0.1);
  data[1 * 10 + 2] = 0.9;
  data[1 * 10 + 3] = 0.8; // suppressed by 0.9
  data[2 * 10 + 8] = 0.7;
  data[0] = NaN;
  const d = detectionsFromMap({ width: 10, height: 4, scale: 16, data }, { threshold: 0.5, radius: 32 });
  assertEquals(d, [{ p: 0.9, x: 40, y: 24 }, { p: 0.7, x: 136, y: 40 }]);
});

Deno.test("slideAuc() ranks tumour slides above normal ones", () => {
  assertEquals(slideAuc([true, false, true, false], [0.9, 0.2, 0.4, 0.5]).auc, 0.75);
});
