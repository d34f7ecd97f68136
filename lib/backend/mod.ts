/**
 * Compute backends: {@link initBackend} and the kernels that let the wasm backend train.
 *
 * @example
 * ```ts
 * import { initBackend } from "./lib/backend/mod.ts";
 * await initBackend(); // TFJS_BACKEND or auto
 * ```
 *
 * @module
 */
export * from "./init_backend.ts";
export * from "./wasm_kernels.ts";
export * from "./native.ts";
