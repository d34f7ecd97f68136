import { assert, assertEquals, assertNotEquals, assertThrows } from "./_assert.ts";
import { join } from "node:path";
import {
  openslideAvailable,
  openslideUnavailableReason,
  parseAsapXml,
  patchGrid,
  rasterizeAnnotations,
  readAsapXml,
  readPatch,
  segmentTissue,
  Slide,
  SyntheticHeSlide,
  syntheticHeSpec,
  writeSyntheticHeTiff,
} from "../lib/wsi/mod.ts";

const HAVE_OPENSLIDE = openslideAvailable();
if (!HAVE_OPENSLIDE) {
  console.warn(`synthetic_he_test: OpenSlide tests SKIPPED: ${openslideUnavailableReason()}`);
}

const small = { width: 4096, height: 3072 };

Deno.test("SyntheticHeSlide renders the same pixels for the same seed, whatever region they are read in", () => {
  const a = SyntheticHeSlide.create(5, { ...small, tumour: true });
  const b = SyntheticHeSlide.create(5, { ...small, tumour: true });
  const t = a.spec.tumours[0];
  const x = Math.round(t.cx) - 64, y = Math.round(t.cy) - 64;
  const whole = a.readRegion(x, y, 0, 128, 128);
  assertEquals(b.readRegion(x, y, 0, 128, 128).data, whole.data);
  const part = b.readRegion(x + 32, y + 48, 0, 40, 30);
  for (let j = 0; j < 30; j++) {
    assertEquals(
      part.data.subarray(j * 40 * 3, (j + 1) * 40 * 3),
      whole.data.subarray(((48 + j) * 128 + 32) * 3, ((48 + j) * 128 + 72) * 3),
    );
  }
  const other = SyntheticHeSlide.create(6, { ...small, tumour: true });
  assertNotEquals(other.spec.stain, a.spec.stain);
});

Deno.test("syntheticHeSpec() gives normal slides no tumour and tumour slides the lesion sizes asked for", () => {
  assertEquals(syntheticHeSpec(1, { ...small, tumour: false }).tumours.length, 0);
  const s = syntheticHeSpec(1, {
    width: 12288,
    height: 9216,
    tumour: true,
    lesions: { itc: 2, micro: 1, macro: 1 },
  });
  assertEquals(s.tumours.map((t) => t.kind), ["macro", "micro", "itc", "itc"]);
  const um = s.tumours.map((t) => 2 * t.radius * s.mpp);
  assert(um[0] > 700 && um[1] > 200 && um[2] < 200 && um[3] < 200, `diameters ${um}`);
  assertThrows(() => syntheticHeSpec(1, { width: 10 }), Error, "got 10");
});

Deno.test("SyntheticHeSlide: the tumour mask rasterised from its ASAP XML matches the generator's tumour field", () => {
  const slide = SyntheticHeSlide.create(11, {
    width: 8192,
    height: 6144,
    tumour: true,
    lesions: { macro: 1 },
  });
  const ann = parseAsapXml(slide.toAsapXml());
  assertEquals(ann.tumour.length, slide.spec.tumours.length);
  const scale = 16, w = 8192 / scale, h = 6144 / scale;
  const fromXml = rasterizeAnnotations(ann, w, h, scale);
  let tumour = 0, differ = 0;
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      const t = slide.tumourAt((i + 0.5) * scale, (j + 0.5) * scale) ? 1 : 0;
      tumour += t;
      if (t !== fromXml[j * w + i]) differ++;
    }
  }
  assert(tumour > 1000, `only ${tumour} tumour pixels`);
  assertEquals(differ, 0);
});

Deno.test("SyntheticHeSlide: tumour regions carry more and darker haematoxylin than normal tissue", () => {
  const slide = SyntheticHeSlide.create(2, {
    width: 8192,
    height: 6144,
    tumour: true,
    lesions: { macro: 1 },
  });
  const t = slide.spec.tumours[0];
  const darkness = (x: number, y: number) => {
    const img = slide.readRegion(x, y, 2, 32, 32); // 128 level-0 px at 1 µm/px
    let s = 0;
    for (let i = 0; i < img.data.length; i += 3) s += img.data[i]; // red is absorbed by haematoxylin
    return 255 - s / (img.data.length / 3);
  };
  const inside = darkness(Math.round(t.cx) - 64, Math.round(t.cy) - 64);
  // a tissue point far from every lesion
  let outside = NaN;
  for (let k = 0; k < 200 && Number.isNaN(outside); k++) {
    const x = 512 + ((k * 997) % 7000), y = 512 + ((k * 613) % 5000);
    const far = slide.spec.tumours.every((u) => Math.hypot(x - u.cx, y - u.cy) > u.radius * 1.5 + 400);
    if (far && slide.tissueAt(x + 64, y + 64) && slide.tissueAt(x, y) && slide.tissueAt(x + 128, y + 128)) {
      outside = darkness(x, y);
    }
  }
  assert(inside > outside + 20, `tumour darkness ${inside} vs normal ${outside}`);
});

Deno.test("SyntheticHeSlide works as a slide for tissue segmentation, patch grids and readPatch", async () => {
  const slide = SyntheticHeSlide.create(4, { ...small, tumour: true });
  const mask = segmentTissue(slide, "biopsy");
  assert(mask.tissueFraction > 0.2 && mask.tissueFraction < 0.95, `tissue fraction ${mask.tissueFraction}`);
  const coords = patchGrid(mask, slide.levelDownsamples, { level: 2, patchSize: 32 }, "s4");
  assert(coords.x.length > 50);
  const p = await readPatch(slide, coords.x[0], coords.y[0], 128, 32);
  assertEquals([p.width, p.height, p.channels], [32, 32, 3]);
});

Deno.test({
  name: "writeSyntheticHeTiff() writes a pyramidal TIFF OpenSlide reads pixel for pixel, with its XML",
  ignore: !HAVE_OPENSLIDE,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "synthetic_he_test_" });
    try {
      const slide = SyntheticHeSlide.create(9, { ...small, tumour: true });
      const files = await writeSyntheticHeTiff(slide, join(dir, "tumor_009.tif"), {
        level: 1,
        compression: "deflate",
      });
      assertEquals(files.size, [2048, 1536]);
      using s = Slide.open(files.tiff);
      assertEquals(s.dimensions, [2048, 1536]);
      assert(s.levelCount >= 3, `levels ${s.levelCount}`);
      assert(Math.abs(s.mpp!.x - 0.5) < 1e-3, `mpp ${JSON.stringify(s.mpp)}`);
      assertEquals(s.readRegion(700, 300, 0, 64, 48).data, slide.readRegion(1400, 600, 1, 64, 48).data);
      const ann = await readAsapXml(files.xml);
      assertEquals(ann.tumour.length, slide.spec.tumours.length);
      assertEquals(ann.tumour[0].points[0], slide.spec.tumours[0].points[0] / 2);
      await assertRejects(() => writeSyntheticHeTiff(slide, join(dir, "x.png")), ".tif");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function assertRejects(fn: () => Promise<unknown>, text: string) {
  try {
    await fn();
  } catch (e) {
    assert((e as Error).message.includes(text), (e as Error).message);
    return;
  }
  throw new Error("expected a rejection");
}
