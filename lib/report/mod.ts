/**
 * Reports: comparison tables (Markdown, CSV, JSON) with the study's columns and units, `run.json`
 * provenance, and {@link writeReport}, which replaces an experiment's results folder atomically.
 *
 * @example
 * ```ts
 * import { collectRunInfo, ResultTable, writeReport } from "./lib/report/mod.ts";
 * await writeReport("results/demo", { table: [{ model: "ViT", accuracy: 0.8 }], run: await collectRunInfo() });
 * ```
 *
 * @module
 */
export * from "./result_row.ts";
export * from "./result_table.ts";
export * from "./run_info.ts";
export * from "./write_report.ts";
