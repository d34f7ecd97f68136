/**
 * Plotly figures as plain specs that render themselves in Jupyter (plotly MIME bundle plus an offline
 * HTML fallback) and export to standalone HTML.
 *
 * @module
 */
import type { MimeBundle } from "../util/mod.ts";
import { plotlyJsSource } from "./plotly_js.ts";

/** A plotly trace (plain JSON; see https://plotly.com/javascript/reference/). */
export type PlotlyTrace = Record<string, unknown> & { type?: string };

/** A plotly layout (plain JSON). */
export type PlotlyLayout = Record<string, unknown>;

/** A plain plotly figure spec, as `Plotly.newPlot(div, spec)` takes it. */
export interface FigureSpec {
  data: PlotlyTrace[];
  layout: PlotlyLayout;
  config?: Record<string, unknown>;
}

/** The key of the Jupyter display protocol (Deno kernel). */
export const JUPYTER_DISPLAY: unique symbol = Symbol.for("Jupyter.display");

/** The plotly MIME type rendered by the `jupyterlab-plotly` extension. */
export const PLOTLY_MIME = "application/vnd.plotly.v1+json";

/**
 * A small script that loads plotly.js into a live notebook page once (the first figure that runs it wins):
 * from the Jupyter server's own files (`<base>/files/node_modules/plotly.js-dist-min/plotly.min.js`, there
 * when Jupyter was started in the project folder, offline), else from the plotly CDN.
 *
 * Why not inline plotly.js (4.8 MB) in the first figure's output, as we used to: the Deno kernel (2.9.6,
 * whose ZMQ transport is written in JavaScript) can corrupt an IOPub message much larger than its socket's
 * send buffer. The Jupyter client then rejects it ("Invalid Signature") and loses every later output of the
 * session. Measured with the send buffer capped at 64 KiB (`sysctl net.ipv4.tcp_wmem`): 128 KiB messages
 * arrived intact, 512 KiB and 3.6 MB ones did not. So outputs stay small; standalone HTML files and the HTML
 * copies of executed notebooks inline plotly.js instead (`toStandaloneHtml`, {@link inlinePlotlyIntoHtml}).
 */
function plotlyLoaderScript(): string {
  return `<script type="text/javascript">(function () {
  if (window.Plotly || window.__cnnvitPlotlyLoading) return;
  window.__cnnvitPlotlyLoading = true;
  var base = "/";
  try {
    var cfg = document.getElementById("jupyter-config-data");
    if (cfg) base = JSON.parse(cfg.textContent).baseUrl || "/";
    else if (document.body && document.body.getAttribute("data-base-url")) base = document.body.getAttribute("data-base-url");
  } catch (e) { /* default base */ }
  if (base.slice(-1) !== "/") base += "/";
  var srcs = [base + "files/node_modules/plotly.js-dist-min/plotly.min.js",
    "https://cdn.plot.ly/plotly-${PLOTLY_VERSION}.min.js"];
  function load(i) {
    if (i >= srcs.length || window.Plotly) return;
    var s = document.createElement("script");
    s.src = srcs[i];
    s.onerror = function () { s.remove(); load(i + 1); };
    document.head.appendChild(s);
  }
  load(0);
})();</script>
`;
}

/** The plotly.js version the loader asks the CDN for (the npm package's, see deno.json). */
export const PLOTLY_VERSION = "4.1.2";

/**
 * Makes an HTML page that shows notebook figures self-contained: plotly.js is inlined once in `<head>`
 * (so the figures' loader finds `window.Plotly` and fetches nothing). Pages without figures come back as
 * they are. Used on the HTML copies of executed notebooks.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile(path, inlinePlotlyIntoHtml(await Deno.readTextFile(path)));
 * ```
 */
export function inlinePlotlyIntoHtml(html: string): string {
  if (!html.includes('class="plotly-figure"') || html.includes("data-cnnvit-plotly")) return html;
  const tag = `<script type="text/javascript" data-cnnvit-plotly>${plotlyJsSource()}</script>\n`;
  const at = html.search(/<\/head>/i);
  return at >= 0 ? html.slice(0, at) + tag + html.slice(at) : tag + html;
}

