/**
 * PatchCamelyon (PCam, Veeling et al. 2018): 96x96 RGB patches from CAMELYON16 slides (level 2, about
 * 0.97 µm/px), labelled tumour when the central 32x32 region holds tumour. The HDF5 files
 * `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5` hold `x` (uint8 `[N, 96, 96, 3]`) and `y`
 * (uint8 `[N, 1, 1, 1]`); they are read with h5wasm, only the rows asked for.
 *
 * @module
 */
import h5wasm from "h5wasm/node";
import { join, resolve } from "node:path";
import { AUGMENT_HISTOLOGY } from "./augment.ts";
import { type Dataset, InMemoryDataset, type Split, SPLITS } from "./dataset.ts";

/** PCam class names: label 0 is normal tissue, 1 is tumour. */
export const PCAM_CLASSES: readonly string[] = Object.freeze(["normal", "tumour"]);
/** Side of a PCam patch. */
export const PCAM_SIZE = 96;

/** The file PCam stores a split's images (`x`) or labels (`y`) in (our `"val"` is PCam's `valid`). */
export function pcamFile(split: Split, part: "x" | "y"): string {
  const s = split === "val" ? "valid" : split;
  return `camelyonpatch_level_2_split_${s}_${part}.h5`;
}

let ready: Promise<void> | undefined;
/** Loads the h5wasm module once. */
async function h5(): Promise<typeof h5wasm> {
  ready ??= h5wasm.ready.then(() => {});
  await ready;
  return h5wasm;
}

/** Options of {@link loadPcam}. */
export interface LoadPcamOptions {
  /** Folder holding the `.h5` files (default `"data/pcam"`). */
  dir?: string;
  /** Which split (default `"train"`); `"val"` reads PCam's `valid` files. */
  split?: Split;
  /** Read at most this many patches (default: all; PCam train is 262144 patches, 7 GB). */
  limit?: number;
  /** First patch read (default 0). PCam is shuffled, so a window is a random sample. */
  offset?: number;
  /** Side of the returned images (default 96; a divisor of 96 box-averages, e.g. 32 for the small models). */
  imageSize?: number;
}

function checkShape(path: string, name: string, shape: number[] | null, dtype: unknown, want: string): void {
  const ok = dtype === "<B" || dtype === "|u1" || dtype === "B";
  if (!shape || !ok) {
    throw new Error(
      `PCam: "${path}" dataset "${name}" has shape ${JSON.stringify(shape)} dtype ${
        JSON.stringify(dtype)
      }; expected uint8 ${want}`,
    );
  }
}

function boxDown(src: Uint8Array, n: number, side: number, out: number): Uint8Array {
  const f = side / out, dst = new Uint8Array(n * out * out * 3), area = f * f;
  for (let i = 0; i < n; i++) {
    const s0 = i * side * side * 3, d0 = i * out * out * 3;
    for (let y = 0; y < out; y++) {
      for (let x = 0; x < out; x++) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (let dy = 0; dy < f; dy++) {
            for (let dx = 0; dx < f; dx++) sum += src[s0 + ((y * f + dy) * side + x * f + dx) * 3 + c];
          }
          dst[d0 + (y * out + x) * 3 + c] = Math.round(sum / area);
        }
      }
    }
  }
  return dst;
}

/**
 * Reads `count` rows from `offset` of a PCam pair of files (validated), images as `[n, 96, 96, 3]` bytes.
 *
 * @example
 * ```ts
 * const { images, labels, total } = await readPcamRows("data/pcam", "test", 0, 1000);
 * ```
 */
export async function readPcamRows(
  dir: string,
  split: Split,
  offset: number,
  count?: number,
): Promise<{ images: Uint8Array; labels: Uint8Array; total: number }> {
  const lib = await h5();
  const xPath = join(dir, pcamFile(split, "x")), yPath = join(dir, pcamFile(split, "y"));
  const missing = [xPath, yPath].filter((p) => {
    try {
      return !Deno.statSync(p).isFile;
    } catch {
      return true;
    }
  });
  if (missing.length) {
    throw new Error(
      `PCam ${split}: missing ${
        missing.join(", ")
      }. Put camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 ` +
        `in ${resolve(dir)} (from https://zenodo.org/records/2546921, gunzipped), or run downloadPcam()`,
    );
  }
  const open = (p: string) => {
    try {
      return new lib.File(p, "r");
    } catch (e) {
      throw new Error(`PCam: "${p}" is not an HDF5 file h5wasm can read (${(e as Error).message})`);
    }
  };
  const fy = open(yPath), fx = open(xPath);
  try {
    const y = fy.get("y"), x = fx.get("x");
    if (!(y instanceof lib.Dataset)) {
      throw new Error(`PCam: "${yPath}" has no dataset "y" (not a PCam HDF5 file)`);
    }
    if (!(x instanceof lib.Dataset)) {
      throw new Error(`PCam: "${xPath}" has no dataset "x" (not a PCam HDF5 file)`);
    }
    checkShape(yPath, "y", y.shape, y.dtype, "[N, 1, 1, 1]");
    checkShape(xPath, "x", x.shape, x.dtype, "[N, 96, 96, 3]");
    const n = y.shape![0];
    if (y.shape!.slice(1).some((d) => d !== 1)) {
      throw new Error(`PCam: "${yPath}" dataset "y" has shape [${y.shape}]; expected [N, 1, 1, 1]`);
    }
    const xs = x.shape!;
    if (xs.length !== 4 || xs[1] !== PCAM_SIZE || xs[2] !== PCAM_SIZE || xs[3] !== 3 || xs[0] !== n) {
      throw new Error(`PCam: "${xPath}" dataset "x" has shape [${xs}]; expected [${n}, 96, 96, 3] (as "y")`);
    }
    if (!(Number.isInteger(offset) && offset >= 0 && offset < n)) {
      throw new Error(`PCam ${split}: offset must be an integer in [0, ${n - 1}], got ${offset}`);
    }
    const end = Math.min(n, offset + (count ?? n));
    const labels = Uint8Array.from(y.slice([[offset, end]]) as Uint8Array);
    for (let i = 0; i < labels.length; i++) {
      if (labels[i] > 1) {
        throw new Error(`PCam: "${yPath}" label ${labels[i]} at row ${offset + i}; expected 0 or 1`);
      }
    }
    const images = Uint8Array.from(x.slice([[offset, end]]) as Uint8Array);
    return { images, labels, total: n };
  } finally {
    fx.close();
    fy.close();
  }
}

