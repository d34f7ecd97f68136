/**
 * A compact binary file of patch coordinates for one slide: a JSON header (slide id, level, patch size,
 * stride, ...) followed by little-endian level-0 `x`/`y` int32 columns and optional per-patch tissue
 * fractions (float32) and labels (uint8). Written atomically.
 *
 * Layout: `"WSICOORD"` | u32 version (1) | u32 header bytes | header JSON (UTF-8, padded with spaces to a
 * multiple of 4) | i32 x[count] | i32 y[count] | f32 tissue[count]? | u8 labels[count]?
 *
 * @module
 */
import { writeFileAtomic, writeFileAtomicSync } from "../util/mod.ts";

const MAGIC = "WSICOORD";
const VERSION = 1;

/** Patch coordinates of one slide (level-0 top-left corners). */
export interface PatchCoords {
  /** Slide identifier (file name without extension by default). */
  slideId: string;
  /** Where the slide was read from, if known. */
  slidePath?: string;
  /** Pyramid level the patches are read at. */
  level: number;
  /** Patch side in pixels at `level`. */
  patchSize: number;
  /** Grid step in pixels at `level`. */
  stride: number;
  /** Downsample of `level` (level-0 pixels per level pixel). */
  downsample: number;
  /** Level-0 slide size `[width, height]`. */
  slideSize: readonly [number, number];
  /** Level-0 x of each patch's top-left corner. */
  x: Int32Array;
  /** Level-0 y of each patch's top-left corner. */
  y: Int32Array;
  /** Fraction of tissue under each patch (0..1), if computed. */
  tissue?: Float32Array;
  /** Label of each patch (e.g. 1 = tumour), if annotated. */
  labels?: Uint8Array;
  /** Free-form extra metadata (tissue parameters, extraction settings...). */
  meta?: Record<string, unknown>;
}

/**
 * Number of patches in a {@link PatchCoords}.
 *
 * @example
 * ```ts
 * const n = coordsCount(coords);
 * ```
 */
export function coordsCount(c: PatchCoords): number {
  return c.x.length;
}

function check(c: PatchCoords, what: string): void {
  const n = c.x.length;
  if (c.y.length !== n) throw new Error(`${what}: x has ${n} values but y has ${c.y.length}`);
  if (c.tissue && c.tissue.length !== n) {
    throw new Error(`${what}: tissue has ${c.tissue.length} values, expected ${n}`);
  }
  if (c.labels && c.labels.length !== n) {
    throw new Error(`${what}: labels has ${c.labels.length} values, expected ${n}`);
  }
  if (!c.slideId) {
    throw new Error(`${what}: slideId must be a non-empty string, got ${JSON.stringify(c.slideId)}`);
  }
}

/**
 * Serialises coordinates to the compact binary format.
 *
 * @example
 * ```ts
 * const bytes = encodeCoords(coords);
 * ```
 */
export function encodeCoords(c: PatchCoords): Uint8Array {
  check(c, "encodeCoords()");
  const n = c.x.length;
  const header = {
    slideId: c.slideId,
    slidePath: c.slidePath,
    level: c.level,
    patchSize: c.patchSize,
    stride: c.stride,
    downsample: c.downsample,
    slideSize: c.slideSize,
    count: n,
    hasTissue: !!c.tissue,
    hasLabels: !!c.labels,
    meta: c.meta ?? {},
  };
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 4) * 4;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const total = 16 + padded + n * 8 + (c.tissue ? n * 4 : 0) + (c.labels ? n : 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  out.set(new TextEncoder().encode(MAGIC), 0);
  dv.setUint32(8, VERSION, true);
  dv.setUint32(12, padded, true);
  out.set(json, 16);
  let o = 16 + padded;
  for (let i = 0; i < n; i++, o += 4) dv.setInt32(o, c.x[i], true);
  for (let i = 0; i < n; i++, o += 4) dv.setInt32(o, c.y[i], true);
  if (c.tissue) { for (let i = 0; i < n; i++, o += 4) dv.setFloat32(o, c.tissue[i], true); }
  if (c.labels) out.set(c.labels, o);
  return out;
}

/**
 * Parses the compact binary format; `source` names the file in errors.
 *
 * @example
 * ```ts
 * const coords = decodeCoords(await Deno.readFile("out/slide_1.coords"), "out/slide_1.coords");
 * ```
 */
export function decodeCoords(bytes: Uint8Array, source = "coords"): PatchCoords {
  const what = `decodeCoords(${source})`;
  if (bytes.length < 16 || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) {
    throw new Error(`${what}: not a patch coordinates file (expected it to start with "${MAGIC}")`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== VERSION) throw new Error(`${what}: unsupported version ${version}, expected ${VERSION}`);
  const hlen = dv.getUint32(12, true);
  if (16 + hlen > bytes.length) throw new Error(`${what}: truncated header (${bytes.length} bytes)`);
  let h;
  try {
    h = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + hlen)));
  } catch (e) {
    throw new Error(`${what}: corrupt header: ${(e as Error).message}`);
  }
  const n: number = h.count;
  const need = 16 + hlen + n * 8 + (h.hasTissue ? n * 4 : 0) + (h.hasLabels ? n : 0);
  if (!Number.isInteger(n) || n < 0 || bytes.length !== need) {
    throw new Error(
      `${what}: ${bytes.length} bytes, expected ${need} for ${n} patches (truncated or corrupt)`,
    );
  }
  let o = 16 + hlen;
  const x = new Int32Array(n), y = new Int32Array(n);
  for (let i = 0; i < n; i++, o += 4) x[i] = dv.getInt32(o, true);
  for (let i = 0; i < n; i++, o += 4) y[i] = dv.getInt32(o, true);
  let tissue: Float32Array | undefined, labels: Uint8Array | undefined;
  if (h.hasTissue) {
    tissue = new Float32Array(n);
    for (let i = 0; i < n; i++, o += 4) tissue[i] = dv.getFloat32(o, true);
  }
  if (h.hasLabels) labels = bytes.slice(o, o + n);
  return {
    slideId: h.slideId,
    slidePath: h.slidePath,
    level: h.level,
    patchSize: h.patchSize,
    stride: h.stride,
    downsample: h.downsample,
    slideSize: h.slideSize,
    x,
    y,
    tissue,
    labels,
    meta: h.meta,
  };
}

/**
 * Writes coordinates atomically (temp file + rename).
 *
 * @example
 * ```ts
 * await writeCoordsFile("out/slide_1.coords", coords);
 * ```
 */
export async function writeCoordsFile(path: string, coords: PatchCoords): Promise<void> {
  await writeFileAtomic(path, encodeCoords(coords));
}

/**
 * Synchronous {@link writeCoordsFile}.
 *
 * @example
 * ```ts
 * writeCoordsFileSync("out/slide_1.coords", coords);
 * ```
 */
export function writeCoordsFileSync(path: string, coords: PatchCoords): void {
  writeFileAtomicSync(path, encodeCoords(coords));
}

/**
 * Reads a coordinates file written by {@link writeCoordsFile}.
 *
 * @example
 * ```ts
 * const { x, y, level, patchSize } = await readCoordsFile("out/slide_1.coords");
 * ```
 */
export async function readCoordsFile(path: string): Promise<PatchCoords> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`readCoordsFile(): cannot read "${path}": ${(e as Error).message}`);
  }
  return decodeCoords(bytes, path);
}
