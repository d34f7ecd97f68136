/**
 * tfjs kernels for the `native` backend whose heavy work runs in the system BLAS: BatchMatMul,
 * _FusedMatMul, Conv2D, FusedConv2D, Conv2DBackpropInput and Conv2DBackpropFilter. Tensors live in
 * the WebAssembly heap of the tfjs wasm backend; BLAS reads and writes that memory in place.
 * Convolutions are lowered with im2col in bounded chunks (1x1 stride-1 convolutions need no copy).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";
import type { Blas } from "./blas.ts";
import { type DnnlConv, DnnlDeclined } from "./dnnl.ts";
import {
  ATTENTION_GRAD_KERNEL,
  ATTENTION_KERNEL,
  BATCH_NORM_GRAD_KERNEL,
  BATCH_NORM_KERNEL,
  GELU_GRAD_KERNEL,
  GELU_KERNEL,
  LAYER_NORM_GRAD_KERNEL,
  LAYER_NORM_KERNEL,
  MASKED_ATTENTION_GRAD_KERNEL,
  MASKED_ATTENTION_KERNEL,
} from "./fused_ops.ts";

type Info = tf.TensorInfo;
type Activation = "linear" | "relu" | "relu6" | "prelu" | "elu" | "leakyrelu" | "sigmoid";

/** Floats of im2col scratch per chunk (16 MiB): bounds memory, keeps GEMMs large. */
const CHUNK_FLOATS = 4 * 1024 * 1024;
let scratch = new Float32Array(0);
function getScratch(n: number): Float32Array {
  if (scratch.length < n) scratch = new Float32Array(n);
  return scratch.subarray(0, n);
}

function size(shape: readonly number[]): number {
  let s = 1;
  for (const d of shape) s *= d;
  return s;
}

function f32(backend: BackendWasm, t: Info): Float32Array {
  return backend.typedArrayFromHeap(t) as Float32Array;
}

/** For each index of `outBatch`, the flat index into the (right-aligned, broadcast) `batch`. */
function broadcastIndex(batch: readonly number[], outBatch: readonly number[]): Int32Array {
  const n = size(outBatch);
  const idx = new Int32Array(n);
  const off = outBatch.length - batch.length;
  const strides = new Array<number>(batch.length);
  let s = 1;
  for (let d = batch.length - 1; d >= 0; d--) {
    strides[d] = s;
    s *= batch[d];
  }
  for (let i = 0; i < n; i++) {
    let rem = i, flat = 0;
    for (let d = outBatch.length - 1; d >= 0; d--) {
      const coord = rem % outBatch[d];
      rem = (rem - coord) / outBatch[d];
      const bd = d - off;
      if (bd >= 0 && batch[bd] !== 1) flat += coord * strides[bd];
    }
    idx[i] = flat;
  }
  return idx;
}

const warned = new Set<string>();
function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(message);
}

/** Per-product size (m·n·k) under which a batch of products goes to oneDNN's batched matmul. */
const BATCHED_PRIMITIVE_MACS = 1 << 24;

/** Computes `op(a) · op(b)` with batch broadcasting into a new float32 output. */
function matMul(
  blas: Blas,
  backend: BackendWasm,
  a: Info,
  b: Info,
  transposeA: boolean,
  transposeB: boolean,
  prefill?: (c: Float32Array, rows: number) => void,
  dnnl?: DnnlConv,
): Info {
  const ra = a.shape.length, rb = b.shape.length;
  if (ra < 2 || rb < 2) {
    throw new Error(
      `native BatchMatMul: expected rank >= 2 inputs, got shapes [${a.shape}] and [${b.shape}]`,
    );
  }
  const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (k !== kb) {
    throw new Error(
      `native BatchMatMul: inner dimensions differ (${k} vs ${kb}) for shapes [${a.shape}] and [${b.shape}] ` +
        `with transposeA=${transposeA}, transposeB=${transposeB}`,
    );
  }
  const batchA = a.shape.slice(0, -2), batchB = b.shape.slice(0, -2);
  const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(batchA, batchB);
  const out = backend.makeOutput([...outBatch, m, n], "float32");
  const A = f32(backend, a), B = f32(backend, b), C = f32(backend, out);
  const nBatch = size(outBatch), sA = size(batchA), sB = size(batchB);
  let beta = 0;
  if (prefill) {
    prefill(C, nBatch * m);
    beta = 1;
  }
  if (k === 0) {
    if (!prefill) C.fill(0);
    return out;
  }
  const lda = transposeA ? m : k, ldb = transposeB ? k : n;
  if (sB === 1 && !transposeA && sA === nBatch) {
    blas.sgemm(false, transposeB, nBatch * m, n, k, 1, A, lda, B, ldb, beta, C, n);
    return out;
  }
  if (
    dnnl && !prefill && nBatch > 1 && sA === nBatch && sB === nBatch && m * n * k < BATCHED_PRIMITIVE_MACS
  ) {
    // Many small products (attention heads): one oneDNN primitive threads over the batch, where a
    // loop of single-thread GEMMs leaves a core idle (ViT-Small q·kᵀ at batch 64: 384 products of
    // 65x64x65).
    try {
      dnnl.batchedMatMul(nBatch, m, n, k, transposeA, transposeB, A, B, C);
      return out;
    } catch (e) {
      // Unexpected (oneDNN refused the shapes): the per-product loop below computes the same.
      warnOnce(
        `native BatchMatMul: oneDNN's batched matmul failed (${
          e instanceof Error ? e.message : e
        }); looping instead`,
      );
    }
  }
  const ia = broadcastIndex(batchA, outBatch), ib = broadcastIndex(batchB, outBatch);
  const mk = m * k, kn = k * n, mn = m * n;
  for (let i = 0; i < nBatch; i++) {
    blas.sgemm(
      transposeA,
      transposeB,
      m,
      n,
      k,
      1,
      A.subarray(ia[i] * mk, (ia[i] + 1) * mk),
      lda,
      B.subarray(ib[i] * kn, (ib[i] + 1) * kn),
      ldb,
      beta,
      C.subarray(i * mn, (i + 1) * mn),
      n,
    );
  }
  return out;
}

