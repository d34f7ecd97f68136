/**
 * Tests of lib/data: CIFAR-10 files written by the synthetic generator, Fashion-MNIST from the Debian
 * package, the synthetic set's masks, splits, batching, augmentation, and the downloader against a
 * local HTTP server (resume, checksum, corrupt and offline paths).
 */
import * as tf from "@tensorflow/tfjs-core";
import { gzipSync } from "node:zlib";
import { createHash } from "node:crypto";
import { join } from "node:path";
import * as tar from "tar";
import { assert, assertEquals, assertNotEquals, assertRejects, assertThrows } from "./_assert.ts";
import { assertNoLeak, forEachBackend } from "./_backends.ts";
import { initBackend } from "../lib/backend/mod.ts";
import {
  AUGMENT_CIFAR,
  AUGMENT_HISTOLOGY,
  augmentTensor,
  balancedSubset,
  CIFAR10_FILES,
  decodeCifarBinary,
  decodeIdx,
  downloadCifar10,
  downloadFashionMnist,
  downloadFile,
  encodeCifarBinary,
  encodeIdx,
  FASHION_MNIST_SYSTEM_DIR,
  fillBatch,
  generateSynthetic,
  InMemoryDataset,
  loadCifar10,
  loadDataset,
  loadFashionMnist,
  loadSynthetic,
  readCifarBinary,
  readIdx,
  stratifiedSplit,
  SYNTHETIC_SHAPES,
  writeCifar10Dir,
} from "../lib/data/mod.ts";
import { Rng } from "../lib/util/mod.ts";

const noSanitize = { sanitizeOps: false, sanitizeResources: false };

// ---------------------------------------------------------------- helpers

async function withTempDir<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "data_test_" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** Writes a small CIFAR-format folder from the synthetic generator; returns what was written. */
async function writeSyntheticCifar(dir: string, trainSize = 50, testSize = 20) {
  const train = generateSynthetic({ size: trainSize, seed: 11 });
  const test = generateSynthetic({ size: testSize, seed: 12 });
  await writeCifar10Dir(dir, { train, test, classes: train.classes });
  return { train, test };
}

/** Builds `cifar-10-binary.tar.gz` bytes holding `cifar-10-batches-bin/` of synthetic data. */
async function buildCifarArchive(): Promise<Uint8Array> {
  return await withTempDir(async (dir) => {
    await writeSyntheticCifar(join(dir, "cifar-10-batches-bin"), 50, 20);
    const file = join(dir, "a.tar.gz");
    await tar.c({ gzip: true, file, cwd: dir, portable: true }, ["cifar-10-batches-bin"]);
    return await Deno.readFile(file);
  });
}

type Mode = "ok" | "truncate" | "ignore-range" | "corrupt";

/** A local HTTP server for `body`, honouring Range, that can truncate, ignore Range or corrupt. */
function serve(body: Uint8Array) {
  const state = { mode: "ok" as Mode, requests: [] as { range: string | null }[] };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const range = req.headers.get("range");
    state.requests.push({ range });
    if (state.mode === "corrupt") {
      const bad = body.slice();
      bad[bad.length >> 1] ^= 0xff;
      return new Response(bad);
    }
    const m = range && state.mode !== "ignore-range" ? /^bytes=(\d+)-$/.exec(range) : null;
    const start = m ? Number(m[1]) : 0;
    if (start >= body.length && m) return new Response(null, { status: 416 });
    const rest = body.subarray(start);
    const headers: Record<string, string> = { "content-length": String(rest.length) };
    if (m) headers["content-range"] = `bytes ${start}-${body.length - 1}/${body.length}`;
    if (state.mode === "truncate") {
      const half = rest.subarray(0, rest.length >> 1);
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(half);
          setTimeout(() => c.close(), 20); // fewer bytes than content-length promised
        },
      });
      return new Response(stream, { status: m ? 206 : 200, headers });
    }
    return new Response(rest.slice(), { status: m ? 206 : 200, headers });
  });
  const url = `http://127.0.0.1:${server.addr.port}/cifar-10-binary.tar.gz`;
  return { state, url, close: () => server.shutdown() };
}

/** A URL on 127.0.0.1 where nothing listens. */
function deadUrl(): string {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return `http://127.0.0.1:${port}/cifar-10-binary.tar.gz`;
}

// ---------------------------------------------------------------- synthetic set

Deno.test("generateSynthetic() is deterministic for a seed and differs across seeds", () => {
  const a = generateSynthetic({ size: 40, seed: 3 });
  const b = generateSynthetic({ size: 40, seed: 3 });
  const c = generateSynthetic({ size: 40, seed: 4 });
  assertEquals(a.images, b.images);
  assertEquals(a.labels, b.labels);
  assertEquals(a.masks, b.masks);
  assertNotEquals(a.images, c.images);
  assertEquals(a.images.length, 40 * 32 * 32 * 3);
  assertEquals(a.masks.length, 40 * 64);
  // Balanced labels: 4 of each of 10 classes.
  const counts = new Array(10).fill(0);
  for (const l of a.labels) counts[l]++;
  assertEquals(counts, new Array(10).fill(4));
});

