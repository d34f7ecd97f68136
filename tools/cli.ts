/**
 * Flag parsing shared by the tools (`compare`, `notebooks`, `bench`): node's strict `parseArgs`, and one way
 * to fail on bad input, as tools/train.ts does: a message naming the flag and quoting the value, `(see
 * --help)`, exit code 2, no stack trace.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** A mistake in the command line: {@link runCli} prints it and exits 2. */
export class CliError extends Error {
  override name = "CliError";
}

/**
 * Parses `args` strictly (unknown flags and missing values are {@link CliError}s).
 *
 * @example
 * ```ts
 * const { values } = parseCli(["--seeds", "3"], { seeds: { type: "string" } });
 * values.seeds; // "3"
 * ```
 */
export function parseCli<O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
  allowPositionals = false,
): ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: boolean }>> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals });
  } catch (e) {
    throw new CliError((e as Error).message);
  }
}

/**
 * A flag's whole number, at least `min`, or a {@link CliError} quoting the value.
 *
 * @example
 * ```ts
 * intFlag("seeds", "3", 1); // 3
 * ```
 */
export function intFlag(name: string, raw: string, min: number): number {
  const v = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(v) || v < min) {
    throw new CliError(`--${name} "${raw}" is not an integer ≥ ${min}`);
  }
  return v;
}

/** The flags every study tool shares: its runs folder, its results folder, its profile and help. */
export const STUDY_FLAGS = {
  runs: { type: "string" },
  out: { type: "string" },
  profile: { type: "string", default: "cpu" },
  help: { type: "boolean", short: "h", default: false },
} as const;

/**
 * A study tool's `--profile`: `cpu` (the study) or `quick` (a smoke test); anything else is a {@link CliError}.
 *
 * @example
 * ```ts
 * cpuOrQuick("quick"); // "quick"
 * ```
 */
export function cpuOrQuick(raw: string): "cpu" | "quick" {
  if (raw !== "cpu" && raw !== "quick") throw new CliError(`--profile "${raw}" is not cpu or quick`);
  return raw;
}

/**
 * The datasets the study tools run on, with what their cpu-profile runs train and evaluate on: the
 * synthetic set's 4000 training and 1000 evaluation images, or Fashion-MNIST at the cpu profile's subsets
 * (undefined: the profile's 10000 and 2000, as notebook 06 trains on).
 */
export const STUDY_DATASETS = {
  synthetic: { dataset: "synthetic", trainSubset: 4000, evalSubset: 1000 },
  "fashion-mnist": { dataset: "fashion-mnist", trainSubset: undefined, evalSubset: undefined },
} as const;
/** A study tool's dataset name. */
export type StudyDataset = keyof typeof STUDY_DATASETS;

/**
 * A study tool's `--dataset`: one of {@link STUDY_DATASETS}; anything else is a {@link CliError}.
 *
 * @example
 * ```ts
 * studyDataset("fashion-mnist"); // "fashion-mnist"
 * ```
 */
export function studyDataset(raw: string): StudyDataset {
  if (!Object.hasOwn(STUDY_DATASETS, raw)) {
    throw new CliError(`--dataset "${raw}" is not ${Object.keys(STUDY_DATASETS).join(" or ")}`);
  }
  return raw as StudyDataset;
}

/**
 * Calls `f` (parsing inside it throws {@link CliError}); a `CliError`, or an error of a `parse*` validator
 * passed as `usageErrors`, prints `<tool>: <message>` and `(see --help)` and exits 2.
 * Returns `f`'s exit code, or exits with it when `exit` is true.
 *
 * @example
 * ```ts
 * await runCli("compare", async () => 0);
 * ```
 */
export async function runCli(tool: string, f: () => Promise<number | void>, exit = true): Promise<number> {
  let code: number;
  try {
    code = (await f()) ?? 0;
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    console.error(usageMessage(tool, e.message));
    code = 2;
  }
  if (exit) Deno.exit(code);
  return code;
}

function usageMessage(tool: string, message: string, help = "--help"): string {
  return `${tool}: ${message}\n(see ${help})`;
}

/**
 * For tools written as top-level code (train, wsi): prints `<tool>: <message>` and `(see <help>)` and exits
 * 2, as {@link runCli} does for a {@link CliError}.
 *
 * @example
 * ```ts
 * const fail = (msg: string): never => exitUsage("train", msg);
 * ```
 */
export function exitUsage(tool: string, message: string, help = "--help"): never {
  console.error(usageMessage(tool, message, help));
  Deno.exit(2);
}

/**
 * Runs a validator (`parseProfile`, `parseDatasetName`, ...) and turns its error into a {@link CliError}.
 *
 * @example
 * ```ts
 * const n = usage(() => Number.parseInt("3"));
 * ```
 */
export function usage<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new CliError((e as Error).message);
  }
}