/** Adds `src` (shape `srcShape`, broadcast to `outShape`) into `dst`, or multiplies where requested. */
function forEachBroadcast(
  outShape: readonly number[],
  srcShape: readonly number[],
  fn: (outIndex: number, srcIndex: number) => void,
): void {
  const total = size(outShape);
  const rank = outShape.length, off = rank - srcShape.length;
  const strides = new Array<number>(rank).fill(0);
  let s = 1;
  for (let d = srcShape.length - 1; d >= 0; d--) {
    if (srcShape[d] !== 1) strides[d + off] = s;
    s *= srcShape[d];
  }
  const coord = new Array<number>(rank).fill(0);
  let si = 0;
  for (let i = 0; i < total; i++) {
    fn(i, si);
    for (let d = rank - 1; d >= 0; d--) {
      coord[d]++;
      si += strides[d];
      if (coord[d] < outShape[d]) break;
      si -= strides[d] * coord[d];
      coord[d] = 0;
    }
  }
}

/** True when `shape` broadcast to `[..., n]` only varies along the last axis (a per-column vector). */
function isRowVector(shape: readonly number[], n: number): boolean {
  return size(shape) === n && (shape.length === 0 ? n === 1 : shape[shape.length - 1] === n);
}

function applyBias(backend: BackendWasm, C: Float32Array, outShape: number[], bias: Info): void {
  const bv = f32(backend, bias);
  forEachBroadcast(outShape, bias.shape, (o, s) => {
    C[o] += bv[s];
  });
}

function applyActivation(
  backend: BackendWasm,
  C: Float32Array,
  outShape: number[],
  activation: Activation,
  prelu: Info | undefined,
  leakyAlpha: number,
): void {
  const len = C.length;
  switch (activation) {
    case "linear":
      return;
    case "relu":
      for (let i = 0; i < len; i++) if (C[i] < 0) C[i] = 0;
      return;
    case "relu6":
      for (let i = 0; i < len; i++) {
        const v = C[i];
        C[i] = v < 0 ? 0 : v > 6 ? 6 : v;
      }
      return;
    case "elu":
      for (let i = 0; i < len; i++) if (C[i] < 0) C[i] = Math.expm1(C[i]);
      return;
    case "leakyrelu":
      for (let i = 0; i < len; i++) if (C[i] < 0) C[i] *= leakyAlpha;
      return;
    case "sigmoid":
      for (let i = 0; i < len; i++) C[i] = 1 / (1 + Math.exp(-C[i]));
      return;
    case "prelu": {
      if (!prelu) {
        throw new Error("native fused op: activation 'prelu' needs preluActivationWeights, got none");
      }
      const w = f32(backend, prelu);
      forEachBroadcast(outShape, prelu.shape, (o, s) => {
        if (C[o] < 0) C[o] *= w[s];
      });
      return;
    }
    default:
      throw new Error(
        `native fused op: unknown activation "${activation}"; expected linear, relu, relu6, prelu, elu, leakyrelu or sigmoid`,
      );
  }
}

function rowPrefill(backend: BackendWasm, bias: Info | undefined, n: number) {
  if (!bias || !isRowVector(bias.shape, n)) return undefined;
  return (C: Float32Array, rows: number) => {
    const bv = f32(backend, bias);
    for (let r = 0; r < rows; r++) C.set(bv, r * n);
  };
}

// ---------------------------------------------------------------- convolution lowering

/**
 * Writes im2col rows `[r0, r1)` (one row per output pixel, `kh*kw*cin` columns) of the image at
 * float offset `xBase` of `heap` to float offset `colBase` of the same heap (so that contiguous runs
 * move with `copyWithin`, a memmove).
 */
