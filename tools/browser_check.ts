/**
 * The notebooks as a researcher sees them: runs notebooks in a real Jupyter Notebook page in a real
 * (headless) Chromium, and opens the exported HTML copies from disk, offline; checks that every cell finished
 * without an error output, every plotly figure drew (an SVG with data traces), every PNG output decoded to an
 * image of the size its PNG header declares, and the browser console stayed free of errors. A screenshot of
 * each page goes to `results/notebooks/<name>.png` (ignored by git).
 *
 * ```
 * deno run -A tools/browser_check.ts [--live] [--html] [--out DIR] [--timeout SECONDS] [NAME_FILTER ...]
 * ```
 * Default: `--live --html` for 00_environment and 03_hybrid. `--live` starts `jupyter notebook` (Debian's
 * `jupyter-notebook`, classic Notebook 6.4) on 127.0.0.1 with a token and a free port in a temporary copy of
 * the project (the notebook page saves outputs into the .ipynb; the sources stay clean), and runs all cells
 * through the page (Cell > Run All) with the Deno kernel. `03_hybrid` starts from notebook 02's ViT run, which
 * is copied from `results/runs/` (run `deno task notebooks` first, as CI does). `--html` opens
 * `results/notebooks/<name>.html` (written by `deno task notebooks`) with every non-file request blocked.
 * Prints `browser: N passed, N failed` last.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { basename, join, relative, resolve } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { findChromium } from "../lib/viz/export_figure.ts";
import { PLOTLY_MIME } from "../lib/viz/figure.ts";
import { runDir, studyPlan } from "../lib/experiment/study.ts";
import { parseProfile } from "../lib/profile.ts";

const root = resolve(new URL("..", import.meta.url).pathname);

/** Launch flags: headless, no sandbox (CI runs as root), nothing that talks to the network by itself. */
export const CHROMIUM_FLAGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** A browser with its own fresh profile folder, removed by `close()`. */
export interface LaunchedBrowser {
  browser: Browser;
  close(): Promise<void>;
}

/**
 * Starts Debian's Chromium (`findChromium()`: `$CHROMIUM_BIN`, chromium-headless-shell, chromium) through
 * puppeteer-core with {@link CHROMIUM_FLAGS} and a fresh `--user-data-dir`. Never downloads a browser.
 *
 * @example
 * ```ts
 * const { browser, close } = await launchChromium();
 * try { console.log(await browser.version()); } finally { await close(); }
 * ```
 */
export async function launchChromium(): Promise<LaunchedBrowser> {
  const executablePath = findChromium();
  if (!executablePath) {
    throw new Error("no Chromium found: apt-get install -y chromium-headless-shell (or set CHROMIUM_BIN)");
  }
  const userDataDir = await Deno.makeTempDir({ prefix: "cnnvit-chromium-" });
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    userDataDir,
    args: [...CHROMIUM_FLAGS],
    defaultViewport: { width: 1280, height: 900 },
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
    },
  };
}

/** What a notebook's outputs should contain, from its .ipynb. */
export interface ExpectedOutputs {
  /** Outputs carrying the plotly MIME type (each must draw as a plotly figure). */
  figures: number;
  /** Outputs carrying `image/png`. */
  pngs: number;
  /** Error outputs (`output_type: "error"`), with cell index and error name. */
  errors: string[];
  /** Code cells that did not run (no execution count). */
  notRun: number[];
}

interface NbCell {
  cell_type: string;
  execution_count?: number | null;
  outputs?: { output_type: string; data?: Record<string, unknown>; ename?: string; evalue?: string }[];
}

/**
 * Counts what an executed notebook's outputs hold.
 *
 * @example
 * ```ts
 * const e = expectedOutputs(JSON.parse(await Deno.readTextFile("results/notebooks/00_environment.ipynb")));
 * console.log(e.figures, e.pngs, e.errors);
 * ```
 */
