/**
 * Progress bars for long work (downloads, epochs, slide extraction) that look right everywhere:
 * a redrawing bar on a terminal, an in-place updating line in Jupyter, and a plain line every few
 * seconds in CI logs (not a TTY).
 *
 * @module
 */
import cliProgress from "cli-progress";
import { inJupyter, jupyterDisplay } from "./jupyter.ts";

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** Label shown before the bar. */
  label?: string;
  /** Units of `total` for the display: `"bytes"` prints MiB and MiB/s; otherwise `"<n>/<total> <unit>"`. */
  unit?: string;
  /** Seconds between lines when output is not a terminal (default 10). */
  logEvery?: number;
  /** Disable all output (still counts). */
  silent?: boolean;
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

let nextId = 0;

/**
 * A progress bar with a rate, an ETA and free-form fields (loss, accuracy, ...).
 *
 * @example
 * ```ts
 * const bar = new Progress(100, { label: "epoch 1", unit: "img" });
 * for (let i = 0; i < 100; i += 10) bar.update(i + 10, { loss: 0.5 });
 * bar.stop();
 * ```
 */
export class Progress {
  readonly total: number;
  value = 0;
  private readonly start = performance.now();
  private fields: Record<string, string | number> = {};
  private readonly opts: Required<ProgressOptions>;
  private readonly mode: "tty" | "jupyter" | "log" | "silent";
  private bar?: cliProgress.SingleBar;
  private lastEmit = 0;
  private readonly displayId = `progress-${Deno.pid}-${nextId++}`;
  private shown = false;
  private pending: Promise<unknown> = Promise.resolve();

  constructor(total: number, options: ProgressOptions = {}) {
    this.total = Math.max(0, total);
    this.opts = { label: "", unit: "", logEvery: 10, silent: false, ...options };
    if (this.opts.silent) this.mode = "silent";
    else if (inJupyter()) this.mode = "jupyter";
    else if (Deno.stderr.isTerminal()) this.mode = "tty";
    else this.mode = "log";
    if (this.mode === "tty") {
      this.bar = new cliProgress.SingleBar({
        format: `${this.opts.label} [{bar}] {percentage}% | {text}`,
        hideCursor: true,
        clearOnComplete: false,
        stream: process.stderr,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(this.total || 1, 0, { text: "" });
    }
  }

  /** Seconds since the bar started. */
  get elapsed(): number {
    return (performance.now() - this.start) / 1000;
  }

  /** The current status line (without the bar), e.g. `"30/100 img | 12.3 img/s | ETA 6s | loss 0.51"`. */
  text(): string {
    const rate = this.value / Math.max(this.elapsed, 1e-9);
    const eta = rate > 0 ? (this.total - this.value) / rate : Infinity;
    const isBytes = this.opts.unit === "bytes";
    const mib = (n: number) => (n / 1048576).toFixed(1);
    const count = isBytes
      ? `${mib(this.value)}/${mib(this.total)} MiB`
      : `${this.value}/${this.total}${this.opts.unit ? " " + this.opts.unit : ""}`;
    const r = isBytes ? `${mib(rate)} MiB/s` : `${rate.toFixed(1)} ${this.opts.unit || "it"}/s`;
    const extra = Object.entries(this.fields).map(([k, v]) =>
      `${k} ${typeof v === "number" ? fmtNum(v) : v}`
    );
    return [count, r, `ETA ${fmtDuration(eta)}`, `elapsed ${fmtDuration(this.elapsed)}`, ...extra].join(
      " | ",
    );
  }

  /** Sets the current value (absolute) and optional fields. */
  update(value: number, fields: Record<string, string | number> = {}): void {
    this.value = value;
    Object.assign(this.fields, fields);
    this.emit(false);
  }

  /** Advances by `n`. */
  increment(n = 1, fields: Record<string, string | number> = {}): void {
    this.update(this.value + n, fields);
  }

  /** Finishes the bar (prints the final state once). Await it in Jupyter to flush the display. */
  stop(fields: Record<string, string | number> = {}): Promise<void> {
    Object.assign(this.fields, fields);
    this.emit(true);
    this.bar?.stop();
    return this.pending.then(() => {});
  }

  private emit(final: boolean): void {
    const now = performance.now();
    switch (this.mode) {
      case "silent":
        return;
      case "tty":
        this.bar!.update(this.value, { text: this.text() });
        return;
      case "jupyter": {
        if (!final && now - this.lastEmit < 250) return;
        this.lastEmit = now;
        const pct = this.total > 0 ? Math.min(100, (100 * this.value) / this.total) : 100;
        const line = `${this.opts.label} ${pct.toFixed(0)}% | ${this.text()}`;
        const html = `<div style="font-family:monospace"><progress value="${pct.toFixed(1)}" max="100" ` +
          `style="width:30%"></progress> ${escapeHtml(line)}</div>`;
        const update = this.shown;
        this.shown = true;
        this.pending = this.pending.then(() =>
          jupyterDisplay({ "text/plain": line, "text/html": html }, { displayId: this.displayId, update })
        );
        return;
      }
      case "log": {
        if (!final && now - this.lastEmit < this.opts.logEvery * 1000 && this.lastEmit !== 0) return;
        if (!final && this.lastEmit === 0) {
          this.lastEmit = now;
          return; // no line at 0%
        }
        this.lastEmit = now;
        console.error(`${this.opts.label} ${this.text()}`);
        return;
      }
    }
  }
}

function fmtNum(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
