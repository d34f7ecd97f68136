// Whole-slide image tests. They build their own pyramidal tiled TIFFs with sharp (drawn "tissue", a hole,
// a speck) and an ASAP XML annotation. Tests that need libopenslide are skipped, with the reason printed,
// when it is absent (Debian: apt-get install -y libopenslide0).
import { join } from "node:path";
import sharp from "../lib/wsi/_sharp.ts";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../lib/backend/mod.ts";
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import {
  argbToRgb,
  argbToRgba,
  bestLevelForDownsample,
  closing,
  connectedComponents,
  decodeCoords,
  encodeCoords,
  extractPatches,
  extractPatchesMany,
  inferSlide,
  isTumour,
  loadPatchDataset,
  mapConcurrent,
  medianBlur,
  mppFromProperties,
  openslideAvailable,
  openslideUnavailableReason,
  otsuThreshold,
  parseAsapXml,
  patchGrid,
  patchLabels,
  patchPngName,
  rasterizeAnnotations,
  readCoordsFile,
  readPatch,
  resizeArea,
  segmentTissue,
  segmentTissueImage,
  Slide,
  syntheticColorAt,
  tissueParams,
  toAsapXml,
  withSlide,
  writeSyntheticSlide,
} from "../lib/wsi/mod.ts";

const HAVE_OPENSLIDE = openslideAvailable();
if (!HAVE_OPENSLIDE) {
  console.warn(`wsi_test: OpenSlide tests SKIPPED: ${openslideUnavailableReason()}`);
}

// ---------- synthetic slide ----------
const W = 2048, H = 1536;
const BG = [245, 243, 240] as const;
/** Ground truth: 1 inside drawn tissue (small hole counts as tissue, big hole does not), 0 elsewhere. */
function tissueAt(x: number, y: number): number {
  const ex = (x - 600) / 400, ey = (y - 700) / 450;
  if (ex * ex + ey * ey <= 1 && Math.hypot(x - 600, y - 700) > 120) return 1;
  if (x >= 1300 && x < 1900 && y >= 300 && y < 1200) return 1;
  return 0;
}
function makePixels(): Uint8Array {
  const px = new Uint8Array(W * H * 3);
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 16) / 65536;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 3;
      const n = Math.floor(rnd() * 16) - 8;
      let c: readonly number[] = BG;
      const ex = (x - 600) / 400, ey = (y - 700) / 450;
      const inSmallHole = Math.hypot(x - 900, y - 700) < 20;
      if (ex * ex + ey * ey <= 1 && Math.hypot(x - 600, y - 700) > 120 && !inSmallHole) c = [200, 120, 170];
      if (x >= 1300 && x < 1900 && y >= 300 && y < 1200) c = [150, 90, 180];
      if (x >= 1800 && x < 1806 && y >= 1400 && y < 1406) c = [200, 100, 160]; // speck, filtered out
      const bgPix = c === BG;
      px[i] = bgPix ? c[0] : c[0] + n;
      px[i + 1] = bgPix ? c[1] : c[1] + n;
      px[i + 2] = bgPix ? c[2] : c[2] + n;
    }
  }
  return px;
}

const TUMOUR = [1400, 400, 1800, 400, 1800, 800, 1400, 800];
const EXCLUSION = [1480, 420, 1700, 420, 1700, 700, 1480, 700];
const XML = toAsapXml([
  { name: "Annotation 0", group: "_0", points: TUMOUR },
  { name: "Annotation 1", group: "_2", points: EXCLUSION },
  { name: "Annotation 2", group: "Notes", points: [0, 0, 10, 0, 10, 10] },
]);

interface Fixture {
  dir: string;
  pixels: Uint8Array;
  pyramid: string;
  flat: string;
  junk: string;
  xml: string;
}
let fixture: Promise<Fixture> | undefined;
function getFixture(): Promise<Fixture> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "wsi_test_" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const pixels = makePixels();
    const raw = { raw: { width: W, height: H, channels: 3 as const } };
    const pyramid = join(dir, "slide_a.tif"), flat = join(dir, "slide_flat.tif");
    await sharp(pixels, raw).tiff({
      tile: true,
      pyramid: true,
      tileWidth: 256,
      tileHeight: 256,
      compression: "deflate",
      xres: 4000,
      yres: 4000,
      resolutionUnit: "cm",
    }).toFile(pyramid);
    await sharp(pixels, raw).tiff({
      tile: true,
      pyramid: false,
      tileWidth: 256,
      tileHeight: 256,
      compression: "deflate",
    })
      .toFile(flat);
    const junk = join(dir, "not_a_slide.tif");
    await Deno.writeTextFile(junk, "this is not a TIFF\n");
    const xml = join(dir, "slide_a.xml");
    await Deno.writeTextFile(xml, XML);
    return { dir, pixels, pyramid, flat, junk, xml };
  })();
  return fixture;
}

