/**
 * ToMe-style bipartite soft matching (Bolya et al., "Token Merging: Your ViT but Faster"): split the
 * patch tokens alternately into sets A and B, match each A token to its most similar B token (cosine
 * similarity), and average the r best-matched A tokens into their B partners. The CLS token is protected.
 * Written from the paper's description; merges use a one-hot matmul so they differentiate everywhere.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { batchGather } from "./batch_gather.ts";
import { detach } from "./detach.ts";

/** Result of {@link bipartiteMerge}. */
export interface MergeResult {
  /** `[B, 1 + T − r, D]`, CLS first, then unmerged A tokens, then B tokens (merged into). */
  tokens: tf.Tensor3D;
  /** Patch index of each non-CLS output token (for a merged token: its B partner's), `[B, T − r]` int32. */
  keptIndices: tf.Tensor2D;
  /** How many original tokens each non-CLS output token stands for, `[B, T − r]` float32. */
  sizes: tf.Tensor2D;
}

/**
 * One round of bipartite merging removing `r` tokens (`r ≤ ⌈T/2⌉` where T is the number of patch tokens).
 * `metric` (`[B, T, C]`, default the patch tokens themselves) decides similarity; `sizes` (`[B, T]`,
 * default ones) weights the averages so repeated rounds stay true means.
 *
 * @example
 * ```ts
 * const { tokens, keptIndices } = bipartiteMerge(x, indices, 8);
 * ```
 */
export function bipartiteMerge(
  tokens: tf.Tensor3D,
  keptIndices: tf.Tensor2D,
  r: number,
  options: { metric?: tf.Tensor3D; sizes?: tf.Tensor2D } = {},
): MergeResult {
  const [bsz, t1, d] = tokens.shape;
  const t = t1 - 1;
  const nA = Math.ceil(t / 2);
  const nB = t - nA;
  if (keptIndices.shape[0] !== bsz || keptIndices.shape[1] !== t) {
    throw new Error(`bipartiteMerge: keptIndices must be [${bsz}, ${t}], got [${keptIndices.shape}]`);
  }
  if (!Number.isInteger(r) || r < 0 || r > Math.min(nA, nB)) {
    throw new Error(
      `bipartiteMerge: r must be an integer in [0, ${Math.min(nA, nB)}] for ${t} patch tokens, got ${r}`,
    );
  }
  const [outTokens, outIdx, outSizes] = tf.tidy(() => {
    const x = tf.slice(tokens, [0, 1, 0], [-1, -1, -1]);
    const cls = tf.slice(tokens, [0, 0, 0], [-1, 1, -1]);
    const sizes = options.sizes ?? tf.ones([bsz, t]);
    if (r === 0) {
      return [tf.clone(tokens), tf.clone(keptIndices), tf.clone(sizes)];
    }
    const evenIdx = tf.range(0, t, 2, "int32");
    const oddIdx = tf.range(1, t, 2, "int32");
    // The matching is a hard decision: computed on a detached metric (see detach.ts).
    const metric = detach(options.metric ?? x);
    const m = tf.div(metric, tf.add(tf.norm(metric, "euclidean", -1, true), 1e-6));
    const mA = tf.gather(m, evenIdx, 1);
    const mB = tf.gather(m, oddIdx, 1);
    const sim = tf.matMul(mA, mB, false, true); // [B, nA, nB]
    const nodeMax = tf.max(sim, -1) as tf.Tensor2D;
    const nodeIdx = tf.cast(tf.argMax(sim, -1), "int32") as tf.Tensor2D;
    const order = tf.topk(nodeMax, nA, true).indices as tf.Tensor2D; // most similar first
    const srcIdx = tf.slice(order, [0, 0], [-1, r]) as tf.Tensor2D;
    const unmIdx = tf.slice(order, [0, r], [-1, -1]) as tf.Tensor2D;
    const col = (v: tf.Tensor2D, idx: tf.Tensor2D) => tf.squeeze(batchGather(tf.expandDims(v, 2), idx), [2]);
    const dstIdx = col(nodeIdx, srcIdx) as tf.Tensor2D;

    const xA = tf.gather(x, evenIdx, 1) as tf.Tensor3D;
    const xB = tf.gather(x, oddIdx, 1) as tf.Tensor3D;
    const sA = tf.gather(sizes, evenIdx, 1) as tf.Tensor2D;
    const sB = tf.gather(sizes, oddIdx, 1) as tf.Tensor2D;
    const iA = tf.gather(keptIndices, evenIdx, 1) as tf.Tensor2D;
    const iB = tf.gather(keptIndices, oddIdx, 1) as tf.Tensor2D;

    const src = batchGather(xA, srcIdx);
    const srcSize = batchGather(tf.expandDims(sA, 2), srcIdx) as tf.Tensor3D; // [B, r, 1]
    const onehot = tf.cast(tf.oneHot(dstIdx, nB), "float32") as tf.Tensor3D; // [B, r, nB]
    const addX = tf.matMul(onehot, tf.mul(src, srcSize), true, false); // [B, nB, D]
    const addS = tf.squeeze(tf.matMul(onehot, srcSize, true, false), [2]); // [B, nB]
    const newS = tf.add(sB, addS);
    const newB = tf.div(tf.add(tf.mul(xB, tf.expandDims(sB, 2)), addX), tf.expandDims(newS, 2));

    const unm = batchGather(xA, unmIdx);
    const out = tf.reshape(tf.concat([cls, unm, newB], 1), [bsz, 1 + t - r, d]) as tf.Tensor3D;
    const outIdx = tf.cast(tf.concat([col(iA, unmIdx), iB], 1), "int32") as tf.Tensor2D;
    const outSizes = tf.concat([col(sA, unmIdx), newS], 1) as tf.Tensor2D;
    return [out, outIdx, outSizes];
  });
  return {
    tokens: outTokens as tf.Tensor3D,
    keptIndices: outIdx as tf.Tensor2D,
    sizes: outSizes as tf.Tensor2D,
  };
}

