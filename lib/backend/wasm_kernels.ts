/**
 * Kernels the tfjs wasm backend lacks but a training step needs, registered by
 * {@link registerWasmTrainingKernels}:
 *
 * - `Conv2DBackpropFilter` (every conv net's weight gradient), expressed as a forward convolution
 *   that the wasm backend runs in XNNPACK: batch and channels swap roles and the original stride
 *   becomes the dilation, so it runs at convolution speed instead of a JS loop;
 * - `DepthwiseConv2dNativeBackpropFilter` and `DepthwiseConv2dNativeBackpropInput` (direct loops);
 * - `UnsortedSegmentSum` (the gradient of `gather`, used when tokens are pruned);
 * - a corrected `GatherV2` for `batchDims > 0` (the wasm kernel returns wrong values there);
 * - a faster `BatchMatMul` for transposed operands (transposes explicitly first);
 * - `GatherV2` of whole rows (the hybrid's kept tokens) as row copies, where the wasm kernel copies
 *   element by element;
 * - {@link ADAMW_KERNEL}: one AdamW update of a parameter tensor in a single pass (tfjs ops take 13);
 * - `Slice` as block copies straight from the heap (the wasm kernel first copies the whole input out).
 *
 * Each kernel is tested against the cpu backend in `tests/wasm_kernels_test.ts`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { backend_util } from "@tensorflow/tfjs-core";
import type {
  KernelBackend,
  KernelFunc,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
} from "@tensorflow/tfjs-core";

/** The kernels {@link registerWasmTrainingKernels} adds. */
export const WASM_TRAINING_KERNELS = [
  "Conv2DBackpropFilter",
  "DepthwiseConv2dNativeBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
  "UnsortedSegmentSum",
] as const;

/**
 * Kernel name of the fused AdamW update. Inputs `{param, grad, m, v}` (float32, equal shapes), attrs
 * `{lr, beta1, beta2, eps, decay, bc1, bc2}` (`decay` = 1 − lr·weight_decay, or 1; `bc1`/`bc2` the
 * bias corrections 1 − βᵗ) → `[param', m', v']`, with PyTorch's AdamW arithmetic:
 * `m' = β1·m + (1−β1)·g`, `v' = β2·v + (1−β2)·g²`, `p' = p·decay − lr·(m'/bc1)/(√(v'/bc2) + eps)`.
 */
export const ADAMW_KERNEL = "CnnvitAdamW";

/** The slice of the wasm backend's API these kernels use. */
interface HeapBackend extends KernelBackend {
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): tf.TypedArray;
  disposeData(dataId: object, force?: boolean): boolean;
}

type KernelArgs = { inputs: NamedTensorInfoMap; backend: object; attrs?: NamedAttrMap };

function call(backendName: string, name: string, args: KernelArgs): TensorInfo {
  const k = tf.getKernel(name, backendName);
  if (!k) throw new Error(`registerWasmTrainingKernels: backend "${backendName}" has no "${name}" kernel`);
  return k.kernelFunc(args as Parameters<KernelFunc>[0]) as TensorInfo;
}

function readF32(backend: HeapBackend, t: TensorInfo): Float32Array {
  return backend.typedArrayFromHeap(t) as Float32Array;
}

function requireNHWC(kernel: string, dataFormat: unknown): void {
  if (dataFormat !== undefined && dataFormat !== "NHWC") {
    throw new Error(`${kernel}: only dataFormat "NHWC" is supported, got "${String(dataFormat)}"`);
  }
}

/**
 * dW[i,j,c,o] = Σ_{b,p,q} x[b, p·s + i − padTop, q·s + j − padLeft, c] · dy[b,p,q,o]
 * is a stride-1 convolution of x' = x transposed to [C, H, W, B] with the filter dy' = dy transposed to
 * [OH, OW, B, O] and dilation s, cropped to the filter size and transposed back to [kh, kw, C, O].
 */
