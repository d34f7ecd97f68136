/**
 * Whole-model files: {@link saveModel} writes a model's state in PyTorch layouts plus its config in the
 * safetensors metadata (`format: "pt"`, `config`), {@link loadModel} rebuilds the model from such a file.
 *
 * @module
 */
import { createModelFromConfig } from "../models/registry.ts";
import type { Model, ModelConfig } from "../models/types.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { exportStateDict, loadStateDict } from "./state_dict.ts";

/**
 * Writes `model` (all state incl. batch-norm running stats, PyTorch layouts) and its config to `path`
 * atomically. `metadata` adds string fields.
 *
 * @example
 * ```ts
 * await saveModel(model, "results/runs/r1/model.safetensors", { commit: "abc123" });
 * ```
 */
export async function saveModel(
  model: Model,
  path: string,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeSafetensors(path, await exportStateDict(model), {
    ...metadata,
    format: "pt",
    config: JSON.stringify(model.config),
  });
}

/**
 * Rebuilds a model from a file written by {@link saveModel} (or any safetensors file whose metadata
 * holds our `config`). The caller disposes the model.
 *
 * @example
 * ```ts
 * const model = await loadModel("results/runs/r1/model.safetensors");
 * ```
 */
export async function loadModel(path: string): Promise<Model> {
  const { tensors, metadata } = await readSafetensors(path);
  if (!metadata.config) {
    throw new Error(
      `loadModel: "${path}" has no "config" in its metadata; load it with loadStateDict into a model you create`,
    );
  }
  let config: ModelConfig;
  try {
    config = JSON.parse(metadata.config);
  } catch (e) {
    throw new Error(`loadModel: "${path}" metadata config is not JSON (${(e as Error).message})`);
  }
  const model = createModelFromConfig(config);
  try {
    loadStateDict(model, tensors, { source: path });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
