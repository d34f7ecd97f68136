/**
 * CIFAR-10, binary version: reader and writer for the `data_batch_1..5.bin` / `test_batch.bin` files
 * (records of 1 label byte + 3072 pixel bytes, channel-major 32x32: 1024 red, 1024 green, 1024 blue)
 * and `batches.meta.txt` (class names, one a line). Images are converted to NHWC bytes on load.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { writeFileAtomic } from "../util/mod.ts";
import { cached } from "./dataset_cache.ts";
import { type Dataset, InMemoryDataset, type Split, SPLITS } from "./dataset.ts";
import { stratifiedSplit } from "./split.ts";

/** The official class names, in label order. */
export const CIFAR10_CLASSES: readonly string[] = Object.freeze([
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
]);

/** CIFAR-10 training-set channel mean in [0, 1] units. */
export const CIFAR10_MEAN: readonly number[] = Object.freeze([0.4914, 0.4822, 0.4465]);
/** CIFAR-10 training-set channel standard deviation in [0, 1] units. */
export const CIFAR10_STD: readonly number[] = Object.freeze([0.2470, 0.2435, 0.2616]);

/** Bytes per record: 1 label + 32*32*3 pixels. */
export const CIFAR_RECORD_BYTES = 3073;

/** The files of each split, in the folder `cifar-10-batches-bin`. */
export const CIFAR10_FILES: Readonly<Record<"train" | "test", readonly string[]>> = Object.freeze({
  train: ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
  test: ["test_batch.bin"],
});

/** Images (NHWC bytes) and labels. */
export interface ImagesAndLabels {
  images: Uint8Array;
  labels: Uint8Array;
}

/**
 * Decodes CIFAR binary records (already read into memory) into NHWC images and labels.
 * `path` only names the file in error messages.
 *
 * @example
 * ```ts
 * const { images, labels } = decodeCifarBinary(Deno.readFileSync(p), p);
 * ```
 */
export function decodeCifarBinary(bytes: Uint8Array, path: string, numClasses = 10): ImagesAndLabels {
  if (bytes.length === 0 || bytes.length % CIFAR_RECORD_BYTES !== 0) {
    const whole = Math.floor(bytes.length / CIFAR_RECORD_BYTES);
    throw new Error(
      `CIFAR file ${path}: expected a whole number of ${CIFAR_RECORD_BYTES}-byte records (1 label + 3072 pixels; ` +
        `an official batch is ${10000 * CIFAR_RECORD_BYTES} bytes), found ${bytes.length} bytes ` +
        `(${whole} records + ${
          bytes.length - whole * CIFAR_RECORD_BYTES
        } bytes: truncated or not a CIFAR file)`,
    );
  }
  const n = bytes.length / CIFAR_RECORD_BYTES;
  const images = new Uint8Array(n * 3072);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = i * CIFAR_RECORD_BYTES;
    const label = bytes[r];
    if (label >= numClasses) {
      throw new Error(
        `CIFAR file ${path}: record ${i} (byte offset ${r}) has label ${label}, expected 0..${
          numClasses - 1
        } ` +
          `(not a CIFAR-10 binary file? CIFAR-100 records have 2 label bytes)`,
      );
    }
    labels[i] = label;
    const o = i * 3072;
    for (let p = 0; p < 1024; p++) {
      images[o + 3 * p] = bytes[r + 1 + p];
      images[o + 3 * p + 1] = bytes[r + 1025 + p];
      images[o + 3 * p + 2] = bytes[r + 2049 + p];
    }
  }
  return { images, labels };
}

/**
 * Encodes NHWC 32x32x3 images and labels as CIFAR binary records.
 *
 * @example
 * ```ts
 * const bytes = encodeCifarBinary(images, labels);
 * ```
 */
