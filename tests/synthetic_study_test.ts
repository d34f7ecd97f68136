/**
 * tools/synthetic_study.ts end to end in its quick profile (a few images): every variant of every seed is
 * evaluated on its own run's test subset and written with its provenance, the controls cost what the hybrid
 * costs (within one token), and a second invocation resumes the finished runs and reproduces every number.
 */
import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { runTool } from "./_tool.ts";

async function study(dir: string, seeds = "0,1", out = "out", more: string[] = []) {
  await runTool("synthetic_study.ts", [
    "--profile",
    "quick",
    "--seeds",
    seeds,
    "--keeps",
    "0.25,0.5",
    "--runs",
    join(dir, "runs"),
    "--out",
    join(dir, out),
    ...more,
  ]);
  return JSON.parse(await Deno.readTextFile(join(dir, out, "per_seed.json"))) as {
    seed: number;
    variant: string;
    accuracy: number;
    gmacs: number;
    run: string;
    selectionRecall?: number;
  }[];
}

Deno.test({
  name:
    "synthetic_study.ts (quick): every variant per seed, controls at the hybrid's cost, resume reproduces",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "synthetic_study_" });
    try {
      const first = await study(dir);
      const variants = [
        "ResNet18",
        "ResNet18 (width 8)",
        "ViT on CNN tokens (all tokens)",
        ...[0.25, 0.5].flatMap((k) =>
          ["hybrid", "random=hybrid", "attention=hybrid", "merge=hybrid"].map((v) => `${v}@${k}`)
        ),
      ];
      for (const seed of [0, 1]) {
        assertEquals(first.filter((r) => r.seed === seed).map((r) => r.variant).sort(), [...variants].sort());
      }
      // Random and merge can match the hybrid's cost to about one token's worth.
      for (const keep of [0.25, 0.5]) {
        const h = first.find((r) => r.variant === `hybrid@${keep}` && r.seed === 0)!;
        for (const c of ["random", "merge"]) {
          const r = first.find((x) => x.variant === `${c}=hybrid@${keep}` && x.seed === 0)!;
          assert(
            Math.abs(r.gmacs / h.gmacs - 1) < 0.05,
            `${c}@${keep}: ${r.gmacs} vs the hybrid's ${h.gmacs}`,
          );
        }
        assert(h.selectionRecall !== undefined, "selection recall against the object masks");
      }
      const out = join(dir, "out");
      for (
        const f of [
          "results.md",
          "results.json",
          "claims.md",
          "run.json",
          "figures/accuracy_vs_gmacs.html",
          "figures/accuracy_vs_img_per_s.html",
        ]
      ) {
        await Deno.stat(join(out, f));
      }
      const claims = await Deno.readTextFile(join(out, "claims.md"));
      assert(claims.includes("a = hybrid beats b = attention at equal GMACs, keep 0.5"), claims);
      const trainedRuns = [...Deno.readDirSync(join(out, "training_runs", "s0"))].map((e) => e.name).sort();
      assertEquals(trainedRuns, [
        "attention.run.json",
        "attention_k0.25.run.json",
        "full.run.json",
        "hybrid.run.json",
        "hybrid_k0.25.run.json",
        "random.run.json",
        "random_k0.25.run.json",
        "resnet18.run.json",
        "resnet18_w8.run.json",
      ]);
      // A second invocation trains nothing new and reproduces every number.
      const again = await study(dir);
      assertEquals(
        again.map((r) => [r.seed, r.variant, r.accuracy, r.gmacs]),
        first.map((r) => [r.seed, r.variant, r.accuracy, r.gmacs]),
      );
      // Seed 1 added to a result holding seed 0 (--merge) gives the table both seeds give at once.
      await study(dir, "0", "only0");
      const merged = await study(dir, "1", "merged", ["--merge", join(dir, "only0")]);
      const key = (rs: typeof first) =>
        rs.map((r) => JSON.stringify([r.seed, r.variant, r.accuracy, r.gmacs, r.run])).sort();
      assertEquals(key(merged), key(first));
      const means = async (o: string) =>
        (JSON.parse(await Deno.readTextFile(join(dir, o, "results.json"))) as {
          rows: { model: string; accuracy: number; accuracyCI: number[]; gmacs: number; seeds: number }[];
        }).rows.map((r) => [r.model, r.accuracy, r.accuracyCI, r.gmacs, r.seeds]);
      assertEquals(await means("merged"), await means("out"));
      const run = JSON.parse(await Deno.readTextFile(join(dir, "merged", "run.json"))) as {
        seeds: number[];
        extra: { merged: { seeds: number[] } };
      };
      assertEquals([run.seeds, run.extra.merged.seeds], [[0, 1], [0]]);
      await Deno.stat(join(dir, "merged", "training_runs", "s0", "hybrid.run.json"));
      assert((await Deno.readTextFile(join(dir, "merged", "claims.md"))).includes("added with --merge"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "synthetic_study.ts --dataset fashion-mnist (quick): the same study on Fashion-MNIST's test subset, every run on CNN tokens",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cnn_tokens_study_fm_" });
    try {
      await runTool("synthetic_study.ts", [
        "--profile",
        "quick",
        "--dataset",
        "fashion-mnist",
        "--seeds",
        "0",
        "--keeps",
        "0.5",
        "--runs",
        join(dir, "runs"),
        "--out",
        join(dir, "out"),
      ]);
      const run = JSON.parse(await Deno.readTextFile(join(dir, "out", "run.json"))) as {
        experiment: string;
        dataset: { name: string; split: string };
      };
      assertEquals(run.experiment, "08_fashion-mnist_cnn_tokens");
      assertEquals(run.dataset.split, "test");
      assert(run.dataset.name.startsWith("fashion-mnist"), run.dataset.name);
      const rows = JSON.parse(await Deno.readTextFile(join(dir, "out", "per_seed.json"))) as {
        variant: string;
        selectionRecall?: number;
      }[];
      assert(
        rows.some((r) => r.variant === "hybrid@0.5") && rows.some((r) => r.variant === "random=hybrid@0.5"),
      );
      assert(rows.every((r) => r.selectionRecall === undefined), "Fashion-MNIST has no object masks");
      const identity = JSON.parse(
        await Deno.readTextFile(join(dir, "runs", "s0", "random", "identity.json")),
      ) as {
        identity: { config: { modelConfig: { tokens?: string } } };
      };
      assertEquals(identity.identity.config.modelConfig.tokens, "cnn");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
