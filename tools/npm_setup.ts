/**
 * The first run of a tool in a fresh clone: the npm packages (TensorFlow.js, sharp, plotly.js, ...) are not
 * in `node_modules/` yet. Deno would fetch them silently or with a hundred "Initialize" lines before the
 * tool starts; {@link ensureNpmPackages} says in one line what is fetched and why, then fetches it quietly
 * (`deno install --quiet`). Tools call it before importing anything that needs npm packages (this module
 * imports none).
 *
 * Optional build scripts stay off (deno.json `allowScripts.deny`): tfjs-node's downloads libtensorflow and
 * is only wanted by whoever chooses the `node` backend (`deno install --allow-scripts=npm:@tensorflow/tfjs-node`);
 * core-js's only prints a banner.
 *
 * @module
 */
import { join } from "node:path";

/**
 * Installs the npm packages of deno.json into `<root>/node_modules` when they are not there, saying so
 * in one line; returns true when it installed.
 *
 * @example
 * ```ts
 * await ensureNpmPackages(Deno.cwd(), "compare");
 * ```
 */
export async function ensureNpmPackages(root: string, tool: string): Promise<boolean> {
  try {
    Deno.statSync(join(root, "node_modules", ".deno"));
    return false;
  } catch { /* first run */ }
  console.log(
    `[${tool}] first run: fetching the npm packages (TensorFlow.js, sharp, plotly.js; about 370 MB in ` +
      "node_modules/), once",
  );
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["install", "--quiet"],
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!r.success) throw new Error(`\`deno install\` failed in ${root} (exit ${r.code}); see above`);
  return true;
}
