/**
 * oneDNN primitives through Deno FFI, on float32 arrays that live in the WebAssembly heap:
 * - 2-D convolutions (forward, data gradient, filter gradient) on NHWC tensors with tfjs'
 *   `[kh, kw, in, out]` filters. The im2col + GEMM lowering spends as long building the column
 *   matrix as the GEMM takes (ResNet18's 3x3 64→64 conv at batch 64 writes a 151 MB matrix);
 *   oneDNN's JIT convolutions read the image directly.
 * - exact (erf) GELU forward and backward, and layer normalization over the last axis forward and
 *   backward. In ViT-Small inference at batch 64 the op-by-op GELU (wasm `Erf` plus three
 *   elementwise passes) took a quarter of the time; oneDNN's JIT versions are one pass each.
 *
 * Only the oneDNN 2.x C API is spoken here (Debian 12's `libdnnl2`, the one `python3-torch`
 * uses): with another major version {@link openDnnlConv} says so and the native backend keeps
 * im2col and the op-by-op versions.
 *
 * Primitives are created once per shape (JIT compilation takes milliseconds) and kept.
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs-core";
import { policySoftmax, policySoftmaxBackward } from "./policy_softmax.ts";

// oneDNN 2.6 constants (dnnl_types.h; read off the header with a C compiler).
const DNNL_SUCCESS = 0;
const DNNL_CPU = 1;
const DNNL_STREAM_DEFAULT = 1;
const DNNL_F32 = 3;
const TAG_ANY = 1;
const TAG_NHWC = 20;
const TAG_HWIO = 30;
const TAG_X = 2;
const PROP_FORWARD_TRAINING = 64;
const PROP_FORWARD_INFERENCE = 96;
const ALG_CONV_DIRECT = 1;
const PROP_BACKWARD = 128;
const ALG_GELU_ERF = 48;
const ALG_RELU = 0x1f;
const TAG_AB = 3;
/** Normalization flags (layer and batch norm): learned scale and shift as separate tensors. */
const NORM_USE_SCALE = 8, NORM_USE_SHIFT = 16;
const ARG_MEAN = 49, ARG_VARIANCE = 50, ARG_SCALE = 51, ARG_SHIFT = 52;
const ARG_DIFF_SCALE = 255, ARG_DIFF_SHIFT = 256;
const QUERY_IMPL_INFO_STR = 8;
const QUERY_WEIGHTS_MD = 131;
const QUERY_SRC_MD = 129, QUERY_DST_MD = 133;
const TAG_NCHW16C = 69;
const QUERY_DIFF_WEIGHTS_MD = 132;
const ARG_SRC = 1, ARG_DST = 17, ARG_WEIGHTS = 33, ARG_BIAS = 41;
const ARG_DIFF_SRC = 129, ARG_DIFF_DST = 145, ARG_DIFF_WEIGHTS = 161;
/** sizeof(dnnl_memory_desc_t) is 696 and sizeof(dnnl_convolution_desc_t) 5976 in 2.6: room to spare. */
const MD_BYTES = 1024;
const OP_DESC_BYTES = 8192;

