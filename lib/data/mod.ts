/**
 * Datasets for the experiments: CIFAR-10 (binary version, downloader), Fashion-MNIST (IDX), a
 * synthetic "where is the object" set with ground-truth patch masks, one {@link Dataset} interface,
 * seeded splits/subsets, and fast batch assembly with augmentation.
 *
 * @example
 * ```ts
 * import { AUGMENT_CIFAR, loadDataset } from "./lib/data/mod.ts";
 * const train = await loadDataset("auto", { split: "train", subset: 5000 });
 * for (const { x, y } of train.batches({ batchSize: 128, shuffle: true, seed: 1, augment: AUGMENT_CIFAR })) {
 *   x.dispose(); y.dispose();
 * }
 * ```
 *
 * @module
 */
export * from "./dataset.ts";
export * from "./augment.ts";
export * from "./split.ts";
export * from "./cifar10.ts";
export * from "./cifar10_download.ts";
export * from "./download.ts";
export * from "./idx.ts";
export * from "./fashion_mnist.ts";
export * from "./synthetic.ts";
export * from "./load_dataset.ts";
export * from "./dataset_cache.ts";
export * from "./pcam.ts";
export * from "./pcam_download.ts";
export * from "./synthetic_he_patches.ts";
