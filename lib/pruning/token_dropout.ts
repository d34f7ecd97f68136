/**
 * {@link tokenDropoutIndices}: training-time token dropout for the ViT. Each batch draws one keep ratio
 * uniformly in `[min, max]` and each image its own random subset of that many patch tokens; the ViT
 * gathers them (`keepIndices`), so its blocks run on the shorter sequence and the step is cheaper. A
 * model trained so works on partial grids (pruned inference) without fine-tuning.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Rng } from "../util/mod.ts";
import { keepCount } from "./select_top_k.ts";

/** Range of the per-batch keep ratio, `0 < min <= max <= 1`. */
export interface TokenDropout {
  min: number;
  max: number;
}

/**
 * Checks a token-dropout range (errors quote the value and name `source`).
 *
 * @example
 * ```ts
 * checkTokenDropout({ min: 0.5, max: 1 }); // ok
 * ```
 */
export function checkTokenDropout(d: TokenDropout, source = "tokenDropout"): TokenDropout {
  const ok = typeof d === "object" && d !== null && typeof d.min === "number" && typeof d.max === "number" &&
    d.min > 0 && d.min <= d.max && d.max <= 1;
  if (!ok) {
    throw new Error(`${source} ${JSON.stringify(d)} is not {min, max} with 0 < min <= max <= 1`);
  }
  return d;
}

/**
 * Draws the kept patch indices of one batch: a keep ratio `r ~ U[min, max]`, `k = keepCount(n, r)`, and for
 * each of the `batch` images a uniformly random k-subset of `0..n-1` in ascending order (`[batch, k]`
 * row-major). Returns `undefined` indices when k = n (the full grid: the forward is exactly the plain one).
 * Deterministic in `rng`.
 *
 * @example
 * ```ts
 * const { k, indices } = drawKeptIndices(new Rng(0), 2, 64, { min: 0.5, max: 1 });
 * ```
 */
export function drawKeptIndices(
  rng: Rng,
  batch: number,
  n: number,
  range: TokenDropout,
): { k: number; indices?: Int32Array } {
  checkTokenDropout(range, "drawKeptIndices: range");
  const k = keepCount(n, range.min + (range.max - range.min) * rng.next());
  if (k === n) return { k };
  const out = new Int32Array(batch * k);
  const perm = new Int32Array(n);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < n; i++) perm[i] = i;
    // Partial Fisher-Yates: the first k entries become a uniform k-subset.
    for (let i = 0; i < k; i++) {
      const j = i + rng.int(n - i);
      const t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    const row = perm.slice(0, k).sort();
    out.set(row, b * k);
  }
  return { k, indices: out };
}

/**
 * {@link drawKeptIndices} as a `[batch, k]` int32 tensor for `ViT.forward({ keepIndices })`, or `undefined`
 * when the batch keeps every token (then run the plain forward).
 *
 * @example
 * ```ts
 * const keep = tokenDropoutIndices(new Rng(1), 8, vit.numPatches, { min: 0.5, max: 1 });
 * const { logits } = vit.forward(x, { training: true, keepIndices: keep });
 * keep?.dispose();
 * ```
 */
export function tokenDropoutIndices(
  rng: Rng,
  batch: number,
  n: number,
  range: TokenDropout,
): tf.Tensor2D | undefined {
  const { k, indices } = drawKeptIndices(rng, batch, n, range);
  return indices ? tf.tensor2d(indices, [batch, k], "int32") : undefined;
}
