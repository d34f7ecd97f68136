/**
 * {@link Hybrid}: the CNN-ViT model of the study. A ResNet18 run only up to an early stage scores
 * every ViT patch (importance head), {@link selectTopK} keeps CLS + the top-k patch tokens after the
 * position embedding, and the ViT runs its blocks on those only. Reuses {@link ResNet18} and
 * {@link ViT} (no forks); parameter names are `cnn.<timm resnet name>` and `vit.<timm vit name>`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ResNet18 } from "./resnet18.ts";
import { resolveViTConfig, ViT } from "./vit.ts";
import { gatherTokens, selectTopK } from "../pruning/select_top_k.ts";
import { spreadScores } from "../pruning/spread.ts";
import type {
  ForwardAux,
  ForwardOptions,
  ForwardOutput,
  GmacsOptions,
  GmacsReport,
  HybridConfig,
  Model,
  ResNetConfig,
  TensorLayout,
} from "./types.ts";

/** Ones with the shape of `x` whose gradient with respect to `x` is the incoming gradient (identity). */
const straightThroughOnes = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  return { value: tf.onesLike(x), gradFunc: (dy: tf.Tensor) => tf.clone(dy) };
}) as (x: tf.Tensor3D) => tf.Tensor3D;

function prefixed<T>(prefix: string, m: Map<string, T>): [string, T][] {
  return [...m].map(([k, v]) => [prefix + k, v]);
}

/**
 * CNN-guided dynamic token pruning: ResNet18 importance scores → top-k patch tokens → ViT.
 *
 * @example
 * ```ts
 * const model = createModel("hybrid_tiny", { keepRatio: 0.5 }) as Hybrid;
 * const { logits, aux } = model.forward(x, { returnAux: true }); // aux.keptIndices [B, 32]
 * ```
 */
export class Hybrid implements Model {
  readonly family = "hybrid" as const;
  readonly config: HybridConfig;
  /** The ViT (shared class, parameters under `vit.`). */
  readonly vit: ViT;
  /** The scorer CNN (parameters under `cnn.`); truncated after `scoreStage` unless `cnnHead`. */
  readonly cnn: ResNet18;

  constructor(config: HybridConfig, options: { seed?: number } = {}) {
    if (config.model !== "hybrid") {
      throw new Error(`Hybrid config: model is "${config.model}", expected "hybrid"`);
    }
    const vitConfig = resolveViTConfig(config.vit);
    if (!(config.keepRatio > 0 && config.keepRatio <= 1)) {
      throw new Error(`Hybrid config: keepRatio ${config.keepRatio} is not in (0, 1]`);
    }
    if (!(Number.isInteger(config.scoreStage) && config.scoreStage >= 0 && config.scoreStage <= 4)) {
      throw new Error(`Hybrid config: scoreStage ${config.scoreStage} is not an integer in 0..4`);
    }
    const tokensFrom = config.tokens ?? "pixels";
    if (tokensFrom !== "pixels" && tokensFrom !== "cnn") {
      throw new Error(`Hybrid config: tokens ${JSON.stringify(config.tokens)} is not "pixels" or "cnn"`);
    }
    if (tokensFrom === "cnn" && config.scorerImgSize && config.scorerImgSize !== vitConfig.imgSize) {
      throw new Error(
        `Hybrid config: tokens "cnn" needs the scorer to see the image at its size (scorerImgSize ` +
          `${config.scorerImgSize} ≠ imgSize ${vitConfig.imgSize})`,
      );
    }
    const g = vitConfig.imgSize / vitConfig.patchSize;
    if (
      config.spread !== undefined &&
      !(Number.isInteger(config.spread) && config.spread >= 1 && g % config.spread === 0)
    ) {
      throw new Error(
        `Hybrid config: spread ${config.spread} is not a window side (a whole number ≥ 1) dividing the patch grid side ${g}`,
      );
    }
    this.config = structuredClone(config);
    const seed = options.seed ?? 0;
    const cnnConfig: ResNetConfig = {
      ...config.resnet,
      imgSize: config.scorerImgSize ?? vitConfig.imgSize,
      stages: config.cnnHead ? 4 : config.scoreStage,
      importance: {
        stage: config.scoreStage,
        grid: g,
        ...(config.selectorHead ? { head: config.selectorHead } : {}),
        ...(config.selectorHidden ? { hidden: config.selectorHidden } : {}),
      },
    };
    this.cnn = new ResNet18(cnnConfig, { seed: seed + 1 });
    const side = this.cnn.stageSize(config.scoreStage);
    if (!(side % g === 0 || g % side === 0) || (tokensFrom === "cnn" && side % g !== 0)) {
      this.cnn.dispose();
      throw new Error(
        `Hybrid config: the scorer's stage-${config.scoreStage} map is ${side}x${side}, which does not ` +
          `${tokensFrom === "cnn" ? "tile" : "pool onto"} the ${g}x${g} patch grid; change scoreStage or ` +
          `scorerImgSize`,
      );
    }
    // CNN tokens: the ViT embeds the stage's feature map (C channels, side × side) with patches of
    // side / g, so its grid, position embedding and blocks are those of the pixel ViT.
    this.vit = new ViT(
      tokensFrom === "cnn"
        ? {
          ...vitConfig,
          imgSize: side,
          patchSize: side / g,
          inChans: this.cnn.stageChannels(config.scoreStage),
        }
        : vitConfig,
      { seed },
    );
  }

