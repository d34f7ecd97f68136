/**
 * Export of plotly figures to standalone HTML, JSON, PNG and SVG. Static images are rendered by
 * headless Chromium (apt `chromium-headless-shell`) with `--dump-dom` on a page that calls
 * `Plotly.toImage`: no browser driver. Without Chromium, PNG/SVG are skipped with a clear message.
 *
 * @module
 */
import { join } from "node:path";
import { writeFileAtomic } from "../util/mod.ts";
import { Figure, type FigureSpec } from "./figure.ts";
import { plotlyJsPath } from "./plotly_js.ts";

/** File formats a figure exports to. */
export type FigureFormat = "html" | "json" | "png" | "svg";

const CANDIDATES = [
  "chromium-headless-shell",
  "chromium",
  "chromium-browser",
  "google-chrome",
  "headless_shell",
];

let chromiumCache: string | null | undefined;

/**
 * Path of a headless Chromium: `$CHROMIUM_BIN`, else the first of chromium-headless-shell, chromium,
 * chromium-browser, google-chrome on `PATH`; `null` when none is installed.
 *
 * @example
 * ```ts
 * if (!findChromium()) console.log("apt-get install -y chromium-headless-shell");
 * ```
 */
export function findChromium(): string | null {
  if (chromiumCache !== undefined) return chromiumCache;
  const env = Deno.env.get("CHROMIUM_BIN");
  if (env) return (chromiumCache = env);
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    for (const name of CANDIDATES) {
      try {
        const p = join(dir, name);
        if (Deno.statSync(p).isFile) return (chromiumCache = p);
      } catch { /* not here */ }
    }
  }
  return (chromiumCache = null);
}

/** The message printed when PNG/SVG export is skipped. */
export const CHROMIUM_MISSING =
  "PNG/SVG export skipped: no headless Chromium found (install it with `apt-get install -y chromium-headless-shell` " +
  "or set CHROMIUM_BIN)";

/** Options of {@link renderStatic} and {@link exportFigure}. */
export interface StaticOptions {
  /** Image width in CSS pixels (default: the layout's width or 800). */
  width?: number;
  /** Image height (default: the layout's height or 500). */
  height?: number;
  /** PNG pixel scale (default 2, for print). */
  scale?: number;
  /** Give up after this many milliseconds (default 60000). */
  timeoutMs?: number;
}

/** Static renderings of one figure. */
export interface StaticImages {
  png: Uint8Array;
  svg: string;
}

function decodeDataUrl(url: string): Uint8Array | string {
  const comma = url.indexOf(",");
  const head = url.slice(0, comma), body = url.slice(comma + 1);
  if (head.endsWith(";base64")) return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  return decodeURIComponent(body);
}

/**
 * Renders figures to PNG and SVG in one headless Chromium run. Throws when Chromium is missing
 * ({@link CHROMIUM_MISSING}) or fails.
 *
 * @example
 * ```ts
 * const [{ png, svg }] = await renderStatic([fig]);
 * ```
 */
