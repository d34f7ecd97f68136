/**
 * Reading and writing the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
 * little-endian header length, a JSON header (`{name: {dtype, shape, data_offsets}, __metadata__}`),
 * then the raw little-endian tensor bytes.
 *
 * Reading converts F32/F16/BF16/F64 to `Float32Array` and I64/I32/I16/I8/U8/BOOL to `Int32Array`
 * (I64 values outside the int32 range are an error). Writing supports F32 and I32.
 *
 * @module
 */
import { writeFileAtomic } from "../util/mod.ts";

/** A tensor read from or written to a safetensors file. */
export interface RawTensor {
  /** Dtype as stored in the file (`"F32"`, `"I64"`, ...). */
  dtype: string;
  shape: number[];
  /** Values: floats as `Float32Array`, integers as `Int32Array`. */
  data: Float32Array | Int32Array;
}

/** The contents of a safetensors file. */
export interface SafetensorsFile {
  tensors: Map<string, RawTensor>;
  /** The `__metadata__` string map (empty when absent). */
  metadata: Record<string, string>;
}

const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function decode(
  name: string,
  dtype: string,
  bytes: Uint8Array,
  count: number,
  where: string,
): Float32Array | Int32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    }
    case "F64": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    }
    case "F16": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
      return out;
    }
    case "BF16": {
      const out = new Float32Array(count);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) u[i] = dv.getUint16(i * 2, true) << 16;
      return out;
    }
    case "I64": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const v = dv.getBigInt64(i * 8, true);
        if (v > 2147483647n || v < -2147483648n) {
          throw new Error(
            `${where}: tensor "${name}" (I64) holds ${v} at index ${i}, outside the int32 range`,
          );
        }
        out[i] = Number(v);
      }
      return out;
    }
    case "I32": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getInt32(i * 4, true);
      return out;
    }
    case "I16": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getInt16(i * 2, true);
      return out;
    }
    case "I8": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getInt8(i);
      return out;
    }
    default: {
      // U8, BOOL
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getUint8(i);
      return out;
    }
  }
}

/**
 * Parses safetensors bytes. `source` names the file in error messages.
 *
 * @example
 * ```ts
 * const { tensors, metadata } = parseSafetensors(await Deno.readFile("model.safetensors"));
 * ```
 */
export function parseSafetensors(bytes: Uint8Array, source = "safetensors"): SafetensorsFile {
  if (bytes.byteLength < 8) {
    throw new Error(`${source}: ${bytes.byteLength} bytes is too short for a safetensors file`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n > bytes.byteLength - 8) {
    throw new Error(
      `${source}: header length ${n} exceeds the file size ${bytes.byteLength}; not a safetensors file?`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw new Error(`${source}: header is not valid JSON (${(e as Error).message}); not a safetensors file?`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(
      `${source}: header is ${
        parsed === null ? "null" : Array.isArray(parsed) ? "an array" : typeof parsed
      }; ` +
        `expected a JSON object of tensors ({"name": {"dtype", "shape", "data_offsets"}}); not a safetensors file?`,
    );
  }
  const header = parsed as Record<string, unknown>;
  const base = 8 + n;
  const dataLen = bytes.byteLength - base;
  const tensors = new Map<string, RawTensor>();
  let metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (entry === null || entry === undefined) continue;
      const bad = typeof entry !== "object" || Array.isArray(entry)
        ? JSON.stringify(entry)
        : Object.entries(entry).find(([, v]) => typeof v !== "string")?.[0];
      if (bad !== undefined) {
        throw new Error(
          `${source}: __metadata__ ${
            typeof entry === "object" && !Array.isArray(entry) ? `key "${bad}" is not a string` : `is ${bad}`
          }; expected an object of string values`,
        );
      }
      metadata = { ...entry as Record<string, string> };
      continue;
    }
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      throw new Error(
        `${source}: tensor "${name}" is ${
          JSON.stringify(entry)
        }; expected {"dtype", "shape", "data_offsets"}`,
      );
    }
    const e = entry as { dtype?: string; shape?: unknown; data_offsets?: unknown };
    const size = typeof e.dtype === "string" && Object.hasOwn(DTYPE_BYTES, e.dtype)
      ? DTYPE_BYTES[e.dtype]
      : undefined;
    if (size === undefined) {
      throw new Error(
        `${source}: tensor "${name}" has dtype ${JSON.stringify(e.dtype)}; expected one of ${
          Object.keys(DTYPE_BYTES).join(", ")
        }`,
      );
    }
    if (!Array.isArray(e.shape) || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) {
      throw new Error(`${source}: tensor "${name}" lacks a shape or data_offsets [begin, end]`);
    }
    if (!e.shape.every(isCount)) {
      throw new Error(
        `${source}: tensor "${name}" has shape ${JSON.stringify(e.shape)}; expected non-negative integers`,
      );
    }
    const shape = e.shape as number[];
    const [begin, end] = e.data_offsets;
    if (!isCount(begin) || !isCount(end) || end < begin) {
      throw new Error(
        `${source}: tensor "${name}" has data_offsets ${JSON.stringify(e.data_offsets)}; ` +
          `expected two non-negative integers [begin, end] with begin <= end`,
      );
    }
    const count = shape.reduce((a, b) => a * b, 1);
    if (!(end <= dataLen && end - begin === count * size)) {
      throw new Error(
        `${source}: tensor "${name}" data_offsets [${begin}, ${end}] do not fit shape [${shape}] of ${e.dtype} ` +
          `in ${dataLen} data bytes (file truncated?)`,
      );
    }
    spans.push({ name, begin, end });
    const data = decode(name, e.dtype!, bytes.subarray(base + begin, base + end), count, source);
    tensors.set(name, { dtype: e.dtype!, shape: [...shape], data });
  }
  spans.sort((p, q) => p.begin - q.begin || p.end - q.end);
  for (let i = 1; i < spans.length; i++) {
    const [p, q] = [spans[i - 1], spans[i]];
    if (q.begin < p.end) {
      throw new Error(
        `${source}: tensors "${p.name}" [${p.begin}, ${p.end}] and "${q.name}" [${q.begin}, ${q.end}] ` +
          `overlap; expected each tensor's bytes to be its own`,
      );
    }
  }
  return { tensors, metadata };
}