function slideTest(name: string, fn: (f: Fixture) => Promise<void> | void) {
  Deno.test({
    name,
    ignore: !HAVE_OPENSLIDE,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => fn(await getFixture()),
  });
}

// ---------- pure functions ----------
Deno.test("bestLevelForDownsample() follows OpenSlide's rule (largest level not finer than asked)", () => {
  const ds = [1, 4, 16, 64.5];
  assertEquals(bestLevelForDownsample(ds, 0.5), 0);
  assertEquals(bestLevelForDownsample(ds, 1), 0);
  assertEquals(bestLevelForDownsample(ds, 3.99), 0);
  assertEquals(bestLevelForDownsample(ds, 4), 1);
  assertEquals(bestLevelForDownsample(ds, 64), 2);
  assertEquals(bestLevelForDownsample(ds, 1000), 3);
  assertThrows(() => bestLevelForDownsample(ds, -2), Error, "-2");
});

Deno.test("argbToRgb() un-premultiplies and composites transparency onto the background, never black", () => {
  const le = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  assert(le, "test assumes a little-endian machine");
  // transparent, opaque red, half-transparent premultiplied green (0x80 alpha, 0x80 green = full green)
  const argb = new Uint32Array([0x00000000, 0xffff0000, 0x80008000]);
  assertEquals(Array.from(argbToRgb(argb, [10, 20, 30])), [10, 20, 30, 255, 0, 0, 5, 138, 15]);
  assertEquals(Array.from(argbToRgb(argb)).slice(0, 3), [255, 255, 255]);
  assertEquals(Array.from(argbToRgba(argb)), [0, 0, 0, 0, 255, 0, 0, 255, 0, 255, 0, 128]);
});

Deno.test("mppFromProperties() prefers openslide.mpp and falls back to the TIFF resolution", () => {
  assertEquals(mppFromProperties({ "openslide.mpp-x": "0.25", "openslide.mpp-y": "0.26" }), {
    x: 0.25,
    y: 0.26,
    source: "openslide",
  });
  const cm = mppFromProperties({
    "tiff.XResolution": "40000",
    "tiff.YResolution": "40000",
    "tiff.ResolutionUnit": "centimeter",
  });
  assertEquals(cm, { x: 0.25, y: 0.25, source: "tiff" });
  assertAlmostEquals(
    mppFromProperties({ "tiff.XResolution": "101600", "tiff.ResolutionUnit": "inch" })!.x,
    0.25,
  );
  assertEquals(mppFromProperties({ "tiff.XResolution": "5" }), undefined);
});

Deno.test("medianBlur() equals a brute-force median with replicated edges", () => {
  const w = 23, h = 17;
  let s = 7;
  const src = Uint8Array.from({ length: w * h }, () => ((s = (s * 1664525 + 1013904223) >>> 0) >>> 24));
  for (const k of [3, 5]) {
    const got = medianBlur(src, w, h, k);
    const r = k >> 1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const win: number[] = [];
        for (let dy = -r; dy <= r; dy++) {
          for (let dx = -r; dx <= r; dx++) {
            const xx = Math.min(w - 1, Math.max(0, x + dx)), yy = Math.min(h - 1, Math.max(0, y + dy));
            win.push(src[yy * w + xx]);
          }
        }
        win.sort((a, b) => a - b);
        assertEquals(got[y * w + x], win[(k * k) >> 1], `k=${k} at (${x}, ${y})`);
      }
    }
  }
  assertThrows(() => medianBlur(src, w, h, 4), Error, "odd");
});

Deno.test("otsuThreshold() separates two modes; closing() bridges a gap; components count islands", () => {
  const v = new Uint8Array(100);
  v.fill(20, 0, 60);
  v.fill(180, 60);
  const t = otsuThreshold(v);
  assert(t >= 20 && t < 180, `otsu ${t}`);
  // two blocks separated by a 2-px gap: closing with k=3 joins them
  const w = 12, h = 5, m = new Uint8Array(w * h);
  for (let y = 1; y < 4; y++) for (const x of [1, 2, 3, 4, 7, 8, 9, 10]) m[y * w + x] = 1;
  assertEquals(connectedComponents(m, w, h).count, 2);
  const c = closing(m, w, h, 3);
  assertEquals(connectedComponents(c, w, h).count, 1);
  for (let i = 0; i < m.length; i++) if (m[i]) assertEquals(c[i], 1, "closing keeps every foreground pixel");
});

