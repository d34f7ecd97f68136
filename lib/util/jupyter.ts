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
  const content: Record<string, unknown> = { data: bundle, metadata: {} };
  if (options.displayId) content.transient = { display_id: options.displayId };
  const type = options.update && options.displayId ? "update_display_data" : "display_data";
  // deno-lint-ignore no-explicit-any
  await (Deno as any).jupyter.broadcast(type, content);
  return true;
}