export async function renderStatic(
  figures: readonly FigureSpec[],
  options: StaticOptions = {},
): Promise<StaticImages[]> {
  const bin = findChromium();
  if (!bin) throw new Error(CHROMIUM_MISSING);
  const jobs = figures.map((f) => ({
    spec: { data: f.data, layout: f.layout },
    width: options.width ?? (typeof f.layout.width === "number" ? f.layout.width : 800),
    height: options.height ?? (typeof f.layout.height === "number" ? f.layout.height : 500),
    scale: options.scale ?? 2,
  }));
  const dir = await Deno.makeTempDir({ prefix: "figure-export-" });
  try {
    const page = `<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><pre id="out">pending</pre>
<script src="${new URL(`file://${plotlyJsPath()}`).href}"></script>
<script>
(async function () {
  var jobs = ${JSON.stringify(jobs).replace(/</g, "\\u003c")};
  var out = [];
  try {
    for (var i = 0; i < jobs.length; i++) {
      var j = jobs[i];
      var png = await Plotly.toImage(j.spec, { format: "png", width: j.width, height: j.height, scale: j.scale });
      var svg = await Plotly.toImage(j.spec, { format: "svg", width: j.width, height: j.height });
      out.push({ png: png, svg: svg });
    }
    document.getElementById("out").textContent = "RESULT" + JSON.stringify(out) + "END";
  } catch (e) {
    document.getElementById("out").textContent = "FAILED " + String(e && e.stack || e) + "END";
  }
})();
</script></body></html>`;
    const pagePath = join(dir, "page.html");
    await Deno.writeTextFile(pagePath, page);
    const timeout = options.timeoutMs ?? 60000;
    const cmd = new Deno.Command(bin, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",
        `--user-data-dir=${join(dir, "profile")}`,
        `--virtual-time-budget=${timeout}`,
        "--dump-dom",
        `file://${pagePath}`,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeout + 30000),
    });
    const res = await cmd.output();
    const dom = new TextDecoder().decode(res.stdout);
    const text = dom.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(
      /&amp;/g,
      "&",
    );
    const m = text.match(/RESULT(.*?)END<\/pre>/s);
    if (!m) {
      const failed = text.match(/FAILED (.*?)END/s)?.[1];
      const err = new TextDecoder().decode(res.stderr).trim().split("\n").slice(-5).join("\n");
      throw new Error(
        `renderStatic: Chromium (${bin}) did not render the figures (exit ${res.code}): ${
          failed ?? "no result in the page"
        }\n${err}`,
      );
    }
    const parsed = JSON.parse(m[1]) as { png: string; svg: string }[];
    return parsed.map((r) => ({
      png: decodeDataUrl(r.png) as Uint8Array,
      svg: decodeDataUrl(r.svg) as string,
    }));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** What {@link exportFigure} did. */
export interface ExportResult {
  /** Files written. */
  written: string[];
  /** Why a requested format was not written (e.g. {@link CHROMIUM_MISSING}); empty when all were. */
  skipped: string[];
}

/**
 * Writes a figure as `<basePath>.html` (standalone, plotly.js inlined, offline), `.json` (the spec),
 * `.png` and `.svg` (headless Chromium). Missing Chromium skips PNG/SVG with a warning and a note in
 * `skipped`; every write is atomic.
 *
 * @example
 * ```ts
 * await exportFigure(accuracyVsGmacsPlot(points), "results/cifar10/pareto");
 * ```
 */
export async function exportFigure(
  figure: Figure | FigureSpec,
  basePath: string,
  options: StaticOptions & { formats?: FigureFormat[]; quiet?: boolean } = {},
): Promise<ExportResult> {
  const fig = figure instanceof Figure ? figure : Figure.from(figure);
  const formats = options.formats ?? ["html", "png", "svg"];
  for (const f of formats) {
    if (!["html", "json", "png", "svg"].includes(f)) {
      throw new RangeError(`exportFigure: format ${JSON.stringify(f)}; expected html, json, png or svg`);
    }
  }
  const written: string[] = [], skipped: string[] = [];
  if (formats.includes("html")) {
    await writeFileAtomic(`${basePath}.html`, fig.toStandaloneHtml());
    written.push(`${basePath}.html`);
  }
  if (formats.includes("json")) {
    await writeFileAtomic(`${basePath}.json`, JSON.stringify(fig, null, 1) + "\n");
    written.push(`${basePath}.json`);
  }
  const wantPng = formats.includes("png"), wantSvg = formats.includes("svg");
  if (wantPng || wantSvg) {
    if (!findChromium()) {
      skipped.push(`${basePath}.{png,svg}: ${CHROMIUM_MISSING}`);
      if (!options.quiet) console.warn(`exportFigure: ${basePath}: ${CHROMIUM_MISSING}`);
    } else {
      const [img] = await renderStatic([fig], options);
      if (wantPng) {
        await writeFileAtomic(`${basePath}.png`, img.png);
        written.push(`${basePath}.png`);
      }
      if (wantSvg) {
        await writeFileAtomic(`${basePath}.svg`, img.svg);
        written.push(`${basePath}.svg`);
      }
    }
  }
  return { written, skipped };
}
