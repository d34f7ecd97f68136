/**
 * The first run of a tool in a fresh clone: the npm packages (TensorFlow.js, sharp, plotly.js, ...) are not
 * in `node_modules/` yet. `deno run` would fetch them with a hundred "Initialize" lines before the tool
 * starts; {@link ensureNpmPackages} says in one line what is fetched, then fetches it quietly
 * (`deno install --quiet`). Tools call it before importing anything that needs npm packages (this module
 * imports none), and import those modules with {@link importLater}. (`deno task` installs before any task
 * starts, denoland/deno#30887: through a task, Deno's own progress line shows instead.)
 *
 * Optional build scripts stay off (deno.json `allowScripts.deny`): tfjs-node's downloads libtensorflow and
 * is only wanted by whoever chooses the `node` backend (`deno install --allow-scripts=npm:@tensorflow/tfjs-node`);
 * core-js's only prints a banner.
 *
 * @module
 */
import { join } from "node:path";

/**
 * Imports a module at run time only, by a specifier Deno cannot see ahead: a literal `import("...")` puts the
 * module's npm packages in the graph that `deno run` installs before the first line runs (with a hundred
 * "Initialize" lines), which would come before {@link ensureNpmPackages} could say anything. Give the type as
 * `typeof import("...")`.
 *
 * @example
 * ```ts
 * const { studyPlan } = await importLater<typeof import("../lib/experiment/study.ts")>(
 *   new URL("../lib/experiment/study.ts", import.meta.url),
 * );
 * ```
 */
export function importLater<T>(url: URL): Promise<T> {
  return import(url.href);
}

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
