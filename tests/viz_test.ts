import * as tf from "@tensorflow/tfjs-core";
import sharp from "../lib/viz/_sharp.ts";
import { join } from "node:path";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "./_assert.ts";
import { assertNoLeak } from "./_backends.ts";
import { initBackend } from "../lib/backend/mod.ts";
import { disposeOutput, rocCurve, rocOneVsRest } from "../lib/metrics/mod.ts";
import { createModel } from "../lib/models/mod.ts";
import {
  accuracyVsGmacsPlot,
  accuracyVsKeepRatioPlot,
  accuracyVsThroughputPlot,
  attentionMapsImage,
  type AttentionMatrix,
  attentionRollout,
  clsAttention,
  colormap,
  confusionMatrixPlot,
  displayBundle,
  DROPPED_HATCH_RGB,
  exportFigure,
  Figure,
  findChromium,
  heatmapOverlay,
  imageAux,
  imageGrid,
  inlinePlotlyIntoHtml,
  JUPYTER_DISPLAY,
  paretoFront,
  PLOTLY_MIME,
  PLOTLY_VERSION,
  PngImage,
  renderImage,
  rocPlot,
  save,
  selectionPanel,
  show,
  throughputVsKeepRatioPlot,
  tokenGridImage,
  toRgb,
  trainingCurvesPlot,
} from "../lib/viz/mod.ts";

const tfTest = { sanitizeOps: false, sanitizeResources: false };

async function decode(
  img: PngImage,
): Promise<{ data: Uint8Array; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(img.png).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height, channels: info.channels };
}

/** A flat grey image (value v in [0, 1]) as raw float pixels. */
function grey(h: number, w: number, v: number) {
  return { data: new Float32Array(h * w * 3).fill(v), height: h, width: w, channels: 3 };
}

Deno.test("Figure renders as a small plotly MIME bundle whose HTML loads plotly.js by URL", async () => {
  const fig = new Figure([{ type: "scatter", x: [1, 2], y: [3, 4] }], { title: { text: "t" } });
  const b = await displayBundle(fig);
  assertEquals(b[PLOTLY_MIME], fig.toJSON());
  const html = b["text/html"] as string;
  // Small: the Deno kernel can corrupt IOPub messages much larger than its socket buffer (see figure.ts).
  assert(html.length < 10_000, `the HTML fallback stays small (${html.length} chars)`);
  assert(html.includes("files/node_modules/plotly.js-dist-min/plotly.min.js"));
  assert(html.includes(`https://cdn.plot.ly/plotly-${PLOTLY_VERSION}.min.js`));
  assert(html.includes("window.Plotly") && html.includes('"x":[1,2]'));
  assertEquals(b["text/plain"], 'Figure("t", 1 trace)');
  assertEquals(JSON.parse(JSON.stringify(fig)), fig.toJSON());
  // a plain spec is displayed through Figure as well
  assert(PLOTLY_MIME in await displayBundle({ data: [], layout: {} }));
  // standalone pages carry plotly.js themselves
  assert(fig.toStandaloneHtml().length > 1_000_000, "plotly.js inlined in a standalone page");
});

Deno.test("PLOTLY_VERSION (the CDN fallback) is the plotly.js-dist-min version deno.json pins", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assertEquals(denoJson.imports["plotly.js-dist-min"], `npm:plotly.js-dist-min@${PLOTLY_VERSION}`);
});

Deno.test("inlinePlotlyIntoHtml() makes an exported notebook with figures self-contained, once", () => {
  const fig = new Figure([{ type: "bar", x: [1], y: [2] }]);
  const page = `<html><head><title>nb</title></head><body>${
    fig.toHtmlSnippet({ includePlotly: "loader" })
  }</body></html>`;
  const once = inlinePlotlyIntoHtml(page);
  assert(once.length > page.length + 1_000_000, "plotly.js inlined");
  assert(once.indexOf("data-cnnvit-plotly") < once.indexOf("</head>"), "in <head>, before the figures run");
  assertEquals(inlinePlotlyIntoHtml(once), once, "not twice");
  const plain = "<html><head></head><body>no figures</body></html>";
  assertEquals(inlinePlotlyIntoHtml(plain), plain);
});

