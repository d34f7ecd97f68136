/** README's numbers come from results/: its generated blocks must equal what `deno task readme` makes. */
import { join } from "node:path";
import { changedBlocks, claimRowsAt, GENERATORS, renderReadme } from "../tools/readme.ts";
import { assert, assertEquals } from "./_assert.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test("README's generated tables and claims agree with the committed results", async () => {
  const current = await Deno.readTextFile(join(root, "README.md"));
  const { text, blocks } = await renderReadme(root);
  // Every generator has its block in README (a new generator without one would check nothing).
  for (const b of Object.keys(GENERATORS)) {
    assert(blocks.includes(b), `blocks: ${blocks}`);
  }
  assertEquals(changedBlocks(current, text), [], "README drifted from results/: run deno task readme");
});

Deno.test("renderReadme() notices a number changed in results (the README check can fail)", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const rel = "results/study/cpu/04_compare_models";
    await Deno.copyFile(join(root, "README.md"), join(tmp, "README.md"));
    // The files the generators read: each result folder's tables and claims, and the speed table.
    const read = ["results.json", "claims.md", "ablation.json", "selection.json", "bench.json"];
    for (const parent of ["results/study/cpu", "results/ablation/cpu", "results/selection", "results"]) {
      for await (const e of Deno.readDir(join(root, parent))) {
        if (!e.isDirectory) continue;
        const dir = join(parent, e.name);
        for (const f of read) {
          if ((await Deno.stat(join(root, dir, f)).catch(() => null)) === null) continue;
          await Deno.mkdir(join(tmp, dir), { recursive: true });
          await Deno.copyFile(join(root, dir, f), join(tmp, dir, f));
        }
      }
    }
    const results = JSON.parse(await Deno.readTextFile(join(root, rel, "results.json")));
    results.rows[0].accuracy += 0.01;
    await Deno.writeTextFile(join(tmp, rel, "results.json"), JSON.stringify(results));
    const { text } = await renderReadme(tmp);
    assertEquals(changedBlocks(await Deno.readTextFile(join(root, "README.md")), text), ["study-table"]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("claimRowsAt() keeps the question table's header and the rows about the given keep ratios", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(tmp, "study"));
    await Deno.writeTextFile(
      join(tmp, "study", "claims.md"),
      [
        "# Claims",
        "",
        "| question | a − b |",
        "|---|---|",
        "| a = hybrid beats b = random at equal GMACs, keep 0.4 | 1 |",
        "| a = hybrid beats b = random at equal GMACs, keep 0.45 | 2 |",
        "| a = hybrid at keep 0.8 (0.0466 GMACs) against b = ResNet18 | 3 |",
        "",
        "| control | tokens |",
        "|---|---|",
        "| random=hybrid@0.4 | 26 |",
      ].join("\n"),
    );
    assertEquals(
      await claimRowsAt("study", [0.4, 0.8])(tmp),
      [
        "| question | a − b |",
        "|---|---|",
        "| a = hybrid beats b = random at equal GMACs, keep 0.4 | 1 |",
        "| a = hybrid at keep 0.8 (0.0466 GMACs) against b = ResNet18 | 3 |",
      ].join("\n"),
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