/**
 * Writes a split in PCam's layout (`x` uint8 `[N, 96, 96, 3]`, `y` uint8 `[N, 1, 1, 1]`), e.g. for tests or
 * to convert other patches.
 *
 * @example
 * ```ts
 * await writePcamSplit("data/pcam", "test", images, labels);
 * ```
 */
export async function writePcamSplit(
  dir: string,
  split: Split,
  images: Uint8Array,
  labels: Uint8Array,
): Promise<void> {
  const per = PCAM_SIZE * PCAM_SIZE * 3, n = labels.length;
  if (images.length !== n * per) {
    throw new Error(
      `writePcamSplit(): ${images.length} image bytes for ${n} labels; expected ${n} x 96 x 96 x 3`,
    );
  }
  const lib = await h5();
  await Deno.mkdir(dir, { recursive: true });
  for (const [part, data, shape] of [["x", images, [n, 96, 96, 3]], ["y", labels, [n, 1, 1, 1]]] as const) {
    const path = join(dir, pcamFile(split, part)), tmp = `${path}.tmp-${Deno.pid}`;
    const f = new lib.File(tmp, "w");
    try {
      f.create_dataset({ name: part, data, shape: [...shape], dtype: "<B" });
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  }
}

/**
 * Loads a PCam split as a {@link Dataset} (classes normal/tumour, histology augmentation declared).
 * Normalisation statistics come from the first 2048 training patches when the train files are present,
 * else from the patches loaded.
 *
 * @example
 * ```ts
 * const test = await loadPcam({ split: "test", limit: 2000, imageSize: 32 });
 * ```
 */
export async function loadPcam(options: LoadPcamOptions = {}): Promise<Dataset> {
  const { dir = "data/pcam", split = "train", offset = 0, imageSize = PCAM_SIZE } = options;
  if (!SPLITS.includes(split)) {
    throw new Error(`loadPcam: unknown split "${split}", expected ${SPLITS.join(", ")}`);
  }
  if (!(Number.isInteger(imageSize) && imageSize > 0 && PCAM_SIZE % imageSize === 0)) {
    throw new Error(`loadPcam: imageSize must divide 96, got ${imageSize}`);
  }
  if (options.limit !== undefined && !(Number.isInteger(options.limit) && options.limit > 0)) {
    throw new Error(`loadPcam: limit must be a positive integer, got ${options.limit}`);
  }
  const { images, labels } = await readPcamRows(dir, split, offset, options.limit);
  const n = labels.length;
  let statsFrom = images;
  if (split !== "train") {
    try {
      statsFrom = (await readPcamRows(dir, "train", 0, 2048)).images;
    } catch { /* no train files: use the loaded patches */ }
  }
  const sum = [0, 0, 0], sq = [0, 0, 0];
  const m = Math.min(statsFrom.length / 3, 2048 * PCAM_SIZE * PCAM_SIZE);
  for (let i = 0; i < m; i++) {
    for (let c = 0; c < 3; c++) {
      const v = statsFrom[i * 3 + c] / 255;
      sum[c] += v;
      sq[c] += v * v;
    }
  }
  const mean = sum.map((s) => s / m), std = sq.map((s, c) => Math.sqrt(Math.max(1e-6, s / m - mean[c] ** 2)));
  return new InMemoryDataset({
    name: "pcam",
    classes: PCAM_CLASSES,
    split,
    imageShape: [imageSize, imageSize, 3],
    mean,
    std,
    images: imageSize === PCAM_SIZE ? images : boxDown(images, n, PCAM_SIZE, imageSize),
    labels,
    source: `${resolve(dir)} rows ${offset}..${offset + n - 1}`,
    augmentation: AUGMENT_HISTOLOGY,
  });
}
