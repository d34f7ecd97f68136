/**
 * What a training run *is*: the model config, the dataset actually loaded (name, split sizes and a content
 * fingerprint of the images and labels), the training config and the seed. A run folder records its identity
 * in `identity.json` when it starts; resuming with another identity is refused with the list of differences
 * (or, with `forceResume`, accepted and recorded), and starting a new run into an occupied folder is refused
 * unless `overwrite`, which first moves the old run aside. So a run folder never holds two configurations.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import type { Dataset } from "../data/mod.ts";
import { pathExists, writeFileAtomic } from "../util/mod.ts";

/** File name of a run folder's identity record. */
export const IDENTITY_FILE = "identity.json";

/** Files whose presence makes a folder an (occupied) run folder. */
const RUN_FILES = [
  IDENTITY_FILE,
  "config.json",
  "checkpoint.safetensors",
  "metrics.jsonl",
  "result.json",
  "run.json",
  "model.safetensors",
] as const;

/** The dataset part of an identity: what was loaded, not what was asked for. */
export interface DatasetIdentity {
  name: string;
  split: string;
  size: number;
  imageShape: readonly number[];
  /** SHA-256 (hex) of the loaded images and labels, in order. */
  fingerprint: string;
}

/** Everything that makes two runs the same run. */
export interface RunIdentity {
  /** The run's full configuration (model config, strategy, schedule, optimiser, epochs, batch size, ...). */
  config: Record<string, unknown>;
  dataset: { train: DatasetIdentity; eval: DatasetIdentity };
  seed: number;
}

/** `identity.json`: the identity plus when it was written and any forced resumes. */
export interface IdentityRecord {
  identity: RunIdentity;
  createdAt: string;
  /** Resumes that went ahead despite differences (`forceResume`), with what differed. */
  forcedResumes?: { at: string; differences: string[] }[];
}

/**
 * A content fingerprint of a loaded dataset split: SHA-256 over its image bytes, then its labels.
 *
 * @example
 * ```ts
 * const id = await datasetIdentity(await loadDataset("synthetic", { split: "test" }));
 * id.fingerprint; // "3f9a…"
 * ```
 */
export async function datasetIdentity(ds: Dataset): Promise<DatasetIdentity> {
  const both = new Uint8Array(ds.images.length + ds.labels.length);
  both.set(ds.images, 0);
  both.set(ds.labels, ds.images.length);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", both));
  return {
    name: ds.name,
    split: ds.split,
    size: ds.size,
    imageShape: [...ds.imageShape],
    fingerprint: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
  };
}

/**
 * The differences between two JSON-like values, as `path: old → new` lines (empty when equal). Keys whose
 * value is `undefined` count as absent.
 *
 * @example
 * ```ts
 * identityDifferences({ a: 1, b: { c: 2 } }, { a: 1, b: { c: 3 } }); // ['b.c: 2 → 3']
 * ```
 */
export function identityDifferences(before: unknown, after: unknown, path = ""): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (isObj(before) && isObj(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((k) => identityDifferences(before[k], after[k], path ? `${path}.${k}` : k));
  }
  const a = JSON.stringify(before), b = JSON.stringify(after);
  if (a === b) return [];
  const short = (s: string | undefined) =>
    s === undefined ? "(absent)" : s.length > 80 ? `${s.slice(0, 77)}...` : s;
  return [`${path || "(root)"}: ${short(a)} → ${short(b)}`];
}

/** How {@link claimRunFolder} treats an existing run. */
export interface ClaimOptions {
  /** Continue the run in the folder (its identity must match unless `forceResume`). */
  resume?: boolean;
  /** Resume even though the identity differs; the differences are recorded in `identity.json`. */
  forceResume?: boolean;
  /** Start anew in an occupied folder: the old run is moved aside first (to `<dir>.replaced-<time>`). */
  overwrite?: boolean;
  /** Prefix of error messages (default `"runTraining"`). */
  source?: string;
}

/** What {@link claimRunFolder} did. */
export interface ClaimResult {
  /** `"new"`: empty folder; `"resumed"`: same identity; `"forced"`: resumed despite differences. */
  status: "new" | "resumed" | "forced";
  /** Differences with the recorded identity (non-empty only when `forced`). */
  differences: string[];
  /** Where the old run went with `overwrite`, if anywhere. */
  movedAside?: string;
}

/** True when `dir` holds any file of a run (identity, config, checkpoint, log, result, weights). */
export async function isRunFolder(dir: string): Promise<boolean> {
  for (const f of RUN_FILES) if (await pathExists(join(dir, f))) return true;
  return false;
}

/**
 * Makes `dir` this run's folder, or refuses: a new run needs an empty (or absent) folder, or `overwrite`
 * (the old run is renamed to `<dir>.replaced-<time>` first, never deleted); a resumed run needs the same
 * identity as recorded in `identity.json` (a folder from before identities existed is compared through its
 * `config.json`), or `forceResume`. Errors list every difference and say which option to use.
 *
 * @example
 * ```ts
 * await claimRunFolder("results/runs/vit", identity, { resume: true });
 * ```
 */
