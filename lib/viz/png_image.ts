/**
 * A PNG image that renders inline in Jupyter, and the conversion of model inputs (tensors or arrays,
 * float or byte, normalized or not) to RGB bytes.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { Buffer } from "node:buffer";
import sharp from "./_sharp.ts";
import type { MimeBundle } from "../util/mod.ts";
import { JUPYTER_DISPLAY } from "./figure.ts";

/**
 * PNG bytes with their size; shows inline in Jupyter (`image/png`), and `show()` writes it to a file
 * outside Jupyter.
 *
 * @example
 * ```ts
 * const img = await PngImage.fromRgb(new Uint8Array(4 * 4 * 3), 4, 4);
 * img; // renders in Jupyter
 * ```
 */
export class PngImage {
  constructor(
    /** The encoded PNG. */
    readonly png: Uint8Array,
    readonly width: number,
    readonly height: number,
  ) {}

  /** Encodes raw RGB (or RGBA with `channels: 4`) bytes, row-major. */
  static async fromRgb(
    rgb: Uint8Array,
    width: number,
    height: number,
    channels: 3 | 4 = 3,
  ): Promise<PngImage> {
    if (rgb.length !== width * height * channels) {
      throw new RangeError(
        `PngImage.fromRgb: ${rgb.length} bytes for ${width}x${height}x${channels}; expected ${
          width * height * channels
        }`,
      );
    }
    const png = await sharp(rgb, { raw: { width, height, channels } }).png().toBuffer();
    return new PngImage(new Uint8Array(png), width, height);
  }

  /** Wraps existing PNG bytes (reads the size from the header). */
  static async fromPng(png: Uint8Array): Promise<PngImage> {
    const meta = await sharp(png).metadata();
    if (meta.format !== "png" || !meta.width || !meta.height) {
      throw new TypeError(`PngImage.fromPng: the bytes are ${meta.format ?? "unknown"}; expected a PNG`);
    }
    return new PngImage(png, meta.width, meta.height);
  }

  /** Decodes to raw RGB bytes (alpha dropped). */
  async toRgb(): Promise<Uint8Array> {
    const { data } = await sharp(this.png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    return new Uint8Array(data);
  }

  /** Base64 of the PNG. */
  toBase64(): string {
    return Buffer.from(this.png).toString("base64");
  }

  /** Jupyter MIME bundle. */
  [JUPYTER_DISPLAY](): MimeBundle {
    return { "image/png": this.toBase64(), "text/plain": `PngImage(${this.width}x${this.height})` };
  }
}

/** Raw pixels, row-major HWC. */
export interface RawImage {
  data: ArrayLike<number>;
  height: number;
  width: number;
  /** 1 (grey), 3 (RGB) or 4 (RGBA, alpha dropped). Default 3. */
  channels?: number;
}

/** An image as the library passes it around: an `[H, W, C]` tensor or raw pixels. */
export type ImageInput = tf.Tensor3D | RawImage;

/** How to turn pixel values into bytes. */
export interface PixelOptions {
  /**
   * Undo a normalization `x = (pixel − mean) / std` (per channel, pixel in [0, 1]) before display,
   * e.g. ImageNet `{mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}`.
   */
  normalization?: { mean: number[]; std: number[] };
  /**
   * Value range of the input: `"unit"` = [0, 1] floats, `"byte"` = [0, 255], `"auto"` (default):
   * bytes for a Uint8Array, otherwise [0, 1] (values are clamped).
   */
  range?: "unit" | "byte" | "auto";
}

/** RGB bytes of an image. */
export interface Rgb {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/**
 * Converts an image tensor or raw pixels to RGB bytes (grey replicated, alpha dropped).
 *
 * @example
 * ```ts
 * const { rgb, width, height } = await toRgb(x.squeeze([0]) as tf.Tensor3D);
 * ```
 */
export async function toRgb(image: ImageInput, options: PixelOptions = {}): Promise<Rgb> {
  let data: ArrayLike<number>, height: number, width: number, channels: number;
  if (image instanceof tf.Tensor) {
    if (image.rank !== 3) {
      throw new RangeError(`toRgb: tensor has shape [${image.shape}]; expected [height, width, channels]`);
    }
    [height, width, channels] = image.shape;
    data = await image.data();
  } else {
    if (!image || typeof image !== "object" || !image.data) {
      throw new TypeError(
        `toRgb: image is ${String(image)}; expected a Tensor3D or {data, height, width, channels}`,
      );
    }
    ({ data, height, width } = image);
    channels = image.channels ?? 3;
  }
  if (![1, 3, 4].includes(channels)) throw new RangeError(`toRgb: ${channels} channels; expected 1, 3 or 4`);
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) {
    throw new RangeError(`toRgb: size ${width}x${height}; expected positive integers`);
  }
  if (data.length !== height * width * channels) {
    throw new RangeError(
      `toRgb: ${data.length} values for ${height}x${width}x${channels}; expected ${
        height * width * channels
      }`,
    );
  }
  const range = options.range ?? "auto";
  const bytes = range === "byte" || (range === "auto" && data instanceof Uint8Array);
  const norm = options.normalization;
  const rgb = new Uint8Array(height * width * 3);
  for (let p = 0; p < height * width; p++) {
    for (let c = 0; c < 3; c++) {
      const src = channels === 1 ? 0 : c;
      let v = data[p * channels + src];
      if (norm) v = v * (norm.std[src] ?? norm.std[0]) + (norm.mean[src] ?? norm.mean[0]);
      const b = bytes && !norm ? v : v * 255;
      rgb[p * 3 + c] = Math.max(0, Math.min(255, Math.round(b)));
    }
  }
  return { rgb, width, height };
}
