/**
 * The model registry: named presets, {@link createModel} with overrides, {@link listModels}, and
 * {@link createModelFromConfig} for configs read back from checkpoints (`run.json`, safetensors metadata).
 *
 * @module
 */
import { Hybrid } from "./hybrid.ts";
import { ResNet18 } from "./resnet18.ts";
import { ViT } from "./vit.ts";
import type { HybridConfig, Model, ModelConfig, ResNetConfig, ViTConfig } from "./types.ts";

const resnetCifar = (width: number): ResNetConfig => ({
  model: "resnet18",
  numClasses: 10,
  width,
  stem: "cifar",
  imgSize: 32,
});

const vit32 = (embedDim: number, depth: number, numHeads: number): ViTConfig => ({
  model: "vit",
  numClasses: 10,
  imgSize: 32,
  patchSize: 4,
  embedDim,
  depth,
  numHeads,
  mlpRatio: 4,
});

const vit224 = (embedDim: number, numHeads: number): ViTConfig => ({
  model: "vit",
  numClasses: 1000,
  imgSize: 224,
  patchSize: 16,
  embedDim,
  depth: 12,
  numHeads,
  mlpRatio: 4,
});

const hybrid = (vit: ViTConfig, scorerWidth: number, scoreStage: number): HybridConfig => ({
  model: "hybrid",
  vit,
  resnet: { ...resnetCifar(scorerWidth), numClasses: vit.numClasses, imgSize: vit.imgSize },
  scoreStage,
  keepRatio: 0.5,
});

/** Registered presets. CIFAR-sized ones take 32x32 input and 10 classes. */
const PRESETS: Record<string, { config: ModelConfig; description: string }> = {
  resnet18: {
    config: resnetCifar(64),
    description: "ResNet18, CIFAR stem (3x3, no max-pool), 32px, 10 classes",
  },
  resnet18_imagenet: {
    config: { model: "resnet18", numClasses: 1000, width: 64, stem: "imagenet", imgSize: 224 },
    description: "ResNet18, ImageNet stem (7x7/2 + max-pool), 224px, 1000 classes (timm resnet18)",
  },
  resnet18_test: { config: resnetCifar(8), description: "ResNet18 at width 8 (tests)" },
  vit_tiny: { config: vit32(192, 12, 3), description: "ViT-Tiny (192/12/3), patch 4 at 32px: 64 tokens" },
  vit_small: { config: vit32(384, 12, 6), description: "ViT-Small (384/12/6), patch 4 at 32px: 64 tokens" },
  vit_tiny_patch16_224: { config: vit224(192, 3), description: "ViT-Ti/16 at 224px, 1000 classes (timm)" },
  vit_small_patch16_224: { config: vit224(384, 6), description: "ViT-S/16 at 224px, 1000 classes (timm)" },
  vit_test: { config: vit32(64, 2, 4), description: "ViT 64/2/4, patch 4 at 32px (tests, parity size)" },
  hybrid_tiny: {
    config: hybrid(vit32(192, 12, 3), 16, 2),
    description: "ResNet18 w16 scorer (stem..layer2, 16x16 map pooled to 8x8) + ViT-Tiny, keep 0.5",
  },
  hybrid_small: {
    config: hybrid(vit32(384, 12, 6), 16, 2),
    description: "ResNet18 w16 scorer (stem..layer2) + ViT-Small, keep 0.5",
  },
  hybrid_small_patch16_224: {
    config: {
      ...hybrid(vit224(384, 6), 16, 1),
      resnet: { model: "resnet18", numClasses: 1000, width: 16, stem: "imagenet", imgSize: 224 },
      scoreStage: 2,
    },
    description:
      "ResNet18 w16 ImageNet-stem scorer (stem..layer2, 28x28 → 14x14) + ViT-S/16 at 224px, keep 0.5",
  },
  hybrid_test: {
    config: hybrid(vit32(64, 2, 4), 8, 1),
    description: "ResNet18 w8 scorer (stem..layer1) + ViT 64/2/4 (tests)",
  },
};

/** A registered model name and what it is. */
export interface ModelInfo {
  name: string;
  family: ModelConfig["model"];
  description: string;
  config: ModelConfig;
}

/**
 * Lists the registered models.
 *
 * @example
 * ```ts
 * listModels().map((m) => m.name); // ["resnet18", "resnet18_imagenet", ..., "hybrid_tiny", ...]
 * ```
 */
export function listModels(): ModelInfo[] {
  return Object.entries(PRESETS).map(([name, p]) => ({
    name,
    family: p.config.model,
    description: p.description,
    config: structuredClone(p.config),
  }));
}

/**
 * Overrides for {@link createModel}: any config fields (nested for the hybrid's `vit` / `resnet`), plus
 * `numClasses` and `imgSize` shortcuts that a hybrid applies to both of its parts.
 */
export type ModelOverrides = Record<string, unknown> & { numClasses?: number; imgSize?: number };

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepMerge(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
  path: string,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    if (!(k in base) && !OPTIONAL_KEYS.has(k)) {
      throw new Error(
        `createModel: unknown config field "${path}${k}"; known: ${Object.keys(base).join(", ")}`,
      );
    }
    out[k] = isPlainObject(v) && isPlainObject(base[k])
      ? deepMerge(base[k] as Record<string, unknown>, v, `${path}${k}.`)
      : v;
  }
  return out;
}

