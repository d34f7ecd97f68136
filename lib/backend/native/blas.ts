/**
 * The system GEMM through Deno FFI: single-precision row-major GEMM and the thread-count controls.
 *
 * Two kinds of library provide it:
 * - oneDNN (`dnnl_sgemm`; Debian/Ubuntu `libdnnl2` or `libdnnl3`, Homebrew `onednn`). Preferred:
 *   its JIT kernels measured 1.3-2.3x OpenBLAS 0.3.21 on our shapes on an AVX-512 machine
 *   (e.g. the 65536x576x64 im2col GEMM of a ResNet18 3x3 conv: 169 vs 73 GMAC/s,
 *   `.scratch`-free reproduction in `tests/native_bench.ts`). It threads with OpenMP, so
 *   `OMP_NUM_THREADS`/`OMP_WAIT_POLICY` are set before it loads (policy PASSIVE unless the
 *   environment says otherwise: spinning OpenMP workers would steal the core the JavaScript thread
 *   needs between GEMMs).
 * - A CBLAS (`cblas_sgemm`): OpenBLAS (`libopenblas0`, Fedora, Homebrew) or Apple's Accelerate.
 *
 * `BLAS_LIBRARY` names one library (of either kind) and turns the search off; `BLAS_PROVIDER`
 * (`dnnl` or `cblas`) restricts the search to one kind.
 *
 * @module
 */
import { envGet } from "../../util/env.ts";

/** Row-major storage, `CblasRowMajor`. */
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

