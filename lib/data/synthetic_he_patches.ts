/**
 * Patches from synthetic H&E slides as a {@link Dataset} (`"synthetic-he"`): 32x32 RGB at 1 µm/px (128 level-0
 * pixels of a 0.25 µm/px slide, the geometry `inferSlide` reads at `level 2, patchSize 32`), labelled tumour when
 * the patch centre lies in a metastasis (as PatchCamelyon labels its centre). Train, val and test come from
 * disjoint slides. Generated once and cached under `<dataDir>/synthetic-he/`.
 *
 * @module
 */
import { join } from "node:path";
import { Rng, writeFileAtomic } from "../util/mod.ts";
import { AUGMENT_HISTOLOGY } from "./augment.ts";
import { type Dataset, InMemoryDataset, type Split, SPLITS } from "./dataset.ts";
import { SyntheticHeSlide } from "../wsi/synthetic_he.ts";

/** Class names: 0 normal, 1 tumour. */
export const SYNTHETIC_HE_CLASSES: readonly string[] = Object.freeze(["normal", "tumour"]);
/** Patch side in pixels, and level-0 pixels per patch pixel. */
export const SYNTHETIC_HE_PATCH = Object.freeze({ size: 32, downsample: 4 });
const VERSION = "v1";
/** The training patches the normalisation statistics come from. */
const STATS_SAMPLE = { size: 256, slides: 4 };

/** Options of {@link loadSyntheticHe}. */
export interface SyntheticHePatchOptions {
  /** Which split (default `"train"`); each split has its own slides. */
  split?: Split;
  /** Patches (default train 6000, val 1000, test 2000). */
  size?: number;
  /** Slides the patches come from (default train 12, val 4, test 6; every other slide has metastases). */
  slides?: number;
  /** Level-0 size of each slide (default `[8192, 6144]`: 2 x 1.5 mm). */
  slideSize?: readonly [number, number];
  /** Base seed of the slides and the sampling (default 0). */
  seed?: number;
  /** Cache folder (default `"data/synthetic-he"`); `false` disables the cache. */
  cacheDir?: string | false;
}

const DEFAULTS: Record<Split, { size: number; slides: number; offset: number }> = {
  train: { size: 6000, slides: 12, offset: 0 },
  val: { size: 1000, slides: 4, offset: 100_000 },
  test: { size: 2000, slides: 6, offset: 200_000 },
};

/**
 * The slide seeds of a split (disjoint between splits); even positions are tumour slides.
 *
 * @example
 * ```ts
 * syntheticHeSlideSeeds("test", 2); // [200000, 200001]
 * ```
 */
export function syntheticHeSlideSeeds(split: Split, slides: number, seed = 0): number[] {
  return Array.from({ length: slides }, (_, i) => seed * 1_000_000 + DEFAULTS[split].offset + i);
}

/**
 * Samples `n` patch centres on one slide: on a tumour slide `tumourShare` of them inside metastases (each
 * region equally likely, so isolated tumour cells are represented), the rest on normal tissue; then renders
 * them. Labels: 1 when the centre is tumour.
 *
 * @example
 * ```ts
 * const p = sampleSyntheticHePatches(SyntheticHeSlide.create(3, { tumour: true }), 100, new Rng(1));
 * ```
 */
export function sampleSyntheticHePatches(
  slide: SyntheticHeSlide,
  n: number,
  rng: Rng,
  tumourShare = 0.8,
): { images: Uint8Array; labels: Uint8Array; x: Float64Array; y: Float64Array } {
  const { size, downsample } = SYNTHETIC_HE_PATCH;
  const half = (size * downsample) / 2;
  const [W, H] = slide.dimensions;
  const images = new Uint8Array(n * size * size * 3), labels = new Uint8Array(n);
  const xs = new Float64Array(n), ys = new Float64Array(n);
  const tumours = slide.spec.tumours;
  for (let i = 0; i < n; i++) {
    const wantTumour = tumours.length > 0 && rng.next() < tumourShare;
    let x = 0, y = 0;
    for (let tries = 0;; tries++) {
      if (tries > 10_000) {
        throw new Error(`sampleSyntheticHePatches(): no ${wantTumour ? "tumour" : "tissue"} found`);
      }
      if (wantTumour) {
        const t = tumours[rng.int(tumours.length)];
        x = t.bbox[0] + rng.next() * (t.bbox[2] - t.bbox[0]);
        y = t.bbox[1] + rng.next() * (t.bbox[3] - t.bbox[1]);
        if (slide.tumourAt(x, y)) break;
      } else {
        x = half + rng.next() * (W - 2 * half);
        y = half + rng.next() * (H - 2 * half);
        if (slide.tissueAt(x, y) && !slide.tumourAt(x, y)) break;
      }
    }
    x = Math.round(x);
    y = Math.round(y);
    xs[i] = x;
    ys[i] = y;
    labels[i] = slide.tumourAt(x, y) ? 1 : 0;
    images.set(slide.readRegion(x - half, y - half, 2, size, size).data, i * size * size * 3);
  }
  return { images, labels, x: xs, y: ys };
}

