/**
 * The study's answer as `deno task compare` prints it at the end, read from the files notebook 04 exports
 * (`<reportDir>/04_compare_models/results.json`, `run.json`, `claims.md`); nothing is recomputed.
 *
 * @module
 */
import { join } from "node:path";

/** One headline row of {@link StudyVerdict}. */
export interface VerdictRow {
  /** What the row is: `ResNet18`, `ViT`, `best hybrid`, `best control`. */
  role: string;
  /** The variant as the table names it (`ViT · random (no fine-tuning)`). */
  variant: string;
  keepRatio?: number;
  accuracy: number;
  accuracyCI?: [number, number];
  gmacs?: number;
  throughputImgPerS?: number;
}

/** What {@link readStudyVerdict} found. */
export interface StudyVerdict {
  /** `<reportDir>/04_compare_models`. */
  dir: string;
  profile?: string;
  dataset?: string;
  mainKeep: number;
  rows: VerdictRow[];
  /** The claims file's bullet lines, without the bullet. */
  claims: string[];
}

interface TableRow {
  model: string;
  strategy?: string;
  training?: string;
  keepRatio?: number;
  accuracy: number;
  accuracyCI?: [number, number];
  gmacs?: number;
  throughputImgPerS?: number;
}

/**
 * Reads the headline of a finished comparison: ResNet18, the unpruned ViT, and the most accurate hybrid
 * and control (random or attention pruning, fine-tuned or not) at the plan's main keep ratio (the measured
 * ratio closest to it), with the claims file's lines.
 *
 * @example
 * ```ts
 * const v = await readStudyVerdict("results/study/cpu");
 * console.log(formatStudyVerdict(v).join("\n"));
 * ```
 */
export async function readStudyVerdict(reportDir: string): Promise<StudyVerdict> {
  const dir = join(reportDir, "04_compare_models");
  const read = async (name: string) => {
    try {
      return await Deno.readTextFile(join(dir, name));
    } catch (e) {
      throw new Error(
        `no ${name} in "${dir}" (${(e as Error).message}); notebook 04_compare_models writes it`,
      );
    }
  };
  const table = JSON.parse(await read("results.json")) as { rows?: TableRow[] };
  const run = JSON.parse(await read("run.json"));
  const claims = (await read("claims.md")).split("\n").filter((l) => l.startsWith("- ")).map((l) =>
    l.slice(2)
  );
  const mainKeep = Number(run?.config?.plan?.mainKeep);
  if (!Array.isArray(table.rows) || !Number.isFinite(mainKeep)) {
    throw new Error(`"${dir}/results.json" has no rows or run.json no config.plan.mainKeep`);
  }
  const rows = table.rows;
  const unpruned = (prefix: string) => rows.find((r) => r.strategy === "none" && r.model.startsWith(prefix));
  const pruned = rows.filter((r) => r.strategy !== "none" && r.keepRatio !== undefined);
  // The measured keep ratio nearest the plan's (0.8 of 64 patches is 51, 0.797).
  const nearest = pruned.reduce<number | undefined>(
    (best, r) =>
      best === undefined || Math.abs(r.keepRatio! - mainKeep) < Math.abs(best - mainKeep)
        ? r.keepRatio
        : best,
    undefined,
  );
  const best = (rs: TableRow[]) =>
    rs.filter((r) => r.keepRatio === nearest).sort((a, b) => b.accuracy - a.accuracy)[0];
  const out: VerdictRow[] = [];
  const add = (role: string, r: TableRow | undefined) => {
    if (!r) return;
    out.push({
      role,
      variant: r.model,
      keepRatio: r.strategy === "none" ? undefined : r.keepRatio,
      accuracy: r.accuracy,
      accuracyCI: r.accuracyCI,
      gmacs: r.gmacs,
      throughputImgPerS: r.throughputImgPerS,
    });
  };
  add("ResNet18", unpruned("ResNet18"));
  add("ViT", rows.find((r) => r.strategy === "none" && r.model === "ViT"));
  add("best hybrid", best(pruned.filter((r) => r.strategy === "cnn")));
  add("best control", best(pruned.filter((r) => r.strategy !== "cnn")));
  return {
    dir,
    profile: run.profile,
    dataset: typeof run.dataset === "string" ? run.dataset : run.dataset?.name,
    mainKeep,
    rows: out,
    claims,
  };
}

const pct = (v: number) => (100 * v).toFixed(2);

/**
 * The verdict as terminal lines: a small table (accuracy with its 95% CI, GMACs, img/s), the claims, and
 * where the full table and figures are.
 *
 * @example
 * ```ts
 * formatStudyVerdict(await readStudyVerdict("results/study/cpu")).forEach((l) => console.log(l));
 * ```
 */
export function formatStudyVerdict(v: StudyVerdict): string[] {
  const header = ["", "Model", "Keep", "Accuracy % (95% CI)", "GMACs", "img/s"];
  const cells = v.rows.map((r) => [
    r.role,
    r.variant,
    r.keepRatio === undefined ? "1" : r.keepRatio.toFixed(2),
    `${pct(r.accuracy)}${r.accuracyCI ? ` [${pct(r.accuracyCI[0])}, ${pct(r.accuracyCI[1])}]` : ""}`,
    r.gmacs === undefined ? "-" : r.gmacs.toFixed(4),
    r.throughputImgPerS === undefined ? "-" : r.throughputImgPerS.toFixed(0),
  ]);
  const w = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    "  " + c.map((x, i) => (i >= 2 ? x.padStart(w[i]) : x.padEnd(w[i]))).join("  ");
  return [
    `Verdict (${v.profile ?? "?"} profile, ${v.dataset ?? "?"}, main keep ratio ${v.mainKeep}):`,
    line(header),
    ...cells.map(line),
    ...v.claims.map((c) => `  - ${c}`),
    `Full table: ${join(v.dir, "results.md")} (also .csv, .json); claims: ${join(v.dir, "claims.md")}`,
    `Figures: ${join(v.dir, "figures")}/; per-notebook outputs: ${join(v.dir, "..")}/; executed notebooks: ` +
    "results/notebooks/",
  ];
}

/**
 * Mean and sample standard deviation of each headline row's accuracy over several seeds' verdicts
 * (rows matched by role), as terminal lines.
 *
 * @example
 * ```ts
 * formatSeedSummary([v0, v1, v2]);
 * ```
 */
export function formatSeedSummary(verdicts: StudyVerdict[]): string[] {
  const roles = [...new Set(verdicts.flatMap((v) => v.rows.map((r) => r.role)))];
  const lines = [`Across ${verdicts.length} seeds (accuracy %, mean ± sd; n = seeds with the row):`];
  for (const role of roles) {
    const accs = verdicts.flatMap((v) => v.rows.filter((r) => r.role === role).map((r) => 100 * r.accuracy));
    const mean = accs.reduce((a, b) => a + b, 0) / accs.length;
    const sd = accs.length > 1
      ? Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / (accs.length - 1))
      : NaN;
    lines.push(
      `  ${role.padEnd(13)} ${mean.toFixed(2)} ± ${
        Number.isNaN(sd) ? "?" : sd.toFixed(2)
      }  (n = ${accs.length}: ${accs.map((a) => a.toFixed(2)).join(", ")})`,
    );
  }
  return lines;
}
