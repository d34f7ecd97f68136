/**
 * The whole library through one door: everything a notebook or a script needs, from one import.
 *
 * Each folder's `mod.ts` is re-exported as is. Two names exist in two folders with different meanings and
 * are exported here under distinct names: `Rgb` is the image buffer of `lib/viz` (the WSI colour triple is
 * `RgbColor`), and `SyntheticShape` is the shape of the synthetic image dataset of `lib/data` (the WSI
 * synthetic slide's is `SyntheticSlideShape`). `tf` is the tfjs-core namespace the library computes with.
 *
 * @example
 * ```ts
 * import { createModel, initBackend, loadDataset, show, tf } from "./lib/mod.ts";
 * await initBackend();
 * const model = createModel("vit_tiny", { numClasses: 10 });
 * ```
 *
 * @module
 */
export * as tf from "@tensorflow/tfjs-core";
export * from "./backend/mod.ts";
export * from "./data/mod.ts";
export * from "./experiment/mod.ts";
export * from "./experiment/study.ts";
export * from "./experiment/cam.ts";
export * from "./experiment/equal_cost.ts";
export * from "./metrics/mod.ts";
export * from "./models/mod.ts";
export * from "./pruning/mod.ts";
export * from "./report/mod.ts";
export * from "./train/mod.ts";
export * from "./util/mod.ts";
export * from "./viz/mod.ts";
export * from "./weights/mod.ts";
export * from "./wsi/mod.ts";
export * from "./profile.ts";

// Names exported by two folders: the explicit exports below win over the `export *` lines above.
export type { SyntheticShape } from "./data/mod.ts";
export type { Rgb } from "./viz/mod.ts";
export type { Rgb as RgbColor, SyntheticShape as SyntheticSlideShape } from "./wsi/mod.ts";
export type { EvaluateOptions } from "./train/mod.ts";
export type { EvaluateOptions as SlideEvaluateOptions } from "./wsi/mod.ts";
