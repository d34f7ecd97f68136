/**
 * Test helpers shared by every suite: run a test once per backend, relative error, leak checks.
 *
 * ```ts
 * forEachBackend("conv2d() gradient matches", async (tf, backend) => { ... });
 * ```
 * registers `conv2d() gradient matches [wasm]` and `... [cpu]` (and `[native]` when that backend
 * loads). Set `TEST_BACKENDS=wasm` to restrict.
 */
import * as tf from "@tensorflow/tfjs-core";
import { type BackendName, initBackend, loadNativeBackend, probeWebGPU } from "../lib/backend/mod.ts";

export type TF = typeof tf;

const nativeAvailable = (await loadNativeBackend()).ok;
const gpuProbe = await probeWebGPU();

/**
 * Why the webgpu backend is not tested here (no adapter at all), or undefined when it is: a software
 * adapter (Mesa llvmpipe in CI) counts, since correctness is what the tests check.
 */
export const WEBGPU_SKIP_REASON: string | undefined = gpuProbe.ok ? undefined : gpuProbe.reason;

/**
 * Backends the suites run on: wasm and cpu always, native when its BLAS loads. `webgpu` joins only the
 * tests that ask for it (`{ gpu: true }`: the parity cases and `webgpu_test.ts`), since the software adapter
 * of CI is slow; `TEST_BACKENDS=webgpu` runs every suite on it.
 */
export const TEST_BACKENDS: BackendName[] = (() => {
  const env = Deno.env.get("TEST_BACKENDS");
  if (env) return env.split(",").map((s) => s.trim()) as BackendName[];
  return [...(nativeAvailable ? ["native"] as const : []), "wasm", "cpu"];
})();

/** The webgpu backend when an adapter exists (and `TEST_BACKENDS` does not exclude it), else nothing. */
export const GPU_TEST_BACKENDS: BackendName[] = (() => {
  const env = Deno.env.get("TEST_BACKENDS");
  if (env) return TEST_BACKENDS.includes("webgpu") ? ["webgpu"] : [];
  return gpuProbe.ok ? ["webgpu"] : [];
})();
if (WEBGPU_SKIP_REASON && !Deno.env.get("TEST_BACKENDS")) {
  console.warn(`tests: skipping the webgpu backend: ${WEBGPU_SKIP_REASON}`);
}

/**
 * Registers `fn` as one Deno test per backend in {@link TEST_BACKENDS}, plus webgpu with `gpu: true` where
 * an adapter exists.
 */
export function forEachBackend(
  name: string,
  fn: (t: TF, backend: BackendName) => void | Promise<void>,
  options: { backends?: BackendName[]; ignore?: boolean; gpu?: boolean } = {},
): void {
  const enabled = [...TEST_BACKENDS, ...(options.gpu ? GPU_TEST_BACKENDS : [])];
  const wanted = [...(options.backends ?? TEST_BACKENDS), ...(options.gpu ? GPU_TEST_BACKENDS : [])];
  for (const backend of new Set(wanted)) {
    if (!enabled.includes(backend)) continue;
    Deno.test({
      name: `${name} [${backend}]`,
      ignore: options.ignore,
      // tfjs keeps module-level timers/ops around; the tests check tensors themselves.
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        await initBackend(backend, { log: false });
        await fn(tf, backend);
      },
    });
  }
}

/** `‖a − b‖ / ‖b‖` over flat arrays (b is the reference). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relErr: lengths differ (${a.length} vs ${b.length})`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** Asserts `relErr(actual, expected) < tol`, with a message naming `what`. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  const e = relErr(actual, expected);
  if (!(e < tol)) throw new Error(`${what}: relative error ${e.toExponential(3)} is not below ${tol}`);
}

/**
 * Runs `fn` (which may create and dispose tensors) and asserts that `tf.memory().numTensors` is the
 * same afterwards. Returns what `fn` returned.
 */
export async function assertNoLeak<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
  const before = tf.memory().numTensors;
  const out = await fn();
  const after = tf.memory().numTensors;
  if (after !== before) throw new Error(`${what}: tensor leak, numTensors ${before} -> ${after}`);
  return out;
}

/** Seeded uniform random numbers in [-1, 1) (mulberry32), for reproducible test inputs. */
export function seededRandom(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}
