/**
 * Locates and reads the plotly.js bundle from npm `plotly.js-dist-min` (offline: no CDN).
 *
 * @module
 */
import { createRequire } from "node:module";

let cachedPath: string | undefined;
let cachedSource: string | undefined;

/**
 * Absolute path of `plotly.min.js` from the npm package `plotly.js-dist-min`.
 *
 * @example
 * ```ts
 * const path = plotlyJsPath(); // ".../node_modules/plotly.js-dist-min/plotly.min.js"
 * ```
 */
export function plotlyJsPath(): string {
  if (cachedPath) return cachedPath;
  try {
    cachedPath = createRequire(import.meta.url).resolve("plotly.js-dist-min");
  } catch (e) {
    throw new Error(
      `plotlyJsPath: cannot find npm package plotly.js-dist-min (${(e as Error).message}); ` +
        `expected it in node_modules (deno.json imports it; run "deno install")`,
    );
  }
  return cachedPath;
}

/**
 * Source of plotly.js, made safe to inline in a `<script>` element (any `</script` is escaped).
 *
 * @example
 * ```ts
 * const html = `<script>${plotlyJsSource()}</script>`;
 * ```
 */
export function plotlyJsSource(): string {
  cachedSource ??= Deno.readTextFileSync(plotlyJsPath()).replace(/<\/(script)/gi, "<\\/$1");
  return cachedSource;
}