function conv2DBackpropFilter(backendName: string): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as HeapBackend;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as {
      strides: number | [number, number];
      pad: "valid" | "same" | number | backend_util.ExplicitPadding;
      dataFormat: "NHWC" | "NCHW";
      dimRoundingMode?: "floor" | "round" | "ceil";
      filterShape: [number, number, number, number];
    };
    requireNHWC("Conv2DBackpropFilter", dataFormat);
    const info = backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
    const [, H, W] = x.shape;
    const [, OH, OW] = dy.shape;
    const top = info.padInfo.top, left = info.padInfo.left;
    // Padding after the image: just enough that every tap the gradient needs exists.
    const bottom = Math.max(0, kh - 1 + (OH - 1) * sh + 1 - H - top);
    const right = Math.max(0, kw - 1 + (OW - 1) * sw + 1 - W - left);
    const temps: TensorInfo[] = [];
    try {
      const xT = call(backendName, "Transpose", { inputs: { x }, backend, attrs: { perm: [3, 1, 2, 0] } });
      temps.push(xT);
      const dyT = call(backendName, "Transpose", {
        inputs: { x: dy },
        backend,
        attrs: { perm: [1, 2, 0, 3] },
      });
      temps.push(dyT);
      const conv = call(backendName, "Conv2D", {
        inputs: { x: xT, filter: dyT },
        backend,
        attrs: {
          strides: [1, 1],
          pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
          dataFormat: "NHWC",
          dilations: [sh, sw],
          dimRoundingMode: undefined as unknown as string,
        },
      });
      temps.push(conv);
      let cropped = conv;
      if (conv.shape[1] !== kh || conv.shape[2] !== kw) {
        cropped = call(backendName, "Slice", {
          inputs: { x: conv },
          backend,
          attrs: { begin: [0, 0, 0, 0], size: [conv.shape[0], kh, kw, conv.shape[3]] },
        });
        temps.push(cropped);
      }
      return call(backendName, "Transpose", {
        inputs: { x: cropped },
        backend,
        attrs: { perm: [1, 2, 0, 3] },
      });
    } finally {
      for (const t of temps) b.disposeData(t.dataId);
    }
  };
}

interface DepthwiseAttrs {
  strides: number | [number, number];
  dilations: number | [number, number];
  pad: "valid" | "same" | number | backend_util.ExplicitPadding;
  dimRoundingMode?: "floor" | "round" | "ceil";
  filterShape?: [number, number, number, number];
  inputShape?: [number, number, number, number];
}

/** Geometry shared by the two depthwise gradients. */
function depthwiseInfo(xShape: number[], filterShape: number[], a: DepthwiseAttrs) {
  return backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    a.strides,
    a.dilations,
    a.pad,
    a.dimRoundingMode,
    true,
  );
}

/**
 * Visits every (output position, filter tap) pair of a depthwise convolution that lands inside the
 * input: `f(xIndex, dyIndex, wIndex, m)` for each channel multiplier `m`.
 */
function forEachDepthwiseTap(
  info: backend_util.Conv2DInfo,
  visit: (xBase: number, dyBase: number, wBase: number) => void,
): void {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth, dilationHeight, dilationWidth } = info;
  const top = info.padInfo.top, left = info.padInfo.left;
  for (let n = 0; n < batchSize; n++) {
    for (let oh = 0; oh < outHeight; oh++) {
      for (let i = 0; i < filterHeight; i++) {
        const ih = oh * strideHeight - top + i * dilationHeight;
        if (ih < 0 || ih >= inHeight) continue;
        for (let ow = 0; ow < outWidth; ow++) {
          const dyBase = ((n * outHeight + oh) * outWidth + ow) * outChannels;
          for (let j = 0; j < filterWidth; j++) {
            const iw = ow * strideWidth - left + j * dilationWidth;
            if (iw < 0 || iw >= inWidth) continue;
            visit(
              ((n * inHeight + ih) * inWidth + iw) * inChannels,
              dyBase,
              (i * filterWidth + j) * outChannels,
            );
          }
        }
      }
    }
  }
}

