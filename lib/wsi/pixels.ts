/**
 * Pixel conversions for OpenSlide output: premultiplied ARGB to RGB or RGBA.
 *
 * @module
 */

/** An 8-bit interleaved image (`channels` values per pixel, row-major). */
export interface RasterImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** Values per pixel: 1 (grey/mask), 3 (RGB) or 4 (RGBA). */
  channels: 1 | 3 | 4;
  /** `width * height * channels` bytes. */
  data: Uint8Array;
}

/** An RGB colour, each component 0..255. */
export type Rgb = readonly [number, number, number];

/**
 * Parses an OpenSlide colour such as `"FFFFFF"` or `"#f0e0d0"`; returns `undefined` when malformed.
 *
 * @example
 * ```ts
 * parseHexColor("F0E0D0"); // [240, 224, 208]
 * ```
 */
export function parseHexColor(s: string | undefined): Rgb | undefined {
  if (!s) return undefined;
  const m = /^#?([0-9a-fA-F]{6})$/.exec(s.trim());
  if (!m) return undefined;
  const v = parseInt(m[1], 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Converts OpenSlide's premultiplied ARGB words (native byte order) to RGB, compositing any
 * transparency (padding outside the slide, missing tiles) onto `background`: never black.
 *
 * @example
 * ```ts
 * const rgb = argbToRgb(new Uint32Array([0x00000000, 0xffff0000]), [255, 255, 255]);
 * // rgb = [255,255,255, 255,0,0]
 * ```
 */
export function argbToRgb(argb: Uint32Array, background: Rgb = [255, 255, 255]): Uint8Array {
  const n = argb.length;
  const out = new Uint8Array(n * 3);
  const [br, bg, bb] = background;
  const bytes = new Uint8Array(argb.buffer, argb.byteOffset, n * 4);
  const [iB, iG, iR, iA] = LITTLE_ENDIAN ? [0, 1, 2, 3] : [3, 2, 1, 0];
  for (let p = 0, q = 0, o = 0; p < n; p++, q += 4, o += 3) {
    const a = bytes[q + iA];
    if (a === 255) {
      out[o] = bytes[q + iR];
      out[o + 1] = bytes[q + iG];
      out[o + 2] = bytes[q + iB];
    } else if (a === 0) {
      out[o] = br;
      out[o + 1] = bg;
      out[o + 2] = bb;
    } else {
      // premultiplied "over": c + bg * (1 - a) equals un-premultiply then alpha-blend.
      const t = (255 - a) / 255;
      out[o] = Math.min(255, Math.round(bytes[q + iR] + br * t));
      out[o + 1] = Math.min(255, Math.round(bytes[q + iG] + bg * t));
      out[o + 2] = Math.min(255, Math.round(bytes[q + iB] + bb * t));
    }
  }
  return out;
}

/**
 * Converts OpenSlide's premultiplied ARGB words to straight (un-premultiplied) RGBA.
 *
 * @example
 * ```ts
 * const rgba = argbToRgba(new Uint32Array([0x80400000])); // [127, 0, 0, 128]
 * ```
 */
export function argbToRgba(argb: Uint32Array): Uint8Array {
  const n = argb.length;
  const out = new Uint8Array(n * 4);
  const bytes = new Uint8Array(argb.buffer, argb.byteOffset, n * 4);
  const [iB, iG, iR, iA] = LITTLE_ENDIAN ? [0, 1, 2, 3] : [3, 2, 1, 0];
  for (let q = 0; q < n * 4; q += 4) {
    const a = bytes[q + iA];
    out[q + 3] = a;
    if (a === 255) {
      out[q] = bytes[q + iR];
      out[q + 1] = bytes[q + iG];
      out[q + 2] = bytes[q + iB];
    } else if (a > 0) {
      out[q] = Math.min(255, Math.round((bytes[q + iR] * 255) / a));
      out[q + 1] = Math.min(255, Math.round((bytes[q + iG] * 255) / a));
      out[q + 2] = Math.min(255, Math.round((bytes[q + iB] * 255) / a));
    }
  }
  return out;
}