Deno.test("Figure HTML escapes '</script>' inside the spec", () => {
  const fig = new Figure([{ type: "scatter", name: "</script><b>x", x: [1], y: [1] }]);
  const html = fig.toHtmlSnippet();
  assertEquals((html.match(/<\/script>/g) ?? []).length, 1);
});

Deno.test("paretoFront() keeps points no other point beats on both GMACs and accuracy", () => {
  const pts = [
    { gmacs: 1, accuracy: 0.8 },
    { gmacs: 2, accuracy: 0.7 },
    { gmacs: 3, accuracy: 0.9 },
    { gmacs: 1, accuracy: 0.75 },
    { gmacs: 3, accuracy: 0.9 },
  ];
  assertEquals(paretoFront(pts), [0, 2]);
});

Deno.test("accuracyVsGmacsPlot() gives every trace its own colour and marker pair, past the palette's length", () => {
  const fig = accuracyVsGmacsPlot(
    Array.from({ length: 12 }, (_, i) => ({ model: `m${i}`, gmacs: 1 + i, accuracy: 0.5 })),
  );
  const marks = fig.data.slice(0, 12).map((t) => {
    const m = (t as { marker: { color: string; symbol: string } }).marker;
    return `${m.color}/${m.symbol}`;
  });
  assertEquals(new Set(marks).size, 12);
});

Deno.test("accuracyVsGmacsPlot() draws one trace per model/strategy plus the Pareto front, in percent", () => {
  const fig = accuracyVsGmacsPlot([
    { model: "ViT", gmacs: 4, accuracy: 0.8 },
    { model: "CNN-ViT", strategy: "cnn", gmacs: 2, accuracy: 0.79, keepRatio: 0.5, ci: [0.77, 0.81] },
    { model: "CNN-ViT", strategy: "cnn", gmacs: 3, accuracy: 0.81, keepRatio: 0.7 },
    { model: "CNN-ViT", strategy: "random", gmacs: 2, accuracy: 0.7, keepRatio: 0.5 },
  ]);
  assertEquals(fig.data.map((t) => t.name), ["ViT", "CNN-ViT · cnn", "CNN-ViT · random", "Pareto front"]);
  const cnn = fig.data[1] as {
    y: number[];
    text: string[];
    error_y: { array: number[]; arrayminus: number[] };
  };
  assertAlmostEquals(cnn.y[0], 79, 1e-9);
  assertEquals(cnn.text, ["r=0.5", "r=0.7"]);
  assertAlmostEquals(cnn.error_y.array[0], 2, 1e-9);
  assertEquals(cnn.error_y.arrayminus[1], 0);
  assertEquals((fig.data[3] as { x: number[] }).x, [2, 3]);
  const layout = fig.layout as { xaxis: { title: { text: string } }; yaxis: { title: { text: string } } };
  assert(layout.xaxis.title.text.includes("GMACs"));
  assert(layout.yaxis.title.text.includes("%"));
  assertThrows(
    () => accuracyVsGmacsPlot([{ model: "x", gmacs: NaN, accuracy: 1 }]),
    RangeError,
    "gmacs is null",
  );
});

Deno.test("accuracyVsKeepRatioPlot() sorts each strategy by keep ratio with std error bars", () => {
  const fig = accuracyVsKeepRatioPlot([
    { strategy: "cnn", keepRatio: 0.7, accuracy: 0.8, std: 0.01 },
    { strategy: "cnn", keepRatio: 0.3, accuracy: 0.7, std: 0.02 },
    { strategy: "random", keepRatio: 0.5, accuracy: 0.6 },
  ]);
  assertEquals(fig.data.length, 2);
  const t = fig.data[0] as { x: number[]; y: number[]; error_y: { array: number[] } };
  assertEquals(t.x, [0.3, 0.7]);
  assertAlmostEquals(t.y[0], 70, 1e-9);
  assertAlmostEquals(t.error_y.array[0], 2, 1e-9);
  assert(!("error_y" in fig.data[1]));
});