Deno.test("segmentTissueImage() keeps big holes, fills small ones and drops specks", () => {
  const w = 64, h = 64, data = new Uint8Array(w * h * 3).fill(250);
  const paint = (x: number, y: number, c: number[]) => data.set(c, (y * w + x) * 3);
  for (let y = 8; y < 56; y++) for (let x = 8; x < 56; x++) paint(x, y, [200, 100, 150]);
  for (let y = 20; y < 36; y++) for (let x = 20; x < 36; x++) paint(x, y, [250, 250, 250]); // big hole
  for (let y = 44; y < 46; y++) for (let x = 44; x < 46; x++) paint(x, y, [250, 250, 250]); // tiny hole
  paint(2, 60, [200, 100, 150]); // speck
  const p = tissueParams("small", {
    medianKernel: 1,
    closeKernel: 0,
    refPatchSize: 8,
    minTissueArea: 2,
    minHoleArea: 1,
  });
  const m = segmentTissueImage({ width: w, height: h, channels: 3, data }, [1, 1], p);
  assertEquals(m.components, 1);
  assertEquals(m.holes, 1);
  assertEquals(m.data[28 * w + 28], 0, "big hole stays a hole");
  assertEquals(m.data[44 * w + 44], 1, "tiny hole filled");
  assertEquals(m.data[60 * w + 2], 0, "speck dropped");
  assertEquals(m.data.reduce((a, b) => a + b, 0), 48 * 48 - 16 * 16);
  assertThrows(() => tissueParams("nope" as "small"), Error, '"nope"');
});

Deno.test("encodeCoords()/decodeCoords() round-trip and reject a truncated file", () => {
  const c = {
    slideId: "s1",
    level: 1,
    patchSize: 224,
    stride: 112,
    downsample: 2,
    slideSize: [1000, 800] as const,
    x: Int32Array.from([0, 224, 3_000_000]),
    y: Int32Array.from([5, 6, 7]),
    tissue: Float32Array.from([0.5, 1, 0.75]),
    labels: Uint8Array.from([0, 1, 0]),
    meta: { note: "x" },
  };
  const bytes = encodeCoords(c);
  assertEquals(bytes.length < 200 + 3 * 13, true, `compact: ${bytes.length} bytes`);
  const d = decodeCoords(bytes);
  assertEquals([d.slideId, d.level, d.patchSize, d.stride, d.downsample], ["s1", 1, 224, 112, 2]);
  assertEquals(Array.from(d.x), Array.from(c.x));
  assertEquals(Array.from(d.y), Array.from(c.y));
  assertEquals(Array.from(d.tissue!), Array.from(c.tissue));
  assertEquals(Array.from(d.labels!), [0, 1, 0]);
  assertThrows(() => decodeCoords(bytes.subarray(0, bytes.length - 1), "cut.coords"), Error, "cut.coords");
  assertThrows(() => decodeCoords(new TextEncoder().encode("hello world, not coords")), Error, "WSICOORD");
});

Deno.test("parseAsapXml() splits tumour and exclusion groups; rasterizeAnnotations() subtracts exclusions", () => {
  const ann = parseAsapXml(XML);
  assertEquals([ann.tumour.length, ann.exclusion.length, ann.other.length], [1, 1, 1]);
  assertEquals(ann.tumour[0].bbox, [1400, 400, 1800, 800]);
  assert(isTumour(ann, 1450, 450));
  assert(!isTumour(ann, 1600, 600), "inside the exclusion");
  assert(!isTumour(ann, 100, 100));
  const mask = rasterizeAnnotations(ann, W / 4, H / 4, 4);
  assertEquals(mask.reduce((a, b) => a + b, 0), 100 * 100 - 55 * 70);
  // comma decimals (some CAMELYON17 files) and shuffled Order
  const odd = parseAsapXml(
    `<ASAP_Annotations><Annotations><Annotation Name="a" PartOfGroup="metastases" Type="Polygon"><Coordinates>
     <Coordinate Order="2" X="10,5" Y="10"/><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="10,5" Y="0"/>
     </Coordinates></Annotation></Annotations></ASAP_Annotations>`,
  );
  assertEquals(Array.from(odd.tumour[0].points), [0, 0, 10.5, 0, 10.5, 10]);
  assertThrows(() => parseAsapXml("<foo/>", {}, "bad.xml"), Error, "bad.xml");
});

