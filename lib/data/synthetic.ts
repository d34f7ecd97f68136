/**
 * A synthetic "where is the object" dataset: 32x32 RGB images whose class is decided only by the
 * shape of a small object made of a few 4x4 patches, placed at a random position on a noisy,
 * cluttered background. Each image comes with the ground-truth mask of the patches the object
 * covers (8x8 grid, matching a ViT with patch size 4), the instrument for measuring whether the
 * CNN keeps the right tokens (selection precision/recall against the mask).
 *
 * Colours are random per image (never informative), clutter specks are smaller than a patch, and
 * every class shape is symmetric under horizontal flips, so `hflip` augmentation keeps labels valid
 * (vertical flips and rotations do not). Masks describe the un-augmented images.
 *
 * @module
 */
import { Rng } from "../util/mod.ts";
import { type Dataset, InMemoryDataset, type Split, SPLITS } from "./dataset.ts";
import type { ImagesAndLabels } from "./cifar10.ts";
import { stratifiedSplit } from "./split.ts";

/** One class: a name and the cells (row, col) of a 3x3 grid of patches the object occupies. */
export interface SyntheticShape {
  name: string;
  cells: readonly (readonly [number, number])[];
}

/** The ten class shapes (each 2-5 patches, all symmetric under a horizontal flip). */
export const SYNTHETIC_SHAPES: readonly SyntheticShape[] = Object.freeze([
  { name: "square", cells: [[0, 0], [0, 1], [1, 0], [1, 1]] },
  { name: "hbar", cells: [[0, 0], [0, 1], [0, 2]] },
  { name: "vbar", cells: [[0, 0], [1, 0], [2, 0]] },
  { name: "plus", cells: [[0, 1], [1, 0], [1, 1], [1, 2], [2, 1]] },
  { name: "tee", cells: [[0, 0], [0, 1], [0, 2], [1, 1]] },
  { name: "arch", cells: [[0, 1], [1, 0], [1, 1], [1, 2]] },
  { name: "cup", cells: [[0, 0], [0, 2], [1, 0], [1, 1], [1, 2]] },
  { name: "corners", cells: [[0, 0], [0, 2], [2, 0], [2, 2]] },
  { name: "hpair", cells: [[0, 0], [0, 2]] },
  { name: "vpair", cells: [[0, 0], [2, 0]] },
]);

/** Image side (pixels) and patch side of the synthetic set. */
export const SYNTHETIC_IMAGE = 32;
/** Patch side in pixels (the mask grid is 8x8). */
export const SYNTHETIC_PATCH = 4;

/** Options of {@link generateSynthetic}. */
export interface SyntheticOptions {
  /** Number of images. */
  size: number;
  /** Seed: the same options always give the same images. */
  seed: number;
  /** Number of classes, 2..10 (default 10): the first shapes of {@link SYNTHETIC_SHAPES}. */
  numClasses?: number;
  /** Standard deviation of the Gaussian pixel noise, [0, 1] units (default 0.08). */
  noise?: number;
  /** Number of clutter specks (2x2 pixels, random colours) per image (default 8). */
  clutter?: number;
  /**
   * Place the object on the patch grid (default true: the mask is exact). When false the object is
   * placed at any pixel offset and the mask marks every patch with at least one object pixel.
   */
  aligned?: boolean;
}

/** Generated images with labels, class names and patch masks. */
export interface SyntheticData extends ImagesAndLabels {
  classes: string[];
  /** `size * 64` bytes: 1 where the object covers the patch (8x8 grid, row-major). */
  masks: Uint8Array;
}

/**
 * Generates the synthetic set (see the module notes). Labels are balanced (round robin, then shuffled).
 *
 * @example
 * ```ts
 * const { images, labels, masks } = generateSynthetic({ size: 100, seed: 1 });
 * ```
 */
