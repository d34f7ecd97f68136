/**
 * Experiment profiles: `quick` (CI: minutes on 2 CPU cores, small subsets and widths), `cpu` (a laptop:
 * under an hour, meaningful accuracy), `full` (paper scale: GPU or tfjs-node). The profile and every
 * number it sets are recorded in `run.json`.
 *
 * @module
 */

/** Profile names. */
export type ProfileName = "quick" | "cpu" | "full";

/** Valid profile names, for argument validation. */
export const PROFILE_NAMES: readonly ProfileName[] = ["quick", "cpu", "full"];

/**
 * Validates a profile name, with an error quoting the bad value.
 *
 * @example
 * ```ts
 * parseProfile("quick", "--profile"); // "quick"
 * ```
 */
export function parseProfile(raw: string, source = "profile"): ProfileName {
  const v = raw.trim().toLowerCase();
  if ((PROFILE_NAMES as readonly string[]).includes(v)) return v as ProfileName;
  throw new Error(`${source}: unknown profile "${raw}"; expected one of "quick", "cpu", "full"`);
}

/**
 * The profile from the `CNNVIT_PROFILE` environment variable, or `fallback` (default `"cpu"`).
 *
 * @example
 * ```ts
 * const profile = profileFromEnv(); // "quick" in CI
 * ```
 */
export function profileFromEnv(fallback: ProfileName = "cpu"): ProfileName {
  let raw: string | undefined;
  try {
    raw = Deno.env.get("CNNVIT_PROFILE");
  } catch {
    raw = undefined;
  }
  return raw ? parseProfile(raw, "CNNVIT_PROFILE") : fallback;
}