export function expectedOutputs(nb: { cells: NbCell[] }): ExpectedOutputs {
  const e: ExpectedOutputs = { figures: 0, pngs: 0, errors: [], notRun: [] };
  nb.cells.forEach((c, i) => {
    if (c.cell_type !== "code") return;
    if (typeof c.execution_count !== "number") e.notRun.push(i);
    for (const o of c.outputs ?? []) {
      if (o.output_type === "error") {
        e.errors.push(`cell ${i}: ${o.ename}: ${(o.evalue ?? "").slice(0, 300)}`);
      }
      if (o.data?.[PLOTLY_MIME] !== undefined) e.figures++;
      if (o.data?.["image/png"] !== undefined) e.pngs++;
    }
  });
  return e;
}

/** What the page shows, measured in the browser. */
export interface RenderedOutputs {
  figures: { drawn: boolean; traces: number; text: string }[];
  images: {
    decoded: boolean;
    width: number;
    height: number;
    declaredWidth: number;
    declaredHeight: number;
  }[];
}

/** Runs in the page: finds plotly figures and PNG images and measures them. */
function measureInPage(): RenderedOutputs {
  const figures = [...document.querySelectorAll("div.plotly-figure")].map((el) => {
    const svg = el.querySelector("svg.main-svg");
    // Scatter and bar traces are `g.trace`, heatmaps an `image` in `g.hm`; each only exists with data.
    const traces = el.querySelectorAll("svg.main-svg g.trace, svg.main-svg g.hm").length;
    return { drawn: svg !== null, traces, text: (el.textContent ?? "").slice(0, 200) };
  });
  const images = [...document.querySelectorAll("img")]
    .filter((img) => img.src.startsWith("data:image/png;base64,"))
    .map((img) => {
      // The PNG header (IHDR) declares the size: bytes 16-23 of the file, big-endian.
      const head = atob(img.src.slice("data:image/png;base64,".length, "data:image/png;base64,".length + 44));
      const u32 = (o: number) =>
        ((head.charCodeAt(o) << 24) | (head.charCodeAt(o + 1) << 16) | (head.charCodeAt(o + 2) << 8) |
          head.charCodeAt(o + 3)) >>> 0;
      return {
        decoded: img.complete && img.naturalWidth > 0,
        width: img.naturalWidth,
        height: img.naturalHeight,
        declaredWidth: u32(16),
        declaredHeight: u32(20),
      };
    });
  return { figures, images };
}

/**
 * Compares what the page shows with what the notebook holds; returns the problems (empty when all is well).
 *
 * @example
 * ```ts
 * const problems = compareOutputs(expected, rendered, consoleErrors);
 * if (problems.length) console.log(problems.join("\n"));
 * ```
 */
export function compareOutputs(
  expected: ExpectedOutputs,
  rendered: RenderedOutputs,
  consoleErrors: readonly string[],
): string[] {
  const problems: string[] = [];
  for (const e of expected.errors) problems.push(`error output in ${e}`);
  if (expected.notRun.length) problems.push(`code cells did not run: ${expected.notRun.join(", ")}`);
  if (rendered.figures.length !== expected.figures) {
    problems.push(
      `${expected.figures} plotly outputs in the notebook, ${rendered.figures.length} figures in the page`,
    );
  }
  rendered.figures.forEach((f, i) => {
    if (!f.drawn) {
      problems.push(`figure ${i + 1} did not draw (no plotly SVG)${f.text ? `: "${f.text}"` : ""}`);
    } else if (f.traces === 0) problems.push(`figure ${i + 1} drew axes but no data traces`);
  });
  if (rendered.images.length !== expected.pngs) {
    problems.push(
      `${expected.pngs} PNG outputs in the notebook, ${rendered.images.length} images in the page`,
    );
  }
  rendered.images.forEach((im, i) => {
    if (!im.decoded) {
      problems.push(`PNG ${i + 1} did not decode (declared ${im.declaredWidth}x${im.declaredHeight})`);
    } else if (im.width !== im.declaredWidth || im.height !== im.declaredHeight) {
      problems.push(
        `PNG ${i + 1} is ${im.width}x${im.height}; its header says ${im.declaredWidth}x${im.declaredHeight}`,
      );
    }
  });
  for (const c of consoleErrors) problems.push(`browser console: ${c}`);
  return problems;
}

