/**
 * The command-line tools as a user meets them: bad flags give one clear line and exit 2 (compare,
 * notebooks, bench); the progress view of headless notebook runs (terminal and log forms, ETA from the last
 * run's times); the verdict `deno task compare` prints, read from notebook 04's committed exports.
 */
import { join, resolve } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import {
  formatDuration,
  NotebookProgressView,
  parseNbrunEvent,
  shortBar,
} from "../tools/notebook_progress.ts";
import { formatSeedSummary, formatStudyVerdict, readStudyVerdict } from "../tools/study_verdict.ts";
import { CliError, intFlag, parseCli } from "../tools/cli.ts";

const root = resolve(new URL("..", import.meta.url).pathname);

async function tool(script: string, args: string[]) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(root, "tools", script), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

const badFlags: [string, string[], string][] = [
  ["compare.ts", ["--bogus"], `compare: Unknown option '--bogus'`],
  ["compare.ts", ["--seeds", "0"], `compare: --seeds "0" is not an integer ≥ 1`],
  ["compare.ts", ["--only", "07"], `compare: --only: "07" names no notebook`],
  ["compare.ts", ["--profile", "huge"], `compare: --profile: unknown profile "huge"`],
  ["run_notebooks.ts", ["--timeout", "soon"], `run_notebooks: --timeout "soon" is not an integer ≥ 1`],
  ["run_notebooks.ts", ["--resume"], "run_notebooks: --resume needs --state FILE"],
  ["bench.ts", ["--bogus"], `bench: Unknown option '--bogus'`],
  ["bench.ts", ["--batch", "0"], `bench: --batch "0" is not an integer ≥ 1`],
  ["selection_probe.ts", [], "selection_probe: --run is required"],
  [
    "selection_probe.ts",
    ["--run", "x", "--train", "oracle"],
    `selection_probe: --train "oracle" is not "cam" or "mask"`,
  ],
  [
    "selection_probe.ts",
    ["--run", "x", "--keeps", "0.5,1"],
    `selection_probe: --keeps: "1" is not a ratio in (0, 1)`,
  ],
  [
    "selection_probe.ts",
    ["--run", "x", "--train", "cam", "--stage1-epochs", "0"],
    `selection_probe: --stage1-epochs "0" is not an integer ≥ 1`,
  ],
  [
    "selection_probe.ts",
    ["--run", "x", "--stage1-epochs", "8"],
    "selection_probe: --stage1-epochs needs --train",
  ],
  ["synthetic_ablation.ts", ["--seed", "x"], `synthetic_ablation: --seed "x" is not an integer ≥ 0`],
  [
    "synthetic_ablation.ts",
    ["--profile", "full"],
    `synthetic_ablation: --profile "full" is not cpu or quick`,
  ],
  [
    "synthetic_ablation.ts",
    ["--dataset", "cifar"],
    `synthetic_ablation: --dataset "cifar" is not synthetic or fashion-mnist`,
  ],
  [
    "synthetic_ablation.ts",
    ["--steps", "a0_today,a9"],
    `synthetic_ablation: --steps: "a9" is not one of a0_today`,
  ],
  ["synthetic_study.ts", ["--seeds", "0,x"], `synthetic_study: --seeds: "x" is not an integer ≥ 0`],
  ["synthetic_study.ts", ["--keeps", "0"], `synthetic_study: --keeps: "0" is not a ratio in (0, 1)`],
  ["synthetic_study.ts", ["--profile", "full"], `synthetic_study: --profile "full" is not cpu or quick`],
  [
    "synthetic_study.ts",
    ["--merge", "/nonexistent"],
    `synthetic_study: --merge /nonexistent: no run.json there; expected the --out folder of an earlier run`,
  ],
  [
    "synthetic_study.ts",
    ["--dataset", "pcam"],
    `synthetic_study: --dataset "pcam" is not synthetic or fashion-mnist`,
  ],
  [
    "selection_probe.ts",
    ["--run", "/nonexistent"],
    `selection_probe: --run "/nonexistent": no readable identity.json`,
  ],
];
for (const [script, args, message] of badFlags) {
  Deno.test(`${script} ${args.join(" ")} exits 2 with a clear message and no stack trace`, async () => {
    const r = await tool(script, args);
    assertEquals(r.code, 2, r.stderr);
    assert(r.stderr.includes(message), r.stderr);
    assert(r.stderr.includes("(see --help)"), r.stderr);
    assert(!r.stderr.includes("    at "), `stack trace printed:\n${r.stderr}`);
  });
}

