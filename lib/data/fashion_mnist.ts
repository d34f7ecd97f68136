/**
 * Fashion-MNIST (Zalando, MIT licence): IDX files found in `data/fashion-mnist/`, in Debian's
 * `/usr/share/datasets/fashion-mnist/` (package `dataset-fashion-mnist`), or downloaded. The 28x28
 * grey images are presented as 32x32x3 by default (zero-pad 2 pixels each side, replicate the
 * channel) so every model runs unchanged on CIFAR-10 and Fashion-MNIST.
 *
 * @module
 */
import { join } from "node:path";
import { cached } from "./dataset_cache.ts";
import { type Dataset, InMemoryDataset, type Split, SPLITS } from "./dataset.ts";
import { downloadFile } from "./download.ts";
import { readIdx } from "./idx.ts";
import { stratifiedSplit } from "./split.ts";

/** Class names, in label order. */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  "t-shirt/top",
  "trouser",
  "pullover",
  "dress",
  "coat",
  "sandal",
  "shirt",
  "sneaker",
  "bag",
  "ankle boot",
]);

/** Training-set mean/std of the 28x28 grey images, [0, 1] units. */
export const FASHION_MNIST_STATS_28 = Object.freeze({ mean: [0.2860] as readonly number[], std: [0.3530] });
/** Training-set mean/std of the padded 32x32 images (every channel), [0, 1] units. */
export const FASHION_MNIST_STATS_32 = Object.freeze({
  mean: [0.2190, 0.2190, 0.2190] as readonly number[],
  std: [0.3318, 0.3318, 0.3318] as readonly number[],
});

/** Where {@link findFashionMnist} looks, after `data/fashion-mnist`. */
export const FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist";

/** Upstream address of the files (Zalando Research). */
export const FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/** The IDX files of each split (each may also be present without `.gz`). */
export const FASHION_MNIST_FILES: Readonly<Record<"train" | "test", { images: string; labels: string }>> =
  Object
    .freeze({
      train: { images: "train-images-idx3-ubyte", labels: "train-labels-idx1-ubyte" },
      test: { images: "t10k-images-idx3-ubyte", labels: "t10k-labels-idx1-ubyte" },
    });

function fileIn(dir: string, stem: string): string | undefined {
  for (const name of [`${stem}.gz`, stem]) {
    try {
      if (Deno.statSync(join(dir, name)).isFile) return join(dir, name);
    } catch { /* not there */ }
  }
  return undefined;
}

/**
 * The first folder of `dirs` holding the Fashion-MNIST test files (`t10k-*`), or `undefined`.
 *
 * @example
 * ```ts
 * findFashionMnist(["data/fashion-mnist", FASHION_MNIST_SYSTEM_DIR]);
 * ```
 */
export function findFashionMnist(dirs: readonly string[]): string | undefined {
  const f = FASHION_MNIST_FILES.test;
  return dirs.find((d) => fileIn(d, f.images) !== undefined && fileIn(d, f.labels) !== undefined);
}

/**
 * Downloads the four `.gz` files into `dir` (default `data/fashion-mnist`). Each is validated by
 * decoding it (no checksum is published with the Debian copies, which are recompressed).
 *
 * @example
 * ```ts
 * await downloadFashionMnist();
 * ```
 */
