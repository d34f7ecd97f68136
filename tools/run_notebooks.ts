/**
 * `deno task notebooks`: executes every `notebooks/*.ipynb` headlessly with the Deno Jupyter kernel, in
 * order, through `tools/nbrun.py` (nbclient that keeps reading outputs the Deno kernel sends after
 * `idle`). Executed copies go to `results/notebooks/` (ignored by git) as .ipynb and .html; the sources stay
 * without outputs. A cell error or timeout fails the run with the notebook and cell named. A notebook can
 * declare the files it must produce in its metadata (`"cnnvit": {"outputs": ["results/study/{profile}/..."]}`);
 * the runner checks they were written during the run.
 *
 * ```
 * deno task notebooks [--profile quick|cpu|full] [--timeout SECONDS] [--no-html] [NAME_FILTER ...]
 * ```
 * The profile also comes from `CNNVIT_PROFILE` (default `quick` here: this task is the headless check;
 * `deno task compare` is the study).
 */
import { parseArgs } from "node:util";
import { basename, join, resolve } from "node:path";
import { parseProfile, type ProfileName } from "../lib/profile.ts";
import { inlinePlotlyIntoHtml } from "../lib/viz/figure.ts";
import { writeFileAtomic } from "../lib/util/mod.ts";

const root = resolve(new URL("..", import.meta.url).pathname);

const HELP = `Usage: deno task notebooks [options] [name-filter ...]

Executes notebooks/*.ipynb with the Deno kernel, writes executed copies to results/notebooks/.

Options:
  --profile NAME   quick | cpu | full (default: $CNNVIT_PROFILE or quick)
  --timeout SEC    per-cell timeout in seconds (default 1200); a timeout fails the notebook
  --no-html        do not export HTML copies
  --out DIR        where executed copies go (default results/notebooks)
  -h, --help       this text`;

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
}

async function runOne(
  py: string,
  nbPath: string,
  outDir: string,
  profile: ProfileName,
  timeout: number,
  html: boolean,
): Promise<Result> {
  const name = basename(nbPath, ".ipynb");
  const out = join(outDir, `${name}.ipynb`);
  const started = Date.now();
  const t0 = performance.now();
  console.log(`\n=== ${name} (profile ${profile}) ===`);
  const args = [nbPath, out, "--timeout", String(timeout), "--cwd", join(root, "notebooks")];
  let run = await runNbrun(py, args, profile);
  if (run.code === 4) {
    // The runner failed, or the kernel's output stream broke (not a cell error; said above). Once more.
    console.log(
      `  ${name}: the run broke outside the notebook's cells (said above); running ${name} once more`,
    );
    run = await runNbrun(py, args, profile);
  }
  const seconds = (performance.now() - t0) / 1000;
  // nbrun's own lines ("nbrun: ...") say why a run failed or what it dropped; the summary repeats them.
  const said = run.stderrLines.filter((l) => l.startsWith("nbrun: ")).map((l) => l.slice(7));
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
  // Paths may name the profile as "{profile}".
  const expected: string[] = (nb.metadata?.cnnvit?.outputs ?? []).map((p: string) =>
    p.replaceAll("{profile}", profile)
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
      const htmlPath = join(outDir, `${name}.html`);
      await writeFileAtomic(htmlPath, inlinePlotlyIntoHtml(await Deno.readTextFile(htmlPath)));
    }
  }
  const dropped = said.filter((l) => l.includes("dropped"));
  return { name, ok: true, seconds, message: dropped.length ? dropped[dropped.length - 1] : undefined };
}

/**
 * Runs tools/nbrun.py, passing its output through as it comes, and keeps its stderr lines for the summary.
 */
async function runNbrun(
  py: string,
  args: string[],
  profile: ProfileName,
): Promise<{ code: number; stderrLines: string[] }> {
  const child = new Deno.Command(py, {
    args: [join(root, "tools/nbrun.py"), ...args],
    env: { CNNVIT_PROFILE: profile, NO_COLOR: "1" },
    stdout: "inherit",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stderr) {
    await Deno.stderr.write(chunk);
    text += decoder.decode(chunk, { stream: true });
  }
  const { code } = await child.status;
  return { code, stderrLines: text.split("\n") };
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      profile: { type: "string" },
      timeout: { type: "string", default: "1200" },
      "no-html": { type: "boolean", default: false },
      out: { type: "string", default: "results/notebooks" },
      help: { type: "boolean", short: "h", default: false },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const profile = parseProfile(values.profile ?? Deno.env.get("CNNVIT_PROFILE") ?? "quick", "--profile");
  const timeout = Number(values.timeout);
  if (!Number.isInteger(timeout) || timeout <= 0) {
    throw new Error(`--timeout: expected a positive whole number of seconds, got "${values.timeout}"`);
  }
  const outDir = resolve(root, values.out!);
  const all = [...Deno.readDirSync(join(root, "notebooks"))]
    .filter((e) => e.isFile && e.name.endsWith(".ipynb"))
    .map((e) => e.name)
    .sort();
  const chosen = positionals.length ? all.filter((n) => positionals.some((p) => n.includes(p))) : all;
  if (chosen.length === 0) {
    throw new Error(`no notebook matches ${JSON.stringify(positionals)} (have: ${all.join(", ")})`);
  }
  const py = await findPython();
  await ensureKernel(py);
  const results: Result[] = [];
  for (const nb of chosen) {
    results.push(await runOne(py, join(root, "notebooks", nb), outDir, profile, timeout, !values["no-html"]));
  }
  console.log("\nNotebook                      result   seconds");
  for (const r of results) {
    console.log(
      `${r.name.padEnd(30)}${(r.ok ? "ok" : "FAILED").padEnd(9)}${r.seconds.toFixed(1).padStart(7)}`,
    );
    if (r.message) console.log(`  ${r.message}`);
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(`notebooks: ${results.length - failed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`run_notebooks: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