function depthwiseBackpropFilter(): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as HeapBackend;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const a = attrs as unknown as DepthwiseAttrs;
    const info = depthwiseInfo(x.shape, a.filterShape!, a);
    const mult = info.outChannels / info.inChannels;
    const xv = readF32(b, x), dyv = readF32(b, dy);
    const out = b.makeOutput(a.filterShape!, "float32");
    const dw = readF32(b, out);
    dw.fill(0);
    const C = info.inChannels;
    forEachDepthwiseTap(info, (xBase, dyBase, wBase) => {
      for (let c = 0; c < C; c++) {
        const xval = xv[xBase + c];
        for (let m = 0; m < mult; m++) dw[wBase + c * mult + m] += xval * dyv[dyBase + c * mult + m];
      }
    });
    return out;
  };
}

function depthwiseBackpropInput(): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as HeapBackend;
    const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
    const a = attrs as unknown as DepthwiseAttrs;
    const info = depthwiseInfo(a.inputShape!, filter.shape, a);
    const mult = info.outChannels / info.inChannels;
    const wv = readF32(b, filter), dyv = readF32(b, dy);
    const out = b.makeOutput(a.inputShape!, "float32");
    const dx = readF32(b, out);
    dx.fill(0);
    const C = info.inChannels;
    forEachDepthwiseTap(info, (xBase, dyBase, wBase) => {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let m = 0; m < mult; m++) s += wv[wBase + c * mult + m] * dyv[dyBase + c * mult + m];
        dx[xBase + c] += s;
      }
    });
    return out;
  };
}

/** out[segmentIds[i], ...] += x[i, ...] for segment ids in [0, numSegments); others are dropped (as TF does). */
function unsortedSegmentSum(): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as HeapBackend;
    const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
    const { numSegments } = attrs as unknown as { numSegments: number };
    const idShape = segmentIds.shape;
    const nIds = idShape.reduce((p, d) => p * d, 1);
    const inner = x.shape.slice(idShape.length).reduce((p, d) => p * d, 1);
    const outShape = [numSegments, ...x.shape.slice(idShape.length)];
    const dtype = x.dtype === "int32" ? "int32" : "float32";
    const xv = b.typedArrayFromHeap(x);
    const ids = b.typedArrayFromHeap(segmentIds);
    const out = b.makeOutput(outShape, dtype);
    const ov = b.typedArrayFromHeap(out);
    ov.fill(0);
    for (let i = 0; i < nIds; i++) {
      const s = ids[i];
      if (s < 0 || s >= numSegments) continue;
      const src = i * inner, dst = s * inner;
      for (let k = 0; k < inner; k++) ov[dst + k] += xv[src + k];
    }
    return out;
  };
}

/**
 * `GatherV2` with `batchDims > 0`: the wasm kernel of tfjs 4.22 returns wrong values for it (found by
 * `tests/wasm_kernels_test.ts`), and per-sample token gathering is exactly what pruning does. The
 * original kernel still runs when `batchDims` is 0.
 */
function gatherV2(original: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs, backend, attrs } = args;
    const { axis, batchDims } = attrs as unknown as { axis: number; batchDims: number };
    const b = backend as HeapBackend;
    const { x, indices } = inputs as { x: TensorInfo; indices: TensorInfo };
    const parsedAxis = tf.util.parseAxisParam(axis, x.shape)[0];
    // Without batch dimensions the wasm kernel is right but copies element by element: take over
    // when whole rows of at least 16 values move (gathered tokens: 384 floats each).
    const rowLen = tf.util.sizeFromShape(x.shape.slice(parsedAxis + 1));
    if (!batchDims && (rowLen < 16 || (x.dtype !== "float32" && x.dtype !== "int32"))) return original(args);
    const info = backend_util.segment_util.collectGatherOpShapeInfo(
      { shape: x.shape } as tf.Tensor,
      { shape: indices.shape } as tf.Tensor,
      parsedAxis,
      batchDims,
    );
    const { batchSize, outerSize, dimSize, sliceSize, outputShape } = info;
    const perBatch = tf.util.sizeFromShape(indices.shape) / batchSize;
    const out = b.makeOutput(outputShape, x.dtype);
    // Views only after the allocation: a growing heap replaces its buffer.
    const xv = b.typedArrayFromHeap(x);
    const iv = b.typedArrayFromHeap(indices);
    const ov = b.typedArrayFromHeap(out);
    for (let bi = 0; bi < batchSize; bi++) {
      for (let o = 0; o < outerSize; o++) {
        for (let i = 0; i < perBatch; i++) {
          const idx = iv[bi * perBatch + i];
          if (idx < 0 || idx >= dimSize) {
            throw new Error(`GatherV2: the index value ${idx} is not in [0, ${dimSize - 1}]`);
          }
          const src = ((bi * outerSize + o) * dimSize + idx) * sliceSize;
          const dst = ((bi * outerSize + o) * perBatch + i) * sliceSize;
          ov.set(xv.subarray(src, src + sliceSize), dst);
        }
      }
    }
    return out;
  };
}

