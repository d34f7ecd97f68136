/**
 * The one dataset interface every loader returns, and its in-memory implementation: images are kept
 * as `Uint8Array` (NHWC, 0..255) and float batches are assembled on demand, augmented and normalised.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { Rng } from "../util/mod.ts";
import { type AugmentOptions, fillBatch } from "./augment.ts";
import { balancedSubset } from "./split.ts";

/** Dataset splits. `"val"` is a fixed-seed, class-stratified hold-out of the training files. */
export type Split = "train" | "val" | "test";

/** Valid {@link Split} names, for argument validation. */
export const SPLITS: readonly Split[] = ["train", "val", "test"];

/** One batch: consumer disposes `x` and `y`. */
export interface Batch {
  /** Images, `[B, H, W, C]` float32 (normalised unless asked otherwise). */
  x: tf.Tensor4D;
  /** Labels, `[B]` int32. */
  y: tf.Tensor1D;
  /** Positions of the images in the dataset (0..size-1), in batch order. */
  indices: Int32Array;
}

/** Options of {@link Dataset.batches} and {@link Dataset.getBatch}. */
export interface BatchOptions {
  /** Images per batch. */
  batchSize: number;
  /** Shuffle the order (seeded by `seed` and `epoch`; default false). */
  shuffle?: boolean;
  /** Seed of shuffling and augmentation (default 0). */
  seed?: number;
  /** Epoch number, mixed into the seed so every epoch has its own order (default 0). */
  epoch?: number;
  /** Drop the last incomplete batch (default false). */
  dropLast?: boolean;
  /** Augmentations applied while the batch is assembled (default none). */
  augment?: AugmentOptions;
  /** Normalise with the dataset's mean/std (default true); false leaves values in [0, 1]. */
  normalize?: boolean;
}

/**
 * What every dataset offers: metadata, the raw bytes, and batched iteration.
 *
 * @example
 * ```ts
 * const ds = await loadDataset("synthetic", { split: "train" });
 * for (const { x, y } of ds.batches({ batchSize: 128, shuffle: true, seed: 1 })) {
 *   // ... train step ...
 *   x.dispose(); y.dispose();
 * }
 * ```
 */
export interface Dataset {
  /** `"cifar10"`, `"fashion-mnist"` or `"synthetic"`. */
  readonly name: string;
  /** Class names; labels index into this list. */
  readonly classes: readonly string[];
  /** Which split this is. */
  readonly split: Split;
  /** Number of images. */
  readonly size: number;
  /** `[H, W, C]` of one image (`[32, 32, 3]` for all built-in datasets). */
  readonly imageShape: readonly [number, number, number];
  /** Per-channel mean in [0, 1] units (training-set statistics), used by normalisation. */
  readonly mean: readonly number[];
  /** Per-channel standard deviation in [0, 1] units. */
  readonly std: readonly number[];
  /** Images, NHWC bytes, `size * H * W * C` (shared with the loader cache: treat as read-only). */
  readonly images: Uint8Array;
  /** Labels, one byte per image. */
  readonly labels: Uint8Array;
  /** Where the data came from (a folder, or the generator and its seed). */
  readonly source: string;
  /** Why this dataset was chosen (set by `loadDataset("auto")`), for logs and `run.json`. */
  readonly reason?: string;
  /**
   * Ground-truth patch masks (synthetic set only): `size * gh * gw` bytes, 1 where the object covers
   * the patch, row-major over the `patchGrid` (8x8 patches of 4x4 pixels).
   */
  readonly masks?: Uint8Array;
  /** `[gh, gw]` of the mask grid when `masks` is present. */
  readonly patchGrid?: readonly [number, number];
  /**
   * The training augmentation that suits this data (e.g. histology: dihedral + HED stain jitter); training
   * uses it instead of the CIFAR recipe when set.
   */
  readonly augmentation?: Readonly<AugmentOptions>;
  /** Number of batches {@link Dataset.batches} yields. */
  numBatches(batchSize: number, dropLast?: boolean): number;
  /** Yields batches over the whole dataset; every tensor belongs to the consumer. */
  batches(options: BatchOptions): Generator<Batch, void, undefined>;
  /** One batch of the given positions (augmented with `Rng(seed)` when `augment` is set). */
  getBatch(
    indices: ArrayLike<number>,
    options?: Omit<BatchOptions, "batchSize" | "shuffle" | "dropLast">,
  ): Batch;
  /** A new dataset holding the given positions (masks and metadata follow). */
  select(indices: ArrayLike<number>, split?: Split): Dataset;
  /** A class-balanced random subset of `n` images (seeded), for quick runs. */
  subset(n: number, seed?: number): Dataset;
  /** Patch masks of the given positions, `indices.length * gh * gw` bytes (synthetic set only). */
  masksOf(indices: ArrayLike<number>): Uint8Array;
  /** Label counts per class. */
  classCounts(): number[];
}

