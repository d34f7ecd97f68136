/**
 * Equal-cost study on the synthetic object-in-clutter set, where the class depends on a few tokens (an object
 * among distractors) and token selection should matter: the CNN-guided hybrid against random and attention
 * (EViT) selection and training-free ToMe merging at the same total GMACs per image, over seeds. The same
 * study runs on Fashion-MNIST with `--dataset fashion-mnist` (the cpu profile's 10000 training images, each
 * seed's 2000-image test subset, as notebook 06; no object masks, so no selection precision/recall).
 *
 *   deno run -A tools/synthetic_study.ts [--dataset synthetic|fashion-mnist] [--seeds 0,1,2] [--keeps 0.25,0.5,0.6]
 *       [--profile cpu|quick] [--runs DIR] [--out DIR]
 *
 * Per seed, every model makes its ViT tokens with the same CNN stem (CNN tokens, timm's hybrid ViT: on
 * pixels the ViT stays near chance on this set):
 *
 * - **hybrid**: the configuration `tools/selection_probe.ts` evaluated on the validation split (CNN tokens,
 *   stage-1 target `cam`, i.e. labels only, cpu profile, 4000 training images), trained at keep 0.5; its
 *   stage-1 CNN is the tokenizer of every other run (`cnnFrom`), and a hybrid is trained at each other keep
 *   ratio of `--keeps` on it;
 * - **random** and **attention** controls: the same CNN, the ViT trained from the same initialisation with
 *   the same recipe under random or attention selection, at the token count where the control costs what
 *   the hybrid costs at that keep ratio (`matchTokens`), one pair per keep ratio;
 * - **merge**: ToMe on the random control's ViT, training-free, matched in GMACs the same way;
 * - the **ViT on CNN tokens with all tokens** (same CNN, same recipe: the unpruned reference) and
 *   **ResNet18** alone (the profile's size, on pixels), and at the hybrid's CNN width (8, about a quarter of
 *   the GMACs): a hybrid is on the Pareto front only if no CNN alone is as accurate for no more GMACs.
 *
 * Every model is evaluated on the synthetic set's whole test split (1000 images) at the cost it was trained for. Rows carry
 * selection precision/recall against the object masks and measured img/s (first seed). Runs are resumable:
 * an interrupted study continues from the checkpoints in `--runs`. Writes results.{md,csv,json}, claims.md,
 * per_seed.json, the accuracy-vs-GMACs figure, run.json and every training run's run.json to `--out`.
 *
 * @module
 */
import { join } from "node:path";
import {
  accuracyVsGmacsPlot,
  accuracyVsThroughputPlot,
  canResume,
  collectRunInfo,
  createStrategy,
  type Dataset,
  formatSeedCI,
  initBackend,
  matchTokens,
  type Model,
  pairedDifference,
  recordRunMetrics,
  type ResultRow,
  ResultTable,
  type RunMetrics,
  runTraining,
  type SeedSummary,
  seedSummary,
  singleStage,
  type StrategyName,
  trainingProvenance,
  type TrainingRunOptions,
  trainProfile,
  useProjectRoot,
  writeReport,
} from "../lib/mod.ts";
import { identityDifferences } from "../lib/experiment/run_identity.ts";
import { CliError, cpuOrQuick, parseCli, runCli, STUDY_DATASETS, STUDY_FLAGS, studyDataset } from "./cli.ts";

