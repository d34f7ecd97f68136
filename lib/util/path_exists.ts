/**
 * Whether a file or folder exists.
 *
 * @module
 */

/**
 * True when `path` exists (file or folder); false when it does not. Other errors (permissions) throw.
 *
 * @example
 * ```ts
 * if (await pathExists("results/runs/vit/checkpoint.safetensors")) console.log("resumable");
 * ```
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Synchronous {@link pathExists}.
 *
 * @example
 * ```ts
 * pathExistsSync("data/cifar-10"); // false until downloaded
 * ```
 */
export function pathExistsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