Deno.test("parseCli() and intFlag() turn bad input into CliErrors that quote it", () => {
  let err: unknown;
  try {
    parseCli(["--seeds"], { seeds: { type: "string" } });
  } catch (e) {
    err = e;
  }
  assert(err instanceof CliError && err.message.includes("--seeds"), String(err));
  assertEquals(intFlag("seeds", "3", 1), 3);
  for (const bad of ["", "1.5", "-1", "x"]) {
    try {
      intFlag("seeds", bad, 0);
      throw new Error(`accepted "${bad}"`);
    } catch (e) {
      assert(e instanceof CliError && e.message.includes(`"${bad}"`), String(e));
    }
  }
});

Deno.test("parseNbrunEvent() reads nbrun's event lines and ignores every other line", () => {
  assertEquals(parseNbrunEvent('@nbrun {"e": "cell", "n": 5, "of": 14}'), { e: "cell", n: 5, of: 14 });
  assertEquals(parseNbrunEvent("nbrun: cell 3 failed"), undefined);
  assertEquals(parseNbrunEvent("@nbrun {broken"), undefined);
  assertEquals(formatDuration(372), "6m12s");
  assertEquals(formatDuration(4000), "1h06m");
  assertEquals(
    shortBar("train epoch 2/3 40% | 400/1000 img | 85.0 img/s | ETA 7s | elapsed 5s | loss 1.2"),
    "train epoch 2/3 40% · 400/1000 img · 85.0 img/s · ETA 7s · loss 1.2",
  );
});

/** A view with a fake clock and a captured screen. */
function fakeView(tty: boolean, timings?: Record<string, { seconds: number; cells: number[] }>) {
  let t = 0;
  const out: string[] = [];
  const view = new NotebookProgressView({
    tty,
    write: (s) => out.push(s),
    columns: () => 200,
    now: () => t,
    logEvery: 30,
    plan: { notebooks: ["01_resnet18", "02_vit_small"], timings },
  });
  return { view, out, tick: (s: number) => (t += s) };
}

Deno.test("NotebookProgressView on a terminal redraws one line: notebook, cell, time, bar and ETA", () => {
  const { view, out, tick } = fakeView(true, {
    "01_resnet18": { seconds: 100, cells: [10, 80, 10] },
    "02_vit_small": { seconds: 200, cells: [200] },
  });
  view.notebookStart("01_resnet18");
  view.event({ e: "start", cells: 3 });
  view.event({ e: "cell", n: 1, of: 3 });
  view.event({ e: "done", n: 1, seconds: 10 });
  tick(10);
  view.event({ e: "cell", n: 2, of: 3 });
  tick(20);
  view.event({
    e: "bar",
    id: "p",
    text: "train epoch 1/3 50% | 480/960 img | 40.0 img/s | ETA 12s | elapsed 12s",
  });
  const last = out.at(-1)!;
  assert(last.startsWith("\r\x1b[2K"), JSON.stringify(last));
  // Cell 2 of the last run took 80 s (20 done), then 10 s for cell 3 and 200 s for the next notebook.
  assertEquals(
    last.slice(5),
    "01_resnet18 · cell 2/3 · 30s · ETA all 4m30s · train epoch 1/3 50% · 480/960 img · 40.0 img/s · ETA 12s",
  );
  // Printed text goes above the status line, which is drawn again after it.
  view.event({ e: "out", name: "stdout", text: "wrote results/x\n" });
  assertEquals(out.slice(-3), ["\r\x1b[2K", "  │ wrote results/x\n", out.at(-1)!]);
  assert(out.at(-1)!.includes("cell 2/3"));
  assert(!out.some((s) => s.includes("\n") && s.includes("cell 2/3")), "the status line never scrolls");
});

Deno.test("NotebookProgressView fits a narrow terminal: the bar's extra fields go first, then its label's parenthesis", () => {
  let cols = 125;
  const out: string[] = [];
  const view = new NotebookProgressView({
    tty: true,
    write: (s) => out.push(s),
    columns: () => cols,
    now: () => 0,
  });
  view.notebookStart("03_hybrid");
  view.event({ e: "cell", n: 2, of: 10 });
  view.event({
    e: "bar",
    id: "p",
    text:
      "stage 2 (ViT + selection, CNN frozen) epoch 1/1 47% | 448/960 img | 30.1 img/s | ETA 17s | elapsed 15s | " +
      "loss 2.1 | acc 0.2 | lr 0.0005",
  });
  assertEquals(
    out.at(-1)!.slice(5),
    "03_hybrid · cell 2/10 · 0s · stage 2 (ViT + selection, CNN frozen) epoch 1/1 47% · 448/960 img · 30.1 img/s · ETA 17s",
  );
  cols = 90;
  view.redraw();
  assertEquals(
    out.at(-1)!.slice(5),
    "03_hybrid · cell 2/10 · 0s · stage 2 epoch 1/1 47% · 448/960 img · 30.1 img/s · ETA 17s",
  );
  cols = 40;
  view.redraw();
  assertEquals(out.at(-1)!.length, 5 + 39);
  assert(out.at(-1)!.endsWith("…"));
});