Deno.test("throughputVsKeepRatioPlot() states batch size and backend on the axis", () => {
  const fig = throughputVsKeepRatioPlot(
    [{ name: "CNN-ViT", keepRatio: 1, imagesPerSecond: 50 }, {
      name: "CNN-ViT",
      keepRatio: 0.5,
      imagesPerSecond: 90,
    }],
    { batchSize: 32, backend: "wasm" },
  );
  assertEquals(
    (fig.layout.yaxis as { title: { text: string } }).title.text,
    "Throughput (img/s, batch 32, wasm)",
  );
  assertEquals((fig.data[0] as { y: number[] }).y, [90, 50]);
  // deno-lint-ignore no-explicit-any
  assertThrows(() => throughputVsKeepRatioPlot([{ name: "a", keepRatio: 1, imagesPerSecond: 1 }], {} as any));
});

Deno.test("trainingCurvesPlot() puts loss, accuracy and learning rate in their own panels", () => {
  const fig = trainingCurvesPlot([
    { epoch: 1, trainLoss: 1.2, valLoss: 1.3, valAcc: 0.5, lr: 1e-3 },
    { epoch: 2, trainLoss: 0.8, valAcc: 0.7, lr: 5e-4 },
  ]);
  const axes = Object.fromEntries(fig.data.map((t) => [t.name, t.yaxis]));
  assertEquals(axes, { trainLoss: "y", valLoss: "y", valAcc: "y2", lr: "y3" });
  assertEquals((fig.data[1] as { y: (number | null)[] }).y, [1.3, null]);
  assertEquals((fig.layout.yaxis3 as { type: string }).type, "log");
  assertThrows(() => trainingCurvesPlot([]), RangeError, "history is empty");
});

Deno.test("confusionMatrixPlot() shows counts and row-normalized colours", () => {
  const fig = confusionMatrixPlot([[3, 1], [0, 4]], { classNames: ["a", "b"], normalize: "true" });
  const t = fig.data[0] as { z: number[][]; text: string[][]; x: string[] };
  assertEquals(t.z, [[0.75, 0.25], [0, 1]]);
  assertEquals(t.text[0], ["3 (75%)", "1 (25%)"]);
  assertEquals(t.x, ["a", "b"]);
  assertEquals((fig.layout.yaxis as { autorange: string }).autorange, "reversed");
  assertThrows(() => confusionMatrixPlot([[1, 2]]), RangeError, "expected square");
});

Deno.test("rocPlot() draws each class curve with its AUC and the chance line", () => {
  const r = rocOneVsRest([0, 0, 1, 1], [[0.9, 0.1, 0], [0.4, 0.6, 0], [0.3, 0.7, 0], [0.6, 0.4, 0]]);
  const fig = rocPlot(r, { classNames: ["a", "b", "c"] });
  assertEquals(fig.data.map((t) => t.name), ["a (AUC 0.750)", "b (AUC 0.750)", "chance"]);
  assert(fig.title!.includes("macro AUC 0.750"));
  const one = rocPlot([{ name: "m", curve: rocCurve([1, 0], [0.9, 0.1]) }]);
  assertEquals((one.data[0] as { x: number[] }).x, [0, 0, 1]);
});

Deno.test("colormap() maps the ends of viridis and jet", () => {
  assertEquals(colormap(0, "viridis"), [68, 1, 84]);
  assertEquals(colormap(1, "viridis"), [253, 231, 37]);
  assertEquals(colormap(0.5, "gray"), [128, 128, 128]);
  assertEquals(colormap(1, "jet"), [128, 0, 0]);
});

