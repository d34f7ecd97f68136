/**
 * Token-pruning strategies behind one interface, all usable with the same ViT at the same keep-ratio
 * schedule, so that accuracy can be compared at equal GMACs:
 *
 * - `none`: the unpruned ViT (the reference);
 * - `random`: a seeded uniformly random subset (the control every claim must beat);
 * - `cnn`: the hybrid's ResNet18 importance head scores the patches;
 * - `attention`: EViT-style, the CLS token's attention (mean over heads) in the block before each
 *   location decides, no extra parameters (so it cannot prune before the first block);
 * - `merge`: ToMe-style bipartite merging down to the same token count.
 *
 * Every strategy gathers the kept tokens, so the blocks after a location really run on fewer tokens.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { Hybrid } from "../models/hybrid.ts";
import type { ForwardAux, ForwardOutput, Model, TokenReducer } from "../models/types.ts";
import type { ViT } from "../models/vit.ts";
import { Rng } from "../util/mod.ts";
import { batchGather } from "./batch_gather.ts";
import { detach } from "./detach.ts";
import { keepCounts, type KeepSchedule, tokensPerBlock, validateKeepSchedule } from "./keep_schedule.ts";
import { selectTopK } from "./select_top_k.ts";
import { spreadScores } from "./spread.ts";
import { mergeSimilarityGmacs, mergeToCount } from "./token_merging.ts";

/** Names of the strategies. */
export type StrategyName = "none" | "random" | "cnn" | "attention" | "merge";

/** Valid strategy names, for argument validation. */
export const STRATEGIES: readonly StrategyName[] = ["none", "random", "cnn", "attention", "merge"];

/** Options of {@link PruningStrategy.forward}. */
export interface PrunedForwardOptions {
  /** Where and how much to prune (ignored by `none`). */
  schedule: KeepSchedule;
  /** Training mode (the ViT, and the batch norm of the hybrid's scorer unless `cnnTraining` says). Default false. */
  training?: boolean;
  /** Batch-norm mode of the hybrid's scorer (default `training`): false keeps a frozen CNN's statistics. */
  cnnTraining?: boolean;
  /** Fill `aux` (kept indices, tokens per block, scores for `cnn`). */
  returnAux?: boolean;
  /** Fill `aux.attention`. */
  returnAttention?: boolean;
  /** Generator for `random` (default the strategy's own, seeded at creation). */
  rng?: Rng;
}

/** A way of choosing tokens; `forward` runs a ViT (or the hybrid's ViT) with it. */
export interface PruningStrategy {
  readonly name: StrategyName;
  /** Runs the model on `x` with this strategy (tidy; the caller disposes the output). */
  forward(model: Model, x: tf.Tensor4D, options: PrunedForwardOptions): ForwardOutput;
  /** GMACs per image under `schedule` (ViT at its real token counts, plus the scorer for `cnn`). */
  gmacs(model: Model, schedule: KeepSchedule): number;
}

/** Options of {@link createStrategy}. */
export interface StrategyOptions {
  /** Seed of `random` (default 0). */
  seed?: number;
  /**
   * EViT's inattentive-token fusion: the dropped tokens are not thrown away but averaged into one extra
   * token appended after the kept ones (weights: CLS attention for `attention`, softmax of the scores for
   * `cnn`, uniform for `random`), so the blocks see k + 2 tokens. Single-location schedules only; no
   * effect when nothing is dropped. Default false.
   */
  fuse?: boolean;
  /**
   * Spread the kept tokens over the image ({@link spreadScores}): the patch grid is cut into
   * `spread`×`spread` windows and every window's best token is kept before any window's second best.
   * Ranking only (fusion weights use the raw scores); applies where the scores cover the whole grid (a
   * single pruning location). Random, cnn and attention. Default off.
   */
  spread?: number;
}

/**
 * EViT's fused token: the weighted mean of the dropped patch tokens, `[B, 1, D]`. `weights` `[B, T]` are
 * non-negative importances of the current patch tokens; kept positions (`keep` `[B, T]`, 1 = kept) get
 * none, the rest are normalised to sum to 1 per image.
 *
 * @example
 * ```ts
 * const fused = fuseDropped(tokens, tf.onesLike(keep), keep); // plain mean of the dropped tokens
 * ```
 */
export function fuseDropped(tokens: tf.Tensor3D, weights: tf.Tensor2D, keep: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, t, d] = tokens.shape;
    const n = weights.shape[1];
    const patches = tf.slice(tokens, [0, t - n, 0], [b, n, d]);
    const w = tf.mul(weights, tf.sub(1, keep));
    const norm = tf.div(w, tf.maximum(tf.sum(w, 1, true), 1e-12));
    return tf.matMul(tf.reshape(norm, [b, 1, n]), patches) as tf.Tensor3D;
  });
}

