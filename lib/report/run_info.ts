/**
 * `run.json` provenance: what produced a results folder (commit, backend, profile, dataset, config,
 * seeds, durations, machine, versions).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { webgpuAdapter, type WebGPUAdapterReport } from "../backend/webgpu.ts";

/** Provenance of one experiment run. */
export interface RunInfo {
  /** Experiment name (usually the results folder name). */
  experiment?: string;
  /** ISO time the record was made. */
  createdAt: string;
  /** The commit, and whether tracked files outside `results/` had uncommitted changes. */
  git: { commit: string | null; dirty: boolean | null };
  /** tfjs backend used. */
  backend: string | null;
  /** Profile name (`quick`, `cpu`, `full`). */
  profile?: string;
  /** Dataset name / path / split. */
  dataset?: unknown;
  /** The full experiment configuration (every number the profile sets). */
  config?: unknown;
  /** Seeds run. */
  seeds?: number[];
  /** Wall-clock durations in seconds, by phase (e.g. `{train: 812.4, eval: 13.2}`). */
  durations?: Record<string, number>;
  machine: {
    cpuModel: string;
    /** Logical cores. */
    cores: number;
    /** Total memory in bytes. */
    memoryBytes: number | null;
    os: string;
    arch: string;
    /** The GPU adapter, when the run computed on the webgpu backend (`software` marks an emulated GPU). */
    gpu?: WebGPUAdapterReport;
  };
  versions: { deno: string; v8: string; typescript: string; tfjs: string };
  /** The command line (script and arguments). */
  command: string[];
  /** Anything else worth recording. */
  extra?: Record<string, unknown>;
}

/** What the caller knows about the run; the rest is collected. */
export type RunInfoInput =
  & Partial<Pick<RunInfo, "experiment" | "profile" | "dataset" | "config" | "seeds" | "durations" | "extra">>
  & {
    /** Override the backend (default: the current tfjs backend). */
    backend?: string;
  };

async function git(args: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command("git", { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** The path of one `git status --porcelain` line (the new path of a rename), relative to the repo root. */
function changedPath(line: string): string {
  // `XY path`; the output is trimmed as a whole, so the first line may have lost X's leading space.
  const path = line.replace(/^\s*\S{1,2}\s+/, "");
  const arrow = path.indexOf(" -> ");
  return (arrow >= 0 ? path.slice(arrow + 4) : path).replace(/^"|"$/g, "");
}

function cpuModel(): string {
  try {
    const m = Deno.readTextFileSync("/proc/cpuinfo").match(/^model name\s*:\s*(.+)$/m);
    if (m) return m[1].trim();
  } catch { /* not Linux */ }
  return `${Deno.build.arch} (model unknown)`;
}

function currentBackend(): string | null {
  try {
    return tf.engine().backendName ?? null;
  } catch {
    return null;
  }
}

/**
 * Collects the provenance of the current run: git commit (and whether the tree had local changes),
 * tfjs backend, machine (CPU model, cores, memory), Deno/V8/TypeScript/tfjs versions, command line,
 * plus what the caller passes (profile, dataset, config, seeds, durations).
 *
 * @example
 * ```ts
 * const run = await collectRunInfo({ experiment: "cifar10_pruning", profile: "quick", seeds: [0, 1, 2], config });
 * ```
 */
export async function collectRunInfo(input: RunInfoInput = {}): Promise<RunInfo> {
  const commit = await git(["rev-parse", "HEAD"]);
  const status = commit ? await git(["status", "--porcelain", "--untracked-files=no"]) : null;
  // results/ is what experiments write (a notebook rewrites its own results while it runs): changes
  // there say nothing about the code that produced them.
  const codeChanges = status === null
    ? null
    : status.split("\n").filter((l) => l.trim() && !changedPath(l).startsWith("results/"));
  let memoryBytes: number | null = null;
  try {
    memoryBytes = Deno.systemMemoryInfo().total;
  } catch { /* unavailable */ }
  const { backend, ...rest } = input;
  return {
    ...(rest.experiment !== undefined ? { experiment: rest.experiment } : {}),
    createdAt: new Date().toISOString(),
    git: { commit, dirty: codeChanges === null ? null : codeChanges.length > 0 },
    backend: backend ?? currentBackend(),
    ...rest,
    machine: {
      cpuModel: cpuModel(),
      cores: navigator.hardwareConcurrency,
      memoryBytes,
      os: Deno.build.os,
      arch: Deno.build.arch,
      ...((backend ?? currentBackend()) === "webgpu" && webgpuAdapter() ? { gpu: webgpuAdapter() } : {}),
    },
    versions: { ...Deno.version, tfjs: tf.version_core },
    command: [Deno.mainModule, ...Deno.args],
  };
}
