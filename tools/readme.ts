/**
 * `deno task readme`: rewrites README's generated blocks from the committed results files, so that no
 * number in README is typed by hand. A block is delimited by
 * `<!-- generated:NAME ... -->` and `<!-- /generated:NAME -->`; each NAME has a generator below that reads
 * `results/` only. `--check` exits 1 (and names the blocks) when README differs from what the results say;
 * `tests/readme_test.ts` runs the same check.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";

/** A README block generator: Markdown from the results folder, or an Error naming the missing file. */
type Generator = (root: string) => Promise<string>;

interface StudyRow {
  model: string;
  keepRatio?: number;
  accuracy: number;
  accuracyCI?: [number, number];
  macroF1?: number;
  gmacs?: number;
  throughputImgPerS?: number;
  peakMemoryMiB?: number;
  tokenReduction?: number;
  batchSize?: number;
  backend?: string;
}

async function readText(root: string, rel: string): Promise<string> {
  try {
    return await Deno.readTextFile(join(root, rel));
  } catch (e) {
    throw new Error(`readme: cannot read ${rel} (${(e as Error).message}); regenerate the results first`);
  }
}

async function readJson<T>(root: string, rel: string): Promise<T> {
  const text = await readText(root, rel);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`readme: ${rel} is not JSON (${(e as Error).message}); regenerate the results first`);
  }
}

const pct = (v: number | undefined, d = 2) => (v === undefined ? "-" : (100 * v).toFixed(d));

/** The study's table of every variant (cpu profile), from 04_compare_models/results.json. */
async function studyTable(root: string): Promise<string> {
  const { rows } = await readJson<{ rows: StudyRow[] }>(
    root,
    "results/study/cpu/04_compare_models/results.json",
  );
  const first = rows[0] ?? {};
  const head = [
    "Model · strategy",
    "Keep ratio",
    "Accuracy % [95% CI]",
    "Macro-F1 %",
    "GMACs",
    `Inference img/s (batch ${first.batchSize ?? "?"}, ${first.backend ?? "?"})`,
    "Peak tensor MiB",
    "Token reduction %",
  ];
  const lines = rows.map((r) => [
    r.model,
    (r.keepRatio ?? 1).toFixed(2),
    `${pct(r.accuracy)}${r.accuracyCI ? ` [${pct(r.accuracyCI[0], 1)}, ${pct(r.accuracyCI[1], 1)}]` : ""}`,
    pct(r.macroF1),
    r.gmacs?.toFixed(4) ?? "-",
    r.throughputImgPerS?.toFixed(0) ?? "-",
    r.peakMemoryMiB?.toFixed(0) ?? "-",
    pct(r.tokenReduction ?? 0, 0),
  ]);
  return markdownTable(head, lines, ["l", "r", "r", "r", "r", "r", "r", "r"]);
}

/** The study's verdict: the lines of claims.md. */
async function studyClaims(root: string): Promise<string> {
  const text = await readText(root, "results/study/cpu/04_compare_models/claims.md");
  return text.split("\n").filter((l) => l.startsWith("- ")).join("\n");
}

/**
 * The equal-cost study's answers (notebook 06): claims.md without its title, i.e. the questions with
 * numbers, the GMACs matching of the controls and the ablation.
 */
function equalCostClaims(root: string): Promise<string> {
  return claimsWithoutTitle(root, "results/study/cpu/06_equal_cost/claims.md");
}

/** A claims.md without its `# ` title line. */
async function claimsWithoutTitle(root: string, path: string): Promise<string> {
  const text = await readText(root, path);
  return text.split("\n").filter((l) => !l.startsWith("# ")).join("\n").trim();
}

interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

interface BenchRun {
  model: string;
  backend: string;
  keepRatio?: number;
  inferImgS?: number;
  trainImgS?: number;
  gradCheckpoint?: boolean;
  error?: string;
  inferImgSSpread?: Spread;
  trainImgSSpread?: Spread;
  inferVsTorch?: Spread;
  trainVsTorch?: Spread;
}

const MODEL_NAMES: Record<string, string> = { resnet18: "ResNet18", vit_small: "ViT-Small" };