for (const aligned of [true, false]) {
  Deno.test(`generateSynthetic() masks are exactly the patches the object covers (aligned: ${aligned})`, () => {
    const d = generateSynthetic({ size: 60, seed: 5, noise: 0, clutter: 0, aligned });
    for (let n = 0; n < 60; n++) {
      const img = d.images.subarray(n * 3072, (n + 1) * 3072);
      // Without noise and clutter there are two colours; the background is the majority.
      const key = (p: number) => (img[3 * p] << 16) | (img[3 * p + 1] << 8) | img[3 * p + 2];
      const freq = new Map<number, number>();
      for (let p = 0; p < 1024; p++) freq.set(key(p), (freq.get(key(p)) ?? 0) + 1);
      const bg = [...freq.entries()].sort((x, y) => y[1] - x[1])[0][0];
      const mask = new Uint8Array(64);
      let objectPixels = 0;
      for (let p = 0; p < 1024; p++) {
        if (key(p) === bg) continue;
        objectPixels++;
        mask[Math.floor(Math.floor(p / 32) / 4) * 8 + Math.floor((p % 32) / 4)] = 1;
      }
      const shape = SYNTHETIC_SHAPES[d.labels[n]];
      assertEquals(objectPixels, shape.cells.length * 16, `image ${n}: object pixels`);
      assertEquals(d.masks.subarray(n * 64, (n + 1) * 64), mask, `image ${n}: mask`);
      if (aligned) assertEquals(mask.reduce((s, v) => s + v, 0), shape.cells.length);
    }
  });
}

Deno.test("generateSynthetic() masks agree with noisy, cluttered images", () => {
  const d = generateSynthetic({ size: 50, seed: 9 });
  let farPatches = 0, otherPatches = 0;
  for (let n = 0; n < 50; n++) {
    const img = d.images.subarray(n * 3072, (n + 1) * 3072);
    const m = d.masks.subarray(n * 64, (n + 1) * 64);
    const patchMean = (q: number) => {
      const r = Math.floor(q / 8) * 4, c = (q % 8) * 4;
      const s = [0, 0, 0];
      for (let y = 0; y < 4; y++) {
        for (let x = 0; x < 4; x++) {
          for (let k = 0; k < 3; k++) s[k] += img[((r + y) * 32 + c + x) * 3 + k] / 255 / 16;
        }
      }
      return s;
    };
    const inMask = [...m.keys()].filter((q) => m[q] === 1);
    assert(inMask.length >= 2 && inMask.length <= 5, `image ${n}: ${inMask.length} mask patches`);
    const fg = [0, 0, 0];
    for (const q of inMask) patchMean(q).forEach((v, k) => (fg[k] += v / inMask.length));
    const l1 = (a: number[]) => Math.abs(a[0] - fg[0]) + Math.abs(a[1] - fg[1]) + Math.abs(a[2] - fg[2]);
    for (const q of inMask) assert(l1(patchMean(q)) < 0.15, `image ${n}: object patch ${q} is not uniform`);
    for (let q = 0; q < 64; q++) {
      if (m[q]) continue;
      otherPatches++;
      if (l1(patchMean(q)) > 0.3) farPatches++;
    }
  }
  assert(
    farPatches / otherPatches > 0.9,
    `only ${farPatches}/${otherPatches} background patches differ from the object`,
  );
});

Deno.test("SYNTHETIC_SHAPES are distinct and symmetric under a horizontal flip", () => {
  const norm = (cells: readonly (readonly [number, number])[]) => {
    const r0 = Math.min(...cells.map((c) => c[0])), c0 = Math.min(...cells.map((c) => c[1]));
    return cells.map(([r, c]) => `${r - r0},${c - c0}`).sort().join(" ");
  };
  const seen = new Set<string>();
  for (const s of SYNTHETIC_SHAPES) {
    const w = Math.max(...s.cells.map((c) => c[1]));
    assertEquals(norm(s.cells.map(([r, c]) => [r, w - c] as const)), norm(s.cells), s.name);
    seen.add(norm(s.cells));
  }
  assertEquals(seen.size, SYNTHETIC_SHAPES.length);
});

// ---------------------------------------------------------------- CIFAR-10 files

Deno.test("loadCifar10() reads CIFAR-format files written from the synthetic set", async () => {
  await withTempDir(async (dir) => {
    const { train, test } = await writeSyntheticCifar(dir);
    const all = loadCifar10({ dir, split: "train", valFraction: 0 });
    assertEquals(all.images, train.images);
    assertEquals(all.labels, train.labels);
    assertEquals([...all.classes], train.classes);
    assertEquals(all.imageShape, [32, 32, 3]);
    const t = loadCifar10({ dir, split: "test" });
    assertEquals(t.images, test.images);
    assertEquals(t.size, 20);
    // Fixed, stratified, disjoint train/val split of the training files.
    const tr = loadCifar10({ dir, split: "train", valFraction: 0.2 });
    const va = loadCifar10({ dir, split: "val", valFraction: 0.2 });
    assertEquals(tr.size + va.size, 50);
    assertEquals(va.size, 10);
    assertEquals(loadCifar10({ dir, split: "val", valFraction: 0.2 }).images, va.images);
    // The folder may also be the parent of cifar-10-batches-bin.
    await Deno.rename(dir + "/test_batch.bin", dir + "/tb");
    await Deno.mkdir(join(dir, "cifar-10-batches-bin"));
    await Deno.rename(dir + "/tb", join(dir, "cifar-10-batches-bin", "test_batch.bin"));
    assertEquals(loadCifar10({ dir, split: "test" }).images, test.images);
  });
});

