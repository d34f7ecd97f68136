/**
 * Initialising a model from an earlier run folder's `model.safetensors` (PyTorch layout, timm names;
 * the hybrid's parameters are `cnn.*` and `vit.*`).
 *
 * @module
 */
import { join } from "node:path";
import type { Model } from "../models/mod.ts";
import { loadStateDict, type RawTensor, readSafetensors } from "../weights/mod.ts";

/** What an earlier run's weights can initialise. */
export type InitPart = "all" | "cnn";

/** What {@link initFromRun} loaded. */
export interface InitFromRunReport {
  /** The file read. */
  file: string;
  /** Family of the source run, from its tensor names. */
  sourceFamily: "hybrid" | "single";
  /** Name prefix in the target model that received the tensors (`""`, `"vit."` or `"cnn."`). */
  prefix: string;
  /** Number of tensors loaded. */
  loaded: number;
}

async function readRunWeights(
  dir: string,
  source: string,
): Promise<{ file: string; tensors: Map<string, RawTensor> }> {
  const file = dir.endsWith(".safetensors") ? dir : join(dir, "model.safetensors");
  try {
    await Deno.stat(file);
  } catch {
    throw new Error(
      `${source}: "${file}" does not exist; expected a finished run folder (with model.safetensors, ` +
        `written when a run completes) or a .safetensors file`,
    );
  }
  return { file, tensors: (await readSafetensors(file)).tensors };
}

function withPrefix(tensors: Map<string, RawTensor>, prefix: string): Map<string, RawTensor> {
  return new Map(
    [...tensors].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]),
  );
}

/**
 * Copies an earlier run's weights into `model`. With `part: "all"` (default): a hybrid run initialises a
 * hybrid (all of it) or a ViT (the hybrid's `vit.*`); a ViT run initialises a ViT or a hybrid's ViT
 * (`vit.*`); a ResNet18 run a ResNet18. With `part: "cnn"`: a hybrid run's `cnn.*` (scorer backbone,
 * importance and classification heads) go into a hybrid's CNN. Shapes and names must match exactly:
 * otherwise one Error lists every missing, unknown and mis-shaped tensor, and nothing is changed.
 *
 * @example
 * ```ts
 * const model = createModel("vit_tiny", { numClasses: 10 });
 * await initFromRun(model, "results/runs/vit_none_k1_cifar10_cpu_s0");
 * ```
 */
export async function initFromRun(
  model: Model,
  dir: string,
  options: { part?: InitPart; source?: string } = {},
): Promise<InitFromRunReport> {
  const part = options.part ?? "all";
  const source = options.source ?? "initFromRun";
  const { file, tensors } = await readRunWeights(dir, source);
  const names = [...tensors.keys()];
  const isHybrid = names.length > 0 && names.every((k) => k.startsWith("cnn.") || k.startsWith("vit."));
  let from = tensors;
  let prefix = "";
  if (part === "cnn") {
    if (model.family !== "hybrid") {
      throw new Error(`${source}: initialising a CNN scorer needs a hybrid model; got a ${model.family}`);
    }
    if (!isHybrid) {
      throw new Error(
        `${source}: "${file}" is not a hybrid run (no cnn.*/vit.* tensors); expected a hybrid run folder`,
      );
    }
    from = withPrefix(tensors, "cnn.");
    prefix = "cnn.";
  } else if (part === "all") {
    if (isHybrid && model.family === "vit") from = withPrefix(tensors, "vit.");
    else if (!isHybrid && model.family === "hybrid") {
      prefix = "vit.";
      // A hybrid with CNN tokens embeds feature maps, not pixels: a pixel ViT's patch embedding does not
      // apply (other shapes); everything else (tokens, position embedding, blocks, head) does.
      if ((model.config as { tokens?: string }).tokens === "cnn") {
        from = new Map([...tensors].filter(([k]) => !k.startsWith("patch_embed.proj.")));
      }
    } else if (isHybrid && model.family !== "hybrid") {
      throw new Error(
        `${source}: "${file}" holds a hybrid; it can initialise a hybrid or a ViT, not a ${model.family}`,
      );
    }
  } else {
    throw new Error(`${source}: part ${JSON.stringify(part)} is not "all" or "cnn"`);
  }
  const r = loadStateDict(model, from, { prefix, source: file });
  return { file, sourceFamily: isHybrid ? "hybrid" : "single", prefix, loaded: r.loaded.length };
}