/** The speed table: native vs PyTorch per model, median [min-max] over rounds, from results/bench/bench.json. */
async function benchTable(root: string): Promise<string> {
  const b = await readJson<
    { protocol: { batch: number; threads: number; rounds: number }; runs: BenchRun[]; torchRuns: BenchRun[] }
  >(
    root,
    "results/bench/bench.json",
  );
  const val = (v?: number, sp?: Spread) =>
    v === undefined
      ? "-"
      : `${v.toFixed(1)}${sp && sp.n > 1 ? ` [${sp.min.toFixed(1)}-${sp.max.toFixed(1)}]` : ""}`;
  const ratio = (sp?: Spread) =>
    sp ? `${sp.median.toFixed(2)}x${sp.n > 1 ? ` [${sp.min.toFixed(2)}-${sp.max.toFixed(2)}]` : ""}` : "-";
  const label = (r: BenchRun) =>
    r.keepRatio !== undefined ? `hybrid ${r.model} keep ${r.keepRatio}` : MODEL_NAMES[r.model] ?? r.model;
  const rows = b.runs.filter((r) => r.backend === "native" && !r.error).map((r) => {
    const t = b.torchRuns.find((x) => x.model === r.model && x.keepRatio === r.keepRatio && !x.error);
    return [
      label(r),
      val(r.inferImgS, r.inferImgSSpread),
      val(t?.inferImgS, t?.inferImgSSpread),
      ratio(r.inferVsTorch),
      `${val(r.trainImgS, r.trainImgSSpread)}${r.gradCheckpoint ? ", ckpt" : ""}`,
      val(t?.trainImgS, t?.trainImgSSpread),
      ratio(r.trainVsTorch),
    ];
  });
  const p = b.protocol;
  return markdownTable(
    [
      `batch ${p.batch}, ${p.threads} threads, median [min-max] of ${p.rounds} rounds`,
      "native inference img/s",
      "PyTorch inference img/s",
      "native / PyTorch inference",
      "native training img/s",
      "PyTorch training img/s",
      "native / PyTorch training",
    ],
    rows,
    ["l", "r", "r", "r", "r", "r", "r"],
  );
}

interface SelectionRow {
  strategy: string;
  keep: number;
  accuracy: number;
  precision?: number;
  recall?: number;
  gmacs: number;
}

/**
 * The selection probe on the synthetic set (tools/selection_probe.ts) side by side: the stage-1 targets
 * `cam` and `mask` at the cpu profile's 2 stage-1 epochs, and `cam` at 8 (the synthetic study's choice).
 */
async function selectionTable(root: string): Promise<string> {
  const probes = ["cam", "mask", "cam_s1e8"] as const;
  const byProbe = new Map<string, SelectionRow[]>();
  for (const t of probes) {
    byProbe.set(
      t,
      await readJson<SelectionRow[]>(root, `results/selection/synthetic_cnn_tokens_${t}/selection.json`),
    );
  }
  const fmt = (r: SelectionRow | undefined) =>
    r === undefined ? ["-", "-"] : [
      r.accuracy.toFixed(1),
      r.precision === undefined ? "-" : `${r.precision.toFixed(1)} / ${r.recall!.toFixed(1)}`,
    ];
  const rows = byProbe.get("cam")!.map((r) => [
    r.strategy,
    String(r.keep),
    r.gmacs.toFixed(4),
    ...probes.flatMap((t) =>
      fmt(byProbe.get(t)!.find((x) => x.strategy === r.strategy && x.keep === r.keep))
    ),
  ]);
  return markdownTable(
    [
      "Selection",
      "Keep ratio",
      "GMACs",
      "CAM target: accuracy %",
      "precision / recall %",
      "mask target: accuracy %",
      "precision / recall %",
      "CAM, 8 stage-1 epochs: accuracy %",
      "precision / recall %",
    ],
    rows,
    ["l", "r", "r", "r", "r", "r", "r", "r", "r"],
  );
}

interface StudyRow {
  model: string;
  accuracy: number;
  accuracyCI?: [number, number];
  gmacs?: number;
  keptTokens?: number;
  throughputImgPerS?: number;
  selectionPrecision?: number;
  selectionRecall?: number;
}

const SYNTHETIC_STUDY = "results/study/cpu/07_synthetic_equal_cost";
/** The same study on Fashion-MNIST (tools/synthetic_study.ts --dataset fashion-mnist). */
const FMNIST_STUDY = "results/study/cpu/08_fashion-mnist_cnn_tokens";
/** Both studies again over keeps 0.4-0.8 (Fashion-MNIST: seeds 3-5, reusing their runs; synthetic: seeds 0-2). */
const FMNIST_KEEPS = "results/study/cpu/09_fashion-mnist_cnn_tokens_keeps_0.4-0.8";
const SYNTHETIC_KEEPS = "results/study/cpu/10_synthetic_cnn_tokens_keeps_0.4-0.8";

/** A fraction as a percentage with one decimal ("-" when absent). */
const pct1 = (v?: number) => pct(v, 1);
/** An accuracy in percent with its interval, `74.4 [66.6, 82.3]`. */
const pctWithCI = (v: number, ci?: [number, number]) =>
  `${pct1(v)}${ci ? ` [${pct1(ci[0])}, ${pct1(ci[1])}]` : ""}`;
