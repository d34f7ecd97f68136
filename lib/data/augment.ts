/**
 * Batch augmentation (the role Albumentations plays in Python): random crop with padding, flips,
 * 90-degree rotations, HED stain / brightness / contrast jitter, and normalisation.
 *
 * The work is done on flat NHWC buffers while a batch is assembled from the in-memory `Uint8Array`
 * images (one pass, no intermediate tensors), so it is fast and bit-identical on every backend.
 * {@link augmentTensor} applies the same transforms to an existing tensor.
 *
 * Every random draw comes from a {@link Rng}, so a given seed always gives the same batch.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { Rng } from "../util/mod.ts";

/**
 * Which augmentations to apply. Geometric transforms are applied first (crop, then rotation, then
 * flips), colour jitter next (on values in [0, 1], clamped), normalisation last.
 */
export interface AugmentOptions {
  /** Zero-pad each side by this many pixels, then crop a random window of the original size (CIFAR: 4). */
  cropPadding?: number;
  /** Horizontal flip probability (`true` = 0.5). */
  hflip?: boolean | number;
  /** Vertical flip probability (`true` = 0.5). */
  vflip?: boolean | number;
  /** Rotate by a uniformly random multiple of 90 degrees (square images only). */
  rot90?: boolean;
  /**
   * HED stain jitter strength σ (histology, Tellez et al. 2018): in haematoxylin/eosin/DAB optical
   * density space each stain is scaled by U(1-σ, 1+σ) and shifted by U(-σ, σ). Needs 3 channels.
   */
  hed?: number;
  /** Brightness jitter: add U(-b, b) to every value (values in [0, 1]). */
  brightness?: number;
  /** Contrast jitter: scale the deviation from the image mean by U(1-c, 1+c). */
  contrast?: number;
}

/**
 * The standard CIFAR recipe: pad 4 and random-crop 32x32, horizontal flip with probability 0.5.
 *
 * @example
 * ```ts
 * for (const b of ds.batches({ batchSize: 128, shuffle: true, augment: AUGMENT_CIFAR })) { b.x.dispose(); b.y.dispose(); }
 * ```
 */
export const AUGMENT_CIFAR: Readonly<AugmentOptions> = Object.freeze({ cropPadding: 4, hflip: true });

/**
 * A histology recipe: all eight dihedral orientations, HED stain jitter and mild brightness/contrast jitter.
 *
 * @example
 * ```ts
 * const x = augmentTensor(patches, AUGMENT_HISTOLOGY, 7);
 * ```
 */
export const AUGMENT_HISTOLOGY: Readonly<AugmentOptions> = Object.freeze({
  hflip: true,
  vflip: true,
  rot90: true,
  hed: 0.05,
  brightness: 0.1,
  contrast: 0.1,
});

/** Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical density RGB space. */
const RGB_FROM_HED = [
  [0.65, 0.70, 0.29],
  [0.07, 0.99, 0.11],
  [0.27, 0.57, 0.78],
];

function invert3(m: number[][]): number[][] {
  const [a, b, c] = m[0], [d, e, f] = m[1], [g, h, i] = m[2];
  const A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return [
    [A / det, -(b * i - c * h) / det, (b * f - c * e) / det],
    [B / det, (a * i - c * g) / det, -(a * f - c * d) / det],
    [C / det, -(a * h - b * g) / det, (a * e - b * d) / det],
  ];
}
const HED_FROM_RGB = invert3(RGB_FROM_HED);

function probability(p: boolean | number | undefined, what: string): number {
  if (p === undefined || p === false) return 0;
  if (p === true) return 0.5;
  if (!(p >= 0 && p <= 1)) {
    throw new Error(`augment: ${what} must be a probability in [0, 1] or a boolean, got ${p}`);
  }
  return p;
}

function nonNegative(v: number | undefined, what: string): number {
  if (v === undefined) return 0;
  if (!(v >= 0) || !Number.isFinite(v)) {
    throw new Error(`augment: ${what} must be a finite number >= 0, got ${v}`);
  }
  return v;
}

