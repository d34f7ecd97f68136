/**
 * ASAP XML annotations (CAMELYON16/17): polygons in level-0 pixels, grouped into tumour and exclusion
 * regions; point/patch queries and a mask rasteriser.
 *
 * @module
 */
import { XMLParser } from "fast-xml-parser";

/** One annotated polygon (level-0 pixel coordinates). */
export interface AnnotationPolygon {
  /** The annotation's `Name`. */
  name: string;
  /** Its `PartOfGroup`. */
  group: string;
  /** ASAP type (`Polygon`, `Spline`, `Rectangle`, ...). */
  type: string;
  /** Vertices, `[x0, y0, x1, y1, ...]`, in `Order`. */
  points: Float64Array;
  /** Bounding box `[minX, minY, maxX, maxY]`. */
  bbox: readonly [number, number, number, number];
}

/** A slide's annotations split by role. */
export interface SlideAnnotations {
  /** Tumour regions (union). */
  tumour: AnnotationPolygon[];
  /** Exclusion regions (normal tissue inside tumour), subtracted from the tumour. */
  exclusion: AnnotationPolygon[];
  /** Annotations of any other group (kept, not used for labels). */
  other: AnnotationPolygon[];
}

/** Which ASAP groups mean what. */
export interface AnnotationGroups {
  /** Default: CAMELYON16's `Tumor`, `_0`, `_1` and CAMELYON17's `metastases`. */
  tumour?: readonly string[];
  /** Default: CAMELYON16's `_2` and `Exclusion`. */
  exclusion?: readonly string[];
}

/** Default tumour groups (compared case-insensitively). */
export const TUMOUR_GROUPS: readonly string[] = ["tumor", "tumour", "_0", "_1", "metastases", "metastasis"];
/** Default exclusion groups (compared case-insensitively). */
export const EXCLUSION_GROUPS: readonly string[] = ["_2", "exclusion"];

function num(v: unknown, what: string): number {
  const s = String(v ?? "").trim().replace(",", ".");
  const x = Number(s);
  if (s === "" || !Number.isFinite(x)) {
    throw new Error(`${what}: expected a number, got ${JSON.stringify(v)}`);
  }
  return x;
}

/**
 * Parses ASAP XML (`<ASAP_Annotations><Annotations><Annotation PartOfGroup=...><Coordinates>
 * <Coordinate Order X Y/>...`) into level-0 polygons.
 *
 * @example
 * ```ts
 * const ann = parseAsapXml(await Deno.readTextFile("tumor_001.xml"));
 * console.log(ann.tumour.length, ann.exclusion.length);
 * ```
 */
export function parseAsapXml(
  xml: string,
  groups: AnnotationGroups = {},
  source = "annotation XML",
): SlideAnnotations {
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "",
    isArray: (name) => name === "Annotation" || name === "Coordinate",
  });
  let doc;
  try {
    doc = parser.parse(xml, true);
  } catch (e) {
    throw new Error(`parseAsapXml(${source}): not well-formed XML: ${(e as Error).message}`);
  }
  const root = doc?.ASAP_Annotations;
  if (!root) throw new Error(`parseAsapXml(${source}): expected an <ASAP_Annotations> root element`);
  const tumourSet = new Set((groups.tumour ?? TUMOUR_GROUPS).map((g) => g.toLowerCase()));
  const exclSet = new Set((groups.exclusion ?? EXCLUSION_GROUPS).map((g) => g.toLowerCase()));
  const out: SlideAnnotations = { tumour: [], exclusion: [], other: [] };
  const list: Record<string, unknown>[] = root.Annotations?.Annotation ?? [];
  list.forEach((a, ai) => {
    const name = String(a.Name ?? `Annotation ${ai}`);
    const what = `parseAsapXml(${source}) annotation "${name}"`;
    const coords = ((a.Coordinates as Record<string, unknown> | undefined)?.Coordinate ?? []) as Record<
      string,
      unknown
    >[];
    const pts = coords.map((c, i) => ({
      order: c.Order === undefined ? i : num(c.Order, `${what} Order`),
      x: num(c.X, `${what} X`),
      y: num(c.Y, `${what} Y`),
    })).sort((p, q) => p.order - q.order);
    if (pts.length < 3) return; // dots and lines enclose no area
    const points = new Float64Array(pts.length * 2);
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    pts.forEach((p, i) => {
      points[2 * i] = p.x;
      points[2 * i + 1] = p.y;
      x0 = Math.min(x0, p.x);
      y0 = Math.min(y0, p.y);
      x1 = Math.max(x1, p.x);
      y1 = Math.max(y1, p.y);
    });
    const group = String(a.PartOfGroup ?? "None");
    const poly: AnnotationPolygon = {
      name,
      group,
      type: String(a.Type ?? "Polygon"),
      points,
      bbox: [x0, y0, x1, y1],
    };
    const g = group.toLowerCase();
    if (exclSet.has(g)) out.exclusion.push(poly);
    else if (tumourSet.has(g)) out.tumour.push(poly);
    else out.other.push(poly);
  });
  return out;
}

