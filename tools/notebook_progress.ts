/**
 * The terminal view of headless notebook runs (`deno task notebooks`, `deno task compare`): which notebook
 * and cell is running, the training progress bar the cell draws (relayed from the kernel by
 * `tools/nbrun.py --events`), and an overall ETA from the per-cell times of the last run of the same
 * profile. On a terminal the status is one line redrawn in place; elsewhere (CI logs) it is plain lines:
 * one per cell and one per progress bar every `logEvery` seconds.
 *
 * @module
 */
import { join } from "node:path";

/** One event of `nbrun.py --events` (a JSON object after the `@nbrun ` prefix). */
export type NbrunEvent =
  | { e: "start"; cells: number }
  | { e: "cell"; n: number; of: number; index?: number }
  | { e: "done"; n: number; seconds: number }
  | { e: "out"; name: string; text: string }
  | { e: "bar"; id: string; text: string };

/**
 * Parses one line of nbrun's stdout: the event, or undefined for any other line.
 *
 * @example
 * ```ts
 * parseNbrunEvent('@nbrun {"e": "cell", "n": 5, "of": 14}'); // { e: "cell", n: 5, of: 14 }
 * ```
 */
export function parseNbrunEvent(line: string): NbrunEvent | undefined {
  if (!line.startsWith("@nbrun ")) return undefined;
  try {
    const ev = JSON.parse(line.slice(7));
    return ev && typeof ev.e === "string" ? ev as NbrunEvent : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `75s` → `1m15s`, `4000s` → `1h06m`.
 *
 * @example
 * ```ts
 * formatDuration(372); // "6m12s"
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * The short form of a progress bar's text as lib/util/progress.ts draws it in Jupyter
 * (`"<label> <pct>% | <n>/<total> img | <rate> img/s | ETA 6s | elapsed 3s | loss 0.5"`): label, percentage,
 * count, rate, ETA and the free fields, without the elapsed time.
 *
 * @example
 * ```ts
 * shortBar("train epoch 2/3 40% | 400/1000 img | 85.0 img/s | ETA 7s | elapsed 5s | loss 1.2");
 * // "train epoch 2/3 40% · 400/1000 img · 85.0 img/s · ETA 7s · loss 1.2"
 * ```
 */
export function shortBar(text: string): string {
  return text.split("\n")[0].split(" | ").filter((p) => !p.startsWith("elapsed ")).join(" · ");
}

/** Seconds per notebook and per code cell of earlier runs, per profile (`timings.json`). */
export interface Timings {
  [profile: string]: { [notebook: string]: { seconds: number; cells: number[] } };
}

/**
 * Reads `<dir>/timings.json` (empty when absent or unreadable: it only feeds the ETA).
 *
 * @example
 * ```ts
 * const t = await readTimings("results/notebooks");
 * ```
 */
export async function readTimings(dir: string): Promise<Timings> {
  try {
    const t = JSON.parse(await Deno.readTextFile(join(dir, "timings.json")));
    return t && typeof t === "object" && !Array.isArray(t) ? t : {};
  } catch {
    return {};
  }
}

/** Options of {@link NotebookProgressView}. */
export interface ProgressViewOptions {
  /** Redraw one status line in place (a terminal) or print plain lines (a log). */
  tty: boolean;
  /** Where the text goes (default: stdout). */
  write?: (text: string) => void;
  /** Terminal width (default: the console's, or 100). */
  columns?: () => number;
  /** Seconds, for tests (default: performance.now()/1000). */
  now?: () => number;
  /** Seconds between plain lines of one progress bar (default 30). */
  logEvery?: number;
  /** The notebooks this run executes, in order, and the last run's times of this profile. */
  plan?: { notebooks: string[]; timings?: Timings[string] };
}

const encoder = new TextEncoder();

/**
 * Turns nbrun events into what the terminal shows.
 *
 * @example
 * ```ts
 * const view = new NotebookProgressView({ tty: false });
 * view.notebookStart("01_resnet18");
 * view.event({ e: "cell", n: 1, of: 8 });
 * view.notebookEnd();
 * ```
 */
export class NotebookProgressView {
  private readonly opts: Required<Omit<ProgressViewOptions, "plan">> & { plan?: ProgressViewOptions["plan"] };
  private notebook = "";
  private notebookStarted = 0;
  private cell = 0;
  private cells = 0;
  private cellStarted = 0;
  private bar = "";
  private barShown = new Map<string, number>();
  private lineShown = false;
  /** Seconds of each code cell that finished in the current notebook. */
  readonly cellSeconds: number[] = [];

  constructor(options: ProgressViewOptions) {
    this.opts = {
      write: (t) => Deno.stdout.writeSync(encoder.encode(t)),
      columns: () => {
        try {
          return Deno.consoleSize().columns;
        } catch {
          return 100;
        }
      },
      now: () => performance.now() / 1000,
      logEvery: 30,
      ...options,
    };
  }

  /** A notebook begins. */
  notebookStart(name: string): void {
    this.notebook = name;
    this.notebookStarted = this.opts.now();
    this.cell = this.cells = 0;
    this.bar = "";
    this.cellSeconds.length = 0;
    this.barShown.clear();
  }

  /** The current notebook ended: clears the status line. */
  notebookEnd(): void {
    this.clear();
  }

  /** Prints a line of other output above the status line. */
  print(line: string): void {
    this.clear();
    this.opts.write(line.endsWith("\n") ? line : line + "\n");
    this.redraw();
  }

  /** Handles one event of nbrun. */
  event(ev: NbrunEvent): void {
    const now = this.opts.now();
    switch (ev.e) {
      case "start":
        this.cells = ev.cells;
        return;
      case "cell":
        this.cell = ev.n;
        this.cells = ev.of;
        this.cellStarted = now;
        this.bar = "";
        if (this.opts.tty) this.redraw();
        else this.opts.write(`[${this.status()}]\n`);
        return;
      case "done":
        this.cellSeconds[ev.n - 1] = ev.seconds;
        this.bar = "";
        return;
      case "out": {
        // A glance at what the cell prints: one terminal line each (the executed notebook has it all).
        const max = this.opts.tty ? Math.max(20, this.opts.columns() - 5) : 300;
        const lines = ev.text.replace(/\n$/, "").split("\n");
        for (const l of lines) this.print(`  │ ${l.length > max ? l.slice(0, max - 1) + "…" : l}`);
        return;
      }
      case "bar": {
        this.bar = shortBar(ev.text);
        if (this.opts.tty) {
          this.redraw();
          return;
        }
        const last = this.barShown.get(ev.id);
        const finished = /\b100% \|/.test(ev.text);
        if (last === undefined || finished || now - last >= this.opts.logEvery) {
          this.barShown.set(ev.id, finished ? Infinity : now);
          if (last !== Infinity) this.opts.write(`  ${this.notebook} · ${this.bar}\n`);
        }
        return;
      }
    }
  }

  /** Redraws the status line (a terminal only; call every second to keep the clock moving). */
  redraw(): void {
    if (!this.opts.tty || !this.notebook || this.cell === 0) return;
    // Too wide for the terminal: the bar's extra fields (loss, lr, ...) go first, then the parenthesis of
    // its label; what is left is cut.
    const width = Math.max(20, this.opts.columns() - 1);
    const head = this.status();
    const bar = this.bar ? this.bar.split(" · ") : [];
    const fit = () => [head, ...bar].join(" · ");
    const eta = bar.findIndex((p) => p.startsWith("ETA "));
    while (fit().length > width && eta >= 0 && bar.length > eta + 1) bar.pop();
    if (fit().length > width && bar.length) bar[0] = bar[0].replace(/ \([^)]*\)/g, "");
    let line = fit();
    if (line.length > width) line = line.slice(0, width - 1) + "…";
    this.opts.write(`\r\x1b[2K${line}`);
    this.lineShown = true;
  }

  private clear(): void {
    if (this.lineShown) this.opts.write("\r\x1b[2K");
    this.lineShown = false;
  }

  /** `03_hybrid · cell 5/14 · 6m12s · total ETA 18m`. */
  status(): string {
    const elapsed = this.opts.now() - this.notebookStarted;
    const parts = [this.notebook, `cell ${this.cell}/${this.cells || "?"}`, formatDuration(elapsed)];
    const eta = this.eta();
    if (eta !== undefined) parts.push(`ETA all ${formatDuration(eta)}`);
    return parts.join(" · ");
  }

  /**
   * Seconds left in the whole run from the last run's times: the rest of this cell and notebook (per cell
   * when the notebook has as many code cells as last time) plus every later notebook; undefined when some
   * notebook has no earlier time.
   */
  eta(): number | undefined {
    const plan = this.opts.plan;
    if (!plan?.timings) return undefined;
    const i = plan.notebooks.indexOf(this.notebook);
    if (i < 0) return undefined;
    const now = this.opts.now();
    const cur = plan.timings[this.notebook];
    if (!cur) return undefined;
    let left: number;
    if (cur.cells.length === this.cells && this.cell > 0) {
      const k = this.cell - 1;
      left = Math.max(0, cur.cells[k] - (now - this.cellStarted)) +
        cur.cells.slice(k + 1).reduce((a, b) => a + b, 0);
    } else {
      left = Math.max(0, cur.seconds - (now - this.notebookStarted));
    }
    for (const nb of plan.notebooks.slice(i + 1)) {
      const t = plan.timings[nb];
      if (!t) return undefined;
      left += t.seconds;
    }
    return left;
  }
}