export async function claimRunFolder(
  dir: string,
  identity: RunIdentity,
  options: ClaimOptions = {},
): Promise<ClaimResult> {
  const src = options.source ?? "runTraining";
  const occupied = await isRunFolder(dir);
  const now = new Date().toISOString();
  const write = (rec: IdentityRecord) =>
    writeFileAtomic(join(dir, IDENTITY_FILE), JSON.stringify(rec, null, 2) + "\n");
  if (!occupied) {
    if (options.resume && !options.overwrite) {
      throw new Error(
        `${src}: resume: "${dir}" holds no run (no ${IDENTITY_FILE}, config.json or checkpoint); ` +
          `nothing to resume (start the run without resume)`,
      );
    }
    await write({ identity, createdAt: now });
    return { status: "new", differences: [] };
  }
  if (options.overwrite) {
    const aside = join(dirname(dir), `${basename(dir)}.replaced-${now.replace(/[:.]/g, "-")}`);
    await Deno.rename(dir, aside);
    await write({ identity, createdAt: now });
    return { status: "new", differences: [], movedAside: aside };
  }
  if (!options.resume) {
    throw new Error(
      `${src}: "${dir}" already holds a run; pass resume to continue it (its configuration must match), ` +
        `overwrite to start anew (the old run is moved aside, not deleted), or choose another out folder`,
    );
  }
  const recorded = await readRecord(dir, src);
  const differences = recorded.legacyConfig
    ? identityDifferences(recorded.legacyConfig, identity.config)
    : identityDifferences(recorded.record!.identity, identity);
  if (differences.length && !options.forceResume) {
    throw new Error(
      `${src}: cannot resume "${dir}": this run differs from the one recorded there ` +
        `(${differences.length} difference${differences.length > 1 ? "s" : ""}):\n  ${
          differences.join("\n  ")
        }\nUse overwrite to start anew (the old run is moved aside), another out folder, or forceResume ` +
        `(--force-resume) to continue deliberately (recorded in ${IDENTITY_FILE})`,
    );
  }
  const base: IdentityRecord = recorded.record ?? { identity, createdAt: now };
  const forcedResumes = [...(base.forcedResumes ?? [])];
  if (differences.length) forcedResumes.push({ at: now, differences });
  await write({ ...base, identity, ...(forcedResumes.length ? { forcedResumes } : {}) });
  return { status: differences.length ? "forced" : "resumed", differences };
}

async function readRecord(
  dir: string,
  src: string,
): Promise<{ record?: IdentityRecord; legacyConfig?: Record<string, unknown> }> {
  const file = join(dir, IDENTITY_FILE);
  if (await pathExists(file)) {
    try {
      const record = JSON.parse(await Deno.readTextFile(file)) as IdentityRecord;
      if (typeof record?.identity !== "object" || record.identity === null) throw new Error("no identity");
      return { record };
    } catch (e) {
      throw new Error(
        `${src}: cannot resume "${dir}": ${file} is unreadable (${(e as Error).message}); ` +
          `use overwrite to start anew`,
      );
    }
  }
  const config = join(dir, "config.json");
  try {
    const saved = JSON.parse(await Deno.readTextFile(config)) as Record<string, unknown>;
    delete saved.batchSizeReport;
    return { legacyConfig: saved };
  } catch (e) {
    throw new Error(
      `${src}: cannot resume "${dir}": it has neither ${IDENTITY_FILE} nor a readable config.json ` +
        `(${(e as Error).message}); use overwrite to start anew`,
    );
  }
}

/**
 * Refuses to evaluate the model of the run in `dir` on `dataset` unless it is the evaluation set the run
 * itself was evaluated on (the `dataset.eval` of its `identity.json`: name, split, size and content
 * fingerprint). A table then never mixes a run's numbers on one subset with another run's on another (the
 * equal-cost notebook once scored seed 0's ablation on seed 2's test subset). A folder without
 * `identity.json` (from before identities) is not checked.
 *
 * @example
 * ```ts
 * await checkRunEvalSet(r.outDir, r.evalDataset!, "recordRunMetrics"); // passes: the run's own set
 * ```
 */
export async function checkRunEvalSet(dir: string, dataset: Dataset, source: string): Promise<void> {
  const file = join(dir, IDENTITY_FILE);
  if (!(await pathExists(file))) return;
  let theirs: DatasetIdentity | undefined;
  try {
    theirs = (JSON.parse(await Deno.readTextFile(file)) as IdentityRecord).identity.dataset.eval;
  } catch (e) {
    throw new Error(
      `${source}: ${file} is unreadable (${(e as Error).message}); expected a run's identity record`,
    );
  }
  const differences = identityDifferences(theirs, await datasetIdentity(dataset));
  if (differences.length) {
    throw new Error(
      `${source}: the dataset given is not the evaluation set of the run in "${dir}" (${
        differences.join("; ")
      }); evaluate the run's model on its own evaluation set (runTraining's evalDataset, loaded with the ` +
        `run's seed as subsetSeed)`,
    );
  }
}
