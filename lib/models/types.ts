/**
 * The model contract shared by every model family (ResNet18, ViT, CNN-ViT hybrid), the training loop,
 * the pruning strategies and the notebooks.
 *
 * Layout conventions: images are NHWC float32; convolution kernels are stored HWIO and linear
 * weights `[in, out]` (tfjs layouts); names follow timm's state dict (`blocks.3.attn.qkv.weight`,
 * `layer2.0.downsample.1.running_var`, `fc.weight`). `lib/weights` converts to and from PyTorch layouts
 * using {@link Model.stateLayouts}.
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs-core";

/** Model families. */
export type ModelFamily = "resnet18" | "vit" | "hybrid";

/** ResNet18 stems: `cifar` = 3x3 conv stride 1, no max-pool; `imagenet` = 7x7 stride 2 + 3x3 max-pool. */
export type ResNetStem = "cifar" | "imagenet";

/** Configuration of {@link Model} family `"resnet18"` (plain JSON). */
export interface ResNetConfig {
  model: "resnet18";
  numClasses: number;
  /** Channels of the first stage (64 for the standard ResNet18; stages use w, 2w, 4w, 8w). */
  width: number;
  stem: ResNetStem;
  /** Input side in pixels (for GMACs and the importance grid). */
  imgSize: number;
  /** Add the importance head (`importance_head.*`, one score per patch of `importanceGrid`). */
  importance?: {
    /** Stage whose output feeds the head: 0 = stem output, 1..4 = layer1..layer4. */
    stage: number;
    /** Side of the ViT patch grid the scores are pooled onto (e.g. 8 for 32px / patch 4). */
    grid: number;
    /**
     * `"linear"` (default): one linear unit per patch over its local feature. `"mlp"`: DynamicViT's
     * predictor, with global context: LayerNorm → Linear(C, H) → GELU, half of the H features kept per
     * patch and half averaged over the image, then Linear(H, H/2) → GELU → Linear(H/2, H/4) → GELU →
     * Linear(H/4, 1) (`importance_head.in_conv.{0,1}`, `importance_head.out_conv.{0,2,4}`).
     */
    head?: "linear" | "mlp";
    /** Hidden width H of the `"mlp"` head (default max(32, C)); even, at least 4. */
    hidden?: number;
  };
  /**
   * Build only the stem and layers 1..`stages` (default 4). Below 4 there is no classification head
   * (`fc`): such a truncated network only serves as a scorer.
   */
  stages?: number;
  /** Batch-norm epsilon (PyTorch default 1e-5). */
  bnEps?: number;
  /** Batch-norm momentum in PyTorch's sense (new = (1-m)*old + m*batch; default 0.1). */
  bnMomentum?: number;
  /**
   * Conv initialisation: `"torchvision"` (Kaiming normal, fan_out, as torchvision's ResNet) or `"torch"`
   * (plain `nn.Conv2d`'s default, uniform ±1/√fan_in). Default `"torchvision"`.
   */
  init?: "torchvision" | "torch";
}

/** Configuration of {@link Model} family `"vit"` (plain JSON, timm's VisionTransformer). */
export interface ViTConfig {
  model: "vit";
  numClasses: number;
  imgSize: number;
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  inChans?: number;
  /** LayerNorm epsilon (timm: 1e-6). */
  lnEps?: number;
  /**
   * Gradient (activation) checkpointing per transformer block while a gradient tape records: each block
   * keeps only its input for backward and recomputes its activations there (timm's
   * `set_grad_checkpointing`). Same values and gradients; about one extra block forward of compute per
   * training step for far less memory. No effect on inference. Default false.
   */
  gradCheckpoint?: boolean;
  /**
   * Initialisation: `"timm"` (truncated normal std 0.02 for linears, zero biases; timm's ViT) or `"torch"`
   * (PyTorch's module defaults: linear weights and biases uniform ±1/√fan_in, i.e. kaiming_uniform with
   * a=√5; position embedding normal std 0.02, class token zero). Default `"timm"`. Only the initial
   * weights differ.
   */
  init?: "timm" | "torch";
  /**
   * DeiT's distillation token (`dist_token`, after CLS) and head (`head_dist`): training returns both
   * heads' logits, inference their average. Pruning keeps both prefix tokens. Default false.
   */
  distillToken?: boolean;
}

