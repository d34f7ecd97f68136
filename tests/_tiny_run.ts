/** Shared set-up of tests that run `runTraining` end to end on a few synthetic images (wasm backend). */

/** Options of a seconds-long `runTraining` on the synthetic set (quick profile, one epoch, no output). */
export const TINY_RUN = {
  dataset: "synthetic" as const,
  profile: "quick" as const,
  epochs: 1,
  trainSubset: 64,
  evalSubset: 32,
  batchSize: 32,
  progress: false,
  log: false,
};

/**
 * Initialises the wasm backend, runs `fn` with `runTraining` and a fresh temporary folder, and removes the
 * folder afterwards.
 */
export async function withTinyRuns(
  prefix: string,
  fn: (
    runTraining: typeof import("../lib/experiment/mod.ts").runTraining,
    root: string,
  ) => Promise<void>,
): Promise<void> {
  const { initBackend } = await import("../lib/backend/mod.ts");
  const { runTraining } = await import("../lib/experiment/mod.ts");
  await initBackend("wasm", { log: false });
  const root = await Deno.makeTempDir({ prefix });
  try {
    await fn(runTraining, root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}
