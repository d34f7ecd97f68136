/**
 * Selection quality: how well the kept tokens match a ground-truth mask of relevant patches.
 *
 * @module
 */

/** Options of {@link patchMask}. */
export interface PatchMaskOptions {
  /** Patch side in pixels. */
  patchSize: number;
  /** A patch is relevant when at least this fraction of its pixels is foreground (default 0.5). */
  minFraction?: number;
}

/**
 * Turns a pixel mask (`height × width`, row-major, non-zero = foreground) into one flag per patch
 * (row-major over the `height/patchSize × width/patchSize` patch grid, the ViT token order).
 *
 * @example
 * ```ts
 * patchMask([1, 1, 0, 0, 1, 1, 0, 0], 2, 4, { patchSize: 2 }); // Uint8Array [1, 0]
 * ```
 */
export function patchMask(
  mask: ArrayLike<number | boolean>,
  height: number,
  width: number,
  options: PatchMaskOptions,
): Uint8Array {
  const { patchSize, minFraction = 0.5 } = options;
  if (!Number.isInteger(patchSize) || patchSize < 1) {
    throw new RangeError(`patchMask: patchSize is ${patchSize}; expected a positive integer`);
  }
  if (mask.length !== height * width) {
    throw new RangeError(
      `patchMask: mask has ${mask.length} values; expected height*width = ${height * width}`,
    );
  }
  if (height % patchSize || width % patchSize) {
    throw new RangeError(`patchMask: ${height}x${width} is not divisible by patchSize ${patchSize}`);
  }
  const gh = height / patchSize, gw = width / patchSize;
  const out = new Uint8Array(gh * gw);
  for (let py = 0; py < gh; py++) {
    for (let px = 0; px < gw; px++) {
      let fg = 0;
      for (let y = py * patchSize; y < (py + 1) * patchSize; y++) {
        for (let x = px * patchSize; x < (px + 1) * patchSize; x++) if (mask[y * width + x]) fg++;
      }
      out[py * gw + px] = fg / (patchSize * patchSize) >= minFraction && fg > 0 ? 1 : 0;
    }
  }
  return out;
}

/** Result of {@link selectionQuality}. */
export interface SelectionQuality {
  /** Kept patches that are relevant / kept patches (NaN when nothing was kept). */
  precision: number;
  /** Relevant patches that were kept / relevant patches (NaN when no patch is relevant). */
  recall: number;
  /** Harmonic mean of precision and recall (0 when both are 0, NaN when either is NaN). */
  f1: number;
  kept: number;
  relevant: number;
  hits: number;
}

/**
 * Precision and recall of the kept patches against a per-patch ground-truth mask.
 * `kept` are patch indices (0-based over patches, CLS excluded); with `prefixTokens: 1` they are token
 * indices that count the CLS token first (index 0 = CLS, which is then ignored).
 *
 * @example
 * ```ts
 * selectionQuality([0, 1], [1, 0, 1, 0]); // {precision: 0.5, recall: 0.5, ...}
 * ```
 */
export function selectionQuality(
  kept: ArrayLike<number>,
  relevant: ArrayLike<number | boolean>,
  options: { prefixTokens?: number } = {},
): SelectionQuality {
  const prefix = options.prefixTokens ?? 0;
  const p = relevant.length;
  const seen = new Uint8Array(p);
  let hits = 0, k = 0;
  for (let i = 0; i < kept.length; i++) {
    const t = kept[i] - prefix;
    if (kept[i] < prefix) continue;
    if (!Number.isInteger(t) || t >= p) {
      throw new RangeError(
        `selectionQuality: kept[${i}] is ${kept[i]}; expected an integer patch index in [${prefix}, ${
          p + prefix
        })`,
      );
    }
    if (seen[t]) {
      throw new RangeError(
        `selectionQuality: kept[${i}] = ${kept[i]} appears twice; expected unique indices`,
      );
    }
    seen[t] = 1;
    k++;
    if (relevant[t]) hits++;
  }
  let r = 0;
  for (let i = 0; i < p; i++) if (relevant[i]) r++;
  const precision = k ? hits / k : NaN, recall = r ? hits / r : NaN;
  const f1 = Number.isNaN(precision) || Number.isNaN(recall)
    ? NaN
    : precision + recall > 0
    ? (2 * precision * recall) / (precision + recall)
    : 0;
  return { precision, recall, f1, kept: k, relevant: r, hits };
}

/** Mean selection quality over images. */
export interface MeanSelectionQuality {
  /** Mean precision over images that kept at least one patch. */
  precision: number;
  /** Mean recall over images with at least one relevant patch. */
  recall: number;
  /** Mean F1 over images where both are defined. */
  f1: number;
  /** Images averaged. */
  images: number;
}

/**
 * {@link selectionQuality} averaged over a batch: `kept[i]` and `relevant[i]` belong to image i.
 * Images where a quantity is undefined (nothing kept, no relevant patch) are left out of that mean.
 *
 * @example
 * ```ts
 * meanSelectionQuality([[0], [1]], [[1, 0], [1, 0]]); // {precision: 0.5, recall: 0.5, f1: 0.5, images: 2}
 * ```
 */
export function meanSelectionQuality(
  kept: readonly ArrayLike<number>[],
  relevant: readonly ArrayLike<number | boolean>[],
  options: { prefixTokens?: number } = {},
): MeanSelectionQuality {
  if (kept.length !== relevant.length || kept.length === 0) {
    throw new RangeError(
      `meanSelectionQuality: ${kept.length} kept rows and ${relevant.length} masks; expected the same non-zero count`,
    );
  }
  const mean = (v: number[]) => {
    const f = v.filter((x) => !Number.isNaN(x));
    return f.length ? f.reduce((a, b) => a + b, 0) / f.length : NaN;
  };
  const q = kept.map((k, i) => selectionQuality(k, relevant[i], options));
  return {
    precision: mean(q.map((x) => x.precision)),
    recall: mean(q.map((x) => x.recall)),
    f1: mean(q.map((x) => x.f1)),
    images: q.length,
  };
}
