/**
 * Writes an experiment's results folder: tables (Markdown, CSV, JSON), `run.json`, figures and images.
 * The folder is built beside the target and swapped in at the end, so a re-run replaces its own folder
 * (and nothing else) and a failure never leaves a half-written one.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { writeFileAtomic } from "../util/mod.ts";
import { exportFigure, type Figure, type FigureFormat, type PngImage } from "../viz/mod.ts";
import type { RunInfo } from "./run_info.ts";
import type { ResultRow } from "./result_row.ts";
import { ResultTable } from "./result_table.ts";

/** What {@link writeReport} writes. */
export interface ReportContent {
  /** The comparison table (or its rows): `results.md`, `results.csv`, `results.json`. */
  table?: ResultTable | readonly ResultRow[];
  /** Provenance: `run.json`. */
  run: RunInfo;
  /** Figures, written to `figures/<name>.{html,json,png,svg}`. */
  figures?: Record<string, Figure>;
  /** Formats of the figures (default html, json, png, svg; png/svg need headless Chromium). */
  figureFormats?: FigureFormat[];
  /** Images, written to `images/<name>.png`. */
  images?: Record<string, PngImage>;
  /** Any other files, by relative path. */
  files?: Record<string, string | Uint8Array>;
}

/** What {@link writeReport} did. */
export interface ReportResult {
  dir: string;
  /** Paths written, relative to `dir`. */
  files: string[];
  /** Formats skipped (e.g. PNG/SVG without Chromium), with the reason. */
  skipped: string[];
  /**
   * Figures that could not be rendered (PNG/SVG without Chromium) and were carried over unchanged from
   * the previous folder instead of being deleted, relative to `dir`: they show the previous run.
   */
  kept: string[];
}

function safeRelative(path: string): string {
  if (!path || path.startsWith("/") || path.split(/[\\/]/).includes("..")) {
    throw new RangeError(
      `writeReport: file name ${JSON.stringify(path)}; expected a relative path inside the folder`,
    );
  }
  return path;
}

/**
 * Writes an experiment's results folder `dir` from scratch: `results.{md,csv,json}`, `run.json`,
 * `figures/`, `images/` and extra files. Everything is written into a temporary sibling folder first,
 * then swapped in for `dir`; other folders under the same parent are never touched. The one thing carried
 * over: a PNG/SVG of a figure in `content.figures` that cannot be rendered here (no Chromium) keeps its
 * previous file (listed in `kept`), so a machine without Chromium does not delete committed figures.
 *
 * @example
 * ```ts
 * await writeReport("results/cifar10_pruning", {
 *   table: rows,
 *   run: await collectRunInfo({ experiment: "cifar10_pruning", profile: "quick", seeds: [0] }),
 *   figures: { pareto: accuracyVsGmacsPlot(points) },
 * });
 * ```
 */
export async function writeReport(dir: string, content: ReportContent): Promise<ReportResult> {
  if (!dir || basename(dir) === "" || basename(dir) === "." || basename(dir) === "..") {
    throw new RangeError(
      `writeReport: dir is ${JSON.stringify(dir)}; expected a folder like "results/<experiment>"`,
    );
  }
  if (!content || !content.run) {
    throw new TypeError("writeReport: content.run is missing; pass collectRunInfo() output");
  }
  const parent = dirname(dir);
  await Deno.mkdir(parent, { recursive: true });
  const tag = `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const tmp = join(parent, `.${basename(dir)}.tmp-${tag}`);
  const files: string[] = [];
  const skipped: string[] = [];
  const kept: string[] = [];
  const put = async (rel: string, data: string | Uint8Array) => {
    await writeFileAtomic(join(tmp, safeRelative(rel)), data);
    files.push(rel);
  };
  try {
    await Deno.mkdir(tmp, { recursive: true });
    if (content.table) {
      const t = content.table instanceof ResultTable ? content.table : new ResultTable(content.table);
      await put("results.md", t.toMarkdown());
      await put("results.csv", t.toCsv());
      await put("results.json", t.toJson());
    }
    await put("run.json", JSON.stringify(content.run, null, 2) + "\n");
    for (const [name, fig] of Object.entries(content.figures ?? {})) {
      const r = await exportFigure(fig, join(tmp, "figures", safeRelative(name)), {
        formats: content.figureFormats,
        quiet: true,
      });
      files.push(...r.written.map((p) => p.slice(tmp.length + 1)));
      skipped.push(...r.skipped.map((s) => s.slice(tmp.length + 1)));
      // Static export unavailable (no Chromium): keep the figure the folder already had (e.g. a committed
      // PNG) rather than delete it; the warning says it is the previous run's.
      for (const ext of ["png", "svg"] as const) {
        const rel = `figures/${name}.${ext}`;
        if (!(content.figureFormats ?? ["html", "png", "svg"]).includes(ext)) continue;
        if (r.written.includes(join(tmp, rel))) continue;
        try {
          await Deno.copyFile(join(dir, rel), join(tmp, rel));
          kept.push(rel);
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
      }
    }
    for (const [name, img] of Object.entries(content.images ?? {})) {
      await put(`images/${safeRelative(name)}.png`, img.png);
    }
    for (const [rel, data] of Object.entries(content.files ?? {})) await put(rel, data);
    // swap: move the old folder aside, move the new one in, then delete the old one
    const old = join(parent, `.${basename(dir)}.old-${tag}`);
    let hadOld = false;
    try {
      await Deno.rename(dir, old);
      hadOld = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    try {
      await Deno.rename(tmp, dir);
    } catch (e) {
      if (hadOld) await Deno.rename(old, dir).catch(() => {});
      throw e;
    }
    if (hadOld) await Deno.remove(old, { recursive: true });
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  for (const s of skipped) console.warn(`writeReport: ${s}`);
  if (kept.length) {
    console.warn(
      `writeReport: kept the previous ${kept.join(", ")} in ${dir} (not regenerated: no Chromium)`,
    );
  }
  return { dir, files, skipped, kept };
}
