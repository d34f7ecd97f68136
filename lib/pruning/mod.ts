/**
 * Token pruning: selection of the patch tokens a ViT runs on. Hard top-k with real gathering
 * ({@link selectTopK}), the keep-ratio schedule as data, strategies behind one interface (none, random,
 * cnn, attention, merge), ToMe bipartite merging, and the straight-through top-k mask for training.
 *
 * @example
 * ```ts
 * import { createStrategy, selectTopK, singleStage } from "./lib/pruning/mod.ts";
 * ```
 *
 * @module
 */
export * from "./select_top_k.ts";
export * from "./batch_gather.ts";
export * from "./detach.ts";
export * from "./keep_schedule.ts";
export * from "./topk_mask.ts";
export * from "./token_merging.ts";
export * from "./strategies.ts";
export * from "./masked_forward.ts";
export * from "./token_dropout.ts";
export * from "./spread.ts";