Deno.test({
  name: "toRgb() undoes a normalization and accepts tensors",
  ...tfTest,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const img = tf.tensor3d([(0.5 - 0.5) / 0.25, 1, 2], [1, 1, 3]);
    const out = await toRgb(img, { normalization: { mean: [0.5, 0, 0], std: [0.25, 0.5, 0.25] } });
    assertEquals(Array.from(out.rgb), [128, 128, 128]);
    img.dispose();
    assertEquals(
      Array.from((await toRgb({ data: new Uint8Array([7]), height: 1, width: 1, channels: 1 })).rgb),
      [7, 7, 7],
    );
  },
});

Deno.test("renderImage() upscales by an integer factor", async () => {
  const img = await renderImage(grey(8, 6, 0.5), { scale: 4 });
  assertEquals([img.width, img.height], [24, 32]);
  const d = await decode(img);
  assertEquals([d.width, d.height], [24, 32]);
  assertEquals(d.data[0], 128);
  const auto = await renderImage(grey(32, 32, 0.5));
  assertEquals(auto.width, 256);
});

Deno.test("tokenGridImage() dims exactly the patches left out of the kept indices", async () => {
  // 16x16 image, 4x4 grid of 4-pixel patches, upscaled x2 -> 32x32 with 8-pixel patches
  const kept = [0, 5, 10, 15, 3];
  const img = await tokenGridImage(grey(16, 16, 0.8), kept, { grid: 4, scale: 2, dim: 0.25, hatch: false });
  const d = await decode(img);
  assertEquals([d.width, d.height], [32, 32]);
  for (let p = 0; p < 16; p++) {
    const py = Math.floor(p / 4), px = p % 4;
    for (const [dy, dx] of [[2, 2], [4, 5], [7, 7]]) {
      const y = py * 8 + dy, x = px * 8 + dx;
      const v = d.data[(y * 32 + x) * d.channels];
      const expected = kept.includes(p) ? 204 : 51;
      assertEquals(v, expected, `patch ${p} pixel (${y}, ${x}) is ${v}; expected ${expected}`);
    }
  }
  let err: unknown;
  try {
    await tokenGridImage(grey(16, 16, 0.8), [16], { grid: 4 });
  } catch (e) {
    err = e;
  }
  assert(err instanceof RangeError && err.message.includes("kept[0] is 16"));
});

Deno.test("tokenGridImage() and heatmapOverlay() mark dropped patches visibly on a black image", async () => {
  // Fashion-MNIST backgrounds are black: dimming alone leaves dropped patches identical to kept ones.
  const kept = [0, 5, 10, 15];
  const black = grey(16, 16, 0);
  for (
    const img of [
      await tokenGridImage(black, kept, { grid: 4, scale: 4 }),
      await heatmapOverlay(black, Array.from({ length: 16 }, (_, i) => i), { grid: 4, scale: 4, kept }),
    ]
  ) {
    const d = await decode(img);
    assertEquals([d.width, d.height], [64, 64]);
    for (let p = 0; p < 16; p++) {
      let hatched = 0, black = 0;
      for (let y = Math.floor(p / 4) * 16; y < Math.floor(p / 4) * 16 + 16; y++) {
        for (let x = (p % 4) * 16; x < (p % 4) * 16 + 16; x++) {
          const px = Array.from(d.data.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3));
          if (px.join() === DROPPED_HATCH_RGB.join()) hatched++;
          if (px.join() === "0,0,0") black++;
        }
      }
      if (kept.includes(p)) assertEquals(hatched, 0, `kept patch ${p} has ${hatched} hatch pixels`);
      else {
        // One pixel in six on a hatch diagonal: ~43 of 256, each far from black (sum of channels 475).
        assert(hatched >= 40, `dropped patch ${p} has only ${hatched} hatch pixels`);
        assertEquals(hatched + black, 256, `dropped patch ${p}: ${256 - hatched - black} other pixels`);
      }
    }
  }
  const plain = await tokenGridImage(black, kept, { grid: 4, scale: 4, hatch: false });
  assert((await decode(plain)).data.every((v) => v === 0), "hatch: false leaves a black image black");
});