const HELP = `usage: deno run -A tools/synthetic_study.ts [--dataset synthetic|fashion-mnist] [--seeds 0,1,2]
         [--keeps 0.25,0.5,0.6] [--profile cpu|quick] [--runs DIR] [--out DIR] [--merge DIR]

  --dataset D    synthetic (default: 4000 training images, the 1000-image test split) or fashion-mnist (the
                 cpu profile's 10000 training images, each seed's 2000-image test subset)
  --seeds LIST   seeds, comma-separated (default 0,1,2); each trains the hybrid, both controls, the
                 all-token ViT on CNN tokens and ResNet18
  --keeps LIST   keep ratios of the hybrid, in (0, 1) (default 0.25,0.5,0.6): at each, the hybrid and the
                 controls are trained for its cost
  --profile P    cpu (default: the study) or quick (a few images, a minute: a smoke test)
  --runs DIR     training runs (default results/runs/synthetic_study_<profile>, or
                 results/runs/cnn_tokens_study_<dataset>_<profile>; resumable)
  --out DIR      results folder (default results/study/<profile>/07_synthetic_equal_cost, or
                 results/study/<profile>/08_<dataset>_cnn_tokens)
  --merge DIR    add the seeds of an earlier result of this study (DIR, e.g. the --out folder of an
                 earlier invocation) to the seeds trained here: same configuration and --keeps, no seed
                 twice, every variant at the same GMACs. Only --seeds are trained and evaluated; the
                 earlier seeds' numbers and provenance come from DIR (the result counts as having local
                 changes if DIR's did). Running all seeds at once gives the same table from scratch.`;

/**
 * What every run of the study shares: the selection probe's validated configuration, on the test split.
 * Stage 1 trains the CNN for 8 epochs, the ResNet18's own budget, instead of the cpu profile's 2: on the
 * validation split (`tools/selection_probe.ts --train cam --stage1-epochs 8`, seed 0) the hybrid at keep 0.5
 * went from 41.8% to 79.8% and the ViT on all its CNN tokens from 40.8% to 73.8%; every ViT here embeds
 * that CNN's stage map, and after 2 epochs the CNN itself was at 18%.
 */
const CPU: Omit<TrainingRunOptions, "model"> = {
  dataset: "synthetic",
  profile: "cpu",
  override: { tokens: "cnn" },
  stage1Epochs: 8,
  trainSubset: 4000,
  evalSubset: 1000,
  evalSplit: "test",
};
/** `--profile quick`: the same study on a few images for a minute (CI runs it; its numbers mean nothing). */
const QUICK: Omit<TrainingRunOptions, "model"> = {
  ...CPU,
  profile: "quick",
  trainSubset: 128,
  evalSubset: 64,
  epochs: 1,
  stage1Epochs: 1,
  batchSize: 32,
  progress: false,
};
let BASE = CPU;
/** The keep ratio the hybrid trains at, and at whose cost the controls are trained. */
/** The keep ratio of the main hybrid (whose stage-1 CNN every run shares), as the probe chose it. */
const TRAIN_KEEP = 0.5;
const BENCH_BATCH = 128;
/** Width of the narrow ResNet18 reference: the hybrid's own CNN width in the cpu profile (8). */
const NARROW_WIDTH = (trainProfile("cpu").models.hybrid.overrides.resnet as { width: number }).width;
const RESNET_NARROW = `ResNet18 (width ${NARROW_WIDTH})`;

/** One evaluated variant of one seed. */
interface SeedRow extends RunMetrics {
  seed: number;
  variant: string;
}

function parseList(flag: string, raw: string, ok: (v: number) => boolean, want: string): number[] {
  return raw.split(",").map((k) => {
    const v = Number(k);
    if (k.trim() === "" || !ok(v)) throw new CliError(`--${flag}: "${k}" is not ${want}`);
    return v;
  });
}

