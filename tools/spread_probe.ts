/**
 * Spread probe (validation split only): how much does spreading the kept tokens over the patch grid change
 * accuracy, for the token-dropout ViT under random and attention selection, for a hybrid's stage-1 selector
 * in front of that ViT, and for the trained hybrid? It chose the window side of notebook 06's spread hybrid.
 *
 *   deno run -A tools/spread_probe.ts [--runs results/runs/study_cpu_fashion-mnist] [--keep 0.5]
 *     [--windows 2,4] [--val 2000] [--hybrid hybrid_ec]
 *
 * Prints one JSON line per evaluation and a table. Reads the study's run folders (notebook 06 trains them).
 *
 * @module
 */
import { join } from "node:path";
import { initBackend, loadDataset } from "../lib/mod.ts";
import { createModelFromConfig, type Model } from "../lib/models/mod.ts";
import type { StrategyName } from "../lib/pruning/mod.ts";
import { evaluateStrategy, initFromRun } from "../lib/experiment/mod.ts";
import { stage1Hybrid } from "../lib/experiment/study.ts";
import { CliError, intFlag, parseCli, runCli } from "./cli.ts";

await runCli("spread_probe", async () => {
  const { values } = parseCli(Deno.args, {
    runs: { type: "string", default: join("results", "runs", "study_cpu_fashion-mnist") },
    keep: { type: "string", default: "0.5" },
    windows: { type: "string", default: "2,4" },
    val: { type: "string", default: "2000" },
    hybrid: { type: "string", default: "hybrid_ec" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) {
    console.log(
      "usage: deno run -A tools/spread_probe.ts [--runs DIR] [--keep R] [--windows 2,4] [--val N] [--hybrid RUN]",
    );
    return 0;
  }
  const keep = Number(values.keep);
  if (!(keep > 0 && keep < 1)) throw new CliError(`--keep "${values.keep}" is not a ratio in (0, 1)`);
  const windows = values.windows!.split(",").map((w) => intFlag("windows", w, 1));
  const runs = values.runs!;
  await initBackend(undefined, { log: false });
  const val = (await loadDataset("fashion-mnist", { split: "val", log: false, progress: false }))
    .subset(intFlag("val", values.val!, 1), 1);
  const rows: Record<string, unknown>[] = [];
  const ev = async (m: Model, what: string, strategy: StrategyName, spread?: number) => {
    const r = await evaluateStrategy(m, val, {
      strategy,
      keep: strategy === "none" ? 1 : keep,
      seed: 0,
      spread,
    });
    rows.push({
      what,
      strategy,
      spread: spread ?? "-",
      accuracy: +(100 * r.accuracy).toFixed(2),
      gmacs: +r.gmacs.toFixed(4),
    });
    console.log(JSON.stringify(rows.at(-1)));
  };
  const load = async (run: string) => {
    const m = createModelFromConfig(
      JSON.parse(await Deno.readTextFile(join(runs, run, "config.json"))).modelConfig,
    );
    await initFromRun(m, join(runs, run));
    return m;
  };
  const vit = await load("vit_td");
  await ev(vit, "vit_td", "none");
  for (const s of [undefined, ...windows]) await ev(vit, "vit_td", "random", s);
  for (const s of [undefined, ...windows]) await ev(vit, "vit_td", "attention", s);
  vit.dispose();
  // The hybrid's stage-1 selector in front of the unchanged token-dropout ViT (as scorerProbe does).
  const probe = await stage1Hybrid(join(runs, values.hybrid!), join(runs, "vit_td"));
  for (const s of [undefined, ...windows]) await ev(probe, `${values.hybrid} stage 1 + vit_td`, "cnn", s);
  probe.dispose();
  const hybrid = await load(values.hybrid!);
  for (const s of [undefined, ...windows]) await ev(hybrid, `${values.hybrid} trained`, "cnn", s);
  for (const s of [undefined, windows[0]]) await ev(hybrid, `${values.hybrid} trained`, "random", s);
  hybrid.dispose();
  console.table(rows);
  return 0;
});
