/**
 * Selection probe: on a dataset with object masks (the synthetic set), evaluates a trained hybrid run with
 * each token selection (its CNN's top-k, random tokens, the ViT's CLS attention) at several keep ratios on
 * the run's own evaluation split, and reports accuracy with the selection precision (kept tokens on the
 * object / kept tokens) and recall (object tokens kept / object tokens). Same model, same tokens budget:
 * only the choice of tokens differs, so this asks whether the selector finds what the class depends on.
 *
 *   deno run -A tools/selection_probe.ts --run DIR [--keeps 0.1,0.25,0.5] [--out FILE.json]
 *   deno run -A tools/selection_probe.ts --train cam|mask [--stage1-epochs N] --run DIR ...   (trains the run first, or resumes it)
 *
 * `--train` trains the hybrid this probe was made for: the synthetic set (4000 training images, the
 * validation split for evaluation, cpu profile), CNN tokens (timm's hybrid ViT: the ViT embeds the scorer's
 * stage map; on pixels the ViT stays near chance there), keep 0.5, and the selector's stage-1 target
 * `cam` (the CNN's own class-activation map: no supervision beyond labels) or `mask` (the object masks: an
 * oracle-supervised selector, an upper bound for what supervision of the selector can give).
 *
 * The evaluation set is rebuilt from the run's identity (dataset, split, size, seed) and checked against
 * its content fingerprint. With `--out`, writes the rows, a run.json (commit, backend) and the training run's
 * run.json (`training_run.json`) beside them.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { initBackend, loadDataset } from "../lib/mod.ts";
import { loadModel } from "../lib/weights/mod.ts";
import type { StrategyName } from "../lib/pruning/mod.ts";
import {
  checkRunEvalSet,
  evaluateStrategy,
  IDENTITY_FILE,
  type IdentityRecord,
  runTraining,
} from "../lib/experiment/mod.ts";
import { canResume } from "../lib/experiment/study.ts";
import { collectRunInfo } from "../lib/report/mod.ts";
import { parseDatasetName } from "../lib/data/mod.ts";
import { writeFileAtomic } from "../lib/util/mod.ts";
import { CliError, intFlag, parseCli, runCli } from "./cli.ts";

const HELP = `usage: deno run -A tools/selection_probe.ts [--train cam|mask [--stage1-epochs N]] --run DIR
         [--keeps 0.1,0.25,0.5] [--out FILE.json]

  --run DIR      a trained hybrid run folder (model.safetensors, identity.json) on a dataset with masks
  --train T      first train (or resume) that run: synthetic set, CNN tokens, keep 0.5, stage-1 target T
                 (cam: the CNN's class-activation map; mask: the object masks, an oracle)
  --stage1-epochs N  with --train: epochs of stage 1 (the CNN and its importance head; default the
                 cpu profile's)
  --keeps LIST   keep ratios in (0, 1), comma-separated (default 0.1,0.25,0.5)
  --out FILE     write the rows as JSON, and run.json in the same folder`;

await runCli("selection_probe", async () => {
  const { values } = parseCli(Deno.args, {
    run: { type: "string" },
    keeps: { type: "string", default: "0.1,0.25,0.5" },
    out: { type: "string" },
    train: { type: "string" },
    "stage1-epochs": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.run) throw new CliError("--run is required (a hybrid run folder)");
  const run = values.run;
  const keeps = values.keeps!.split(",").map((k) => {
    const v = Number(k);
    if (k.trim() === "" || !(v > 0 && v < 1)) throw new CliError(`--keeps: "${k}" is not a ratio in (0, 1)`);
    return v;
  });
  const s1 = values["stage1-epochs"];
  const stage1Epochs = s1 === undefined ? undefined : intFlag("stage1-epochs", s1, 1);
  if (stage1Epochs !== undefined && values.train === undefined) {
    throw new CliError("--stage1-epochs needs --train (it sets how the run is trained)");
  }
  if (values.train !== undefined) {
    if (values.train !== "cam" && values.train !== "mask") {
      throw new CliError(`--train "${values.train}" is not "cam" or "mask"`);
    }
    await initBackend(undefined, { log: false });
    await runTraining({
      model: "hybrid",
      dataset: "synthetic",
      profile: "cpu",
      override: { tokens: "cnn" },
      keep: 0.5,
      selectorTarget: values.train,
      ...(stage1Epochs === undefined ? {} : { stage1Epochs }),
      trainSubset: 4000,
      evalSubset: 1000,
      evalSplit: "val",
      seed: 0,
      out: run,
      resume: canResume(run),
    });
  }
  let record: IdentityRecord;
  try {
    record = JSON.parse(await Deno.readTextFile(join(run, IDENTITY_FILE))) as IdentityRecord;
  } catch (e) {
    throw new CliError(
      `--run "${run}": no readable ${IDENTITY_FILE} (${(e as Error).message}); expected a run folder`,
    );
  }
  const backend = await initBackend(undefined, { log: false });
  const model = await loadModel(join(run, "model.safetensors"));
  if (model.family !== "hybrid") {
    model.dispose();
    throw new CliError(`--run "${run}" holds a ${model.family}; expected a hybrid run`);
  }
  const id = record.identity.dataset.eval;
  const seed = Number((record.identity.config as { seed?: number }).seed ?? 0);
  const evalSet = await loadDataset(parseDatasetName(id.name), {
    split: id.split as "val" | "test",
    subset: id.size,
    subsetSeed: seed,
    log: false,
  });
  await checkRunEvalSet(run, evalSet, "selection_probe");
  if (!evalSet.masks) {
    throw new CliError(`--run "${run}": dataset "${id.name}" has no object masks to score selection`);
  }
  const rows: Record<string, unknown>[] = [];
  try {
    const full = await evaluateStrategy(model, evalSet, { strategy: "none", keep: 1, seed });
    rows.push({
      strategy: "none",
      keep: 1,
      accuracy: +(100 * full.accuracy).toFixed(2),
      gmacs: +full.gmacs.toFixed(4),
    });
    for (const keep of keeps) {
      for (const strategy of ["cnn", "random", "attention"] as StrategyName[]) {
        const r = await evaluateStrategy(model, evalSet, { strategy, keep, seed });
        rows.push({
          strategy,
          keep,
          accuracy: +(100 * r.accuracy).toFixed(2),
          precision: +(100 * (r.selection?.precision ?? NaN)).toFixed(1),
          recall: +(100 * (r.selection?.recall ?? NaN)).toFixed(1),
          gmacs: +r.gmacs.toFixed(4),
        });
        console.log(JSON.stringify(rows.at(-1)));
      }
    }
  } finally {
    model.dispose();
  }
  console.table(rows);
  if (values.out) {
    const info = await collectRunInfo({
      experiment: "selection_probe",
      profile: String((record.identity.config as { profile?: string }).profile ?? ""),
      dataset: { name: evalSet.name, split: evalSet.split, images: evalSet.size, source: evalSet.source },
      config: { run, keeps, backend: backend.name },
      seeds: [seed],
    });
    await Deno.mkdir(dirname(values.out), { recursive: true });
    await writeFileAtomic(values.out, JSON.stringify(rows, null, 2) + "\n");
    await writeFileAtomic(join(dirname(values.out), "run.json"), JSON.stringify(info, null, 2) + "\n");
    // Provenance to the training commit: the training run's own run.json beside the result.
    await writeFileAtomic(
      join(dirname(values.out), "training_run.json"),
      await Deno.readTextFile(join(run, "run.json")),
    );
    console.log(`wrote ${values.out}, run.json and training_run.json`);
  }
  return 0;
});
