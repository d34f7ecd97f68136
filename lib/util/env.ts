/**
 * Environment variables read without throwing where env access is not granted.
 *
 * @module
 */

/**
 * The value of environment variable `name`, or `undefined` when it is unset or env access is denied
 * (no `--allow-env`).
 *
 * @example
 * ```ts
 * const seeds = envGet("CNNVIT_SEEDS"); // "0,1,2" or undefined
 * ```
 */
export function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