Deno.test("patchLabels() marks patches by tumour fraction against an independent point count", () => {
  const ann = parseAsapXml(XML);
  const xs: number[] = [], ys: number[] = [];
  for (let y = 256; y < 1024; y += 128) for (let x = 1280; x < 1920; x += 128) xs.push(x), ys.push(y);
  const labels = patchLabels(ann, xs, ys, 128, { samples: 16 });
  const inRect = (x: number, y: number, r: number[]) => x >= r[0] && x < r[2] && y >= r[1] && y < r[5];
  xs.forEach((x0, i) => {
    let hit = 0;
    for (let j = 0; j < 16; j++) {
      for (let k = 0; k < 16; k++) {
        const px = x0 + (k + 0.5) * 8, py = ys[i] + (j + 0.5) * 8;
        if (inRect(px, py, TUMOUR) && !inRect(px, py, EXCLUSION)) hit++;
      }
    }
    assertEquals(labels[i], hit / 256 >= 0.5 ? 1 : 0, `patch (${x0}, ${ys[i]})`);
  });
  assertEquals(labels.reduce((a, b) => a + b, 0) > 3, true);
  assert(labels.some((l) => l === 0));
});

Deno.test("mapConcurrent() keeps order and never exceeds the limit", async () => {
  let inFlight = 0, peak = 0;
  const out = await mapConcurrent([5, 1, 4, 2, 3], 2, async (v) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((r) => setTimeout(r, v));
    inFlight--;
    return v * 10;
  });
  assertEquals(out, [50, 10, 40, 20, 30]);
  assertEquals(peak, 2);
});

// ---------- with OpenSlide ----------
slideTest("Slide.open() reads levels, downsamples, vendor and MPP of a sharp pyramidal TIFF", async (f) => {
  await withSlide(f.pyramid, (s) => {
    assertEquals(s.vendor, "generic-tiff");
    assertEquals(s.levelCount, 4);
    assertEquals(s.levelDimensions, [[2048, 1536], [1024, 768], [512, 384], [256, 192]]);
    assertEquals(s.levelDownsamples, [1, 2, 4, 8]);
    const mpp = s.mpp!;
    assertAlmostEquals(mpp.x, 0.25, 1e-6);
    assertEquals(mpp.source, "tiff");
    assertEquals(s.backgroundColor, [255, 255, 255]);
    for (const d of [0.5, 1, 1.9, 2, 3, 4, 7.99, 8, 50]) {
      assertEquals(s.bestLevelForDownsample(d), s.openslideBestLevel(d), `downsample ${d}`);
    }
  });
});

slideTest("Slide.readRegion() returns the source pixels at level 0 and the background outside", async (f) => {
  await withSlide(f.pyramid, async (s) => {
    for (
      const [x, y, w, h] of [[0, 0, 64, 32], [250, 250, 300, 20], [1500, 700, 17, 33], [2000, 1500, 48, 36]]
    ) {
      const r = s.readRegion(x, y, 0, w, h);
      assertEquals([r.width, r.height, r.channels], [w, h, 3]);
      for (let j = 0; j < h; j++) {
        for (let i = 0; i < w; i++) {
          for (let c = 0; c < 3; c++) {
            const want = f.pixels[((y + j) * W + x + i) * 3 + c];
            if (r.data[(j * w + i) * 3 + c] !== want) {
              throw new Error(
                `pixel (${x + i}, ${y + j}) channel ${c}: ${r.data[(j * w + i) * 3 + c]} != ${want}`,
              );
            }
          }
        }
      }
    }
    // straddling the top-left corner: outside is white (background), never black
    const pad = s.readRegion(-8, -8, 0, 16, 16);
    assertEquals(Array.from(pad.data.subarray(0, 3)), [255, 255, 255]);
    assertEquals(
      Array.from(pad.data.subarray((8 * 16 + 8) * 3, (8 * 16 + 8) * 3 + 3)),
      Array.from(f.pixels.subarray(0, 3)),
    );
    const rgba = s.readRegion(-8, -8, 0, 16, 16, { alpha: true });
    assertEquals(rgba.data[3], 0);
    assertEquals(rgba.data[(8 * 16 + 8) * 4 + 3], 255);
    const custom = s.readRegion(W, H, 0, 4, 4, { background: [1, 2, 3] });
    assertEquals(Array.from(custom.data.subarray(0, 3)), [1, 2, 3]);
    // level 2: (x, y) are level-0 coordinates; pixel ~ mean of the 4x4 block (lossy resampling by libvips)
    const lv = await s.readRegionAsync(1400, 400, 2, 8, 8);
    for (let c = 0; c < 3; c++) {
      assert(Math.abs(lv.data[c] - [150, 90, 180][c]) <= 6, `level-2 colour ${lv.data[c]}`);
    }
    assertThrows(() => s.readRegion(0, 0, 9, 4, 4), Error, "level must be in [0, 3], got 9");
    assertThrows(() => s.readRegion(0.5, 0, 0, 4, 4), Error, "0.5");
  });
});