export function generateSynthetic(options: SyntheticOptions): SyntheticData {
  const { size, seed, numClasses = 10, noise = 0.08, clutter = 8, aligned = true } = options;
  if (!(Number.isInteger(size) && size > 0)) {
    throw new Error(`generateSynthetic: size must be a positive integer, got ${size}`);
  }
  if (!(Number.isInteger(numClasses) && numClasses >= 2 && numClasses <= SYNTHETIC_SHAPES.length)) {
    throw new Error(`generateSynthetic: numClasses must be an integer in 2..10, got ${numClasses}`);
  }
  if (!(noise >= 0)) throw new Error(`generateSynthetic: noise must be >= 0, got ${noise}`);
  if (!(Number.isInteger(clutter) && clutter >= 0)) {
    throw new Error(`generateSynthetic: clutter must be an integer >= 0, got ${clutter}`);
  }
  const S = SYNTHETIC_IMAGE, P = SYNTHETIC_PATCH, G = S / P;
  const rng = new Rng(seed);
  const labels = new Uint8Array(size);
  for (let i = 0; i < size; i++) labels[i] = i % numClasses;
  rng.shuffle(labels);
  const images = new Uint8Array(size * S * S * 3);
  const masks = new Uint8Array(size * G * G);
  const img = new Float32Array(S * S * 3);
  const obj = new Uint8Array(S * S);
  for (let n = 0; n < size; n++) {
    const shape = SYNTHETIC_SHAPES[labels[n]];
    // Background colour, and an object colour far enough from it.
    const bg = [0, 0, 0].map(() => 0.15 + 0.45 * rng.next());
    let fg: number[];
    do {
      fg = [0, 0, 0].map(() => rng.next());
    } while (Math.abs(fg[0] - bg[0]) + Math.abs(fg[1] - bg[1]) + Math.abs(fg[2] - bg[2]) < 0.6);
    for (let p = 0; p < S * S; p++) {
      img[3 * p] = bg[0];
      img[3 * p + 1] = bg[1];
      img[3 * p + 2] = bg[2];
    }
    for (let k = 0; k < clutter; k++) {
      const cy = rng.int(S - 1), cx = rng.int(S - 1);
      const col = [rng.next(), rng.next(), rng.next()];
      for (let dy = 0; dy < 2; dy++) {
        for (let dx = 0; dx < 2; dx++) {
          const o = ((cy + dy) * S + cx + dx) * 3;
          img[o] = col[0];
          img[o + 1] = col[1];
          img[o + 2] = col[2];
        }
      }
    }
    // Object: cells of P x P pixels at a random offset.
    const hCells = Math.max(...shape.cells.map((c) => c[0])) + 1;
    const wCells = Math.max(...shape.cells.map((c) => c[1])) + 1;
    const oy = aligned ? rng.int(G - hCells + 1) * P : rng.int(S - hCells * P + 1);
    const ox = aligned ? rng.int(G - wCells + 1) * P : rng.int(S - wCells * P + 1);
    obj.fill(0);
    for (const [r, c] of shape.cells) {
      for (let y = 0; y < P; y++) {
        for (let x = 0; x < P; x++) obj[(oy + r * P + y) * S + ox + c * P + x] = 1;
      }
    }
    const m0 = n * G * G;
    for (let p = 0; p < S * S; p++) {
      if (!obj[p]) continue;
      img[3 * p] = fg[0];
      img[3 * p + 1] = fg[1];
      img[3 * p + 2] = fg[2];
      const y = Math.floor(p / S), x = p % S;
      masks[m0 + Math.floor(y / P) * G + Math.floor(x / P)] = 1;
    }
    // Gaussian noise (Box-Muller, both outputs used), quantised to bytes.
    const o0 = n * S * S * 3;
    for (let p = 0; p < img.length; p += 2) {
      let z0 = 0, z1 = 0;
      if (noise > 0) {
        const u = Math.max(rng.next(), 1e-12), v = rng.next();
        const r = Math.sqrt(-2 * Math.log(u)) * noise;
        z0 = r * Math.cos(2 * Math.PI * v);
        z1 = r * Math.sin(2 * Math.PI * v);
      }
      images[o0 + p] = quant(img[p] + z0);
      images[o0 + p + 1] = quant(img[p + 1] + z1);
    }
  }
  return { images, labels, masks, classes: SYNTHETIC_SHAPES.slice(0, numClasses).map((s) => s.name) };
}

function quant(v: number): number {
  const q = Math.round(v * 255);
  return q < 0 ? 0 : q > 255 ? 255 : q;
}

