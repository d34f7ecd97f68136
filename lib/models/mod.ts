/**
 * Models of the study: {@link ResNet18} (classification + importance heads), {@link ViT} (timm layout,
 * real token pruning) and the CNN-ViT {@link Hybrid}, with a registry ({@link createModel},
 * {@link listModels}).
 *
 * @example
 * ```ts
 * import { createModel } from "./lib/models/mod.ts";
 * const model = createModel("hybrid_tiny", { keepRatio: 0.5 });
 * ```
 *
 * @module
 */
export * from "./types.ts";
export * from "./layers.ts";
export * from "./param_store.ts";
export * from "./resnet18.ts";
export * from "./vit.ts";
export * from "./hybrid.ts";
export * from "./registry.ts";