function channelStats(images: Uint8Array): [number[], number[]] {
  const sum = [0, 0, 0], sq = [0, 0, 0], m = images.length / 3;
  for (let i = 0; i < m; i++) {
    for (let c = 0; c < 3; c++) {
      const v = images[i * 3 + c] / 255;
      sum[c] += v;
      sq[c] += v * v;
    }
  }
  const mean = sum.map((s) => s / m);
  return [mean, sq.map((s, c) => Math.sqrt(Math.max(1e-6, s / m - mean[c] ** 2)))];
}

/**
 * Loads (generating and caching on first use) a split of synthetic H&E patches; the dataset declares the
 * histology augmentation (dihedral 8 + HED stain jitter).
 *
 * @example
 * ```ts
 * const train = await loadSyntheticHe({ split: "train" });
 * train.augmentation; // AUGMENT_HISTOLOGY
 * ```
 */
export async function loadSyntheticHe(opts: SyntheticHePatchOptions = {}): Promise<Dataset> {
  const split = opts.split ?? "train";
  if (!SPLITS.includes(split)) {
    throw new Error(`loadSyntheticHe: unknown split "${split}", expected ${SPLITS.join(", ")}`);
  }
  const d = DEFAULTS[split];
  const size = opts.size ?? d.size, slides = opts.slides ?? d.slides, seed = opts.seed ?? 0;
  const [sw, sh] = opts.slideSize ?? [8192, 6144];
  for (const [k, v] of Object.entries({ size, slides })) {
    if (!(Number.isInteger(v) && v > 0)) {
      throw new Error(`loadSyntheticHe: ${k} must be a positive integer, got ${v}`);
    }
  }
  const { size: side } = SYNTHETIC_HE_PATCH, per = side * side * 3;
  const key = `${VERSION}_${split}_n${size}_s${slides}_${sw}x${sh}_seed${seed}`;
  const file = opts.cacheDir === false
    ? undefined
    : join(opts.cacheDir ?? join("data", "synthetic-he"), `${key}.bin`);
  let images: Uint8Array | undefined, labels: Uint8Array | undefined;
  if (file) {
    try {
      const bytes = await Deno.readFile(file);
      if (bytes.length === size * (per + 1)) {
        images = bytes.subarray(0, size * per);
        labels = bytes.subarray(size * per);
      }
    } catch { /* not cached yet */ }
  }
  const seeds = syntheticHeSlideSeeds(split, slides, seed);
  if (!images || !labels) {
    images = new Uint8Array(size * per);
    labels = new Uint8Array(size);
    const rng = new Rng(seed * 7919 + d.offset + 1);
    let o = 0;
    seeds.forEach((s, i) => {
      const n = Math.floor(size / slides) + (i < size % slides ? 1 : 0);
      const slide = SyntheticHeSlide.create(s, { width: sw, height: sh, tumour: i % 2 === 0 });
      const p = sampleSyntheticHePatches(slide, n, rng.fork());
      images!.set(p.images, o * per);
      labels!.set(p.labels, o);
      o += n;
    });
    // interleave slides
    const order = rng.fork().permutation(size);
    const im2 = new Uint8Array(size * per), lb2 = new Uint8Array(size);
    for (let i = 0; i < size; i++) {
      im2.set(images.subarray(order[i] * per, (order[i] + 1) * per), i * per);
      lb2[i] = labels[order[i]];
    }
    images = im2;
    labels = lb2;
    if (file) {
      const out = new Uint8Array(size * (per + 1));
      out.set(images);
      out.set(labels, size * per);
      await writeFileAtomic(file, out);
    }
  }
  // normalisation statistics of a fixed sample of training patches (the same for every split and size)
  let mean: readonly number[], std: readonly number[];
  if (split === "train" && size === STATS_SAMPLE.size && slides === STATS_SAMPLE.slides) {
    [mean, std] = channelStats(images);
  } else {
    const sample = await loadSyntheticHe({ ...opts, split: "train", ...STATS_SAMPLE });
    [mean, std] = [sample.mean, sample.std];
  }
  return new InMemoryDataset({
    name: "synthetic-he",
    classes: SYNTHETIC_HE_CLASSES,
    split,
    imageShape: [side, side, 3],
    mean,
    std,
    images,
    labels,
    source: `synthetic H&E, slides ${seeds[0]}..${seeds[seeds.length - 1]} (${sw}x${sh}), ${size} patches` +
      (file ? `, cached in ${file}` : ""),
    augmentation: AUGMENT_HISTOLOGY,
  });
}
