import { assertEquals, assertThrows } from "./_assert.ts";
import { froc } from "../lib/metrics/mod.ts";
import { frocPlot, readFractionPlot } from "../lib/viz/mod.ts";

Deno.test("frocPlot() draws each curve with its six evaluation points and the score in the legend", () => {
  const lesions = {
    width: 2,
    height: 1,
    scale: 10,
    labels: Int32Array.from([1, 0]),
    count: 1,
    itc: [false],
    majorAxisUm: [500],
  };
  const curve = froc([{ lesions, detections: [{ p: 0.9, x: 5, y: 5 }, { p: 0.5, x: 15, y: 5 }] }]);
  const fig = frocPlot([{ name: "ViT", curve }]);
  assertEquals(fig.data.length, 2);
  assertEquals(fig.data[0].name, "ViT (FROC 1.000)");
  assertEquals((fig.data[1].x as number[]).length, 6);
  assertThrows(() => frocPlot([]), RangeError, "no curves");
});

Deno.test("readFractionPlot() draws AUC and FROC per method, ordered by fraction", () => {
  const fig = readFractionPlot([
    { method: "CNN top-k", fraction: 0.5, auc: 0.9, froc: 0.6, seconds: 2 },
    { method: "CNN top-k", fraction: 0.1, auc: 0.8, froc: 0.5, seconds: 1 },
    { method: "random", fraction: 0.1, auc: 0.6, froc: 0.2, seconds: 0.5 },
  ]);
  assertEquals(fig.data.length, 4);
  assertEquals(fig.data[0].x, [0.1, 0.5]);
  assertEquals(fig.data[1].y, [0.5, 0.6]);
});
