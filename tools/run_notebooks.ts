/**
 * `deno task notebooks`: executes every `notebooks/*.ipynb` headlessly with the Deno Jupyter kernel, in
 * order, through `tools/nbrun.py` (nbclient that keeps reading outputs the Deno kernel sends after
 * `idle`). Executed copies go to `results/notebooks/` (ignored by git) as .ipynb and .html; the sources stay
 * without outputs. A cell error or timeout fails the run with the notebook and cell named. A notebook can
 * declare the files it must produce in its metadata (`"cnnvit": {"outputs": ["results/study/{profile}/..."]}`;
 * `{profile}` is the study's report folder name, `quick` or `quick_synthetic` with `CNNVIT_DATASET`);
 * the runner checks they were written during the run.
 *
 * While a notebook runs, the terminal shows the notebook, the cell, the time and the training progress bar
 * the cell draws (one line redrawn in place; plain lines when stdout is not a terminal), with an ETA of the
 * whole run from the times of the last run of the same profile (`results/notebooks/timings.json`).
 * Ctrl-C stops the kernel and exits 130; with `--state FILE`, notebooks that finished are recorded there and
 * `--resume` skips them next time.
 *
 * ```
 * deno task notebooks [--profile quick|cpu|full] [--timeout SECONDS] [--no-html] [NAME_FILTER ...]
 * ```
 * The profile also comes from `CNNVIT_PROFILE` (default `quick` here: this task is the headless check;
 * `deno task compare` is the study).
 */
import { basename, join, resolve } from "node:path";
import { parseProfile, type ProfileName } from "../lib/profile.ts";
import { CliError, intFlag, parseCli, runCli, usage } from "./cli.ts";
import { ensureNpmPackages, importLater } from "./npm_setup.ts";
import { NotebookProgressView, parseNbrunEvent, readTimings, type Timings } from "./notebook_progress.ts";

const root = resolve(new URL("..", import.meta.url).pathname);

const HELP = `Usage: deno task notebooks [options] [name-filter ...]

Executes notebooks/*.ipynb with the Deno kernel, writes executed copies to results/notebooks/.

Options:
  --profile NAME   quick | cpu | full (default: $CNNVIT_PROFILE or quick)
  --timeout SEC    per-cell timeout in seconds (default 1200 in the quick profile, 14400 in cpu and full);
                   a timeout fails the notebook
  --no-html        do not export HTML copies
  --out DIR        where executed copies go (default results/notebooks)
  --state FILE     record the notebooks that finished in FILE (JSON)
  --resume         skip the notebooks FILE records as finished (with --state)
  -h, --help       this text

Ctrl-C stops the running notebook's kernel and exits 130 (training runs continue from their checkpoints).`;

/** Finds a Python that has nbclient (Debian's /usr/bin/python3 first: pyenv shims may lack it). */
async function findPython(): Promise<string> {
  const candidates = [Deno.env.get("NBRUN_PYTHON"), "/usr/bin/python3", "python3"].filter(
    Boolean,
  ) as string[];
  for (const py of candidates) {
    try {
      const r = await new Deno.Command(py, { args: ["-c", "import nbclient, nbformat"], stderr: "null" })
        .output();
      if (r.success) return py;
    } catch { /* not there */ }
  }
  throw new Error(
    "no Python with nbclient found (tried " + candidates.join(", ") + "); install Jupyter: " +
      "`apt-get install jupyter-nbconvert python3-nbclient jupyter-client` or `pip install nbclient nbconvert`",
  );
}

async function kernelSpecs(py: string): Promise<string[]> {
  const r = await new Deno.Command(py, {
    args: [
      "-c",
      "from jupyter_client.kernelspec import KernelSpecManager as K; print(' '.join(K().find_kernel_specs()))",
    ],
  }).output();
  return new TextDecoder().decode(r.stdout).trim().split(/\s+/).filter(Boolean);
}

