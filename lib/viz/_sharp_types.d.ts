// The subset of sharp's API used by lib/viz, typed without sharp's own index.d.ts: that file pulls
// @types/node from npm, whose newer node:assert typings break unrelated modules type-checked in the
// same program (tests/_assert.ts).

export interface RawOptions {
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
}

export interface CreateOptions extends RawOptions {
  background: string;
}

export interface OverlayOptions {
  input: Uint8Array;
  left: number;
  top: number;
}

export interface OutputInfo {
  width: number;
  height: number;
  channels: number;
  size: number;
}

export interface Metadata {
  format?: string;
  width?: number;
  height?: number;
  channels?: number;
}

export interface Sharp {
  resize(width: number, height: number, options?: { kernel?: string; fit?: string }): Sharp;
  composite(images: OverlayOptions[]): Sharp;
  removeAlpha(): Sharp;
  raw(): Sharp;
  png(): Sharp;
  metadata(): Promise<Metadata>;
  toBuffer(): Promise<Uint8Array>;
  toBuffer(options: { resolveWithObject: true }): Promise<{ data: Uint8Array; info: OutputInfo }>;
}

declare function sharp(input?: Uint8Array | { create: CreateOptions }, options?: { raw?: RawOptions }): Sharp;
export default sharp;