/**
 * Weights of the hybrid's fused token over the patches: the softmax of the CNN's scores (strategy `cnn`
 * with `fuse` at inference, and `maskedHybridForward` with `fuse` in training, so both fuse alike).
 */
export const hybridFuseWeights = (scores: tf.Tensor2D): tf.Tensor2D => tf.softmax(scores);

/**
 * The ViT of a model: the model itself, or the hybrid's `vit`.
 *
 * @example
 * ```ts
 * const vit = vitOf(createModel("hybrid_test"));
 * ```
 */
export function vitOf(model: Model): ViT {
  if (model instanceof Hybrid) return model.vit;
  if (model.family === "vit") return model as unknown as ViT;
  throw new Error(`pruning: model family "${model.family}" has no ViT; expected a "vit" or "hybrid" model`);
}

function hybridOf(model: Model, strategy: string): Hybrid {
  if (model instanceof Hybrid) return model;
  throw new Error(
    `pruning: strategy "${strategy}" needs the hybrid model (its CNN importance head); got "${model.family}"`,
  );
}

/** Reduces `[B, 1+T, D]` tokens with patch indices `[B, T]` to `keep` patch tokens. */
type ReduceFn = (
  tokens: tf.Tensor3D,
  ctx: { block: number; attention?: tf.Tensor4D; keptIndices: tf.Tensor2D; keep: number },
) => { tokens: tf.Tensor3D; keptIndices: tf.Tensor2D };

/**
 * A reduction by scores over the current patch tokens: hard top-k with a real gather; with `fuseWeights`,
 * the dropped tokens are fused into one extra token ({@link fuseDropped}) weighted by `fuseWeights(scores)`.
 */
function byScores(
  score: (ctx: Parameters<ReduceFn>[1], tokens: tf.Tensor3D) => tf.Tensor2D,
  fuseWeights?: (scores: tf.Tensor2D) => tf.Tensor2D,
  spread?: number,
): ReduceFn {
  return (tokens, ctx) => {
    // Hard selection needs no gradient: select on detached scores (see detach.ts).
    const s = detach(score(ctx, tokens));
    // Prefix tokens (CLS, and DeiT's distillation token) are the ones without a patch index.
    const prefixTokens = tokens.shape[1] - ctx.keptIndices.shape[1];
    const rankBy = spread ? spreadScores(s, spread) : s;
    const sel = selectTopK(tokens, rankBy, { keep: ctx.keep, prefixTokens });
    const kept = tf.squeeze(batchGather(tf.expandDims(ctx.keptIndices, 2), sel.indices), [2]) as tf.Tensor2D;
    const [b, t] = s.shape;
    if (!fuseWeights || ctx.keep >= t) return { tokens: sel.tokens, keptIndices: kept };
    const keepMask = tf.sum(tf.oneHot(sel.indices, t), 1) as tf.Tensor2D; // [B, T], 1 = kept
    const fused = fuseDropped(tokens, fuseWeights(s), tf.reshape(keepMask, [b, t]) as tf.Tensor2D);
    return { tokens: tf.concat([sel.tokens, fused], 1) as tf.Tensor3D, keptIndices: kept };
  };
}

/**
 * Fusion and spread need a schedule that prunes at one location: the fused token is not a patch to prune
 * again, and spread's windows are those of the whole grid, which a second location no longer has.
 */
function checkOneLocation(
  name: string,
  options: { fuse?: boolean; spread?: number },
  schedule: KeepSchedule,
): void {
  const what = options.fuse ? "fuse" : options.spread ? "spread" : undefined;
  if (what && schedule.locations.length > 1) {
    throw new Error(
      `pruning: strategy "${name}" with ${what} prunes at one location only; got ${JSON.stringify(schedule)}`,
    );
  }
}

/**
 * Runs the ViT with `reduce` applied at each schedule location (location 0 on the embedded tokens,
 * later ones in the reducer slot after block `location − 1`).
 */
