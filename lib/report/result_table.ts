/**
 * Comparison tables in Markdown, CSV (npm `csv-stringify`) and JSON, with the columns of the study's
 * expected-results table (model, accuracy, inference speed, memory, token reduction) plus GMACs,
 * parameters, macro-F1, confidence interval, seed count, backend and batch size.
 *
 * @module
 */
import { stringify } from "./_csv.ts";
import type { MimeBundle } from "../util/mod.ts";
import { JUPYTER_DISPLAY } from "../viz/figure.ts";
import type { ResultRow } from "./result_row.ts";

/** A table column: header (with units), how to get its number/text, and how to print it. */
export interface Column {
  key: string;
  header: string;
  /** Raw value for CSV/JSON (numbers in the header's units), `undefined` when absent. */
  value(r: ResultRow): number | string | undefined;
  /** Text for Markdown/HTML. */
  format(r: ResultRow): string;
  /** Always shown, even when empty in every row. */
  required?: boolean;
  /** CSV writes these columns instead (e.g. an interval as low and high). */
  csv?: Column[];
}

const pct = (v: number | undefined) => (v === undefined ? undefined : 100 * v);
const fx = (d: number) => (v: number | string | undefined) =>
  v === undefined ? "" : typeof v === "number" ? (Number.isFinite(v) ? v.toFixed(d) : "–") : v;
const round = (v: number | undefined, d = 6) =>
  v === undefined ? undefined : Number.isFinite(v) ? Number(v.toPrecision(d)) : "";

function col(
  key: string,
  header: string,
  value: (r: ResultRow) => number | string | undefined,
  digits: number,
  required = false,
): Column {
  return { key, header, value, format: (r) => fx(digits)(value(r)), required };
}

/** The columns, in order. Optional ones are shown when at least one row has a value. */
export const COLUMNS: Column[] = [
  col("model", "Model", (r) => r.model, 0, true),
  col("strategy", "Strategy", (r) => r.strategy, 0),
  col("dataset", "Dataset", (r) => r.dataset, 0),
  col("keepRatio", "Keep ratio", (r) => r.keepRatio, 2),
  {
    key: "accuracy",
    header: "Accuracy (%)",
    value: (r) => round(pct(r.accuracy)),
    format: (r) =>
      !Number.isFinite(r.accuracy)
        ? "–"
        : r.accuracyStd !== undefined && (r.seeds ?? 1) > 1
        ? `${(100 * r.accuracy).toFixed(2)} ± ${(100 * r.accuracyStd).toFixed(2)}`
        : (100 * r.accuracy).toFixed(2),
    required: true,
  },
  col("accuracyStd", "Accuracy std over seeds (%)", (r) => round(pct(r.accuracyStd)), 2),
  {
    key: "accuracyCI",
    header: "Accuracy 95% CI (%)",
    value: (
      r,
    ) => (r.accuracyCI ? `${round(100 * r.accuracyCI[0])} to ${round(100 * r.accuracyCI[1])}` : undefined),
    format: (
      r,
    ) => (r.accuracyCI
      ? `[${(100 * r.accuracyCI[0]).toFixed(1)}, ${(100 * r.accuracyCI[1]).toFixed(1)}]`
      : ""),
    csv: [
      col("accuracyCILow", "Accuracy 95% CI low (%)", (r) => round(pct(r.accuracyCI?.[0])), 2),
      col("accuracyCIHigh", "Accuracy 95% CI high (%)", (r) => round(pct(r.accuracyCI?.[1])), 2),
    ],
  },
  col("macroF1", "Macro-F1 (%)", (r) => round(pct(r.macroF1)), 2),
  col("auc", "AUC", (r) => round(r.auc), 3),
  col("throughputImgPerS", "Inference speed (img/s)", (r) => round(r.throughputImgPerS), 1),
  col("batchSize", "Batch", (r) => r.batchSize, 0),
  col("backend", "Backend", (r) => r.backend, 0),
  col("latencyMsMedian", "Latency b=1 median (ms)", (r) => round(r.latencyMsMedian), 2),
  col("latencyMsP95", "Latency b=1 p95 (ms)", (r) => round(r.latencyMsP95), 2),
  col("peakMemoryMiB", "Peak tensor memory (MiB)", (r) => round(r.peakMemoryMiB), 1),
  col("rssMiB", "Process RSS (MiB)", (r) => round(r.rssMiB), 0),
  col("tokenReduction", "Token reduction (%)", (r) => round(pct(r.tokenReduction)), 1),
  col("keptTokens", "Patch tokens kept", (r) => round(r.keptTokens), 1),
  col("gmacs", "GMACs", (r) => round(r.gmacs), 3),
  col("gmacsCnn", "GMACs CNN", (r) => round(r.gmacsCnn), 3),
  col("gmacsVit", "GMACs ViT", (r) => round(r.gmacsVit), 3),
  col("params", "Params (M)", (r) => round(r.params === undefined ? undefined : r.params / 1e6), 2),
  col("seeds", "Seeds", (r) => r.seeds, 0),
];

