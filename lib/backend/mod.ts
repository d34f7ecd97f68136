/**
 * Compute backends: {@link initBackend}, the kernels that let the wasm backend train, the WebGPU backend.
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
export * from "./webgpu.ts";
export * from "./webgpu_kernels.ts";
