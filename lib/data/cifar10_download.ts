/**
 * Downloads and extracts the official CIFAR-10 binary archive into `data/cifar-10/`.
 *
 * @module
 */
import { join, resolve } from "node:path";
import * as tar from "tar";
import { CIFAR10_FILES, CIFAR_RECORD_BYTES, findCifar10 } from "./cifar10.ts";
import { downloadFile } from "./download.ts";

/** The official address of the CIFAR-10 binary version. */
export const CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/** MD5 of the official archive. */
export const CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530";
/** Name of the archive in the cache folder. */
export const CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz";

/** Options of {@link downloadCifar10}. */
export interface DownloadCifar10Options {
  /** Cache folder (default `"data/cifar-10"`). */
  dir?: string;
  /** Archive address (default {@link CIFAR10_URL}; tests point it at a local server). */
  url?: string;
  /** Expected MD5 of the archive (default {@link CIFAR10_MD5}). */
  md5?: string;
  /** Show a progress bar (default true). */
  progress?: boolean;
  /** Connection / idle timeout in ms (default 30000). */
  timeoutMs?: number;
}

function complete(dir: string): boolean {
  for (const f of [...CIFAR10_FILES.train, ...CIFAR10_FILES.test]) {
    try {
      const s = Deno.statSync(join(dir, f));
      if (s.size === 0 || s.size % CIFAR_RECORD_BYTES !== 0) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Makes sure the CIFAR-10 binary files are in `dir/cifar-10-batches-bin/`: returns at once when they
 * are, otherwise downloads the archive (progress bar, resumable, MD5-checked), extracts it in a
 * temporary folder and renames the result into place. Offline it fails fast with a message saying
 * where to put the files by hand. Returns the folder holding the `.bin` files.
 *
 * @example
 * ```ts
 * const folder = await downloadCifar10(); // "data/cifar-10/cifar-10-batches-bin"
 * ```
 */
export async function downloadCifar10(options: DownloadCifar10Options = {}): Promise<string> {
  const { dir = "data/cifar-10", url = CIFAR10_URL, md5 = CIFAR10_MD5, progress = true, timeoutMs } = options;
  const found = findCifar10(dir);
  if (found && complete(found)) return found;
  const target = join(dir, "cifar-10-batches-bin");
  const archive = join(dir, CIFAR10_ARCHIVE);
  const hint = `To install CIFAR-10 by hand, download ${CIFAR10_URL} (md5 ${CIFAR10_MD5}) on a connected ` +
    `machine and either put the archive at ${resolve(archive)} or extract it so that ` +
    `${resolve(target)}/data_batch_1.bin exists.`;
  await downloadFile(url, archive, { md5, progress, timeoutMs, hint });

  const tmp = join(dir, `.extract-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`);
  await Deno.mkdir(tmp, { recursive: true });
  try {
    try {
      await tar.x({ file: archive, cwd: tmp, strict: true });
    } catch (e) {
      throw new Error(
        `CIFAR-10 archive ${archive}: expected a gzip-compressed tar, extraction failed (${
          (e as Error).message
        }). ` +
          `Delete it and run again.`,
      );
    }
    const extracted = join(tmp, "cifar-10-batches-bin");
    if (!complete(extracted)) {
      const names: string[] = [];
      try {
        for (const e of Deno.readDirSync(extracted)) names.push(e.name);
      } catch { /* folder missing */ }
      throw new Error(
        `CIFAR-10 archive ${archive}: expected cifar-10-batches-bin/ with ` +
          `${
            [...CIFAR10_FILES.train, ...CIFAR10_FILES.test].join(", ")
          } (whole ${CIFAR_RECORD_BYTES}-byte records), ` +
          `found ${names.length ? names.join(", ") : "no such folder"}`,
      );
    }
    await Deno.remove(target, { recursive: true }).catch(() => {});
    await Deno.rename(extracted, target);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return target;
}
