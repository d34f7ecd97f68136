/**
 * Atomic file writes: write to a temporary file beside the target, flush it to disk (fsync), rename it
 * over the target, then flush the folder (fsync of the directory, so the rename itself survives a power
 * loss). A crash or an error never leaves a half-written or empty file where a good one was: without the
 * first fsync, a file system may commit the rename before the data (ext4 delayed allocation).
 *
 * @module
 */
import { dirname } from "node:path";

function tmpName(path: string): string {
  return `${path}.${Deno.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`;
}

function bytesOf(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? new TextEncoder().encode(data) : data;
}

/** Directories cannot be opened for fsync on Windows; there the rename is as durable as it gets. */
const canSyncDirs = Deno.build.os !== "windows";

/**
 * Writes `data` to `path` atomically (temp file, fsync, rename, fsync of the folder), creating parent
 * folders.
 *
 * @example
 * ```ts
 * await writeFileAtomic("results/run.json", JSON.stringify({ ok: true }));
 * ```
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  await Deno.mkdir(dir, { recursive: true });
  const tmp = tmpName(path);
  try {
    const bytes = bytesOf(data);
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  if (canSyncDirs) {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
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
  const dir = dirname(path);
  Deno.mkdirSync(dir, { recursive: true });
  const tmp = tmpName(path);
  try {
    const bytes = bytesOf(data);
    const f = Deno.openSync(tmp, { write: true, create: true, truncate: true });
    try {
      for (let off = 0; off < bytes.length;) off += f.writeSync(bytes.subarray(off));
      f.syncSync();
    } finally {
      f.close();
    }
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* already gone */ }
    throw e;
  }
  if (canSyncDirs) {
    const d = Deno.openSync(dir, { read: true });
    try {
      d.syncSync();
    } finally {
      d.close();
    }
  }
}
