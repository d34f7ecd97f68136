/**
 * A careful file downloader: progress bar (bytes and rate), resume with HTTP Range, MD5 verification,
 * and a temporary `.part` file renamed into place only when complete and verified, so a failed or
 * corrupt download never replaces a file that is already there.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename, dirname } from "node:path";
import { Progress } from "../util/mod.ts";

/** Options of {@link downloadFile}. */
export interface DownloadOptions {
  /** Expected MD5 (hex). Verified after download; an existing `dest` with this MD5 is not downloaded again. */
  md5?: string;
  /** Show a progress bar (default true). */
  progress?: boolean;
  /** Milliseconds to wait for the response headers and between body chunks (default 30000). */
  timeoutMs?: number;
  /** Appended to every failure message, e.g. how to put the file in place by hand. */
  hint?: string;
}

/** What {@link downloadFile} did. */
export interface DownloadResult {
  /** The destination path. */
  path: string;
  /** Size of the file in bytes. */
  bytes: number;
  /** True when `dest` was already there (and matched `md5` when given): nothing was downloaded. */
  cached: boolean;
  /** True when an earlier partial download was continued with an HTTP Range request. */
  resumed: boolean;
}

/**
 * MD5 of a file, streamed (hex).
 *
 * @example
 * ```ts
 * await md5File("data/cifar-10/cifar-10-binary.tar.gz"); // "c32a1d4ab5d03f1284b67883e8d87530"
 * ```
 */
export async function md5File(path: string): Promise<string> {
  const hash = createHash("md5");
  using file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return undefined;
  }
}

/**
 * Downloads `url` to `dest` (see the module notes). Resumes a previous partial download (`dest.part`)
 * when the server honours Range requests, restarts it otherwise.
 *
 * @example
 * ```ts
 * await downloadFile("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
 *   "data/cifar-10/cifar-10-binary.tar.gz", { md5: "c32a1d4ab5d03f1284b67883e8d87530" });
 * ```
 */
export async function downloadFile(
  url: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const { md5, progress = true, timeoutMs = 30000, hint } = options;
  const tail = hint ? ` ${hint}` : "";
  const existing = await sizeOf(dest);
  if (existing !== undefined && (md5 === undefined || (await md5File(dest)) === md5.toLowerCase())) {
    return { path: dest, bytes: existing, cached: true, resumed: false };
  }
  await Deno.mkdir(dirname(dest), { recursive: true });
  const part = `${dest}.part`;
  let start = (await sizeOf(part)) ?? 0;

  const ctrl = new AbortController();
  let timer = setTimeout(() => ctrl.abort(new Error(`no response within ${timeoutMs} ms`)), timeoutMs);
  const rearm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ctrl.abort(new Error(`no data for ${timeoutMs} ms`)), timeoutMs);
  };
  let res: Response;
  try {
    res = await fetch(url, { headers: start > 0 ? { Range: `bytes=${start}-` } : {}, signal: ctrl.signal });
  } catch (e) {
    clearTimeout(timer);
    throw new Error(`download ${url}: could not connect (${errText(e)}); is this machine offline?${tail}`);
  }

  let resumed = false;
  let total: number | undefined;
  try {
    const len = res.headers.get("content-length");
    const bodyLen = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
    if (res.status === 416 && start > 0) {
      // The partial file may already be complete: verify it below.
      await res.body?.cancel();
      total = start;
    } else if (res.status === 206 && start > 0) {
      const range = res.headers.get("content-range") ?? "";
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(range.trim());
      if (!m || Number(m[1]) !== start) {
        await res.body?.cancel();
        await Deno.remove(part).catch(() => {});
        throw new Error(
          `download ${url}: asked for bytes from ${start}, server answered Content-Range "${range}"; ` +
            `the partial file was deleted, run again to restart.${tail}`,
        );
      }
      total = m[3] === "*" ? undefined : Number(m[3]);
      resumed = true;
    } else if (res.status === 200) {
      start = 0; // server ignored Range (or fresh download): restart
      total = bodyLen;
    } else {
      await res.body?.cancel();
      throw new Error(
        `download ${url}: expected HTTP 200 or 206, found ${res.status} ${res.statusText}.${tail}`,
      );
    }

    if (res.status !== 416) {
      const bar = new Progress(total ?? 0, {
        label: `download ${basename(dest)}`,
        unit: "bytes",
        silent: !progress,
      });
      bar.update(start);
      const file = await Deno.open(part, {
        write: true,
        create: true,
        append: start > 0,
        truncate: start === 0,
      });
      let got = start;
      try {
        const reader = res.body!.getReader();
        while (true) {
          rearm();
          const { done, value } = await reader.read();
          if (done) break;
          let off = 0;
          while (off < value.length) off += await file.write(value.subarray(off));
          got += value.length;
          bar.update(got);
        }
      } catch (e) {
        throw new Error(
          `download ${url}: interrupted after ${got} of ${total ?? "?"} bytes (${errText(e)}); ` +
            `the partial file ${part} is kept, run again to resume.${tail}`,
        );
      } finally {
        file.close();
        await bar.stop();
      }
      if (total !== undefined && got !== total) {
        throw new Error(
          `download ${url}: expected ${total} bytes, found ${got} (connection closed early); ` +
            `the partial file ${part} is kept, run again to resume.${tail}`,
        );
      }
    }
  } finally {
    clearTimeout(timer);
  }

  const bytes = (await sizeOf(part)) ?? 0;
  if (total !== undefined && bytes !== total) {
    await Deno.remove(part).catch(() => {});
    throw new Error(
      `download ${url}: expected ${total} bytes, found ${bytes} in ${part}; deleted it.${tail}`,
    );
  }
  if (md5 !== undefined) {
    const found = await md5File(part);
    if (found !== md5.toLowerCase()) {
      await Deno.remove(part).catch(() => {});
      throw new Error(
        `download ${url}: checksum mismatch, expected md5 ${md5.toLowerCase()}, found ${found} ` +
          `(${bytes} bytes); the corrupt download was deleted${
            existing !== undefined ? ` and ${dest} left as it was` : ""
          }.${tail}`,
      );
    }
  }
  await Deno.rename(part, dest);
  return { path: dest, bytes, cached: false, resumed };
}

function errText(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message}: ${cause.message}` : e.message;
  }
  return String(e);
}