/**
 * `Slice` of float32/int32 tensors as copies of contiguous runs read in place. tfjs-wasm's kernel
 * starts with `readSync`, which copies the whole input out of the heap (the hybrid's patch-token
 * slice of `[64, 65, 384]`: 2.4 ms; this: a fraction).
 */
function slice(original: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs, backend, attrs } = args;
    const { x } = inputs as { x: TensorInfo };
    if ((x.dtype !== "float32" && x.dtype !== "int32") || x.shape.length === 0) return original(args);
    const b = backend as HeapBackend;
    const [begin, size] = tf.slice_util.parseSliceParams(
      x as tf.TensorInfo as tf.Tensor,
      (attrs as unknown as { begin: number | number[] }).begin,
      (attrs as unknown as { size?: number | number[] }).size,
    );
    const shape = x.shape, rank = shape.length;
    const out = b.makeOutput([...size], x.dtype);
    if (tf.util.sizeFromShape(size) === 0) return out;
    // Views after the allocation (a growing heap replaces its buffer).
    const xv = b.typedArrayFromHeap(x), ov = b.typedArrayFromHeap(out);
    // The innermost axis k that is cut: everything after it is whole, so runs of size[k]·inner copy at once.
    let k = rank - 1;
    while (k > 0 && begin[k] === 0 && size[k] === shape[k]) k--;
    const strides = tf.util.computeStrides(shape);
    const inner = k + 1 < rank ? strides[k] : 1;
    const run = size[k] * inner;
    const idx = new Array<number>(k).fill(0);
    let o = 0;
    for (;;) {
      let src = begin[k] * inner;
      for (let a = 0; a < k; a++) src += (begin[a] + idx[a]) * strides[a];
      ov.set(xv.subarray(src, src + run), o);
      o += run;
      let a = k - 1;
      while (a >= 0 && ++idx[a] === size[a]) idx[a--] = 0;
      if (a < 0) break;
    }
    return out;
  };
}

/** {@link ADAMW_KERNEL}: one pass over the parameter, its gradient and both moments. */
function adamW(): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as HeapBackend;
    const { param, grad, m, v } = inputs as Record<"param" | "grad" | "m" | "v", TensorInfo>;
    for (const [name, t] of Object.entries({ param, grad, m, v })) {
      if (t.dtype !== "float32" || t.shape.join(",") !== param.shape.join(",")) {
        throw new Error(
          `${ADAMW_KERNEL}: ${name} is ${t.dtype} [${t.shape}], expected float32 [${param.shape}] like the parameter`,
        );
      }
    }
    const { lr, beta1, beta2, eps, decay, bc1, bc2 } = attrs as unknown as Record<string, number>;
    const outs = [0, 1, 2].map(() => b.makeOutput([...param.shape], "float32"));
    // Views after every allocation: the heap may have grown.
    const [P, G, M, V] = [param, grad, m, v].map((t) => readF32(b, t));
    const [P2, M2, V2] = outs.map((t) => readF32(b, t));
    const c1 = 1 - beta1, c2 = 1 - beta2, step = lr / bc1, ibc2 = 1 / bc2;
    for (let i = 0; i < P.length; i++) {
      const g = G[i];
      const mi = beta1 * M[i] + c1 * g;
      const vi = beta2 * V[i] + c2 * g * g;
      M2[i] = mi;
      V2[i] = vi;
      P2[i] = P[i] * decay - step * mi / (Math.sqrt(vi * ibc2) + eps);
    }
    return outs;
  };
}