Deno.test("encodeCifarBinary() writes channel-major records that decodeCifarBinary() inverts", () => {
  const images = new Uint8Array(2 * 3072);
  images[3 * 5] = 10; // image 0, pixel 5, red
  images[3 * 5 + 1] = 20; // green
  images[3072 + 3 * 1023 + 2] = 30; // image 1, last pixel, blue
  const bytes = encodeCifarBinary(images, new Uint8Array([7, 2]));
  assertEquals(bytes.length, 2 * 3073);
  assertEquals([bytes[0], bytes[1 + 5], bytes[1025 + 5], bytes[3073], bytes[3073 + 2049 + 1023]], [
    7,
    10,
    20,
    2,
    30,
  ]);
  const back = decodeCifarBinary(bytes, "mem");
  assertEquals(back.images, images);
  assertEquals(back.labels, new Uint8Array([7, 2]));
});

Deno.test("readCifarBinary() rejects truncated, wrong-size and wrong-label files, naming file, expected and found", async () => {
  await withTempDir(async (dir) => {
    const good = encodeCifarBinary(new Uint8Array(3 * 3072), new Uint8Array([1, 2, 3]));
    const p = join(dir, "data_batch_1.bin");
    await Deno.writeFile(p, good.subarray(0, good.length - 100));
    const e = assertThrows(() => readCifarBinary(p), Error, p);
    assert(e.message.includes("3073") && e.message.includes(`found ${good.length - 100} bytes`), e.message);
    await Deno.writeFile(p, new Uint8Array(0));
    assertThrows(() => readCifarBinary(p), Error, "found 0 bytes");
    const bad = good.slice();
    bad[3073] = 200;
    await Deno.writeFile(p, bad);
    const e2 = assertThrows(() => readCifarBinary(p), Error, "record 1");
    assert(e2.message.includes("label 200") && e2.message.includes("expected 0..9"), e2.message);
    assertThrows(() => readCifarBinary(join(dir, "nope.bin")), Error, "not found");
  });
});

Deno.test("loadCifar10() names the missing file of a split and where to get the data", async () => {
  await withTempDir(async (dir) => {
    await writeSyntheticCifar(dir);
    await Deno.remove(join(dir, CIFAR10_FILES.train[3]));
    const e = assertThrows(() => loadCifar10({ dir, split: "train" }), Error, "data_batch_4.bin");
    assert(e.message.includes("missing") && e.message.includes("cifar-10-binary.tar.gz"), e.message);
    assertEquals(loadCifar10({ dir, split: "test" }).size, 20); // the other split still loads
    assertThrows(
      () => loadCifar10({ dir: join(dir, "empty") }),
      Error,
      "no data_batch_1.bin or test_batch.bin",
    );
    assertThrows(() => loadCifar10({ dir, split: "valid" as "val" }), Error, `unknown split "valid"`);
  });
});

// ---------------------------------------------------------------- IDX / Fashion-MNIST

Deno.test("decodeIdx() round-trips plain and gzip files and rejects bad magic, truncation and corrupt gzip", () => {
  const data = Uint8Array.from({ length: 2 * 28 * 28 }, (_, i) => i & 255);
  const raw = encodeIdx([2, 28, 28], data);
  assertEquals(decodeIdx(raw, "x", 3), { dims: [2, 28, 28], data });
  const gz = new Uint8Array(gzipSync(raw));
  assertEquals(decodeIdx(gz, "x.gz", 3).dims, [2, 28, 28]);
  const e = assertThrows(() => decodeIdx(raw, "labels.idx", 1), Error, "labels.idx");
  assert(
    e.message.includes("expected magic 0x00000801") && e.message.includes("found 0x00000803"),
    e.message,
  );
  const wrong = raw.slice();
  wrong[2] = 0x0d; // float data
  assertThrows(() => decodeIdx(wrong, "f.idx", 3), Error, "found 0x00000d03");
  const e2 = assertThrows(() => decodeIdx(raw.subarray(0, raw.length - 5), "t.idx", 3), Error, "t.idx");
  assert(e2.message.includes(`need ${raw.length} bytes`) && e2.message.includes("truncated"), e2.message);
  const e3 = assertThrows(() => decodeIdx(gz.subarray(0, gz.length >> 1), "c.gz"), Error, "c.gz");
  assert(e3.message.includes("gzip"), e3.message);
});

Deno.test("loadFashionMnist() pads to 32x32x3, splits, and reports a missing split", async () => {
  await withTempDir(async (dir) => {
    const n = 40;
    const imgs = Uint8Array.from({ length: n * 784 }, (_, i) => (i * 7) & 255);
    const labs = Uint8Array.from({ length: n }, (_, i) => i % 10);
    for (
      const [stem, bytes] of [
        ["t10k-images-idx3-ubyte.gz", encodeIdx([n, 28, 28], imgs)],
        ["t10k-labels-idx1-ubyte.gz", encodeIdx([n], labs)],
      ] as const
    ) await Deno.writeFile(join(dir, stem), gzipSync(bytes));
    const ds = loadFashionMnist({ dirs: [dir], split: "test" });
    assertEquals(ds.imageShape, [32, 32, 3]);
    assertEquals(ds.size, n);
    const at = (i: number, y: number, x: number, c: number) => ds.images[i * 3072 + (y * 32 + x) * 3 + c];
    assertEquals([at(3, 0, 0, 0), at(3, 31, 31, 2), at(3, 1, 10, 1)], [0, 0, 0]);
    assertEquals(
      [at(3, 2 + 5, 2 + 9, 0), at(3, 7, 11, 1), at(3, 7, 11, 2)],
      new Array(3).fill(imgs[3 * 784 + 5 * 28 + 9]),
    );
    const small = loadFashionMnist({ dirs: [dir], split: "test", rgb32: false });
    assertEquals(small.imageShape, [28, 28, 1]);
    assertEquals(small.images, imgs);
    const e = assertThrows(
      () => loadFashionMnist({ dirs: [dir], split: "train" }),
      Error,
      "train-images-idx3-ubyte",
    );
    assert(e.message.includes(dir), e.message);
  });
});

