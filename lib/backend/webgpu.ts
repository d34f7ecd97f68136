/**
 * The WebGPU backend (`"webgpu"`): tfjs-backend-webgpu on Deno's `navigator.gpu` (wgpu underneath:
 * Metal on macOS, Vulkan or GL on Linux, D3D12 on Windows).
 *
 * {@link probeWebGPU} asks for an adapter and describes it (vendor, architecture, description, the limits
 * that bound a tensor) and whether it is a software rasteriser (Mesa llvmpipe/lavapipe/softpipe, SwiftShader,
 * WARP): `initBackend("auto")` uses WebGPU only on a hardware adapter. {@link loadWebGPUBackend} registers
 * the tfjs backend on that adapter with three guards tfjs-webgpu lacks:
 *
 * - a tensor larger than the adapter's `maxStorageBufferBindingSize` (or `maxBufferSize`) throws a
 *   {@link GpuMemoryError} naming its shape when it is allocated (tfjs-webgpu would bind it anyway and
 *   silently compute zeros);
 * - a GPU error (out of memory, validation) or a lost device is recorded from the device's events and
 *   thrown by the next read of tensor data, so a step never returns numbers computed on invalid buffers;
 * - {@link withGpuErrorScope} runs a step inside WebGPU error scopes and throws a {@link GpuMemoryError}
 *   with the caller's context (e.g. the batch size) when the device ran out of memory.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { registerWebGPUTrainingKernels } from "./webgpu_kernels.ts";

/** The tfjs backend name of the WebGPU backend. */
export const WEBGPU_TF_BACKEND = "webgpu";

/** What the WebGPU adapter is, for logs, benchmarks and `run.json`. */
export interface WebGPUAdapterReport {
  /** Vendor (a name, or the PCI/Khronos vendor id as a string: `"65541"` is Mesa). */
  vendor: string;
  architecture: string;
  /** Device id as reported (often `"0"` on GL). */
  device: string;
  /** Driver's description, e.g. `"Apple M1"`, `"NVIDIA GeForce RTX 3060"`, `"llvmpipe (LLVM 15.0.6, 256 bits)"`. */
  description: string;
  /** True for software rasterisers (CPU emulation of a GPU). */
  software: boolean;
  /** Why {@link software} was decided (the flag or the name that matched). */
  softwareReason?: string;
  /** Short name for tables: the description, else vendor/architecture. */
  name: string;
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
  };
}

/** Outcome of {@link probeWebGPU}. */
export type WebGPUProbe = { ok: true; adapter: GPUAdapter; report: WebGPUAdapterReport } | {
  ok: false;
  reason: string;
};

/** Names of software adapters (matched case-insensitively against description, device, architecture, vendor). */
const SOFTWARE_NAMES = /llvmpipe|lavapipe|softpipe|swiftshader|swrast|microsoft basic render|\bwarp\b/i;

/**
 * Decides from adapter info whether an adapter is a software rasteriser; returns the reason, or
 * undefined for hardware.
 *
 * @example
 * ```ts
 * softwareAdapterReason({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" }); // 'name "llvmpipe (...)"'
 * softwareAdapterReason({ description: "Apple M1" }); // undefined
 * ```
 */
export function softwareAdapterReason(
  info: { vendor?: string; architecture?: string; device?: string; description?: string },
  isFallbackAdapter = false,
): string | undefined {
  for (const s of [info.description, info.device, info.architecture, info.vendor]) {
    if (s && SOFTWARE_NAMES.test(s)) return `software rasteriser "${s}"`;
  }
  if (isFallbackAdapter) return "the adapter reports isFallbackAdapter (a CPU implementation)";
  return undefined;
}