const OPTIONAL_KEYS = new Set([
  "inChans",
  "lnEps",
  "gradCheckpoint",
  "bnEps",
  "bnMomentum",
  "stages",
  "importance",
  "cnnHead",
  "scorerImgSize",
  "scoreGradient",
  "selectorHead",
  "selectorHidden",
  "init",
  "distillToken",
  "tokens",
  "spread",
]);

/** Options of {@link createModel}. */
export interface CreateModelOptions {
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/**
 * Creates a registered model, with config overrides.
 *
 * @example
 * ```ts
 * const vit = createModel("vit_small", { numClasses: 100 });
 * const hybrid = createModel("hybrid_tiny", { keepRatio: 0.4, vit: { depth: 6 } });
 * ```
 */
export function createModel(
  name: string,
  overrides: ModelOverrides = {},
  options: CreateModelOptions = {},
): Model {
  const preset = PRESETS[name];
  if (!preset) {
    throw new Error(`createModel: unknown model "${name}"; registered: ${Object.keys(PRESETS).join(", ")}`);
  }
  const { numClasses, imgSize, ...rest } = overrides;
  let config = structuredClone(preset.config) as unknown as Record<string, unknown>;
  if (preset.config.model === "hybrid") {
    const shortcuts: Record<string, unknown> = {};
    if (numClasses !== undefined) shortcuts.numClasses = numClasses;
    if (imgSize !== undefined) shortcuts.imgSize = imgSize;
    config = deepMerge(config, { vit: shortcuts, resnet: shortcuts }, "");
  } else {
    if (numClasses !== undefined) rest.numClasses = numClasses;
    if (imgSize !== undefined) rest.imgSize = imgSize;
  }
  config = deepMerge(config, rest, "");
  return createModelFromConfig(config as unknown as ModelConfig, options);
}

/**
 * Creates a model from a full config (as stored in `run.json` or checkpoint metadata).
 *
 * @example
 * ```ts
 * const m = createModelFromConfig(JSON.parse(metadata.config));
 * ```
 */
export function createModelFromConfig(config: ModelConfig, options: CreateModelOptions = {}): Model {
  switch (config.model) {
    case "resnet18":
      return new ResNet18(config, options);
    case "vit":
      return new ViT(config, options);
    case "hybrid":
      return new Hybrid(config, options);
    default:
      throw new Error(
        `createModelFromConfig: unknown model family ${
          JSON.stringify((config as { model?: unknown }).model)
        }; ` +
          `expected "resnet18", "vit" or "hybrid"`,
      );
  }
}

/**
 * Converts a PyTorch-side config (snake_case, as in the parity fixtures' metadata) to ours.
 * `imgSize` fills in what the PyTorch config leaves to the input (ResNets).
 *
 * @example
 * ```ts
 * modelConfigFromPyTorch({ model: "resnet18", num_classes: 10, width: 16, stem: "cifar" }, 32);
 * ```
 */
export function modelConfigFromPyTorch(raw: Record<string, unknown>, imgSize?: number): ModelConfig {
  const camel: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    camel[k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())] = v;
  }
  if (camel.model === "resnet18") {
    return {
      model: "resnet18",
      numClasses: camel.numClasses as number,
      width: (camel.width as number) ?? 64,
      stem: (camel.stem as ResNetConfig["stem"]) ?? "imagenet",
      imgSize: (camel.imgSize as number) ?? imgSize ?? 224,
    };
  }
  if (camel.model === "vit") {
    return {
      model: "vit",
      numClasses: camel.numClasses as number,
      imgSize: (camel.imgSize as number) ?? imgSize ?? 224,
      patchSize: camel.patchSize as number,
      embedDim: camel.embedDim as number,
      depth: camel.depth as number,
      numHeads: camel.numHeads as number,
      mlpRatio: (camel.mlpRatio as number) ?? 4,
      ...(camel.distillToken === true ? { distillToken: true } : {}),
    };
  }
  if (camel.model === "hybrid") {
    const vit = modelConfigFromPyTorch(
      { model: "vit", ...(camel.vit as Record<string, unknown>) },
      imgSize,
    ) as ViTConfig;
    const resnet = modelConfigFromPyTorch(
      { model: "resnet18", ...(camel.resnet as Record<string, unknown>) },
      vit.imgSize,
    ) as ResNetConfig;
    const out: HybridConfig = {
      model: "hybrid",
      vit,
      resnet,
      scoreStage: camel.scoreStage as number,
      keepRatio: (camel.keepRatio as number) ?? 1,
    };
    if (camel.cnnHead !== undefined) out.cnnHead = camel.cnnHead as boolean;
    if (camel.scorerImgSize !== undefined) out.scorerImgSize = camel.scorerImgSize as number;
    return out;
  }
  throw new Error(
    `modelConfigFromPyTorch: unknown model ${JSON.stringify(raw.model)} in ${JSON.stringify(raw)}; ` +
      `expected "resnet18", "vit" or "hybrid"`,
  );
}
