/**
 * tools/synthetic_ablation.ts end to end in its quick profile (a few images): every step is trained with its
 * own configuration, evaluated on the validation split with selection precision/recall, written with its
 * provenance, and a second invocation resumes the finished runs and reproduces every number.
 */
import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { runTool } from "./_tool.ts";

interface Row {
  step: string;
  accuracy: number;
  allTokensAccuracy: number;
  randomAccuracy: number;
  selectionRecall?: number;
  keptTokens?: number;
  gmacs?: number;
  run: string;
  calibration?: { threshold: number; keepRatio: number; keepRatioAtZero: number };
}

async function ablation(dir: string): Promise<Row[]> {
  await runTool("synthetic_ablation.ts", [
    "--profile",
    "quick",
    "--runs",
    join(dir, "runs"),
    "--out",
    join(dir, "out"),
  ]);
  return JSON.parse(await Deno.readTextFile(join(dir, "out", "ablation.json"))) as Row[];
}

Deno.test({
  name:
    "synthetic_ablation.ts (quick): every step trained as configured, on the validation split; resume reproduces",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "synthetic_ablation_" });
    try {
      const first = await ablation(dir);
      const steps = [
        "a0_today",
        "a1_cnn_tokens",
        "a2_stage1_8",
        "a3_mlp_head",
        "a4_unfrozen_kl",
        "a5_keep_range",
        "a6_budget",
        "a7_fuse",
        "a8_budget_calibrated",
        "a9_rank_distill",
      ];
      assertEquals(first.map((r) => r.step), steps);
      for (const r of first) {
        assert(r.selectionRecall !== undefined, `${r.step}: selection recall against the object masks`);
        assert(r.allTokensAccuracy >= 0 && r.allTokensAccuracy <= 1, `${r.step}: ${r.allTokensAccuracy}`);
        assert(r.randomAccuracy >= 0 && r.randomAccuracy <= 1, `${r.step}: ${r.randomAccuracy}`);
      }
      // Each step's run recorded the configuration it claims (its identity), on the validation split.
      const identity = async (step: string) =>
        JSON.parse(await Deno.readTextFile(join(dir, "runs", step, "identity.json"))) as {
          identity: { config: Record<string, unknown>; dataset: { eval: { split: string } } };
        };
      const config = async (step: string) => (await identity(step)).identity.config;
      assertEquals((await identity("a0_today")).identity.dataset.eval.split, "val");
      const model = async (step: string) =>
        (await config(step)).modelConfig as { tokens?: string; selectorHead?: string };
      assertEquals((await model("a0_today")).tokens, undefined);
      assertEquals((await model("a1_cnn_tokens")).tokens, "cnn");
      assertEquals((await model("a3_mlp_head")).selectorHead, "mlp");
      assertEquals((await config("a4_unfrozen_kl")).cnnMode, "lower-lr");
      assertEquals((await config("a4_unfrozen_kl")).distill, 0.5);
      assertEquals((await config("a5_keep_range")).keepRange, [0.4, 0.8]);
      assertEquals((await config("a6_budget")).selection, "threshold");
      assertEquals((await config("a7_fuse")).fuse, true);
      assertEquals((await config("a9_rank_distill")).rankDistill, 1);
      // The budget row is evaluated in the budget mode (its token count is a learned mean), the fusion row
      // with the fused token (one more token's GMACs than the plain top-k row above it).
      const byStep = new Map(first.map((r) => [r.step, r]));
      const budget = byStep.get("a6_budget")!,
        fused = byStep.get("a7_fuse")!,
        plain = byStep.get("a5_keep_range")!;
      assert(budget.keptTokens! >= 0 && budget.keptTokens! <= 64, `budget row keeps ${budget.keptTokens}`);
      assertEquals(fused.keptTokens, plain.keptTokens);
      // The calibrated row evaluates the budget row's model (trained once) at the threshold where the
      // training images keep half their tokens on average.
      const calibrated = byStep.get("a8_budget_calibrated")!;
      assertEquals(calibrated.run, budget.run);
      assert(
        Math.abs(calibrated.calibration!.keepRatio - 0.5) < 0.01,
        JSON.stringify(calibrated.calibration),
      );
      assertEquals(budget.calibration, undefined);
      assert(fused.gmacs! > plain.gmacs!, `fusion row ${fused.gmacs} GMACs, plain ${plain.gmacs}`);
      const out = join(dir, "out");
      for (const f of ["ablation.md", "results.md", "results.json", "run.json"]) {
        assert((await Deno.stat(join(out, f))).size > 0, f);
      }
      const again = await ablation(dir);
      assertEquals(again, first);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "synthetic_ablation.ts --dataset fashion-mnist --steps: only the named steps, on Fashion-MNIST's validation split",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "hybrid_ablation_fm_" });
    try {
      await runTool("synthetic_ablation.ts", [
        "--profile",
        "quick",
        "--dataset",
        "fashion-mnist",
        "--steps",
        "a1_cnn_tokens",
        "--runs",
        join(dir, "runs"),
        "--out",
        join(dir, "out"),
      ]);
      const rows = JSON.parse(await Deno.readTextFile(join(dir, "out", "ablation.json"))) as Row[];
      assertEquals(rows.map((r) => r.step), ["a1_cnn_tokens"]);
      assertEquals(rows[0].selectionRecall, undefined, "Fashion-MNIST has no object masks");
      const run = JSON.parse(await Deno.readTextFile(join(dir, "out", "run.json"))) as {
        experiment: string;
        dataset: { name: string; split: string };
      };
      assertEquals(run.experiment, "hybrid_ablation_fashion-mnist");
      assertEquals(run.dataset.split, "val");
      assert(run.dataset.name.startsWith("fashion-mnist"), run.dataset.name);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
