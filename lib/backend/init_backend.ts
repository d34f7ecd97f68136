/**
 * Backend selection: one call, {@link initBackend}, picks and initialises the tfjs backend that the
 * whole library computes on.
 *
 * Order for `"auto"`: `"webgpu"` on a hardware GPU adapter (Metal, Vulkan, D3D12; never on a software
 * rasteriser such as Mesa llvmpipe/lavapipe or SwiftShader, which is slower than the CPU backends),
 * then tfjs-node (native TensorFlow, where its binding loads), then `"native"` (tfjs wasm with its heavy
 * kernels in the system BLAS through Deno FFI, where the BLAS loads), then `"wasm"` (embedded, always
 * available offline), never the slow pure-JS `"cpu"` unless asked for.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
// tfjs-core alone registers no gradients, and its ESM gradient files do not load in Deno (extension-less
// imports); the @tensorflow/tfjs union package bundles them and registers them on the same tfjs-core.
import "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-cpu";
import "@tensorflow/tfjs-backend-wasm";
import { registerWasmTrainingKernels } from "./wasm_kernels.ts";
import { loadNativeBackend, nativeBackendStatus } from "./native.ts";
import { formatAdapter, loadWebGPUBackend, probeWebGPU, type WebGPUAdapterReport } from "./webgpu.ts";

/** Backends that {@link initBackend} understands. */
export type BackendChoice = "auto" | "webgpu" | "node" | "native" | "wasm" | "cpu";

/** The backends a choice can resolve to. */
export type BackendName = Exclude<BackendChoice, "auto">;

/** What {@link initBackend} chose and why. */
export interface BackendInfo {
  /** The backend in use, in our naming (`"native"` is tfjs' `"wasm"` with BLAS kernels). */
  name: BackendName;
  /** The tfjs backend name underneath (`tf.getBackend()`). */
  tfBackend: string;
  /** Why this backend was chosen, in a few words (the details of the rejected ones are in `rejected`). */
  reason: string;
  /** One short sentence for logs and notebooks, e.g. `"native: oneDNN 2.6.3, 2 threads"`. */
  summary: string;
  /** The backends that were tried and why they were not used (the full error text). */
  rejected: { name: BackendName; reason: string }[];
  /** With `"webgpu"`: the adapter (name, software or not, limits). */
  adapter?: WebGPUAdapterReport;
}

/** Valid choices, for argument validation. */
export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "webgpu", "node", "native", "wasm", "cpu"];

let current: BackendInfo | undefined;

/** Options of {@link initBackend}. */
export interface InitBackendOptions {
  /** Log the choice to the console as one short line (default true). */
  log?: boolean;
  /**
   * Also log why each backend tried before it was rejected (default: the `CNNVIT_VERBOSE` environment
   * variable is `1`/`true`). The reasons are always in the returned `rejected`.
   */
  verbose?: boolean;
  /** Threads for the native BLAS backend (default: `BLAS_THREADS` or the number of cores). */
  threads?: number;
}

/**
 * Reads the backend choice from the `TFJS_BACKEND` environment variable, or `"auto"`.
 *
 * @example
 * ```ts
 * const choice = backendFromEnv(); // "auto" unless TFJS_BACKEND is set
 * ```
 */
export function backendFromEnv(): BackendChoice {
  let raw: string | undefined;
  try {
    raw = Deno.env.get("TFJS_BACKEND");
  } catch {
    raw = undefined; // no --allow-env
  }
  if (raw === undefined || raw === "") return "auto";
  return parseBackendChoice(raw, "TFJS_BACKEND");
}

/**
 * Validates a backend name, with an error that quotes the bad value and lists the valid ones.
 *
 * @example
 * ```ts
 * parseBackendChoice("wasm", "--backend"); // "wasm"
 * ```
 */
export function parseBackendChoice(raw: string, source = "backend"): BackendChoice {
  const v = raw.trim().toLowerCase();
  if ((BACKEND_CHOICES as readonly string[]).includes(v)) return v as BackendChoice;
  throw new Error(
    `${source}: unknown backend "${raw}"; expected one of ${BACKEND_CHOICES.map((c) => `"${c}"`).join(", ")}`,
  );
}

async function tryNode(): Promise<string | undefined> {
  // The binding is optional: it only exists where tfjs-node's install script could download
  // libtensorflow. A dynamic import keeps it out of the module graph otherwise.
  const spec = "@tensorflow/tfjs-node";
  try {
    await import(spec);
  } catch (e) {
    const how = "`deno install --allow-scripts=npm:@tensorflow/tfjs-node` where a network exists";
    // The usual case: the package is there but its install script (which downloads libtensorflow) never
    // ran, as deno.json's allowScripts wants. Optional, so said in a few words.
    if (/tfjs_binding\.node/.test(firstLine(e))) return `tfjs-node not installed (optional: ${how})`;
    return `tfjs-node did not load (${firstLine(e)}); install it with ${how}`;
  }
  if (tf.findBackend("tensorflow") === null) return "tfjs-node loaded but registered no 'tensorflow' backend";
  return undefined;
}

/**
 * One short, calm sentence saying what computes: the backend and what runs underneath.
 *
 * @example
 * ```ts
 * const info = await initBackend("wasm", { log: false });
 * backendSummary(info.name); // "wasm: embedded WebAssembly"
 * ```
 */