/** Options of {@link loadSynthetic}. */
export interface LoadSyntheticOptions extends Partial<Omit<SyntheticOptions, "size">> {
  /** Which split (default `"train"`). */
  split?: Split;
  /** Images generated for train+val (default 5000). */
  trainSize?: number;
  /** Images generated for test (default 1000). */
  testSize?: number;
  /** Fraction of the training images held out as `"val"` (default 0.1). */
  valFraction?: number;
  /** Seed of the train/val split (default 0). */
  valSeed?: number;
}

const statsCache = new Map<string, { mean: number[]; std: number[] }>();

/** Channel statistics of the generator at these settings, from a fixed 512-image reference sample. */
function referenceStats(o: Omit<SyntheticOptions, "size" | "seed">): { mean: number[]; std: number[] } {
  const key = JSON.stringify(o);
  const hit = statsCache.get(key);
  if (hit) return hit;
  const ref = generateSynthetic({ ...o, size: 512, seed: 0x5eed });
  const s = channelStats(ref.images, 3);
  statsCache.set(key, s);
  return s;
}

/**
 * Per-channel mean and standard deviation of NHWC bytes, in [0, 1] units.
 *
 * @example
 * ```ts
 * const { mean, std } = channelStats(ds.images, 3);
 * ```
 */
export function channelStats(images: Uint8Array, channels: number): { mean: number[]; std: number[] } {
  const sum = new Float64Array(channels), sq = new Float64Array(channels);
  for (let p = 0, c = 0; p < images.length; p++) {
    const v = images[p] / 255;
    sum[c] += v;
    sq[c] += v * v;
    if (++c === channels) c = 0;
  }
  const n = images.length / channels;
  const mean = Array.from(sum, (s) => s / n);
  const std = Array.from(sq, (s, c) => Math.sqrt(Math.max(s / n - mean[c] * mean[c], 1e-12)));
  return { mean, std };
}

/**
 * Loads a split of the synthetic set: train/val from one generated pool (seed `seed`), test from
 * another (a seed derived from `seed`), so the splits never share images. Masks are attached.
 *
 * @example
 * ```ts
 * const ds = loadSynthetic({ split: "test", seed: 3, testSize: 256 });
 * ds.masksOf([0]); // 64 bytes
 * ```
 */
export function loadSynthetic(options: LoadSyntheticOptions = {}): Dataset {
  const {
    split = "train",
    trainSize = 5000,
    testSize = 1000,
    valFraction = 0.1,
    valSeed = 0,
    seed = 0,
    numClasses = 10,
    noise = 0.08,
    clutter = 8,
    aligned = true,
  } = options;
  if (!SPLITS.includes(split)) {
    throw new Error(`loadSynthetic: unknown split "${split}", expected ${SPLITS.join(", ")}`);
  }
  const gen = { numClasses, noise, clutter, aligned };
  const stats = referenceStats(gen);
  const isTest = split === "test";
  const genSeed = isTest ? (Math.imul(seed ^ 0x7e57, 0x9e3779b1) >>> 0) : seed;
  const d = generateSynthetic({ ...gen, size: isTest ? testSize : trainSize, seed: genSeed });
  const all = new InMemoryDataset({
    name: "synthetic",
    classes: d.classes,
    split: isTest ? "test" : "train",
    imageShape: [SYNTHETIC_IMAGE, SYNTHETIC_IMAGE, 3],
    mean: stats.mean,
    std: stats.std,
    images: d.images,
    labels: d.labels,
    masks: d.masks,
    patchGrid: [SYNTHETIC_IMAGE / SYNTHETIC_PATCH, SYNTHETIC_IMAGE / SYNTHETIC_PATCH],
    source: `generateSynthetic(${JSON.stringify({ ...gen, seed: genSeed })})`,
  });
  if (isTest || (split === "train" && valFraction === 0)) return all;
  if (split === "val" && valFraction === 0) {
    throw new Error(`loadSynthetic: split "val" needs valFraction > 0, got ${valFraction}`);
  }
  const parts = stratifiedSplit(d.labels, numClasses, valFraction, valSeed);
  return all.select(split === "train" ? parts.train : parts.val, split);
}
