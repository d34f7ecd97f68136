/**
 * Slot for the native BLAS backend (`"native"`): tfjs kernels whose heavy work runs in the system
 * BLAS through Deno FFI. Not built yet: {@link loadNativeBackend} reports it as unavailable, so
 * `initBackend("auto")` falls through to wasm and `initBackend("native")` fails with that reason.
 *
 * @module
 */

/** Options for {@link loadNativeBackend}. */
export interface NativeBackendOptions {
  /** BLAS threads (default: all cores). */
  threads?: number;
}

/** Outcome of {@link loadNativeBackend}. */
export type NativeBackendResult = { ok: true; tfBackend: string } | { ok: false; reason: string };

/**
 * Registers the native backend with tfjs if the system BLAS can be loaded.
 *
 * @example
 * ```ts
 * const r = await loadNativeBackend();
 * if (!r.ok) console.log(r.reason);
 * ```
 */
export function loadNativeBackend(_options: NativeBackendOptions = {}): Promise<NativeBackendResult> {
  return Promise.resolve({
    ok: false,
    reason: "the native BLAS backend is not built yet (issue: native-speed CPU compute)",
  });
}
