/**
 * Token counts and token reduction.
 *
 * @module
 */

/** Tokens kept and the resulting reduction. */
export interface TokenStats {
  /** Patch tokens kept (CLS excluded). */
  kept: number;
  /** Patch tokens in total (CLS excluded). */
  total: number;
  /** kept / total. */
  keepRatio: number;
  /** 1 − kept/total over patch tokens (the study's "token reduction"). */
  reduction: number;
}

/**
 * Token reduction `1 − kept/total` over patch tokens (CLS excluded). `kept` may be an average over
 * images (dynamic selection).
 *
 * @example
 * ```ts
 * tokenReduction(98, 196).reduction; // 0.5
 * ```
 */
export function tokenReduction(kept: number, total: number): TokenStats {
  if (!Number.isInteger(total) || total < 1) {
    throw new RangeError(
      `tokenReduction: total is ${total}; expected the number of patch tokens (integer >= 1)`,
    );
  }
  if (!(kept >= 0 && kept <= total)) {
    throw new RangeError(`tokenReduction: kept is ${kept}; expected a number in [0, ${total}]`);
  }
  return { kept, total, keepRatio: kept / total, reduction: 1 - kept / total };
}