const hasFashion = (() => {
  try {
    return Deno.statSync(join(FASHION_MNIST_SYSTEM_DIR, "t10k-images-idx3-ubyte.gz")).isFile;
  } catch {
    return false;
  }
})();
if (!hasFashion) {
  console.warn(
    `data_test: SKIPPING the Debian Fashion-MNIST test: ${FASHION_MNIST_SYSTEM_DIR} is missing ` +
      `(apt-get install dataset-fashion-mnist)`,
  );
}
Deno.test({
  name: hasFashion
    ? "loadFashionMnist() reads the Debian dataset-fashion-mnist package"
    : `loadFashionMnist() reads the Debian package (SKIPPED: ${FASHION_MNIST_SYSTEM_DIR} not installed)`,
  ignore: !hasFashion,
  fn: () => {
    const ds = loadFashionMnist({ dirs: [FASHION_MNIST_SYSTEM_DIR], split: "test" });
    assertEquals(ds.size, 10000);
    assertEquals(ds.classCounts(), new Array(10).fill(1000));
    const raw = readIdx(join(FASHION_MNIST_SYSTEM_DIR, "t10k-images-idx3-ubyte.gz"), 3);
    assertEquals(raw.dims, [10000, 28, 28]);
    const i = 1234, y = 14, x = 9;
    assertEquals(ds.images[i * 3072 + ((y + 2) * 32 + x + 2) * 3 + 1], raw.data[i * 784 + y * 28 + x]);
    // Training-set mean of the padded images agrees with the published constant.
    let s = 0;
    for (let k = 0; k < ds.images.length; k += 3) s += ds.images[k];
    assert(
      Math.abs(s / (ds.images.length / 3) / 255 - ds.mean[0]) < 0.01,
      `mean ${s / (ds.images.length / 3) / 255}`,
    );
  },
});

// ---------------------------------------------------------------- splits and subsets

Deno.test("stratifiedSplit() is fixed by its seed, disjoint, complete and stratified", () => {
  const labels = Uint8Array.from({ length: 1000 }, (_, i) => i % 10);
  const a = stratifiedSplit(labels, 10, 0.1, 0);
  assertEquals(a, stratifiedSplit(labels, 10, 0.1, 0));
  assertNotEquals(a.val, stratifiedSplit(labels, 10, 0.1, 1).val);
  assertEquals(a.val.length, 100);
  assertEquals(new Set([...a.train, ...a.val]).size, 1000);
  for (let c = 0; c < 10; c++) assertEquals([...a.val].filter((i) => labels[i] === c).length, 10);
  assertThrows(() => stratifiedSplit(labels, 10, 1), Error, "valFraction must be in [0, 1), got 1");
});

Deno.test("balancedSubset() takes classes evenly and subset() carries masks along", () => {
  const labels = Uint8Array.from({ length: 300 }, (_, i) => (i < 200 ? 0 : i % 3));
  const idx = balancedSubset(labels, 3, 30, 1);
  const counts = [0, 0, 0];
  for (const i of idx) counts[labels[i]]++;
  assertEquals(counts, [10, 10, 10]);
  assertThrows(() => balancedSubset(labels, 3, 301), Error, "larger than the dataset");
  const ds = loadSynthetic({ split: "test", testSize: 100, seed: 2 });
  const sub = ds.subset(20, 4);
  assertEquals(sub.size, 20);
  assertEquals(sub.classCounts(), new Array(10).fill(2));
  const picked = balancedSubset(ds.labels, 10, 20, 4);
  assertEquals(sub.masksOf([5]), ds.masksOf([picked[5]]));
  assertEquals(
    sub.images.subarray(5 * 3072, 6 * 3072),
    ds.images.subarray(picked[5] * 3072, (picked[5] + 1) * 3072),
  );
});

// ---------------------------------------------------------------- batching

