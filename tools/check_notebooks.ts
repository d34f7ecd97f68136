/**
 * Type-checks every notebook (the Deno kernel itself does not): the code cells of each
 * `notebooks/*.ipynb` are joined, in order, into a temporary module beside the notebook (so relative
 * imports resolve as in the kernel), checked with `deno check`, and removed. Errors are reported
 * with the notebook and cell number.
 *
 * ```
 * deno run -A tools/check_notebooks.ts [NAME_FILTER ...]
 * ```
 */
import { basename, join, resolve } from "node:path";

const root = resolve(new URL("..", import.meta.url).pathname);
const dir = join(root, "notebooks");

/** Joins the code cells of a notebook into one module, each cell preceded by a marker comment. */
export function notebookToModule(nb: { cells: { cell_type: string; source: string | string[] }[] }): string {
  const parts: string[] = [];
  nb.cells.forEach((c, i) => {
    if (c.cell_type !== "code") return;
    const src = Array.isArray(c.source) ? c.source.join("") : c.source;
    // Jupyter magics and shell escapes are not TypeScript.
    const body = src.split("\n").map((l) => (/^\s*[%!]/.test(l) ? `// ${l}` : l)).join("\n");
    parts.push(`// ---- cell ${i} ----\n${body}\n`);
  });
  return parts.join("\n") + "\nexport {};\n";
}

async function main(): Promise<number> {
  const names = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".ipynb")).map((e) => e.name).sort()
    .filter((n) => Deno.args.length === 0 || Deno.args.some((a) => n.includes(a)));
  let failed = 0;
  for (const name of names) {
    const nb = JSON.parse(await Deno.readTextFile(join(dir, name)));
    const tmp = join(dir, `.check_${basename(name, ".ipynb")}.ts`);
    await Deno.writeTextFile(tmp, notebookToModule(nb));
    try {
      const r = await new Deno.Command(Deno.execPath(), { args: ["check", "-q", tmp], cwd: root }).output();
      if (r.success) console.log(`check ${name}: ok`);
      else {
        failed++;
        const err = new TextDecoder().decode(r.stderr);
        console.error(
          `check ${name}: FAILED (line numbers refer to the joined cells; see the "cell N" markers)\n${err}`,
        );
        const src = (await Deno.readTextFile(tmp)).split("\n");
        for (const m of err.matchAll(/\.check_[^:]+\.ts:(\d+):/g)) {
          const line = Number(m[1]);
          const marker = src.slice(0, line).reverse().find((l) => l.startsWith("// ---- cell "));
          if (marker) console.error(`  line ${line} is in ${marker.replace(/\/\/ -+ | -+$/g, "")}`);
        }
      }
    } finally {
      await Deno.remove(tmp).catch(() => {});
    }
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