  /** Whether the ViT's tokens are made from the scorer's feature map (`tokens: "cnn"`). */
  get cnnTokens(): boolean {
    return this.config.tokens === "cnn";
  }

  /**
   * What the ViT embeds for images `x`: the images themselves, or with CNN tokens the scorer's stage
   * feature map. Call inside `tf.tidy`.
   */
  vitInput(x: tf.Tensor4D, training = false): tf.Tensor4D {
    return this.cnnTokens ? this.scoresAndFeatures(x, training).feature : x;
  }

  /**
   * Importance scores `[B, N]` and what the ViT embeds ({@link Hybrid.vitInput}) from one scorer pass.
   * Call inside `tf.tidy`.
   */
  scoresAndVitInput(x: tf.Tensor4D, training = false): { scores: tf.Tensor2D; input: tf.Tensor4D } {
    const { scores, feature } = this.scoresAndFeatures(x, training);
    return { scores, input: this.cnnTokens ? feature : x };
  }

  /** Importance scores `[B, N]` for images `x`. Call inside `tf.tidy`. */
  scores(x: tf.Tensor4D, training = false): tf.Tensor2D {
    return this.scoresAndFeatures(x, training).scores;
  }

  private scoresAndFeatures(
    x: tf.Tensor4D,
    training: boolean,
  ): { scores: tf.Tensor2D; feature: tf.Tensor4D } {
    const s = this.config.scorerImgSize;
    const input = s && s !== x.shape[1] ? tf.image.resizeBilinear(x, [s, s]) : x;
    const feature = this.cnn.features(input, this.config.scoreStage, training);
    return { scores: this.cnn.importanceScores(feature), feature };
  }

  /**
   * What top-k ranks by: the scores, or with `spread` the scores re-ranked window by window
   * (`spreadScores`). The straight-through gate and the aux output keep the raw scores.
   */
  rankingScores(scores: tf.Tensor2D): tf.Tensor2D {
    const cell = this.config.spread;
    if (!cell || cell === 1) return scores;
    return spreadScores(scores, cell);
  }

  forward(x: tf.Tensor4D, options: ForwardOptions = {}): ForwardOutput {
    const training = options.training ?? false;
    const ratio = options.keepRatio ?? this.config.keepRatio;
    return tf.tidy(() => {
      const { scores, feature } = this.scoresAndFeatures(x, training);
      let cnnLogits: tf.Tensor2D | undefined;
      if (this.config.cnnHead && options.returnAux) {
        let y = feature;
        for (let s = this.config.scoreStage + 1; s <= 4; s++) y = this.cnn.layer(s, y, training);
        cnnLogits = this.cnn.head(y);
      }
      const tokens = this.vit.embed(this.cnnTokens ? feature : x);
      let r: ReturnType<ViT["forwardTokens"]>;
      let keptCounts: number[] | undefined;
      let budgetMask: tf.Tensor2D | undefined;
      if (options.keepIndices || options.tokenMask) {
        // Caller-chosen tokens (e.g. an oracle or a soft training mask) override the scorer.
        r = this.vit.forwardTokens(tokens, options);
      } else if (options.budget) {
        if (training) {
          throw new Error(
            'Hybrid.forward: budget is the inference of a threshold-trained selector; train with selection "threshold"',
          );
        }
        // Budget mode: a count per image (scores above the threshold, 0 unless calibrated), the batch
        // gathered to its largest count; the top-kmax by score hold every image's kept patches, the others
        // are padding.
        const above = tf.cast(tf.greater(scores, options.budgetThreshold ?? 0), "float32") as tf.Tensor2D;
        keptCounts = Array.from(tf.sum(above, 1).dataSync(), (c) => Math.max(1, c));
        const kmax = Math.max(...keptCounts);
        const sel = selectTopK(tokens, scores, { keep: kmax, prefixTokens: this.vit.numPrefixTokens });
        // The single best patch stays on even when no score is above the threshold (one token at least).
        const order = tf.topk(scores, 1).indices;
        const best = tf.oneHot(tf.reshape(order, [-1]), scores.shape[1]);
        const keep = tf.maximum(above, best) as tf.Tensor2D;
        const keptMask = tf.squeeze(
          gatherTokens(tf.reshape(keep, [keep.shape[0], -1, 1]) as tf.Tensor3D, sel.indices, 0),
          [2],
        ) as tf.Tensor2D;
        budgetMask = keptMask;
        r = this.vit.forwardTokens(sel.tokens, { ...options, keptMask }, {
          keptIndices: sel.indices,
          numPatches: this.vit.numPatches,
        });
      } else {
        const sel = selectTopK(tokens, this.rankingScores(scores), {
          keepRatio: ratio,
          prefixTokens: this.vit.numPrefixTokens,
        });
        let kept = sel.tokens;
        if (training && (this.config.scoreGradient ?? "straight_through") === "straight_through") {
          const b = sel.indices.shape[0];
          const keptScores = gatherTokens(tf.reshape(scores, [b, -1, 1]) as tf.Tensor3D, sel.indices, 0);
          const gate = tf.concat([tf.ones([b, 1, 1]), straightThroughOnes(keptScores)], 1);
          kept = tf.mul(kept, gate) as tf.Tensor3D;
        }
        r = this.vit.forwardTokens(kept, options, {
          keptIndices: sel.indices,
          numPatches: this.vit.numPatches,
        });
      }
      const logits = this.vit.forwardHead(r.tokens);
      const out: ForwardOutput = { logits };
      if (options.returnAux || options.returnAttention) {
        const aux: ForwardAux = { scores, tokensPerBlock: r.tokensPerBlock };
        if (r.keptIndices) {
          aux.keptIndices = r.keptIndices === options.keepIndices ? tf.clone(r.keptIndices) : r.keptIndices;
        }
        if (cnnLogits) aux.cnnLogits = cnnLogits;
        if (keptCounts) aux.keptCounts = keptCounts;
        if (budgetMask) aux.keptMask = budgetMask;
        if (options.returnAttention) aux.attention = r.attention;
        out.aux = aux;
      }
      return out as unknown as tf.TensorContainer;
    }) as unknown as ForwardOutput;
  }

