/**
 * Weights: safetensors reading/writing, state dicts in timm names with PyTorch layouts, pretrained
 * checkpoints (local file or Hugging Face hub), position-embedding resampling and head replacement.
 *
 * @example
 * ```ts
 * import { loadStateDict, readSafetensors } from "./lib/weights/mod.ts";
 * loadStateDict(model, (await readSafetensors("model.safetensors")).tensors);
 * ```
 *
 * @module
 */
export * from "./safetensors.ts";
export * from "./state_dict.ts";
export * from "./resample.ts";
export * from "./pretrained.ts";
export * from "./model_file.ts";