function describe(adapter: GPUAdapter): WebGPUAdapterReport {
  const info = (adapter as unknown as { info?: Record<string, unknown> }).info ?? {};
  const str = (k: string) => (typeof info[k] === "string" ? info[k] as string : "");
  const fallback = info.isFallbackAdapter === true ||
    (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const base = {
    vendor: str("vendor"),
    architecture: str("architecture"),
    device: str("device"),
    description: str("description"),
  };
  const softwareReason = softwareAdapterReason(base, fallback);
  return {
    ...base,
    software: softwareReason !== undefined,
    ...(softwareReason ? { softwareReason } : {}),
    name: base.description || [base.vendor, base.architecture].filter((s) => s).join(" ") ||
      "unnamed adapter",
    limits: {
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
    },
  };
}

let probed: Promise<WebGPUProbe> | undefined;

/**
 * Asks `navigator.gpu` for a high-performance adapter (once per process) and describes it.
 *
 * @example
 * ```ts
 * const p = await probeWebGPU();
 * if (p.ok) console.log(p.report.name, p.report.software ? "(software)" : "");
 * ```
 */
export function probeWebGPU(): Promise<WebGPUProbe> {
  probed ??= (async (): Promise<WebGPUProbe> => {
    const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
    if (!gpu) return { ok: false, reason: "navigator.gpu is missing (this runtime has no WebGPU)" };
    let adapter: GPUAdapter | null;
    try {
      adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    } catch (e) {
      return { ok: false, reason: `navigator.gpu.requestAdapter() failed: ${firstLine(e)}` };
    }
    if (!adapter) {
      return {
        ok: false,
        reason: "navigator.gpu.requestAdapter() returned no adapter (no GPU driver: on Linux install a " +
          "Vulkan driver, e.g. mesa-vulkan-drivers, or Mesa's EGL: libegl-mesa0 libgl1-mesa-dri)",
      };
    }
    return { ok: true, adapter, report: describe(adapter) };
  })();
  return probed;
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split("\n")[0].slice(0, 200);
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * A tensor did not fit the GPU: larger than the adapter allows for one buffer, or the device ran out of
 * memory. The message names the tensor's shape or the caller's context (batch size).
 */
export class GpuMemoryError extends Error {
  override name = "GpuMemoryError";
}

/** A GPU error recorded from the device (uncaptured error or loss). */
interface DeviceFault {
  kind: "out-of-memory" | "validation" | "internal" | "lost";
  message: string;
}

/** The slice of tfjs-webgpu's backend these guards touch. */
interface WebGPUBackendLike extends tf.KernelBackend {
  device: GPUDevice;
  tensorMap: { get(dataId: object): { dtype: tf.DataType; shape: number[]; resource?: unknown } };
  uploadToGPU(dataId: object): void;
  submitQueue(): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  read(dataId: object): Promise<tf.backend_util.BackendValues>;
  readSync(dataId: object): tf.backend_util.BackendValues;
  bufferManager: { freeBuffers: Map<string, GPUBuffer[]>; numBytesAllocated: number; numFreeBuffers: number };
}

let state: { report: WebGPUAdapterReport; fault?: DeviceFault } | undefined;
let loading: Promise<WebGPULoadResult> | undefined;

/** Outcome of {@link loadWebGPUBackend}. */
export type WebGPULoadResult = { ok: true; tfBackend: string; report: WebGPUAdapterReport } | {
  ok: false;
  reason: string;
};

function faultError(f: DeviceFault): Error {
  const msg = f.kind === "lost"
    ? `webgpu: the GPU device was lost (${f.message}); restart the process`
    : `webgpu: a GPU ${f.kind} error occurred (${f.message}); results computed since are invalid`;
  return f.kind === "out-of-memory" ? new GpuMemoryError(msg + ". Reduce the batch size.") : new Error(msg);
}

function bytesPerElement(dtype: tf.DataType): number {
  return dtype === "complex64" ? 8 : 4; // tfjs-webgpu stores bool and int32 as 32-bit
}

function guard(backend: WebGPUBackendLike, report: WebGPUAdapterReport): void {
  const limit = Math.min(report.limits.maxStorageBufferBindingSize, report.limits.maxBufferSize);
  const upload = backend.uploadToGPU.bind(backend);
  backend.uploadToGPU = (dataId) => {
    const d = backend.tensorMap.get(dataId);
    if (d && d.resource == null) {
      const bytes = bytesPerElement(d.dtype) * d.shape.reduce((a, b) => a * b, 1);
      if (bytes > limit) {
        throw new GpuMemoryError(
          `webgpu: a ${d.dtype} tensor of shape [${d.shape.join(", ")}] needs ${mib(bytes)}, above the ` +
            `${
              mib(limit)
            } one buffer may hold on "${report.name}" (maxStorageBufferBindingSize); reduce the ` +
            `batch size (findBatchSize searches the largest that fits)`,
        );
      }
    }
    upload(dataId);
  };
  const read = backend.read.bind(backend);
  backend.read = async (dataId) => {
    const values = await read(dataId);
    if (state?.fault) throw faultError(state.fault);
    return values;
  };
  const readSync = backend.readSync.bind(backend);
  backend.readSync = (dataId) => {
    const onGpu = backend.tensorMap.get(dataId)?.resource != null;
    let values: tf.backend_util.BackendValues;
    try {
      values = readSync(dataId);
    } catch (e) {
      if (!onGpu) throw e;
      // tfjs-webgpu reads synchronously through a 2D canvas, which Deno does not have.
      throw new Error(
        `webgpu: dataSync()/arraySync() cannot read GPU data in Deno (${firstLine(e)}); use await data() ` +
          "or await array()",
      );
    }
    if (state?.fault) throw faultError(state.fault);
    return values;
  };
}

/**
 * Registers and initialises the `"webgpu"` tfjs backend on the adapter {@link probeWebGPU} found, with
 * the guards described in the module doc. Does not switch to it (`tf.setBackend("webgpu")` does).
 *
 * @example
 * ```ts
 * const r = await loadWebGPUBackend();
 * if (r.ok) await tf.setBackend(r.tfBackend);
 * ```
 */
export function loadWebGPUBackend(): Promise<WebGPULoadResult> {
  loading ??= (async (): Promise<WebGPULoadResult> => {
    const probe = await probeWebGPU();
    if (!probe.ok) return probe;
    let mod: typeof import("@tensorflow/tfjs-backend-webgpu");
    try {
      mod = await import("@tensorflow/tfjs-backend-webgpu");
    } catch (e) {
      return { ok: false, reason: `@tensorflow/tfjs-backend-webgpu did not load (${firstLine(e)})` };
    }
    const { adapter, report } = probe;
    registerWebGPUTrainingKernels(WEBGPU_TF_BACKEND);
    // The package registers a factory of its own (priority 3, above wasm) on import; ours reuses the
    // adapter probed above, keeps the default backend order, and adds the guards.
    tf.removeBackend(WEBGPU_TF_BACKEND);
    tf.registerBackend(WEBGPU_TF_BACKEND, async () => {
      const features: GPUFeatureName[] = adapter.features.has("timestamp-query") ? ["timestamp-query"] : [];
      const l = adapter.limits;
      const device = await adapter.requestDevice({
        requiredFeatures: features,
        requiredLimits: {
          maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
          maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
          maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
          maxBufferSize: l.maxBufferSize,
          maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
          maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        },
      });
      state = { report };
      device.addEventListener("uncapturederror", (ev) => {
        const err = (ev as GPUUncapturedErrorEvent).error;
        const kind = err instanceof GPUOutOfMemoryError
          ? "out-of-memory"
          : err instanceof GPUValidationError
          ? "validation"
          : "internal";
        state!.fault ??= { kind, message: firstLine(err.message) };
      });
      device.lost.then((info) => {
        if (state && !state.fault) {
          state.fault = { kind: "lost", message: info.message || String(info.reason) };
        }
      });
      const info = (adapter as unknown as { info?: GPUAdapterInfo }).info;
      const backend = new mod.WebGPUBackend(device, info) as unknown as WebGPUBackendLike;
      guard(backend, report);
      return backend as unknown as tf.KernelBackend;
    }, 0);
    try {
      // Initialise now so that a device that cannot be created is reported here, not at first use.
      const prev = tf.getBackend();
      if (!(await tf.setBackend(WEBGPU_TF_BACKEND))) {
        return { ok: false, reason: `the WebGPU device on "${report.name}" could not be created` };
      }
      if (prev && prev !== WEBGPU_TF_BACKEND) await tf.setBackend(prev);
    } catch (e) {
      return { ok: false, reason: `the WebGPU device on "${report.name}" failed: ${firstLine(e)}` };
    }
    return { ok: true, tfBackend: WEBGPU_TF_BACKEND, report };
  })();
  return loading;
}

/**
 * The adapter the `"webgpu"` backend runs on, or undefined before {@link loadWebGPUBackend} succeeded.
 *
 * @example
 * ```ts
 * webgpuAdapter()?.name; // "llvmpipe (LLVM 15.0.6, 256 bits)"
 * ```
 */
export function webgpuAdapter(): WebGPUAdapterReport | undefined {
  return state?.report;
}

/**
 * One line describing an adapter for logs: name, software or hardware, vendor/architecture and limits.
 *
 * @example
 * ```ts
 * console.log(formatAdapter(report)); // 'llvmpipe (LLVM 15.0.6, 256 bits) [SOFTWARE: ...] vendor 65541, ...'
 * ```
 */
export function formatAdapter(r: WebGPUAdapterReport): string {
  return `"${r.name}" ${r.software ? `[SOFTWARE: ${r.softwareReason}]` : "[hardware]"}, vendor ` +
    `"${r.vendor}", architecture "${r.architecture || "-"}", description "${r.description || "-"}"; ` +
    `maxBufferSize ${mib(r.limits.maxBufferSize)}, maxStorageBufferBindingSize ` +
    `${mib(r.limits.maxStorageBufferBindingSize)}, maxComputeWorkgroupStorageSize ` +
    `${r.limits.maxComputeWorkgroupStorageSize} B`;
}

/** Submits the commands tfjs-webgpu has recorded but not yet sent. */
function flush(backend: WebGPUBackendLike): void {
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  backend.submitQueue();
}

function webgpuBackend(): WebGPUBackendLike | undefined {
  if (tf.getBackend() !== WEBGPU_TF_BACKEND) return undefined;
  return tf.backend() as unknown as WebGPUBackendLike;
}

/**
 * Runs `fn` on the WebGPU device inside error scopes and waits for the GPU to finish it; a GPU
 * out-of-memory (or validation) error, or a {@link GpuMemoryError} from the buffer guard, is rethrown as
 * a {@link GpuMemoryError} that starts with `context` (e.g. `"training step at batch size 256"`). On other
 * backends it just runs `fn`.
 *
 * @example
 * ```ts
 * await withGpuErrorScope("training step at batch size 64", () => step(64));
 * ```
 */
export async function withGpuErrorScope<T>(context: string, fn: () => T): Promise<T> {
  const backend = webgpuBackend();
  if (!backend) return fn();
  const device = backend.device;
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  let out: T;
  try {
    out = fn();
  } catch (e) {
    await device.popErrorScope();
    await device.popErrorScope();
    if (e instanceof GpuMemoryError) throw new GpuMemoryError(`${context}: ${e.message}`);
    throw e;
  }
  flush(backend);
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  await device.queue.onSubmittedWorkDone();
  if (oom) throw new GpuMemoryError(`${context}: the GPU ran out of memory (${firstLine(oom.message)})`);
  if (validation) {
    throw new GpuMemoryError(
      `${context}: the GPU rejected the work (${
        firstLine(validation.message)
      }); usually a buffer above the ` +
        `adapter's limits`,
    );
  }
  return out;
}

/**
 * Destroys the GPU buffers tfjs-webgpu keeps pooled for reuse (it never frees a buffer size it saw once,
 * so trying many batch sizes holds memory for each). Returns the bytes released. No-op on other backends.
 *
 * @example
 * ```ts
 * const freed = releasePooledGpuBuffers();
 * ```
 */
export function releasePooledGpuBuffers(): number {
  const backend = webgpuBackend();
  if (!backend) return 0;
  flush(backend);
  const bm = backend.bufferManager;
  let freed = 0;
  for (const list of bm.freeBuffers.values()) {
    for (const b of list) {
      freed += b.size;
      b.destroy();
    }
    list.length = 0;
  }
  bm.numBytesAllocated -= freed;
  bm.numFreeBuffers = 0;
  return freed;
}