/** Everything {@link InMemoryDataset} is built from. */
export interface DatasetInit {
  name: string;
  classes: readonly string[];
  split: Split;
  imageShape: readonly [number, number, number];
  mean: readonly number[];
  std: readonly number[];
  images: Uint8Array;
  labels: Uint8Array;
  source: string;
  reason?: string;
  masks?: Uint8Array;
  patchGrid?: readonly [number, number];
  augmentation?: Readonly<AugmentOptions>;
}

/** Mixes a seed and an epoch into one 32-bit seed. */
function mix(seed: number, epoch: number): number {
  let h = (Math.floor(seed) >>> 0) ^ Math.imul((Math.floor(epoch) + 1) >>> 0, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A dataset held in memory as bytes. Loaders build it; use it directly for your own arrays.
 *
 * @example
 * ```ts
 * const ds = new InMemoryDataset({
 *   name: "toy", classes: ["a", "b"], split: "train", imageShape: [32, 32, 3],
 *   mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25],
 *   images: new Uint8Array(2 * 3072), labels: new Uint8Array([0, 1]), source: "memory",
 * });
 * const { x, y } = ds.getBatch([0, 1]); x.dispose(); y.dispose();
 * ```
 */
export class InMemoryDataset implements Dataset {
  readonly name: string;
  readonly classes: readonly string[];
  readonly split: Split;
  readonly size: number;
  readonly imageShape: readonly [number, number, number];
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly images: Uint8Array;
  readonly labels: Uint8Array;
  readonly source: string;
  readonly reason?: string;
  readonly masks?: Uint8Array;
  readonly patchGrid?: readonly [number, number];
  readonly augmentation?: Readonly<AugmentOptions>;

  constructor(init: DatasetInit) {
    const [h, w, c] = init.imageShape;
    const per = h * w * c;
    const what = `dataset "${init.name}" (${init.source})`;
    if (![h, w, c].every((v) => Number.isInteger(v) && v > 0)) {
      throw new Error(`${what}: imageShape must be 3 positive integers [H, W, C], got [${init.imageShape}]`);
    }
    if (init.images.length % per !== 0) {
      throw new Error(
        `${what}: images has ${init.images.length} bytes, expected a multiple of ${h}x${w}x${c}`,
      );
    }
    const size = init.images.length / per;
    if (init.labels.length !== size) {
      throw new Error(`${what}: ${size} images but ${init.labels.length} labels`);
    }
    if (init.mean.length !== c || init.std.length !== c) {
      throw new Error(`${what}: mean/std need ${c} values, got ${init.mean.length}/${init.std.length}`);
    }
    for (let i = 0; i < size; i++) {
      if (init.labels[i] >= init.classes.length) {
        throw new Error(
          `${what}: label ${init.labels[i]} of image ${i} is not in 0..${init.classes.length - 1}`,
        );
      }
    }
    if (init.masks) {
      const g = init.patchGrid;
      if (!g || init.masks.length !== size * g[0] * g[1]) {
        throw new Error(`${what}: masks has ${init.masks.length} bytes, expected ${size} x patchGrid [${g}]`);
      }
    }
    this.name = init.name;
    this.classes = init.classes;
    this.split = init.split;
    this.size = size;
    this.imageShape = init.imageShape;
    this.mean = init.mean;
    this.std = init.std;
    this.images = init.images;
    this.labels = init.labels;
    this.source = init.source;
    this.reason = init.reason;
    this.masks = init.masks;
    this.patchGrid = init.patchGrid;
    this.augmentation = init.augmentation;
  }

  numBatches(batchSize: number, dropLast = false): number {
    checkBatchSize(batchSize);
    return dropLast ? Math.floor(this.size / batchSize) : Math.ceil(this.size / batchSize);
  }

  *batches(options: BatchOptions): Generator<Batch, void, undefined> {
    const { batchSize, shuffle = false, seed = 0, epoch = 0, dropLast = false } = options;
    checkBatchSize(batchSize);
    const rng = new Rng(mix(seed, epoch));
    const order = shuffle
      ? rng.fork().permutation(this.size)
      : Int32Array.from({ length: this.size }, (_, i) => i);
    const augRng = rng.fork();
    const nb = this.numBatches(batchSize, dropLast);
    for (let b = 0; b < nb; b++) {
      const idx = order.slice(b * batchSize, Math.min(this.size, (b + 1) * batchSize));
      yield this.build(idx, options, augRng);
    }
  }

  getBatch(
    indices: ArrayLike<number>,
    options: Omit<BatchOptions, "batchSize" | "shuffle" | "dropLast"> = {},
  ): Batch {
    return this.build(Int32Array.from(indices), options, new Rng(mix(options.seed ?? 0, options.epoch ?? 0)));
  }

  private build(idx: Int32Array, options: Omit<BatchOptions, "batchSize">, rng: Rng): Batch {
    const [h, w, c] = this.imageShape;
    const n = idx.length;
    const out = new Float32Array(n * h * w * c);
    fillBatch({
      src: this.images,
      srcScale: 1 / 255,
      shape: this.imageShape,
      indices: idx,
      out,
      normalize: options.normalize === false ? undefined : { mean: this.mean, std: this.std },
      augment: options.augment,
      rng,
    });
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) labels[i] = this.labels[idx[i]];
    const x = tf.tensor4d(out, [n, h, w, c], "float32");
    const y = tf.tensor1d(labels, "int32");
    return { x, y, indices: idx };
  }

  select(indices: ArrayLike<number>, split: Split = this.split): Dataset {
    const [h, w, c] = this.imageShape;
    const per = h * w * c;
    const n = indices.length;
    const images = new Uint8Array(n * per);
    const labels = new Uint8Array(n);
    const g = this.patchGrid ? this.patchGrid[0] * this.patchGrid[1] : 0;
    const masks = this.masks ? new Uint8Array(n * g) : undefined;
    for (let i = 0; i < n; i++) {
      const j = indices[i];
      if (!(Number.isInteger(j) && j >= 0 && j < this.size)) {
        throw new Error(`select: index ${j} at position ${i} is outside 0..${this.size - 1}`);
      }
      images.set(this.images.subarray(j * per, (j + 1) * per), i * per);
      labels[i] = this.labels[j];
      if (masks) masks.set(this.masks!.subarray(j * g, (j + 1) * g), i * g);
    }
    return new InMemoryDataset({ ...this.init(), split, images, labels, masks });
  }

  subset(n: number, seed = 0): Dataset {
    return this.select(balancedSubset(this.labels, this.classes.length, n, seed));
  }

  masksOf(indices: ArrayLike<number>): Uint8Array {
    if (!this.masks || !this.patchGrid) {
      throw new Error(`masksOf: dataset "${this.name}" has no patch masks (only the synthetic set does)`);
    }
    const g = this.patchGrid[0] * this.patchGrid[1];
    const out = new Uint8Array(indices.length * g);
    for (let i = 0; i < indices.length; i++) {
      const j = indices[i];
      if (!(j >= 0 && j < this.size)) throw new Error(`masksOf: index ${j} is outside 0..${this.size - 1}`);
      out.set(this.masks.subarray(j * g, (j + 1) * g), i * g);
    }
    return out;
  }

  classCounts(): number[] {
    const counts = new Array<number>(this.classes.length).fill(0);
    for (let i = 0; i < this.size; i++) counts[this.labels[i]]++;
    return counts;
  }

  private init(): DatasetInit {
    return {
      name: this.name,
      classes: this.classes,
      split: this.split,
      imageShape: this.imageShape,
      mean: this.mean,
      std: this.std,
      images: this.images,
      labels: this.labels,
      source: this.source,
      reason: this.reason,
      masks: this.masks,
      patchGrid: this.patchGrid,
      augmentation: this.augmentation,
    };
  }
}

function checkBatchSize(batchSize: number): void {
  if (!(Number.isInteger(batchSize) && batchSize > 0)) {
    throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  }
}