  /** Gradient checkpointing of the ViT's blocks (config `vit.gradCheckpoint`); see {@link ViT.setGradCheckpointing}. */
  setGradCheckpointing(enable = true): void {
    this.vit.setGradCheckpointing(enable);
    if (enable || this.config.vit.gradCheckpoint !== undefined) this.config.vit.gradCheckpoint = enable;
  }

  trainableVariables(): Map<string, tf.Variable> {
    return new Map([
      ...prefixed("cnn.", this.cnn.trainableVariables()),
      ...prefixed("vit.", this.vit.trainableVariables()),
    ]);
  }

  stateDict(): Map<string, tf.Variable> {
    return new Map([...prefixed("cnn.", this.cnn.stateDict()), ...prefixed("vit.", this.vit.stateDict())]);
  }

  stateLayouts(): Map<string, TensorLayout> {
    return new Map([
      ...prefixed("cnn.", this.cnn.stateLayouts()),
      ...prefixed("vit.", this.vit.stateLayouts()),
    ]);
  }

  paramCount(): number {
    return this.cnn.paramCount() + this.vit.paramCount();
  }

  /**
   * GMACs per image of making the ViT's tokens from the images when they are CNN tokens: the scorer's stem
   * up to `scoreStage` without the importance head (0 for pixel tokens, whose patch embedding the ViT
   * counts). What any strategy on this model runs before the ViT, even one that never reads the scores.
   */
  tokenizerGmacs(imgSize?: number): number {
    if (!this.cnnTokens) return 0;
    const img = imgSize ?? this.config.vit.imgSize;
    const scorerImg = this.config.scorerImgSize ?? img;
    // importanceStage past every stage: the importance head is not counted.
    return this.cnn.gmacs({ imgSize: scorerImg, upTo: this.config.scoreStage, importanceStage: Infinity })
      .total;
  }

  /**
   * GMACs of what inference runs: the scorer CNN (stem .. scoreStage + importance head, at
   * `scorerImgSize`) plus the ViT at the keep ratio. The CNN's classification path (stages after
   * `scoreStage`, `fc`) only with `withCnnHead` and a model that has it (`cnnHead`): inference never runs it.
   */
  gmacs(options: GmacsOptions = {}): GmacsReport {
    const img = options.imgSize ?? this.config.vit.imgSize;
    const scorerImg = this.config.scorerImgSize ?? img;
    const upTo = options.withCnnHead && this.config.cnnHead ? 4 : this.config.scoreStage;
    const cnn = this.cnn.gmacs({ imgSize: scorerImg, upTo }).total;
    const vit = this.vit.gmacs({
      // CNN tokens: the ViT's input is the stage's map at its own size (the patch embedding is the projection).
      imgSize: this.cnnTokens ? undefined : img,
      keepRatio: options.keepRatio ?? this.config.keepRatio,
      tokensPerBlock: options.tokensPerBlock,
    }).total;
    return { total: cnn + vit, cnn, vit };
  }

  dispose(): void {
    this.vit?.dispose();
    this.cnn?.dispose();
  }
}
