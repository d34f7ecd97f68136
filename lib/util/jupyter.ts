/**
 * Small helpers around the Deno Jupyter kernel API. Touching `Deno.jupyter` outside the kernel throws,
 * so everything here checks {@link inJupyter} first and degrades to terminal output.
 *
 * @module
 */

/** A Jupyter MIME bundle (`{"text/html": "...", "image/png": base64, ...}`). */
export type MimeBundle = Record<string, string | object | undefined>;

let cached: boolean | undefined;

/**
 * Outputs above this size get a warning: the Deno kernel (2.9.6) corrupted IOPub messages of 512 KiB with a
 * 64 KiB socket send buffer, and the 5 MB first-figure output on a CI machine (see `plotlyLoaderScript` in lib/viz/figure.ts).
 */
export const LARGE_OUTPUT_BYTES = 1 << 20;

/** Approximate size of a MIME bundle on the wire (string lengths; JSON for structured values). */
function bundleSize(bundle: MimeBundle): number {
  let n = 0;
  for (const v of Object.values(bundle)) {
    n += typeof v === "string" ? v.length : v === undefined ? 0 : JSON.stringify(v)?.length ?? 0;
  }
  return n;
}

/**
 * True inside the Deno Jupyter kernel.
 *
 * @example
 * ```ts
 * if (inJupyter()) console.log("rendering inline");
 * ```
 */
export function inJupyter(): boolean {
  if (cached === undefined) {
    try {
      // deno-lint-ignore no-explicit-any
      cached = typeof (Deno as any).jupyter?.broadcast === "function";
    } catch {
      cached = false;
    }
  }
  return cached;
}

/**
 * Sends a MIME bundle to the notebook. With `displayId`, a later call with `update: true` replaces
 * that output in place (used by progress bars). Returns false outside Jupyter (nothing sent).
 *
 * @example
 * ```ts
 * await jupyterDisplay({ "text/plain": "hello" }, { displayId: "p1" });
 * await jupyterDisplay({ "text/plain": "hello again" }, { displayId: "p1", update: true });
 * ```
 */
export async function jupyterDisplay(
  bundle: MimeBundle,
  options: { displayId?: string; update?: boolean } = {},
): Promise<boolean> {
  if (!inJupyter()) return false;
  const bytes = bundleSize(bundle);
  if (bytes > LARGE_OUTPUT_BYTES) {
    console.warn(
      `jupyterDisplay: this output is ${(bytes / 1048576).toFixed(1)} MiB (${
        Object.keys(bundle).join(", ")
      }). ` +
        "The Deno kernel can corrupt IOPub messages much larger than its socket buffer, and the notebook then " +
        "loses every later output; downscale the image, or write it to a file with save() and show a smaller one.",
    );
  }
  const content: Record<string, unknown> = { data: bundle, metadata: {} };
  if (options.displayId) content.transient = { display_id: options.displayId };
  const type = options.update && options.displayId ? "update_display_data" : "display_data";
  // deno-lint-ignore no-explicit-any
  await (Deno as any).jupyter.broadcast(type, content);
  return true;
}