/**
 * Reads and parses an ASAP XML file.
 *
 * @example
 * ```ts
 * const ann = await readAsapXml("annotations/tumor_001.xml");
 * ```
 */
export async function readAsapXml(path: string, groups: AnnotationGroups = {}): Promise<SlideAnnotations> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`readAsapXml(): cannot read "${path}": ${(e as Error).message}`);
  }
  return parseAsapXml(text, groups, path);
}

/**
 * Even-odd point-in-polygon test.
 *
 * @example
 * ```ts
 * pointInPolygon(poly, 120.5, 300);
 * ```
 */
export function pointInPolygon(poly: AnnotationPolygon, x: number, y: number): boolean {
  const [bx0, by0, bx1, by1] = poly.bbox;
  if (x < bx0 || x > bx1 || y < by0 || y > by1) return false;
  const p = poly.points, n = p.length / 2;
  let inside = false;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    const xi = p[2 * i], yi = p[2 * i + 1], xj = p[2 * j], yj = p[2 * j + 1];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/**
 * Whether a level-0 point is tumour: inside some tumour polygon and inside no exclusion polygon.
 *
 * @example
 * ```ts
 * isTumour(ann, 51234, 80211);
 * ```
 */
export function isTumour(ann: SlideAnnotations, x: number, y: number): boolean {
  if (!ann.tumour.some((p) => pointInPolygon(p, x, y))) return false;
  return !ann.exclusion.some((p) => pointInPolygon(p, x, y));
}

function overlaps(poly: AnnotationPolygon, x0: number, y0: number, x1: number, y1: number): boolean {
  const [a, b, c, d] = poly.bbox;
  return a <= x1 && c >= x0 && b <= y1 && d >= y0;
}

/**
 * Fraction of a level-0 rectangle that is tumour, estimated on a `samples x samples` grid of points
 * (pixel centres of a regular subdivision).
 *
 * @example
 * ```ts
 * const f = tumourFraction(ann, 1024, 2048, 256, 256); // 0..1
 * ```
 */
export function tumourFraction(
  ann: SlideAnnotations,
  x: number,
  y: number,
  width: number,
  height: number,
  samples = 8,
): number {
  const tum = ann.tumour.filter((p) => overlaps(p, x, y, x + width, y + height));
  if (tum.length === 0) return 0;
  const exc = ann.exclusion.filter((p) => overlaps(p, x, y, x + width, y + height));
  let hit = 0;
  for (let j = 0; j < samples; j++) {
    const py = y + ((j + 0.5) * height) / samples;
    for (let i = 0; i < samples; i++) {
      const px = x + ((i + 0.5) * width) / samples;
      if (tum.some((p) => pointInPolygon(p, px, py)) && !exc.some((p) => pointInPolygon(p, px, py))) hit++;
    }
  }
  return hit / (samples * samples);
}

/**
 * Labels patches (level-0 top-left `x`, `y`, level-0 side `size0`): 1 when the tumour fraction under the
 * patch is at least `threshold` (default 0.5), else 0.
 *
 * @example
 * ```ts
 * const labels = patchLabels(ann, coords.x, coords.y, coords.patchSize * coords.downsample);
 * ```
 */
export function patchLabels(
  ann: SlideAnnotations,
  xs: ArrayLike<number>,
  ys: ArrayLike<number>,
  size0: number,
  opts: { threshold?: number; samples?: number } = {},
): Uint8Array {
  const t = opts.threshold ?? 0.5;
  if (!(t > 0 && t <= 1)) throw new Error(`patchLabels(): threshold must be in (0, 1], got ${t}`);
  const out = new Uint8Array(xs.length);
  for (let i = 0; i < xs.length; i++) {
    out[i] = tumourFraction(ann, xs[i], ys[i], size0, size0, opts.samples ?? 8) >= t ? 1 : 0;
  }
  return out;
}

function fillPolygon(
  mask: Uint8Array,
  width: number,
  height: number,
  poly: AnnotationPolygon,
  sx: number,
  sy: number,
  value: 0 | 1,
): void {
  const p = poly.points, n = p.length / 2;
  const yStart = Math.max(0, Math.floor(poly.bbox[1] / sy - 0.5));
  const yEnd = Math.min(height - 1, Math.ceil(poly.bbox[3] / sy));
  const xs: number[] = [];
  for (let row = yStart; row <= yEnd; row++) {
    const y = (row + 0.5) * sy; // pixel centre, level 0
    xs.length = 0;
    for (let i = 0, j = n - 1; i < n; j = i++) {
      const yi = p[2 * i + 1], yj = p[2 * j + 1];
      if ((yi > y) !== (yj > y)) xs.push(p[2 * i] + ((p[2 * j] - p[2 * i]) * (y - yi)) / (yj - yi));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      // pixels whose centre (c + 0.5) * sx lies in [xs[k], xs[k+1])
      const c0 = Math.max(0, Math.ceil(xs[k] / sx - 0.5)),
        c1 = Math.min(width - 1, Math.ceil(xs[k + 1] / sx - 0.5) - 1);
      if (c1 >= c0) mask.fill(value, row * width + c0, row * width + c1 + 1);
    }
  }
}

/**
 * Rasterises the tumour (minus exclusions) into a `width x height` 0/1 mask whose pixels are `scale`
 * level-0 pixels wide (a pixel is tumour when its centre is), e.g. at the tissue mask's resolution for
 * selection-quality metrics.
 *
 * @example
 * ```ts
 * const gt = rasterizeAnnotations(ann, mask.width, mask.height, mask.scale);
 * ```
 */
export function rasterizeAnnotations(
  ann: SlideAnnotations,
  width: number,
  height: number,
  scale: number | readonly [number, number],
): Uint8Array {
  const [sx, sy] = typeof scale === "number" ? [scale, scale] : scale;
  if (!(sx > 0 && sy > 0)) throw new Error(`rasterizeAnnotations(): scale must be positive, got ${scale}`);
  const mask = new Uint8Array(width * height);
  // even-odd inside each polygon, union over polygons
  for (const p of ann.tumour) {
    const m = new Uint8Array(width * height);
    fillPolygon(m, width, height, p, sx, sy, 1);
    for (let i = 0; i < m.length; i++) mask[i] |= m[i];
  }
  for (const p of ann.exclusion) fillPolygon(mask, width, height, p, sx, sy, 0);
  return mask;
}

/**
 * Serialises polygons as ASAP XML (for tests, synthetic slides and exporting selections).
 *
 * @example
 * ```ts
 * const xml = toAsapXml([{ name: "t1", group: "Tumor", points: [0, 0, 100, 0, 100, 100] }]);
 * ```
 */
export function toAsapXml(
  polys: readonly { name: string; group: string; points: ArrayLike<number>; type?: string }[],
): string {
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
  const lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"];
  for (const p of polys) {
    lines.push(
      `\t\t<Annotation Name="${esc(p.name)}" Type="${esc(p.type ?? "Polygon")}" PartOfGroup="${
        esc(p.group)
      }" Color="#F4FA58">`,
      "\t\t\t<Coordinates>",
    );
    for (let i = 0; i < p.points.length / 2; i++) {
      lines.push(`\t\t\t\t<Coordinate Order="${i}" X="${p.points[2 * i]}" Y="${p.points[2 * i + 1]}" />`);
    }
    lines.push("\t\t\t</Coordinates>", "\t\t</Annotation>");
  }
  lines.push("\t</Annotations>", "\t<AnnotationGroups>");
  for (const g of new Set(polys.map((p) => p.group))) {
    lines.push(
      `\t\t<Group Name="${esc(g)}" PartOfGroup="None" Color="#64FE2E">`,
      "\t\t\t<Attributes />",
      "\t\t</Group>",
    );
  }
  lines.push("\t</AnnotationGroups>", "</ASAP_Annotations>", "");
  return lines.join("\n");
}
