/**
 * `deno task compare`: the study end to end. Executes notebooks 01-04 (ResNet18, ViT, hybrid, comparison)
 * headlessly in order with the chosen profile (default `cpu`, or `CNNVIT_PROFILE`), then prints where the
 * comparison table and figures are. Finished or interrupted training runs are resumed from their
 * checkpoints in `results/runs/`, so re-running after an interruption loses nothing.
 *
 * ```
 * deno task compare [--profile quick|cpu|full] [--dataset auto|cifar10|fashion-mnist|synthetic]
 * ```
 */
import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { parseProfile } from "../lib/profile.ts";
import { parseDatasetName } from "../lib/data/mod.ts";
import { studyPlan } from "../lib/experiment/study.ts";

const root = resolve(new URL("..", import.meta.url).pathname);
const { values } = parseArgs({
  args: Deno.args,
  options: {
    profile: { type: "string" },
    dataset: { type: "string" },
    timeout: { type: "string", default: "7200" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    `Usage: deno task compare [--profile quick|cpu|full] [--dataset NAME] [--timeout SECONDS_PER_CELL]

Runs notebooks 01_resnet18, 02_vit_small, 03_hybrid and 04_compare_models headlessly (executed copies in
results/notebooks/), writing tables, figures and run.json to results/study/<profile>/.`,
  );
  Deno.exit(0);
}
let profile, dataset;
try {
  profile = parseProfile(values.profile ?? Deno.env.get("CNNVIT_PROFILE") ?? "cpu", "--profile");
  dataset = values.dataset ? parseDatasetName(values.dataset, "--dataset") : undefined;
} catch (e) {
  console.error(`compare: ${(e as Error).message}`);
  Deno.exit(2);
}
const env: Record<string, string> = { CNNVIT_PROFILE: profile };
if (dataset) env.CNNVIT_DATASET = dataset;
console.log(`[compare] profile ${profile}${dataset ? `, dataset ${dataset}` : ""}: notebooks 01-04`);
const r = await new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    join(root, "tools/run_notebooks.ts"),
    "--profile",
    profile,
    "--timeout",
    values.timeout!,
    "01_resnet18",
    "02_vit_small",
    "03_hybrid",
    "04_compare_models",
  ],
  env,
  stdout: "inherit",
  stderr: "inherit",
}).output();
const plan = studyPlan(profile, dataset ? { dataset } : {});
const out = join(plan.reportDir, "04_compare_models");
if (r.success) {
  console.log(`\n[compare] done. Comparison table: ${join(out, "results.md")} (also .csv, .json)`);
  console.log(
    `[compare] expected-results table: ${join(out, "expected_results.md")}; verdict: ${
      join(out, "claims.md")
    }`,
  );
  console.log(
    `[compare] figures: ${
      join(out, "figures")
    }/; per-notebook outputs: ${plan.reportDir}/; executed notebooks: results/notebooks/`,
  );
}
Deno.exit(r.code);