/** The outcome of checking one notebook page. */
export interface PageCheck {
  name: string;
  /** `"live"` (Jupyter Notebook page) or `"html"` (exported copy from disk). */
  mode: "live" | "html";
  problems: string[];
  figures: number;
  pngs: number;
  seconds: number;
  screenshot?: string;
}

/** Collects console errors and uncaught exceptions of a page. */
function watchConsole(page: Page, ignore: (text: string) => boolean = () => false): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !ignore(m.text())) errors.push(m.text().slice(0, 300));
  });
  page.on("pageerror", (e) => errors.push(`uncaught: ${String((e as Error).message ?? e).slice(0, 300)}`));
  return errors;
}

/** Waits until every plotly figure in the page drew or gave up (its loader writes a message), or `ms`. */
async function waitForFigures(page: Page, ms: number): Promise<void> {
  await page.waitForFunction(
    () =>
      [...document.querySelectorAll("div.plotly-figure")].every((el) =>
        el.querySelector("svg.main-svg") !== null || (el.textContent ?? "").length > 0
      ),
    { timeout: ms, polling: 250 },
  ).catch(() => {/* measured below: undrawn figures are reported */});
  // Images decode asynchronously.
  await page.evaluate(() =>
    Promise.all([...document.querySelectorAll("img")].map((img) => img.decode().catch(() => {})))
  );
}

async function screenshot(page: Page, path: string, scroller?: string): Promise<void> {
  if (scroller) {
    // The classic notebook scrolls inside #site: let the page grow to its content for a full-page shot.
    await page.addStyleTag({
      content: `${scroller} { height: auto !important; overflow: visible !important; }
        html, body { height: auto !important; overflow: visible !important; }`,
    });
  }
  await Deno.mkdir(resolve(path, ".."), { recursive: true });
  await page.screenshot({ path: path as `${string}.png`, fullPage: true });
}

/**
 * Opens an exported notebook (HTML from `deno task notebooks`) from disk with every non-`file:`/`data:`
 * request blocked, and checks it against its executed .ipynb.
 *
 * @example
 * ```ts
 * const r = await checkHtmlCopy(browser, "results/notebooks/00_environment.html", "results/notebooks/00_environment.ipynb");
 * console.log(r.problems);
 * ```
 */
export async function checkHtmlCopy(
  browser: Browser,
  htmlPath: string,
  ipynbPath: string,
  options: { screenshot?: string; timeoutMs?: number; figureWaitMs?: number } = {},
): Promise<PageCheck> {
  const t0 = performance.now();
  const name = basename(htmlPath, ".html");
  const expected = expectedOutputs(JSON.parse(await Deno.readTextFile(ipynbPath)));
  const page = await browser.newPage();
  const blocked: string[] = [];
  try {
    await page.setRequestInterception(true);
    page.on("request", (req) => {
      const url = req.url();
      if (url.startsWith("file:") || url.startsWith("data:")) req.continue();
      else {
        blocked.push(url);
        req.abort();
      }
    });
    // Blocked requests (nbconvert's template links MathJax and require.js from a CDN) are listed apart;
    // every other console error counts.
    const errors = watchConsole(page, (t) => t.startsWith("Failed to load resource"));
    page.on("requestfailed", (req) => {
      // A local file that does not load is an error; blocked network requests are listed below.
      if (req.url().startsWith("file:")) {
        errors.push(`could not load ${req.url()}: ${req.failure()?.errorText}`);
      }
    });
    await page.goto(`file://${resolve(htmlPath)}`, {
      waitUntil: "load",
      timeout: options.timeoutMs ?? 60_000,
    });
    // plotly.js is inlined: figures draw right after load; allow for a slow machine.
    await waitForFigures(page, options.figureWaitMs ?? 30_000);
    const rendered = await page.evaluate(measureInPage);
    const problems = compareOutputs(expected, rendered, errors);
    if (options.screenshot) await screenshot(page, options.screenshot);
    if (blocked.length) console.log(`  ${name}.html: blocked offline: ${[...new Set(blocked)].join(", ")}`);
    return {
      name,
      mode: "html",
      problems,
      figures: rendered.figures.length,
      pngs: rendered.images.length,
      seconds: (performance.now() - t0) / 1000,
      screenshot: options.screenshot,
    };
  } finally {
    await page.close().catch(() => {});
  }
}