Deno.test("selectionPanel() adds a legend for the hatch under the panel when tokens were dropped", async () => {
  const scores = Array.from({ length: 16 }, (_, i) => i);
  const withKept = await selectionPanel(grey(16, 16, 0), { grid: 4, scale: 4, scores, keptIndices: [0, 5] });
  const without = await selectionPanel(grey(16, 16, 0), { grid: 4, scale: 4, scores });
  const noLegend = await selectionPanel(grey(16, 16, 0), {
    grid: 4,
    scale: 4,
    scores,
    keptIndices: [0, 5],
    legend: false,
  });
  assertEquals(withKept.height, noLegend.height + 22);
  assertEquals(without.height, noLegend.height);
  // The legend's swatch is hatched in the same colour as the dropped patches.
  const d = await decode(withKept);
  let cyan = 0;
  for (let y = d.height - 22; y < d.height; y++) {
    for (let x = 0; x < 40; x++) {
      const o = (y * d.width + x) * d.channels;
      if (d.data[o] < 60 && d.data[o + 1] > 180 && d.data[o + 2] > 220) cyan++;
    }
  }
  assert(cyan > 10, `legend swatch has ${cyan} hatch-coloured pixels`);
});

Deno.test("heatmapOverlay() colours each patch by its value", async () => {
  const values = [0, 1, 2, 3];
  const img = await heatmapOverlay(grey(4, 4, 0), values, {
    grid: 2,
    scale: 2,
    alpha: 1,
    colormap: "viridis",
  });
  const d = await decode(img);
  assertEquals([d.width, d.height], [8, 8]);
  const px = (y: number, x: number) => Array.from(d.data.subarray((y * 8 + x) * 3, (y * 8 + x) * 3 + 3));
  assertEquals(px(0, 0), colormap(0, "viridis"));
  assertEquals(px(7, 7), colormap(1, "viridis"));
  const half = await heatmapOverlay(grey(4, 4, 1), [1, 1, 1, 1], {
    grid: 2,
    alpha: 0.5,
    normalize: false,
    colormap: "gray",
  });
  assertEquals((await decode(half)).data[0], 255);
  const smooth = await heatmapOverlay(grey(4, 4, 0), values, { grid: 2, scale: 4, smooth: true });
  assertEquals(smooth.width, 16);
});

Deno.test("heatmapOverlay() with kept patches colours only those and dims the rest", async () => {
  const img = await heatmapOverlay(grey(4, 4, 0.8), [0, 1, 5, 9], {
    grid: 2,
    scale: 1,
    alpha: 1,
    colormap: "viridis",
    kept: [1, 3],
    dim: 0.25,
    hatch: false,
  });
  const d = await decode(img);
  const px = (y: number, x: number) => Array.from(d.data.subarray((y * 4 + x) * 3, (y * 4 + x) * 3 + 3));
  assertEquals(px(0, 0), [51, 51, 51]); // pruned: dimmed grey
  assertEquals(px(0, 3), colormap(0, "viridis")); // kept, lowest of the kept values
  assertEquals(px(3, 3), colormap(1, "viridis")); // kept, highest
  assertEquals(px(3, 0), [51, 51, 51]);
});

Deno.test("clsAttention() averages heads and maps tokens back to their patches", () => {
  // 2 heads, 3 tokens (CLS + 2 kept patches out of 4)
  const a: AttentionMatrix = {
    heads: 2,
    tokens: 3,
    data: [
      ...[0.2, 0.6, 0.2, 0, 1, 0, 0, 0, 1],
      ...[0.4, 0.2, 0.4, 0, 1, 0, 0, 0, 1],
    ],
  };
  const m = clsAttention(a, { numPatches: 4, keptIndices: [2, 0] });
  assertEquals(Array.from(m).map((v) => +v.toFixed(6)), [0.3, 0, 0.4, 0]);
  assertThrows(() => clsAttention(a, { numPatches: 4 }), RangeError, "pass keptIndices");
});