slideTest("Slide.open() gives a clear error for a non-slide file, a missing file and a closed slide", (f) => {
  assertThrows(() => Slide.open(f.junk), Error, "is not a slide OpenSlide can read");
  assertThrows(() => Slide.open(join(f.dir, "missing.svs")), Error, "cannot read");
  assertThrows(() => Slide.open(f.dir), Error, "is not a file");
  const s = Slide.open(f.pyramid);
  s.close();
  s.close();
  assertThrows(() => s.readRegion(0, 0, 0, 4, 4), Error, "is closed");
});

slideTest("segmentTissue() finds the drawn tissue, its hole and drops the speck", async (f) => {
  await withSlide(f.pyramid, (s) => {
    const m = segmentTissue(s, "small");
    assertEquals(m.level, 2);
    assertEquals([m.width, m.height, m.scale[0], m.scale[1]], [512, 384, 4, 4]);
    assertEquals(m.components, 2);
    assertEquals(m.holes, 1);
    let agree = 0;
    for (let y = 0; y < m.height; y++) {
      for (let x = 0; x < m.width; x++) {
        if (m.data[y * m.width + x] === tissueAt(x * 4 + 2, y * 4 + 2)) agree++;
      }
    }
    assert(
      agree / (m.width * m.height) > 0.99,
      `mask agrees with the drawing on ${agree / (m.width * m.height)}`,
    );
    assertEquals(m.data[Math.floor(1403 / 4) * m.width + Math.floor(1803 / 4)], 0, "speck");
    const o = segmentTissue(s, "small", { otsu: true });
    assert(o.threshold > 10, `otsu threshold ${o.threshold}`);
    assert(Math.abs(o.tissueFraction - m.tissueFraction) < 0.01);
  });
});

slideTest(
  "segmentTissue() on a single-level slide reads tiles and box-downsamples to the same mask",
  async (f) => {
    const a = await withSlide(f.pyramid, (s) => segmentTissue(s, "small"));
    const b = await withSlide(f.flat, (s) => {
      assertEquals(s.levelCount, 1);
      return segmentTissue(s, "small");
    });
    assertEquals([b.level, b.width, b.height], [0, 512, 384]);
    let diff = 0;
    for (let i = 0; i < a.data.length; i++) diff += a.data[i] !== b.data[i] ? 1 : 0;
    assert(diff / a.data.length < 0.01, `masks differ on ${diff} pixels`);
  },
);

slideTest("patchGrid() keeps the patches with enough tissue (checked against the drawing)", async (f) => {
  await withSlide(f.pyramid, (s) => {
    const m = segmentTissue(s, "small");
    const c = patchGrid(m, s.levelDownsamples, { level: 0, patchSize: 128, minTissue: 0.5 }, "a");
    let expected = 0, mismatched = 0;
    const kept = new Set(Array.from(c.x, (x, i) => `${x},${c.y[i]}`));
    for (let y = 0; y + 128 <= H; y += 128) {
      for (let x = 0; x + 128 <= W; x += 128) {
        let t = 0;
        for (let j = 0; j < 16; j++) for (let i = 0; i < 16; i++) t += tissueAt(x + i * 8 + 4, y + j * 8 + 4);
        const want = t / 256 >= 0.5;
        if (want) expected++;
        if (want !== kept.has(`${x},${y}`) && Math.abs(t / 256 - 0.5) > 0.1) mismatched++;
      }
    }
    assertEquals(mismatched, 0);
    assert(Math.abs(c.x.length - expected) <= 4, `kept ${c.x.length}, drawing says ${expected}`);
    const l1 = patchGrid(m, s.levelDownsamples, { level: 1, patchSize: 64, stride: 32, minTissue: 0.5 });
    assertEquals(l1.downsample, 2);
    assert(l1.x.length > 3 * c.x.length, "half stride at level 1 gives ~4x the patches");
    assertThrows(() => patchGrid(m, s.levelDownsamples, { level: 7 }), Error, "got 7");
  });
});