/** A running Jupyter Notebook server. */
export interface JupyterServer {
  url: string;
  token: string;
  dir: string;
  stop(): Promise<void>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Starts `jupyter notebook` (classic Notebook, Debian's `jupyter-notebook`) on 127.0.0.1 with a random token
 * and a free port, serving `dir`; resolves once `/api/status` answers.
 *
 * @example
 * ```ts
 * const server = await startJupyter("/tmp/copy", { CNNVIT_PROFILE: "quick" });
 * try { console.log(server.url); } finally { await server.stop(); }
 * ```
 */
export async function startJupyter(dir: string, env: Record<string, string> = {}): Promise<JupyterServer> {
  const token = crypto.randomUUID().replaceAll("-", "");
  const port = freePort();
  const child = new Deno.Command("jupyter", {
    args: [
      "notebook",
      "--no-browser",
      "--ip=127.0.0.1",
      `--port=${port}`,
      "--port-retries=0",
      `--NotebookApp.token=${token}`,
      `--notebook-dir=${dir}`,
      // CI runs as root; the server refuses that unless told (it listens on 127.0.0.1 with a token).
      ...(Deno.uid() === 0 ? ["--allow-root"] : []),
    ],
    cwd: dir,
    env: {
      ...env,
      NO_COLOR: "1",
      // No user config (extensions, passwords) and no shared runtime files; kernelspecs still come from the
      // usual data folders (the Deno kernel registered by `deno jupyter --install`).
      JUPYTER_CONFIG_DIR: join(dir, ".jupyter-config"),
      JUPYTER_RUNTIME_DIR: join(dir, ".jupyter-runtime"),
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderrDone = (async () => {
    // The server logs to stderr.
    const f = await Deno.open(join(dir, ".jupyter.log"), { write: true, create: true, truncate: true });
    await child.stderr.pipeTo(f.writable).catch(() => {});
  })();
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  let exited = false;
  child.status.then(() => (exited = true));
  while (true) {
    if (exited) {
      const err = await Deno.readTextFile(join(dir, ".jupyter.log")).catch(() => "");
      throw new Error(`jupyter notebook exited at start:\n${err.slice(-2000)}`);
    }
    try {
      const r = await fetch(`${url}/api/status?token=${token}`);
      await r.body?.cancel();
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`jupyter notebook did not answer on ${url} within 60 s`);
    await new Promise((r) => setTimeout(r, 300));
  }
  return {
    url,
    token,
    dir,
    async stop() {
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        const t = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 10_000);
        await child.status;
        clearTimeout(t);
      }
      await stderrDone;
    },
  };
}

/**
 * A temporary copy of the project for a Jupyter server: lib, notebooks, tools, deno.json/lock, node_modules
 * (hard links where possible), data (a link) and, from `results/runs/`, the runs listed in `runs`.
 *
 * @example
 * ```ts
 * const dir = await projectCopy(["study_quick_fashion-mnist/vit"]);
 * ```
 */
export async function projectCopy(runs: readonly string[] = []): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cnnvit-browser-" });
  const cp = async (args: string[]) => {
    const r = await new Deno.Command("cp", { args, stderr: "piped" }).output();
    if (!r.success) throw new Error(`cp ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  };
  for (const p of ["lib", "notebooks", "tools", "deno.json", "deno.lock"]) {
    await cp(["-a", join(root, p), join(dir, p)]);
  }
  // Hard links share the 300+ MB of npm packages without copying them; `cp -a` where links are not possible.
  const nm = await new Deno.Command("cp", {
    args: ["-al", join(root, "node_modules"), join(dir, "node_modules")],
    stderr: "null",
  }).output();
  if (!nm.success) {
    await Deno.remove(join(dir, "node_modules"), { recursive: true }).catch(() => {});
    await cp(["-a", join(root, "node_modules"), join(dir, "node_modules")]);
  }
  await Deno.symlink(join(root, "data"), join(dir, "data"));
  for (const run of runs) {
    const src = join(root, "results", "runs", run);
    try {
      await Deno.stat(src);
    } catch {
      throw new Error(`${src} does not exist: run the notebook that trains it first (deno task notebooks)`);
    }
    await Deno.mkdir(resolve(join(dir, "results", "runs", run), ".."), { recursive: true });
    await cp(["-a", src, join(dir, "results", "runs", run)]);
  }
  return dir;
}

/**
 * Opens `notebooks/<name>.ipynb` in the Jupyter Notebook page, runs all cells (Cell > Run All) with the
 * notebook's kernel, waits until no cell is running, and checks the page and the notebook's outputs.
 *
 * @example
 * ```ts
 * const r = await checkLiveNotebook(browser, server, "00_environment");
 * ```
 */
export async function checkLiveNotebook(
  browser: Browser,
  server: JupyterServer,
  name: string,
  options: { screenshot?: string; timeoutMs?: number } = {},
): Promise<PageCheck> {
  const t0 = performance.now();
  const timeout = options.timeoutMs ?? 30 * 60_000;
  const page = await browser.newPage();
  try {
    const errors = watchConsole(page);
    await page.goto(`${server.url}/notebooks/notebooks/${name}.ipynb?token=${server.token}`, {
      waitUntil: "load",
      timeout: 60_000,
    });
    // The kernel is up when the notebook says so (the Deno kernel takes a few seconds to start).
    await page.waitForFunction(
      () => {
        // deno-lint-ignore no-explicit-any
        const nb = (globalThis as any).Jupyter?.notebook;
        return nb?.kernel?.is_connected() && nb.kernel.info_reply?.status === "ok";
      },
      { timeout: 120_000, polling: 250 },
    );
    // Cell > Run All, through the menu as a person would.
    await page.click("#celllink");
    await page.click("#run_all_cells");
    // Done when no cell shows In [*] for a few seconds in a row (a failing cell stops the queue).
    let quiet = 0;
    while (quiet < 3) {
      if (performance.now() - t0 > timeout) {
        throw new Error(`${name}: cells still running after ${timeout / 1000} s`);
      }
      await new Promise((r) => setTimeout(r, 2000));
      const running = await page.evaluate(() => {
        // deno-lint-ignore no-explicit-any
        const nb = (globalThis as any).Jupyter.notebook;
        // deno-lint-ignore no-explicit-any
        return nb.get_cells().some((c: any) => c.cell_type === "code" && c.input_prompt_number === "*");
      });
      quiet = running ? 0 : quiet + 1;
    }
    const nb = await page.evaluate(() => {
      // deno-lint-ignore no-explicit-any
      return (globalThis as any).Jupyter.notebook.toJSON();
    });
    const expected = expectedOutputs(nb as { cells: NbCell[] });
    await waitForFigures(page, 30_000);
    const rendered = await page.evaluate(measureInPage);
    const problems = compareOutputs(expected, rendered, errors);
    if (options.screenshot) await screenshot(page, options.screenshot, "#site");
    return {
      name,
      mode: "live",
      problems,
      figures: rendered.figures.length,
      pngs: rendered.images.length,
      seconds: (performance.now() - t0) / 1000,
      screenshot: options.screenshot,
    };
  } finally {
    await page.close().catch(() => {});
  }
}

/** Runs of `results/runs/` a notebook starts from (copied into the server's project copy). */
const NEEDS_RUNS: Record<string, (profile: string) => string[]> = {
  // The study's own folder for the ViT run (keyed by profile, dataset and seed), relative to results/runs.
  "03_hybrid": (profile) => [
    relative(join("results", "runs"), runDir(studyPlan(parseProfile(profile, "browser_check")), "vit")),
  ],
};

function report(r: PageCheck): void {
  const what = `${r.figures} figures, ${r.pngs} PNGs, ${r.seconds.toFixed(0)} s`;
  if (r.problems.length === 0) console.log(`ok ${r.mode} ${r.name} (${what})`);
  else {
    console.log(`FAILED ${r.mode} ${r.name} (${what}):`);
    for (const p of r.problems) console.log(`  - ${p}`);
  }
}

async function which(cmd: string): Promise<boolean> {
  const r = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).output();
  return r.success;
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      live: { type: "boolean" },
      html: { type: "boolean" },
      out: { type: "string", default: join(root, "results", "notebooks") },
      timeout: { type: "string", default: "1800" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(
      "Usage: deno run -A tools/browser_check.ts [--live] [--html] [--out DIR] [--timeout SEC] [NAME ...]\n" +
        "Default: --live --html 00_environment 03_hybrid. Prints 'browser: N passed, N failed' last.",
    );
    return 0;
  }
  const timeoutS = Number(values.timeout);
  if (!Number.isInteger(timeoutS) || timeoutS <= 0) {
    throw new Error(`--timeout: expected a positive whole number of seconds, got "${values.timeout}"`);
  }
  const both = !values.live && !values.html;
  const live = both || values.live === true, html = both || values.html === true;
  const names = positionals.length ? positionals : ["00_environment", "03_hybrid"];
  const profile = Deno.env.get("CNNVIT_PROFILE") || "quick";
  const results: PageCheck[] = [];
  const fail = (name: string, mode: "live" | "html", why: string) => {
    const r = { name, mode, problems: [why], figures: 0, pngs: 0, seconds: 0 };
    report(r);
    results.push(r);
  };
  if (live && !(await which("jupyter-notebook"))) {
    fail("jupyter", "live", "jupyter-notebook is not installed (apt-get install -y jupyter-notebook)");
  }
  const chromium = await launchChromium().catch((e) => {
    fail("chromium", "live", e instanceof Error ? e.message : String(e));
    return undefined;
  });
  try {
    if (chromium && live && results.length === 0) {
      for (const name of names) {
        let dir: string | undefined, server: JupyterServer | undefined;
        try {
          dir = await projectCopy(NEEDS_RUNS[name]?.(profile) ?? []);
          server = await startJupyter(dir, { ...Deno.env.toObject(), CNNVIT_PROFILE: profile });
          const r = await checkLiveNotebook(chromium.browser, server, name, {
            screenshot: join(values.out, `${name}.png`),
            timeoutMs: timeoutS * 1000,
          });
          report(r);
          results.push(r);
        } catch (e) {
          fail(name, "live", e instanceof Error ? e.message : String(e));
        } finally {
          await server?.stop();
          if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
        }
      }
    }
    if (chromium && html) {
      for (const name of names) {
        const htmlPath = join(values.out, `${name}.html`), ipynb = join(values.out, `${name}.ipynb`);
        try {
          const r = await checkHtmlCopy(chromium.browser, htmlPath, ipynb, {
            screenshot: join(values.out, `${name}.html.png`),
          });
          report(r);
          results.push(r);
        } catch (e) {
          fail(name, "html", `${e instanceof Error ? e.message : e} (run deno task notebooks first)`);
        }
      }
    }
  } finally {
    await chromium?.close();
  }
  const failed = results.filter((r) => r.problems.length > 0).length;
  console.log(`browser: ${results.length - failed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