function im2col(
  heap: Float32Array,
  xBase: number,
  ci: tf.backend_util.Conv2DInfo,
  r0: number,
  r1: number,
  colBase: number,
): void {
  const { inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = ci;
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = ci;
  const { filterHeight: KH, filterWidth: KW } = ci;
  const pt = ci.padInfo.top, pl = ci.padInfo.left;
  const rowLen = KH * KW * C, ohw = OH * OW;
  for (let r = r0; r < r1; r++) {
    const nIdx = Math.floor(r / ohw), rem = r - nIdx * ohw;
    const oh = Math.floor(rem / OW), ow = rem - oh * OW;
    let dst = colBase + (r - r0) * rowLen;
    const iw0 = ow * sw - pl;
    for (let kh = 0; kh < KH; kh++) {
      const ih = oh * sh - pt + kh * dh;
      if (ih < 0 || ih >= H) {
        heap.fill(0, dst, dst + KW * C);
        dst += KW * C;
        continue;
      }
      const rowBase = xBase + (nIdx * H + ih) * W * C;
      if (dw === 1 && iw0 >= 0 && iw0 + KW <= W) {
        const src = rowBase + iw0 * C, len = KW * C;
        if (len >= 16) heap.copyWithin(dst, src, src + len);
        else for (let c = 0; c < len; c++) heap[dst + c] = heap[src + c];
        dst += len;
        continue;
      }
      for (let kw = 0; kw < KW; kw++) {
        const iw = iw0 + kw * dw;
        if (iw < 0 || iw >= W) heap.fill(0, dst, dst + C);
        else {
          const src = rowBase + iw * C;
          if (C >= 16) heap.copyWithin(dst, src, src + C);
          else for (let c = 0; c < C; c++) heap[dst + c] = heap[src + c];
        }
        dst += C;
      }
    }
  }
}

/** Adds im2col rows `[r0, r1)` of `col` back into the image `dX` (the adjoint of {@link im2col}). */
function col2imAdd(
  dX: Float32Array,
  ci: tf.backend_util.Conv2DInfo,
  r0: number,
  r1: number,
  col: Float32Array,
): void {
  const { inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = ci;
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = ci;
  const { filterHeight: KH, filterWidth: KW } = ci;
  const pt = ci.padInfo.top, pl = ci.padInfo.left;
  const rowLen = KH * KW * C, ohw = OH * OW;
  for (let r = r0; r < r1; r++) {
    const nIdx = Math.floor(r / ohw), rem = r - nIdx * ohw;
    const oh = Math.floor(rem / OW), ow = rem - oh * OW;
    let src = (r - r0) * rowLen;
    const iw0 = ow * sw - pl;
    for (let kh = 0; kh < KH; kh++) {
      const ih = oh * sh - pt + kh * dh;
      if (ih < 0 || ih >= H) {
        src += KW * C;
        continue;
      }
      const rowBase = (nIdx * H + ih) * W;
      for (let kw = 0; kw < KW; kw++) {
        const iw = iw0 + kw * dw;
        if (iw >= 0 && iw < W) {
          const dst = (rowBase + iw) * C;
          for (let c = 0; c < C; c++) dX[dst + c] += col[src + c];
        }
        src += C;
      }
    }
  }
}

function isPointwise(ci: tf.backend_util.Conv2DInfo): boolean {
  return ci.filterHeight === 1 && ci.filterWidth === 1 && ci.strideHeight === 1 && ci.strideWidth === 1 &&
    ci.padInfo.top === 0 && ci.padInfo.left === 0 && ci.outHeight === ci.inHeight &&
    ci.outWidth === ci.inWidth;
}

function chunkRows(rowLen: number, rows: number): number {
  return Math.max(1, Math.min(rows, Math.floor(CHUNK_FLOATS / Math.max(rowLen, 1))));
}

/** The parts of the Emscripten module used here (its typings omit them). */
interface HeapModule {
  HEAPF32: Float32Array;
  _malloc(bytes: number): number;
  _free(ptr: number): void;
}
function moduleOf(backend: BackendWasm): HeapModule {
  return backend.wasm as unknown as HeapModule;
}
/** The current Float32 view of the wasm heap (replaced when the heap grows). */
function heapOf(backend: BackendWasm): Float32Array {
  return moduleOf(backend).HEAPF32;
}
const heapScratch = new WeakMap<HeapModule, { ptr: number; bytes: number }>();

/** A scratch area in the WebAssembly heap (kept between calls, grown on demand); its byte offset. */
function getHeapScratch(backend: BackendWasm, floats: number): number {
  const wasm = moduleOf(backend);
  const bytes = floats * 4;
  let s = heapScratch.get(wasm);
  if (!s || s.bytes < bytes) {
    if (s) wasm._free(s.ptr);
    const ptr = wasm._malloc(bytes) >>> 0;
    if (ptr === 0) {
      throw new Error(`native conv: could not allocate ${bytes} bytes of im2col scratch in the wasm heap`);
    }
    s = { ptr, bytes };
    heapScratch.set(wasm, s);
  }
  return s.ptr;
}

function offsetOf(backend: BackendWasm, t: Info): number {
  return backend.dataIdMap.get(t.dataId)!.memoryOffset;
}

/**
 * Forward convolution of the tensor at byte offset `xOff` of the wasm heap into the output at
 * `yOff` (`[rows, cout]`); `beta` 1 when the output was prefilled with a bias. `weights` is called
 * after any heap allocation (heap views go stale when the heap grows).
 */
function conv2dInto(
  blas: Blas,
  backend: BackendWasm,
  xOff: number,
  weights: () => Float32Array,
  yOff: number,
  ci: tf.backend_util.Conv2DInfo,
  beta: number,
): void {
  const rows = ci.batchSize * ci.outHeight * ci.outWidth, cout = ci.outChannels;
  const rowLen = ci.filterHeight * ci.filterWidth * ci.inChannels;
  const inLen = ci.batchSize * ci.inHeight * ci.inWidth * ci.inChannels;
  if (rows === 0 || cout === 0) return;
  if (isPointwise(ci)) {
    const heap = heapOf(backend);
    const X = heap.subarray(xOff / 4, xOff / 4 + inLen), Y = heap.subarray(yOff / 4, yOff / 4 + rows * cout);
    blas.sgemm(false, false, rows, cout, rowLen, 1, X, rowLen, weights(), cout, beta, Y, cout);
    return;
  }
  const step = chunkRows(rowLen, rows);
  const colOff = getHeapScratch(backend, step * rowLen) / 4;
  const heap = heapOf(backend);
  const Wt = weights();
  const col = heap.subarray(colOff, colOff + step * rowLen);
  const Y = heap.subarray(yOff / 4, yOff / 4 + rows * cout);
  for (let r0 = 0; r0 < rows; r0 += step) {
    const r1 = Math.min(rows, r0 + step);
    im2col(heap, xOff / 4, ci, r0, r1, colOff);
    blas.sgemm(
      false,
      false,
      r1 - r0,
      cout,
      rowLen,
      1,
      col,
      rowLen,
      Wt,
      cout,
      beta,
      Y.subarray(r0 * cout),
      cout,
    );
  }
}

/** The filter of the adjoint convolution: `[kh, kw, cin, cout]` → flipped `[kh, kw, cout, cin]`. */
function flipFilter(Wt: Float32Array, KH: number, KW: number, cin: number, cout: number): Float32Array {
  const out = new Float32Array(Wt.length);
  const blk = cin * cout;
  for (let kh = 0; kh < KH; kh++) {
    for (let kw = 0; kw < KW; kw++) {
      const src = ((KH - 1 - kh) * KW + (KW - 1 - kw)) * blk, dst = (kh * KW + kw) * blk;
      for (let i = 0; i < cin; i++) {
        for (let o = 0; o < cout; o++) out[dst + o * cin + i] = Wt[src + i * cout + o];
      }
    }
  }
  return out;
}

function convInfo(
  xShape: number[],
  filterShape: number[],
  attrs: {
    strides: number | [number, number];
    pad: unknown;
    dataFormat?: string;
    dilations?: number | [number, number];
    dimRoundingMode?: "floor" | "round" | "ceil";
  },
): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    attrs.dilations ?? 1,
    attrs.pad as "same" | "valid" | number,
    attrs.dimRoundingMode,
    false,
    "channelsLast",
  );
}