export function encodeCifarBinary(images: Uint8Array, labels: Uint8Array): Uint8Array {
  const n = labels.length;
  if (images.length !== n * 3072) {
    throw new Error(
      `encodeCifarBinary: expected ${n} x 3072 image bytes for ${n} labels, got ${images.length}`,
    );
  }
  const out = new Uint8Array(n * CIFAR_RECORD_BYTES);
  for (let i = 0; i < n; i++) {
    const r = i * CIFAR_RECORD_BYTES, o = i * 3072;
    out[r] = labels[i];
    for (let p = 0; p < 1024; p++) {
      out[r + 1 + p] = images[o + 3 * p];
      out[r + 1025 + p] = images[o + 3 * p + 1];
      out[r + 2049 + p] = images[o + 3 * p + 2];
    }
  }
  return out;
}

/**
 * Reads one CIFAR binary file.
 *
 * @example
 * ```ts
 * const { images, labels } = readCifarBinary("data/cifar-10/cifar-10-batches-bin/test_batch.bin");
 * ```
 */
export function readCifarBinary(path: string, numClasses = 10): ImagesAndLabels {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`CIFAR file ${path}: not found (expected a CIFAR-10 binary batch file there)`);
    }
    throw e;
  }
  return decodeCifarBinary(bytes, path, numClasses);
}

/**
 * Writes images and labels as one CIFAR binary file (atomically).
 *
 * @example
 * ```ts
 * await writeCifarBinary("/tmp/test_batch.bin", images, labels);
 * ```
 */
export async function writeCifarBinary(path: string, images: Uint8Array, labels: Uint8Array): Promise<void> {
  await writeFileAtomic(path, encodeCifarBinary(images, labels));
}

/**
 * Writes a complete CIFAR-10-format folder: `data_batch_1..5.bin` (the training images split in 5
 * nearly equal parts), `test_batch.bin` and `batches.meta.txt`. Used to test the reader with
 * generated data.
 *
 * @example
 * ```ts
 * await writeCifar10Dir("/tmp/cifar", { train, test, classes: ["a", "b"] });
 * ```
 */
export async function writeCifar10Dir(
  dir: string,
  data: { train: ImagesAndLabels; test: ImagesAndLabels; classes: readonly string[] },
): Promise<void> {
  const n = data.train.labels.length;
  for (let b = 0; b < 5; b++) {
    const s = Math.floor((b * n) / 5), e = Math.floor(((b + 1) * n) / 5);
    await writeCifarBinary(
      join(dir, CIFAR10_FILES.train[b]),
      data.train.images.subarray(s * 3072, e * 3072),
      data.train.labels.subarray(s, e),
    );
  }
  await writeCifarBinary(join(dir, CIFAR10_FILES.test[0]), data.test.images, data.test.labels);
  await writeFileAtomic(join(dir, "batches.meta.txt"), data.classes.join("\n") + "\n");
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the folder holding the CIFAR-10 binary files under `dir` (either `dir` itself or
 * `dir/cifar-10-batches-bin`), or `undefined` when no `test_batch.bin`/`data_batch_1.bin` is there.
 *
 * @example
 * ```ts
 * findCifar10("data/cifar-10"); // "data/cifar-10/cifar-10-batches-bin" once downloaded
 * ```
 */
export function findCifar10(dir: string): string | undefined {
  for (const d of [join(dir, "cifar-10-batches-bin"), dir]) {
    if (exists(join(d, CIFAR10_FILES.test[0])) || exists(join(d, CIFAR10_FILES.train[0]))) return d;
  }
  return undefined;
}

/**
 * Reads class names from `batches.meta.txt` (one per non-empty line), or the official names when
 * the file is absent.
 *
 * @example
 * ```ts
 * readCifarClasses("data/cifar-10/cifar-10-batches-bin"); // ["airplane", ...]
 * ```
 */
export function readCifarClasses(dir: string): readonly string[] {
  const path = join(dir, "batches.meta.txt");
  if (!exists(path)) return CIFAR10_CLASSES;
  const names = Deno.readTextFileSync(path).split(/\r?\n/).map((s) => s.trim()).filter((s) => s !== "");
  if (names.length < 2 || names.length > 256) {
    throw new Error(
      `CIFAR meta file ${path}: expected 2..256 class names (one a line), found ${names.length}`,
    );
  }
  return names;
}

/** Options of {@link loadCifar10}. */
export interface LoadCifar10Options {
  /** Folder holding the files, or its parent (default `"data/cifar-10"`). */
  dir?: string;
  /** Which split (default `"train"`). */
  split?: Split;
  /** Fraction of the training files held out as `"val"` (default 0.1; 0 = train on all). */
  valFraction?: number;
  /** Seed of the train/val split (default 0: the split is fixed). */
  valSeed?: number;
  /** Override the normalisation statistics (default: the official CIFAR-10 values). */
  stats?: { mean: readonly number[]; std: readonly number[] };
}

function readSplitFiles(
  dir: string,
  files: readonly string[],
  numClasses: number,
  split: string,
): ImagesAndLabels {
  const paths = files.map((f) => join(dir, f));
  const missing = paths.filter((p) => !exists(p));
  if (missing.length > 0) {
    throw new Error(
      `CIFAR-10 ${split} split: missing ${missing.join(", ")}; expected ${files.join(", ")} in ${dir} ` +
        `(download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it into ${
          resolve(dir, "..")
        })`,
    );
  }
  const key = paths.map((p) => {
    const s = Deno.statSync(p);
    return `${p}:${s.size}:${s.mtime?.getTime()}`;
  }).join("|");
  return cached(`cifar:${paths.join("|")}`, key, () => {
    const parts = paths.map((p) => readCifarBinary(p, numClasses));
    const n = parts.reduce((s, p) => s + p.labels.length, 0);
    const images = new Uint8Array(n * 3072), labels = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      images.set(p.images, o * 3072);
      labels.set(p.labels, o);
      o += p.labels.length;
    }
    return { images, labels };
  });
}

