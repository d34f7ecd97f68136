/** README's numbers come from results/: its generated blocks must equal what `deno task readme` makes. */
import { join } from "node:path";
import { changedBlocks, claimRowsAt, renderReadme } from "../tools/readme.ts";
import { assert, assertEquals } from "./_assert.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test("README's generated tables and claims agree with the committed results", async () => {
  const current = await Deno.readTextFile(join(root, "README.md"));
  const { text, blocks } = await renderReadme(root);
  for (
    const b of [
      "study-table",
      "study-claims",
      "bench-table",
      "equal-cost",
      "synthetic-study",
      "synthetic-claims",
      "synthetic-ablation",
      "fmnist-ablation",
      "synthetic-budget",
      "fmnist-budget",
      "fmnist-study",
      "fmnist-claims",
      "fmnist-study-keeps",
      "fmnist-claims-keeps",
      "synthetic-study-keeps",
      "synthetic-claims-keeps",
      "synthetic-rank",
      "fmnist-rank",
    ]
  ) {
    assert(blocks.includes(b), `blocks: ${blocks}`);
  }
  assertEquals(changedBlocks(current, text), [], "README drifted from results/: run deno task readme");
});

Deno.test("renderReadme() notices a number changed in results (the README check can fail)", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const rel = "results/study/cpu/04_compare_models";
    await Deno.mkdir(join(tmp, rel), { recursive: true });
    await Deno.copyFile(join(root, "README.md"), join(tmp, "README.md"));
    await Deno.copyFile(join(root, rel, "claims.md"), join(tmp, rel, "claims.md"));
    const ec = "results/study/cpu/06_equal_cost";
    await Deno.mkdir(join(tmp, ec), { recursive: true });
    await Deno.copyFile(join(root, ec, "claims.md"), join(tmp, ec, "claims.md"));
    await Deno.mkdir(join(tmp, "results", "bench"), { recursive: true });
    await Deno.copyFile(join(root, "results/bench/bench.json"), join(tmp, "results/bench/bench.json"));
    for (
      const syn of [
        "results/study/cpu/07_synthetic_equal_cost",
        "results/study/cpu/08_fashion-mnist_cnn_tokens",
        "results/study/cpu/09_fashion-mnist_cnn_tokens_keeps_0.4-0.8",
        "results/study/cpu/10_synthetic_cnn_tokens_keeps_0.4-0.8",
      ]
    ) {
      await Deno.mkdir(join(tmp, syn), { recursive: true });
      for (const f of ["results.json", "claims.md"]) {
        await Deno.copyFile(join(root, syn, f), join(tmp, syn, f));
      }
    }
    for (
      const d of [
        "synthetic",
        "fashion-mnist",
        "synthetic_budget_calibration",
        "fashion-mnist_budget_calibration",
        "synthetic_rank_distill",
        "fashion-mnist_rank_distill",
      ]
    ) {
      const abl = `results/ablation/cpu/${d}`;
      await Deno.mkdir(join(tmp, abl), { recursive: true });
      await Deno.copyFile(join(root, abl, "ablation.json"), join(tmp, abl, "ablation.json"));
    }
    for (const t of ["cam", "mask", "cam_s1e8"]) {
      const sel = `results/selection/synthetic_cnn_tokens_${t}`;
      await Deno.mkdir(join(tmp, sel), { recursive: true });
      await Deno.copyFile(join(root, sel, "selection.json"), join(tmp, sel, "selection.json"));
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