function isNHWC(attrs: { dataFormat?: string }): boolean {
  return attrs.dataFormat === undefined || attrs.dataFormat === "NHWC";
}

// ---------------------------------------------------------------- kernel configs

/** A kernel function that handles what it can and defers the rest to the wasm kernel. */
type Fallback = (args: tf.KernelFunc extends (a: infer A) => unknown ? A : never) => Info | Info[];

/**
 * The BLAS kernels for a backend named `backendName`, each falling back to the wasm backend's own
 * kernel (`fallbackFor(kernelName)`) for inputs it does not handle (non-float32, NCHW).
 *
 * @example
 * ```ts
 * for (const k of blasKernelConfigs("native", blas, (n) => tf.getKernel(n, "wasm")!.kernelFunc)) tf.registerKernel(k);
 * ```
 */
export function blasKernelConfigs(
  backendName: string,
  blas: Blas,
  fallbackFor: (kernelName: string) => tf.KernelFunc | undefined,
  conv?: DnnlConv,
): tf.KernelConfig[] {
  const fallback = (name: string, args: Parameters<Fallback>[0], why: string): Info | Info[] => {
    const f = fallbackFor(name);
    if (!f) {
      throw new Error(`native ${name}: ${why}, and the wasm backend has no ${name} kernel to fall back to`);
    }
    return f(args) as Info | Info[];
  };
  const allF32 = (...ts: (Info | undefined)[]) => ts.every((t) => t === undefined || t.dtype === "float32");
  // A convolution oneDNN refuses (an unsupported geometry, say) falls back to im2col + GEMM, with one
  // warning per kernel and shape instead of an exception in the middle of a model.
  const refused = new Set<string>();
  const viaDnnl = (kernel: string, ci: tf.backend_util.Conv2DInfo, run: () => void): boolean => {
    if (!conv) return false;
    const key = () =>
      `${kernel} ${ci.inShape} ${ci.filterHeight}x${ci.filterWidth}x${ci.outChannels} ` +
      `s${ci.strideHeight},${ci.strideWidth} d${ci.dilationHeight},${ci.dilationWidth} ` +
      `p${ci.padInfo.top},${ci.padInfo.bottom},${ci.padInfo.left},${ci.padInfo.right}`;
    if (refused.size > 0 && refused.has(key())) return false;
    try {
      run();
      return true;
    } catch (e) {
      refused.add(key());
      if (e instanceof DnnlDeclined) return false; // a known-bad kernel, declined on purpose: no warning
      console.warn(
        `native ${kernel}: oneDNN failed for ${key()} (${e instanceof Error ? e.message : e}); ` +
          "using im2col + GEMM for this shape",
      );
      return false;
    }
  };

  const batchMatMul: tf.KernelFunc = (args) => {
    const { a, b } = args.inputs as { a: Info; b: Info };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (!allF32(a, b)) return fallback(tf.BatchMatMul, args, `dtypes ${a.dtype}/${b.dtype}`);
    return matMul(blas, args.backend as BackendWasm, a, b, !!transposeA, !!transposeB, undefined, conv);
  };

  const fusedMatMul: tf.KernelFunc = (args) => {
    const { a, b, bias, preluActivationWeights } = args.inputs as {
      a: Info;
      b: Info;
      bias?: Info;
      preluActivationWeights?: Info;
    };
    const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as unknown as {
      transposeA: boolean;
      transposeB: boolean;
      activation: Activation;
      leakyreluAlpha?: number;
    };
    if (!allF32(a, b, bias, preluActivationWeights)) {
      return fallback(tf._FusedMatMul, args, "non-float32 inputs");
    }
    const backend = args.backend as BackendWasm;
    const n = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
    const prefill = rowPrefill(backend, bias, n);
    const out = matMul(blas, backend, a, b, !!transposeA, !!transposeB, prefill);
    const C = f32(backend, out);
    if (bias && !prefill) applyBias(backend, C, out.shape, bias);
    applyActivation(
      backend,
      C,
      out.shape,
      activation ?? "linear",
      preluActivationWeights,
      leakyreluAlpha ?? 0.2,
    );
    return out;
  };

  const conv2d: tf.KernelFunc = (args) => {
    const { x, filter } = args.inputs as { x: Info; filter: Info };
    const attrs = args.attrs as unknown as Parameters<typeof convInfo>[2];
    if (!allF32(x, filter) || !isNHWC(attrs)) {
      return fallback(tf.Conv2D, args, `dtype ${x.dtype} / dataFormat ${attrs.dataFormat}`);
    }
    const backend = args.backend as BackendWasm;
    const ci = convInfo(x.shape, filter.shape, attrs);
    const out = backend.makeOutput([ci.batchSize, ci.outHeight, ci.outWidth, ci.outChannels], "float32");
    if (
      size(out.shape) > 0 &&
      viaDnnl(
        tf.Conv2D,
        ci,
        () => conv!.forward(ci, f32(backend, x), f32(backend, filter), f32(backend, out)),
      )
    ) {
      return out;
    }
    conv2dInto(
      blas,
      backend,
      offsetOf(backend, x),
      () => f32(backend, filter),
      offsetOf(backend, out),
      ci,
      0,
    );
    return out;
  };

  const fusedConv2d: tf.KernelFunc = (args) => {
    const { x, filter, bias, preluActivationWeights } = args.inputs as {
      x: Info;
      filter: Info;
      bias?: Info;
      preluActivationWeights?: Info;
    };
    const attrs = args.attrs as unknown as Parameters<typeof convInfo>[2] & {
      activation: Activation;
      leakyreluAlpha?: number;
    };
    if (!allF32(x, filter, bias, preluActivationWeights) || !isNHWC(attrs)) {
      return fallback(tf.FusedConv2D, args, `dtype ${x.dtype} / dataFormat ${attrs.dataFormat}`);
    }
    const backend = args.backend as BackendWasm;
    const ci = convInfo(x.shape, filter.shape, attrs);
    const outShape = [ci.batchSize, ci.outHeight, ci.outWidth, ci.outChannels];
    const out = backend.makeOutput(outShape, "float32");
    // oneDNN adds a per-channel bias itself; other bias shapes are added afterwards.
    const channelBias = bias !== undefined && size(bias.shape) === ci.outChannels;
    // ReLU runs inside the convolution when nothing has to be added between the two.
    const fuseRelu = attrs.activation === "relu" && (bias === undefined || channelBias);
    if (
      size(outShape) > 0 && viaDnnl(tf.FusedConv2D, ci, () =>
        conv!.forward(
          ci,
          f32(backend, x),
          f32(backend, filter),
          f32(backend, out),
          channelBias ? f32(backend, bias!) : undefined,
          fuseRelu,
        ))
    ) {
      if (fuseRelu) return out;
      const Yc = f32(backend, out);
      if (bias && !channelBias) applyBias(backend, Yc, outShape, bias);
      applyActivation(
        backend,
        Yc,
        outShape,
        attrs.activation ?? "linear",
        preluActivationWeights,
        attrs.leakyreluAlpha ?? 0.2,
      );
      return out;
    }
    const Y = f32(backend, out);
    const prefill = rowPrefill(backend, bias, ci.outChannels);
    if (prefill) prefill(Y, Y.length / Math.max(ci.outChannels, 1));
    const xOff = offsetOf(backend, x), yOff = offsetOf(backend, out);
    conv2dInto(blas, backend, xOff, () => f32(backend, filter), yOff, ci, prefill ? 1 : 0);
    const Yf = f32(backend, out); // the heap may have grown: a fresh view
    if (bias && !prefill) applyBias(backend, Yf, outShape, bias);
    applyActivation(
      backend,
      Yf,
      outShape,
      attrs.activation ?? "linear",
      preluActivationWeights,
      attrs.leakyreluAlpha ?? 0.2,
    );
    return out;
  };

  const conv2dBackpropInput: tf.KernelFunc = (args) => {
    const { dy, filter } = args.inputs as { dy: Info; filter: Info };
    const attrs = args.attrs as unknown as Parameters<typeof convInfo>[2] & { inputShape: number[] };
    if (!allF32(dy, filter) || !isNHWC(attrs)) {
      return fallback(tf.Conv2DBackpropInput, args, `dtype ${dy.dtype} / dataFormat ${attrs.dataFormat}`);
    }
    const backend = args.backend as BackendWasm;
    const ci = convInfo(attrs.inputShape, filter.shape, { ...attrs, dilations: 1 });
    const out = backend.makeOutput([...attrs.inputShape], "float32");
    if (
      size(out.shape) > 0 && size(dy.shape) > 0 &&
      viaDnnl(
        tf.Conv2DBackpropInput,
        ci,
        () => conv!.backwardData(ci, f32(backend, dy), f32(backend, filter), f32(backend, out)),
      )
    ) {
      return out;
    }
    const rows = ci.batchSize * ci.outHeight * ci.outWidth, cout = ci.outChannels;
    const rowLen = ci.filterHeight * ci.filterWidth * ci.inChannels;
    const { top, bottom, left, right } = ci.padInfo;
    const KH = ci.filterHeight, KW = ci.filterWidth;
    if (
      !isPointwise(ci) && rows > 0 && cout > 0 && ci.strideHeight === 1 && ci.strideWidth === 1 &&
      top < KH && bottom < KH && left < KW && right < KW
    ) {
      // Stride 1: dX is the convolution of dY with the flipped, transposed filter (im2col + GEMM,
      // no scatter-add).
      const adj = tf.backend_util.computeConv2DInfo(
        [ci.batchSize, ci.outHeight, ci.outWidth, cout],
        [KH, KW, cout, ci.inChannels],
        1,
        1,
        [[0, 0], [KH - 1 - top, KH - 1 - bottom], [KW - 1 - left, KW - 1 - right], [
          0,
          0,
        ]] as unknown as number,
        undefined,
        false,
        "channelsLast",
      );
      if (adj.outHeight === ci.inHeight && adj.outWidth === ci.inWidth) {
        const flipped = flipFilter(f32(backend, filter), KH, KW, ci.inChannels, cout);
        conv2dInto(blas, backend, offsetOf(backend, dy), () => flipped, offsetOf(backend, out), adj, 0);
        return out;
      }
    }
    const dX = f32(backend, out), dY = f32(backend, dy), Wt = f32(backend, filter);
    if (isPointwise(ci)) {
      blas.sgemm(false, true, rows, rowLen, cout, 1, dY, cout, Wt, cout, 0, dX, rowLen);
      return out;
    }
    dX.fill(0);
    if (rows === 0 || cout === 0) return out;
    const step = chunkRows(rowLen, rows);
    const col = getScratch(step * rowLen);
    for (let r0 = 0; r0 < rows; r0 += step) {
      const r1 = Math.min(rows, r0 + step);
      blas.sgemm(
        false,
        true,
        r1 - r0,
        rowLen,
        cout,
        1,
        dY.subarray(r0 * cout),
        cout,
        Wt,
        cout,
        0,
        col,
        rowLen,
      );
      col2imAdd(dX, ci, r0, r1, col);
    }
    return out;
  };

  const conv2dBackpropFilter: tf.KernelFunc = (args) => {
    const { x, dy } = args.inputs as { x: Info; dy: Info };
    const attrs = args.attrs as unknown as Parameters<typeof convInfo>[2] & { filterShape: number[] };
    if (!allF32(x, dy) || !isNHWC(attrs)) {
      return fallback(tf.Conv2DBackpropFilter, args, `dtype ${x.dtype} / dataFormat ${attrs.dataFormat}`);
    }
    const backend = args.backend as BackendWasm;
    const ci = convInfo(x.shape, attrs.filterShape, { ...attrs, dilations: 1 });
    const out = backend.makeOutput([...attrs.filterShape], "float32");
    if (
      size(out.shape) > 0 && size(dy.shape) > 0 &&
      viaDnnl(
        tf.Conv2DBackpropFilter,
        ci,
        () => conv!.backwardWeights(ci, f32(backend, x), f32(backend, dy), f32(backend, out)),
      )
    ) {
      return out;
    }
    let dW = f32(backend, out), dY = f32(backend, dy), X = f32(backend, x);
    const rows = ci.batchSize * ci.outHeight * ci.outWidth, cout = ci.outChannels;
    const rowLen = ci.filterHeight * ci.filterWidth * ci.inChannels;
    if (rows === 0) {
      dW.fill(0);
      return out;
    }
    if (isPointwise(ci)) {
      blas.sgemm(true, false, rowLen, cout, rows, 1, X, rowLen, dY, cout, 0, dW, cout);
      return out;
    }
    const step = chunkRows(rowLen, rows);
    const colOff = getHeapScratch(backend, step * rowLen) / 4;
    const heap = heapOf(backend);
    const col = heap.subarray(colOff, colOff + step * rowLen);
    dW = f32(backend, out), dY = f32(backend, dy), X = f32(backend, x);
    const xOff = offsetOf(backend, x) / 4;
    for (let r0 = 0; r0 < rows; r0 += step) {
      const r1 = Math.min(rows, r0 + step);
      im2col(heap, xOff, ci, r0, r1, colOff);
      blas.sgemm(
        true,
        false,
        rowLen,
        cout,
        r1 - r0,
        1,
        col,
        rowLen,
        dY.subarray(r0 * cout),
        cout,
        r0 === 0 ? 0 : 1,
        dW,
        cout,
      );
    }
    return out;
  };

  const k = (kernelName: string, kernelFunc: tf.KernelFunc): tf.KernelConfig => ({
    kernelName,
    backendName,
    kernelFunc,
  });
  return [
    k(tf.BatchMatMul, batchMatMul),
    k(tf._FusedMatMul, fusedMatMul),
    k(tf.Conv2D, conv2d),
    k(tf.FusedConv2D, fusedConv2d),
    k(tf.Conv2DBackpropInput, conv2dBackpropInput),
    k(tf.Conv2DBackpropFilter, conv2dBackpropFilter),
  ];
}