/** Makes sure the Deno kernel is registered with Jupyter, registering it (`deno jupyter --install`) if not. */
async function ensureKernel(py: string): Promise<void> {
  if ((await kernelSpecs(py)).includes("deno")) return;
  console.log("registering the Deno Jupyter kernel (deno jupyter --install)");
  await new Deno.Command(Deno.execPath(), { args: ["jupyter", "--install"], stdout: "null", stderr: "null" })
    .output();
  const specs = await kernelSpecs(py);
  if (!specs.includes("deno")) {
    throw new Error(
      `the Deno Jupyter kernel is not registered (kernels: ${specs.join(", ") || "none"}) and ` +
        "`deno jupyter --install` did not register it; run it by hand and check `jupyter kernelspec list`",
    );
  }
}

interface Result {
  name: string;
  ok: boolean;
  seconds: number;
  message?: string;
  /** Seconds per code cell (for the next run's ETA). */
  cells?: number[];
  interrupted?: boolean;
}

/** What one run of the runner shares across notebooks. */
interface RunContext {
  py: string;
  outDir: string;
  profile: ProfileName;
  /** The study's report folder name (`{profile}` in a notebook's declared outputs). */
  reportTag: string;
  timeout: number;
  html: boolean;
  view: NotebookProgressView;
  /** Set by SIGINT / SIGTERM. */
  interrupted: { signal?: Deno.Signal; child?: Deno.ChildProcess };
}

async function runOne(nbPath: string, ctx: RunContext): Promise<Result> {
  const { py, outDir, profile, timeout, html, view } = ctx;
  const name = basename(nbPath, ".ipynb");
  const out = join(outDir, `${name}.ipynb`);
  const started = Date.now();
  const t0 = performance.now();
  console.log(`\n=== ${name} (profile ${profile}) ===`);
  const args = [nbPath, out, "--timeout", String(timeout), "--cwd", join(root, "notebooks"), "--events"];
  view.notebookStart(name);
  let run = await runNbrun(args, ctx);
  if (run.code === 4 && !ctx.interrupted.signal) {
    // The runner failed, or the kernel's output stream broke (not a cell error; said above). Once more.
    view.print(
      `  ${name}: the run broke outside the notebook's cells (said above); running ${name} once more`,
    );
    view.notebookStart(name);
    run = await runNbrun(args, ctx);
  }
  view.notebookEnd();
  const seconds = (performance.now() - t0) / 1000;
  // nbrun's own lines ("nbrun: ...") say why a run failed or what it dropped; the summary repeats them.
  const said = run.stderrLines.filter((l) => l.startsWith("nbrun: ")).map((l) => l.slice(7));
  if (ctx.interrupted.signal || run.code === 130) {
    return { name, ok: false, seconds, interrupted: true, message: said.at(-1) ?? "interrupted" };
  }
  if (run.code !== 0) {
    const why = said.length ? `: ${said[said.length - 1]}` : "";
    return {
      name,
      ok: false,
      seconds,
      message: `execution failed (exit ${run.code})${why}; executed copy: ${out}`,
    };
  }
  // Files the notebook promised to write.
  const nb = JSON.parse(await Deno.readTextFile(nbPath));
  // Paths may name the study's report folder as "{profile}".
  const expected: string[] = (nb.metadata?.cnnvit?.outputs ?? []).map((p: string) =>
    p.replaceAll("{profile}", ctx.reportTag)
  );
  const missing: string[] = [];
  for (const rel of expected) {
    try {
      const st = await Deno.stat(join(root, rel));
      if ((st.mtime?.getTime() ?? 0) < started - 2000) missing.push(`${rel} (not rewritten by this run)`);
    } catch {
      missing.push(rel);
    }
  }
  if (missing.length) return { name, ok: false, seconds, message: `did not produce: ${missing.join(", ")}` };
  if (html) {
    const r = await new Deno.Command(py, {
      args: ["-m", "nbconvert", "--to", "html", "--log-level", "WARN", "--output-dir", outDir, out],
      stdout: "null",
    }).output();
    if (!r.success) console.warn(`  (HTML export of ${name} failed; the executed .ipynb is at ${out})`);
    else {
      // Figures in the notebook load plotly.js by URL (outputs must stay small); the HTML copy inlines it.
      const { inlinePlotlyIntoHtml } = await importLater<typeof import("../lib/viz/figure.ts")>(
        new URL("../lib/viz/figure.ts", import.meta.url),
      );
      const { writeFileAtomic } = await importLater<typeof import("../lib/util/mod.ts")>(
        new URL("../lib/util/mod.ts", import.meta.url),
      );
      const htmlPath = join(outDir, `${name}.html`);
      await writeFileAtomic(htmlPath, inlinePlotlyIntoHtml(await Deno.readTextFile(htmlPath)));
    }
  }
  const dropped = said.filter((l) => l.includes("dropped"));
  return {
    name,
    ok: true,
    seconds,
    cells: [...run.cells],
    message: dropped.length ? dropped[dropped.length - 1] : undefined,
  };
}