Deno.test("attentionRollout() matches a hand-computed product and is zero for identity attention", () => {
  const a: AttentionMatrix = { heads: 1, tokens: 3, data: [0.5, 0.25, 0.25, 0, 1, 0, 0, 0, 1] };
  // 0.5*A + 0.5*I: CLS row [0.75, 0.125, 0.125]
  const one = attentionRollout([a], { numPatches: 4, keptIndices: [2, 0] });
  assertEquals(Array.from(one), [0.125, 0, 0.125, 0]);
  // two blocks: R = A'·A'; CLS row = 0.75*[0.75, .125, .125] + .125*[0,1,0] + .125*[0,0,1]
  const two = attentionRollout([a, a], { numPatches: 2 });
  assertAlmostEquals(two[0], 0.75 * 0.125 + 0.125, 1e-12);
  const eye: AttentionMatrix = { heads: 1, tokens: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1] };
  assertEquals(Array.from(attentionRollout([eye, eye], { numPatches: 2 })), [0, 0]);
  const other: AttentionMatrix = { heads: 1, tokens: 2, data: [1, 0, 0, 1] };
  assertThrows(() => attentionRollout([a, other], { numPatches: 2 }), RangeError, "same tokens");
});

Deno.test({
  name: "imageAux() copies one image's scores, kept indices and attention without leaking",
  ...tfTest,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const scores = tf.tensor2d([[1, 2, 3, 4], [5, 6, 7, 8]]);
    const keptIndices = tf.tensor2d([[0, 1], [3, 2]], undefined, "int32");
    const att = tf.tensor4d(Array.from({ length: 2 * 1 * 3 * 3 }, (_, i) => i), [2, 1, 3, 3]);
    const a = await assertNoLeak("imageAux", () => imageAux({ scores, keptIndices, attention: [att] }, 1));
    assertEquals(Array.from(a.scores!), [5, 6, 7, 8]);
    assertEquals(Array.from(a.keptIndices!), [3, 2]);
    assertEquals(a.attention![0].tokens, 3);
    assertEquals(a.attention![0].data[0], 9);
    tf.dispose([scores, keptIndices, att]);
  },
});

Deno.test({
  name: "a hybrid model's aux outputs feed the selection panel (kept/pruned grid from keptIndices)",
  ...tfTest,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const model = createModel("hybrid_test", { numClasses: 3, keepRatio: 0.5 });
    const x = tf.randomUniform([2, 32, 32, 3], 0, 1, "float32", 5) as tf.Tensor4D;
    try {
      const a = await assertNoLeak("forward + imageAux", async () => {
        const out = model.forward(x, { returnAux: true, returnAttention: true });
        try {
          return await imageAux(out.aux!, 1);
        } finally {
          disposeOutput(out);
        }
      });
      assertEquals(a.scores!.length, 64);
      assertEquals(a.keptIndices!.length, 32);
      assertEquals(a.attention![0].tokens, 33);
      const x1 = tf.tidy(() => tf.squeeze(tf.slice(x, [1], [1]), [0])) as tf.Tensor3D;
      const grid = await tokenGridImage(x1, a.keptIndices!, {
        grid: 8,
        scale: 2,
        dim: 0,
        gridLines: false,
        hatch: false,
      });
      const d = await decode(grid);
      for (let p = 0; p < 64; p++) {
        const y = Math.floor(p / 8) * 8 + 4, xx = (p % 8) * 8 + 4;
        const v = d.data[(y * 64 + xx) * 3] + d.data[(y * 64 + xx) * 3 + 1] + d.data[(y * 64 + xx) * 3 + 2];
        const kept = Array.from(a.keptIndices!).includes(p);
        assert(kept ? v > 0 : v === 0, `patch ${p} (${kept ? "kept" : "pruned"}) has brightness ${v}`);
      }
      const panel = await selectionPanel(x1, { grid: 8, scale: 4, ...a });
      assertEquals(panel.width, 6 + 4 * (128 + 6));
      x1.dispose();
    } finally {
      x.dispose();
      model.dispose();
    }
  },
});