function runWithReduction(
  model: Model,
  x: tf.Tensor4D,
  schedule: KeepSchedule,
  reduce: ReduceFn,
  needsAttention: boolean,
  options: PrunedForwardOptions,
  extraAux: ForwardAux = {},
  /** What the ViT embeds, when the caller has it already (a hybrid's scorer pass made it). */
  input?: tf.Tensor4D,
): ForwardOutput {
  const vit = vitOf(model);
  const depth = vit.config.depth;
  validateKeepSchedule(schedule, depth);
  const n = vit.numPatches;
  const counts = keepCounts(schedule, n);
  return tf.tidy(() => {
    // A hybrid with CNN tokens embeds its scorer's feature map instead of the pixels.
    let tokens = vit.embed(
      input ??
        (model instanceof Hybrid ? model.vitInput(x, options.cnnTraining ?? options.training ?? false) : x),
    );
    const b = x.shape[0];
    let pre: { keptIndices: tf.Tensor2D; numPatches: number } | undefined;
    const later = schedule.locations.map((l, i) => ({ l, keep: counts[i] })).filter((e) => e.l > 0);
    if (schedule.locations[0] === 0) {
      const all = tf.tile(tf.reshape(tf.range(0, n, 1, "int32"), [1, n]), [b, 1]) as tf.Tensor2D;
      const red = reduce(tokens, { block: -1, keptIndices: all, keep: counts[0] });
      tokens = red.tokens;
      pre = { keptIndices: red.keptIndices, numPatches: n };
    }
    const reducer: TokenReducer | undefined = later.length === 0 ? undefined : {
      afterBlocks: later.map((e) => e.l - 1),
      needsAttention,
      reduce: (t, ctx) => {
        const keep = Math.min(later.find((e) => e.l - 1 === ctx.block)!.keep, t.shape[1] - 1);
        return reduce(t, { ...ctx, keep });
      },
    };
    const r = vit.forwardTokens(
      tokens,
      { training: options.training, reducer, returnAttention: options.returnAttention },
      pre,
    );
    const heads = vit.forwardHeads(r.tokens);
    const logits = heads.dist ? tf.div(tf.add(heads.cls, heads.dist), 2) as tf.Tensor2D : heads.cls;
    const out: ForwardOutput = { logits };
    if (options.returnAux || options.returnAttention) {
      const aux: ForwardAux = { ...extraAux, tokensPerBlock: r.tokensPerBlock };
      if (heads.dist) Object.assign(aux, { clsLogits: heads.cls, distLogits: heads.dist });
      if (r.keptIndices) aux.keptIndices = r.keptIndices;
      if (options.returnAttention) aux.attention = r.attention;
      out.aux = aux;
    }
    return out as unknown as tf.TensorContainer;
  }) as unknown as ForwardOutput;
}

/**
 * GMACs of a strategy that does not read the CNN's scores: the ViT at the schedule's token counts plus, on a
 * hybrid with CNN tokens, the stem that makes its tokens (which runs whatever selects them).
 */
function tokensAndVitGmacs(model: Model, schedule: KeepSchedule, fuse = false): number {
  return (model instanceof Hybrid ? model.tokenizerGmacs() : 0) + vitGmacs(model, schedule, fuse);
}

/** The ViT's GMACs at the schedule's token counts (one more token after the location with fusion). */
function vitGmacs(model: Model, schedule: KeepSchedule, fuse = false): number {
  const vit = vitOf(model);
  const n = vit.numPatches;
  // tokensPerBlock counts CLS as the one prefix token; add the distillation token if any, and the fused one.
  const extra = vit.numPrefixTokens - 1;
  const counts = tokensPerBlock(schedule, n, vit.config.depth).map((c) =>
    (fuse && c < n + 1 ? c + 1 : c) + extra
  );
  return vit.gmacs({ tokensPerBlock: counts }).total;
}

/**
 * Creates a strategy by name.
 *
 * @example
 * ```ts
 * const random = createStrategy("random", { seed: 1 });
 * const { logits } = random.forward(vit, x, { schedule: singleStage(0.5) });
 * ```
 */