/**
 * `Identity` and same-dtype `Cast` that share the input's memory (reference counted, as the cpu
 * backend does) instead of copying it as the wasm kernels do. tfjs' gradient code calls both for
 * nearly every op, so the copies cost a training step much time and most of its peak memory.
 * Other inputs (strings, dtype changes) go to the wasm kernels.
 *
 * @example
 * ```ts
 * for (const k of sharingKernelConfigs("native", (n) => tf.getKernel(n, "wasm")?.kernelFunc)) tf.registerKernel(k);
 * ```
 */
export function sharingKernelConfigs(
  backendName: string,
  fallbackFor: (kernelName: string) => tf.KernelFunc | undefined,
): tf.KernelConfig[] {
  const share = (backend: BackendWasm, x: Info, dtype: tf.DataType = x.dtype): Info => {
    backend.incRef(x.dataId);
    return { dataId: x.dataId, shape: [...x.shape], dtype };
  };
  const call = (name: string, args: Parameters<tf.KernelFunc>[0]) => {
    const f = fallbackFor(name);
    if (!f) throw new Error(`native ${name}: the wasm backend has no ${name} kernel to fall back to`);
    return f(args);
  };
  const identity: tf.KernelFunc = (args) => {
    const { x } = args.inputs as { x: Info };
    if (x.dtype === "string") return call(tf.Identity, args);
    return share(args.backend as BackendWasm, x);
  };
  const cast: tf.KernelFunc = (args) => {
    const { x } = args.inputs as { x: Info };
    const { dtype } = args.attrs as unknown as { dtype: tf.DataType };
    if (x.dtype === "string" || dtype !== x.dtype) return call(tf.Cast, args);
    return share(args.backend as BackendWasm, x);
  };
  return [
    { kernelName: tf.Identity, backendName, kernelFunc: identity },
    { kernelName: tf.Cast, backendName, kernelFunc: cast },
  ];
}