forEachBackend(
  "batches() yields identical batches for the same seed, every image once per epoch",
  async (t) => {
    const ds = loadSynthetic({ split: "test", testSize: 70, seed: 1 });
    const run = (seed: number, epoch = 0) => {
      const out: { x: Float32Array; y: Int32Array; idx: Int32Array }[] = [];
      for (const b of ds.batches({ batchSize: 32, shuffle: true, seed, epoch, augment: AUGMENT_CIFAR })) {
        assertEquals(b.x.shape, [b.indices.length, 32, 32, 3]);
        assertEquals(b.x.dtype, "float32");
        assertEquals(b.y.dtype, "int32");
        out.push({ x: b.x.dataSync() as Float32Array, y: b.y.dataSync() as Int32Array, idx: b.indices });
        b.x.dispose();
        b.y.dispose();
      }
      return out;
    };
    const a = await assertNoLeak("batches()", () => run(7));
    assertEquals(a.map((b) => b.idx.length), [32, 32, 6]);
    assertEquals(run(7), a);
    assertNotEquals(run(8).map((b) => b.idx), a.map((b) => b.idx));
    assertNotEquals(run(7, 1).map((b) => b.idx), a.map((b) => b.idx));
    const seen = a.flatMap((b) => [...b.idx]).sort((p, q) => p - q);
    assertEquals(seen, Array.from({ length: 70 }, (_, i) => i));
    for (const b of a) assertEquals(b.y, Int32Array.from(b.idx, (i) => ds.labels[i]));
    assertEquals(ds.numBatches(32, true), 2);
    assertEquals(
      [...ds.batches({ batchSize: 32, dropLast: true })].map((
        b,
      ) => (t.dispose([b.x, b.y]), b.indices.length)),
      [32, 32],
    );
  },
);

forEachBackend("getBatch() normalises with the dataset mean/std, or returns [0, 1] values", (t) => {
  const ds = loadSynthetic({ split: "test", testSize: 10, seed: 1 });
  const raw = ds.getBatch([3, 1], { normalize: false });
  const norm = ds.getBatch([3, 1]);
  const r = raw.x.dataSync(), z = norm.x.dataSync();
  for (const [b, i] of [[0, 3], [1, 1]]) {
    for (const p of [0, 1, 2, 500, 3071]) {
      const v = ds.images[i * 3072 + p] / 255;
      assert(Math.abs(r[b * 3072 + p] - v) < 1e-6);
      const c = p % 3;
      assert(Math.abs(z[b * 3072 + p] - (v - ds.mean[c]) / ds.std[c]) < 1e-5);
    }
  }
  t.dispose([raw.x, raw.y, norm.x, norm.y]);
  assertThrows(() => ds.getBatch([10]), Error, "index 10 at batch position 0 is outside 0..9");
  assertThrows(() => ds.numBatches(0), Error, "batchSize must be a positive integer, got 0");
});

Deno.test("InMemoryDataset rejects inconsistent arrays, naming what was expected", () => {
  const base = {
    name: "toy",
    classes: ["a", "b"],
    split: "train" as const,
    imageShape: [2, 2, 3] as const,
    mean: [0, 0, 0],
    std: [1, 1, 1],
    source: "test",
  };
  assertThrows(
    () => new InMemoryDataset({ ...base, images: new Uint8Array(13), labels: new Uint8Array(1) }),
    Error,
    "images has 13 bytes, expected a multiple of 2x2x3",
  );
  assertThrows(
    () => new InMemoryDataset({ ...base, images: new Uint8Array(24), labels: new Uint8Array([0, 5]) }),
    Error,
    "label 5 of image 1 is not in 0..1",
  );
  assertThrows(
    () => new InMemoryDataset({ ...base, images: new Uint8Array(24), labels: new Uint8Array(3) }),
    Error,
    "2 images but 3 labels",
  );
});

// ---------------------------------------------------------------- augmentation

/** One 4x4x1 image with distinct values, as bytes. */
const ramp = Uint8Array.from({ length: 16 }, (_, i) => i * 10 + 5);
const at4 = (a: ArrayLike<number>, y: number, x: number) => a[y * 4 + x];

function fill1(
  aug: Parameters<typeof fillBatch>[0]["augment"],
  seed: number,
  src = ramp,
  shape = [4, 4, 1] as const,
) {
  const out = new Float32Array(src.length);
  fillBatch({ src, srcScale: 1 / 255, shape, indices: [0], out, augment: aug, rng: new Rng(seed) });
  return Array.from(out, (v) => Math.round(v * 255));
}

Deno.test("fillBatch() flips and rotates exactly", () => {
  const h = fill1({ hflip: 1 }, 0), v = fill1({ vflip: 1 }, 0);
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 4; x++) {
      assertEquals(at4(h, y, x), at4(ramp, y, 3 - x));
      assertEquals(at4(v, y, x), at4(ramp, 3 - y, x));
    }
  }
  const rotations = [Array.from(ramp)];
  for (let k = 1; k < 4; k++) {
    const prev = rotations[k - 1];
    rotations.push(Array.from({ length: 16 }, (_, p) => at4(prev, p % 4, 3 - Math.floor(p / 4)))); // np.rot90
  }
  const seen = new Set<number>();
  for (let s = 0; s < 40; s++) {
    const r = fill1({ rot90: true }, s);
    const k = rotations.findIndex((q) => q.every((val, i) => val === r[i]));
    assert(k >= 0, `seed ${s}: not a rotation of the input: ${r}`);
    seen.add(k);
  }
  assertEquals(seen.size, 4);
});

