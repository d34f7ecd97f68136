// Whole-slide benchmarks: `deno bench -A --unstable-ffi tests/wsi_bench.ts`.
// - segmenting a 100k x 100k synthetic slide (shared-tile TIFF, 10 levels): only the ~1/64 level is decoded;
// - patch reads per second on a JPEG-compressed pyramidal TIFF written by sharp (realistic tile decoding);
// - PNG extraction per second (read + encode + atomic write).
// Per-patch numbers: divide the iteration time by PATCHES. Skipped (with the reason) without libopenslide.
import { join } from "node:path";
import sharp from "../lib/wsi/_sharp.ts";
import {
  extractPatches,
  openslideAvailable,
  openslideUnavailableReason,
  patchGrid,
  readPatch,
  segmentTissue,
  Slide,
  writeSyntheticSlide,
} from "../lib/wsi/mod.ts";

const ok = openslideAvailable();
if (!ok) console.warn(`wsi_bench: SKIPPED: ${openslideUnavailableReason()}`);
const PATCHES = 64;
const dir = await Deno.makeTempDir({ prefix: "wsi_bench_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

const big = join(dir, "synthetic_100k.tif");
const jpeg = join(dir, "jpeg_8k.tif");
if (ok) {
  const t0 = performance.now();
  const info = await writeSyntheticSlide(big, { width: 100_000, height: 100_000 });
  console.log(
    `synthetic 100k x 100k: ${info.levels.length} levels, ${info.totalTiles} tiles (${info.uniqueTiles} distinct), ` +
      `${(info.bytes / 1e6).toFixed(1)} MB, written in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const S = 8192, px = new Uint8Array(S * S * 3);
  let s = 1;
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const i = (y * S + x) * 3, dx = (x - S / 2) / (S * 0.4), dy = (y - S / 2) / (S * 0.35);
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      const n = (s >>> 26) - 32;
      if (dx * dx + dy * dy < 1) px.set([200 + n, 120 + n, 170 + n], i);
      else px.set([244, 242, 240], i);
    }
  }
  await sharp(px, { raw: { width: S, height: S, channels: 3 } })
    .tiff({ tile: true, pyramid: true, tileWidth: 256, tileHeight: 256, compression: "jpeg", quality: 85 })
    .toFile(jpeg);
}

function tissuePatches(path: string, n: number) {
  const slide = Slide.open(path);
  try {
    const mask = segmentTissue(slide, "default", { minTissueArea: 1 });
    const c = patchGrid(mask, slide.levelDownsamples, { patchSize: 256, minTissue: 0.9 });
    const step = Math.max(1, Math.floor(c.x.length / n));
    return Array.from({ length: n }, (_, k) => [c.x[(k * step) % c.x.length], c.y[(k * step) % c.x.length]]);
  } finally {
    slide.close();
  }
}
const jpegPatches = ok ? tissuePatches(jpeg, PATCHES) : [];

Deno.bench({
  name: "segmentTissue() 100k x 100k synthetic slide (open + default preset)",
  ignore: !ok,
  n: 3,
  warmup: 1,
  fn: () => {
    const slide = Slide.open(big);
    try {
      const m = segmentTissue(slide, "default");
      if (m.components < 1) throw new Error("no tissue found");
    } finally {
      slide.close();
    }
  },
});

Deno.bench({
  name: "patchGrid() 100k x 100k slide, 256 px level-0 patches (mask + grid)",
  ignore: !ok,
  n: 3,
  warmup: 1,
  fn: () => {
    const slide = Slide.open(big);
    try {
      const c = patchGrid(segmentTissue(slide, "default"), slide.levelDownsamples, { patchSize: 256 });
      if (c.x.length < 1000) throw new Error(`only ${c.x.length} patches`);
    } finally {
      slide.close();
    }
  },
});

Deno.bench({
  name: `readRegion() ${PATCHES} level-0 256 px patches, JPEG tiles (sync)`,
  ignore: !ok,
  n: 5,
  warmup: 1,
  fn: () => {
    const slide = Slide.open(jpeg); // fresh handle: OpenSlide's tile cache starts empty
    try {
      for (const [x, y] of jpegPatches) slide.readRegion(x, y, 0, 256, 256);
    } finally {
      slide.close();
    }
  },
});

Deno.bench({
  name: `readRegionAsync() ${PATCHES} level-0 256 px patches, JPEG tiles (4 in flight)`,
  ignore: !ok,
  n: 5,
  warmup: 1,
  fn: async () => {
    const slide = Slide.open(jpeg);
    try {
      for (let k = 0; k < jpegPatches.length; k += 4) {
        await Promise.all(
          jpegPatches.slice(k, k + 4).map(([x, y]) => slide.readRegionAsync(x, y, 0, 256, 256)),
        );
      }
    } finally {
      slide.close();
    }
  },
});

Deno.bench({
  name: `readPatch() ${PATCHES} patches of 1024 level-0 px seen at 32 px (CNN low-res view)`,
  ignore: !ok,
  n: 5,
  warmup: 1,
  fn: async () => {
    const slide = Slide.open(jpeg);
    try {
      for (const [x, y] of jpegPatches) await readPatch(slide, x, y, 1024, 32);
    } finally {
      slide.close();
    }
  },
});

Deno.bench({
  name: "extractPatches() JPEG 8k slide: mask + grid + coords file + every 256 px patch as PNG",
  ignore: !ok,
  n: 1,
  warmup: 0,
  fn: async () => {
    const out = await Deno.makeTempDir({ dir, prefix: "extract_" });
    const r = await extractPatches(jpeg, { outDir: out, patchSize: 256, savePatches: true, progress: false });
    console.log(
      `\n  extractPatches: ${r.count} patches in ${r.seconds.toFixed(2)} s = ${
        (r.count / r.seconds).toFixed(0)
      } patches/s`,
    );
  },
});
