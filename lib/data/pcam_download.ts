/**
 * Downloads PatchCamelyon from Zenodo (record 2546921): each `.h5.gz` is fetched resumably, checked against the
 * MD5 published in the PCam README, and gunzipped into place atomically.
 *
 * @module
 */
import { join, resolve } from "node:path";
import type { Split } from "./dataset.ts";
import { downloadFile } from "./download.ts";
import { pcamFile } from "./pcam.ts";

/** Where the `.h5.gz` files are served. */
export const PCAM_URL = "https://zenodo.org/records/2546921/files";

/** MD5 of each `.h5.gz`, as published in the PCam README (github.com/basveeling/pcam). */
export const PCAM_MD5: Readonly<Record<string, string>> = Object.freeze({
  "camelyonpatch_level_2_split_train_x.h5.gz": "1571f514728f59376b705fc836ff4b63",
  "camelyonpatch_level_2_split_train_y.h5.gz": "35c2d7259d906cfc8143347bb8e05be7",
  "camelyonpatch_level_2_split_valid_x.h5.gz": "d5b63470df7cfa627aeec8b9dc0c066e",
  "camelyonpatch_level_2_split_valid_y.h5.gz": "2b85f58b927af9964a4c15b8f7e8f179",
  "camelyonpatch_level_2_split_test_x.h5.gz": "d8c2d60d490dbd479f8199bdfa0cf6ec",
  "camelyonpatch_level_2_split_test_y.h5.gz": "60a7035772fbdb7f34eb86d4420cf66a",
});

/** Options of {@link downloadPcam}. */
export interface DownloadPcamOptions {
  /** Target folder (default `"data/pcam"`). */
  dir?: string;
  /** Splits to fetch (default all three; train_x alone is 6.4 GB compressed). */
  splits?: readonly Split[];
  /** Base address (default {@link PCAM_URL}; tests use a local server). */
  url?: string;
  /** MD5 per `.h5.gz` name (default {@link PCAM_MD5}). */
  md5?: Readonly<Record<string, string>>;
  /** Keep the `.h5.gz` after extraction (default false). */
  keepArchives?: boolean;
  progress?: boolean;
  timeoutMs?: number;
}

async function exists(p: string): Promise<boolean> {
  return await Deno.stat(p).then((s) => s.isFile, () => false);
}

/**
 * Makes sure the `.h5` files of the requested splits are in `dir`: present files are kept, missing ones are
 * downloaded (progress bar, resumable from `.part`, MD5-checked) and gunzipped. Offline it fails with a
 * message naming the files and where to put them. Returns the paths of the `.h5` files.
 *
 * @example
 * ```ts
 * await downloadPcam({ splits: ["test"] }); // data/pcam/camelyonpatch_level_2_split_test_{x,y}.h5
 * ```
 */
export async function downloadPcam(options: DownloadPcamOptions = {}): Promise<string[]> {
  const { dir = "data/pcam", splits = ["train", "val", "test"], url = PCAM_URL, progress = true } = options;
  const md5 = options.md5 ?? PCAM_MD5;
  const out: string[] = [];
  for (const split of splits) {
    for (const part of ["y", "x"] as const) {
      const name = pcamFile(split, part), h5 = join(dir, name), gz = `${h5}.gz`;
      out.push(h5);
      if (await exists(h5)) continue;
      const sum = md5[`${name}.gz`];
      if (!sum) throw new Error(`downloadPcam(): no MD5 for "${name}.gz"`);
      const hint =
        `To install PCam by hand, download ${PCAM_URL}/${name}.gz (md5 ${sum}) on a connected machine ` +
        `and put it (or the gunzipped ${name}) in ${resolve(dir)}.`;
      await downloadFile(`${url}/${name}.gz`, gz, { md5: sum, progress, timeoutMs: options.timeoutMs, hint });
      const tmp = `${h5}.tmp-${Deno.pid}`;
      try {
        const src = await Deno.open(gz, { read: true }); // its readable closes it
        const dst = await Deno.open(tmp, { write: true, create: true, truncate: true }); // its writable too
        await src.readable.pipeThrough(new DecompressionStream("gzip")).pipeTo(dst.writable);
      } catch (e) {
        await Deno.remove(tmp).catch(() => {});
        throw new Error(
          `downloadPcam(): "${gz}" is not a valid gzip file (${(e as Error).message}). ${hint}`,
        );
      }
      await Deno.rename(tmp, h5);
      if (!options.keepArchives) await Deno.remove(gz);
    }
  }
  return out;
}