Deno.test("fillBatch() random crop with padding is a shift with zero fill, within the padding", () => {
  const shifts = new Set<string>();
  for (let s = 0; s < 60; s++) {
    const r = fill1({ cropPadding: 1 }, s);
    let found = false;
    for (let dy = -1; dy <= 1 && !found; dy++) {
      for (let dx = -1; dx <= 1 && !found; dx++) {
        let ok = true;
        for (let y = 0; y < 4; y++) {
          for (let x = 0; x < 4; x++) {
            const sy = y + dy, sx = x + dx;
            const want = sy < 0 || sy > 3 || sx < 0 || sx > 3 ? 0 : at4(ramp, sy, sx);
            if (at4(r, y, x) !== want) ok = false;
          }
        }
        if (ok) {
          found = true;
          shifts.add(`${dy},${dx}`);
        }
      }
    }
    assert(found, `seed ${s}: not a padded crop: ${r}`);
  }
  assertEquals(shifts.size, 9);
});

Deno.test("fillBatch() colour jitter: HED near zero is the identity, results stay in [0, 1], seeds decide", () => {
  const img = Uint8Array.from({ length: 8 * 8 * 3 }, (_, i) => (i * 37) & 255);
  const shape = [8, 8, 3] as const;
  const run = (aug: Parameters<typeof fillBatch>[0]["augment"], seed: number) => {
    const out = new Float32Array(img.length);
    fillBatch({ src: img, srcScale: 1 / 255, shape, indices: [0], out, augment: aug, rng: new Rng(seed) });
    return out;
  };
  const id = run({ hed: 1e-9 }, 1);
  for (let i = 0; i < img.length; i++) assert(Math.abs(id[i] - img[i] / 255) < 1e-4, `value ${i}: ${id[i]}`);
  const j = run({ hed: 0.2, brightness: 0.3, contrast: 0.3 }, 1);
  assert(j.every((v) => v >= 0 && v <= 1));
  assertEquals(run({ hed: 0.2, brightness: 0.3, contrast: 0.3 }, 1), j);
  assertNotEquals(run({ hed: 0.2, brightness: 0.3, contrast: 0.3 }, 2), j);
  const b = run({ brightness: 0.5 }, 3);
  const shift = b[100] - img[100] / 255; // one shift for the whole image (away from clamping)
  assert(Math.abs(shift) > 1e-4 && Math.abs(b[101] - img[101] / 255 - shift) < 1e-6);
});

Deno.test("fillBatch() rejects augmentations that do not fit the images", () => {
  const out = new Float32Array(4 * 2);
  const src = new Uint8Array(8);
  const args = { src, srcScale: 1, shape: [4, 2, 1] as const, indices: [0], out, rng: new Rng(0) };
  assertThrows(
    () => fillBatch({ ...args, augment: { rot90: true } }),
    Error,
    "rot90 needs square images, got shape [4, 2, 1]",
  );
  assertThrows(() => fillBatch({ ...args, augment: { hed: 0.1 } }), Error, "needs 3 (RGB) channels");
  assertThrows(
    () => fillBatch({ ...args, augment: { hflip: 2 } }),
    Error,
    "hflip must be a probability in [0, 1]",
  );
  assertThrows(
    () => fillBatch({ ...args, augment: { cropPadding: 1.5 } }),
    Error,
    "cropPadding must be an integer, got 1.5",
  );
  assertThrows(
    () => fillBatch({ ...args, out: new Float32Array(3) }),
    Error,
    "out has 3 floats, expected 1 x 4x2x1 = 8",
  );
});

forEachBackend("augmentTensor() is deterministic for a seed and leaks nothing", async (t) => {
  const x = t.tensor4d(Float32Array.from({ length: 4 * 32 * 32 * 3 }, (_, i) => (i % 255) / 255), [
    4,
    32,
    32,
    3,
  ]);
  const a = await assertNoLeak("augmentTensor", () => {
    const y = augmentTensor(x, AUGMENT_HISTOLOGY, 5);
    const d = y.dataSync().slice();
    y.dispose();
    return d;
  });
  const b = augmentTensor(x, AUGMENT_HISTOLOGY, 5);
  const c = augmentTensor(x, AUGMENT_HISTOLOGY, 6);
  assertEquals(b.dataSync(), a);
  assertNotEquals(c.dataSync(), a);
  assertEquals(b.shape, [4, 32, 32, 3]);
  t.dispose([x, b, c]);
});

// ---------------------------------------------------------------- loadDataset

Deno.test({
  name: "loadDataset() loads the synthetic set with subsets and rejects unknown names",
  ...noSanitize,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const ds = await loadDataset("synthetic", {
      split: "val",
      subset: 30,
      log: false,
      synthetic: { trainSize: 200, seed: 3 },
    });
    assertEquals([ds.name, ds.split, ds.size], ["synthetic", "val", 20]); // val has only 20
    const sub = await loadDataset("synthetic", {
      split: "train",
      subset: 30,
      log: false,
      synthetic: { trainSize: 200 },
    });
    assertEquals(sub.size, 30);
    assert(sub.reason!.includes("subset of 30"), sub.reason);
    assertEquals(sub.masks!.length, 30 * 64);
    await assertRejects(() => loadDataset("imagenet", { log: false }), Error, `unknown dataset "imagenet"`);
  },
});

