/**
 * sharp (npm, libvips) with a local type declaration, see `_sharp_types.d.ts` (internal).
 *
 * @module
 */
// @ts-types="./_sharp_types.d.ts"
import sharp from "sharp";

export default sharp;
export type { TiffOptions } from "./_sharp_types.d.ts";