await runCli("synthetic_study", async () => {
  const { values } = parseCli(Deno.args, {
    seeds: { type: "string", default: "0,1,2" },
    keeps: { type: "string", default: "0.25,0.5,0.6" },
    dataset: { type: "string", default: "synthetic" },
    merge: { type: "string" },
    ...STUDY_FLAGS,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const seeds = parseList("seeds", values.seeds!, (v) => Number.isInteger(v) && v >= 0, "an integer ≥ 0");
  const keeps = parseList("keeps", values.keeps!, (v) => v > 0 && v < 1, "a ratio in (0, 1)");
  const profile = cpuOrQuick(values.profile!);
  const name = studyDataset(values.dataset!);
  BASE = profile === "quick" ? { ...QUICK, dataset: name } : { ...CPU, ...STUDY_DATASETS[name] };
  const synthetic = name === "synthetic";
  const experiment = synthetic ? "07_synthetic_equal_cost" : `08_${name}_cnn_tokens`;
  const runs = values.runs ??
    (synthetic
      ? `results/runs/synthetic_study_${profile}`
      : `results/runs/cnn_tokens_study_${name}_${profile}`);
  const outDir = values.out ?? `results/study/${profile}/${experiment}`;
  useProjectRoot();
  const backend = await initBackend(undefined, { log: false });
  const config = { base: BASE, trainKeep: TRAIN_KEEP, keeps, benchBatch: BENCH_BATCH, backend: backend.name };
  // Read before anything is trained: a mismatch fails in a second, and `--out` may be the same folder.
  const earlier = values.merge ? await readEarlier(values.merge, experiment, config, seeds) : undefined;
  const t0 = performance.now();
  const rows: SeedRow[] = [];
  const trained: string[] = [];
  const matched: Record<string, unknown>[] = [];
  let evalSet: Dataset | undefined;
  for (const seed of seeds) {
    const models: Model[] = [];
    try {
      const runSeed = await trainSeed(seed, runs, keeps, models, trained);
      evalSet = runSeed.evalSet;
      rows.push(...await evaluateSeed(seed, runSeed, keeps, seed === seeds[0] ? matched : undefined));
    } finally {
      for (const m of models) m.dispose();
    }
  }
  if (earlier) rows.unshift(...mergeEarlier(earlier, rows));
  const allSeeds = [...new Set(rows.map((r) => r.seed))].sort((a, b) => a - b);
  const { table, summary, claims } = summarise(rows, keeps, allSeeds, evalSet!, matched, earlier);
  console.log(table.toMarkdown());
  const prov = await trainingProvenance(trained);
  const info = await collectRunInfo({
    experiment,
    profile,
    dataset: { name: evalSet!.name, split: evalSet!.split, images: evalSet!.size, source: evalSet!.source },
    config,
    seeds: allSeeds,
    durations: { totalSeconds: (performance.now() - t0) / 1000 },
    extra: {
      trainedAt: { ...earlier?.trainedAt, ...prov.runs },
      trainingCommits: [...new Set([...earlier?.trainingCommits ?? [], ...prov.commits])],
      ...(earlier ? { merged: earlier.provenance } : {}),
    },
  });
  // A result is from committed code only if everything in it is: an earlier result's local changes count.
  if (earlier && earlier.provenance.git.dirty !== false && info.git.dirty === false) {
    info.git.dirty = earlier.provenance.git.dirty;
  }
  const report = await writeReport(outDir, {
    table,
    run: info,
    figures: figures(table.rows, allSeeds.length, evalSet!.name),
    files: {
      ...earlier?.files,
      ...prov.files,
      "claims.md": claims,
      // Whole rows: a later `--merge` of this folder needs nothing else.
      "per_seed.json": JSON.stringify(rows, null, 2) + "\n",
    },
  });
  console.log(claims);
  console.log(`wrote ${report.dir}: ${report.files.length} files (${summary.size} variants)`);
  return 0;
});

type Trained = { model: Model; dir: string };

interface TrainedSeed {
  evalSet: Dataset;
  /** Per keep ratio: the hybrid trained at it, and the controls trained at its cost. */
  byKeep: Map<number, { hybrid: Trained; random: Trained; attention: Trained }>;
  /** The ViT on the same CNN's tokens, trained and evaluated on all of them: the unpruned reference. */
  full: Trained;
  resnet18: Trained;
  /** ResNet18 at the hybrid's CNN width (8): about a quarter of the GMACs, for the Pareto question. */
  resnet18Narrow: Trained;
}

/**
 * Trains (or resumes, or loads) one seed's runs: the hybrid at keep 0.5 (its stage-1 CNN is every other
 * run's tokenizer, `cnnFrom`), the hybrid at each other keep ratio, the random and attention controls at
 * each hybrid's cost, the all-token ViT on CNN tokens and ResNet18.
 */
async function trainSeed(
  seed: number,
  runs: string,
  keeps: number[],
  models: Model[],
  trained: string[],
): Promise<TrainedSeed> {
  const run = async (
    o: Partial<TrainingRunOptions>,
    name: string,
  ): Promise<Trained & { evalSet: Dataset }> => {
    const out = join(runs, `s${seed}`, name);
    const r = await runTraining({
      ...BASE,
      model: "hybrid",
      seed,
      ...o,
      out,
      resume: canResume(out),
      keepModel: true,
    });
    models.push(r.model!);
    trained.push(r.outDir);
    return { model: r.model!, dir: r.outDir, evalSet: r.evalDataset };
  };
  const main = await run({ keep: TRAIN_KEEP, selectorTarget: "cam" }, "hybrid");
  const byKeep: TrainedSeed["byKeep"] = new Map();
  // The main comparison first, then the references. Runs at keep 0.5 carry no suffix.
  for (const keep of [TRAIN_KEEP, ...keeps.filter((k) => k !== TRAIN_KEEP)]) {
    const suffix = keep === TRAIN_KEEP ? "" : `_k${keep}`;
    const hybrid = keep === TRAIN_KEEP ? main : await run({ keep, cnnFrom: main.dir }, `hybrid${suffix}`);
    const cost = createStrategy("cnn").gmacs(hybrid.model, singleStage(keep, 0));
    const control = (strategy: "random" | "attention") =>
      run({
        strategy,
        keep: matchTokens(main.model, strategy, strategy === "attention" ? 1 : 0, cost).keep,
        cnnFrom: main.dir,
      }, `${strategy}${suffix}`);
    byKeep.set(keep, { hybrid, random: await control("random"), attention: await control("attention") });
  }
  const full = await run({ strategy: "none", keep: 1, cnnFrom: main.dir }, "full");
  // The CNN alone at the profile's ResNet18 size (pixels in, no tokens).
  const resnet18 = await run({ model: "resnet18", override: undefined }, "resnet18");
  const resnet18Narrow = await run(
    { model: "resnet18", override: { width: NARROW_WIDTH } },
    `resnet18_w${NARROW_WIDTH}`,
  );
  return { evalSet: main.evalSet, byKeep, full, resnet18, resnet18Narrow };
}

/** Every variant of one seed on that seed's test subset (speed measured on the first seed evaluated). */
async function evaluateSeed(
  seed: number,
  t: TrainedSeed,
  keeps: number[],
  /** The first seed: the matched token counts go here (the same for every seed), and speed is measured. */
  matched?: Record<string, unknown>[],
): Promise<SeedRow[]> {
  const out: SeedRow[] = [];
  const measureSpeed = matched !== undefined;
  const record = async (m: Trained, variant: string, strategy: StrategyName, keep: number) => {
    const { row } = await recordRunMetrics(m.model, t.evalSet, {
      label: variant,
      strategy,
      keep,
      training: strategy === "merge" ? "none" : "scratch",
      run: m.dir,
      benchBatch: BENCH_BATCH,
      seed,
      measureSpeed,
    });
    out.push({ ...row, run: m.dir, seed, variant });
    console.log(
      `seed ${seed} ${variant}: ${(100 * row.accuracy).toFixed(2)}% at ${row.gmacs?.toFixed(4)} GMACs`,
    );
  };
  await record(t.resnet18, "ResNet18", "none", 1);
  await record(t.resnet18Narrow, RESNET_NARROW, "none", 1);
  await record(t.full, "ViT on CNN tokens (all tokens)", "none", 1);
  for (const keep of keeps) {
    const k = t.byKeep.get(keep)!;
    await record(k.hybrid, `hybrid@${keep}`, "cnn", keep);
    const cost = createStrategy("cnn").gmacs(k.hybrid.model, singleStage(keep, 0));
    // Merge (training-free) runs on the ViT trained under random tokens at this cost.
    for (const [c, m] of [["random", k.random], ["attention", k.attention], ["merge", k.random]] as const) {
      const match = matchTokens(m.model, c, c === "attention" ? 1 : 0, cost);
      matched?.push({
        control: `${c}=hybrid@${keep}`,
        tokens: match.tokens,
        gmacs: +match.gmacs.toFixed(4),
        hybridGmacs: +cost.toFixed(4),
        // Attention pays block 0 on every token: below some cost it cannot match the hybrid at all.
        difference: `${(100 * (match.gmacs / cost - 1)).toFixed(1)}%`,
      });
      await record(m, `${c}=hybrid@${keep}`, c, match.keep);
    }
  }
  return out;
}

/** An earlier result of this study whose seeds `--merge` adds to the seeds trained now. */
interface Earlier {
  /** Its per_seed.json rows (files written before whole rows were kept lack the per-variant constants). */
  rows: (Partial<SeedRow> & Pick<SeedRow, "seed" | "variant" | "accuracy" | "gmacs" | "run">)[];
  /** Its training runs' run.json files, by their path in the results folder. */
  files: Record<string, string>;
  trainedAt: Record<string, unknown>;
  trainingCommits: string[];
  provenance: {
    from: string;
    seeds: number[];
    git: { commit: string | null; dirty: boolean | null };
    createdAt: string;
    command?: unknown;
  };
}

/**
 * Reads the result folder `--merge` names and checks it can join this run: the same experiment and
 * configuration (dataset, profile, keep ratios, backend) and no seed in both. Its git state carries over:
 * the merged result counts as having local changes if the earlier one had.
 */
async function readEarlier(
  dir: string,
  experiment: string,
  config: unknown,
  seeds: number[],
): Promise<Earlier> {
  const what = `--merge ${dir}`;
  const read = async (file: string) => {
    try {
      return await Deno.readTextFile(join(dir, file));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new CliError(
        `${what}: no ${file} there; expected the --out folder of an earlier run of this study ` +
          `(e.g. results/study/cpu/${experiment})`,
      );
    }
  };
  const info = JSON.parse(await read("run.json")) as {
    experiment: string;
    config: unknown;
    seeds: number[];
    git?: { commit: string | null; dirty: boolean | null };
    createdAt: string;
    command?: unknown;
    extra?: { trainedAt?: Record<string, unknown>; trainingCommits?: string[] };
  };
  if (info.experiment !== experiment) {
    throw new CliError(
      `${what}: it holds "${info.experiment}", this run is "${experiment}" (--dataset, --profile)`,
    );
  }
  const diff = identityDifferences(info.config, config);
  if (diff.length > 0) {
    throw new CliError(`${what}: its configuration differs from this run's (${diff.join("; ")})`);
  }
  const twice = info.seeds.filter((s) => seeds.includes(s));
  if (twice.length > 0) {
    throw new CliError(`${what}: seed(s) ${twice.join(", ")} are there already; leave them out of --seeds`);
  }
  const rows = JSON.parse(await read("per_seed.json")) as Earlier["rows"];
  const rowSeeds = [...new Set(rows.map((r) => r.seed))].sort((a, b) => a - b);
  if (JSON.stringify(rowSeeds) !== JSON.stringify([...info.seeds].sort((a, b) => a - b))) {
    throw new CliError(`${what}: per_seed.json has seeds ${rowSeeds}, run.json says ${info.seeds}`);
  }
  const files: Record<string, string> = {};
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(join(dir, rel))) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory) await walk(r);
      else if (e.isFile) files[r] = await Deno.readTextFile(join(dir, r));
    }
  };
  await walk("training_runs");
  return {
    rows,
    files,
    trainedAt: info.extra?.trainedAt ?? {},
    trainingCommits: info.extra?.trainingCommits ?? [],
    provenance: {
      from: dir,
      seeds: info.seeds,
      git: info.git ?? { commit: null, dirty: null },
      createdAt: info.createdAt,
      command: info.command,
    },
  };
}