Deno.test({
  name: 'loadDataset("auto") picks CIFAR-10 when present, else Fashion-MNIST, and says why',
  ...noSanitize,
  fn: async () => {
    await withTempDir(async (dir) => {
      const fm = join(dir, "fm");
      await Deno.mkdir(fm);
      await Deno.writeFile(join(fm, "t10k-images-idx3-ubyte"), encodeIdx([10, 28, 28], new Uint8Array(7840)));
      await Deno.writeFile(join(fm, "t10k-labels-idx1-ubyte"), encodeIdx([10], new Uint8Array(10)));
      const opts = {
        dataDir: dir,
        split: "test" as const,
        log: false,
        fashionMnistDirs: [fm],
        cifarUrl: deadUrl(),
        fashionMnistUrl: deadUrl() + "/",
      };
      const a = await loadDataset("auto", opts);
      assertEquals(a.name, "fashion-mnist");
      assert(
        a.reason!.includes("CIFAR-10 is not available") && a.reason!.includes("could not connect"),
        a.reason,
      );
      await assertRejects(
        () => loadDataset("auto", { ...opts, fashionMnistDirs: [join(dir, "none")] }),
        Error,
        "no dataset available",
      );
      await writeSyntheticCifar(join(dir, "cifar-10", "cifar-10-batches-bin"));
      const b = await loadDataset("auto", opts);
      assertEquals([b.name, b.size], ["cifar10", 20]);
      assert(b.reason!.includes("CIFAR-10 found in"), b.reason);
    });
  },
});

// ---------------------------------------------------------------- downloader

Deno.test({
  name: "downloadCifar10() downloads, verifies, extracts, and then serves from the cache",
  ...noSanitize,
  fn: async () => {
    const archive = await buildCifarArchive();
    const srv = serve(archive);
    try {
      await withTempDir(async (dir) => {
        const folder = await downloadCifar10({ dir, url: srv.url, md5: md5(archive), progress: false });
        assertEquals(folder, join(dir, "cifar-10-batches-bin"));
        assertEquals(await Deno.readFile(join(dir, "cifar-10-binary.tar.gz")), archive);
        const ds = loadCifar10({ dir, split: "test" });
        assertEquals(ds.images, generateSynthetic({ size: 20, seed: 12 }).images);
        const before = srv.state.requests.length;
        await downloadCifar10({ dir, url: srv.url, md5: md5(archive), progress: false });
        assertEquals(srv.state.requests.length, before, "no request once the files are there");
        assertEquals([...Deno.readDirSync(dir)].filter((e) => e.name.startsWith(".extract")).length, 0);
      });
    } finally {
      await srv.close();
    }
  },
});

Deno.test({
  name: "downloadFile() resumes an interrupted download with a Range request",
  ...noSanitize,
  fn: async () => {
    const body = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 31) & 255);
    const srv = serve(body);
    try {
      await withTempDir(async (dir) => {
        const dest = join(dir, "f.bin");
        srv.state.mode = "truncate";
        const e = await assertRejects(
          () => downloadFile(srv.url, dest, { md5: md5(body), progress: false }),
          Error,
          "interrupted",
        );
        assert(e.message.includes(`${dest}.part is kept`), e.message);
        const partSize = (await Deno.stat(`${dest}.part`)).size;
        assert(partSize > 0 && partSize < body.length, `part size ${partSize}`);
        await assertRejects(() => Deno.stat(dest)); // nothing at the destination yet
        srv.state.mode = "ok";
        const r = await downloadFile(srv.url, dest, { md5: md5(body), progress: false });
        assertEquals(srv.state.requests.at(-1)!.range, `bytes=${partSize}-`);
        assertEquals([r.resumed, r.cached, r.bytes], [true, false, body.length]);
        assertEquals(await Deno.readFile(dest), body);
        // A server that ignores Range: the download restarts from zero.
        await Deno.remove(dest);
        await Deno.writeFile(`${dest}.part`, body.subarray(0, 1000));
        srv.state.mode = "ignore-range";
        const r2 = await downloadFile(srv.url, dest, { md5: md5(body), progress: false });
        assertEquals(r2.resumed, false);
        assertEquals(await Deno.readFile(dest), body);
        assertEquals((await downloadFile(srv.url, dest, { md5: md5(body), progress: false })).cached, true);
      });
    } finally {
      await srv.close();
    }
  },
});

Deno.test({
  name: "downloadFile() rejects a corrupt download by checksum and never overwrites the cached file",
  ...noSanitize,
  fn: async () => {
    const body = Uint8Array.from({ length: 50_000 }, (_, i) => (i * 7) & 255);
    const srv = serve(body);
    try {
      await withTempDir(async (dir) => {
        const dest = join(dir, "f.bin");
        const old = new TextEncoder().encode("an older cached file");
        await Deno.writeFile(dest, old);
        srv.state.mode = "corrupt";
        const bad = body.slice();
        bad[bad.length >> 1] ^= 0xff;
        const e = await assertRejects(
          () => downloadFile(srv.url, dest, { md5: md5(body), progress: false }),
          Error,
          "checksum mismatch",
        );
        assert(
          e.message.includes(`expected md5 ${md5(body)}`) && e.message.includes(`found ${md5(bad)}`),
          e.message,
        );
        assert(e.message.includes(srv.url), e.message);
        assertEquals(await Deno.readFile(dest), old);
        await assertRejects(() => Deno.stat(`${dest}.part`));
      });
    } finally {
      await srv.close();
    }
  },
});