/**
 * Merges rounds of {@link bipartiteMerge} until `keep` patch tokens remain (a single round removes at
 * most half of them).
 *
 * @example
 * ```ts
 * const { tokens } = mergeToCount(x, indices, 16); // 64 patches -> 16
 * ```
 */
export function mergeToCount(tokens: tf.Tensor3D, keptIndices: tf.Tensor2D, keep: number): MergeResult {
  const t = tokens.shape[1] - 1;
  if (!Number.isInteger(keep) || keep < 1 || keep > t) {
    throw new Error(`mergeToCount: keep must be an integer in [1, ${t}], got ${keep}`);
  }
  let cur: MergeResult | undefined;
  for (const { r } of mergeRounds(t, keep)) {
    const next = bipartiteMerge(cur?.tokens ?? tokens, cur?.keptIndices ?? keptIndices, r, {
      sizes: cur?.sizes,
    });
    if (cur) tf.dispose([cur.tokens, cur.keptIndices, cur.sizes]);
    cur = next;
  }
  return cur ??
    { tokens: tf.clone(tokens), keptIndices: tf.clone(keptIndices), sizes: tf.ones([tokens.shape[0], t]) };
}

/**
 * GMACs of {@link mergeToCount}'s similarity matmuls from `n` patch tokens down to `keep`: each bipartite
 * round compares its ⌈n/2⌉ A tokens with its ⌊n/2⌋ B tokens over `dim` channels (the norms and the
 * weighted averages are O(n·dim) and not counted). Small next to the blocks, but an equal-cost comparison
 * charges what runs.
 *
 * @example
 * ```ts
 * mergeSimilarityGmacs(64, 32, 192); // one round: 32 × 32 × 192 MACs = 0.000196608
 * ```
 */
export function mergeSimilarityGmacs(n: number, keep: number, dim: number): number {
  let macs = 0;
  for (const round of mergeRounds(n, keep)) macs += Math.ceil(round.n / 2) * Math.floor(round.n / 2) * dim;
  return macs / 1e9;
}

/**
 * The rounds {@link mergeToCount} runs from `n` patch tokens down to `keep`: each round's token count `n`
 * and the `r` pairs it merges (at most half the tokens per round). One schedule for the merge and its cost.
 */
function mergeRounds(n: number, keep: number): { n: number; r: number }[] {
  const rounds: { n: number; r: number }[] = [];
  while (n > keep) {
    const r = Math.min(n - keep, Math.floor(n / 2));
    rounds.push({ n, r });
    n -= r;
  }
  return rounds;
}