/**
 * Reads a safetensors file from disk.
 *
 * @example
 * ```ts
 * const { tensors } = await readSafetensors("data/weights/resnet18.safetensors");
 * ```
 */
export async function readSafetensors(path: string | URL): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`readSafetensors: cannot read "${String(path)}" (${(e as Error).message})`);
  }
  return parseSafetensors(bytes, String(path));
}

/** A tensor to write: values and shape; floats are written as F32, `Int32Array` as I32. */
export interface TensorToWrite {
  shape: number[];
  data: Float32Array | Int32Array;
}

/**
 * Serialises tensors (sorted by name, as the reference implementation does) and string metadata.
 *
 * @example
 * ```ts
 * const bytes = serializeSafetensors(new Map([["w", { shape: [2], data: new Float32Array([1, 2]) }]]));
 * ```
 */
export function serializeSafetensors(
  tensors: Map<string, TensorToWrite>,
  metadata: Record<string, string> = {},
): Uint8Array<ArrayBuffer> {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new Error(
        `serializeSafetensors: tensor "${name}" has ${t.data.length} values but shape [${t.shape}]`,
      );
    }
    const dtype = t.data instanceof Int32Array ? "I32" : "F32";
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + count * 4] };
    offset += count * 4;
  }
  // The header is padded with spaces (as the spec allows) so the data starts 8-byte aligned: counted in
  // UTF-8 bytes, the unit of the length field, not in UTF-16 code units (non-ASCII metadata differ).
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(json.length + ((8 - ((8 + json.length) % 8)) % 8)).fill(0x20);
  headerBytes.set(json);
  const out = new Uint8Array(8 + headerBytes.byteLength + offset);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(headerBytes.byteLength), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.byteLength;
  for (const name of names) {
    const t = tensors.get(name)!;
    if (t.data instanceof Int32Array) {
      for (let i = 0; i < t.data.length; i++) dv.setInt32(pos + i * 4, t.data[i], true);
    } else for (let i = 0; i < t.data.length; i++) dv.setFloat32(pos + i * 4, t.data[i], true);
    pos += t.data.length * 4;
  }
  return out;
}

/**
 * Writes tensors to a safetensors file atomically (temp file, then rename).
 *
 * @example
 * ```ts
 * await writeSafetensors("out.safetensors", tensors, { config: JSON.stringify(cfg) });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, TensorToWrite>,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