/** Validated, resolved form of {@link AugmentOptions}. */
interface Resolved {
  pad: number;
  ph: number;
  pv: number;
  rot: boolean;
  hed: number;
  bright: number;
  contrast: number;
  geometric: boolean;
  colour: boolean;
}

function resolve(aug: AugmentOptions | undefined, shape: readonly number[]): Resolved {
  const a = aug ?? {};
  const pad = nonNegative(a.cropPadding, "cropPadding");
  if (!Number.isInteger(pad)) throw new Error(`augment: cropPadding must be an integer, got ${pad}`);
  const r: Resolved = {
    pad,
    ph: probability(a.hflip, "hflip"),
    pv: probability(a.vflip, "vflip"),
    rot: a.rot90 === true,
    hed: nonNegative(a.hed, "hed"),
    bright: nonNegative(a.brightness, "brightness"),
    contrast: nonNegative(a.contrast, "contrast"),
    geometric: false,
    colour: false,
  };
  r.geometric = r.pad > 0 || r.ph > 0 || r.pv > 0 || r.rot;
  r.colour = r.hed > 0 || r.bright > 0 || r.contrast > 0;
  if (r.rot && shape[0] !== shape[1]) {
    throw new Error(`augment: rot90 needs square images, got shape [${shape.join(", ")}]`);
  }
  if (r.hed > 0 && shape[2] !== 3) {
    throw new Error(`augment: hed jitter needs 3 (RGB) channels, got shape [${shape.join(", ")}]`);
  }
  return r;
}

/** Arguments of {@link fillBatch}. */
export interface FillBatchArgs {
  /** Source images, NHWC, `Uint8Array` (0..255) or `Float32Array` (scaled by `srcScale`). */
  src: Uint8Array | Float32Array;
  /** Multiplier taking source values to [0, 1] (1/255 for bytes). */
  srcScale: number;
  /** `[H, W, C]` of one image. */
  shape: readonly [number, number, number];
  /** Which source images, in batch order. */
  indices: ArrayLike<number>;
  /** Output, `indices.length * H * W * C` floats. */
  out: Float32Array;
  /** Per-channel mean and std in [0, 1] units; `undefined` leaves values in [0, 1]. */
  normalize?: { mean: readonly number[]; std: readonly number[] };
  /** Augmentations (none when undefined). */
  augment?: AugmentOptions;
  /** Random source for the augmentations (required when any is enabled). */
  rng?: Rng;
}

/**
 * Assembles a batch into `out`: gathers `indices` from `src`, augments and normalises in one pass.
 * This is the fast path under every dataset's batch iterator; it allocates only a per-image scratch buffer.
 *
 * @example
 * ```ts
 * const out = new Float32Array(2 * 32 * 32 * 3);
 * fillBatch({ src: images, srcScale: 1 / 255, shape: [32, 32, 3], indices: [5, 9], out, augment: AUGMENT_CIFAR, rng: new Rng(1) });
 * ```
 */