/**
 * The earlier result's rows as whole rows, checked against this run's: the same variants, and each at the
 * same GMACs (the same models and token counts); the per-variant constants come from this run's row.
 */
function mergeEarlier(earlier: Earlier, rows: SeedRow[]): SeedRow[] {
  // What a variant's rows share across seeds (the model and its cost), copied into older, shorter rows.
  const PER_VARIANT = [
    "model",
    "strategy",
    "dataset",
    "keepRatio",
    "tokenReduction",
    "keptTokens",
    "gmacsCnn",
    "gmacsVit",
    "params",
    "backend",
    "batchSize",
    "training",
  ] as const;
  const here = new Map(rows.map((r) => [r.variant, r]));
  const there = new Set(earlier.rows.map((r) => r.variant));
  const missing = [...here.keys()].filter((v) => !there.has(v));
  if (missing.length > 0) throw new CliError(`--merge: the earlier result has no ${missing.join(", ")}`);
  return earlier.rows.map((old) => {
    const now = here.get(old.variant);
    if (!now) throw new CliError(`--merge: this run has no variant "${old.variant}" (seed ${old.seed})`);
    if (Math.abs(old.gmacs! - now.gmacs!) > 1e-9) {
      throw new CliError(
        `--merge: "${old.variant}" costs ${old.gmacs} GMACs in the earlier result and ${now.gmacs} here`,
      );
    }
    const shared = Object.fromEntries(PER_VARIANT.map((k) => [k, now[k]]).filter(([, v]) => v !== undefined));
    return { ...shared, ...old } as SeedRow;
  });
}

