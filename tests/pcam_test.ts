import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { createHash } from "node:crypto";
import {
  AUGMENT_HISTOLOGY,
  downloadPcam,
  loadPcam,
  pcamFile,
  readPcamRows,
  writePcamSplit,
} from "../lib/data/mod.ts";

const PER = 96 * 96 * 3;

function fakePatches(n: number): { images: Uint8Array; labels: Uint8Array } {
  const images = new Uint8Array(n * PER), labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 3 === 0 ? 1 : 0;
    for (let k = 0; k < PER; k++) images[i * PER + k] = (i * 37 + k * 11) & 255;
  }
  return { images, labels };
}

Deno.test("loadPcam() round-trips HDF5 files written in PCam's layout, with a row window", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcam_test_" });
  try {
    const { images, labels } = fakePatches(10);
    await writePcamSplit(dir, "val", images, labels);
    assert(await Deno.stat(join(dir, "camelyonpatch_level_2_split_valid_x.h5")).then(() => true));
    const all = await loadPcam({ dir, split: "val" });
    assertEquals([all.size, all.name, all.imageShape], [10, "pcam", [96, 96, 3]]);
    assertEquals(all.images, images);
    assertEquals(all.labels, labels);
    assertEquals(all.classes, ["normal", "tumour"]);
    assertEquals(all.augmentation, AUGMENT_HISTOLOGY);
    const win = await loadPcam({ dir, split: "val", offset: 4, limit: 3 });
    assertEquals(win.labels, labels.subarray(4, 7));
    assertEquals(win.images, images.subarray(4 * PER, 7 * PER));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadPcam() box-averages to a smaller side", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcam_test_" });
  try {
    const images = new Uint8Array(2 * PER);
    for (let y = 0; y < 96; y++) for (let x = 0; x < 96; x++) images[(y * 96 + x) * 3] = (x % 3) * 30; // 0, 30, 60
    await writePcamSplit(dir, "test", images, new Uint8Array([0, 1]));
    const ds = await loadPcam({ dir, split: "test", imageSize: 32 });
    assertEquals(ds.imageShape, [32, 32, 3]);
    assertEquals(ds.images[0], 30);
    assertEquals(ds.images[2 * 1024 * 3 - 3], 0); // the second image is black
    await assertRejects(() => loadPcam({ dir, split: "test", imageSize: 50 }), Error, "divide 96, got 50");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readPcamRows() names the missing files and where to put them, and rejects wrong shapes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcam_test_" });
  try {
    await assertRejects(() => readPcamRows(dir, "train", 0), Error, "camelyonpatch_level_2_split_train_x.h5");
    await Deno.writeTextFile(join(dir, pcamFile("test", "x")), "not hdf5");
    await Deno.writeTextFile(join(dir, pcamFile("test", "y")), "not hdf5");
    await assertRejects(() => readPcamRows(dir, "test", 0), Error, "not a PCam HDF5 file");
    const { images, labels } = fakePatches(3);
    await writePcamSplit(dir, "test", images, labels);
    await assertRejects(
      () => readPcamRows(dir, "test", 5),
      Error,
      "offset must be an integer in [0, 2], got 5",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("downloadPcam() fetches, checks the MD5 and gunzips each file; a bad checksum keeps nothing", async () => {
  const src = await Deno.makeTempDir({ prefix: "pcam_src_" }),
    dst = await Deno.makeTempDir({ prefix: "pcam_dst_" });
  const files = new Map<string, Uint8Array<ArrayBuffer>>();
  const md5: Record<string, string> = {};
  const { images, labels } = fakePatches(4);
  await writePcamSplit(src, "test", images, labels);
  for (const part of ["x", "y"] as const) {
    const name = pcamFile("test", part);
    const gz = new Uint8Array(gzipSync(await Deno.readFile(join(src, name))));
    files.set(`/${name}.gz`, gz);
    md5[`${name}.gz`] = createHash("md5").update(gz).digest("hex");
  }
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const body = files.get(new URL(req.url).pathname);
    return body ? new Response(body) : new Response("missing", { status: 404 });
  });
  const url = `http://127.0.0.1:${server.addr.port}`;
  try {
    const bad = { ...md5, [`${pcamFile("test", "y")}.gz`]: "0".repeat(32) };
    await assertRejects(
      () => downloadPcam({ dir: dst, splits: ["test"], url, md5: bad, progress: false }),
      Error,
      "md5",
    );
    assert(!(await Deno.stat(join(dst, pcamFile("test", "y"))).then(() => true, () => false)));
    const paths = await downloadPcam({ dir: dst, splits: ["test"], url, md5, progress: false });
    assertEquals(paths.length, 2);
    const ds = await loadPcam({ dir: dst, split: "test" });
    assertEquals(ds.labels, labels);
    assertEquals(ds.images, images);
    await downloadPcam({ dir: dst, splits: ["test"], url: "http://127.0.0.1:9", md5, progress: false }); // present: no fetch
  } finally {
    await server.shutdown();
    await Deno.remove(src, { recursive: true });
    await Deno.remove(dst, { recursive: true });
  }
});

Deno.test("downloadPcam() offline says where to put the files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcam_off_" });
  try {
    await assertRejects(
      () =>
        downloadPcam({ dir, splits: ["val"], url: "http://127.0.0.1:9", progress: false, timeoutMs: 2000 }),
      Error,
      "put it (or the gunzipped camelyonpatch_level_2_split_valid_y.h5) in",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
