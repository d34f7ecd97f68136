/**
 * The native BLAS backend (`"native"`): the tfjs wasm backend with its heavy kernels (matrix
 * products, convolutions and their gradients) running in the system BLAS through Deno FFI.
 *
 * It is a second `BackendWasm` instance on the same WebAssembly module as the `"wasm"` backend
 * (the wasm kernels bind their functions per module, so both must share it), registered under the
 * tfjs name `"native"`; it gets every wasm kernel (including the training kernels from
 * {@link registerWasmTrainingKernels}) with the BLAS ones on top. Requires `--unstable-ffi` and FFI
 * permission; without them, or without a BLAS library, {@link loadNativeBackend} says why.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { BackendWasm } from "@tensorflow/tfjs-backend-wasm";
import { type Blas, loadBlas } from "./native/blas.ts";
import { openDnnlConv, type OpenDnnlConvResult } from "./native/dnnl.ts";
import {
  blasKernelConfigs,
  dnnlKernelConfigs,
  layoutKernelConfigs,
  sharingKernelConfigs,
} from "./native/kernels.ts";
import { registerWasmTrainingKernels } from "./wasm_kernels.ts";

/** The tfjs backend name the native backend registers under. */
export const NATIVE_TF_BACKEND = "native";

/** Options for {@link loadNativeBackend}. */
export interface NativeBackendOptions {
  /** BLAS threads (default: `BLAS_THREADS`, else the number of cores). */
  threads?: number;
}

/** Outcome of {@link loadNativeBackend}. */
export type NativeBackendResult = { ok: true; tfBackend: string } | { ok: false; reason: string };

/** What the native backend runs on, for logs and `run.json`. */
export interface NativeBackendStatus {
  /** Path of the BLAS library loaded. */
  library: string;
  /** BLAS threads in use (undefined where the library cannot report it). */
  threads: number | undefined;
  /** Kernels that run in BLAS. */
  blasKernels: string[];
  /**
   * How convolutions run: `"oneDNN <version> primitives"`, or `"im2col + GEMM"` with the reason
   * oneDNN's convolutions are not used.
   */
  convolution: string;
}

let registered: Promise<NativeBackendResult> | undefined;
let status: NativeBackendStatus | undefined;
let blasRef: Blas | undefined;

/** Reads `BLAS_THREADS`; undefined when unset, an error naming the variable when malformed. */
function threadsFromEnv(): number | undefined {
  let raw: string | undefined;
  try {
    raw = Deno.env.get("BLAS_THREADS");
  } catch {
    return undefined;
  }
  if (raw === undefined || raw.trim() === "") return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`BLAS_THREADS: expected a positive integer, got "${raw}"`);
  }
  return n;
}

function defaultThreads(): number {
  return threadsFromEnv() ?? Math.max(1, navigator.hardwareConcurrency ?? 1);
}

/** Initialises the tfjs wasm backend (without making it current) and returns it. */
async function wasmBackend(): Promise<BackendWasm> {
  const existing = tf.findBackend("wasm");
  if (existing) return existing as BackendWasm;
  const engine = tf.engine() as unknown as {
    initializeBackend?: (name: string) => { success: boolean | Promise<boolean> };
  };
  if (typeof engine.initializeBackend === "function") {
    await engine.initializeBackend("wasm").success;
  } else {
    const prev = tf.getBackend();
    await tf.setBackend("wasm");
    if (prev) await tf.setBackend(prev);
  }
  const b = tf.findBackend("wasm");
  if (!b) throw new Error("the tfjs wasm backend did not initialise");
  return b as BackendWasm;
}

/** The native backend: a BackendWasm whose tensor ids cannot collide with the wasm backend's. */
class NativeBackend extends BackendWasm {
  constructor(wasm: BackendWasm["wasm"]) {
    super(wasm);
    // Both backends register tensors by id in the same module: give this one its own id range.
    (this as unknown as { dataIdNextNumber: number }).dataIdNextNumber = 1 << 30;
  }
}

/**
 * oneDNN's convolution primitives when the GEMM library is oneDNN 2.x, unless `NATIVE_CONV=im2col`
 * asks for the im2col + GEMM lowering.
 */
function openConvolutions(blas: Blas): OpenDnnlConvResult {
  let mode: string | undefined;
  try {
    mode = Deno.env.get("NATIVE_CONV");
  } catch {
    mode = undefined;
  }
  if (mode !== undefined && mode !== "" && mode !== "dnnl" && mode !== "im2col") {
    throw new Error(`NATIVE_CONV: expected "dnnl" or "im2col", got ${JSON.stringify(mode)}`);
  }
  if (mode === "im2col") return { ok: false, reason: "NATIVE_CONV=im2col" };
  if (blas.kind !== "dnnl") return { ok: false, reason: `${blas.path} is not oneDNN` };
  return openDnnlConv(blas.file);
}

