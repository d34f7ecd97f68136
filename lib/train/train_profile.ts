/**
 * What each experiment profile means for training: data subsets, epochs, batch size, learning rate and
 * model sizes per family. Every number is recorded in the run's `run.json`.
 *
 * @module
 */
import type { ProfileName } from "../profile.ts";

/** Model family names the training CLI accepts besides registry presets. */
export type TrainFamily = "resnet18" | "vit" | "hybrid";

/** Training settings of a profile. */
export interface TrainProfile {
  /** Class-balanced training subset (undefined = the whole split). */
  trainSubset?: number;
  /** Evaluation subset. */
  evalSubset?: number;
  /** Epochs (stage 2 for the hybrid). */
  epochs: number;
  /** Stage-1 epochs of the hybrid (CNN pre-training). */
  stage1Epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  /** Which parameters weight decay applies to (see `TrainingRunOptions.decayOn`). */
  decayOn: "weights" | "all";
  warmupEpochs: number;
  /**
   * Gradient checkpointing of the ViT blocks (ViT and hybrid runs): off where the models are small
   * (quick, cpu: it would only cost time), on for ViT-Small (full: a batch-128 step does not fit the
   * 4 GiB wasm heap, nor an 8 GB laptop, without it).
   */
  gradCheckpoint: boolean;
  /** Registry preset and overrides per family. */
  models: Record<TrainFamily, { preset: string; overrides: Record<string, unknown> }>;
}

const PROFILES: Record<ProfileName, TrainProfile> = {
  quick: {
    trainSubset: 1000,
    evalSubset: 500,
    epochs: 3,
    stage1Epochs: 1,
    batchSize: 64,
    lr: 1e-3,
    weightDecay: 0.05,
    decayOn: "weights",
    warmupEpochs: 0,
    gradCheckpoint: false,
    models: {
      resnet18: { preset: "resnet18_test", overrides: {} },
      vit: { preset: "vit_test", overrides: {} },
      hybrid: { preset: "hybrid_test", overrides: {} },
    },
  },
  cpu: {
    trainSubset: 10000,
    evalSubset: 2000,
    epochs: 8,
    stage1Epochs: 2,
    batchSize: 128,
    lr: 1e-3,
    weightDecay: 0.05,
    // PyTorch's AdamW(model.parameters()), the reference recipe's (within noise on Fashion-MNIST val; README).
    decayOn: "all",
    warmupEpochs: 1,
    gradCheckpoint: false,
    models: {
      // PyTorch's default initialisation learns far faster from 5-10k images than timm's / torchvision's
      // (ViT +13.5, ResNet18 +2.6 points on Fashion-MNIST val after 3 epochs; README).
      resnet18: { preset: "resnet18", overrides: { width: 16, init: "torch" } },
      vit: { preset: "vit_tiny", overrides: { embedDim: 128, depth: 4, numHeads: 4, init: "torch" } },
      hybrid: {
        preset: "hybrid_tiny",
        overrides: {
          vit: { embedDim: 128, depth: 4, numHeads: 4, init: "torch" },
          resnet: { width: 8, init: "torch" },
          scoreStage: 1,
        },
      },
    },
  },
  full: {
    epochs: 100,
    stage1Epochs: 10,
    batchSize: 128,
    lr: 5e-4,
    weightDecay: 0.05,
    decayOn: "weights",
    warmupEpochs: 5,
    gradCheckpoint: true,
    models: {
      resnet18: { preset: "resnet18", overrides: {} },
      vit: { preset: "vit_small", overrides: {} },
      hybrid: { preset: "hybrid_small", overrides: {} },
    },
  },
};

/**
 * The training settings of a profile (a copy).
 *
 * @example
 * ```ts
 * trainProfile("quick").epochs; // 3
 * ```
 */
export function trainProfile(name: ProfileName): TrainProfile {
  const p = PROFILES[name];
  if (!p) throw new Error(`trainProfile: unknown profile "${name}"; expected "quick", "cpu" or "full"`);
  return structuredClone(p);
}
