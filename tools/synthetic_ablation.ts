/**
 * One-seed ablation of the hybrid on the synthetic object-in-clutter set (or Fashion-MNIST, `--dataset`), on
 * the **validation split** (so its answers can choose a study's configuration): today's hybrid, the steps to
 * the synthetic study's configuration, then each further piece this wave built, added alone to that
 * configuration.
 *
 *   deno run -A tools/synthetic_ablation.ts [--dataset synthetic|fashion-mnist] [--seed 0] [--profile cpu|quick]
 *       [--runs DIR] [--out DIR]
 *
 * On the synthetic set the runs train on 4000 images and are evaluated on 1000 validation images; on
 * Fashion-MNIST on the cpu profile's 10000 and 2000 (notebook 06's sizes), which has no object masks, so
 * its rows have no selection precision/recall.
 *
 * Every row is a hybrid trained from scratch at keep 0.5 and evaluated at keep 0.5 (its CNN's top-k) and
 * with all tokens (how good its ViT is), with selection precision/recall against the object masks and
 * GMACs. Steps:
 *
 * 1. today's hybrid: pixel tokens, CAM target, linear selector head, CNN frozen in stage 2, the profile's
 *    stage-1 epochs;
 * 2. + CNN tokens (the ViT embeds the CNN's stage map, timm's hybrid ViT);
 * 3. + stage 1 as long as ResNet18 trains (8 epochs): the synthetic study's configuration;
 * 4. that + an MLP selector head with global context (DynamicViT's predictor);
 * 5. that + the CNN trained in stage 2 (lr × 0.1) with KL to the full-token ViT;
 * 6. that + the keep ratio drawn per batch in [0.4, 0.8] (one model for every ratio);
 * 7. that + a learned number of tokens per image (DynamicViT's threshold with the ratio loss towards 0.5),
 *    evaluated in the budget mode (the row's keep ratio and GMACs are the means over images; its random
 *    control keeps that mean ratio);
 * 8. that + EViT's dropped-token fusion (trained and evaluated with the fused token, which GMACs count; its
 *    random control fuses too);
 * 9. step 7's model, its budget-mode threshold calibrated on the training images (no labels) so images
 *    keep 0.5 of their tokens on average (`calibrateBudgetThreshold`): step 7 thresholds at 0, and nothing
 *    in training ties that count to the ratio loss's target;
 * 10. step 3 + rank distillation (`rankDistill: 1`): in stage 2 the selector also fits, by KL, the CLS
 *    attention of the ViT being trained on all tokens (the ViT-attention target in the form that works with
 *    CNN tokens; the stage-1 `vit_attention` target does not, see `runTraining`).
 *
 * Runs are resumable (`--runs`); writes ablation.{md,json}, results.{md,csv,json}, run.json and every training run's run.json
 * to `--out`.
 *
 * @module
 */
import { join } from "node:path";
import {
  type BudgetCalibration,
  calibrateBudgetThreshold,
  canResume,
  collectRunInfo,
  type Dataset,
  initBackend,
  type Model,
  recordRunMetrics,
  ResultTable,
  type RunMetrics,
  runTraining,
  trainingProvenance,
  type TrainingRunOptions,
  useProjectRoot,
  writeReport,
} from "../lib/mod.ts";
import {
  CliError,
  cpuOrQuick,
  intFlag,
  parseCli,
  runCli,
  STUDY_DATASETS,
  STUDY_FLAGS,
  studyDataset,
} from "./cli.ts";

/** The usage text (a function: it lists `STEPS`, defined below). */
const help = () =>
  `usage: deno run -A tools/synthetic_ablation.ts [--dataset synthetic|fashion-mnist] [--seed 0]
         [--profile cpu|quick] [--runs DIR] [--out DIR]

  --dataset D    synthetic (default: 4000 training, 1000 validation images) or fashion-mnist (the cpu
                 profile's 10000 and 2000)
  --seed N       seed of every run (default 0)
  --steps LIST   run only these steps, comma-separated names (default all: ${
    STEPS.map((s) => s.name).join(",")
  })
  --profile P    cpu (default) or quick (a few images: a smoke test, its numbers mean nothing)
  --runs DIR     training runs (default results/runs/synthetic_ablation_<profile> for the synthetic set,
                 results/runs/hybrid_ablation_<dataset>_<profile> otherwise; resumable)
  --out DIR      results folder (default results/ablation/<profile>/<dataset>)`;

const KEEP = 0.5;
const CPU: TrainingRunOptions = {
  model: "hybrid",
  dataset: "synthetic",
  profile: "cpu",
  keep: KEEP,
  selectorTarget: "cam",
  trainSubset: 4000,
  evalSubset: 1000,
  evalSplit: "val",
};
const QUICK: TrainingRunOptions = {
  ...CPU,
  profile: "quick",
  trainSubset: 128,
  evalSubset: 64,
  epochs: 1,
  batchSize: 32,
  progress: false,
};