slideTest(
  "extractPatches() writes coords, labels and PNGs, resumes, and extractPatchesMany() isolates failures",
  async (f) => {
    const outDir = join(f.dir, "out");
    const opts = { outDir, patchSize: 128, level: 0, tissue: "small" as const, progress: false };
    const r = await extractPatches(f.pyramid, { ...opts, savePatches: true, annotations: f.xml });
    assertEquals(r.resumed, false);
    assertEquals(r.patchesWritten, r.count);
    const c = await readCoordsFile(r.coordsPath);
    assertEquals(c.slideId, "slide_a");
    assertEquals(c.x.length, r.count);
    assert(c.labels!.reduce((a, b) => a + b, 0) >= 4, "some tumour patches");
    const png = await sharp(join(outDir, "slide_a", patchPngName(c.x[0], c.y[0], 0, 128))).raw().toBuffer({
      resolveWithObject: true,
    });
    assertEquals([png.info.width, png.info.height], [128, 128]);
    assertEquals(png.data[0], f.pixels[(c.y[0] * W + c.x[0]) * 3]);
    // second run: same settings → resumed, nothing rewritten; different size → redone
    const again = await extractPatches(f.pyramid, { ...opts, savePatches: true, annotations: f.xml });
    assertEquals([again.resumed, again.count], [true, r.count]);
    // interrupted run (no coords file yet, one PNG missing): redone, keeping the PNGs already written
    await Deno.remove(r.coordsPath);
    await Deno.remove(join(outDir, "slide_a", patchPngName(c.x[1], c.y[1], 0, 128)));
    const redo = await extractPatches(f.pyramid, { ...opts, savePatches: true, annotations: f.xml });
    assertEquals([redo.resumed, redo.count, redo.patchesWritten], [false, r.count, 1]);
    assertEquals(Array.from((await readCoordsFile(r.coordsPath)).x), Array.from(c.x));
    const many = await extractPatchesMany([f.pyramid, f.junk, { path: f.flat, slideId: "flat" }], {
      ...opts,
      patchSize: 256,
    }, 2);
    assertEquals(many.done.length, 2);
    assertEquals(many.failed.length, 1);
    assert(many.failed[0].error.includes("not a slide"), many.failed[0].error);
    for (const d of many.done) assertEquals(d.resumed, false);
    await assertRejects(() => readCoordsFile(join(outDir, "nope.coords")), Error, "nope.coords");
  },
);

async function pngPixels(path: string) {
  const r = await sharp(path).raw().toBuffer({ resolveWithObject: true });
  return { width: r.info.width, height: r.info.height, data: new Uint8Array(r.data) };
}

slideTest("extractPatches() redoes a coordinates-only export when PNGs are asked for", async (f) => {
  const outDir = join(f.dir, "stale_png");
  const opts = { outDir, patchSize: 256, tissue: "small" as const, progress: false };
  const a = await extractPatches(f.pyramid, opts);
  assertEquals(a.patchesWritten, 0);
  const b = await extractPatches(f.pyramid, { ...opts, savePatches: true });
  assertEquals([b.resumed, b.patchesWritten], [false, a.count]);
  const c = await extractPatches(f.pyramid, { ...opts, savePatches: true });
  assertEquals([c.resumed, c.patchesWritten], [true, 0]);
});

slideTest("extractPatches() never reuses PNGs of another patch size or level", async (f) => {
  const outDir = join(f.dir, "stale_size");
  const opts = { outDir, tissue: "small" as const, progress: false, savePatches: true };
  await extractPatches(f.pyramid, { ...opts, patchSize: 128 });
  const big = await extractPatches(f.pyramid, { ...opts, patchSize: 256, overwrite: true });
  assertEquals(big.patchesWritten, big.count, "every 256-px PNG written, none taken from the 128-px run");
  for (let i = 0; i < big.count; i++) {
    const p = await pngPixels(
      join(outDir, "slide_a", patchPngName(big.coords.x[i], big.coords.y[i], 0, 256)),
    );
    assertEquals([p.width, p.height], [256, 256]);
  }
  // level 1, 128 px: same level-0 corners as level-0 patches of 256 px, but another file with level-1 pixels
  const l1 = await extractPatches(f.pyramid, { ...opts, patchSize: 128, level: 1 });
  assertEquals([l1.resumed, l1.patchesWritten], [false, l1.count]);
  await withSlide(f.pyramid, async (s) => {
    const i = 0, x = l1.coords.x[i], y = l1.coords.y[i];
    const p = await pngPixels(join(outDir, "slide_a", patchPngName(x, y, 1, 128)));
    assertEquals(p.data, s.readRegion(x, y, 1, 128, 128).data);
  });
});

slideTest("extractPatches() with overwrite rewrites every PNG, even one of the same name", async (f) => {
  const outDir = join(f.dir, "overwrite");
  const opts = { outDir, patchSize: 256, tissue: "small" as const, progress: false, savePatches: true };
  const a = await extractPatches(f.pyramid, opts);
  const file = join(outDir, "slide_a", patchPngName(a.coords.x[0], a.coords.y[0], 0, 256));
  await Deno.writeTextFile(file, "not a png");
  const b = await extractPatches(f.pyramid, { ...opts, overwrite: true });
  assertEquals([b.resumed, b.patchesWritten], [false, a.count]);
  assertEquals((await pngPixels(file)).width, 256);
});