/** Selection precision / recall in percent ("-" for rows without a selection). */
const precisionRecall = (r: { selectionPrecision?: number; selectionRecall?: number }) =>
  r.selectionPrecision === undefined ? "-" : `${pct1(r.selectionPrecision)} / ${pct1(r.selectionRecall)}`;

/**
 * An equal-cost study of tools/synthetic_study.ts (results in `dir`): every variant, mean over seeds; the
 * precision/recall column only where the dataset has object masks.
 */
const cnnTokenStudyTable = (dir: string, masks: boolean) => async (root: string): Promise<string> => {
  const { rows } = await readJson<{ rows: StudyRow[] }>(root, `${dir}/results.json`);
  const cols = masks ? ["Precision / recall %"] : [];
  return markdownTable(
    ["Variant", "GMACs", "Tokens", "Accuracy % [95% CI]", ...cols, "img/s"],
    rows.map((r) => [
      r.model,
      r.gmacs === undefined ? "-" : r.gmacs.toFixed(4),
      r.keptTokens === undefined ? "-" : String(r.keptTokens),
      pctWithCI(r.accuracy, r.accuracyCI),
      ...(masks ? [precisionRecall(r)] : []),
      r.throughputImgPerS === undefined ? "-" : r.throughputImgPerS.toFixed(0),
    ]),
    ["l", "r", "r", "r", ...cols.map(() => "r" as const), "r"],
  );
};

/** One step of an ablation (tools/synthetic_ablation.ts). */
interface AblationRow {
  label: string;
  accuracy: number;
  accuracyCI?: [number, number];
  allTokensAccuracy: number;
  /** The same model on as many random tokens. */
  randomAccuracy?: number;
  /** Patch tokens kept per image (with the budget mode, the mean of a learned count). */
  keptTokens?: number;
  gmacs?: number;
  selectionPrecision?: number;
  selectionRecall?: number;
}

/** Patch tokens kept per image (one decimal: the budget row's is a mean). */
const keptTokens = (r: AblationRow) =>
  (r.keptTokens === undefined ? "-" : +r.keptTokens.toFixed(1)).toString();

/**
 * A one-seed ablation on a validation split (`results/ablation/cpu/<folder>/ablation.json`, the folder
 * named after the dataset, or `--steps` written elsewhere): accuracy with the hybrid's own top-k, the same
 * model on random tokens and on all tokens, precision/recall where the dataset has object masks, tokens
 * kept and GMACs.
 */
const ablationTable = (folder: string, masks: boolean) => async (root: string): Promise<string> => {
  const rows = await readJson<AblationRow[]>(root, `results/ablation/cpu/${folder}/ablation.json`);
  return markdownTable(
    [
      "Step",
      "Accuracy % at keep 0.5 [95% CI]",
      "Random tokens %",
      "All tokens %",
      ...(masks ? ["Precision / recall %"] : []),
      "Tokens kept",
      "GMACs",
    ],
    rows.map((r) => [
      r.label,
      pctWithCI(r.accuracy, r.accuracyCI),
      r.randomAccuracy === undefined ? "-" : pct1(r.randomAccuracy),
      pct1(r.allTokensAccuracy),
      ...(masks ? [precisionRecall(r)] : []),
      keptTokens(r),
      r.gmacs === undefined ? "-" : r.gmacs.toFixed(4),
    ]),
    ["l", "r", "r", "r", ...(masks ? ["r" as const] : []), "r", "r"],
  );
};

/** A study's claims.md (without its title). */
const studyClaimsIn = (dir: string) => (root: string): Promise<string> =>
  claimsWithoutTitle(root, `${dir}/claims.md`);

/**
 * The question table of a study's claims.md cut to the questions about the given keep ratios (the header,
 * then each row that names one of them, e.g. "keep 0.8"): the answers a README section adds to an earlier one.
 */
export const claimRowsAt = (dir: string, keeps: number[]) => async (root: string): Promise<string> => {
  const lines = (await readText(root, `${dir}/claims.md`)).split("\n");
  const start = lines.findIndex((l) => l.startsWith("| question"));
  if (start < 0) {
    throw new Error(`readme: ${dir}/claims.md has no question table; regenerate the results first`);
  }
  const table = lines.slice(start);
  const end = table.findIndex((l) => !l.startsWith("|"));
  const rows = table.slice(2, end < 0 ? undefined : end);
  const at = rows.filter((l) =>
    keeps.some((k) => new RegExp(`keep ${String(k).replace(".", "\\.")}\\b`).test(l))
  );
  return [table[0], table[1], ...at].join("\n");
};