/** The study's configuration (step 3), which steps 4-6 each extend. */
const STUDY: Partial<TrainingRunOptions> = { override: { tokens: "cnn" }, stage1Epochs: 8 };
/** Step 7's training (a learned count per image), which step 9 evaluates again: one definition for both. */
const BUDGET: Partial<TrainingRunOptions> = { ...STUDY, selection: "threshold" };

/** The ablation's steps: a run name, what the row says, and the options on top of the base. */
export const STEPS: {
  name: string;
  label: string;
  options: Partial<TrainingRunOptions>;
  /**
   * How the row is evaluated, when not the plain top-k at keep 0.5: the budget mode (at threshold 0, or at
   * the threshold calibrated on the training images to keep 0.5 on average), fusion.
   */
  evaluate?: { budget?: boolean; calibrate?: boolean; fuse?: boolean };
  /**
   * Another step whose training run this row evaluates differently (trained once; `options` must be that
   * step's, or resuming its run fails the run-identity check).
   */
  run?: string;
}[] = [
  {
    name: "a0_today",
    label: "today's hybrid (pixel tokens, CAM target, linear head, frozen CNN, profile's stage-1 epochs)",
    options: {},
  },
  { name: "a1_cnn_tokens", label: "+ CNN tokens", options: { override: { tokens: "cnn" } } },
  { name: "a2_stage1_8", label: "+ stage 1 for 8 epochs (the synthetic study's hybrid)", options: STUDY },
  {
    name: "a3_mlp_head",
    label: "study's hybrid + MLP selector head with global context",
    options: { ...STUDY, override: { tokens: "cnn", selectorHead: "mlp" } },
  },
  {
    name: "a4_unfrozen_kl",
    label: "study's hybrid + CNN trained in stage 2 (lr × 0.1) + KL to the full-token ViT",
    options: { ...STUDY, cnnMode: "lower-lr", distill: 0.5 },
  },
  {
    name: "a5_keep_range",
    label: "study's hybrid + keep ratio drawn per batch in [0.4, 0.8]",
    options: { ...STUDY, keepRange: [0.4, 0.8] },
  },
  {
    name: "a6_budget",
    label:
      "study's hybrid + learned tokens per image (threshold, ratio loss to 0.5; budget mode at inference)",
    options: BUDGET,
    evaluate: { budget: true },
  },
  {
    name: "a7_fuse",
    label: "study's hybrid + dropped-token fusion (EViT's extra token, weighted by the CNN's scores)",
    options: { ...STUDY, fuse: true },
    evaluate: { fuse: true },
  },
  {
    name: "a8_budget_calibrated",
    label: "the budget row's model, its threshold calibrated on the training images to keep 0.5 on average",
    options: BUDGET,
    evaluate: { budget: true, calibrate: true },
    run: "a6_budget",
  },
  {
    name: "a9_rank_distill",
    label:
      "study's hybrid + rank distillation (the selector also fits the ViT's own CLS attention on all tokens)",
    options: { ...STUDY, rankDistill: 1 },
  },
];

