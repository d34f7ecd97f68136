/**
 * Whole-slide images: OpenSlide through Deno FFI (`--unstable-ffi`), CLAM-style tissue segmentation,
 * patch grids and extraction, ASAP XML annotations, patch datasets and slide-level inference.
 *
 * @example
 * ```ts
 * import { extractPatches, Slide, segmentTissue } from "./lib/wsi/mod.ts";
 * using slide = Slide.open("tumor_001.tif");
 * const mask = segmentTissue(slide, "default");
 * await extractPatches("tumor_001.tif", { outDir: "data/patches", patchSize: 256 });
 * ```
 *
 * @module
 */
export * from "./openslide_ffi.ts";
export * from "./pixels.ts";
export * from "./best_level.ts";
export * from "./slide.ts";
export * from "./image_ops.ts";
export * from "./tissue_mask.ts";
export * from "./coords_file.ts";
export * from "./patch_grid.ts";
export * from "./annotations.ts";
export * from "./extract_patches.ts";
export * from "./read_patch.ts";
export * from "./patch_dataset.ts";
export * from "./slide_inference.ts";
export * from "./synthetic_slide.ts";
export * from "./synthetic_he.ts";
export * from "./slide_eval.ts";
export * from "./slide_steps.ts";
export * from "./slide_list.ts";
export * from "./slide_report.ts";
export * from "./synthetic_slide_set.ts";
// The BullMQ queue (slide_queue.ts) is imported on its own, so that importing the library loads no Redis client.
