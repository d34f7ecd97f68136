/**
 * A set of small synthetic slides (different tissue per slide, seeded), half of them with an ASAP XML tumour
 * annotation, for queue tests, benchmarks and demos of many-slide processing without real data.
 *
 * @module
 */
import { join } from "node:path";
import { Rng, writeFileAtomic } from "../util/mod.ts";
import { toAsapXml } from "./annotations.ts";
import { type SyntheticShape, writeSyntheticSlide } from "./synthetic_slide.ts";

/** Options of {@link writeSyntheticSlideSet}. */
export interface SyntheticSlideSetOptions {
  /** Number of slides (default 12). */
  count?: number;
  /** Level-0 side of each (square) slide (default 4096). */
  side?: number;
  /** Seed of the tissue layout (default 0). */
  seed?: number;
  /** Also write this many corrupt slides (a good slide cut in half: OpenSlide cannot open it); default 0. */
  corrupt?: number;
}

/** What {@link writeSyntheticSlideSet} wrote. */
export interface SyntheticSlideSet {
  /** Good slides, `slide_00.tif`, ... */
  slides: string[];
  /** Corrupt slides, `corrupt_00.tif`, ... */
  corrupt: string[];
  /** Folder of `<slide>.xml` annotations (tumour slides only; the others are normal). */
  annotationsDir: string;
  /** Ids of the slides with a tumour annotation. */
  tumourSlides: string[];
}

/**
 * Writes `count` synthetic slides into `dir` (every other slide has a tumour polygon in `dir/annotations`).
 *
 * @example
 * ```ts
 * const set = await writeSyntheticSlideSet("data/wsi/set", { count: 12, side: 4096, corrupt: 1 });
 * ```
 */
export async function writeSyntheticSlideSet(
  dir: string,
  opts: SyntheticSlideSetOptions = {},
): Promise<SyntheticSlideSet> {
  const count = opts.count ?? 12, side = opts.side ?? 4096;
  const rng = new Rng(opts.seed ?? 0);
  const annotationsDir = join(dir, "annotations");
  await Deno.mkdir(annotationsDir, { recursive: true });
  const slides: string[] = [], tumourSlides: string[] = [], corrupt: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `slide_${String(i).padStart(2, "0")}`;
    const u = () => rng.next();
    const shapes: SyntheticShape[] = [];
    const blobs = 2 + Math.floor(u() * 3);
    for (let b = 0; b < blobs; b++) {
      shapes.push({
        kind: u() < 0.7 ? "ellipse" : "rect",
        cx: side * (0.2 + 0.6 * u()),
        cy: side * (0.2 + 0.6 * u()),
        rx: side * (0.08 + 0.14 * u()),
        ry: side * (0.08 + 0.14 * u()),
        color: [160 + Math.floor(50 * u()), 90 + Math.floor(40 * u()), 160 + Math.floor(30 * u())],
      });
    }
    const path = join(dir, `${id}.tif`);
    await writeSyntheticSlide(path, { width: side, height: side, shapes });
    slides.push(path);
    if (i % 2 === 0) {
      const s = shapes[0];
      const pts = [
        s.cx - s.rx / 2,
        s.cy - s.ry / 2,
        s.cx + s.rx / 2,
        s.cy - s.ry / 2,
        s.cx + s.rx / 2,
        s.cy + s.ry / 2,
      ];
      await writeFileAtomic(
        join(annotationsDir, `${id}.xml`),
        toAsapXml([{ name: "tumour", group: "Tumor", points: pts }]),
      );
      tumourSlides.push(id);
    }
  }
  for (let i = 0; i < (opts.corrupt ?? 0); i++) {
    const bytes = await Deno.readFile(slides[i % Math.max(1, slides.length)]);
    const path = join(dir, `corrupt_${String(i).padStart(2, "0")}.tif`);
    await writeFileAtomic(path, bytes.subarray(0, Math.floor(bytes.length / 2)));
    corrupt.push(path);
  }
  return { slides, corrupt, annotationsDir, tumourSlides };
}