Deno.test("imageGrid(), attentionMapsImage() and selectionPanel() produce labelled PNGs of the expected size", async () => {
  const a = await renderImage(grey(8, 8, 0.2), { scale: 4 });
  const g = await imageGrid([{ image: a, label: "one" }, { image: a, label: "two <&>" }, a], {
    cols: 2,
    pad: 6,
  });
  assertEquals([g.width, g.height], [6 + 2 * (32 + 6), 6 + 2 * (20 + 32 + 6)]);
  assertEquals((await decode(g)).width, g.width);
  const att: AttentionMatrix = { heads: 1, tokens: 3, data: [0.5, 0.25, 0.25, 0, 1, 0, 0, 0, 1] };
  const m = await attentionMapsImage(grey(8, 8, 0.5), [att, att], { grid: 2, keptIndices: [1, 2], scale: 4 });
  // input + 2 blocks + rollout = 4 panels in one row, and the legend line for the dropped-token hatch
  assertEquals([m.width, m.height], [6 + 4 * (32 + 6), 6 + 20 + 32 + 6 + 22]);
  const s = await selectionPanel(grey(8, 8, 0.5), {
    grid: 2,
    scale: 4,
    scores: [1, 2, 3, 4],
    keptIndices: [1, 2],
    attention: [att],
    title: "sample",
  });
  assertEquals(s.width, 6 + 4 * (32 + 6));
  assertEquals(s.height, 26 + 6 + 20 + 32 + 6 + 22);
  const bundle = await displayBundle(s);
  assertEquals(bundle["text/plain"], `PngImage(${s.width}x${s.height})`);
  assertEquals(atob(bundle["image/png"] as string).slice(1, 4), "PNG");
});

