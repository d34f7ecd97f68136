/**
 * Synthetic whole-slide images of any size, written as a pyramidal tiled TIFF that OpenSlide reads
 * (`generic-tiff`). Identical tiles are stored once and shared through the tile offset table, so a
 * 100k x 100k slide takes a few MB and a few seconds: small levels are drawn exactly, large levels tile by
 * tile (solid tiles shared, boundary tiles drawn in 4 x 4 pixel blocks). For benchmarks, tests and
 * notebooks without real slides.
 *
 * @module
 */
import { deflateSync } from "node:zlib";
import { writeFileAtomic } from "../util/mod.ts";
import type { Rgb } from "./pixels.ts";

/** A drawn region in level-0 pixels: tissue of `color`, or a hole (background) when `hole`. */
export interface SyntheticShape {
  kind: "ellipse" | "rect";
  /** Centre x. */
  cx: number;
  /** Centre y. */
  cy: number;
  /** Half width. */
  rx: number;
  /** Half height. */
  ry: number;
  /** Carve background instead of drawing tissue. */
  hole?: boolean;
  /** Tissue colour (default H&E-like pink). */
  color?: Rgb;
}

/** Options of {@link writeSyntheticSlide}. */
export interface SyntheticSlideOptions {
  /** Level-0 width. */
  width: number;
  /** Level-0 height. */
  height: number;
  /** Shapes drawn in order (later ones win); default {@link defaultSyntheticShapes}. */
  shapes?: readonly SyntheticShape[];
  /** Tile side (default 256). */
  tileSize?: number;
  /** Microns per pixel at level 0, stored as the TIFF resolution in centimetres (default 0.25). */
  mpp?: number;
  /** Levels with at most this many pixels are drawn pixel-exactly (default 16M). */
  exactPixels?: number;
  /** Background colour (default near-white). */
  background?: Rgb;
}

/** What {@link writeSyntheticSlide} wrote. */
export interface SyntheticSlideInfo {
  path: string;
  /** `[width, height]` per level. */
  levels: [number, number][];
  /** File size in bytes. */
  bytes: number;
  /** Distinct tiles stored. */
  uniqueTiles: number;
  /** Tiles referenced by all levels. */
  totalTiles: number;
}

/**
 * A few tissue blobs with holes, scaled to the slide (the same for a given size).
 *
 * @example
 * ```ts
 * const shapes = defaultSyntheticShapes(100_000, 100_000);
 * ```
 */
export function defaultSyntheticShapes(width: number, height: number): SyntheticShape[] {
  const s = (fx: number, fy: number, frx: number, fry: number, extra: Partial<SyntheticShape> = {}) => ({
    kind: "ellipse" as const,
    cx: fx * width,
    cy: fy * height,
    rx: frx * width,
    ry: fry * height,
    ...extra,
  });
  return [
    s(0.3, 0.35, 0.18, 0.22, { color: [205, 125, 175] }),
    s(0.3, 0.35, 0.05, 0.06, { hole: true }),
    s(0.7, 0.6, 0.15, 0.25, { color: [170, 100, 185] }),
    { kind: "rect", cx: 0.7 * width, cy: 0.6 * height, rx: 0.03 * width, ry: 0.08 * height, hole: true },
    s(0.25, 0.8, 0.08, 0.06, { color: [190, 110, 170] }),
  ];
}

/**
 * The colour at a level-0 point: the last shape containing it decides (tissue colour, or `undefined` for
 * background/hole).
 *
 * @example
 * ```ts
 * syntheticColorAt(shapes, 30_000, 35_000); // [205, 125, 175] or undefined
 * ```
 */
export function syntheticColorAt(shapes: readonly SyntheticShape[], x: number, y: number): Rgb | undefined {
  let c: Rgb | undefined;
  for (const s of shapes) {
    const dx = (x - s.cx) / s.rx, dy = (y - s.cy) / s.ry;
    const inside = s.kind === "ellipse" ? dx * dx + dy * dy <= 1 : Math.abs(dx) <= 1 && Math.abs(dy) <= 1;
    if (inside) c = s.hole ? undefined : (s.color ?? DEFAULT_TISSUE);
  }
  return c;
}

const DEFAULT_TISSUE: Rgb = [200, 120, 170];

function texture(color: Rgb, px: number, py: number): [number, number, number] {
  // deterministic "nuclei" speckle, periodic (16 px noise, 32 px stripes) so mixed tiles still compress
  const h = ((Math.imul((px & 15) * 73856093 ^ (py & 15) * 19349663, 0x9e3779b1) >>> 24) & 31) - 16;
  const dark = ((px >> 3) + (py >> 3)) % 4 === 0 ? -40 : 0;
  const f = (v: number) => Math.max(0, Math.min(255, v + h + dark));
  return [f(color[0]), f(color[1]), f(color[2])];
}