export async function downloadFashionMnist(
  dir = "data/fashion-mnist",
  options: { url?: string; progress?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  const base = options.url ?? FASHION_MNIST_URL;
  for (const split of ["train", "test"] as const) {
    for (const stem of [FASHION_MNIST_FILES[split].images, FASHION_MNIST_FILES[split].labels]) {
      if (fileIn(dir, stem)) continue;
      const dest = join(dir, `${stem}.gz`);
      const hint = `To install Fashion-MNIST by hand: apt-get install dataset-fashion-mnist, or put ` +
        `${stem}.gz from https://github.com/zalandoresearch/fashion-mnist into ${dir}.`;
      await downloadFile(base + `${stem}.gz`, dest, { ...options, hint });
      try {
        readIdx(dest, stem.includes("images") ? 3 : 1);
      } catch (e) {
        await Deno.remove(dest).catch(() => {});
        throw new Error(`${(e as Error).message}; the downloaded file was deleted`);
      }
    }
  }
  return dir;
}

/** Options of {@link loadFashionMnist}. */
export interface LoadFashionMnistOptions {
  /** Folders to search, in order (default `["data/fashion-mnist", FASHION_MNIST_SYSTEM_DIR]`). */
  dirs?: readonly string[];
  /** Which split (default `"train"`). */
  split?: Split;
  /** Fraction of the training files held out as `"val"` (default 0.1; 0 = train on all). */
  valFraction?: number;
  /** Seed of the train/val split (default 0). */
  valSeed?: number;
  /** Present images as 32x32x3 (default true); false keeps 28x28x1. */
  rgb32?: boolean;
  /** Override normalisation statistics. */
  stats?: { mean: readonly number[]; std: readonly number[] };
}

function readPair(dir: string, split: "train" | "test", rgb32: boolean) {
  const f = FASHION_MNIST_FILES[split];
  const ip = fileIn(dir, f.images), lp = fileIn(dir, f.labels);
  if (!ip || !lp) {
    throw new Error(
      `Fashion-MNIST ${split} split: expected ${f.images}(.gz) and ${f.labels}(.gz) in ${dir}, ` +
        `found ${[ip, lp].filter(Boolean).join(", ") || "neither"}`,
    );
  }
  const stamp = [ip, lp].map((p) => {
    const s = Deno.statSync(p);
    return `${s.size}:${s.mtime?.getTime()}`;
  }).join("|");
  return cached(`fashion-mnist:${ip}|${rgb32}`, stamp, () => decodePair(ip, lp, rgb32));
}

function decodePair(ip: string, lp: string, rgb32: boolean): { images: Uint8Array; labels: Uint8Array } {
  const img = readIdx(ip, 3), lab = readIdx(lp, 1);
  const [n, h, w] = img.dims;
  if (h !== 28 || w !== 28) {
    throw new Error(`Fashion-MNIST file ${ip}: expected 28x28 images, found ${h}x${w}`);
  }
  if (lab.dims[0] !== n) {
    throw new Error(`Fashion-MNIST: ${ip} has ${n} images but ${lp} has ${lab.dims[0]} labels`);
  }
  for (let i = 0; i < n; i++) {
    if (lab.data[i] > 9) {
      throw new Error(`Fashion-MNIST file ${lp}: label ${lab.data[i]} at ${i}, expected 0..9`);
    }
  }
  let images = img.data;
  if (rgb32) {
    images = new Uint8Array(n * 3072);
    for (let i = 0; i < n; i++) {
      const s0 = i * 784, o0 = i * 3072;
      for (let y = 0; y < 28; y++) {
        for (let x = 0; x < 28; x++) {
          const v = img.data[s0 + y * 28 + x];
          const o = o0 + ((y + 2) * 32 + (x + 2)) * 3;
          images[o] = v;
          images[o + 1] = v;
          images[o + 2] = v;
        }
      }
    }
  } else {
    images = images.slice();
  }
  return { images, labels: lab.data.slice() };
}

/**
 * Loads one split of Fashion-MNIST. `"train"`/`"val"` come from the 60000 training images (fixed,
 * stratified hold-out), `"test"` from the 10000 test images. Decoded files are cached in memory.
 *
 * @example
 * ```ts
 * const test = loadFashionMnist({ split: "test" }); // imageShape [32, 32, 3]
 * ```
 */
export function loadFashionMnist(options: LoadFashionMnistOptions = {}): Dataset {
  const {
    dirs = ["data/fashion-mnist", FASHION_MNIST_SYSTEM_DIR],
    split = "train",
    valFraction = 0.1,
    valSeed = 0,
    rgb32 = true,
  } = options;
  if (!SPLITS.includes(split)) {
    throw new Error(`loadFashionMnist: unknown split "${split}", expected ${SPLITS.join(", ")}`);
  }
  const dir = findFashionMnist(dirs);
  if (!dir) {
    throw new Error(
      `Fashion-MNIST: no t10k-images-idx3-ubyte(.gz) in ${dirs.join(" or ")}; ` +
        `install it with "apt-get install dataset-fashion-mnist" or run downloadFashionMnist()`,
    );
  }
  const stats = options.stats ?? (rgb32 ? FASHION_MNIST_STATS_32 : FASHION_MNIST_STATS_28);
  const base = {
    name: "fashion-mnist",
    classes: FASHION_MNIST_CLASSES,
    imageShape: (rgb32 ? [32, 32, 3] : [28, 28, 1]) as [number, number, number],
    mean: stats.mean,
    std: stats.std,
    source: dir,
  };
  if (split === "test") return new InMemoryDataset({ ...base, split, ...readPair(dir, "test", rgb32) });
  const d = readPair(dir, "train", rgb32);
  const all = new InMemoryDataset({ ...base, split: "train", ...d });
  if (split === "train" && valFraction === 0) return all;
  if (split === "val" && valFraction === 0) {
    throw new Error(`loadFashionMnist: split "val" needs valFraction > 0, got ${valFraction}`);
  }
  const parts = stratifiedSplit(d.labels, 10, valFraction, valSeed);
  return all.select(split === "train" ? parts.train : parts.val, split);
}
