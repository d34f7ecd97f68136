// The subset of sharp's API used by lib/wsi and its tests, typed without sharp's own index.d.ts: that file
// pulls @types/node from npm, whose newer node:assert typings break unrelated modules type-checked in the
// same program (tests/_assert.ts). Same approach as lib/viz/_sharp_types.d.ts.

export interface RawOptions {
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
}

export interface TiffOptions {
  tile?: boolean;
  pyramid?: boolean;
  tileWidth?: number;
  tileHeight?: number;
  compression?: "none" | "jpeg" | "deflate" | "lzw" | "webp" | "zstd";
  quality?: number;
  xres?: number;
  yres?: number;
  resolutionUnit?: "inch" | "cm";
}

export interface OutputInfo {
  width: number;
  height: number;
  channels: number;
  size: number;
}

export interface Sharp {
  png(options?: { compressionLevel?: number }): Sharp;
  tiff(options?: TiffOptions): Sharp;
  raw(): Sharp;
  toFile(path: string): Promise<OutputInfo>;
  toBuffer(): Promise<Uint8Array>;
  toBuffer(options: { resolveWithObject: true }): Promise<{ data: Uint8Array; info: OutputInfo }>;
}

declare function sharp(
  input?: Uint8Array | string,
  options?: { raw?: RawOptions; limitInputPixels?: number | false },
): Sharp;
export default sharp;