/** `seed 3 was` / `seeds 3, 4 were`. */
function plural(xs: number[], noun: string): string {
  return xs.length === 1 ? `${noun} ${xs[0]} was` : `${noun}s ${xs.join(", ")} were`;
}

/** Mean rows with t intervals over seeds, and the claims (paired differences per seed). */
function summarise(
  rows: SeedRow[],
  keeps: number[],
  seeds: number[],
  evalSet: Dataset,
  matched: Record<string, unknown>[],
  earlier?: Earlier,
) {
  const variants = [...new Set(rows.map((r) => r.variant))];
  const bySeed = (v: string) => rows.filter((r) => r.variant === v).sort((a, b) => a.seed - b.seed);
  const acc = (v: string) => bySeed(v).map((r) => r.accuracy);
  const summary = new Map<string, SeedSummary>(variants.map((v) => [v, seedSummary(acc(v))]));
  const meanOf = (xs: (number | undefined)[]) => {
    const d = xs.filter((x): x is number => x !== undefined);
    return d.length ? d.reduce((a, b) => a + b, 0) / d.length : undefined;
  };
  const meanRows: (ResultRow & { selectionPrecision?: number; selectionRecall?: number })[] = variants.map(
    (v) => {
      const first = bySeed(v)[0], s = summary.get(v)!;
      // Speed was measured on one seed per invocation: the lowest seed that has it.
      const timed = bySeed(v).find((r) => r.throughputImgPerS !== undefined);
      return {
        model: v,
        strategy: first.strategy,
        dataset: first.dataset,
        keepRatio: first.keepRatio,
        accuracy: s.mean,
        ...(s.n > 1 ? { accuracyCI: s.ci, accuracyStd: s.std } : { accuracyCI: first.accuracyCI }),
        // Rows merged from a per_seed.json written before it kept whole rows have no macro-F1: then none.
        macroF1: bySeed(v).every((r) => r.macroF1 !== undefined)
          ? meanOf(bySeed(v).map((r) => r.macroF1))
          : undefined,
        gmacs: first.gmacs,
        keptTokens: first.keptTokens,
        tokenReduction: first.tokenReduction,
        throughputImgPerS: timed?.throughputImgPerS,
        params: first.params,
        seeds: s.n,
        backend: first.backend,
        batchSize: first.batchSize,
        selectionPrecision: meanOf(bySeed(v).map((r) => r.selectionPrecision)),
        selectionRecall: meanOf(bySeed(v).map((r) => r.selectionRecall)),
      };
    },
  );
  const table = new ResultTable(meanRows, {
    caption: `Equal-cost study on ${evalSet.name} (CNN tokens), ${seeds.length} seed(s): mean accuracy and ` +
      `95% t interval over seeds`,
  });
  const pts = (d: SeedSummary) =>
    `${(100 * d.mean).toFixed(2)} pts [${(100 * d.ci[0]).toFixed(2)}, ${(100 * d.ci[1]).toFixed(2)}]`;
  const verdict = (d: SeedSummary) =>
    d.n < 2
      ? "one seed: no interval"
      : d.ci[0] > 0
      ? "yes (interval above 0)"
      : d.ci[1] < 0
      ? "no: worse (interval below 0)"
      : "not shown (interval contains 0)";
  const claimRows: Record<string, string>[] = [];
  for (const keep of keeps) {
    const h = `hybrid@${keep}`;
    for (const c of ["random", "attention", "merge"]) {
      const v = `${c}=${h}`;
      const d = pairedDifference(acc(h), acc(v));
      claimRows.push({
        question: `a = hybrid beats b = ${c}${
          c === "merge" ? " (training-free)" : ""
        } at equal GMACs, keep ${keep}`,
        a: formatSeedCI(summary.get(h)!),
        b: formatSeedCI(summary.get(v)!),
        "a − b": pts(d),
        answer: verdict(d),
      });
    }
    for (const ref of ["ViT on CNN tokens (all tokens)"]) {
      const d = pairedDifference(acc(h), acc(ref));
      const within = d.n > 1 && d.ci[0] >= -0.01;
      claimRows.push({
        question: `a = hybrid at keep ${keep} within 1 point of b = ${ref}`,
        a: formatSeedCI(summary.get(h)!),
        b: formatSeedCI(summary.get(ref)!),
        "a − b": pts(d),
        answer: d.n < 2
          ? `one seed: no interval (${d.mean >= -0.01 ? "within" : "not within"} 1 point on this seed)`
          : within
          ? "yes"
          : d.mean >= -0.01
          ? "not shown (interval reaches below −1 point)"
          : "no",
      });
    }
  }
  for (const keep of keeps) {
    // The Pareto question: is the hybrid dominated by a CNN alone (as accurate or more, at no more GMACs)?
    for (const ref of ["ResNet18", RESNET_NARROW]) {
      const h = `hybrid@${keep}`, g = (v: string) => bySeed(v)[0].gmacs!;
      const d = pairedDifference(acc(h), acc(ref));
      claimRows.push({
        question: `a = hybrid at keep ${keep} (${g(h).toFixed(4)} GMACs) against b = ${ref} (${
          g(ref).toFixed(4)
        } GMACs)`,
        a: formatSeedCI(summary.get(h)!),
        b: formatSeedCI(summary.get(ref)!),
        "a − b": pts(d),
        answer: g(ref) <= g(h) && d.ci[1] < 0
          ? `dominated by ${ref} (less accurate at more GMACs)`
          : d.ci[0] > 0
          ? `more accurate than ${ref}`
          : g(ref) > g(h) && d.ci[1] >= 0
          ? "not dominated (cheaper, accuracy not shown lower)"
          : g(ref) > g(h)
          ? `not dominated by ${ref} (cheaper, less accurate)`
          : "not shown either way",
      });
    }
  }
  const md = (rs: Record<string, unknown>[]) => {
    const keys = [...new Set(rs.flatMap((r) => Object.keys(r)))];
    return [
      `| ${keys.join(" | ")} |`,
      `|${keys.map(() => "---").join("|")}|`,
      ...rs.map((r) => `| ${keys.map((k) => (r[k] === undefined ? "-" : String(r[k]))).join(" | ")} |`),
    ].join("\n") + "\n";
  };
  const claims = [
    `# Claims: equal-cost study on ${
      evalSet.name.startsWith("synthetic") ? "the synthetic set" : evalSet.name
    } with CNN tokens (${BASE.profile} profile, seeds ${seeds.join(", ")})`,
    "",
    "Generated by tools/synthetic_study.ts from the runs listed in run.json; accuracy in percent, mean over seeds",
    "[95% Student-t interval]; differences are paired per seed. The configuration was chosen on validation",
    "splits (tools/selection_probe.ts and tools/synthetic_ablation.ts, on the synthetic set and on",
    `Fashion-MNIST); nothing here was tuned on the test split (${evalSet.size} images${
      evalSet.name.startsWith("synthetic") ? "" : ", each seed's own subset"
    }).`,
    ...(earlier
      ? [
        "",
        `Seeds ${earlier.provenance.seeds.join(", ")} come from an earlier result of this study (${
          earlier.provenance.git.commit?.slice(0, 7) ?? "no commit"
        }, ${earlier.provenance.createdAt}), added with --merge (run.json: extra.merged); ${
          plural(seeds.filter((x) => !earlier.provenance.seeds.includes(x)), "seed")
        } trained and evaluated by this invocation. Every variant's GMACs agree across both.`,
      ]
      : []),
    "",
    md(claimRows),
    "Controls matched in GMACs (tokens kept, their GMACs, the hybrid's, how much more the control costs; same for",
    "every seed). Attention selection runs block 0 on every token, so below that cost it keeps 1 token and",
    "still costs more than the hybrid: such a row compares at unequal cost, in the control's favour.",
    "",
    md(matched),
  ].join("\n");
  return { table, summary, claims };
}