/** A loaded BLAS: row-major single-precision GEMM plus thread controls. */
export interface Blas {
  /** Path the library was loaded from (with its version where the library reports one). */
  path: string;
  /** The file name given to `dlopen`. */
  file: string;
  /** Which interface the library offers: oneDNN's `dnnl_sgemm` or a CBLAS `cblas_sgemm`. */
  kind: BlasKind;
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

/** `dnnl`: oneDNN's `dnnl_sgemm`; `cblas`: a CBLAS `cblas_sgemm` (OpenBLAS, Accelerate). */
export type BlasKind = "dnnl" | "cblas";

const DNNL_SYMBOLS = {
  dnnl_sgemm: {
    parameters: [
      "u8",
      "u8",
      "i64",
      "i64",
      "i64",
      "f32",
      "buffer",
      "i64",
      "buffer",
      "i64",
      "f32",
      "buffer",
      "i64",
    ],
    result: "i32",
  },
  dnnl_version: { parameters: [], result: "pointer" },
} as const;

/** OpenMP thread controls, looked up in the OpenMP runtime oneDNN loaded (GNU or LLVM). */
const OMP_SYMBOLS = {
  omp_set_num_threads: { parameters: ["i32"], result: "void" },
  omp_get_max_threads: { parameters: [], result: "i32" },
} as const;

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

/** A library to try: its path and the interface expected there (`any`: whichever it has). */
export interface BlasCandidate {
  path: string;
  kind: BlasKind | "any";
}

/**
 * Libraries tried in order, for the running OS: oneDNN first, then CBLAS libraries; only
 * `BLAS_LIBRARY` when that is set, and only one kind when `BLAS_PROVIDER` is `dnnl` or `cblas`.
 *
 * @example
 * ```ts
 * blasCandidates("linux")[0]; // { path: "libdnnl.so.3", kind: "dnnl" }
 * ```
 */
export function blasCandidates(os: string = Deno.build.os): BlasCandidate[] {
  const env = envGet("BLAS_LIBRARY");
  if (env) return [{ path: env, kind: "any" }]; // an explicit choice: do not silently load another library
  const provider = envGet("BLAS_PROVIDER");
  if (provider !== undefined && provider !== "" && provider !== "dnnl" && provider !== "cblas") {
    throw new Error(`BLAS_PROVIDER: expected "dnnl" or "cblas", got ${JSON.stringify(provider)}`);
  }
  const dnnl = os === "darwin"
    ? [
      "/opt/homebrew/opt/onednn/lib/libdnnl.3.dylib",
      "/usr/local/opt/onednn/lib/libdnnl.3.dylib",
    ]
    : os === "windows"
    ? ["dnnl.dll"]
    : ["libdnnl.so.3", "libdnnl.so.2", "/usr/lib/x86_64-linux-gnu/libdnnl.so.2"];
  const cblas = cblasPaths(os);
  return [
    ...(provider === "cblas" ? [] : dnnl.map((path) => ({ path, kind: "dnnl" as const }))),
    ...(provider === "dnnl" ? [] : cblas.map((path) => ({ path, kind: "cblas" as const }))),
  ];
}

function cblasPaths(os: string): string[] {
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
  let candidates: BlasCandidate[];
  try {
    candidates = blasCandidates();
  } catch (e) {
    cached = { ok: false, reason: e instanceof Error ? e.message : String(e) };
    return cached;
  }
  const errors: string[] = [];
  for (const { path, kind } of candidates) {
    try {
      const blas = openBlasLibrary({ path, kind });
      cached = { ok: true, blas };
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
    ? "Accelerate should always exist on macOS; or `brew install onednn` / `brew install openblas`"
    : "install oneDNN (`apt-get install libdnnl2`) or OpenBLAS (`apt-get install libopenblas0`), " +
      "or set BLAS_LIBRARY to a oneDNN or CBLAS library";
  cached = { ok: false, reason: `no BLAS library could be loaded (${hint}); tried ${errors.join("; ")}` };
  return cached;
}

/**
 * Opens one library without caching or searching (throws when it does not load); `kind: "any"`
 * takes oneDNN's `dnnl_sgemm` when the library exports it, else `cblas_sgemm`. {@link loadBlas}
 * is what the backend uses; this is for comparing providers side by side.
 *
 * @example
 * ```ts
 * const openblas = openBlasLibrary({ path: "libopenblas.so.0", kind: "cblas" });
 * ```
 */
export function openBlasLibrary(c: BlasCandidate): Blas {
  return c.kind === "cblas" ? openCblas(c.path) : c.kind === "dnnl" ? openDnnl(c.path) : openAny(c.path);
}

/** Opens `path` as oneDNN when it exports `dnnl_sgemm`, else as a CBLAS. */
function openAny(path: string): Blas {
  try {
    return openDnnl(path);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (!/dnnl_sgemm|dnnl_version|symbol/i.test(msg)) throw e;
    return openCblas(path);
  }
}

/** GEMMs smaller than this (m·n·k) run on one thread of a CBLAS next to oneDNN. */
const SMALL_GEMM_MACS = 1 << 24;
const N_CHAR = "N".charCodeAt(0);
const T_CHAR = "T".charCodeAt(0);

function positiveThreads(nThreads: number): void {
  if (!Number.isInteger(nThreads) || nThreads < 1) {
    throw new Error(`BLAS threads: expected a positive integer, got ${JSON.stringify(nThreads)}`);
  }
}

function openDnnl(path: string): Blas {
  // libgomp reads its environment once, when it is loaded with oneDNN: set the wait policy first.
  if (envGet("OMP_WAIT_POLICY") === undefined) {
    try {
      Deno.env.set("OMP_WAIT_POLICY", "PASSIVE");
    } catch { /* no env permission: libgomp keeps its default */ }
  }
  const lib = Deno.dlopen(path, DNNL_SYMBOLS);
  const s = lib.symbols;
  let version = "";
  const v = s.dnnl_version();
  if (v) {
    const view = new Deno.UnsafePointerView(v);
    version = ` (oneDNN ${view.getInt32(0)}.${view.getInt32(4)}.${view.getInt32(8)})`;
  }
  let omp: Deno.DynamicLibrary<typeof OMP_SYMBOLS> | undefined;
  for (const name of ["libgomp.so.1", "libomp.so", "libomp.dylib", "libiomp5.so"]) {
    try {
      omp = Deno.dlopen(name, OMP_SYMBOLS);
      break;
    } catch { /* next */ }
  }
  const big = BigInt;
  let threads = omp?.symbols.omp_get_max_threads() ?? 1;
  // Small GEMMs (an attention head's q·kᵀ, the GEMMs-with-ones behind Sum/Mean) go to a CBLAS on
  // one thread: waking a sleeping OpenMP worker costs ~50 us (65x64x65: 4 us on one thread, 50 us
  // on two; crossover near 200x384x200), and changing OpenMP's thread count between calls is worse:
  // libgomp rebuilds its team, and the next convolution ran at half speed (ResNet18 training-mode
  // forward: convolutions 336 -> 171 ms per batch of 64 without the switching).
  let small: Blas | undefined;
  for (const p of cblasPaths(Deno.build.os)) {
    try {
      small = openCblas(p);
      small.setThreads(1);
      break;
    } catch { /* next */ }
  }
  return {
    path: path + version + (small ? ` + ${small.path} for GEMMs under ${SMALL_GEMM_MACS} multiply-adds` : ""),
    file: path,
    kind: "dnnl",
    sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
      if (m === 0 || n === 0) return;
      if (small && m * n * k < SMALL_GEMM_MACS) {
        small.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
      }
      const status = s.dnnl_sgemm(
        transA ? T_CHAR : N_CHAR,
        transB ? T_CHAR : N_CHAR,
        big(m),
        big(n),
        big(k),
        alpha,
        a as Float32Array<ArrayBuffer>,
        big(lda),
        b as Float32Array<ArrayBuffer>,
        big(ldb),
        beta,
        c as Float32Array<ArrayBuffer>,
        big(ldc),
      );
      if (status !== 0) {
        throw new Error(
          `dnnl_sgemm(${transA ? "T" : "N"}${transB ? "T" : "N"}, m=${m}, n=${n}, k=${k}, lda=${lda}, ` +
            `ldb=${ldb}, ldc=${ldc}) failed with oneDNN status ${status}`,
        );
      }
    },
    setThreads(nThreads) {
      positiveThreads(nThreads);
      omp?.symbols.omp_set_num_threads(nThreads);
      threads = nThreads;
    },
    getThreads() {
      return omp ? threads : undefined;
    },
  };
}

function openCblas(path: string): Blas {
  const lib = Deno.dlopen(path, SYMBOLS);
  const s = lib.symbols;
  const setN = s.openblas_set_num_threads as ((n: number) => void) | null;
  const getN = s.openblas_get_num_threads as (() => number) | null;
  return {
    path,
    file: path,
    kind: "cblas",
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
      positiveThreads(nThreads);
      if (setN) setN(nThreads);
    },
    getThreads() {
      return getN ? getN() : undefined;
    },
  };
}