await runCli("synthetic_ablation", async () => {
  const { values } = parseCli(Deno.args, {
    seed: { type: "string", default: "0" },
    dataset: { type: "string", default: "synthetic" },
    steps: { type: "string" },
    ...STUDY_FLAGS,
  });
  if (values.help) {
    console.log(help());
    return 0;
  }
  const seed = intFlag("seed", values.seed!, 0);
  const profile = cpuOrQuick(values.profile!);
  const name = studyDataset(values.dataset!);
  const data = STUDY_DATASETS[name];
  const base: TrainingRunOptions = profile === "quick"
    ? { ...QUICK, dataset: data.dataset }
    : { ...CPU, ...data };
  const runs = values.runs ??
    (name === "synthetic"
      ? `results/runs/synthetic_ablation_${profile}`
      : `results/runs/hybrid_ablation_${name}_${profile}`);
  const outDir = values.out ?? `results/ablation/${profile}/${name}`;
  useProjectRoot();
  const backend = await initBackend(undefined, { log: false });
  const t0 = performance.now();
  const rows: (RunMetrics & {
    step: string;
    allTokensAccuracy: number;
    randomAccuracy: number;
    calibration?: BudgetCalibration;
  })[] = [];
  const trained: string[] = [];
  let evalSet: Dataset | undefined;
  const steps = values.steps === undefined ? STEPS : values.steps.split(",").map((n) => {
    const step = STEPS.find((s) => s.name === n.trim());
    if (!step) throw new CliError(`--steps: "${n}" is not one of ${STEPS.map((s) => s.name).join(", ")}`);
    return step;
  });
  for (const step of steps) {
    const out = join(runs, step.run ?? step.name);
    const options = { ...base, ...step.options } as TrainingRunOptions;
    if (profile === "quick" && options.stage1Epochs) options.stage1Epochs = 1;
    const r = await runTraining({ ...options, seed, out, resume: canResume(out), keepModel: true });
    const model: Model = r.model!;
    try {
      trained.push(r.outDir);
      evalSet = r.evalDataset;
      const metrics = (
        strategy: "cnn" | "random" | "none",
        keep: number,
        more: { budget?: boolean; budgetThreshold?: number; fuse?: boolean } = {},
      ) =>
        recordRunMetrics(model, r.evalDataset, {
          ...more,
          label: step.label,
          strategy,
          keep,
          training: "scratch",
          run: r.outDir,
          seed,
          benchBatch: 128,
          measureSpeed: false,
        });
      const all = await metrics("none", 1);
      // The same ViT on as many random tokens (no fine-tuning): does its selector pick better than chance?
      // With the budget mode the random control keeps as many tokens as the selector did on average.
      // Calibrated on images only (no labels), and on the training images: nothing is chosen on the split
      // the row is evaluated on.
      const calibration = step.evaluate?.calibrate
        ? await calibrateBudgetThreshold(model, r.trainDataset, KEEP)
        : undefined;
      const { row } = await metrics("cnn", KEEP, {
        budget: step.evaluate?.budget,
        fuse: step.evaluate?.fuse,
        budgetThreshold: calibration?.threshold,
      });
      // (keepCount keeps at least one token, so a ratio near 0 is fine; exactly 0 is not a keep ratio.)
      const randomKeep = step.evaluate?.budget ? Math.max(row.keepRatio!, Number.EPSILON) : KEEP;
      const random = await metrics("random", randomKeep, { fuse: step.evaluate?.fuse });
      rows.push({
        ...row,
        step: step.name,
        allTokensAccuracy: all.row.accuracy,
        randomAccuracy: random.row.accuracy,
        ...(calibration ? { calibration } : {}),
      });
      console.log(
        `${step.name}: ${(100 * row.accuracy).toFixed(2)}% at keep ${KEEP}, ` +
          `${(100 * all.row.accuracy).toFixed(2)}% with all tokens`,
      );
    } finally {
      model.dispose();
    }
  }
  const table = new ResultTable(rows, {
    caption: `Ablation of the hybrid on ${evalSet!.name} (${evalSet!.split} split, ${
      evalSet!.size
    } images, seed ${seed}, keep ${KEEP}; 95% bootstrap interval)`,
  });
  console.log(table.toMarkdown());
  const prov = await trainingProvenance(trained);
  const info = await collectRunInfo({
    experiment: name === "synthetic" ? "synthetic_ablation" : `hybrid_ablation_${name}`,
    profile,
    dataset: { name: evalSet!.name, split: evalSet!.split, images: evalSet!.size, source: evalSet!.source },
    config: { base, steps, keep: KEEP, backend: backend.name },
    seeds: [seed],
    durations: { totalSeconds: (performance.now() - t0) / 1000 },
    extra: { trainedAt: prov.runs, trainingCommits: prov.commits },
  });
  const pct = (v?: number) => (v === undefined ? "-" : (100 * v).toFixed(1));
  const md = [
    `# ${table.caption}`,
    "",
    "Generated by tools/synthetic_ablation.ts from the runs listed in run.json. Accuracy in percent with the",
    "hybrid's own top-k at keep 0.5 [95% bootstrap interval over images], with as many random tokens and with",
    "all tokens (the same model, no fine-tuning);",
    name === "synthetic"
      ? "precision and recall of the kept tokens against the object masks."
      : "no precision/recall: this dataset has no object masks.",
    "",
    "Tokens kept: patch tokens per image (the budget row: the mean of a learned count), GMACs at that count",
    "(the fusion row: one more token).",
    "",
    "| step | accuracy at keep 0.5 | random tokens | all tokens | precision / recall | tokens kept | GMACs |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) =>
      `| ${r.model} | ${pct(r.accuracy)} [${pct(r.accuracyCI?.[0])}, ${pct(r.accuracyCI?.[1])}] | ${
        pct(r.randomAccuracy)
      } | ${pct(r.allTokensAccuracy)} | ${pct(r.selectionPrecision)} / ${pct(r.selectionRecall)} | ${
        r.keptTokens?.toFixed(1)
      } | ${r.gmacs?.toFixed(4)} |`
    ),
    "",
  ].join("\n");
  console.log(md);
  const report = await writeReport(outDir, {
    table,
    run: info,
    files: {
      ...prov.files,
      "ablation.md": md,
      "ablation.json": JSON.stringify(
        rows.map((r) => ({
          step: r.step,
          label: r.model,
          accuracy: r.accuracy,
          accuracyCI: r.accuracyCI,
          allTokensAccuracy: r.allTokensAccuracy,
          randomAccuracy: r.randomAccuracy,
          keptTokens: r.keptTokens,
          gmacs: r.gmacs,
          selectionPrecision: r.selectionPrecision,
          selectionRecall: r.selectionRecall,
          run: r.run,
          calibration: r.calibration,
        })),
        null,
        2,
      ) + "\n",
    },
  });
  console.log(`wrote ${report.dir}: ${report.files.length} files`);
  return 0;
});