let ones = new Float32Array(0);
function onesOf(n: number): Float32Array {
  if (ones.length < n) ones = new Float32Array(Math.max(n, 2 * ones.length)).fill(1);
  return ones.subarray(0, n);
}

/**
 * Layout kernels the wasm backend runs slowly in training: `Sum`/`Mean` over leading axes (bias
 * and batch-norm gradients; wasm transposes the whole tensor first) as a GEMM with a ones vector,
 * and `SplitV` (the ViT's q/k/v split) as block copies within the heap. Other cases go to the wasm
 * kernels.
 *
 * @example
 * ```ts
 * for (const k of layoutKernelConfigs("native", blas, (n) => tf.getKernel(n, "wasm")?.kernelFunc)) tf.registerKernel(k);
 * ```
 */
export function layoutKernelConfigs(
  backendName: string,
  blas: Blas,
  fallbackFor: (kernelName: string) => tf.KernelFunc | undefined,
): tf.KernelConfig[] {
  const call = (name: string, args: Parameters<tf.KernelFunc>[0]) => {
    const f = fallbackFor(name);
    if (!f) throw new Error(`native ${name}: the wasm backend has no ${name} kernel to fall back to`);
    return f(args);
  };
  const reduceLeading = (name: string, scaleByCount: boolean): tf.KernelFunc => (args) => {
    const { x } = args.inputs as { x: Info };
    const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
    if (x.dtype !== "float32") return call(name, args);
    const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
    const k = axes.length;
    if (k === 0 || k === x.shape.length || axes.some((a, i) => a !== i)) return call(name, args);
    const m = size(x.shape.slice(0, k)), n = size(x.shape.slice(k));
    if (m < 2) return call(name, args);
    const backend = args.backend as BackendWasm;
    const outShape = keepDims ? x.shape.map((d, i) => (i < k ? 1 : d)) : x.shape.slice(k);
    const out = backend.makeOutput(outShape, "float32");
    const alpha = scaleByCount ? 1 / m : 1;
    blas.sgemm(false, false, 1, n, m, alpha, onesOf(m), m, f32(backend, x), n, 0, f32(backend, out), n);
    return out;
  };

  const splitV: tf.KernelFunc = (args) => {
    const { x } = args.inputs as { x: Info };
    const { numOrSizeSplits, axis } = args.attrs as unknown as {
      numOrSizeSplits: number | number[];
      axis: number;
    };
    if (x.dtype !== "float32") return call(tf.SplitV, args);
    const ax = tf.util.parseAxisParam(axis, x.shape)[0];
    const sizes = tf.backend_util.prepareSplitSize(x as unknown as tf.Tensor, numOrSizeSplits, ax);
    const inner = size(x.shape.slice(ax + 1)), outer = size(x.shape.slice(0, ax));
    if (Math.min(...sizes) * inner < 16) return call(tf.SplitV, args);
    const backend = args.backend as BackendWasm;
    const outs = sizes.map((s) => {
      const shape = [...x.shape];
      shape[ax] = s;
      return backend.makeOutput(shape, "float32");
    });
    const heap = heapOf(backend);
    const src0 = offsetOf(backend, x) / 4, rowIn = x.shape[ax] * inner;
    let start = 0;
    for (let i = 0; i < outs.length; i++) {
      const run = sizes[i] * inner, dst0 = offsetOf(backend, outs[i]) / 4;
      for (let o = 0; o < outer; o++) {
        const src = src0 + o * rowIn + start;
        heap.copyWithin(dst0 + o * run, src, src + run);
      }
      start += run;
    }
    return outs;
  };

  return [
    { kernelName: tf.Sum, backendName, kernelFunc: reduceLeading(tf.Sum, false) },
    { kernelName: tf.Mean, backendName, kernelFunc: reduceLeading(tf.Mean, true) },
    { kernelName: tf.SplitV, backendName, kernelFunc: splitV },
  ];
}