Deno.test("NotebookProgressView off a terminal prints plain lines: one per cell, a bar every 30 s and at 100%", () => {
  const { view, out, tick } = fakeView(false);
  view.notebookStart("02_vit_small");
  view.event({ e: "cell", n: 4, of: 9 });
  const bar = (pct: number) => ({
    e: "bar" as const,
    id: "p",
    text: `train epoch 1/2 ${pct}% | x img | ETA 1s`,
  });
  view.event(bar(10));
  tick(5);
  view.event(bar(20)); // too soon: not printed
  tick(30);
  view.event(bar(60));
  view.event(bar(100));
  view.event(bar(100)); // the final state once only
  assertEquals(out, [
    "[02_vit_small · cell 4/9 · 0s]\n",
    "  02_vit_small · train epoch 1/2 10% · x img · ETA 1s\n",
    "  02_vit_small · train epoch 1/2 60% · x img · ETA 1s\n",
    "  02_vit_small · train epoch 1/2 100% · x img · ETA 1s\n",
  ]);
  assert(out.every((s) => !s.includes("\r") && !s.includes("\x1b")), "no terminal codes in logs");
});

Deno.test("readStudyVerdict() reads the headline and claims of the committed cpu study", async () => {
  const v = await readStudyVerdict(join(root, "results/study/cpu"));
  const table = JSON.parse(
    await Deno.readTextFile(join(root, "results/study/cpu/04_compare_models/results.json")),
  );
  assertEquals(v.rows.map((r) => r.role), ["ResNet18", "ViT", "best hybrid", "best control"]);
  const rows: { model: string; strategy: string; keepRatio?: number; accuracy: number }[] = table.rows;
  const atMain = rows.filter((r) => r.keepRatio === v.mainKeep);
  const best = (f: (r: (typeof rows)[number]) => boolean) =>
    Math.max(...atMain.filter(f).map((r) => r.accuracy));
  assertEquals(v.rows[2].accuracy, best((r) => r.strategy === "cnn"));
  assertEquals(v.rows[3].accuracy, best((r) => r.strategy !== "cnn" && r.strategy !== "none"));
  assertEquals(v.rows[1].accuracy, rows.find((r) => r.model === "ViT" && r.strategy === "none")!.accuracy);
  const claims = (await Deno.readTextFile(join(root, "results/study/cpu/04_compare_models/claims.md")))
    .split("\n").filter((l) => l.startsWith("- "));
  assertEquals(v.claims.length, claims.length);
  const text = formatStudyVerdict(v).join("\n");
  assert(text.includes(`${(100 * v.rows[0].accuracy).toFixed(2)} [`), text);
  for (const c of claims) assert(text.includes(c.slice(2)), `claim missing: ${c}`);
  assert(text.includes("04_compare_models/results.md"), text);
  const seeds = formatSeedSummary([v, {
    ...v,
    rows: v.rows.map((r) => ({ ...r, accuracy: r.accuracy + 0.02 })),
  }]);
  assert(seeds[1].includes(`${(100 * v.rows[0].accuracy + 1).toFixed(2)} ± 1.41`), seeds.join("\n"));
});

Deno.test("readStudyVerdict() names the missing file when notebook 04 has not run", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await readStudyVerdict(dir);
    throw new Error("no error");
  } catch (e) {
    assert((e as Error).message.includes("no results.json in"), String(e));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("studyPlan() takes the seed from CNNVIT_SEED (compare --seeds) and keeps seed 0's folders", async () => {
  const { resolveAutoDataset, studyPlan } = await import("../lib/experiment/study.ts");
  const auto = resolveAutoDataset(); // run folders are always keyed by the dataset
  const before = Deno.env.get("CNNVIT_SEED");
  try {
    Deno.env.delete("CNNVIT_SEED");
    const p0 = studyPlan("quick", { dataset: "auto" });
    assertEquals([p0.seed, p0.reportDir, p0.runsDir], [
      0,
      join("results", "study", "quick"),
      join("results", "runs", `study_quick_${auto}`),
    ]);
    Deno.env.set("CNNVIT_SEED", "2");
    const p2 = studyPlan("quick", { dataset: "fashion-mnist" });
    assertEquals([p2.seed, p2.reportDir], [2, join("results", "study", "quick_fashion-mnist_s2")]);
    assertEquals(
      studyPlan("quick", { dataset: "auto", seed: 1 }).runsDir,
      join("results", "runs", `study_quick_${auto}_s1`),
    );
    Deno.env.set("CNNVIT_SEED", "two");
    try {
      studyPlan("quick");
      throw new Error("accepted CNNVIT_SEED=two");
    } catch (e) {
      assert((e as Error).message.includes(`CNNVIT_SEED: "two"`), String(e));
    }
  } finally {
    if (before === undefined) Deno.env.delete("CNNVIT_SEED");
    else Deno.env.set("CNNVIT_SEED", before);
  }
});