Deno.test("save() and show() outside Jupyter write figures, images and tables to files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fig = new Figure([{ type: "bar", x: ["a"], y: [1] }], { title: { text: "My <i>Plot</i>!" } });
    const paths = await save(fig, { dir, formats: ["html", "json"] });
    assertEquals(paths, [join(dir, "my_plot.html"), join(dir, "my_plot.json")]);
    const html = await Deno.readTextFile(paths[0]);
    assert(html.startsWith("<!DOCTYPE html>") && html.includes("window.Plotly = Plotly"), "standalone HTML");
    assertEquals(JSON.parse(await Deno.readTextFile(paths[1])).data[0].type, "bar");
    const img = await renderImage(grey(4, 4, 1), { scale: 1 });
    assertEquals(await save(img, { dir, name: "img" }), [join(dir, "img.png")]);
    assertEquals((await PngImage.fromPng(await Deno.readFile(join(dir, "img.png")))).width, 4);
    const table = {
      [JUPYTER_DISPLAY]: () => ({ "text/markdown": "| a |\n|---|\n| 1 |\n", "text/plain": "a" }),
    };
    assertEquals(await save(table, { dir, name: "t" }), [join(dir, "t.md")]);
    const log = console.log;
    console.log = () => {};
    try {
      await show(img, { dir, name: "shown" });
    } finally {
      console.log = log;
    }
    assert((await Deno.stat(join(dir, "shown.png"))).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "exportFigure() writes PNG and SVG through headless Chromium",
  ignore: !findChromium(),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const fig = accuracyVsKeepRatioPlot([{ strategy: "cnn", keepRatio: 0.5, accuracy: 0.8 }]);
      const r = await exportFigure(fig, join(dir, "k"), {
        formats: ["png", "svg"],
        width: 400,
        height: 300,
        scale: 1,
      });
      assertEquals(r.skipped, []);
      const meta = await sharp(await Deno.readFile(join(dir, "k.png"))).metadata();
      assertEquals([meta.format, meta.width, meta.height], ["png", 400, 300]);
      const svg = await Deno.readTextFile(join(dir, "k.svg"));
      assert(svg.startsWith("<svg") && svg.includes("Keep ratio"), svg.slice(0, 100));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

if (!findChromium()) {
  console.warn(
    "viz_test: PNG/SVG export test skipped: no headless Chromium (apt-get install -y chromium-headless-shell)",
  );
}

Deno.test("accuracyVsGmacsPlot() keeps a crowded figure readable: keep ratios on hover, a wrapped title", async () => {
  const { wrapTitle } = await import("../lib/viz/_palette.ts");
  // Four methods at the same four GMACs (equal-cost controls sit on the hybrid's GMACs by construction).
  const pts = ["hybrid", "random", "attention", "merge"].flatMap((model, m) =>
    [0.4, 0.5, 0.6, 0.8].map((keepRatio, k) => ({
      model,
      gmacs: 0.5 - 0.1 * k,
      accuracy: 0.6 + 0.01 * m,
      keepRatio,
    }))
  );
  const title = "Accuracy vs GMACs per image (fashion-mnist, mean of 3 seeds, 95% t interval over seeds)";
  const fig = accuracyVsGmacsPlot(pts, { title });
  const traces = fig.data.slice(0, 4) as {
    mode: string;
    x: number[];
    text: string[];
    hovertemplate: string;
  }[];
  for (const t of traces) {
    assert(!t.mode.includes("text"), `16 labelled points: no labels on the figure (${t.mode})`);
    assert(t.hovertemplate.includes("%{text}"), "the keep ratio is on hover");
    assertEquals(t.x, [...t.x].sort((a, b) => a - b), "a method's points joined in GMACs order");
  }
  assert(
    accuracyVsGmacsPlot(pts, { labels: true }).data.every((t, i) =>
      i === 4 || String(t.mode).includes("text")
    ),
  );
  const text = (fig.layout as { title: { text: string } }).title.text;
  const lines = text.split("<br>");
  assert(lines.length === 2 && lines.every((l) => l.length <= 80), text);
  assertEquals(lines.join(" "), title, "wrapping loses no word");
  assertEquals(wrapTitle("Accuracy vs GMACs per image (fashion-mnist, mean of 3 seeds)", 40), [
    "Accuracy vs GMACs per image",
    "(fashion-mnist, mean of 3 seeds)",
  ]);
  assertEquals(wrapTitle("a-very-long-word short", 5), ["a-very-long-word", "short"]);
});

Deno.test("accuracyVsThroughputPlot(): measured img/s on x, the Pareto front of faster-and-more-accurate", () => {
  const pts = [
    { model: "ViT", gmacs: 4, imgPerS: 100, accuracy: 0.8 },
    { model: "hybrid", gmacs: 2, imgPerS: 300, accuracy: 0.79 },
    { model: "random", gmacs: 2, imgPerS: 250, accuracy: 0.7 }, // slower and less accurate than hybrid
    { model: "ResNet18", gmacs: 1, imgPerS: 900, accuracy: 0.6 },
  ];
  const fig = accuracyVsThroughputPlot(pts);
  const front = fig.data.at(-1) as { name: string; x: number[]; y: number[] };
  assertEquals(front.name, "Pareto front");
  // Slowest to fastest along the front; "random" is dominated by "hybrid".
  assertEquals(front.x, [100, 300, 900]);
  assertEquals(front.y.map((v) => Math.round(v)), [80, 79, 60]);
  const layout = fig.layout as { xaxis: { title: { text: string } } };
  assert(layout.xaxis.title.text.includes("images/s"), layout.xaxis.title.text);
  assertThrows(
    () => accuracyVsThroughputPlot([{ model: "x", gmacs: 1, imgPerS: NaN, accuracy: 1 }]),
    RangeError,
    "points[0].imgPerS",
  );
});
