/**
 * `show(x)`: the one display call of every notebook. In the Deno Jupyter kernel it renders `x` inline
 * (figures, images, tables: anything implementing `Symbol.for("Jupyter.display")`); anywhere else
 * (scripts, CI, tests) the same call writes `x` to files under `results/` and prints where.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { inJupyter, jupyterDisplay, type MimeBundle, writeFileAtomic } from "../util/mod.ts";
import { Figure, type FigureSpec, JUPYTER_DISPLAY, PLOTLY_MIME } from "./figure.ts";
import { exportFigure, type FigureFormat } from "./export_figure.ts";
import { PngImage } from "./png_image.ts";

/** Options of {@link show} and {@link save}. */
export interface ShowOptions {
  /** File name without extension (default: the figure title as a slug, else `output-<n>`). */
  name?: string;
  /** Folder for files outside Jupyter (default `results/figures`, or {@link setShowDefaults}). */
  dir?: string;
  /** Figure formats outside Jupyter (default html, json, png, svg; png/svg need headless Chromium). */
  formats?: FigureFormat[];
}

const defaults: { dir: string; formats: FigureFormat[] } = {
  dir: "results/figures",
  formats: ["html", "json", "png", "svg"],
};

/**
 * Sets where {@link show} writes outside Jupyter (e.g. the experiment's results folder) and which
 * figure formats.
 *
 * @example
 * ```ts
 * setShowDefaults({ dir: "results/cifar10_pruning/figures" });
 * ```
 */
export function setShowDefaults(options: { dir?: string; formats?: FigureFormat[] }): void {
  if (options.dir !== undefined) defaults.dir = options.dir;
  if (options.formats !== undefined) defaults.formats = options.formats;
}

function isFigureSpec(x: unknown): x is FigureSpec {
  return !!x && typeof x === "object" && Array.isArray((x as FigureSpec).data) &&
    (((x as FigureSpec).layout === undefined) || typeof (x as FigureSpec).layout === "object");
}

function hasDisplay(x: unknown): x is { [JUPYTER_DISPLAY](): MimeBundle | Promise<MimeBundle> } {
  return !!x && typeof x === "object" &&
    typeof (x as Record<symbol, unknown>)[JUPYTER_DISPLAY] === "function";
}

/**
 * The MIME bundle `x` displays as: its own `Symbol.for("Jupyter.display")` bundle, a {@link Figure} for
 * a plain plotly spec, `text/plain` for anything else.
 *
 * @example
 * ```ts
 * const bundle = await displayBundle(fig); // {"application/vnd.plotly.v1+json": ..., "text/html": ...}
 * ```
 */
export async function displayBundle(x: unknown): Promise<MimeBundle> {
  if (hasDisplay(x)) return await x[JUPYTER_DISPLAY]();
  if (isFigureSpec(x)) return Figure.from(x)[JUPYTER_DISPLAY]();
  if (typeof x === "string") return { "text/plain": x };
  return { "text/plain": Deno.inspect(x, { colors: false, depth: 6 }) };
}

let counter = 0;

function slug(s: string): string {
  return s.toLowerCase().replace(/<[^>]*>/g, "").replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "").slice(
    0,
    60,
  );
}

/**
 * Writes `x` to files (what {@link show} does outside Jupyter) and returns their paths: a figure as
 * HTML/JSON/PNG/SVG, an image as PNG, other displayable objects by their richest MIME type
 * (Markdown, HTML, text).
 *
 * @example
 * ```ts
 * const paths = await save(fig, { name: "pareto", dir: "results/cifar10" });
 * ```
 */
export async function save(x: unknown, options: ShowOptions = {}): Promise<string[]> {
  const dir = options.dir ?? defaults.dir;
  const fig = x instanceof Figure ? x : isFigureSpec(x) && !hasDisplay(x) ? Figure.from(x) : undefined;
  const fallbackName = () => `output-${++counter}`;
  if (fig) {
    const name = options.name ?? (fig.title ? slug(fig.title) : "");
    const base = join(dir, name || fallbackName());
    const r = await exportFigure(fig, base, { formats: options.formats ?? defaults.formats, quiet: true });
    for (const s of r.skipped) console.warn(`show: ${s}`);
    return r.written;
  }
  const name = options.name ?? fallbackName();
  if (x instanceof PngImage) {
    await writeFileAtomic(join(dir, `${name}.png`), x.png);
    return [join(dir, `${name}.png`)];
  }
  const bundle = await displayBundle(x);
  const pick: [string, string, (v: unknown) => string | Uint8Array][] = [
    ["image/png", "png", (v) => new Uint8Array(Buffer.from(String(v), "base64"))],
    ["text/markdown", "md", String],
    ["text/html", "html", String],
    [PLOTLY_MIME, "json", (v) => JSON.stringify(v)],
    ["application/json", "json", (v) => JSON.stringify(v, null, 1)],
    ["text/plain", "txt", String],
  ];
  for (const [mime, ext, conv] of pick) {
    if (bundle[mime] !== undefined) {
      const path = join(dir, `${name}.${ext}`);
      await writeFileAtomic(path, conv(bundle[mime]));
      return [path];
    }
  }
  throw new TypeError(
    `save: nothing to write for ${Deno.inspect(x).slice(0, 60)}; expected a displayable value`,
  );
}

/**
 * Shows `x`: inline in Jupyter (figures via the plotly MIME type with an offline HTML fallback,
 * images as PNG, tables as Markdown/HTML), or written to files with their paths printed elsewhere.
 * The same call works in both, so notebooks also run as scripts.
 *
 * @example
 * ```ts
 * await show(accuracyVsGmacsPlot(points));
 * await show(await selectionPanel(x0, { grid: 8, ...aux }), { name: "selection_0" });
 * ```
 */
export async function show(x: unknown, options: ShowOptions = {}): Promise<void> {
  if (inJupyter()) {
    await jupyterDisplay(await displayBundle(x));
    return;
  }
  const paths = await save(x, options);
  console.log(`show: wrote ${paths.join(", ")}`);
}
