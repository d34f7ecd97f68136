/**
 * Slide patches as a {@link Dataset} (the interface CIFAR-10 uses), so the ResNet18, the ViT and the hybrid
 * train on slide patches with no other change.
 *
 * @module
 */
import { type Dataset, InMemoryDataset, type Split } from "../data/dataset.ts";
import { Progress } from "../util/mod.ts";
import { type PatchCoords, readCoordsFile } from "./coords_file.ts";
import { readPatch } from "./read_patch.ts";
import { Slide } from "./slide.ts";
import { mapConcurrent } from "./extract_patches.ts";
import { Rng } from "../util/mod.ts";

/** One slide's contribution: its file and its patch coordinates (a `.coords` path or the object). */
export interface PatchSource {
  slidePath: string;
  coords: PatchCoords | string;
}

/** Options of {@link loadPatchDataset}. */
export interface PatchDatasetOptions {
  /** Side of the images in the dataset (patches are area-resized; default: the patch size). */
  imageSize?: number;
  /** Split name recorded in the dataset (default `"train"`). */
  split?: Split;
  /** Class names (default `["normal", "tumour"]`); patch labels index into it (unlabelled patches: 0). */
  classes?: readonly string[];
  /** Take at most this many patches per slide, a seeded random sample (default all). */
  maxPerSlide?: number;
  /** Seed of the per-slide sampling (default 0). */
  seed?: number;
  /** Normalisation statistics; default: computed per channel from the loaded patches. */
  mean?: readonly number[];
  /** See `mean`. */
  std?: readonly number[];
  /** Dataset name (default `"wsi-patches"`). */
  name?: string;
  /** Show a progress bar (default true). */
  progress?: boolean;
}

/**
 * Reads the patches listed by coordinate files from their slides into an in-memory {@link Dataset}
 * (`x`: `[B, S, S, 3]` float32 normalised, `y`: int32 labels). Memory: `S * S * 3` bytes per patch.
 *
 * @example
 * ```ts
 * const ds = await loadPatchDataset([{ slidePath: "tumor_001.tif", coords: "data/patches/tumor_001.coords" }], {
 *   imageSize: 32, maxPerSlide: 2000,
 * });
 * for (const { x, y } of ds.batches({ batchSize: 64, shuffle: true })) { x.dispose(); y.dispose(); }
 * ```
 */
export async function loadPatchDataset(
  sources: readonly PatchSource[],
  opts: PatchDatasetOptions = {},
): Promise<Dataset> {
  if (sources.length === 0) throw new Error("loadPatchDataset(): expected at least one slide, got []");
  const classes = opts.classes ?? ["normal", "tumour"];
  const all: { slidePath: string; coords: PatchCoords; picks: Int32Array }[] = [];
  for (const s of sources) {
    const coords = typeof s.coords === "string" ? await readCoordsFile(s.coords) : s.coords;
    const n = coords.x.length;
    let picks = Int32Array.from({ length: n }, (_, i) => i);
    if (opts.maxPerSlide !== undefined && opts.maxPerSlide < n) {
      picks = new Rng(opts.seed ?? 0).fork().permutation(n).slice(0, opts.maxPerSlide).sort();
    }
    if (coords.labels) {
      for (const i of picks) {
        if (coords.labels[i] >= classes.length) {
          throw new Error(
            `loadPatchDataset(): label ${
              coords.labels[i]
            } of patch ${i} in "${coords.slideId}" is not in 0..${classes.length - 1} (classes ${
              JSON.stringify(classes)
            })`,
          );
        }
      }
    }
    all.push({ slidePath: s.slidePath, coords, picks });
  }
  const size = opts.imageSize ?? all[0].coords.patchSize;
  const per = size * size * 3;
  const total = all.reduce((a, s) => a + s.picks.length, 0);
  const images = new Uint8Array(total * per);
  const labels = new Uint8Array(total);
  const bar = new Progress(total, { label: "patches", unit: "patch", silent: opts.progress === false });
  let offset = 0;
  for (const s of all) {
    const slide = Slide.open(s.slidePath);
    try {
      const c = s.coords, size0 = c.patchSize * c.downsample, base = offset;
      await mapConcurrent(Array.from(s.picks), 4, async (i, k) => {
        const img = await readPatch(slide, c.x[i], c.y[i], size0, size);
        images.set(img.data, (base + k) * per);
        labels[base + k] = c.labels ? c.labels[i] : 0;
        bar.increment();
      });
      offset += s.picks.length;
    } finally {
      slide.close();
    }
  }
  await bar.stop();
  let mean = opts.mean, std = opts.std;
  if (!mean || !std) {
    const sum = [0, 0, 0], sq = [0, 0, 0];
    for (let i = 0; i < images.length; i++) {
      const v = images[i] / 255;
      sum[i % 3] += v;
      sq[i % 3] += v * v;
    }
    const n = Math.max(1, images.length / 3);
    mean ??= sum.map((s) => s / n);
    std ??= sq.map((q, ch) => Math.max(1e-3, Math.sqrt(Math.max(0, q / n - (sum[ch] / n) ** 2))));
  }
  return new InMemoryDataset({
    name: opts.name ?? "wsi-patches",
    classes,
    split: opts.split ?? "train",
    imageShape: [size, size, 3],
    mean,
    std,
    images,
    labels,
    source: all.map((s) => s.slidePath).join(", "),
  });
}