slideTest("extractPatches() re-labels when the annotation file's content changes", async (f) => {
  const outDir = join(f.dir, "stale_xml");
  const xml = join(f.dir, "changing.xml");
  await Deno.writeTextFile(xml, XML);
  const opts = { outDir, patchSize: 128, tissue: "small" as const, progress: false, annotations: xml };
  const a = await extractPatches(f.pyramid, opts);
  const tumourA = a.coords.labels!.reduce((s, v) => s + v, 0);
  assert(tumourA > 0, "some tumour patches");
  await Deno.writeTextFile(xml, toAsapXml([{ name: "none", group: "Notes", points: [0, 0, 10, 0, 10, 10] }]));
  const b = await extractPatches(f.pyramid, opts);
  assertEquals(b.resumed, false);
  assertEquals(b.coords.labels!.reduce((s, v) => s + v, 0), 0);
  const onDisk = await readCoordsFile(b.coordsPath);
  assertEquals(onDisk.labels!.reduce((s, v) => s + v, 0), 0);
});

slideTest("extractPatches() redoes a slide whose tissue preset or file changed", async (f) => {
  const outDir = join(f.dir, "stale_preset");
  const slide = join(f.dir, "copy_of_a.tif");
  await Deno.copyFile(f.pyramid, slide);
  const opts = { outDir, patchSize: 256, progress: false };
  const a = await extractPatches(slide, { ...opts, tissue: "small" });
  const b = await extractPatches(slide, { ...opts, tissue: "small", tissueOverrides: { otsu: true } });
  assertEquals(b.resumed, false);
  assertEquals((await readCoordsFile(b.coordsPath)).meta?.settings, {
    ...(a.coords.meta?.settings as object),
    tissueParams: { ...tissueParams("small"), otsu: true },
  });
  assertEquals((await extractPatches(slide, { ...opts, tissue: "small" })).resumed, false);
  assertEquals((await extractPatches(slide, { ...opts, tissue: "small" })).resumed, true);
  await Deno.copyFile(f.flat, slide); // same name, another file
  assertEquals((await extractPatches(slide, { ...opts, tissue: "small" })).resumed, false);
});

Deno.test("resizeArea() averages exact areas for any ratio", () => {
  const img = {
    width: 4,
    height: 2,
    channels: 1 as const,
    data: Uint8Array.from([0, 100, 200, 40, 10, 110, 210, 50]),
  };
  assertEquals(Array.from(resizeArea(img, 2, 1).data), [55, 125]);
  assertEquals(Array.from(resizeArea(img, 3, 1).data), [30, 155, 85]);
});

slideTest("readPatch() reads a downsampled view from a coarser level", async (f) => {
  await withSlide(f.pyramid, async (s) => {
    const p = await readPatch(s, 1400, 400, 256, 32); // ds 8 -> level 3
    assertEquals([p.width, p.height, p.channels], [32, 32, 3]);
    assert(
      Math.abs(p.data[0] - 150) <= 8 && Math.abs(p.data[2] - 180) <= 8,
      `colour ${p.data.subarray(0, 3)}`,
    );
  });
});

slideTest("loadPatchDataset() feeds slide patches through the common Dataset interface", async (f) => {
  await initBackend("cpu", { log: false });
  const outDir = join(f.dir, "ds");
  const r = await extractPatches(f.pyramid, {
    outDir,
    patchSize: 128,
    tissue: "small",
    progress: false,
    annotations: f.xml,
  });
  const ds = await loadPatchDataset([{ slidePath: f.pyramid, coords: r.coordsPath }], {
    imageSize: 32,
    progress: false,
  });
  assertEquals([ds.size, ...ds.imageShape], [r.count, 32, 32, 3]);
  assertEquals(ds.classes, ["normal", "tumour"]);
  assertEquals(ds.classCounts()[1], r.coords.labels!.reduce((a, b) => a + b, 0));
  const before = tf.memory().numTensors;
  const b = ds.getBatch([0, 1, 2]);
  assertEquals(b.x.shape, [3, 32, 32, 3]);
  assertEquals([b.x.dtype, b.y.dtype], ["float32", "int32"]);
  b.x.dispose();
  b.y.dispose();
  assertEquals(tf.memory().numTensors, before);
  const sub = await loadPatchDataset([{ slidePath: f.pyramid, coords: r.coords }], {
    imageSize: 16,
    maxPerSlide: 5,
    seed: 3,
    progress: false,
  });
  assertEquals(sub.size, 5);
});