function escapeMd(s: string): string {
  return s.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * A comparison table of {@link ResultRow}s, printable as Markdown (paste into a paper), CSV and JSON,
 * and displayed inline in Jupyter.
 *
 * @example
 * ```ts
 * const table = new ResultTable([{ model: "ViT", accuracy: 0.81, gmacs: 1.2 }]);
 * console.log(table.toMarkdown());
 * ```
 */
export class ResultTable {
  readonly rows: ResultRow[];
  /** Optional caption (first line of the Markdown). */
  readonly caption?: string;

  constructor(rows: readonly ResultRow[], options: { caption?: string } = {}) {
    if (!Array.isArray(rows)) throw new TypeError(`ResultTable: rows is ${String(rows)}; expected an array`);
    rows.forEach((r, i) => {
      if (!r || typeof r.model !== "string" || typeof r.accuracy !== "number") {
        throw new TypeError(
          `ResultTable: rows[${i}] is ${
            JSON.stringify(r)
          }; expected at least {model: string, accuracy: number}`,
        );
      }
    });
    this.rows = [...rows];
    this.caption = options.caption;
  }

  /** The columns shown: required ones plus those with a value in some row. */
  columns(): Column[] {
    return COLUMNS.filter((c) => c.required || this.rows.some((r) => c.value(r) !== undefined));
  }

  /** GitHub-flavoured Markdown table. */
  toMarkdown(): string {
    const cols = this.columns();
    const lines = [
      `| ${cols.map((c) => c.header).join(" | ")} |`,
      `| ${
        cols.map((c) => (c.key === "model" || c.key === "strategy" || c.key === "backend" ? "---" : "---:"))
          .join(" | ")
      } |`,
      ...this.rows.map((r) => `| ${cols.map((c) => escapeMd(c.format(r))).join(" | ")} |`),
    ];
    return (this.caption ? `${this.caption}\n\n` : "") + lines.join("\n") + "\n";
  }

  /** CSV with the same headers; numbers unformatted (6 significant digits), in the headers' units. */
  toCsv(): string {
    const cols = this.columns().flatMap((c) => c.csv ?? [c]);
    return stringify([cols.map((c) => c.header), ...this.rows.map((r) => cols.map((c) => c.value(r) ?? ""))]);
  }

  /** JSON: the raw rows (fractions, field names with units) and the column headers. */
  toJson(): string {
    const columns = Object.fromEntries(this.columns().map((c) => [c.key, c.header]));
    return JSON.stringify({ caption: this.caption, columns, rows: this.rows }, null, 2) + "\n";
  }

  /** HTML table (Jupyter). */
  toHtml(): string {
    const cols = this.columns();
    const head = cols.map((c) => `<th>${escapeHtml(c.header)}</th>`).join("");
    const body = this.rows.map((r) =>
      `<tr>${cols.map((c) => `<td>${escapeHtml(c.format(r))}</td>`).join("")}</tr>`
    )
      .join("\n");
    const cap = this.caption ? `<caption>${escapeHtml(this.caption)}</caption>` : "";
    return `<table>${cap}<thead><tr>${head}</tr></thead>\n<tbody>\n${body}\n</tbody></table>`;
  }

  /** Jupyter MIME bundle: Markdown, HTML and plain text. */
  [JUPYTER_DISPLAY](): MimeBundle {
    const md = this.toMarkdown();
    return { "text/markdown": md, "text/html": this.toHtml(), "text/plain": md };
  }
}