function jsonForScript(x: unknown): string {
  return JSON.stringify(x).replace(/</g, "\\u003c").replace(/>/g, "\\u003e").replace(/&/g, "\\u0026");
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/**
 * A plotly figure: a plain spec (`data`, `layout`, `config`; `JSON.stringify(fig)` gives exactly that)
 * which renders inline as the last value of a notebook cell or through `show()`.
 *
 * @example
 * ```ts
 * const fig = new Figure([{ type: "scatter", x: [1, 2], y: [3, 4] }], { title: { text: "demo" } });
 * fig; // renders in Jupyter
 * ```
 */
export class Figure implements FigureSpec {
  data: PlotlyTrace[];
  layout: PlotlyLayout;
  config: Record<string, unknown>;

  constructor(data: PlotlyTrace[], layout: PlotlyLayout = {}, config: Record<string, unknown> = {}) {
    if (!Array.isArray(data)) {
      throw new TypeError(`Figure: data must be an array of traces, got ${String(data)}`);
    }
    this.data = data;
    this.layout = layout;
    this.config = { responsive: true, displaylogo: false, ...config };
  }

  /** Wraps a plain spec (e.g. parsed JSON) as a Figure. */
  static from(spec: FigureSpec): Figure {
    if (!spec || !Array.isArray(spec.data)) {
      throw new TypeError(
        `Figure.from: expected {data: [...], layout}, got ${JSON.stringify(spec)?.slice(0, 80)}`,
      );
    }
    return new Figure(spec.data, spec.layout ?? {}, spec.config ?? {});
  }

  /** The title text, if any. */
  get title(): string | undefined {
    const t = this.layout.title;
    if (typeof t === "string") return t;
    if (t && typeof t === "object" && typeof (t as { text?: unknown }).text === "string") {
      return (t as { text: string }).text;
    }
    return undefined;
  }

  /** The plain spec (what `JSON.stringify` writes). */
  toJSON(): FigureSpec {
    return { data: this.data, layout: this.layout, config: this.config };
  }

  /**
   * HTML that draws the figure with `window.Plotly`. `includePlotly`: `true` inlines plotly.js first
   * (standalone pages), `"loader"` adds the small script that loads it in a live notebook
   * (see {@link plotlyLoaderScript}), `false` (default) waits for something else to have loaded it.
   */
  toHtmlSnippet(options: { includePlotly?: boolean | "loader"; height?: number } = {}): string {
    const id = `plotly-${crypto.randomUUID()}`;
    const height = options.height ?? (typeof this.layout.height === "number" ? this.layout.height : 450);
    const lib = options.includePlotly === "loader"
      ? plotlyLoaderScript()
      : options.includePlotly
      ? `<script type="text/javascript">${plotlyJsSource()}</script>\n`
      : "";
    const draw = `<script type="text/javascript">(function () {
  var spec = ${jsonForScript(this.toJSON())};
  var tries = 0;
  function draw() {
    var el = document.getElementById(${JSON.stringify(id)});
    if (window.Plotly && el) { window.Plotly.newPlot(el, spec.data, spec.layout, spec.config); return; }
    if (++tries > 400) { if (el) el.textContent = "plotly.js did not load: start Jupyter in the project folder (it serves node_modules/plotly.js-dist-min) or allow cdn.plot.ly"; return; }
    setTimeout(draw, 50);
  }
  draw();
})();</script>`;
    return `${lib}<div id="${id}" class="plotly-figure" style="width:100%;height:${height}px"></div>\n${draw}`;
  }

  /** A standalone HTML page (plotly.js inlined, works offline). */
  toStandaloneHtml(): string {
    const title = escapeHtml(this.title ?? "figure");
    return `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${title}</title></head>\n<body>\n${
      this.toHtmlSnippet({ includePlotly: true })
    }\n</body></html>\n`;
  }

  /**
   * The Jupyter MIME bundle: plotly JSON for JupyterLab's plotly renderer, an HTML fallback (a few KB: it
   * loads plotly.js by URL, see {@link plotlyLoaderScript}) for the classic notebook, JupyterLab without the
   * plotly extension and exported HTML, and a text summary.
   */
  [JUPYTER_DISPLAY](): MimeBundle {
    return {
      [PLOTLY_MIME]: this.toJSON(),
      "text/html": this.toHtmlSnippet({ includePlotly: "loader" }),
      "text/plain": `Figure(${JSON.stringify(this.title ?? "")}, ${this.data.length} trace${
        this.data.length === 1 ? "" : "s"
      })`,
    };
  }
}