export function fillBatch(args: FillBatchArgs): void {
  const { src, srcScale, shape, indices, out } = args;
  const [H, W, C] = shape;
  const per = H * W * C;
  const n = indices.length;
  if (out.length !== n * per) {
    throw new Error(`fillBatch: out has ${out.length} floats, expected ${n} x ${H}x${W}x${C} = ${n * per}`);
  }
  const count = src.length / per;
  const r = resolve(args.augment, shape);
  if ((r.geometric || r.colour) && !args.rng) throw new Error("fillBatch: augmentations need an rng");
  const scale = new Float32Array(C), bias = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    const m = args.normalize ? args.normalize.mean[c] : 0;
    const s = args.normalize ? args.normalize.std[c] : 1;
    if (!(s > 0)) throw new Error(`fillBatch: std[${c}] must be > 0, got ${s}`);
    scale[c] = 1 / s;
    bias[c] = -m / s;
  }
  const tmp = r.geometric || r.colour ? new Float32Array(per) : undefined;
  for (let b = 0; b < n; b++) {
    const idx = indices[b];
    if (!(idx >= 0 && idx < count) || !Number.isInteger(idx)) {
      throw new Error(`fillBatch: index ${idx} at batch position ${b} is outside 0..${count - 1}`);
    }
    const s0 = idx * per, o0 = b * per;
    if (!tmp) {
      // Fast path: gather + normalise.
      for (let p = 0, c = 0; p < per; p++) {
        out[o0 + p] = src[s0 + p] * srcScale * scale[c] + bias[c];
        if (++c === C) c = 0;
      }
      continue;
    }
    const rng = args.rng!;
    if (r.geometric) geometric(src, s0, srcScale, H, W, C, r, rng, tmp);
    else for (let p = 0; p < per; p++) tmp[p] = src[s0 + p] * srcScale;
    if (r.colour) colour(tmp, r, rng, src instanceof Uint8Array && srcScale === 1 / 255);
    for (let p = 0, c = 0; p < per; p++) {
      out[o0 + p] = tmp[p] * scale[c] + bias[c];
      if (++c === C) c = 0;
    }
  }
}

function geometric(
  src: Uint8Array | Float32Array,
  s0: number,
  srcScale: number,
  H: number,
  W: number,
  C: number,
  r: Resolved,
  rng: Rng,
  tmp: Float32Array,
): void {
  const dy = r.pad > 0 ? rng.int(2 * r.pad + 1) - r.pad : 0;
  const dx = r.pad > 0 ? rng.int(2 * r.pad + 1) - r.pad : 0;
  const k = r.rot ? rng.int(4) : 0;
  const fh = r.ph > 0 && rng.next() < r.ph;
  const fv = r.pv > 0 && rng.next() < r.pv;
  // out = flip(rot_k(crop(src))). For each output pixel, undo the flips, then the rotation
  // (rot90 counter-clockwise: rot[i][j] = in[j][S-1-i]), then the crop shift.
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let u = fv ? H - 1 - y : y;
      let v = fh ? W - 1 - x : x;
      for (let t = 0; t < k; t++) {
        const nu = v;
        v = H - 1 - u;
        u = nu;
      }
      const sy = u + dy, sx = v + dx;
      const o = (y * W + x) * C;
      if (sy < 0 || sy >= H || sx < 0 || sx >= W) {
        for (let c = 0; c < C; c++) tmp[o + c] = 0;
      } else {
        const s = s0 + (sy * W + sx) * C;
        for (let c = 0; c < C; c++) tmp[o + c] = src[s + c] * srcScale;
      }
    }
  }
}

/** Optical density of byte values: `OD_OF_BYTE[k] = -ln((k + 1) / 256)`. */
const OD_OF_BYTE = Float64Array.from({ length: 256 }, (_, k) => -Math.log((k + 1) / 256));

/** `exp(-x)` on [EXP_LO, EXP_HI] by linear interpolation in a table (relative error below 1e-6). */
const EXP_LO = -4, EXP_HI = 12, EXP_N = 8192;
const EXP_STEP = (EXP_HI - EXP_LO) / EXP_N;
const EXP_TABLE = Float64Array.from({ length: EXP_N + 2 }, (_, i) => Math.exp(-(EXP_LO + i * EXP_STEP)));
function expNeg(x: number): number {
  if (!(x > EXP_LO && x < EXP_HI)) return Math.exp(-x);
  const t = (x - EXP_LO) / EXP_STEP;
  const i = t | 0;
  const f = t - i;
  return EXP_TABLE[i] + (EXP_TABLE[i + 1] - EXP_TABLE[i]) * f;
}

