/**
 * IDX files (the MNIST / Fashion-MNIST container), plain or gzip-compressed.
 *
 * @module
 */
import { gunzipSync } from "node:zlib";

/** A decoded IDX file of unsigned bytes. */
export interface IdxArray {
  /** Dimensions, e.g. `[10000, 28, 28]` for images or `[10000]` for labels. */
  dims: number[];
  /** The values, row-major. */
  data: Uint8Array;
}

/**
 * Decodes IDX bytes (gzip-compressed or not) holding unsigned bytes (type 0x08).
 * `path` only names the file in error messages; `expectDims` (the rank) is checked when given.
 *
 * @example
 * ```ts
 * const { dims, data } = decodeIdx(Deno.readFileSync(p), p, 3); // dims [60000, 28, 28]
 * ```
 */
export function decodeIdx(raw: Uint8Array, path: string, expectRank?: number): IdxArray {
  let bytes = raw;
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      bytes = new Uint8Array(gunzipSync(raw));
    } catch (e) {
      throw new Error(
        `IDX file ${path}: expected a valid gzip stream, found a corrupt or truncated one ` +
          `(${(e as Error).message})`,
      );
    }
  }
  if (bytes.length < 4) {
    throw new Error(`IDX file ${path}: expected at least a 4-byte header, found ${bytes.length} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  const rank = bytes[3];
  const hex = `0x${magic.toString(16).padStart(8, "0")}`;
  const want = expectRank === undefined ? "0x000008NN" : `0x0000080${expectRank}`;
  if (bytes[0] !== 0 || bytes[1] !== 0 || bytes[2] !== 0x08 || rank === 0 || (expectRank ?? rank) !== rank) {
    throw new Error(
      `IDX file ${path}: expected magic ${want} (unsigned bytes${
        expectRank === undefined ? "" : `, ${expectRank} dimension(s)`
      }), found ${hex}`,
    );
  }
  const header = 4 + 4 * rank;
  if (bytes.length < header) {
    throw new Error(
      `IDX file ${path}: expected a ${header}-byte header, found ${bytes.length} bytes (truncated)`,
    );
  }
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(view.getUint32(4 + 4 * i));
  const count = dims.reduce((a, b) => a * b, 1);
  if (bytes.length !== header + count) {
    throw new Error(
      `IDX file ${path}: dimensions [${dims.join(", ")}] need ${
        header + count
      } bytes (after decompression), ` +
        `found ${bytes.length} (${bytes.length < header + count ? "truncated" : "trailing data"})`,
    );
  }
  return { dims, data: bytes.subarray(header) };
}

/**
 * Reads an IDX file (`.gz` or not) of unsigned bytes.
 *
 * @example
 * ```ts
 * const labels = readIdx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", 1);
 * ```
 */
export function readIdx(path: string, expectRank?: number): IdxArray {
  let raw: Uint8Array;
  try {
    raw = Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`IDX file ${path}: not found`);
    throw e;
  }
  return decodeIdx(raw, path, expectRank);
}

/**
 * Encodes unsigned bytes as an IDX file (uncompressed), for tests and exports.
 *
 * @example
 * ```ts
 * const bytes = encodeIdx([2, 28, 28], new Uint8Array(2 * 784));
 * ```
 */
export function encodeIdx(dims: readonly number[], data: Uint8Array): Uint8Array {
  const count = dims.reduce((a, b) => a * b, 1);
  if (data.length !== count) {
    throw new Error(`encodeIdx: dims [${dims}] need ${count} values, got ${data.length}`);
  }
  const header = 4 + 4 * dims.length;
  const out = new Uint8Array(header + count);
  const view = new DataView(out.buffer);
  out[2] = 0x08;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  out.set(data, header);
  return out;
}
