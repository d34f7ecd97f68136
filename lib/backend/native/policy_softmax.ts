/**
 * DynamicViT's softmax with a token policy, on flat float32 arrays: the row-wise part of the native
 * backend's masked attention kernel (its matrix products run in oneDNN). For a batch's keep mask `m`
 * (`[b, t]`, 1 = kept) each query `i` attends to the kept keys and to itself:
 *
 *     P_ij = m_j (j ≠ i), P_ii = 1;   e_ij = exp(s_ij − max_j s_ij);   u_ij = e_ij · P_ij
 *     p_ij = (u_ij + ε/t) / (Σ_j u_ij + ε),   ε = 1e-6
 *
 * the formula of `ViT`'s op-by-op path (`tokenMask`), so both give the same probabilities and the same
 * gradients with respect to the scores and the mask. The max has a gradient too (through ε it does not
 * cancel; it matters where a row's kept keys all score far below a masked one): like tfjs' and PyTorch's
 * `max`, it reaches the score the max was taken from.
 *
 * @module
 */

/** DynamicViT's ε in the policy softmax. */
export const POLICY_EPS = 1e-6;

/**
 * Forward: `e` holds the scaled scores `[b, heads, t, t]` and is overwritten with `exp(s − rowmax)`;
 * writes the probabilities to `p` (same shape), `1 / (Σ_j u_ij + ε)` to `rowInv` and the column of each
 * row's max to `rowArgmax` (both `[b, heads, t]`).
 *
 * @example
 * ```ts
 * const e = new Float32Array([0, 1, 2, 3]), p = new Float32Array(4), r = new Float32Array(2);
 * policySoftmax(1, 1, 2, new Float32Array([1, 0]), e, p, r, new Float32Array(2)); // query 0: key 0 only
 * ```
 */
export function policySoftmax(
  b: number,
  heads: number,
  t: number,
  mask: Float32Array,
  e: Float32Array,
  p: Float32Array,
  rowInv: Float32Array,
  rowArgmax: Float32Array,
): void {
  const epsT = POLICY_EPS / t;
  for (let n = 0; n < b; n++) {
    const m0 = n * t;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < t; i++) {
        const r0 = ((n * heads + h) * t + i) * t;
        let mx = -Infinity, at = 0;
        for (let j = 0; j < t; j++) {
          if (e[r0 + j] > mx) {
            mx = e[r0 + j];
            at = j;
          }
        }
        rowArgmax[(n * heads + h) * t + i] = at;
        let sum = 0;
        for (let j = 0; j < t; j++) {
          const v = Math.exp(e[r0 + j] - mx);
          e[r0 + j] = v;
          sum += v * (j === i ? 1 : mask[m0 + j]);
        }
        const inv = 1 / (sum + POLICY_EPS);
        rowInv[(n * heads + h) * t + i] = inv;
        for (let j = 0; j < t; j++) p[r0 + j] = (e[r0 + j] * (j === i ? 1 : mask[m0 + j]) + epsT) * inv;
      }
    }
  }
}

/**
 * Backward: `g` holds dL/dp and is overwritten with dL/ds (the scaled scores' gradient); writes dL/dm
 * to `dmask` (`[b, t]`). `e`, `p`, `rowInv` and `rowArgmax` are the forward's.
 *
 * With c_i = Σ_k g_ik p_ik: dL/du_ij = (g_ij − c_i) / (Σ_k u_ik + ε), dL/ds_ij = dL/du_ij · P_ij · e_ij
 * (through e), dL/dmax_i = −Σ_j of those (added at the max's column) and
 * dL/dm_j = Σ_{heads, i ≠ j} dL/du_ij · e_ij.
 */
export function policySoftmaxBackward(
  b: number,
  heads: number,
  t: number,
  mask: Float32Array,
  e: Float32Array,
  p: Float32Array,
  rowInv: Float32Array,
  rowArgmax: Float32Array,
  g: Float32Array,
  dmask: Float32Array,
): void {
  dmask.fill(0, 0, b * t);
  for (let n = 0; n < b; n++) {
    const m0 = n * t;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < t; i++) {
        const r0 = ((n * heads + h) * t + i) * t;
        const inv = rowInv[(n * heads + h) * t + i];
        let c = 0;
        for (let j = 0; j < t; j++) c += g[r0 + j] * p[r0 + j];
        let ds = 0;
        for (let j = 0; j < t; j++) {
          const du = (g[r0 + j] - c) * inv * e[r0 + j];
          const d = j === i ? du : du * mask[m0 + j];
          if (j !== i) dmask[m0 + j] += du;
          g[r0 + j] = d;
          ds += d;
        }
        g[r0 + rowArgmax[(n * heads + h) * t + i]] -= ds;
      }
    }
  }
}