/** Accuracy against GMACs, and against img/s measured on this machine (first seed, batch `BENCH_BATCH`). */
function figures(rows: readonly ResultRow[], nSeeds: number, name: string) {
  const group = (v: string) =>
    v.startsWith("hybrid@")
      ? "CNN-ViT hybrid"
      : v.startsWith("random=")
      ? "random"
      : v.startsWith("attention=")
      ? "attention (EViT)"
      : v.startsWith("merge=")
      ? "ToMe merge (training-free)"
      : v;
  const points = rows.map((r) => ({
    model: group(r.model),
    gmacs: r.gmacs!,
    accuracy: r.accuracy,
    ci: r.accuracyCI,
    keepRatio: r.keepRatio !== undefined && r.keepRatio < 1 ? +r.keepRatio.toFixed(2) : undefined,
    imgPerS: r.throughputImgPerS,
  }));
  const interval = nSeeds > 1
    ? `mean of ${nSeeds} seeds, 95% t interval over seeds`
    : "one seed, 95% bootstrap interval";
  const timed = points.filter((p): p is typeof p & { imgPerS: number } => p.imgPerS !== undefined);
  return {
    accuracy_vs_gmacs: accuracyVsGmacsPlot(points, {
      title: `Accuracy vs GMACs per image (${name}, CNN tokens, ${interval})`,
    }),
    ...(timed.length > 0
      ? {
        accuracy_vs_img_per_s: accuracyVsThroughputPlot(timed, {
          title: `Accuracy vs measured img/s (${name}, CNN tokens, ${interval}; batch ${BENCH_BATCH}, ` +
            `${rows[0].backend ?? ""} backend, this machine)`,
        }),
      }
      : {}),
  };
}