slideTest("inferSlide() scores every patch, classifies only the top-k and paints heatmaps", async (f) => {
  await initBackend("cpu", { log: false });
  const s = Slide.open(f.pyramid);
  try {
    const mask = segmentTissue(s, "small");
    const coords = patchGrid(mask, s.levelDownsamples, { patchSize: 128 }, "a");
    const seen: number[] = [];
    const inRect = (i: number) =>
      coords.x[i] >= 1300 && coords.x[i] + 128 <= 1900 && coords.y[i] >= 300 && coords.y[i] + 128 <= 1200;
    const rectCount = Array.from(coords.x).filter((_, i) => inRect(i)).length;
    const before = tf.memory().numTensors;
    const r = await inferSlide(s, coords, {
      // purple rectangle (blue - green = 90) outranks pink ellipse (50); tensors are returned and disposed by inferSlide
      score: (x) =>
        tf.tidy(() =>
          tf.sub(x.slice([0, 0, 0, 2], [-1, -1, -1, 1]), x.slice([0, 0, 0, 1], [-1, -1, -1, 1])).mean([
            1,
            2,
            3,
          ])
        ),
      classify: (x) => {
        seen.push(x.shape[0]);
        assertEquals(x.shape.slice(1), [64, 64, 3]);
        return new Array(x.shape[0]).fill(0.75);
      },
    }, { lowSize: 16, highSize: 64, topK: 10, batchSize: 4 });
    assertEquals(tf.memory().numTensors, before);
    assert(rectCount >= 10);
    assertEquals(r.scores.length, coords.x.length);
    assertEquals(r.selected.length, 10);
    assertEquals(seen, [4, 4, 2]);
    for (const i of r.selected) {
      assert(inRect(i) || coords.x[i] >= 1280, `selected patch ${i} at (${coords.x[i]}, ${coords.y[i]})`);
    }
    assertAlmostEquals(r.slideScore, 0.75, 1e-6);
    assertEquals([r.scoreHeatmap.width, r.scoreHeatmap.height], [32, 24]);
    assert(Number.isNaN(r.scoreHeatmap.data[0]), "no patch in the corner");
    const hx = Math.floor(1600 / 64), hy = Math.floor(700 / 64);
    assert(r.scoreHeatmap.data[hy * 32 + hx] > 0.3, `rect score ${r.scoreHeatmap.data[hy * 32 + hx]}`);
    const painted = r.probHeatmap.data.filter((v) => v === 0.75).length;
    assertEquals(painted, 10 * 4);
    await assertRejects(
      () => inferSlide(s, coords, { score: () => [1], classify: () => [1] }),
      Error,
      "returned 1 values",
    );
  } finally {
    s.close();
  }
});

slideTest(
  "writeSyntheticSlide() writes a shared-tile pyramid OpenSlide reads, drawn exactly at small levels",
  async (f) => {
    const path = join(f.dir, "synthetic.tif");
    const shapes = [
      { kind: "ellipse" as const, cx: 3000, cy: 2000, rx: 2000, ry: 1500, color: [200, 120, 170] as const },
      { kind: "rect" as const, cx: 3000, cy: 2000, rx: 500, ry: 400, hole: true },
    ];
    const info = await writeSyntheticSlide(path, {
      width: 6000,
      height: 4000,
      shapes,
      exactPixels: 2_000_000,
      mpp: 0.5,
    });
    assertEquals(info.levels.length, 6);
    assert(info.uniqueTiles < info.totalTiles / 2, `${info.uniqueTiles} distinct of ${info.totalTiles}`);
    await withSlide(path, (s) => {
      assertEquals(s.levelDimensions.map((d) => d[0]), [6000, 3000, 1500, 750, 375, 188]);
      assertAlmostEquals(s.mpp!.x, 0.5, 1e-3);
      const hole = s.readRegion(3000, 2000, 0, 1, 1).data, bg = s.readRegion(10, 10, 0, 1, 1).data;
      assertEquals(Array.from(hole), Array.from(bg), "hole shows the background");
      assertEquals(syntheticColorAt(shapes, 3000, 2000), undefined);
      // level 3 (750 x 500) is drawn exactly: every pixel is tissue or background as the shapes say
      const l3 = s.readLevel(3);
      let wrong = 0;
      for (let y = 0; y < l3.height; y++) {
        for (let x = 0; x < l3.width; x++) {
          const tissue = syntheticColorAt(shapes, (x + 0.5) * 8, (y + 0.5) * 8) !== undefined;
          const sat = Math.max(...l3.data.subarray((y * l3.width + x) * 3, (y * l3.width + x) * 3 + 3)) -
            Math.min(...l3.data.subarray((y * l3.width + x) * 3, (y * l3.width + x) * 3 + 3));
          if (tissue !== sat > 20) wrong++;
        }
      }
      assertEquals(wrong, 0);
      const m = segmentTissue(s, "default", { minTissueArea: 1, minHoleArea: 1 });
      assertEquals([m.components, m.holes], [1, 1]);
    });
  },
);
