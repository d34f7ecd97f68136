/**
 * Small utilities shared across the library: atomic writes, seeded RNG, progress bars, Jupyter display.
 *
 * @example
 * ```ts
 * import { Progress, Rng, writeFileAtomic } from "./lib/util/mod.ts";
 * ```
 *
 * @module
 */
export * from "./atomic_write.ts";
export * from "./rng.ts";
export * from "./progress.ts";
export * from "./jupyter.ts";
export * from "./project_root.ts";
export * from "./path_exists.ts";
export * from "./redis_server.ts";
export * from "./env.ts";
