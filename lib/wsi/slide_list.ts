/**
 * Lists of slides: glob expansion (sorted, so every machine sees the same order) and static shards
 * (`--shard i/N`) for scheduler array jobs (Slurm `--array`, Kubernetes Indexed Jobs) without a queue.
 *
 * @module
 */
import { glob } from "node:fs/promises";
import { resolve } from "node:path";

/**
 * Expands paths and glob patterns (`*`, `?`, `**`, `{a,b}`) to a sorted list of absolute file paths without
 * duplicates. A plain path must exist; a pattern that matches nothing is an error naming it.
 *
 * @example
 * ```ts
 * await expandSlides(["data/camelyon16/*.tif"]); // ["/abs/data/camelyon16/normal_001.tif", ...]
 * ```
 */
export async function expandSlides(patterns: readonly string[]): Promise<string[]> {
  const out = new Set<string>();
  for (const p of patterns) {
    if (/[*?[{]/.test(p)) {
      let n = 0;
      for await (const f of glob(p)) {
        const abs = resolve(f);
        try {
          if (!(await Deno.stat(abs)).isFile) continue;
        } catch {
          continue;
        }
        out.add(abs);
        n++;
      }
      if (n === 0) throw new Error(`no slide matches "${p}"`);
    } else {
      let st: Deno.FileInfo;
      try {
        st = await Deno.stat(p);
      } catch (e) {
        throw new Error(`slide "${p}" cannot be read: ${(e as Error).message}`);
      }
      if (!st.isFile) throw new Error(`slide "${p}" is not a file`);
      out.add(resolve(p));
    }
  }
  return [...out].sort();
}

/** A static shard: this task's index and the number of tasks. */
export interface Shard {
  index: number;
  count: number;
}

/**
 * Parses `"i/N"` (0 <= i < N): Slurm `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT` with `--array=0-(N-1)`,
 * Kubernetes `$JOB_COMPLETION_INDEX/<completions>`.
 *
 * @example
 * ```ts
 * parseShard("2/8"); // { index: 2, count: 8 }
 * ```
 */
export function parseShard(raw: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(raw.trim());
  const index = m ? Number(m[1]) : NaN, count = m ? Number(m[2]) : NaN;
  if (!m || !(count >= 1) || !(index < count)) {
    throw new Error(`shard "${raw}" is not i/N with 0 <= i < N (e.g. "0/4")`);
  }
  return { index, count };
}

/**
 * This shard's share of a sorted slide list: every N-th slide from the i-th, so shards differ by at most
 * one slide and together cover the list exactly once.
 *
 * @example
 * ```ts
 * shardSlides(["a", "b", "c", "d", "e"], { index: 1, count: 2 }); // ["b", "d"]
 * ```
 */
export function shardSlides<T>(slides: readonly T[], shard: Shard): T[] {
  return slides.filter((_, i) => i % shard.count === shard.index);
}