/** Splits a byte stream into lines and calls `f` on each (the last, unterminated line included). */
async function eachLine(stream: ReadableStream<Uint8Array>, f: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      f(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  if (buf) f(buf);
}

/**
 * Runs tools/nbrun.py: its progress events (stdout) go to the view, its other lines through as they come;
 * its stderr lines are also kept for the summary.
 */
async function runNbrun(
  args: string[],
  ctx: RunContext,
): Promise<{ code: number; stderrLines: string[]; cells: number[] }> {
  const child = new Deno.Command(ctx.py, {
    args: [join(root, "tools/nbrun.py"), ...args],
    env: { CNNVIT_PROFILE: ctx.profile, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  ctx.interrupted.child = child;
  const stderrLines: string[] = [];
  const view = ctx.view;
  await Promise.all([
    eachLine(child.stdout, (line) => {
      const ev = parseNbrunEvent(line);
      if (ev) view.event(ev);
      else view.print(line);
    }),
    eachLine(child.stderr, (line) => {
      stderrLines.push(line);
      // The kernel says this at every start; it is not news.
      if (!line.includes('"deno jupyter" is unstable')) view.print(line);
    }),
  ]);
  const { code } = await child.status;
  ctx.interrupted.child = undefined;
  return { code, stderrLines, cells: [...view.cellSeconds] };
}

/** Which notebooks of a `--state` file finished, for `--resume`. */
interface RunState {
  profile: string;
  reportTag: string;
  done: string[];
}

async function readState(path: string): Promise<RunState | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`--state: cannot read "${path}" (${(e as Error).message})`);
  }
}

async function main(): Promise<number> {
  const { values, positionals } = parseCli(Deno.args, {
    profile: { type: "string" },
    timeout: { type: "string" },
    "no-html": { type: "boolean", default: false },
    out: { type: "string", default: "results/notebooks" },
    state: { type: "string" },
    resume: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  }, true);
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const profile = usage(() =>
    parseProfile(values.profile ?? Deno.env.get("CNNVIT_PROFILE") ?? "quick", "--profile")
  );
  // A cpu-profile cell can train for an hour or more (notebook 06 trains three seeds in one cell).
  const timeout = intFlag("timeout", values.timeout ?? String(profile === "quick" ? 1200 : 14400), 1);
  if (values.resume && !values.state) {
    throw new CliError("--resume needs --state FILE (where finished notebooks are recorded)");
  }
  const outDir = resolve(root, values.out!);
  const all = [...Deno.readDirSync(join(root, "notebooks"))]
    .filter((e) => e.isFile && e.name.endsWith(".ipynb"))
    .map((e) => e.name)
    .sort();
  const chosen = positionals.length ? all.filter((n) => positionals.some((p) => n.includes(p))) : all;
  if (chosen.length === 0) {
    throw new CliError(`no notebook matches ${JSON.stringify(positionals)} (have: ${all.join(", ")})`);
  }
  await ensureNpmPackages(root, "notebooks");
  const { studyPlan } = await importLater<typeof import("../lib/experiment/study.ts")>(
    new URL("../lib/experiment/study.ts", import.meta.url),
  );
  const { writeFileAtomic } = await importLater<typeof import("../lib/util/mod.ts")>(
    new URL("../lib/util/mod.ts", import.meta.url),
  );
  const reportTag = basename(studyPlan(profile).reportDir);
  const statePath = values.state ? resolve(root, values.state) : undefined;
  let state: RunState = { profile, reportTag, done: [] };
  let todo = chosen;
  if (statePath && values.resume) {
    const old = await readState(statePath);
    if (old && old.reportTag === reportTag && Array.isArray(old.done)) state = { ...old, done: old.done };
    const skipped = chosen.filter((n) => state.done.includes(basename(n, ".ipynb")));
    todo = chosen.filter((n) => !skipped.includes(n));
    console.log(
      skipped.length
        ? `--resume: skipping ${skipped.map((n) => basename(n, ".ipynb")).join(", ")} (finished earlier)`
        : "--resume: no notebook of this run finished earlier; running all",
    );
  }
  // A new run (not --resume) starts its record afresh.
  if (statePath && !values.resume) await writeFileAtomic(statePath, JSON.stringify(state, null, 2) + "\n");
  const py = await findPython();
  await ensureKernel(py);
  const timingsAll: Timings = await readTimings(outDir);
  const names = todo.map((n) => basename(n, ".ipynb"));
  const last = timingsAll[reportTag];
  const tty = Deno.stdout.isTerminal();
  const view = new NotebookProgressView({ tty, plan: { notebooks: names, timings: last } });
  if (names.length) {
    const known = names.filter((n) => last?.[n]);
    const total = known.reduce((a, n) => a + last![n].seconds, 0);
    console.log(
      known.length === names.length
        ? `notebooks: ${names.join(", ")}; the last run of profile ${reportTag} took ${
          Math.round(total / 60)
        } min`
        : `notebooks: ${names.join(", ")}; no earlier run of profile ${reportTag} to estimate the time from`,
    );
  }
  const ctx: RunContext = {
    py,
    outDir,
    profile,
    reportTag,
    timeout,
    html: !values["no-html"],
    view,
    interrupted: {},
  };
  const onSignal = (signal: Deno.Signal) => () => {
    if (ctx.interrupted.signal) return;
    ctx.interrupted.signal = signal;
    view.print(`\n${signal}: stopping the running notebook's kernel…`);
    try {
      ctx.interrupted.child?.kill("SIGINT");
    } catch { /* already gone */ }
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((s) => [s, onSignal(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  const clock = tty ? setInterval(() => view.redraw(), 1000) : undefined;
  const results: Result[] = [];
  try {
    for (const nb of todo) {
      const r = await runOne(join(root, "notebooks", nb), ctx);
      results.push(r);
      if (r.ok) {
        // Times for the next run's ETA, and the notebook as done for --resume.
        const t = await readTimings(outDir);
        t[reportTag] = { ...t[reportTag], [r.name]: { seconds: r.seconds, cells: r.cells ?? [] } };
        await writeFileAtomic(join(outDir, "timings.json"), JSON.stringify(t, null, 2) + "\n");
        if (statePath) {
          state.done = [...new Set([...state.done, r.name])];
          await writeFileAtomic(statePath, JSON.stringify(state, null, 2) + "\n");
        }
      }
      if (r.interrupted) break;
    }
  } finally {
    if (clock !== undefined) clearInterval(clock);
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
  console.log("\nNotebook                      result   seconds");
  for (const r of results) {
    console.log(
      `${r.name.padEnd(30)}${(r.ok ? "ok" : r.interrupted ? "STOPPED" : "FAILED").padEnd(9)}${
        r.seconds.toFixed(1).padStart(7)
      }`,
    );
    if (r.message) console.log(`  ${r.message}`);
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(`notebooks: ${results.length - failed} passed, ${failed} failed`);
  if (ctx.interrupted.signal) {
    const left = names.filter((n) => !results.some((r) => r.ok && r.name === n));
    console.log(
      `interrupted (${ctx.interrupted.signal}); not finished: ${
        left.join(", ")
      }. Training runs continue from ` +
        "their last checkpoint when the notebook runs again" +
        (statePath ? "; --resume skips the notebooks that finished." : "."),
    );
    return 130;
  }
  return failed ? 1 : 0;
}

if (import.meta.main) {
  try {
    await runCli("run_notebooks", main);
  } catch (e) {
    console.error(`run_notebooks: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