const SYMBOLS = {
  dnnl_version: { parameters: [], result: "pointer" },
  dnnl_engine_create: { parameters: ["buffer", "i32", "usize"], result: "i32" },
  dnnl_stream_create: { parameters: ["buffer", "pointer", "u32"], result: "i32" },
  dnnl_stream_wait: { parameters: ["pointer"], result: "i32" },
  dnnl_memory_desc_init_by_tag: { parameters: ["buffer", "i32", "buffer", "i32", "i32"], result: "i32" },
  dnnl_memory_desc_init_by_strides: {
    parameters: ["buffer", "i32", "buffer", "i32", "buffer"],
    result: "i32",
  },
  dnnl_matmul_desc_init: { parameters: ["buffer", "buffer", "buffer", "buffer", "buffer"], result: "i32" },
  dnnl_softmax_forward_desc_init: { parameters: ["buffer", "i32", "buffer", "i32"], result: "i32" },
  dnnl_softmax_backward_desc_init: { parameters: ["buffer", "buffer", "buffer", "i32"], result: "i32" },
  dnnl_primitive_attr_set_output_scales: { parameters: ["pointer", "i64", "i32", "buffer"], result: "i32" },
  dnnl_memory_desc_equal: { parameters: ["buffer", "pointer"], result: "i32" },
  dnnl_memory_desc_get_size: { parameters: ["pointer"], result: "usize" },
  dnnl_dilated_convolution_forward_desc_init: {
    parameters: [
      "buffer",
      "i32",
      "i32",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  dnnl_dilated_convolution_backward_data_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  dnnl_dilated_convolution_backward_weights_desc_init: {
    parameters: [
      "buffer",
      "i32",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  dnnl_eltwise_forward_desc_init: {
    parameters: ["buffer", "i32", "i32", "buffer", "f32", "f32"],
    result: "i32",
  },
  dnnl_eltwise_backward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "f32", "f32"],
    result: "i32",
  },
  dnnl_layer_normalization_forward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "f32", "u32"],
    result: "i32",
  },
  dnnl_layer_normalization_backward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "buffer", "f32", "u32"],
    result: "i32",
  },
  dnnl_batch_normalization_forward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "f32", "u32"],
    result: "i32",
  },
  dnnl_batch_normalization_backward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "f32", "u32"],
    result: "i32",
  },
  dnnl_primitive_attr_create: { parameters: ["buffer"], result: "i32" },
  dnnl_post_ops_create: { parameters: ["buffer"], result: "i32" },
  dnnl_post_ops_append_eltwise: { parameters: ["pointer", "f32", "i32", "f32", "f32"], result: "i32" },
  dnnl_primitive_attr_set_post_ops: { parameters: ["pointer", "pointer"], result: "i32" },
  dnnl_primitive_desc_create: {
    parameters: ["buffer", "buffer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_desc_query: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
  dnnl_primitive_desc_query_md: { parameters: ["pointer", "i32", "i32"], result: "pointer" },
  dnnl_reorder_primitive_desc_create: {
    parameters: ["buffer", "pointer", "pointer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_create: { parameters: ["buffer", "pointer"], result: "i32" },
  dnnl_memory_create: { parameters: ["buffer", "pointer", "pointer", "pointer"], result: "i32" },
  dnnl_memory_set_data_handle: { parameters: ["pointer", "pointer"], result: "i32" },
  dnnl_primitive_execute: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
type Ptr = Deno.PointerValue;

/** A memory descriptor kept in a buffer of its own (the C struct by value). */
type Md = Uint8Array<ArrayBuffer>;

/** A reorder primitive between a plain and a oneDNN-chosen layout, with its two memory objects. */
interface Reorder {
  prim: Ptr;
  from: Ptr;
  to: Ptr;
  args: BigInt64Array<ArrayBuffer>;
  bytes: number;
}

/**
 * Whether a forward convolution runs faster with activations in oneDNN's blocked `nChw16c` layout
 * (plus a reorder in and out) than in place in NHWC. oneDNN's NHWC kernels lose on small feature
 * maps with many channels: ResNet18's 512-channel 4x4 convolutions at batch 64 took 16.5 ms in NHWC
 * and 11.6 ms blocked with the reorders (PyTorch, blocked throughout: 9.6 ms); 8x8 maps and larger
 * are faster in NHWC (ResNet18 inference at batch 64: 195 ms/batch all NHWC, 182 with 4x4 maps blocked,
 * 188 with 8x8 too).
 *
 * @example
 * ```ts
 * blockedLayoutPays(tf.backend_util.computeConv2DInfo([64, 4, 4, 512], [3, 3, 512, 512], 1, 1, "same")); // true
 * ```
 */
export function blockedLayoutPays(ci: tf.backend_util.Conv2DInfo): boolean {
  return ci.outHeight * ci.outWidth <= 16 && ci.inChannels % 16 === 0 && ci.outChannels % 16 === 0;
}

/**
 * Whether oneDNN's implementation name is its reference (non-JIT) code, e.g. `ref:any` or `gemm:ref`:
 * correct but one to two orders of magnitude slower than the JIT kernels.
 *
 * @example
 * ```ts
 * isReferenceImpl("ref:any"); // true
 * isReferenceImpl("brg:avx512_core"); // false
 * ```
 */
export function isReferenceImpl(impl: string): boolean {
  return /^ref|gemm:ref/.test(impl);
}

/** One cached primitive with its memory objects (handles re-pointed at every call). */
interface Prim {
  prim: Ptr;
  /** Exec arguments: [arg id, memory object] per slot. */
  mems: { arg: number; mem: Ptr }[];
  args: BigInt64Array<ArrayBuffer>;
  /** Weights go through a reorder into `weightsScratch` first (oneDNN chose a blocked layout). */
  weightsReorder?: Reorder;
  /** Activations go through a blocked layout (`nChw16c`) for this primitive: reorders in and out. */
  srcReorder?: Reorder;
  dstReorder?: Reorder;
  /** The primitive writes blocked weight gradients that a reorder turns into tfjs' layout. */
  diffWeightsReorder?: Reorder;
  impl: string;
}

/** Convolutions through oneDNN; all arrays are float32 NHWC views (e.g. into the wasm heap). */
export type DnnlConv = Pick<
  DnnlConvImpl,
  | "version"
  | "forward"
  | "backwardData"
  | "backwardWeights"
  | "batchedMatMul"
  | "attention"
  | "attentionBackward"
  | "maskedAttention"
  | "maskedAttentionBackward"
  | "gelu"
  | "geluBackward"
  | "layerNorm"
  | "batchNorm"
  | "batchNormBackward"
  | "layerNormBackward"
  | "implementation"
>;

/** Outcome of {@link openDnnlConv}. */
export type OpenDnnlConvResult = { ok: true; conv: DnnlConv } | { ok: false; reason: string };

function check(status: number, what: string): void {
  if (status !== DNNL_SUCCESS) throw new Error(`oneDNN ${what} failed with status ${status}`);
}

function outPtr(): BigUint64Array<ArrayBuffer> {
  return new BigUint64Array(1);
}
function ptrOf(b: BigUint64Array): Ptr {
  return Deno.UnsafePointer.create(b[0]);
}
function ptrValue(p: Ptr): bigint {
  return p === null ? 0n : BigInt(Deno.UnsafePointer.value(p));
}

/**
 * Opens oneDNN's convolution primitives from `path` (a oneDNN 2.x library). Never throws.
 *
 * @example
 * ```ts
 * const r = openDnnlConv("libdnnl.so.2");
 * if (r.ok) console.log(r.conv.version);
 * ```
 */
export function openDnnlConv(path: string): OpenDnnlConvResult {
  let lib: Lib;
  try {
    lib = Deno.dlopen(path, SYMBOLS).symbols;
  } catch (e) {
    return { ok: false, reason: `${path}: ${e instanceof Error ? e.message.split("\n")[0] : e}` };
  }
  const v = lib.dnnl_version();
  if (!v) return { ok: false, reason: `${path}: dnnl_version() returned NULL` };
  const view = new Deno.UnsafePointerView(v);
  const version = `${view.getInt32(0)}.${view.getInt32(4)}.${view.getInt32(8)}`;
  if (view.getInt32(0) !== 2) {
    return {
      ok: false,
      reason: `${path} is oneDNN ${version}; the convolution path speaks the 2.x C API only`,
    };
  }
  try {
    return { ok: true, conv: new DnnlConvImpl(lib, version) };
  } catch (e) {
    return { ok: false, reason: `${path}: ${e instanceof Error ? e.message : e}` };
  }
}

/**
 * A oneDNN implementation this backend declines on purpose (a known-bad kernel for the shape): the caller
 * computes the convolution another way, without a warning.
 */
export class DnnlDeclined extends Error {
  override name = "DnnlDeclined";
}

/**
 * Whether to decline oneDNN's chosen implementation for a convolution gradient. oneDNN 2.6's AVX2 1×1
 * backward-weights kernel (`jit_1x1:avx2`) is broken on strided shapes with few channels, such as a small
 * ResNet18's shortcut `2×32×32×4 → 16×16×8, stride 2`: it returns a wrong filter gradient (relative error
 * 0.8) or never returns (both OpenMP threads spinning in its JIT code; the whole test file hung). Seen on an
 * AVX2 EPYC and on an AVX-512 CPU with `ONEDNN_MAX_CPU_ISA=AVX2`; 16 or more input channels gave correct
 * gradients, but every strided case is declined (im2col + GEMM of a 1×1 convolution costs little).
 *
 * @example
 * ```ts
 * declinedImpl("weights", "jit_1x1:avx2", ci); // true when ci has a stride above 1
 * ```
 */
export function declinedImpl(
  kind: "data" | "weights",
  impl: string,
  ci: tf.backend_util.Conv2DInfo,
): boolean {
  return kind === "weights" && impl.startsWith("jit_1x1:avx2") && (ci.strideHeight > 1 || ci.strideWidth > 1);
}

/** What {@link DnnlConvImpl.maskedAttention} keeps for its gradient (`[b, heads, t, t]` and `[b, heads, t]`). */
export interface MaskedAttentionSaved {
  probs: Float32Array;
  expScores: Float32Array;
  rowInv: Float32Array;
  rowArgmax: Float32Array;
}

class DnnlConvImpl {
  private engine: Ptr;
  private stream: Ptr;
  private cache = new Map<string, Prim>();
  private attnCache = new Map<
    string,
    Record<"scores" | "softmax" | "context" | "dV" | "dP" | "dS" | "dQ" | "dK", Prim>
  >();
  private scratches = new Map<string, Float32Array<ArrayBuffer>>();

  /** @param version oneDNN version, e.g. "2.6.3". */
  constructor(private lib: Lib, readonly version: string) {
    const e = outPtr();
    check(lib.dnnl_engine_create(e, DNNL_CPU, 0n), "engine_create");
    this.engine = ptrOf(e);
    const s = outPtr();
    check(lib.dnnl_stream_create(s, this.engine, DNNL_STREAM_DEFAULT), "stream_create");
    this.stream = ptrOf(s);
  }

  private md(dims: number[], tag: number): Md {
    const md = new Uint8Array(MD_BYTES);
    check(
      this.lib.dnnl_memory_desc_init_by_tag(
        md,
        dims.length,
        BigInt64Array.from(dims.map(BigInt)),
        DNNL_F32,
        tag,
      ),
      `memory_desc_init_by_tag([${dims}], tag ${tag})`,
    );
    return md;
  }

  /** Geometry of a case in oneDNN's terms. */
  private geometry(ci: tf.backend_util.Conv2DInfo) {
    const { batchSize: n, inChannels: ic, inHeight: ih, inWidth: iw, outChannels: oc } = ci;
    const { outHeight: oh, outWidth: ow, filterHeight: kh, filterWidth: kw } = ci;
    const dims = (a: number, b: number) => BigInt64Array.from([BigInt(a), BigInt(b)]);
    const p = ci.padInfo;
    return {
      src: [n, ic, ih, iw],
      wei: [oc, ic, kh, kw],
      dst: [n, oc, oh, ow],
      strides: dims(ci.strideHeight, ci.strideWidth),
      dilates: dims(ci.dilationHeight - 1, ci.dilationWidth - 1),
      padL: dims(p.top, p.left),
      // oneDNN wants the right/bottom padding that makes its output-size formula exact.
      padR: dims(
        (oh - 1) * ci.strideHeight + (kh - 1) * ci.dilationHeight + 1 - ih - p.top,
        (ow - 1) * ci.strideWidth + (kw - 1) * ci.dilationWidth + 1 - iw - p.left,
      ),
    };
  }

  private key(kind: string, ci: tf.backend_util.Conv2DInfo, bias: boolean): string {
    return [
      kind,
      bias ? 1 : 0,
      ci.batchSize,
      ci.inHeight,
      ci.inWidth,
      ci.inChannels,
      ci.outHeight,
      ci.outWidth,
      ci.outChannels,
      ci.filterHeight,
      ci.filterWidth,
      ci.strideHeight,
      ci.strideWidth,
      ci.dilationHeight,
      ci.dilationWidth,
      ci.padInfo.top,
      ci.padInfo.left,
    ].join(",");
  }

  private pd(opDesc: Uint8Array<ArrayBuffer>, hint: Ptr, what: string, attr: Ptr = null): Ptr {
    const out = outPtr();
    check(
      this.lib.dnnl_primitive_desc_create(out, opDesc, attr, this.engine, hint),
      `${what} primitive_desc_create`,
    );
    return ptrOf(out);
  }

  /** Primitive attributes with a ReLU post-op (created once). */
  private reluAttr: Ptr = null;
  private reluAttrs(): Ptr {
    if (this.reluAttr) return this.reluAttr;
    const a = outPtr(), po = outPtr();
    check(this.lib.dnnl_primitive_attr_create(a), "primitive_attr_create");
    check(this.lib.dnnl_post_ops_create(po), "post_ops_create");
    check(this.lib.dnnl_post_ops_append_eltwise(ptrOf(po), 1, ALG_RELU, 0, 0), "post_ops_append_eltwise");
    check(this.lib.dnnl_primitive_attr_set_post_ops(ptrOf(a), ptrOf(po)), "primitive_attr_set_post_ops");
    this.reluAttr = ptrOf(a);
    return this.reluAttr;
  }

  private primitive(pd: Ptr, what: string): Ptr {
    const out = outPtr();
    check(this.lib.dnnl_primitive_create(out, pd), `${what} primitive_create`);
    return ptrOf(out);
  }

  private memory(md: Md | Ptr, what: string): Ptr {
    const out = outPtr();
    // A NULL handle: every call points the memory at the tensors of that call.
    const status = md instanceof Uint8Array
      ? this.lib.dnnl_memory_create(out, Deno.UnsafePointer.of(md), this.engine, null)
      : this.lib.dnnl_memory_create(out, md, this.engine, null);
    check(status, `${what} memory_create`);
    return ptrOf(out);
  }

  private implOf(pd: Ptr): string {
    const out = outPtr();
    if (this.lib.dnnl_primitive_desc_query(pd, QUERY_IMPL_INFO_STR, 0, out) !== DNNL_SUCCESS) return "?";
    const p = ptrOf(out);
    return p ? new Deno.UnsafePointerView(p).getCString() : "?";
  }

  private forwardPd(
    ci: tf.backend_util.Conv2DInfo,
    bias: boolean,
    prop: number,
    relu = false,
    blocked = false,
  ) {
    const g = this.geometry(ci);
    const act = blocked ? TAG_NCHW16C : TAG_NHWC;
    const src = this.md(g.src, act), dst = this.md(g.dst, act);
    const weiAny = this.md(g.wei, TAG_ANY);
    const b = bias ? this.md([ci.outChannels], TAG_X) : new Uint8Array(MD_BYTES);
    const desc = new Uint8Array(OP_DESC_BYTES);
    check(
      this.lib.dnnl_dilated_convolution_forward_desc_init(
        desc,
        prop,
        ALG_CONV_DIRECT,
        src,
        weiAny,
        b,
        dst,
        g.strides,
        g.dilates,
        g.padL,
        g.padR,
      ),
      "convolution_forward_desc_init",
    );
    return { pd: this.pd(desc, null, "convolution forward", relu ? this.reluAttrs() : null), g };
  }

  /** Sets up weight reorders when oneDNN picked a layout other than tfjs' `[kh, kw, in, out]`. */
  private weightsPlan(pd: Ptr, query: number, g: { wei: number[] }, direction: "in" | "out", what: string) {
    return this.layoutPlan(pd, query, this.md(g.wei, TAG_HWIO), direction, what);
  }

  /** Sets up a reorder when the primitive's layout for an argument differs from the plain one. */
  private layoutPlan(pd: Ptr, query: number, plain: Md, direction: "in" | "out", what: string) {
    const chosen = this.lib.dnnl_primitive_desc_query_md(pd, query, 0);
    if (this.lib.dnnl_memory_desc_equal(plain, chosen) === 1) return { mem: this.memory(plain, what) };
    const bytes = Number(this.lib.dnnl_memory_desc_get_size(chosen));
    const rpd = direction === "in"
      ? this.reorderPd(plain, chosen, what)
      : this.reorderPd(chosen, plain, what);
    const from = this.memory(direction === "in" ? plain : chosen, what);
    const to = this.memory(direction === "in" ? chosen : plain, what);
    const prim = this.primitive(rpd, `${what} reorder`);
    const args = new BigInt64Array(4);
    args[0] = 1n; // DNNL_ARG_FROM
    args[1] = ptrValue(from);
    args[2] = 17n; // DNNL_ARG_TO
    args[3] = ptrValue(to);
    return { mem: direction === "in" ? to : from, reorder: { prim, from, to, args, bytes } };
  }

  private reorderPd(from: Md | Ptr, to: Md | Ptr, what: string): Ptr {
    const asPtr = (m: Md | Ptr) => (m instanceof Uint8Array ? Deno.UnsafePointer.of(m) : m);
    const out = outPtr();
    check(
      this.lib.dnnl_reorder_primitive_desc_create(
        out,
        asPtr(from),
        this.engine,
        asPtr(to),
        this.engine,
        null,
      ),
      `${what} reorder_primitive_desc_create`,
    );
    return ptrOf(out);
  }

  private finish(
    prim: Ptr,
    mems: { arg: number; mem: Ptr }[],
    impl: string,
    extra: Partial<Prim> = {},
  ): Prim {
    const args = new BigInt64Array(mems.length * 2);
    mems.forEach((m, i) => {
      args[2 * i] = BigInt(m.arg);
      args[2 * i + 1] = ptrValue(m.mem);
    });
    return { prim, mems, args, impl, ...extra };
  }

  private getForward(ci: tf.backend_util.Conv2DInfo, bias: boolean, relu: boolean): Prim {
    const key = this.key(relu ? "fr" : "f", ci, bias);
    let p = this.cache.get(key);
    if (p) return p;
    let { pd, g } = this.forwardPd(ci, bias, PROP_FORWARD_INFERENCE, relu, blockedLayoutPays(ci));
    // nChw16c has JIT kernels only where oneDNN targets AVX-512; on an AVX2 CPU it falls back to its
    // reference code (a ResNet18 stage-4 convolution took ~1 s instead of ~2 ms): keep NHWC there.
    if (blockedLayoutPays(ci) && isReferenceImpl(this.implOf(pd))) {
      ({ pd, g } = this.forwardPd(ci, bias, PROP_FORWARD_INFERENCE, relu, false));
    }
    const w = this.weightsPlan(pd, QUERY_WEIGHTS_MD, g, "in", "convolution forward weights");
    const src = this.layoutPlan(pd, QUERY_SRC_MD, this.md(g.src, TAG_NHWC), "in", "convolution forward src");
    const dst = this.layoutPlan(pd, QUERY_DST_MD, this.md(g.dst, TAG_NHWC), "out", "convolution forward dst");
    const mems = [
      { arg: ARG_SRC, mem: src.mem },
      { arg: ARG_WEIGHTS, mem: w.mem },
      { arg: ARG_DST, mem: dst.mem },
    ];
    if (bias) mems.push({ arg: ARG_BIAS, mem: this.memory(this.md([ci.outChannels], TAG_X), "bias") });
    p = this.finish(this.primitive(pd, "convolution forward"), mems, this.implOf(pd), {
      weightsReorder: w.reorder,
      srcReorder: src.reorder,
      dstReorder: dst.reorder,
    });
    this.cache.set(key, p);
    return p;
  }

  /**
   * A convolution gradient primitive: `data` (dX from dY and the weights) or `weights` (dW from X and
   * dY). Both pair with the forward-training primitive as a hint and let oneDNN pick the weights layout.
   */
  private getBackward(kind: "data" | "weights", ci: tf.backend_util.Conv2DInfo): Prim {
    const key = this.key(kind === "data" ? "bd" : "bw", ci, false);
    let p = this.cache.get(key);
    if (p) return p;
    const what = `convolution backward ${kind}`;
    const { pd: hint, g } = this.forwardPd(ci, false, PROP_FORWARD_TRAINING);
    const src = this.md(g.src, TAG_NHWC), dst = this.md(g.dst, TAG_NHWC), wei = this.md(g.wei, TAG_ANY);
    const desc = new Uint8Array(OP_DESC_BYTES);
    const geometry = [g.strides, g.dilates, g.padL, g.padR] as const;
    check(
      kind === "data"
        ? this.lib.dnnl_dilated_convolution_backward_data_desc_init(
          desc,
          ALG_CONV_DIRECT,
          src,
          wei,
          dst,
          ...geometry,
        )
        : this.lib.dnnl_dilated_convolution_backward_weights_desc_init(
          desc,
          ALG_CONV_DIRECT,
          src,
          wei,
          new Uint8Array(MD_BYTES),
          dst,
          ...geometry,
        ),
      `${what} desc_init`,
    );
    const pd = this.pd(desc, hint, what);
    if (declinedImpl(kind, this.implOf(pd), ci)) {
      throw new DnnlDeclined(
        `${what}: oneDNN's ${this.implOf(pd)} is declined for a strided 1×1 convolution`,
      );
    }
    const w = kind === "data"
      ? this.weightsPlan(pd, QUERY_WEIGHTS_MD, g, "in", `${what} weights`)
      : this.weightsPlan(pd, QUERY_DIFF_WEIGHTS_MD, g, "out", `${what} diff_weights`);
    const mems = kind === "data"
      ? [
        { arg: ARG_DIFF_DST, mem: this.memory(dst, "diff_dst") },
        { arg: ARG_WEIGHTS, mem: w.mem },
        { arg: ARG_DIFF_SRC, mem: this.memory(src, "diff_src") },
      ]
      : [
        { arg: ARG_SRC, mem: this.memory(src, "src") },
        { arg: ARG_DIFF_DST, mem: this.memory(dst, "diff_dst") },
        { arg: ARG_DIFF_WEIGHTS, mem: w.mem },
      ];
    p = this.finish(
      this.primitive(pd, what),
      mems,
      this.implOf(pd),
      kind === "data" ? { weightsReorder: w.reorder } : { diffWeightsReorder: w.reorder },
    );
    this.cache.set(key, p);
    return p;
  }

  private scratchFor(
    bytes: number,
    slot: "weights" | "src" | "dst" | "attention" | "attentionGrad" | "rowInv" | "rowArgmax" = "weights",
  ): Float32Array<ArrayBuffer> {
    let s = this.scratches.get(slot);
    if (!s || s.byteLength < bytes) {
      s = new Float32Array(Math.ceil(bytes / 4));
      this.scratches.set(slot, s);
    }
    return s;
  }

  /** Points each memory object at its array (by position in `p.mems`) and runs the primitive. */
  private run(p: Prim, arrays: (Float32Array | null)[], what: string): void {
    for (let i = 0; i < p.mems.length; i++) {
      const a = arrays[i];
      if (a === null) continue; // already pointed (a reorder's scratch)
      check(
        this.lib.dnnl_memory_set_data_handle(p.mems[i].mem, Deno.UnsafePointer.of(a)),
        `${what} set_data_handle`,
      );
    }
    check(this.lib.dnnl_primitive_execute(p.prim, this.stream, p.mems.length, p.args), `${what} execute`);
    check(this.lib.dnnl_stream_wait(this.stream), `${what} stream_wait`);
  }

  private runReorder(
    r: NonNullable<Prim["weightsReorder"]>,
    from: Float32Array,
    to: Float32Array,
    what: string,
  ) {
    check(
      this.lib.dnnl_memory_set_data_handle(r.from, Deno.UnsafePointer.of(from)),
      `${what} set_data_handle`,
    );
    check(this.lib.dnnl_memory_set_data_handle(r.to, Deno.UnsafePointer.of(to)), `${what} set_data_handle`);
    check(this.lib.dnnl_primitive_execute(r.prim, this.stream, 2, r.args), `${what} reorder execute`);
    check(this.lib.dnnl_stream_wait(this.stream), `${what} reorder stream_wait`);
  }

  /** The weights array the primitive reads: `w` itself, or `w` reordered into the scratch buffer. */
  private weightsIn(p: Prim, w: Float32Array, what: string): Float32Array {
    if (!p.weightsReorder) return w;
    const s = this.scratchFor(p.weightsReorder.bytes);
    this.runReorder(p.weightsReorder, w, s, what);
    return s;
  }

  /** `y = conv(x, w) (+ bias)`, then `max(y, 0)` when `relu` (fused into the convolution). */
  forward(
    ci: tf.backend_util.Conv2DInfo,
    x: Float32Array,
    w: Float32Array,
    y: Float32Array,
    bias?: Float32Array,
    relu = false,
  ) {
    const p = this.getForward(ci, bias !== undefined, relu);
    const wIn = this.weightsIn(p, w, "convolution forward");
    let xIn: Float32Array = x, yOut: Float32Array = y;
    if (p.srcReorder) {
      xIn = this.scratchFor(p.srcReorder.bytes, "src");
      this.runReorder(p.srcReorder, x, xIn, "convolution forward src");
    }
    if (p.dstReorder) yOut = this.scratchFor(p.dstReorder.bytes, "dst");
    this.run(p, bias ? [xIn, wIn, yOut, bias] : [xIn, wIn, yOut], "convolution forward");
    if (p.dstReorder) this.runReorder(p.dstReorder, yOut, y, "convolution forward dst");
  }

  /** `dx = conv_transpose(dy, w)`, the data gradient. */
  backwardData(ci: tf.backend_util.Conv2DInfo, dy: Float32Array, w: Float32Array, dx: Float32Array) {
    const p = this.getBackward("data", ci);
    const wIn = this.weightsIn(p, w, "convolution backward data");
    this.run(p, [dy, wIn, dx], "convolution backward data");
  }

  /** `dw = x ⋆ dy`, the filter gradient (overwrites `dw`). */
  backwardWeights(ci: tf.backend_util.Conv2DInfo, x: Float32Array, dy: Float32Array, dw: Float32Array) {
    const p = this.getBackward("weights", ci);
    if (!p.diffWeightsReorder) {
      this.run(p, [x, dy, dw], "convolution backward weights");
      return;
    }
    const s = this.scratchFor(p.diffWeightsReorder.bytes);
    this.run(p, [x, dy, s], "convolution backward weights");
    this.runReorder(p.diffWeightsReorder, s, dw, "convolution backward weights");
  }

  private plainMems(specs: [number, number[], number][]): { arg: number; mem: Ptr }[] {
    return specs.map(([arg, dims, tag]) => ({ arg, mem: this.memory(this.md(dims, tag), `arg ${arg}`) }));
  }

  private eltwise(n: number, backward: boolean): Prim {
    const key = `gelu,${backward ? 1 : 0},${n}`;
    let p = this.cache.get(key);
    if (p) return p;
    const data = this.md([n], TAG_X);
    const fdesc = new Uint8Array(OP_DESC_BYTES);
    check(
      this.lib.dnnl_eltwise_forward_desc_init(
        fdesc,
        backward ? PROP_FORWARD_TRAINING : PROP_FORWARD_INFERENCE,
        ALG_GELU_ERF,
        data,
        0,
        0,
      ),
      "eltwise_forward_desc_init",
    );
    const fpd = this.pd(fdesc, null, "GELU forward");
    if (!backward) {
      p = this.finish(
        this.primitive(fpd, "GELU forward"),
        this.plainMems([[ARG_SRC, [n], TAG_X], [ARG_DST, [n], TAG_X]]),
        this.implOf(fpd),
      );
    } else {
      const bdesc = new Uint8Array(OP_DESC_BYTES);
      check(
        this.lib.dnnl_eltwise_backward_desc_init(bdesc, ALG_GELU_ERF, data, data, 0, 0),
        "eltwise_backward_desc_init",
      );
      const bpd = this.pd(bdesc, fpd, "GELU backward");
      p = this.finish(
        this.primitive(bpd, "GELU backward"),
        this.plainMems([[ARG_SRC, [n], TAG_X], [ARG_DIFF_DST, [n], TAG_X], [ARG_DIFF_SRC, [n], TAG_X]]),
        this.implOf(bpd),
      );
    }
    this.cache.set(key, p);
    return p;
  }

  private mdStrided(dims: number[], strides: number[]): Md {
    const md = new Uint8Array(MD_BYTES);
    const big = (v: number[]) => BigInt64Array.from(v.map(BigInt));
    check(
      this.lib.dnnl_memory_desc_init_by_strides(md, dims.length, big(dims), DNNL_F32, big(strides)),
      `memory_desc_init_by_strides([${dims}], [${strides}])`,
    );
    return md;
  }

  /**
   * `nBatch` independent row-major products `C[i] = op(A[i])·op(B[i])` (`m×k`·`k×n`, operands
   * stored transposed when `transA`/`transB`), contiguous one after the other, as one primitive
   * that spreads the batch over the threads (attention's many small per-head products).
   */
  batchedMatMul(
    nBatch: number,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    a: Float32Array,
    b: Float32Array,
    c: Float32Array,
  ): void {
    if (nBatch === 0 || m === 0 || n === 0) return;
    const key = `mm,${nBatch},${m},${n},${k},${transA ? 1 : 0},${transB ? 1 : 0}`;
    let p = this.cache.get(key);
    if (!p) {
      const src = this.mdStrided([nBatch, m, k], transA ? [m * k, 1, m] : [m * k, k, 1]);
      const wei = this.mdStrided([nBatch, k, n], transB ? [k * n, 1, k] : [k * n, n, 1]);
      const dst = this.mdStrided([nBatch, m, n], [m * n, n, 1]);
      const desc = new Uint8Array(OP_DESC_BYTES);
      check(
        this.lib.dnnl_matmul_desc_init(desc, src, wei, new Uint8Array(MD_BYTES), dst),
        "matmul_desc_init",
      );
      const pd = this.pd(desc, null, "batched matmul");
      p = this.finish(
        this.primitive(pd, "batched matmul"),
        [
          { arg: ARG_SRC, mem: this.memory(src, "matmul src") },
          { arg: ARG_WEIGHTS, mem: this.memory(wei, "matmul weights") },
          { arg: ARG_DST, mem: this.memory(dst, "matmul dst") },
        ],
        this.implOf(pd),
      );
      this.cache.set(key, p);
    }
    this.run(p, [a, b, c], "batched matmul");
  }

  /**
   * The attention primitives for one shape. Strided views of `qkv` `[b, t, 3, h, dh]` give q, k and
   * v (the same descriptors at offsets 0, d and 2d); scores/probabilities are `[b, h, t, t]`; the
   * context is written as `[b, t, h·dh]`. Gradients write straight into the thirds of `dqkv`.
   */
  private attentionPlan(b: number, t: number, d: number, h: number) {
    const key = `attn,${b},${t},${d},${h}`;
    let plan = this.attnCache.get(key);
    if (plan) return plan;
    const dh = d / h, row = 3 * d;
    const head = this.mdStrided.bind(this);
    const qkvView = head([b, h, t, dh], [t * row, dh, row, 1]); // q, k or v (by offset)
    const qkvViewT = head([b, h, dh, t], [t * row, dh, 1, row]); // its transpose
    const tt = head([b, h, t, t], [h * t * t, t * t, t, 1]); // scores / probabilities
    const ttT = head([b, h, t, t], [h * t * t, t * t, 1, t]); // their transpose
    const ctxView = head([b, h, t, dh], [t * d, dh, d, 1]); // context / its gradient, [b, t, h·dh]
    const scaled = outPtr();
    check(this.lib.dnnl_primitive_attr_create(scaled), "primitive_attr_create");
    check(
      this.lib.dnnl_primitive_attr_set_output_scales(
        ptrOf(scaled),
        1n,
        0,
        new Float32Array([1 / Math.sqrt(dh)]),
      ),
      "primitive_attr_set_output_scales",
    );
    const mm = (src: Md, wei: Md, dst: Md, attr: Ptr, what: string) => {
      const desc = new Uint8Array(OP_DESC_BYTES);
      check(
        this.lib.dnnl_matmul_desc_init(desc, src, wei, new Uint8Array(MD_BYTES), dst),
        `${what} desc_init`,
      );
      const pd = this.pd(desc, null, what, attr);
      return this.finish(
        this.primitive(pd, what),
        [
          { arg: ARG_SRC, mem: this.memory(src, `${what} src`) },
          { arg: ARG_WEIGHTS, mem: this.memory(wei, `${what} weights`) },
          { arg: ARG_DST, mem: this.memory(dst, `${what} dst`) },
        ],
        this.implOf(pd),
      );
    };
    const rows = this.md([b * h * t, t], TAG_AB);
    const smDesc = new Uint8Array(OP_DESC_BYTES);
    check(
      this.lib.dnnl_softmax_forward_desc_init(smDesc, PROP_FORWARD_TRAINING, rows, 1),
      "softmax desc_init",
    );
    const smPd = this.pd(smDesc, null, "softmax");
    const smbDesc = new Uint8Array(OP_DESC_BYTES);
    check(this.lib.dnnl_softmax_backward_desc_init(smbDesc, rows, rows, 1), "softmax backward desc_init");
    const smbPd = this.pd(smbDesc, smPd, "softmax backward");
    const mem = (what: string) => this.memory(rows, what);
    plan = {
      scores: mm(qkvView, qkvViewT, tt, ptrOf(scaled), "attention q·kᵀ"),
      softmax: this.finish(
        this.primitive(smPd, "softmax"),
        [{ arg: ARG_SRC, mem: mem("softmax src") }, { arg: ARG_DST, mem: mem("softmax dst") }],
        this.implOf(smPd),
      ),
      context: mm(tt, qkvView, ctxView, null, "attention probs·v"),
      // Backward: dV = Pᵀ·dC, dP = dC·Vᵀ, dS = softmax'(P, dP), dQ = s·dS·K, dK = s·dSᵀ·Q.
      dV: mm(ttT, ctxView, qkvView, null, "attention dV"),
      dP: mm(ctxView, qkvViewT, tt, null, "attention dP"),
      dS: this.finish(
        this.primitive(smbPd, "softmax backward"),
        [
          { arg: ARG_DST, mem: mem("softmax backward dst") },
          { arg: ARG_DIFF_DST, mem: mem("softmax backward diff_dst") },
          { arg: ARG_DIFF_SRC, mem: mem("softmax backward diff_src") },
        ],
        this.implOf(smbPd),
      ),
      dQ: mm(tt, qkvView, qkvView, ptrOf(scaled), "attention dQ"),
      dK: mm(ttT, qkvView, qkvView, ptrOf(scaled), "attention dK"),
    };
    this.attnCache.set(key, plan);
    return plan;
  }

  /**
   * Multi-head self-attention without its projections, for inference: from `qkv` `[b, t, 3·d]` (timm's
   * fused layout: q, k, v, each as `heads` groups of `d/heads`) to the merged-heads context `[b, t, d]`
   * = softmax(q·kᵀ/√dh)·v per head. q, k and v are read in place (strided), no head split or transpose.
   * With `probs` (`[b, heads, t, t]`) the attention probabilities are kept there for the gradient.
   */
  attention(
    b: number,
    t: number,
    d: number,
    heads: number,
    qkv: Float32Array,
    ctx: Float32Array,
    probs?: Float32Array,
  ): void {
    const p = probs ?? this.scratchFor(b * heads * t * t * 4, "attention");
    this.attentionForwardWith(b, t, d, heads, qkv, ctx, p, p, (plan) => {
      this.run(plan.softmax, [p, p], "attention softmax");
    });
  }

  /**
   * The forward passes every attention shares: scores `q·kᵀ/√dh` into `scores`, then `softmax` (which
   * leaves the probabilities in `probs`), then `probs·v` into `ctx`.
   */
  private attentionForwardWith(
    b: number,
    t: number,
    d: number,
    heads: number,
    qkv: Float32Array,
    ctx: Float32Array,
    scores: Float32Array,
    probs: Float32Array,
    softmax: (plan: ReturnType<DnnlConvImpl["attentionPlan"]>) => void,
  ): void {
    if (b === 0 || t === 0) return;
    const plan = this.attentionPlan(b, t, d, heads);
    this.run(plan.scores, [qkv, qkv.subarray(d), scores], "attention q·kᵀ");
    softmax(plan);
    this.run(plan.context, [probs, qkv.subarray(2 * d), ctx], "attention probs·v");
  }

  /**
   * The backward passes every attention shares: dV = Pᵀ·dC, dP = dC·Vᵀ (into `dP`), then `softmaxBackward`
   * (returns the scores' gradient dS), then dQ = s·dS·K and dK = s·dSᵀ·Q, all straight into `dqkv`.
   */
  private attentionBackwardWith(
    b: number,
    t: number,
    d: number,
    heads: number,
    qkv: Float32Array,
    probs: Float32Array,
    dctx: Float32Array,
    dqkv: Float32Array,
    dP: Float32Array,
    softmaxBackward: (plan: ReturnType<DnnlConvImpl["attentionPlan"]>) => Float32Array,
  ): void {
    if (b === 0 || t === 0) return;
    const plan = this.attentionPlan(b, t, d, heads);
    this.run(plan.dV, [probs, dctx, dqkv.subarray(2 * d)], "attention dV");
    this.run(plan.dP, [dctx, qkv.subarray(2 * d), dP], "attention dP");
    const dS = softmaxBackward(plan);
    this.run(plan.dQ, [dS, qkv.subarray(d), dqkv], "attention dQ");
    this.run(plan.dK, [dS, qkv, dqkv.subarray(d)], "attention dK");
  }

  /**
   * Gradient of {@link DnnlConvImpl.attention} with respect to `qkv`, from the forward's `probs`
   * `[b, heads, t, t]` and the context gradient `dctx` `[b, t, d]`; writes all of `dqkv` `[b, t, 3·d]`.
   */
  attentionBackward(
    b: number,
    t: number,
    d: number,
    heads: number,
    qkv: Float32Array,
    probs: Float32Array,
    dctx: Float32Array,
    dqkv: Float32Array,
  ): void {
    const dS = this.scratchFor(b * heads * t * t * 4, "attention");
    const dP = this.scratchFor(b * heads * t * t * 4, "attentionGrad");
    this.attentionBackwardWith(b, t, d, heads, qkv, probs, dctx, dqkv, dP, (plan) => {
      this.run(plan.dS, [probs, dP, dS], "attention softmax backward");
      return dS;
    });
  }

  /**
   * {@link DnnlConvImpl.attention} with DynamicViT's token policy (`mask` `[b, t]`, 1 = kept: each query
   * attends to the kept keys and itself; see `policySoftmax`). The products run in oneDNN, the policy
   * softmax in JS. Writes the context to `ctx`. The gradient needs the probabilities (`probs`),
   * `exp(s − rowmax)` (`expScores`, both `[b, heads, t, t]`), the rows' normalisers (`rowInv`) and their
   * max's column (`rowArgmax`, both `[b, heads, t]`): give all four to keep them (training); without them
   * they go to reused scratch (inference).
   */
  maskedAttention(
    b: number,
    t: number,
    d: number,
    heads: number,
    io: { qkv: Float32Array; mask: Float32Array; ctx: Float32Array },
    kept?: MaskedAttentionSaved,
  ): void {
    const tt = b * heads * t * t * 4, rows = b * heads * t * 4;
    const k = kept ?? {
      probs: this.scratchFor(tt, "attention"),
      expScores: this.scratchFor(tt, "attentionGrad"),
      rowInv: this.scratchFor(rows, "rowInv"),
      rowArgmax: this.scratchFor(rows, "rowArgmax"),
    };
    this.attentionForwardWith(b, t, d, heads, io.qkv, io.ctx, k.expScores, k.probs, () => {
      policySoftmax(b, heads, t, io.mask, k.expScores, k.probs, k.rowInv, k.rowArgmax);
    });
  }

  /**
   * Gradient of {@link DnnlConvImpl.maskedAttention} with respect to `qkv` (all of `dqkv` `[b, t, 3·d]`) and
   * to the mask (`dmask` `[b, t]`), from what the forward kept.
   */
  maskedAttentionBackward(
    b: number,
    t: number,
    d: number,
    heads: number,
    io: {
      qkv: Float32Array;
      mask: Float32Array;
      dctx: Float32Array;
      dqkv: Float32Array;
      dmask: Float32Array;
    },
    kept: MaskedAttentionSaved,
  ): void {
    // dL/dP is turned into dL/dS in place.
    const g = this.scratchFor(b * heads * t * t * 4, "attentionGrad");
    this.attentionBackwardWith(b, t, d, heads, io.qkv, kept.probs, io.dctx, io.dqkv, g, () => {
      const { probs, expScores, rowInv, rowArgmax } = kept;
      policySoftmaxBackward(b, heads, t, io.mask, expScores, probs, rowInv, rowArgmax, g, io.dmask);
      return g;
    });
  }

  /** `y = x·Φ(x)` (exact GELU, `torch.nn.GELU()`), elementwise over equal-length arrays. */
  gelu(x: Float32Array, y: Float32Array): void {
    if (x.length === 0) return;
    this.run(this.eltwise(x.length, false), [x, y], "GELU forward");
  }

  /** `dx = dy·(Φ(x) + x·φ(x))`, the GELU gradient. */
  geluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array): void {
    if (x.length === 0) return;
    this.run(this.eltwise(x.length, true), [x, dy, dx], "GELU backward");
  }

  /**
   * A layer or batch normalization primitive (learned scale and shift, training statistics):
   * `data` dims/tag of the tensor, `c` the length of the scale/shift, `stat` dims of mean/variance.
   * Forward args: src, scale, shift, dst, mean, variance. Backward: src, mean, variance, diff_dst,
   * scale, shift, diff_src, diff_scale, diff_shift (oneDNN 2.6 insists on the shift, though the
   * gradients do not depend on it: callers pass the scale in its place).
   */
  private normalization(
    kind: "layer" | "batch",
    data: { dims: number[]; tag: number },
    c: number,
    stat: number[],
    eps: number,
    backward: boolean,
  ): Prim {
    const key = `${kind},${backward ? 1 : 0},${data.dims},${eps}`;
    let p = this.cache.get(key);
    if (p) return p;
    const md = this.md(data.dims, data.tag);
    const flags = NORM_USE_SCALE | NORM_USE_SHIFT;
    const what = `${kind} norm`;
    const statMd = this.md(stat, TAG_X);
    const init = (desc: Uint8Array<ArrayBuffer>, prop: number) => {
      const bwd = prop === PROP_BACKWARD, l = this.lib;
      if (kind === "layer") {
        return bwd
          ? l.dnnl_layer_normalization_backward_desc_init(desc, prop, md, md, statMd, eps, flags)
          : l.dnnl_layer_normalization_forward_desc_init(desc, prop, md, statMd, eps, flags);
      }
      return bwd
        ? l.dnnl_batch_normalization_backward_desc_init(desc, prop, md, md, eps, flags)
        : l.dnnl_batch_normalization_forward_desc_init(desc, prop, md, eps, flags);
    };
    const fdesc = new Uint8Array(OP_DESC_BYTES);
    check(init(fdesc, PROP_FORWARD_TRAINING), `${what} forward desc_init`);
    const fpd = this.pd(fdesc, null, `${what} forward`);
    const d: [number, number[], number] = [0, data.dims, data.tag];
    const vec = (arg: number): [number, number[], number] => [arg, [c], TAG_X];
    const st = (arg: number): [number, number[], number] => [arg, stat, TAG_X];
    if (!backward) {
      p = this.finish(
        this.primitive(fpd, `${what} forward`),
        this.plainMems([
          [ARG_SRC, d[1], d[2]],
          vec(ARG_SCALE),
          vec(ARG_SHIFT),
          [ARG_DST, d[1], d[2]],
          st(ARG_MEAN),
          st(ARG_VARIANCE),
        ]),
        this.implOf(fpd),
      );
    } else {
      const bdesc = new Uint8Array(OP_DESC_BYTES);
      check(init(bdesc, PROP_BACKWARD), `${what} backward desc_init`);
      const bpd = this.pd(bdesc, fpd, `${what} backward`);
      p = this.finish(
        this.primitive(bpd, `${what} backward`),
        this.plainMems([
          [ARG_SRC, d[1], d[2]],
          st(ARG_MEAN),
          st(ARG_VARIANCE),
          [ARG_DIFF_DST, d[1], d[2]],
          vec(ARG_SCALE),
          vec(ARG_SHIFT),
          [ARG_DIFF_SRC, d[1], d[2]],
          vec(ARG_DIFF_SCALE),
          vec(ARG_DIFF_SHIFT),
        ]),
        this.implOf(bpd),
      );
    }
    this.cache.set(key, p);
    return p;
  }

  private layerNormPrim(rows: number, d: number, eps: number, backward: boolean): Prim {
    return this.normalization("layer", { dims: [rows, d], tag: TAG_AB }, d, [rows], eps, backward);
  }

  private batchNormPrim(shape: number[], eps: number, backward: boolean): Prim {
    const [n, h, w, c] = shape;
    return this.normalization("batch", { dims: [n, c, h, w], tag: TAG_NHWC }, c, [c], eps, backward);
  }

  /**
   * Layer norm of `rows` rows of length `d` (biased variance, as `torch.nn.LayerNorm`):
   * `y = (x − mean)/√(var + eps)·w + b`; writes the per-row `mean` and `variance` (for the gradient).
   */
  layerNorm(
    rows: number,
    d: number,
    eps: number,
    x: Float32Array,
    w: Float32Array,
    b: Float32Array,
    y: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
  ): void {
    if (rows === 0 || d === 0) return;
    this.run(this.layerNormPrim(rows, d, eps, false), [x, w, b, y, mean, variance], "layer norm forward");
  }

  /** Gradients of {@link DnnlConvImpl.layerNorm}: `dx`, and `dw`/`db` (overwritten). */
  layerNormBackward(
    rows: number,
    d: number,
    eps: number,
    x: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    dx: Float32Array,
    dw: Float32Array,
    db: Float32Array,
  ): void {
    if (rows === 0 || d === 0) return;
    const args = [x, mean, variance, dy, w, w, dx, dw, db];
    this.run(this.layerNormPrim(rows, d, eps, true), args, "layer norm backward");
  }

  /**
   * Training-mode batch norm of an NHWC tensor `[n, h, w, c]` over all but the channel axis:
   * `y = (x − mean)/√(var + eps)·w + b` with the batch's `mean` and biased `variance` (written, `[c]`).
   */
  batchNorm(
    shape: number[],
    eps: number,
    x: Float32Array,
    w: Float32Array,
    b: Float32Array,
    y: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
  ): void {
    if (x.length === 0) return;
    this.run(this.batchNormPrim(shape, eps, false), [x, w, b, y, mean, variance], "batch norm forward");
  }

  /** Gradients of {@link DnnlConvImpl.batchNorm}: `dx`, and `dw`/`db` (overwritten). */
  batchNormBackward(
    shape: number[],
    eps: number,
    x: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    dx: Float32Array,
    dw: Float32Array,
    db: Float32Array,
  ): void {
    if (x.length === 0) return;
    const args = [x, mean, variance, dy, w, w, dx, dw, db];
    this.run(this.batchNormPrim(shape, eps, true), args, "batch norm backward");
  }

  /** The oneDNN implementation chosen for a case, e.g. "brg:avx512_core" (for logs and tests). */
  implementation(
    kind: "forward" | "backwardData" | "backwardWeights",
    ci: tf.backend_util.Conv2DInfo,
  ): string {
    if (kind === "forward") return this.getForward(ci, false, false).impl;
    if (kind === "backwardData") return this.getBackward("data", ci).impl;
    return this.getBackward("weights", ci).impl;
  }
}
