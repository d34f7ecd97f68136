/**
 * Atomic file writes: write to a temporary file beside the target, then rename over it, so a crash or
 * an error never leaves a half-written file where a good one was.
 *
 * @module
 */
import { dirname } from "node:path";

function tmpName(path: string): string {
  return `${path}.${Deno.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`;
}

/**
 * Writes `data` to `path` atomically (temp file + rename), creating parent folders.
 *
 * @example
 * ```ts
 * await writeFileAtomic("results/run.json", JSON.stringify({ ok: true }));
 * ```
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  const tmp = tmpName(path);
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Synchronous {@link writeFileAtomic}.
 *
 * @example
 * ```ts
 * writeFileAtomicSync("results/table.csv", "a,b\n1,2\n");
 * ```
 */
export function writeFileAtomicSync(path: string, data: string | Uint8Array): void {
  Deno.mkdirSync(dirname(path), { recursive: true });
  const tmp = tmpName(path);
  try {
    if (typeof data === "string") Deno.writeTextFileSync(tmp, data);
    else Deno.writeFileSync(tmp, data);
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* already gone */ }
    throw e;
  }
}