/** Configuration of {@link Model} family `"hybrid"`: a ResNet18 scores patches, a ViT runs on the top-k. */
export interface HybridConfig {
  model: "hybrid";
  vit: ViTConfig;
  /** The scorer CNN; its `importance` field is set from `scoreStage` and the ViT's patch grid. */
  resnet: ResNetConfig;
  /** Which ResNet stage feeds the importance head (0 = stem .. 4); the CNN runs only up to it. */
  scoreStage: number;
  /** Fraction of patch tokens kept (CLS always kept), in (0, 1]. */
  keepRatio: number;
  /** Also run the rest of the CNN and its classification head (fills `aux.cnnLogits`). Default false. */
  cnnHead?: boolean;
  /** The selector head on the scorer's features (default `"linear"`; `"mlp"` adds global context). */
  selectorHead?: "linear" | "mlp";
  /** Hidden width of the `"mlp"` selector head (default max(32, channels)). */
  selectorHidden?: number;
  /** Resize the input to this side before the scorer CNN (cheaper scorer); default: no resize. */
  scorerImgSize?: number;
  /**
   * How the task loss reaches the scorer through the (non-differentiable) top-k, in training mode:
   * `"straight_through"` (default) multiplies each kept token by a gate whose value is exactly 1 and
   * whose gradient with respect to the token's score is 1 (so a kept score gets `<dL/dtoken, token>`);
   * `"none"` leaves the scorer to auxiliary losses on `aux.scores` (and the CNN head on `aux.cnnLogits`).
   * The forward values are identical either way.
   */
  scoreGradient?: "straight_through" | "none";
  /**
   * Where the ViT's patch tokens come from: `"pixels"` (default: the ViT's own patch embedding of the image)
   * or `"cnn"` (timm's hybrid ViT: a strided projection of the scorer's stage-`scoreStage` feature map onto
   * the patch grid, so scoring and tokenizing share one stem). With `"cnn"` the ViT's `patch_embed.proj`
   * takes the stage's channels, with kernel = stride = map side / grid side; its other weights keep their
   * shapes (a pixel ViT can initialise everything else).
   */
  tokens?: "pixels" | "cnn";
  /**
   * Spread top-k (`spreadScores`): the patch grid is cut into `spread`×`spread` windows and every window's
   * best-scored token is kept before any window's second, in training (the straight-through mask) and at
   * inference (`forward` and the `cnn` strategy). Top-k selection only (not the budget mode). Default off:
   * the plain top-k, which the equal-cost study found clustered on the object and below random tokens.
   */
  spread?: number;
}

/** Any model configuration. */
export type ModelConfig = ResNetConfig | ViTConfig | HybridConfig;

/** Options of {@link Model.forward}. Return types never change with options; `aux` is filled on request. */
export interface ForwardOptions {
  /** Batch norm uses batch statistics and updates its running statistics. Default false. */
  training?: boolean;
  /**
   * `[B, k]` int32 PATCH indices (0..N-1, CLS excluded): the ViT gathers CLS + these k tokens after the
   * position embedding and runs its blocks on the shorter sequence (real compute saving).
   */
  keepIndices?: tf.Tensor2D;
  /**
   * `[B, N]` patch mask in [0, 1] (soft or hard) for training-time pruning without gather
   * (DynamicViT-style masked attention softmax; the CLS token is always on). Saves no compute.
   */
  tokenMask?: tf.Tensor2D;
  /** Reducer called between blocks (ToMe / EViT style). */
  reducer?: TokenReducer;
  /** Fill {@link ForwardOutput.aux}. */
  returnAux?: boolean;
  /** Fill `aux.attention` with each block's attention probabilities `[B, heads, T, T]`. */
  returnAttention?: boolean;
  /** Hybrid only: override the configured keep ratio for this call. */
  keepRatio?: number;
  /**
   * `[B, k]` 0/1 over the tokens `keepIndices` gathers: 0 marks padding, which no token attends to
   * (a count of tokens per image, gathered to the batch's largest count).
   */
  keptMask?: tf.Tensor2D;
  /**
   * Hybrid only, the budget mode (DynamicViT's inference): keep each patch whose importance score is
   * above 0, the decision stage 2 trains with `selection: "threshold"` and the keep-ratio loss, so the
   * number of tokens is learned per image. The batch is gathered to its largest count and the rest of
   * each image's tokens masked out of attention (`aux.keptCounts`). Ignores `keepRatio`.
   */
  budget?: boolean;
  /**
   * The budget mode's score threshold (default 0, the training decision). Nothing in training makes the
   * count kept above 0 match the ratio loss's target; `calibrateBudgetThreshold` finds the threshold at
   * which images keep the target share of their tokens on average.
   */
  budgetThreshold?: number;
}