/**
 * `BatchMatMul` with `transposeA` / `transposeB`: the wasm kernel of tfjs 4.22 runs transposed operands
 * about 14x slower than plain ones (measured on a ViT weight gradient, [4096,128]ᵀ·[4096,512]), and every
 * matmul gradient uses them. Transposing the operand explicitly first and running the plain kernel is
 * much faster; results are identical up to float rounding.
 */
function batchMatMul(original: KernelFunc, backendName: string): KernelFunc {
  return (args) => {
    const { inputs, backend, attrs } = args;
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (!transposeA && !transposeB) return original(args);
    const b = backend as HeapBackend;
    const { a, b: bb } = inputs as { a: TensorInfo; b: TensorInfo };
    const temps: TensorInfo[] = [];
    const swapLast = (t: TensorInfo) => {
      const r = t.shape.length;
      const perm = [...Array(r).keys()];
      [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
      const out = call(backendName, "Transpose", { inputs: { x: t }, backend, attrs: { perm } });
      temps.push(out);
      return out;
    };
    try {
      const a2 = transposeA ? swapLast(a) : a;
      const b2 = transposeB ? swapLast(bb) : bb;
      return original({
        inputs: { a: a2, b: b2 },
        backend,
        attrs: { ...attrs, transposeA: false, transposeB: false },
      }) as TensorInfo;
    } finally {
      for (const t of temps) b.disposeData(t.dataId);
    }
  };
}

const done = new Set<string>();

/**
 * Registers the training kernels that the wasm backend lacks (see {@link WASM_TRAINING_KERNELS}) on
 * `backendName` (default `"wasm"`; a backend built on wasm, like `"native"`, can register them too, and
 * then the convolution-based filter gradient runs on its own, faster `Conv2D`). Idempotent; kernels the
 * backend already has are left alone.
 *
 * @example
 * ```ts
 * registerWasmTrainingKernels();
 * await tf.setBackend("wasm"); // conv nets now train on wasm
 * ```
 */
export function registerWasmTrainingKernels(backendName = "wasm"): void {
  if (done.has(backendName)) return;
  done.add(backendName);
  const impls: Record<(typeof WASM_TRAINING_KERNELS)[number], KernelFunc> = {
    Conv2DBackpropFilter: conv2DBackpropFilter(backendName),
    DepthwiseConv2dNativeBackpropFilter: depthwiseBackpropFilter(),
    DepthwiseConv2dNativeBackpropInput: depthwiseBackpropInput(),
    UnsortedSegmentSum: unsortedSegmentSum(),
  };
  for (const [kernelName, kernelFunc] of Object.entries(impls)) {
    if (tf.getKernel(kernelName, backendName)) continue;
    tf.registerKernel({ kernelName, backendName, kernelFunc });
  }
  if (!tf.getKernel(ADAMW_KERNEL, backendName)) {
    tf.registerKernel({ kernelName: ADAMW_KERNEL, backendName, kernelFunc: adamW() });
  }
  const sliceKernel = tf.getKernel("Slice", backendName);
  if (sliceKernel) {
    tf.unregisterKernel("Slice", backendName);
    tf.registerKernel({ ...sliceKernel, kernelFunc: slice(sliceKernel.kernelFunc) });
  }
  const gather = tf.getKernel("GatherV2", backendName);
  if (gather) {
    tf.unregisterKernel("GatherV2", backendName);
    tf.registerKernel({ ...gather, kernelFunc: gatherV2(gather.kernelFunc) });
  }
  // Only on plain wasm: backends built on it (native) bring their own matmul.
  const bmm = tf.getKernel("BatchMatMul", backendName);
  if (bmm && backendName === "wasm") {
    tf.unregisterKernel("BatchMatMul", backendName);
    tf.registerKernel({ ...bmm, kernelFunc: batchMatMul(bmm.kernelFunc, backendName) });
  }
}
