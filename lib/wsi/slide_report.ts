/**
 * The slide-level table of one step's outputs (one row per slide record) and its metrics: slide-level AUC
 * of the slide score against the annotation label (a slide is tumour when any patch is), throughput.
 *
 * @module
 */
import { join } from "node:path";
import { rocCurve } from "../metrics/roc.ts";
import { writeFileAtomic } from "../util/mod.ts";
import { readStepRecords, type SlideStepRecord } from "./slide_steps.ts";

/** What {@link slideReport} returns. */
export interface SlideReport {
  step: string;
  key: string;
  /** One row per slide, JSON-friendly scalars. */
  rows: Record<string, string | number | null>[];
  /** Slide-level metrics. */
  metrics: Record<string, number | null>;
  /** Records that could not be read. */
  bad: { file: string; error: string }[];
}

function row(r: SlideStepRecord): Record<string, string | number | null> {
  const x = r.result as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === "number" ? v : null);
  const base = { slide: r.slideId };
  const tail = { seconds: +r.run.seconds.toFixed(3), worker: `${r.run.host}:${r.run.pid}` };
  if (r.step === "segment") {
    return {
      ...base,
      tissuePercent: +(100 * (num(x.tissueFraction) ?? 0)).toFixed(2),
      components: num(x.components),
      holes: num(x.holes),
      ...tail,
    };
  }
  if (r.step === "extract") {
    return {
      ...base,
      patches: num(x.patches),
      tumourPatches: num(x.tumourPatches),
      tissuePercent: x.tissueFraction === null ? null : +(100 * (num(x.tissueFraction) ?? 0)).toFixed(2),
      ...tail,
    };
  }
  const sel = Array.isArray(x.selected) ? x.selected.length : null;
  return {
    ...base,
    patches: num(x.patches),
    tumourPatches: num(x.tumourPatches),
    label: num(x.label),
    slideScore: num(x.slideScore),
    classified: sel,
    selectedTumour: num(x.selectedTumour),
    ...tail,
  };
}

/**
 * Reads the records of `<out>/<step>/<key>/` into the slide-level table and metrics.
 *
 * @example
 * ```ts
 * const rep = await slideReport("/shared/wsi/infer/3f9a0c1d2e4b");
 * console.log(formatSlideReport(rep));
 * ```
 */
export async function slideReport(dir: string): Promise<SlideReport> {
  const { records, bad } = await readStepRecords(dir);
  const rows = records.map(row);
  const key = dir.split("/").filter(Boolean).at(-1) ?? "";
  const step = records[0]?.step ?? dir.split("/").filter(Boolean).at(-2) ?? "";
  const seconds = rows.reduce((a, r) => a + (r.seconds as number), 0);
  const patches = rows.reduce((a, r) => a + ((r.patches as number | null) ?? 0), 0);
  const metrics: Record<string, number | null> = {
    slides: rows.length,
    patches,
    secondsTotal: +seconds.toFixed(3),
    patchesPerSecond: seconds > 0 ? +(patches / seconds).toFixed(1) : null,
  };
  if (step === "infer") {
    const labelled = rows.filter((r) => r.label === 0 || r.label === 1);
    metrics.labelledSlides = labelled.length;
    const pos = labelled.filter((r) => r.label === 1).length;
    metrics.tumourSlides = pos;
    metrics.slideAuc = pos > 0 && pos < labelled.length
      ? +rocCurve(labelled.map((r) => r.label as number), labelled.map((r) => r.slideScore as number)).auc
        .toFixed(4)
      : null;
    const tp = labelled.filter((r) => r.label === 1 && (r.slideScore as number) >= 0.5).length;
    const tn = labelled.filter((r) => r.label === 0 && (r.slideScore as number) < 0.5).length;
    metrics.accuracyAt05 = labelled.length ? +((tp + tn) / labelled.length).toFixed(4) : null;
  }
  return { step, key, rows, metrics, bad };
}

/**
 * Markdown of a {@link SlideReport}: the table, then the metrics.
 *
 * @example
 * ```ts
 * console.log(formatSlideReport(await slideReport(dir)));
 * ```
 */
export function formatSlideReport(rep: SlideReport): string {
  if (rep.rows.length === 0) return `no ${rep.step} records under key ${rep.key}\n`;
  const cols = Object.keys(rep.rows[0]);
  const cell = (v: unknown) => (v === null || v === undefined ? "-" : String(v));
  const lines = [
    `| ${cols.join(" | ")} |`,
    `|${cols.map(() => "---").join("|")}|`,
    ...rep.rows.map((r) => `| ${cols.map((c) => cell(r[c])).join(" | ")} |`),
    "",
    ...Object.entries(rep.metrics).map(([k, v]) => `- ${k}: ${cell(v)}`),
  ];
  for (const b of rep.bad) lines.push(`- unreadable record ${b.file}: ${b.error}`);
  return lines.join("\n") + "\n";
}

/**
 * Writes `<dir>.report.{md,csv,json}` beside the records folder (atomically) and returns the paths.
 *
 * @example
 * ```ts
 * await writeSlideReport(await slideReport(dir), dir);
 * ```
 */
export async function writeSlideReport(rep: SlideReport, dir: string): Promise<string[]> {
  const base = join(dir, "..", `${rep.key}.report`);
  const cols = rep.rows.length ? Object.keys(rep.rows[0]) : [];
  const q = (v: unknown) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  const csv = [cols.join(","), ...rep.rows.map((r) => cols.map((c) => q(r[c])).join(","))].join("\n") + "\n";
  const files = [`${base}.md`, `${base}.csv`, `${base}.json`];
  await writeFileAtomic(files[0], formatSlideReport(rep));
  await writeFileAtomic(files[1], csv);
  await writeFileAtomic(files[2], JSON.stringify(rep, null, 2) + "\n");
  return files;
}