export function backendSummary(name: BackendName): string {
  switch (name) {
    case "node":
      return "node: TensorFlow C library (tfjs-node)";
    case "native": {
      const s = nativeBackendStatus();
      if (!s) return "native: BLAS through FFI";
      const dnnl = /^oneDNN (\S+)/.exec(s.convolution);
      const engine = dnnl ? `oneDNN ${dnnl[1]}` : s.library.split("/").pop()!;
      return `native: ${engine}${s.threads === undefined ? "" : `, ${plural(s.threads, "thread")}`}`;
    }
    case "wasm":
      return "wasm: embedded WebAssembly";
    case "cpu":
      return "cpu: plain JavaScript (slow; for checks only)";
    case "webgpu":
      return "webgpu: the GPU through WebGPU";
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function verboseFromEnv(): boolean {
  try {
    return /^(1|true|yes)$/i.test(Deno.env.get("CNNVIT_VERBOSE") ?? "");
  } catch {
    return false;
  }
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split("\n")[0].slice(0, 200);
}

async function activate(name: BackendName, threads?: number, auto = false): Promise<string | undefined> {
  switch (name) {
    case "webgpu": {
      if (auto) {
        // Probe first: auto must not create a device (or load the package) for a software adapter.
        const p = await probeWebGPU();
        if (!p.ok) return p.reason;
        if (p.report.software) {
          return `adapter ${formatAdapter(p.report)} is a software rasteriser, slower than the CPU ` +
            `backends; use TFJS_BACKEND=webgpu to force it`;
        }
      }
      const r = await loadWebGPUBackend();
      if (!r.ok) return r.reason;
      if (!(await tf.setBackend(r.tfBackend))) return `tf.setBackend('${r.tfBackend}') failed`;
      return undefined;
    }
    case "node": {
      const why = await tryNode();
      if (why) return why;
      if (!(await tf.setBackend("tensorflow"))) return "tf.setBackend('tensorflow') failed";
      return undefined;
    }
    case "native": {
      const r = await loadNativeBackend({ threads });
      if (!r.ok) return r.reason;
      if (!(await tf.setBackend(r.tfBackend))) return `tf.setBackend('${r.tfBackend}') failed`;
      return undefined;
    }
    case "wasm": {
      registerWasmTrainingKernels();
      if (!(await tf.setBackend("wasm"))) {
        return "tf.setBackend('wasm') failed to initialise the WebAssembly module";
      }
      return undefined;
    }
    case "cpu":
      if (!(await tf.setBackend("cpu"))) return "tf.setBackend('cpu') failed";
      // The cpu backend greets Node users with a banner recommending tfjs-node; initBackend already
      // logs the choice and the reason.
      (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
      return undefined;
  }
}

/**
 * Initialises the compute backend and returns what was chosen and why.
 *
 * `choice` defaults to the `TFJS_BACKEND` environment variable, then `"auto"`. An explicit
 * choice that cannot be loaded throws with the reason; `"auto"` falls back and records why in
 * `rejected`. It logs one short line (`backend native: oneDNN 2.6.3, 2 threads`); with `verbose`
 * (or `CNNVIT_VERBOSE=1`) also why each backend before it was not used.
 *
 * @example
 * ```ts
 * const info = await initBackend("wasm");
 * console.log(info.name, info.reason);
 * ```
 */
export async function initBackend(
  choice: BackendChoice = backendFromEnv(),
  options: InitBackendOptions = {},
): Promise<BackendInfo> {
  const log = options.log ?? true;
  const rejected: BackendInfo["rejected"] = [];
  let info: BackendInfo | undefined;
  if (choice === "auto") {
    for (const name of ["webgpu", "node", "native", "wasm"] as const) {
      const why = await activate(name, options.threads, true);
      if (why === undefined) {
        info = {
          name,
          tfBackend: tf.getBackend(),
          reason: rejected.length === 0
            ? `auto: ${name} is the first choice and loaded`
            : `auto: ${name} (${rejected.map((r) => r.name).join(", ")} unavailable)`,
          summary: backendSummary(name),
          rejected,
        };
        break;
      }
      rejected.push({ name, reason: why });
    }
    if (!info) {
      throw new Error(`initBackend("auto"): no backend could be loaded: ${JSON.stringify(rejected)}`);
    }
  } else {
    parseBackendChoice(choice, "initBackend");
    const why = await activate(choice, options.threads);
    if (why !== undefined) throw new Error(`initBackend("${choice}"): ${why}`);
    info = {
      name: choice,
      tfBackend: tf.getBackend(),
      reason: `requested "${choice}"`,
      summary: backendSummary(choice),
      rejected,
    };
  }
  if (info.name === "webgpu") {
    const p = await probeWebGPU();
    if (p.ok) {
      info.adapter = p.report;
      info.summary = `webgpu: ${p.report.name}${
        p.report.software ? " (a software adapter, slower than the CPU)" : ""
      }`;
    }
  }
  current = info;
  if (log) {
    console.log(`backend ${info.summary}`);
    if (options.verbose ?? verboseFromEnv()) {
      console.log(`  chosen: ${info.reason} (tfjs '${info.tfBackend}')`);
      for (const r of info.rejected) console.log(`  ${r.name} not used: ${r.reason}`);
    }
    if (info.adapter) console.log(`  WebGPU adapter ${formatAdapter(info.adapter)}`);
  }
  return info;
}

/**
 * The backend chosen by the last {@link initBackend} call, or undefined before the first.
 *
 * @example
 * ```ts
 * await initBackend("cpu", { log: false });
 * currentBackend()?.name; // "cpu"
 * ```
 */
export function currentBackend(): BackendInfo | undefined {
  return current;
}
