/**
 * `deno task compare`: the study end to end. Executes notebooks 01-04 (ResNet18, ViT, hybrid, comparison)
 * headlessly in order with the chosen profile (default `cpu`, or `CNNVIT_PROFILE`), showing the running
 * notebook, cell and training progress, then prints the verdict (headline rows and claims, read from the
 * files notebook 04 exports) and where the tables and figures are.
 *
 * Ctrl-C stops cleanly (exit 130); `--resume` then skips the notebooks that finished, and training runs
 * continue from their checkpoints in `results/runs/`.
 *
 * ```
 * deno task compare [--profile quick|cpu|full] [--dataset NAME] [--seeds N] [--only NAME[,NAME]] [--resume]
 * ```
 *
 * @module
 */
import { basename, join, resolve } from "node:path";
import { parseProfile } from "../lib/profile.ts";
import { CliError, intFlag, parseCli, runCli, usage } from "./cli.ts";
import { ensureNpmPackages, importLater } from "./npm_setup.ts";

const root = resolve(new URL("..", import.meta.url).pathname);
const NOTEBOOKS = ["01_resnet18", "02_vit_small", "03_hybrid", "04_compare_models"];

const HELP = `Usage: deno task compare [options]

Runs notebooks ${NOTEBOOKS.join(", ")} headlessly (executed copies in results/notebooks/),
writing tables, figures and run.json to results/study/<profile>/, then prints the verdict.

  --profile NAME     quick | cpu | full (default: $CNNVIT_PROFILE or cpu)
  --dataset NAME     auto | cifar10 | fashion-mnist | synthetic (default: $CNNVIT_DATASET or auto)
  --seeds N          run the study for seeds 0..N-1 (from $CNNVIT_SEED when set; seed s > 0 in
                     results/study/<profile>_s<s>/) and print each seed's verdict and the mean ± sd over seeds
                     (default 1: seed 0)
  --only NAMES       only these notebooks (comma-separated names or unique prefixes, e.g. 03_hybrid or 03);
                     they read what earlier notebooks wrote
  --resume           continue an interrupted compare: skip the notebooks that finished (per seed); training
                     runs continue from their checkpoints in any case
  --timeout SEC      per-cell timeout (default 7200)
  --no-html          no HTML copies of the executed notebooks
  -h, --help         this text

Ctrl-C stops the running notebook (exit 130); the same command with --resume continues.`;

/** Notebook names from `--only` (names or unique prefixes), in study order. */
export function parseOnly(raw: string): string[] {
  const picked = new Set<string>();
  for (const part of raw.split(",").map((s) => s.trim()).filter(Boolean)) {
    const hits = NOTEBOOKS.filter((n) => n === part || n.startsWith(part));
    if (hits.length !== 1) {
      throw new CliError(
        `--only: "${part}" ${hits.length ? `is ambiguous (${hits.join(", ")})` : "names no notebook"}; ` +
          `expected one of ${NOTEBOOKS.join(", ")}`,
      );
    }
    picked.add(hits[0]);
  }
  if (picked.size === 0) throw new CliError(`--only "${raw}" names no notebook`);
  return NOTEBOOKS.filter((n) => picked.has(n));
}

async function main(): Promise<number> {
  const { values } = parseCli(Deno.args, {
    profile: { type: "string" },
    dataset: { type: "string" },
    seeds: { type: "string", default: "1" },
    only: { type: "string" },
    resume: { type: "boolean", default: false },
    timeout: { type: "string", default: "7200" },
    "no-html": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const profile = usage(() =>
    parseProfile(values.profile ?? Deno.env.get("CNNVIT_PROFILE") ?? "cpu", "--profile")
  );
  const seeds = intFlag("seeds", values.seeds!, 1);
  const firstSeed = Number(Deno.env.get("CNNVIT_SEED") ?? "0");
  if (!Number.isInteger(firstSeed) || firstSeed < 0) {
    throw new CliError(`CNNVIT_SEED "${Deno.env.get("CNNVIT_SEED")}" is not an integer ≥ 0`);
  }
  intFlag("timeout", values.timeout!, 1);
  const notebooks = values.only === undefined ? NOTEBOOKS : parseOnly(values.only);
  const rawDataset = values.dataset ?? Deno.env.get("CNNVIT_DATASET");
  await ensureNpmPackages(root, "compare");
  const { parseDatasetName } = await importLater<typeof import("../lib/data/mod.ts")>(
    new URL("../lib/data/mod.ts", import.meta.url),
  );
  const { studyPlan } = await importLater<typeof import("../lib/experiment/study.ts")>(
    new URL("../lib/experiment/study.ts", import.meta.url),
  );
  const { formatSeedSummary, formatStudyVerdict, readStudyVerdict } = await import("./study_verdict.ts");
  const dataset = rawDataset ? usage(() => parseDatasetName(rawDataset, "--dataset")) : undefined;

  let child: Deno.ChildProcess | undefined;
  let interrupted: Deno.Signal | undefined;
  const onSignal = (signal: Deno.Signal) => () => {
    // On a terminal the whole process group gets the signal; run_notebooks stops the kernel either way.
    interrupted ??= signal;
    try {
      child?.kill(signal);
    } catch { /* gone */ }
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((s) => [s, onSignal(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);

  const reportDirs: string[] = [];
  try {
    for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
      const plan = studyPlan(profile, { ...(dataset ? { dataset } : {}), seed });
      reportDirs.push(plan.reportDir);
      const tag = basename(plan.reportDir);
      console.log(
        `[compare] profile ${profile}${dataset ? `, dataset ${dataset}` : ""}, seed ${seed}` +
          `${seeds > 1 ? ` (${seed - firstSeed + 1} of ${seeds})` : ""}: ${notebooks.join(", ")}`,
      );
      const env: Record<string, string> = { CNNVIT_PROFILE: profile, CNNVIT_SEED: String(seed) };
      if (dataset) env.CNNVIT_DATASET = dataset;
      child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          join(root, "tools/run_notebooks.ts"),
          "--profile",
          profile,
          "--timeout",
          values.timeout!,
          "--state",
          join("results", "notebooks", `compare_${tag}.json`),
          ...(values.resume ? ["--resume"] : []),
          ...(values["no-html"] ? ["--no-html"] : []),
          ...notebooks,
        ],
        env,
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
      const { code } = await child.status;
      child = undefined;
      if (interrupted || code === 130) {
        const again = ["deno task compare", ...Deno.args.filter((a) => a !== "--resume"), "--resume"].join(
          " ",
        );
        console.log(`\n[compare] stopped (${interrupted ?? "interrupted"}). To continue: ${again}`);
        return 130;
      }
      if (code !== 0) return code;
    }
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }

  const verdicts = [];
  for (const dir of reportDirs) {
    try {
      verdicts.push(await readStudyVerdict(dir));
    } catch (e) {
      console.log(
        notebooks.includes("04_compare_models")
          ? `\n[compare] no verdict for ${dir}: ${(e as Error).message}`
          : `\n[compare] no verdict yet for ${dir}: notebook 04_compare_models has not run there`,
      );
    }
  }
  for (const v of verdicts) {
    console.log("");
    if (!notebooks.includes("04_compare_models")) {
      console.log("(04_compare_models did not run now: this verdict is from its last run)");
    }
    formatStudyVerdict(v).forEach((l) => console.log(l));
  }
  if (verdicts.length > 1) {
    console.log("");
    formatSeedSummary(verdicts).forEach((l) => console.log(l));
  }
  return 0;
}

if (import.meta.main) await runCli("compare", main);