export function createStrategy(name: StrategyName, options: StrategyOptions = {}): PruningStrategy {
  const fuse = options.fuse ?? false;
  if (fuse && (name === "none" || name === "merge")) {
    throw new Error(`pruning: fuse applies to random, cnn and attention; strategy "${name}" drops no tokens`);
  }
  const spread = options.spread;
  if (spread !== undefined && !(Number.isInteger(spread) && spread >= 1)) {
    throw new Error(`pruning: spread ${spread} is not a window side in patches (a whole number ≥ 1)`);
  }
  if (spread !== undefined && (name === "none" || name === "merge")) {
    throw new Error(
      `pruning: spread applies to random, cnn and attention; strategy "${name}" ranks no tokens`,
    );
  }
  switch (name) {
    case "none":
      return {
        name,
        forward: (model, x, o) =>
          tf.tidy(() =>
            vitOf(model).forward(model instanceof Hybrid ? model.vitInput(x) : x, {
              returnAux: o.returnAux,
              returnAttention: o.returnAttention,
            }) as unknown as tf.TensorContainer
          ) as unknown as ForwardOutput,
        gmacs: (model) =>
          (model instanceof Hybrid ? model.tokenizerGmacs() : 0) + vitOf(model).gmacs({ keepRatio: 1 }).total,
      };
    case "random": {
      const own = new Rng(options.seed ?? 0);
      return {
        name,
        forward: (model, x, o) => {
          const rng = o.rng ?? own;
          checkOneLocation(name, { fuse, spread }, o.schedule);
          const reduce = byScores(
            (ctx) => {
              const [b, t] = ctx.keptIndices.shape;
              const v = new Float32Array(b * t);
              for (let i = 0; i < v.length; i++) v[i] = rng.next();
              return tf.tensor2d(v, [b, t]);
            },
            fuse ? (s) => tf.onesLike(s) : undefined,
            spread,
          );
          return runWithReduction(model, x, o.schedule, reduce, false, o);
        },
        gmacs: (model, schedule) => tokensAndVitGmacs(model, schedule, fuse),
      };
    }
    case "cnn":
      return {
        name,
        forward: (model, x, o) => {
          const hybrid = hybridOf(model, name);
          // The strategy's spread, else the hybrid's own (the selection it was trained with).
          const cell = spread ?? hybrid.config.spread;
          checkOneLocation(name, { fuse, spread: cell }, o.schedule);
          return tf.tidy(() => {
            // One scorer pass gives the scores and, with CNN tokens, the ViT's input.
            const { scores, input } = hybrid.scoresAndVitInput(x, o.cnnTraining ?? o.training ?? false);
            const reduce = byScores(
              (ctx) => {
                if (ctx.block === -1) return scores;
                return tf.squeeze(batchGather(tf.expandDims(scores, 2), ctx.keptIndices), [2]) as tf.Tensor2D;
              },
              fuse ? hybridFuseWeights : undefined,
              cell,
            );
            const out = runWithReduction(
              hybrid,
              x,
              o.schedule,
              reduce,
              false,
              o,
              o.returnAux ? { scores } : {},
              input,
            );
            return out as unknown as tf.TensorContainer;
          }) as unknown as ForwardOutput;
        },
        gmacs: (model, schedule) => {
          const hybrid = hybridOf(model, name);
          return (hybrid.gmacs({ keepRatio: 1 }).cnn ?? 0) + vitGmacs(model, schedule, fuse);
        },
      };
    case "attention":
      return {
        name,
        forward: (model, x, o) => {
          if (o.schedule.locations[0] === 0) {
            throw new Error(
              `pruning: strategy "attention" needs a block's attention before it prunes, so its first location ` +
                `must be ≥ 1; got ${JSON.stringify(o.schedule)}`,
            );
          }
          checkOneLocation(name, { fuse, spread }, o.schedule);
          // EViT: rank by the CLS token's attention, and fuse the dropped tokens weighted by it.
          const reduce = byScores(
            (ctx) => {
              const att = ctx.attention!; // [B, H, T, T]
              const [b, h, t] = att.shape;
              const n = ctx.keptIndices.shape[1];
              const cls = tf.slice(att, [0, 0, 0, t - n], [b, h, 1, n]);
              return tf.reshape(tf.mean(cls, 1), [b, n]) as tf.Tensor2D;
            },
            fuse ? (s) => s : undefined,
            spread,
          );
          return runWithReduction(model, x, o.schedule, reduce, true, o);
        },
        gmacs: (model, schedule) => tokensAndVitGmacs(model, schedule, fuse),
      };
    case "merge":
      return {
        name,
        forward: (model, x, o) => {
          if (vitOf(model).numPrefixTokens !== 1) {
            throw new Error(
              'pruning: strategy "merge" supports a ViT with one prefix token (no distillToken)',
            );
          }
          const reduce: ReduceFn = (tokens, ctx) => {
            const r = mergeToCount(tokens, ctx.keptIndices, ctx.keep);
            r.sizes.dispose();
            return { tokens: r.tokens, keptIndices: r.keptIndices };
          };
          return runWithReduction(model, x, o.schedule, reduce, false, o);
        },
        // The blocks on the merged tokens, plus the similarity matmuls of each merge.
        gmacs: (model, schedule) => {
          const vit = vitOf(model);
          const counts = keepCounts(schedule, vit.numPatches);
          let cur = vit.numPatches, sim = 0;
          for (const k of counts) {
            if (k < cur) sim += mergeSimilarityGmacs(cur, k, vit.config.embedDim);
            cur = Math.min(cur, k);
          }
          return tokensAndVitGmacs(model, schedule) + sim;
        },
      };
    default:
      throw new Error(`pruning: unknown strategy "${name}"; expected one of ${STRATEGIES.join(", ")}`);
  }
}

/**
 * Validates a strategy name from user input.
 *
 * @example
 * ```ts
 * parseStrategy("cnn"); // "cnn"
 * ```
 */
export function parseStrategy(raw: string, source = "strategy"): StrategyName {
  const v = raw.trim().toLowerCase();
  if ((STRATEGIES as readonly string[]).includes(v)) return v as StrategyName;
  throw new Error(
    `${source}: unknown strategy "${raw}"; expected one of ${STRATEGIES.map((s) => `"${s}"`).join(", ")}`,
  );
}
