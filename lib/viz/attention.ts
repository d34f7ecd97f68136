/**
 * Attention maps from CLS: per-block CLS attention and attention rollout (Abnar & Zuidema 2020),
 * mapped back onto the full patch grid when the ViT ran on a subset of the patches.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { ForwardAux } from "../models/types.ts";

/** One image's attention probabilities of one block: `heads × tokens × tokens`, row-major, CLS first. */
export interface AttentionMatrix {
  data: ArrayLike<number>;
  heads: number;
  tokens: number;
}

/** Where the attention's non-CLS tokens sit on the patch grid. */
export interface PatchMapping {
  /** Patches in the full grid (e.g. 64 for an 8×8 grid). */
  numPatches: number;
  /** Patch index of each non-CLS token, in token order (the model's `aux.keptIndices` row); default 0..T-2. */
  keptIndices?: ArrayLike<number>;
}

function checkAttention(fn: string, a: AttentionMatrix, i: number): void {
  if (!a || a.data?.length !== a.heads * a.tokens * a.tokens) {
    throw new RangeError(
      `${fn}: attention[${i}] has ${a?.data?.length} values; expected heads*tokens*tokens = ${
        a?.heads * a?.tokens * a?.tokens
      }`,
    );
  }
}

function toPatches(fn: string, row: ArrayLike<number>, tokens: number, m: PatchMapping): Float64Array {
  const out = new Float64Array(m.numPatches);
  const kept = m.keptIndices;
  if (!kept && tokens - 1 !== m.numPatches) {
    throw new RangeError(
      `${fn}: ${
        tokens - 1
      } non-CLS tokens but numPatches is ${m.numPatches}; pass keptIndices for a pruned ViT`,
    );
  }
  if (kept && kept.length !== tokens - 1) {
    throw new RangeError(
      `${fn}: keptIndices has ${kept.length} entries; expected one per non-CLS token (${tokens - 1})`,
    );
  }
  for (let t = 1; t < tokens; t++) {
    const p = kept ? kept[t - 1] : t - 1;
    if (!(p >= 0 && p < m.numPatches)) {
      throw new RangeError(`${fn}: keptIndices[${t - 1}] is ${p}; expected [0, ${m.numPatches})`);
    }
    out[p] = row[t];
  }
  return out;
}

/**
 * Head-averaged attention from CLS to every patch, on the full grid (pruned patches get 0).
 *
 * @example
 * ```ts
 * const map = clsAttention(att[0], { numPatches: 64, keptIndices: kept });
 * ```
 */
export function clsAttention(attention: AttentionMatrix, mapping: PatchMapping): Float64Array {
  checkAttention("clsAttention", attention, 0);
  const { heads, tokens, data } = attention;
  const row = new Float64Array(tokens);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < tokens; j++) row[j] += data[h * tokens * tokens + j] / heads;
  }
  return toPatches("clsAttention", row, tokens, mapping);
}

/**
 * Attention rollout: the product over blocks of `(1 − residual)·A + residual·I` (head-averaged,
 * rows renormalized), read from CLS to the patches. All blocks must see the same tokens (the CNN-guided
 * pruning selects once, before the first block).
 *
 * @example
 * ```ts
 * const map = attentionRollout(att, { numPatches: 64, keptIndices: kept });
 * ```
 */
export function attentionRollout(
  attention: readonly AttentionMatrix[],
  mapping: PatchMapping & { residual?: number },
): Float64Array {
  if (attention.length === 0) {
    throw new RangeError("attentionRollout: attention is empty; expected one per block");
  }
  const residual = mapping.residual ?? 0.5;
  const t = attention[0].tokens;
  let r: Float64Array | undefined;
  attention.forEach((a, i) => {
    checkAttention("attentionRollout", a, i);
    if (a.tokens !== t) {
      throw new RangeError(
        `attentionRollout: block ${i} has ${a.tokens} tokens, block 0 has ${t}; rollout needs the same tokens in every block`,
      );
    }
    const m = new Float64Array(t * t);
    for (let h = 0; h < a.heads; h++) {
      for (let k = 0; k < t * t; k++) m[k] += ((1 - residual) * a.data[h * t * t + k]) / a.heads;
    }
    for (let k = 0; k < t; k++) {
      m[k * t + k] += residual;
      let s = 0;
      for (let j = 0; j < t; j++) s += m[k * t + j];
      for (let j = 0; j < t; j++) m[k * t + j] /= s || 1;
    }
    if (!r) {
      r = m;
      return;
    }
    const next = new Float64Array(t * t);
    for (let x = 0; x < t; x++) {
      for (let k = 0; k < t; k++) {
        const v = m[x * t + k];
        if (v === 0) continue;
        for (let y = 0; y < t; y++) next[x * t + y] += v * r[k * t + y];
      }
    }
    r = next;
  });
  return toPatches("attentionRollout", r!.subarray(0, t), t, mapping);
}

/** One image's auxiliary outputs as plain arrays. */
export interface ImageAux {
  /** Importance score per patch. */
  scores?: Float32Array;
  /** Patch indices the ViT ran on (CLS excluded). */
  keptIndices?: Int32Array;
  /** Per block attention of this image. */
  attention?: AttentionMatrix[];
}

/**
 * Copies image `index` of a forward pass's `aux` (tensors `[B, ...]`) into plain arrays for the viz
 * functions. Does not dispose `aux`.
 *
 * @example
 * ```ts
 * const out = model.forward(x, { returnAux: true, returnAttention: true });
 * const a = await imageAux(out.aux!, 0);
 * ```
 */
export async function imageAux(aux: ForwardAux, index: number): Promise<ImageAux> {
  const row = async <T extends tf.Tensor>(t: T) => {
    if (!Number.isInteger(index) || index < 0 || index >= t.shape[0]) {
      throw new RangeError(`imageAux: index is ${index}; expected an integer in [0, ${t.shape[0]})`);
    }
    const s = tf.slice(t, [index], [1]);
    try {
      return await s.data();
    } finally {
      s.dispose();
    }
  };
  const out: ImageAux = {};
  if (aux.scores) out.scores = Float32Array.from(await row(aux.scores));
  if (aux.keptIndices) out.keptIndices = Int32Array.from(await row(aux.keptIndices));
  if (aux.attention) {
    out.attention = [];
    for (const a of aux.attention) {
      out.attention.push({ data: Float32Array.from(await row(a)), heads: a.shape[1], tokens: a.shape[2] });
    }
  }
  return out;
}