Deno.test({
  name: "downloadCifar10() offline fails fast, saying where to put the files by hand, and keeps the cache",
  ...noSanitize,
  fn: async () => {
    await withTempDir(async (dir) => {
      const old = new TextEncoder().encode("a partial archive someone put here");
      await Deno.writeFile(join(dir, "cifar-10-binary.tar.gz"), old);
      const t0 = performance.now();
      const e = await assertRejects(
        () => downloadCifar10({ dir, url: deadUrl(), progress: false }),
        Error,
        "could not connect",
      );
      assert(performance.now() - t0 < 10000);
      assert(
        e.message.includes("by hand") && e.message.includes(join(dir, "cifar-10-batches-bin")),
        e.message,
      );
      assert(e.message.includes("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"), e.message);
      assertEquals(await Deno.readFile(join(dir, "cifar-10-binary.tar.gz")), old);
    });
  },
});

Deno.test({
  name: "downloadCifar10() reports an archive that is not a CIFAR-10 tar.gz",
  ...noSanitize,
  fn: async () => {
    const junk = gzipSync(new TextEncoder().encode("not a tar file at all".repeat(100)));
    const notCifar = await withTempDir(async (dir) => {
      await Deno.mkdir(join(dir, "other"));
      await Deno.writeTextFile(join(dir, "other", "readme.txt"), "hello");
      await tar.c({ gzip: true, file: join(dir, "x.tgz"), cwd: dir }, ["other"]);
      return await Deno.readFile(join(dir, "x.tgz"));
    });
    for (
      const [body, want] of [[new Uint8Array(junk), "cifar-10-binary.tar.gz"], [
        notCifar,
        "found no such folder",
      ]] as const
    ) {
      const srv = serve(body);
      try {
        await withTempDir(async (dir) => {
          const e = await assertRejects(
            () => downloadCifar10({ dir, url: srv.url, md5: md5(body), progress: false }),
            Error,
            want,
          );
          assert(e.message.includes("CIFAR-10 archive"), e.message);
          await assertRejects(() => Deno.stat(join(dir, "cifar-10-batches-bin")));
        });
      } finally {
        await srv.close();
      }
    }
  },
});

void tf;

Deno.test({
  name: 'loadDataset("cifar10") extracts an archive put in data/cifar-10 by hand, without the network',
  ...noSanitize,
  fn: async () => {
    const archive = await buildCifarArchive();
    await withTempDir(async (dir) => {
      await Deno.mkdir(join(dir, "cifar-10"));
      await Deno.writeFile(join(dir, "cifar-10", "cifar-10-binary.tar.gz"), archive);
      const opts = { dataDir: dir, download: false, cifarUrl: deadUrl(), cifarMd5: md5(archive), log: false };
      const ds = await loadDataset("cifar10", { ...opts, split: "test" });
      assertEquals([ds.name, ds.size], ["cifar10", 20]);
      assert(ds.reason!.includes("extracted from"), ds.reason);
      await Deno.remove(join(dir, "cifar-10"), { recursive: true });
      await assertRejects(() => loadDataset("cifar10", opts), Error, "download is disabled");
    });
  },
});

Deno.test({
  name: "downloadFashionMnist() fetches the four IDX files, validates them, and deletes an invalid one",
  ...noSanitize,
  fn: async () => {
    const files: Record<string, Uint8Array> = {
      "train-images-idx3-ubyte.gz": encodeIdx([20, 28, 28], new Uint8Array(20 * 784).fill(9)),
      "train-labels-idx1-ubyte.gz": encodeIdx([20], Uint8Array.from({ length: 20 }, (_, i) => i % 10)),
      "t10k-images-idx3-ubyte.gz": encodeIdx([10, 28, 28], new Uint8Array(10 * 784)),
      "t10k-labels-idx1-ubyte.gz": encodeIdx([10], Uint8Array.from({ length: 10 }, (_, i) => i)),
    };
    const gz = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, new Uint8Array(gzipSync(v))]));
    let broken = "";
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const name = new URL(req.url).pathname.slice(1);
      if (!(name in gz)) return new Response("missing", { status: 404 });
      return new Response(name === broken ? gz[name].subarray(0, 30).slice() : gz[name].slice());
    });
    const url = `http://127.0.0.1:${server.addr.port}/`;
    try {
      await withTempDir(async (dir) => {
        const ds = await loadDataset("fashion-mnist", {
          dataDir: dir,
          fashionMnistDirs: [join(dir, "fashion-mnist")],
          fashionMnistUrl: url,
          split: "train",
          valFraction: 0,
          log: false,
          progress: false,
        });
        assertEquals([ds.name, ds.size], ["fashion-mnist", 20]);
        assert(ds.reason!.includes("downloaded into"), ds.reason);
        await Deno.remove(join(dir, "fashion-mnist"), { recursive: true });
        broken = "t10k-labels-idx1-ubyte.gz";
        const e = await assertRejects(
          () => downloadFashionMnist(join(dir, "fashion-mnist"), { url, progress: false }),
          Error,
          broken,
        );
        assert(e.message.includes("gzip") && e.message.includes("deleted"), e.message);
        await assertRejects(() => Deno.stat(join(dir, "fashion-mnist", broken)));
        assert((await Deno.stat(join(dir, "fashion-mnist", "t10k-images-idx3-ubyte.gz"))).isFile);
        const e404 = await assertRejects(
          () => downloadFashionMnist(join(dir, "fm2"), { url: url + "nope/", progress: false }),
          Error,
          "expected HTTP 200 or 206, found 404",
        );
        assert(e404.message.includes("apt-get install dataset-fashion-mnist"), e404.message);
      });
    } finally {
      await server.shutdown();
    }
  },
});
