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

let plotlyInjected = false;

/**
 * Forgets that plotly.js was already sent to the notebook, so the next figure's HTML carries it again
 * (tests; a new kernel starts fresh anyway).
 *
 * @example
 * ```ts
 * resetPlotlyInjection();
 * ```
 */
export function resetPlotlyInjection(): void {
  plotlyInjected = false;
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
   * HTML that draws the figure with `window.Plotly`. With `includePlotly`, plotly.js is inlined first;
   * otherwise the snippet waits for an earlier output to have loaded it.
   */
  toHtmlSnippet(options: { includePlotly?: boolean; height?: number } = {}): string {
    const id = `plotly-${crypto.randomUUID()}`;
    const height = options.height ?? (typeof this.layout.height === "number" ? this.layout.height : 450);
    const lib = options.includePlotly ? `<script type="text/javascript">${plotlyJsSource()}</script>\n` : "";
    const draw = `<script type="text/javascript">(function () {
  var spec = ${jsonForScript(this.toJSON())};
  var tries = 0;
  function draw() {
    var el = document.getElementById(${JSON.stringify(id)});
    if (window.Plotly && el) { window.Plotly.newPlot(el, spec.data, spec.layout, spec.config); return; }
    if (++tries > 400) { if (el) el.textContent = "plotly.js did not load (run the first figure cell again)"; return; }
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
   * The Jupyter MIME bundle: plotly JSON for JupyterLab, an HTML fallback for the classic notebook and
   * exported HTML (plotly.js is inlined only in the first figure of the session), and a text summary.
   */
  [JUPYTER_DISPLAY](): MimeBundle {
    const includePlotly = !plotlyInjected;
    plotlyInjected = true;
    return {
      [PLOTLY_MIME]: this.toJSON(),
      "text/html": this.toHtmlSnippet({ includePlotly }),
      "text/plain": `Figure(${JSON.stringify(this.title ?? "")}, ${this.data.length} trace${
        this.data.length === 1 ? "" : "s"
      })`,
    };
  }
}