async function register(threads: number): Promise<NativeBackendResult> {
  const r = loadBlas();
  if (!r.ok) return { ok: false, reason: r.reason };
  blasRef = r.blas;
  r.blas.setThreads(threads);
  let wasm: BackendWasm;
  try {
    registerWasmTrainingKernels();
    wasm = await wasmBackend();
  } catch (e) {
    return {
      ok: false,
      reason: `the tfjs wasm backend it extends failed: ${e instanceof Error ? e.message : e}`,
    };
  }
  const wasmKernel = (name: string) => tf.getKernel(name, "wasm")?.kernelFunc;
  let conv: OpenDnnlConvResult;
  try {
    conv = openConvolutions(r.blas);
  } catch (e) {
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
  const blasConfigs = blasKernelConfigs(
    NATIVE_TF_BACKEND,
    r.blas,
    wasmKernel,
    conv.ok ? conv.conv : undefined,
  );
  const ours = [
    ...blasConfigs,
    ...sharingKernelConfigs(NATIVE_TF_BACKEND, wasmKernel),
    ...layoutKernelConfigs(NATIVE_TF_BACKEND, r.blas, wasmKernel),
    ...(conv.ok ? dnnlKernelConfigs(NATIVE_TF_BACKEND, conv.conv) : []),
  ];
  const overridden = new Set(ours.map((k) => k.kernelName));
  for (const k of tf.getKernelsForBackend("wasm")) {
    if (!overridden.has(k.kernelName)) tf.registerKernel({ ...k, backendName: NATIVE_TF_BACKEND });
  }
  // Our kernels fall back to the wasm ones, whose setup (binding the module's functions) tfjs only
  // runs when a backend with that kernel becomes current: keep it on ours.
  for (const k of ours) tf.registerKernel({ ...k, setupFunc: tf.getKernel(k.kernelName, "wasm")?.setupFunc });
  const module = wasm.wasm;
  tf.registerBackend(NATIVE_TF_BACKEND, () => new NativeBackend(module), 1);
  status = {
    library: r.blas.path,
    threads: r.blas.getThreads(),
    blasKernels: blasConfigs.map((k) => k.kernelName),
    convolution: conv.ok ? `oneDNN ${conv.conv.version} primitives` : `im2col + GEMM (${conv.reason})`,
  };
  return { ok: true, tfBackend: NATIVE_TF_BACKEND };
}

/**
 * Registers the native backend with tfjs if the system BLAS can be loaded (once; later calls return
 * the first outcome and only adjust the thread count). Never throws for a missing library.
 *
 * @example
 * ```ts
 * const r = await loadNativeBackend({ threads: 2 });
 * if (r.ok) await tf.setBackend(r.tfBackend); else console.log(r.reason);
 * ```
 */
export async function loadNativeBackend(options: NativeBackendOptions = {}): Promise<NativeBackendResult> {
  if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 1)) {
    throw new Error(
      `loadNativeBackend: threads must be a positive integer, got ${JSON.stringify(options.threads)}`,
    );
  }
  let threads: number;
  try {
    threads = options.threads ?? defaultThreads();
  } catch (e) {
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
  if (!registered) registered = register(threads);
  const r = await registered;
  if (r.ok && options.threads !== undefined) setNativeThreads(options.threads);
  return r;
}

/**
 * Sets the BLAS thread count of the loaded native backend.
 *
 * @example
 * ```ts
 * setNativeThreads(1); // e.g. to compare single-thread speed
 * ```
 */
export function setNativeThreads(threads: number): void {
  if (!blasRef) {
    throw new Error("setNativeThreads: the native backend is not loaded (call loadNativeBackend first)");
  }
  blasRef.setThreads(threads);
  if (status) status.threads = blasRef.getThreads() ?? threads;
}

/**
 * What the native backend runs on, or undefined before it loaded.
 *
 * @example
 * ```ts
 * await loadNativeBackend();
 * console.log(nativeBackendStatus()?.library); // "libopenblas.so.0"
 * ```
 */
export function nativeBackendStatus(): NativeBackendStatus | undefined {
  return status ? { ...status, blasKernels: [...status.blasKernels] } : undefined;
}

export {
  attentionKernel,
  batchNormTrainKernel,
  geluLean,
  layerNormLean,
  maskedAttentionKernel,
  recordingGradients,
} from "./native/fused_ops.ts";
