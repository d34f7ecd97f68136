import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "./_assert.ts";
import { join } from "node:path";
import {
  AUGMENT_HISTOLOGY,
  loadDataset,
  loadSyntheticHe,
  sampleSyntheticHePatches,
  syntheticHeSlideSeeds,
} from "../lib/data/mod.ts";
import { SyntheticHeSlide } from "../lib/wsi/mod.ts";
import { Rng } from "../lib/util/mod.ts";
import { initBackend } from "../lib/backend/mod.ts";

const small = { size: 60, slides: 2, slideSize: [4096, 3072] as const };

Deno.test("loadSyntheticHe() is deterministic, cached on disk, and declares the histology augmentation", async () => {
  const dir = await Deno.makeTempDir({ prefix: "synthetic_he_patches_" });
  try {
    const a = await loadSyntheticHe({ ...small, split: "test", cacheDir: dir });
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assertEquals(files.length, 2); // test, and the training sample of the normalisation statistics
    const b = await loadSyntheticHe({ ...small, split: "test", cacheDir: false });
    assertEquals(b.images, a.images);
    assertEquals(b.labels, a.labels);
    assertEquals(a.imageShape, [32, 32, 3]);
    assertEquals(a.augmentation, AUGMENT_HISTOLOGY);
    const counts = a.classCounts();
    assert(counts[0] > 10 && counts[1] > 10, `class counts ${counts}`);
    const train = await loadSyntheticHe({ ...small, split: "train", cacheDir: dir, size: 80 });
    assertEquals(a.mean, train.mean); // the same statistics for every split and size
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("syntheticHeSlideSeeds() keeps train, val and test slides apart", () => {
  const all = [
    ...syntheticHeSlideSeeds("train", 50),
    ...syntheticHeSlideSeeds("val", 50),
    ...syntheticHeSlideSeeds("test", 50),
  ];
  assertEquals(new Set(all).size, 150);
});

Deno.test("sampleSyntheticHePatches() labels a patch tumour exactly when its centre is in a metastasis", () => {
  const slide = SyntheticHeSlide.create(21, { width: 4096, height: 3072, tumour: true });
  const p = sampleSyntheticHePatches(slide, 30, new Rng(3));
  for (let i = 0; i < 30; i++) assertEquals(p.labels[i], slide.tumourAt(p.x[i], p.y[i]) ? 1 : 0);
  assert(p.labels.some((l) => l === 1) && p.labels.some((l) => l === 0));
  assertEquals(p.images.subarray(0, 32 * 32 * 3), slide.readRegion(p.x[0] - 64, p.y[0] - 64, 2, 32, 32).data);
});

Deno.test('loadDataset("synthetic-he") loads through the common entry point; augmented batches do not leak', async () => {
  const dir = await Deno.makeTempDir({ prefix: "synthetic_he_ld_" });
  try {
    const ds = await loadDataset("synthetic-he", {
      dataDir: dir,
      syntheticHe: small,
      split: "val",
      log: false,
    });
    assertEquals([ds.name, ds.split, ds.size], ["synthetic-he", "val", 60]);
    assertEquals(ds.augmentation, AUGMENT_HISTOLOGY);
    assert(Deno.statSync(join(dir, "synthetic-he")).isDirectory);
    await initBackend("cpu", { log: false });
    const before = tf.memory().numTensors;
    const b = ds.getBatch([0, 1, 2, 3], { augment: ds.augmentation, seed: 1 });
    assertEquals(b.x.shape, [4, 32, 32, 3]);
    b.x.dispose();
    b.y.dispose();
    assertEquals(tf.memory().numTensors, before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