/** The generators, by block name. */
export const GENERATORS: Record<string, Generator> = {
  "study-table": studyTable,
  "study-claims": studyClaims,
  "bench-table": benchTable,
  "equal-cost": equalCostClaims,
  selection: selectionTable,
  "synthetic-study": cnnTokenStudyTable(SYNTHETIC_STUDY, true),
  "synthetic-claims": studyClaimsIn(SYNTHETIC_STUDY),
  "fmnist-study": cnnTokenStudyTable(FMNIST_STUDY, false),
  "fmnist-claims": studyClaimsIn(FMNIST_STUDY),
  "synthetic-ablation": ablationTable("synthetic", true),
  "fmnist-ablation": ablationTable("fashion-mnist", false),
  "synthetic-budget": ablationTable("synthetic_budget_calibration", true),
  "fmnist-budget": ablationTable("fashion-mnist_budget_calibration", false),
  "fmnist-study-keeps": cnnTokenStudyTable(FMNIST_KEEPS, false),
  "fmnist-claims-keeps": claimRowsAt(FMNIST_KEEPS, [0.8]),
  "synthetic-study-keeps": cnnTokenStudyTable(SYNTHETIC_KEEPS, true),
  "synthetic-claims-keeps": claimRowsAt(SYNTHETIC_KEEPS, [0.4, 0.8]),
  "synthetic-rank": ablationTable("synthetic_rank_distill", true),
  "fmnist-rank": ablationTable("fashion-mnist_rank_distill", false),
};

/** A Markdown table (`deno fmt` aligns it afterwards). */
export function markdownTable(head: string[], rows: string[][], align: ("l" | "r")[]): string {
  const row = (cells: string[]) => `| ${cells.map((c) => c.replaceAll("|", "\\|")).join(" | ")} |`;
  return [row(head), `| ${align.map((a) => (a === "r" ? "---:" : "---")).join(" | ")} |`, ...rows.map(row)]
    .join("\n");
}

const BLOCK = /(<!-- generated:([a-z0-9-]+)[^>]*-->\n)([\s\S]*?)(<!-- \/generated:\2 -->)/g;

/** Formats Markdown as `deno fmt` does (README is formatted by it). */
async function denoFmtMarkdown(text: string): Promise<string> {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--ext", "md", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const out = await p.output();
  if (!out.success) throw new Error(`readme: deno fmt failed: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/**
 * README as the results say it should be: every generated block replaced by its generator's output, then
 * formatted. Throws on a block with no generator.
 *
 * @example
 * ```ts
 * const { text, blocks } = await renderReadme(".");
 * ```
 */
export async function renderReadme(root: string): Promise<{ text: string; blocks: string[] }> {
  const readme = await Deno.readTextFile(join(root, "README.md"));
  const found = [...readme.matchAll(BLOCK)].map((m) => m[2]);
  const made = new Map<string, string>();
  for (const name of found) {
    const gen = GENERATORS[name];
    if (!gen) {
      throw new Error(`readme: README has a block "${name}" with no generator (${Object.keys(GENERATORS)})`);
    }
    made.set(name, await gen(root));
  }
  const text = readme.replace(BLOCK, (_all, open, name, _old, close) => `${open}${made.get(name)}\n${close}`);
  return { text: await denoFmtMarkdown(text), blocks: found };
}

/** The names of the blocks whose text differs between `a` and `b` (two README texts). */
export function changedBlocks(a: string, b: string): string[] {
  const blocks = (t: string) => new Map([...t.matchAll(BLOCK)].map((m) => [m[2], m[3]]));
  const ba = blocks(a), bb = blocks(b);
  return [...new Set([...ba.keys(), ...bb.keys()])].filter((k) => ba.get(k) !== bb.get(k));
}

if (import.meta.main) {
  let args;
  try {
    args = parseArgs({ args: Deno.args, options: { check: { type: "boolean" }, help: { type: "boolean" } } });
  } catch (e) {
    console.error(`readme: ${(e as Error).message}\nusage: deno task readme [--check]`);
    Deno.exit(2);
  }
  if (args.values.help) {
    console.log(
      "usage: deno task readme [--check]\nRewrites README's generated blocks from results/ " +
        "(--check: only report blocks that differ, exit 1 if any).",
    );
    Deno.exit(0);
  }
  const root = new URL("..", import.meta.url).pathname;
  const current = await Deno.readTextFile(join(root, "README.md"));
  const { text, blocks } = await renderReadme(root);
  const changed = changedBlocks(current, text);
  if (args.values.check) {
    if (changed.length) {
      console.error(`README differs from results/ in: ${changed.join(", ")} (run deno task readme)`);
      Deno.exit(1);
    }
    console.log(`README agrees with results/ (${blocks.join(", ")})`);
  } else {
    if (text !== current) await Deno.writeTextFile(join(root, "README.md"), text);
    console.log(`README: ${changed.length ? `rewrote ${changed.join(", ")}` : "already up to date"}`);
  }
}
