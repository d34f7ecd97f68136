/**
 * The system BLAS through Deno FFI: just `cblas_sgemm` and the thread-count controls.
 *
 * Looks for OpenBLAS (Debian/Ubuntu `libopenblas0`, Fedora, Homebrew) and Apple's Accelerate
 * framework, or the library named by the `BLAS_LIBRARY` environment variable.
 *
 * @module
 */

/** Row-major storage, `CblasRowMajor`. */
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

/** A loaded BLAS: row-major single-precision GEMM plus thread controls. */
export interface Blas {
  /** Path the library was loaded from. */
  path: string;
  /**
   * `C = alpha * op(A) · op(B) + beta * C`, row-major; `A`, `B`, `C` are views whose first element
   * is the matrix origin (views into WebAssembly memory are fine).
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float32Array,
    lda: number,
    b: Float32Array,
    ldb: number,
    beta: number,
    c: Float32Array,
    ldc: number,
  ): void;
  /** Sets the BLAS thread count (no-op where the library has no such control). */
  setThreads(n: number): void;
  /** The BLAS thread count, or undefined where the library cannot say. */
  getThreads(): number | undefined;
}

/** Outcome of {@link loadBlas}. */
export type LoadBlasResult = { ok: true; blas: Blas } | { ok: false; reason: string };

const SYMBOLS = {
  cblas_sgemm: {
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
  openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
} as const;

/**
 * Library paths tried in order, for the running OS; only `BLAS_LIBRARY` when that is set.
 *
 * @example
 * ```ts
 * blasCandidates("linux")[0]; // "libopenblas.so.0"
 * ```
 */
export function blasCandidates(os: string = Deno.build.os): string[] {
  let env: string | undefined;
  try {
    env = Deno.env.get("BLAS_LIBRARY");
  } catch {
    env = undefined;
  }
  if (env) return [env]; // an explicit choice: do not silently load another library
  const list: string[] = [];
  if (os === "darwin") {
    list.push(
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
    );
  } else if (os === "windows") {
    list.push("libopenblas.dll", "openblas.dll");
  } else {
    list.push(
      "libopenblas.so.0",
      "libopenblas.so",
      "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
      "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
      "/usr/lib64/libopenblas.so.0",
      "libopenblasp.so.0",
    );
  }
  return list;
}

let cached: LoadBlasResult | undefined;

/**
 * Loads the system BLAS once (later calls return the same result). Never throws: a missing
 * library, a missing `--unstable-ffi`/`--allow-ffi`, or a missing symbol come back as a reason.
 *
 * @example
 * ```ts
 * const r = loadBlas();
 * if (r.ok) r.blas.setThreads(2); else console.log(r.reason);
 * ```
 */
export function loadBlas(): LoadBlasResult {
  if (cached) return cached;
  if (typeof Deno.dlopen !== "function") {
    cached = {
      ok: false,
      reason: "Deno.dlopen is unavailable: run deno with --unstable-ffi (and -A or --allow-ffi)",
    };
    return cached;
  }
  const errors: string[] = [];
  for (const path of blasCandidates()) {
    try {
      const lib = Deno.dlopen(path, SYMBOLS);
      cached = { ok: true, blas: wrap(path, lib) };
      return cached;
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (/permission|allow-ffi|requires ffi access/i.test(msg)) {
        cached = {
          ok: false,
          reason: `loading "${path}" needs FFI permission (run with -A or --allow-ffi): ${msg}`,
        };
        return cached;
      }
      errors.push(`${path}: ${msg.split("\n")[0].slice(0, 120)}`);
    }
  }
  const hint = Deno.build.os === "darwin"
    ? "Accelerate should always exist on macOS; or `brew install openblas`"
    : "install OpenBLAS (`apt-get install libopenblas0`) or set BLAS_LIBRARY to a CBLAS library";
  cached = { ok: false, reason: `no BLAS library could be loaded (${hint}); tried ${errors.join("; ")}` };
  return cached;
}

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

function wrap(path: string, lib: Lib): Blas {
  const s = lib.symbols;
  const setN = s.openblas_set_num_threads as ((n: number) => void) | null;
  const getN = s.openblas_get_num_threads as (() => number) | null;
  return {
    path,
    sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
      if (m === 0 || n === 0) return;
      s.cblas_sgemm(
        ROW_MAJOR,
        transA ? TRANS : NO_TRANS,
        transB ? TRANS : NO_TRANS,
        m,
        n,
        k,
        alpha,
        a as Float32Array<ArrayBuffer>,
        lda,
        b as Float32Array<ArrayBuffer>,
        ldb,
        beta,
        c as Float32Array<ArrayBuffer>,
        ldc,
      );
    },
    setThreads(nThreads) {
      if (!Number.isInteger(nThreads) || nThreads < 1) {
        throw new Error(`BLAS threads: expected a positive integer, got ${JSON.stringify(nThreads)}`);
      }
      if (setN) setN(nThreads);
    },
    getThreads() {
      return getN ? getN() : undefined;
    },
  };
}
