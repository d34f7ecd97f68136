/**
 * Token pruning: selection of the patch tokens a ViT runs on.
 *
 * @example
 * ```ts
 * import { selectTopK } from "./lib/pruning/mod.ts";
 * ```
 *
 * @module
 */
export * from "./select_top_k.ts";