function hashBytes(b: Uint8Array): string {
  let h1 = 0x811c9dc5, h2 = 0x12345678;
  for (let i = 0; i < b.length; i++) {
    h1 = Math.imul(h1 ^ b[i], 16777619);
    h2 = Math.imul(h2 + b[i], 0x5bd1e995) ^ (h2 >>> 15);
  }
  return `${b.length}:${(h1 >>> 0).toString(16)}:${(h2 >>> 0).toString(16)}`;
}

/**
 * Writes a synthetic pyramidal tiled TIFF (deflate tiles, RGB, levels halving down to one tile).
 *
 * @example
 * ```ts
 * const info = await writeSyntheticSlide("data/synthetic_100k.tif", { width: 100_000, height: 100_000 });
 * console.log(info.levels.length, info.bytes);
 * ```
 */
export async function writeSyntheticSlide(
  path: string,
  opts: SyntheticSlideOptions,
): Promise<SyntheticSlideInfo> {
  const { width: W, height: H } = opts;
  const T = opts.tileSize ?? 256;
  if (!(Number.isInteger(W) && Number.isInteger(H) && W > 0 && H > 0 && W < 2 ** 31 && H < 2 ** 31)) {
    throw new Error(`writeSyntheticSlide(): width/height must be positive integers, got ${W}x${H}`);
  }
  if (!(Number.isInteger(T) && T >= 16 && T % 16 === 0)) {
    throw new Error(`writeSyntheticSlide(): tileSize must be a multiple of 16, got ${T}`);
  }
  const shapes = opts.shapes ?? defaultSyntheticShapes(W, H);
  const bg = opts.background ?? [244, 242, 240];
  const exact = opts.exactPixels ?? 16_000_000;
  const blobs: Uint8Array[] = [];
  const blobIndex = new Map<string, number>();
  const store = (raw: Uint8Array): number => {
    const key = hashBytes(raw);
    let id = blobIndex.get(key);
    if (id === undefined) {
      id = blobs.length;
      blobs.push(new Uint8Array(deflateSync(raw)));
      blobIndex.set(key, id);
    }
    return id;
  };
  const levels: [number, number][] = [];
  for (let l = 0;; l++) {
    const lw = Math.ceil(W / 2 ** l), lh = Math.ceil(H / 2 ** l);
    levels.push([lw, lh]);
    if (lw <= T && lh <= T) break;
  }
  // per level: tile -> blob id
  const tileBlobs: Int32Array[] = [];
  const solidRaw = new Map<Rgb | undefined, Uint8Array>(); // keyed by the shapes' colour objects
  const solidId = new Map<Rgb | undefined, number>();
  const rawOf = (c: Rgb | undefined): Uint8Array => {
    let raw = solidRaw.get(c);
    if (!raw) {
      raw = new Uint8Array(T * T * 3);
      for (let y = 0; y < T; y++) {
        for (let x = 0; x < T; x++) raw.set(c ? texture(c, x, y) : bg, (y * T + x) * 3);
      }
      solidRaw.set(c, raw);
    }
    return raw;
  };
  const B = 4; // mixed tiles are drawn in B x B pixel blocks
  levels.forEach(([lw, lh], l) => {
    const ds = 2 ** l, tx = Math.ceil(lw / T), ty = Math.ceil(lh / T);
    const ids = new Int32Array(tx * ty);
    const raw = new Uint8Array(T * T * 3);
    for (let j = 0; j < ty; j++) {
      for (let i = 0; i < tx; i++) {
        if (lw * lh <= exact) {
          for (let y = 0; y < T; y++) {
            for (let x = 0; x < T; x++) {
              const px = i * T + x, py = j * T + y;
              const c = px < lw && py < lh
                ? syntheticColorAt(shapes, (px + 0.5) * ds, (py + 0.5) * ds)
                : undefined;
              raw.set(c ? texture(c, px, py) : bg, (y * T + x) * 3);
            }
          }
          ids[j * tx + i] = store(raw);
        } else {
          // a 5x5 sample grid: tiles wholly inside or outside the shapes are shared solid tiles
          let hits = 0;
          let c: Rgb | undefined;
          for (let v = 0; v < 5; v++) {
            for (let u = 0; u < 5; u++) {
              const cc = syntheticColorAt(shapes, (i + (u + 0.5) / 5) * T * ds, (j + (v + 0.5) / 5) * T * ds);
              if (cc) {
                hits++;
                c ??= cc;
              }
            }
          }
          if (hits === 0 || hits === 25) {
            let id = solidId.get(c);
            if (id === undefined) solidId.set(c, id = store(rawOf(c)));
            ids[j * tx + i] = id;
          } else {
            // boundary tile: each B x B block takes the colour of the shapes at its centre
            for (let by = 0; by < T; by += B) {
              for (let bx = 0; bx < T; bx += B) {
                const px = i * T + bx, py = j * T + by;
                const cc = px < lw && py < lh
                  ? syntheticColorAt(shapes, (px + B / 2) * ds, (py + B / 2) * ds)
                  : undefined;
                const src = rawOf(cc);
                for (let y = by; y < by + B; y++) {
                  raw.set(src.subarray((y * T + bx) * 3, (y * T + bx + B) * 3), (y * T + bx) * 3);
                }
              }
            }
            ids[j * tx + i] = store(raw);
          }
        }
      }
    }
    tileBlobs.push(ids);
  });

  // layout: header | blobs | per level: IFD + arrays
  const blobOffsets: number[] = [];
  let off = 8;
  for (const b of blobs) {
    blobOffsets.push(off);
    off += b.length + (b.length & 1);
  }
  const parts: Uint8Array[] = [];
  const header = new Uint8Array(8);
  const hv = new DataView(header.buffer);
  header.set([0x49, 0x49, 42, 0]);
  parts.push(header);
  for (const b of blobs) {
    parts.push(b);
    if (b.length & 1) parts.push(new Uint8Array(1));
  }
  const res = 1e4 / (opts.mpp ?? 0.25); // pixels per cm
  let firstIfd = 0;
  const ifdParts: { buf: Uint8Array; at: number }[] = [];
  levels.forEach(([lw, lh], l) => {
    const ids = tileBlobs[l], n = ids.length;
    const entries = 16;
    const ifdSize = 2 + entries * 12 + 4;
    const ifdAt = off;
    const extraAt = ifdAt + ifdSize;
    // extra: bps (6 bytes, pad to 8) | xres (8) | yres (8) | offsets (4n) | counts (4n)
    const bpsAt = extraAt,
      xresAt = extraAt + 8,
      yresAt = extraAt + 16,
      offsAt = extraAt + 24,
      cntAt = offsAt + 4 * n;
    const total = ifdSize + 24 + 8 * n;
    const buf = new Uint8Array(total);
    const dv = new DataView(buf.buffer);
    dv.setUint16(0, entries, true);
    let e = 2;
    const put = (tag: number, type: number, count: number, value: number) => {
      dv.setUint16(e, tag, true);
      dv.setUint16(e + 2, type, true);
      dv.setUint32(e + 4, count, true);
      if (type === 3 && count === 1) dv.setUint16(e + 8, value, true);
      else dv.setUint32(e + 8, value, true);
      e += 12;
    };
    const SHORT = 3, LONG = 4, RATIONAL = 5;
    put(254, LONG, 1, l === 0 ? 0 : 1);
    put(256, LONG, 1, lw);
    put(257, LONG, 1, lh);
    put(258, SHORT, 3, bpsAt);
    put(259, SHORT, 1, 8); // Adobe deflate
    put(262, SHORT, 1, 2); // RGB
    put(277, SHORT, 1, 3);
    put(282, RATIONAL, 1, xresAt);
    put(283, RATIONAL, 1, yresAt);
    put(284, SHORT, 1, 1);
    put(296, SHORT, 1, 3); // centimetre
    put(322, LONG, 1, T);
    put(323, LONG, 1, T);
    put(324, LONG, n, n === 1 ? blobOffsets[ids[0]] : offsAt);
    put(325, LONG, n, n === 1 ? blobs[ids[0]].length : cntAt);
    put(339, SHORT, 1, 1); // SampleFormat uint
    dv.setUint32(e, 0, true); // next IFD, patched below
    const base = ifdSize;
    for (let k = 0; k < 3; k++) dv.setUint16(base + 2 * k, 8, true);
    const resNum = Math.round((res / 2 ** l) * 1000);
    dv.setUint32(base + 8, resNum, true);
    dv.setUint32(base + 12, 1000, true);
    dv.setUint32(base + 16, resNum, true);
    dv.setUint32(base + 20, 1000, true);
    for (let k = 0; k < n; k++) {
      dv.setUint32(base + 24 + 4 * k, blobOffsets[ids[k]], true);
      dv.setUint32(base + 24 + 4 * n + 4 * k, blobs[ids[k]].length, true);
    }
    if (l === 0) firstIfd = ifdAt;
    ifdParts.push({ buf, at: ifdAt });
    off += total + (total & 1);
  });
  if (off >= 2 ** 32) throw new Error(`writeSyntheticSlide(): ${off} bytes exceed classic TIFF's 4 GiB`);
  hv.setUint32(4, firstIfd, true);
  ifdParts.forEach((p, i) => {
    const dv = new DataView(p.buf.buffer);
    const nextAt = 2 + 16 * 12;
    dv.setUint32(nextAt, i + 1 < ifdParts.length ? ifdParts[i + 1].at : 0, true);
    parts.push(p.buf);
    if (p.buf.length & 1) parts.push(new Uint8Array(1));
  });
  const file = new Uint8Array(off);
  let o = 0;
  for (const p of parts) {
    file.set(p, o);
    o += p.length;
  }
  await writeFileAtomic(path, file);
  return {
    path,
    levels,
    bytes: off,
    uniqueTiles: blobs.length,
    totalTiles: tileBlobs.reduce((a, t) => a + t.length, 0),
  };
}