// ---------------------------------------------------------------- oneDNN GELU and layer norm

/**
 * Kernels behind `geluLean`, `layerNormLean` and `batchNormTrainKernel` where oneDNN is loaded:
 * exact GELU and its gradient; layer norm and training-mode batch norm (outputs `[y, mean,
 * variance]`) and their gradients (`[dx, dw, db]`).
 *
 * @example
 * ```ts
 * for (const k of dnnlKernelConfigs("native", dnnl)) tf.registerKernel(k);
 * ```
 */
export function dnnlKernelConfigs(backendName: string, dnnl: DnnlConv): tf.KernelConfig[] {
  const gelu: tf.KernelFunc = ({ inputs, backend }) => {
    const { x } = inputs as { x: Info };
    const b = backend as BackendWasm;
    const out = b.makeOutput([...x.shape], "float32");
    dnnl.gelu(f32(b, x), f32(b, out));
    return out;
  };
  const geluGrad: tf.KernelFunc = ({ inputs, backend }) => {
    const { x, dy } = inputs as { x: Info; dy: Info };
    const b = backend as BackendWasm;
    const out = b.makeOutput([...x.shape], "float32");
    dnnl.geluBackward(f32(b, x), f32(b, dy), f32(b, out));
    return out;
  };
  /**
   * A normalization kernel pair: forward `{x, weight, bias}` → `[y, mean, variance]` and backward
   * `{x, mean, variance, dy, weight}` → `[dx, dweight, dbias]`, given how the statistics are shaped
   * and the oneDNN calls (which see `x`'s shape).
   */
  const normalization = (
    statShape: (xShape: number[]) => number[],
    forward: (shape: number[], eps: number, arrays: Float32Array[]) => void,
    backwardFn: (shape: number[], eps: number, arrays: Float32Array[]) => void,
  ): [tf.KernelFunc, tf.KernelFunc] => [
    ({ inputs, backend, attrs }) => {
      const { x, weight, bias } = inputs as { x: Info; weight: Info; bias: Info };
      const b = backend as BackendWasm;
      const y = b.makeOutput([...x.shape], "float32");
      const mean = b.makeOutput(statShape(x.shape), "float32");
      const variance = b.makeOutput(statShape(x.shape), "float32");
      const arrays = [x, weight, bias, y, mean, variance].map((t) => f32(b, t));
      forward(x.shape, (attrs as unknown as { eps: number }).eps, arrays);
      return [y, mean, variance];
    },
    ({ inputs, backend, attrs }) => {
      const { x, mean, variance, dy, weight } = inputs as Record<string, Info>;
      const b = backend as BackendWasm;
      const dx = b.makeOutput([...x.shape], "float32");
      const dw = b.makeOutput([...weight.shape], "float32"), db = b.makeOutput([...weight.shape], "float32");
      const arrays = [x, mean, variance, dy, weight, dx, dw, db].map((t) => f32(b, t));
      backwardFn(x.shape, (attrs as unknown as { eps: number }).eps, arrays);
      return [dx, dw, db];
    },
  ];
  const rowsOf = (shape: number[]) => {
    const d = shape[shape.length - 1];
    return [size(shape) / Math.max(d, 1), d] as const;
  };
  const [layerNorm, layerNormGrad] = normalization(
    (shape) => [...shape.slice(0, -1), 1],
    (shape, eps, [x, w, bias, y, mean, variance]) =>
      dnnl.layerNorm(...rowsOf(shape), eps, x, w, bias, y, mean, variance),
    (shape, eps, [x, mean, variance, dy, w, dx, dw, db]) =>
      dnnl.layerNormBackward(...rowsOf(shape), eps, x, mean, variance, dy, w, dx, dw, db),
  );
  const [batchNorm, batchNormGrad] = normalization(
    (shape) => [shape[3]],
    (shape, eps, [x, w, bias, y, mean, variance]) =>
      dnnl.batchNorm(shape, eps, x, w, bias, y, mean, variance),
    (shape, eps, [x, mean, variance, dy, w, dx, dw, db]) =>
      dnnl.batchNormBackward(shape, eps, x, mean, variance, dy, w, dx, dw, db),
  );
  const attention: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { qkv } = inputs as { qkv: Info };
    const { heads } = attrs as unknown as { heads: number };
    const b = backend as BackendWasm;
    const [n, t, d3] = qkv.shape, d = d3 / 3;
    if (qkv.shape.length !== 3 || d3 % 3 !== 0 || d % heads !== 0 || qkv.dtype !== "float32") {
      throw new Error(
        `${ATTENTION_KERNEL}: qkv must be float32 [b, t, 3·d] with d divisible by heads=${heads}, ` +
          `got ${qkv.dtype} [${qkv.shape}]`,
      );
    }
    const ctx = b.makeOutput([n, t, d], "float32");
    if (!(attrs as unknown as { keepProbs?: boolean }).keepProbs) {
      dnnl.attention(n, t, d, heads, f32(b, qkv), f32(b, ctx));
      return ctx;
    }
    const probs = b.makeOutput([n, heads, t, t], "float32");
    dnnl.attention(n, t, d, heads, f32(b, qkv), f32(b, ctx), f32(b, probs));
    return [ctx, probs];
  };
  const attentionGrad: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { qkv, probs, dctx } = inputs as { qkv: Info; probs: Info; dctx: Info };
    const { heads } = attrs as unknown as { heads: number };
    const b = backend as BackendWasm;
    const [n, t, d3] = qkv.shape;
    const dqkv = b.makeOutput([...qkv.shape], "float32");
    dnnl.attentionBackward(n, t, d3 / 3, heads, f32(b, qkv), f32(b, probs), f32(b, dctx), f32(b, dqkv));
    return dqkv;
  };
  const maskedAttention: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { qkv, mask } = inputs as { qkv: Info; mask: Info };
    const { heads, keepProbs } = attrs as unknown as { heads: number; keepProbs?: boolean };
    const b = backend as BackendWasm;
    const [n, t, d3] = qkv.shape, d = d3 / 3;
    if (
      qkv.shape.length !== 3 || d3 % 3 !== 0 || d % heads !== 0 || qkv.dtype !== "float32" ||
      mask.dtype !== "float32" || mask.shape.length !== 2 || mask.shape[0] !== n || mask.shape[1] !== t
    ) {
      throw new Error(
        `${MASKED_ATTENTION_KERNEL}: qkv must be float32 [b, t, 3·d] with d divisible by heads=${heads} and ` +
          `mask float32 [b, t], got qkv ${qkv.dtype} [${qkv.shape}], mask ${mask.dtype} [${mask.shape}]`,
      );
    }
    const ctx = b.makeOutput([n, t, d], "float32");
    if (!keepProbs) {
      // Inference: the probabilities and row statistics go to the backend's reused scratch.
      dnnl.maskedAttention(n, t, d, heads, { qkv: f32(b, qkv), mask: f32(b, mask), ctx: f32(b, ctx) });
      return ctx;
    }
    const kept = [[n, heads, t, t], [n, heads, t, t], [n, heads, t], [n, heads, t]].map((s) =>
      b.makeOutput(s, "float32")
    );
    // Views after every allocation (an allocation may grow the wasm heap and detach earlier views).
    const [probs, expScores, rowInv, rowArgmax] = kept.map((o) => f32(b, o));
    dnnl.maskedAttention(n, t, d, heads, { qkv: f32(b, qkv), mask: f32(b, mask), ctx: f32(b, ctx) }, {
      probs,
      expScores,
      rowInv,
      rowArgmax,
    });
    return [ctx, ...kept];
  };
  const maskedAttentionGrad: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { qkv, mask, probs, expScores, rowInv, rowArgmax, dctx } = inputs as Record<string, Info>;
    const { heads } = attrs as unknown as { heads: number };
    const b = backend as BackendWasm;
    const [n, t, d3] = qkv.shape;
    const dqkv = b.makeOutput([...qkv.shape], "float32");
    const dmask = b.makeOutput([...mask.shape], "float32");
    const v = (x: Info) => f32(b, x);
    dnnl.maskedAttentionBackward(
      n,
      t,
      d3 / 3,
      heads,
      { qkv: v(qkv), mask: v(mask), dctx: v(dctx), dqkv: v(dqkv), dmask: v(dmask) },
      { probs: v(probs), expScores: v(expScores), rowInv: v(rowInv), rowArgmax: v(rowArgmax) },
    );
    return [dqkv, dmask];
  };
  return [
    { kernelName: ATTENTION_KERNEL, backendName, kernelFunc: attention },
    { kernelName: MASKED_ATTENTION_KERNEL, backendName, kernelFunc: maskedAttention },
    { kernelName: MASKED_ATTENTION_GRAD_KERNEL, backendName, kernelFunc: maskedAttentionGrad },
    { kernelName: ATTENTION_GRAD_KERNEL, backendName, kernelFunc: attentionGrad },
    { kernelName: BATCH_NORM_KERNEL, backendName, kernelFunc: batchNorm },
    { kernelName: BATCH_NORM_GRAD_KERNEL, backendName, kernelFunc: batchNormGrad },
    { kernelName: GELU_KERNEL, backendName, kernelFunc: gelu },
    { kernelName: GELU_GRAD_KERNEL, backendName, kernelFunc: geluGrad },
    { kernelName: LAYER_NORM_KERNEL, backendName, kernelFunc: layerNorm },
    { kernelName: LAYER_NORM_GRAD_KERNEL, backendName, kernelFunc: layerNormGrad },
  ];
}
