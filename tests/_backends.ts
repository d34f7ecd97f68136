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
import { type BackendName, initBackend, loadNativeBackend } from "../lib/backend/mod.ts";

export type TF = typeof tf;

const nativeAvailable = (await loadNativeBackend()).ok;

/** Backends the suites run on: wasm and cpu always, native when its BLAS loads. */
export const TEST_BACKENDS: BackendName[] = (() => {
  const env = Deno.env.get("TEST_BACKENDS");
  if (env) return env.split(",").map((s) => s.trim()) as BackendName[];
  return nativeAvailable ? ["native", "wasm", "cpu"] : ["wasm", "cpu"];
})();

/** Registers `fn` as one Deno test per backend in {@link TEST_BACKENDS}. */
export function forEachBackend(
  name: string,
  fn: (t: TF, backend: BackendName) => void | Promise<void>,
  options: { backends?: BackendName[]; ignore?: boolean } = {},
): void {
  for (const backend of options.backends ?? TEST_BACKENDS) {
    if (!TEST_BACKENDS.includes(backend)) continue;
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