/** Extra outputs, present when asked for with `returnAux` / `returnAttention`. */
export interface ForwardAux {
  /** Hybrid with `cnnHead`, or ResNet18: the CNN classification logits `[B, classes]`. */
  cnnLogits?: tf.Tensor2D;
  /** ViT with a distillation token: the CLS head's logits (`logits` is the average of both heads). */
  clsLogits?: tf.Tensor2D;
  /** ViT with a distillation token: the distillation head's logits. */
  distLogits?: tf.Tensor2D;
  /** Importance scores `[B, N]`, one per ViT patch (hybrid / ResNet18 with an importance head). */
  scores?: tf.Tensor2D;
  /** Patch indices `[B, k]` the ViT ran on at the end (CLS excluded, int32). */
  keptIndices?: tf.Tensor2D;
  /** Per block attention probabilities `[B, heads, T, T]`. */
  attention?: tf.Tensor4D[];
  /** Tokens (incl. CLS) entering each block. */
  tokensPerBlock?: number[];
  /** Budget mode: patch tokens kept per image (the rest of the batch's gathered tokens are padding). */
  keptCounts?: number[];
  /** Budget mode: `[B, k]` 1 where `keptIndices` holds a kept patch, 0 where it holds padding. */
  keptMask?: tf.Tensor2D;
}

/** What {@link Model.forward} returns. The caller disposes every tensor in it. */
export interface ForwardOutput {
  logits: tf.Tensor2D;
  aux?: ForwardAux;
}

/** Context passed to {@link TokenReducer.reduce}. */
export interface TokenReducerContext {
  /** Index of the block that just ran. */
  block: number;
  /** That block's attention probabilities `[B, heads, T, T]` when `needsAttention`. */
  attention?: tf.Tensor4D;
  /** Patch indices `[B, T-1]` of the current non-CLS tokens (int32). */
  keptIndices: tf.Tensor2D;
}

/** A token reducer plugged into the slots between ViT blocks (runs inside the forward's tidy). */
export interface TokenReducer {
  /** Called after block i for every i listed. */
  afterBlocks: number[];
  /** Returns the reduced tokens `[B, 1+k, D]` (CLS first) and their patch indices `[B, k]`. */
  reduce(tokens: tf.Tensor3D, ctx: TokenReducerContext): { tokens: tf.Tensor3D; keptIndices: tf.Tensor2D };
  /** Ask the model to compute attention probabilities for the blocks in `afterBlocks`. */
  needsAttention?: boolean;
}

/** How a state-dict tensor is laid out, so `lib/weights` can convert to and from PyTorch. */
export type TensorLayout = "conv2d" | "linear" | "plain";

/** Options of {@link Model.gmacs}. */
export interface GmacsOptions {
  /** Fraction of patch tokens kept (ViT / hybrid); default the model's own (1 for a plain ViT). */
  keepRatio?: number;
  /** Input side; default the config's `imgSize`. */
  imgSize?: number;
  /** ViT / hybrid: tokens (incl. CLS) entering each block, e.g. from an EViT-style schedule; overrides keepRatio. */
  tokensPerBlock?: number[];
  /**
   * Hybrid: also count the CNN's own classification path (stages after `scoreStage` and `fc`), which runs
   * only when its logits are asked for (training's auxiliary loss, `returnAux`), never in plain inference.
   * Default false.
   */
  withCnnHead?: boolean;
}

/** Analytic multiply-accumulates, in GMACs (conv + linear + the two attention matmuls). */
export interface GmacsReport {
  total: number;
  /** CNN part (ResNet18, or the hybrid's scorer + optional CNN head). */
  cnn?: number;
  /** ViT part. */
  vit?: number;
}

/** The interface every model implements. */
export interface Model {
  readonly family: ModelFamily;
  /** The configuration as plain JSON (round-trips through `createModel`). */
  readonly config: ModelConfig;
  /** Runs the model on `x` (`[B, H, W, C]` float32). Synchronous; wraps itself in `tf.tidy`. */
  forward(x: tf.Tensor4D, options?: ForwardOptions): ForwardOutput;
  /** Trainable variables by timm name. */
  trainableVariables(): Map<string, tf.Variable>;
  /** Every tensor of the state (incl. batch-norm running stats), timm names, OUR layouts (no copies). */
  stateDict(): Map<string, tf.Variable>;
  /** Layout of each state-dict tensor (for PyTorch conversion). */
  stateLayouts(): Map<string, TensorLayout>;
  /** Number of trainable parameters. */
  paramCount(): number;
  /** Analytic GMACs for one image. */
  gmacs(options?: GmacsOptions): GmacsReport;
  /**
   * Turns gradient checkpointing of the transformer blocks on or off (ViT and hybrid; sets the ViT
   * config's `gradCheckpoint`, as timm's `set_grad_checkpointing`). Absent on models without blocks.
   */
  setGradCheckpointing?(enable?: boolean): void;
  /** Frees every variable. */
  dispose(): void;
}