/**
 * Loads one split of CIFAR-10 from the binary files. `"train"` and `"val"` come from
 * `data_batch_1..5.bin` (a fixed, stratified hold-out), `"test"` from `test_batch.bin`.
 * Decoded files are cached in memory (keyed by path, size and modification time).
 *
 * @example
 * ```ts
 * const test = loadCifar10({ split: "test" });
 * ```
 */
export function loadCifar10(options: LoadCifar10Options = {}): Dataset {
  const { dir = "data/cifar-10", split = "train", valFraction = 0.1, valSeed = 0 } = options;
  if (!SPLITS.includes(split)) {
    throw new Error(`loadCifar10: unknown split "${split}", expected ${SPLITS.join(", ")}`);
  }
  const found = findCifar10(dir);
  if (!found) {
    throw new Error(
      `CIFAR-10: no data_batch_1.bin or test_batch.bin in ${dir} or ${join(dir, "cifar-10-batches-bin")}; ` +
        `download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it into ${dir}`,
    );
  }
  const classes = readCifarClasses(found);
  const base = {
    name: "cifar10",
    classes,
    imageShape: [32, 32, 3] as const,
    mean: options.stats?.mean ?? CIFAR10_MEAN,
    std: options.stats?.std ?? CIFAR10_STD,
    source: found,
  };
  if (split === "test") {
    const d = readSplitFiles(found, CIFAR10_FILES.test, classes.length, split);
    return new InMemoryDataset({ ...base, split, ...d });
  }
  const d = readSplitFiles(found, CIFAR10_FILES.train, classes.length, split);
  const all = new InMemoryDataset({ ...base, split: "train", ...d });
  if (split === "train" && valFraction === 0) return all;
  if (split === "val" && valFraction === 0) {
    throw new Error(`loadCifar10: split "val" needs valFraction > 0, got ${valFraction}`);
  }
  const parts = stratifiedSplit(d.labels, classes.length, valFraction, valSeed);
  return all.select(split === "train" ? parts.train : parts.val, split);
}