function colour(tmp: Float32Array, r: Resolved, rng: Rng, bytes: boolean): void {
  const n = tmp.length;
  if (r.hed > 0) {
    const a = [0, 0, 0], b = [0, 0, 0];
    for (let j = 0; j < 3; j++) {
      a[j] = 1 + (2 * rng.next() - 1) * r.hed;
      b[j] = (2 * rng.next() - 1) * r.hed;
    }
    // Combined linear map in OD space: od' = ((od · HED_FROM_RGB) * a + b) · RGB_FROM_HED.
    const M = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
    const off = [0, 0, 0];
    for (let i = 0; i < 3; i++) {
      for (let k = 0; k < 3; k++) {
        let s = 0;
        for (let j = 0; j < 3; j++) s += HED_FROM_RGB[i][j] * a[j] * RGB_FROM_HED[j][k];
        M[i][k] = s;
      }
    }
    for (let k = 0; k < 3; k++) {
      let s = 0;
      for (let j = 0; j < 3; j++) s += b[j] * RGB_FROM_HED[j][k];
      off[k] = s;
    }
    const [[m00, m01, m02], [m10, m11, m12], [m20, m21, m22]] = M;
    const [f0, f1, f2] = off;
    for (let p = 0; p < n; p += 3) {
      // od = -ln((v*255 + 1) / 256): finite for black, 0 for white, exactly invertible.
      // (Values that came from bytes are exact multiples of 1/255: look their OD up.)
      const o0 = bytes ? OD_OF_BYTE[Math.round(tmp[p] * 255)] : -Math.log((tmp[p] * 255 + 1) / 256);
      const o1 = bytes ? OD_OF_BYTE[Math.round(tmp[p + 1] * 255)] : -Math.log((tmp[p + 1] * 255 + 1) / 256);
      const o2 = bytes ? OD_OF_BYTE[Math.round(tmp[p + 2] * 255)] : -Math.log((tmp[p + 2] * 255 + 1) / 256);
      const v0 = (256 * expNeg(o0 * m00 + o1 * m10 + o2 * m20 + f0) - 1) / 255;
      const v1 = (256 * expNeg(o0 * m01 + o1 * m11 + o2 * m21 + f1) - 1) / 255;
      const v2 = (256 * expNeg(o0 * m02 + o1 * m12 + o2 * m22 + f2) - 1) / 255;
      tmp[p] = v0 < 0 ? 0 : v0 > 1 ? 1 : v0;
      tmp[p + 1] = v1 < 0 ? 0 : v1 > 1 ? 1 : v1;
      tmp[p + 2] = v2 < 0 ? 0 : v2 > 1 ? 1 : v2;
    }
  }
  if (r.bright > 0 || r.contrast > 0) {
    const db = r.bright > 0 ? (2 * rng.next() - 1) * r.bright : 0;
    const fc = r.contrast > 0 ? 1 + (2 * rng.next() - 1) * r.contrast : 1;
    let mean = 0;
    if (fc !== 1) {
      for (let p = 0; p < n; p++) mean += tmp[p];
      mean /= n;
    }
    for (let p = 0; p < n; p++) {
      const v = (tmp[p] - mean) * fc + mean + db;
      tmp[p] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
}

/**
 * Applies augmentations (and optional normalisation) to a batch tensor with values in [0, 1].
 * Deterministic for a given seed; returns a new tensor (the input is not disposed).
 *
 * @example
 * ```ts
 * const y = augmentTensor(x, { cropPadding: 4, hflip: true }, 42); // x: [N, 32, 32, 3] in [0, 1]
 * ```
 */
export function augmentTensor(
  x: tf.Tensor4D,
  augment: AugmentOptions,
  seed: number,
  normalize?: { mean: readonly number[]; std: readonly number[] },
): tf.Tensor4D {
  if (x.rank !== 4) throw new Error(`augmentTensor: expected a rank-4 NHWC tensor, got shape [${x.shape}]`);
  const [n, h, w, c] = x.shape;
  const src = x.dataSync() as Float32Array;
  const out = new Float32Array(src.length);
  const indices = new Int32Array(n).map((_, i) => i);
  fillBatch({
    src: src instanceof Float32Array ? src : Float32Array.from(src),
    srcScale: 1,
    shape: [h, w, c],
    indices,
    out,
    normalize,
    augment,
    rng: new Rng(seed),
  });
  return tf.tensor4d(out, [n, h, w, c], "float32");
}
