/**
 * The project's root folder, found from this file's location (`lib/util/` is two levels below it), so that
 * `results/`, `data/` and `notebooks/` are found whatever the working directory: the Jupyter kernel starts
 * in `notebooks/`, tasks start at the root.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/**
 * Absolute path of the project root.
 *
 * @example
 * ```ts
 * projectRoot(); // "/home/me/cnn-vit"
 * ```
 */
export function projectRoot(): string {
  return fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
}

/**
 * Makes the project root the working directory (notebooks call this once in their configuration cell, so
 * relative paths such as `results/...` and `data/...` mean the same as in `deno task ...`). Returns it.
 *
 * @example
 * ```ts
 * useProjectRoot();
 * ```
 */
export function useProjectRoot(): string {
  const root = projectRoot();
  if (Deno.cwd() !== root) Deno.chdir(root);
  return root;
}
