/**
 * Results you can trust: the dirty flag of `run.json`, study run folders keyed by dataset, study tables read
 * only from the plan's own variants, and the training runs' provenance carried into a result.
 */
import { join } from "node:path";
import {
  loadStudyRows,
  resolveAutoDataset,
  runDir,
  studyPlan,
  studyRunDirs,
  trainingProvenance,
} from "../lib/experiment/study.ts";
import { identityDifferences } from "../lib/experiment/mod.ts";
import { collectRunInfo } from "../lib/report/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";

async function git(cwd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("git", { args, cwd, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test("collectRunInfo() marks a tree dirty for code changes but not for changes under results/", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provenance_git_" });
  const cwd = Deno.cwd();
  try {
    await Deno.mkdir(join(dir, "results"));
    await Deno.mkdir(join(dir, "lib"));
    await Deno.writeTextFile(join(dir, "results", "table.md"), "old\n");
    await Deno.writeTextFile(join(dir, "lib", "code.ts"), "export const a = 1;\n");
    await git(dir, "init", "-q");
    await git(dir, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".");
    await git(dir, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init");
    Deno.chdir(dir);
    assertEquals((await collectRunInfo()).git.dirty, false);
    // A notebook rewriting its own results does not make the code dirty...
    await Deno.writeTextFile(join(dir, "results", "table.md"), "new\n");
    assertEquals((await collectRunInfo()).git.dirty, false);
    // ...a change to the code does, staged or not.
    await Deno.writeTextFile(join(dir, "lib", "code.ts"), "export const a = 2;\n");
    assertEquals((await collectRunInfo()).git.dirty, true);
    await git(dir, "add", "lib/code.ts");
    assertEquals((await collectRunInfo()).git.dirty, true);
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("studyPlan() keys its run folders by the dataset, also when asked for auto", () => {
  const auto = studyPlan("quick", { dataset: "auto" });
  assertEquals(auto.dataset, resolveAutoDataset());
  assert(auto.runsDir.endsWith(`study_quick_${auto.dataset}`), auto.runsDir);
  const fm = studyPlan("quick", { dataset: "fashion-mnist" });
  const cifar = studyPlan("quick", { dataset: "cifar10" });
  assert(fm.runsDir !== cifar.runsDir, "two datasets never share a runs folder");
  assertEquals(cifar.dataset, "cifar10");
});

Deno.test("resolveAutoDataset() picks CIFAR-10 only when its files are there, never by downloading", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assertEquals(resolveAutoDataset(dir), "fashion-mnist");
    await Deno.mkdir(join(dir, "cifar-10"));
    await Deno.writeFile(join(dir, "cifar-10", "cifar-10-binary.tar.gz"), new Uint8Array(4));
    assertEquals(resolveAutoDataset(dir), "cifar10");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadStudyRows() reads only the variants of the current plan and names missing ones", async () => {
  const root = await Deno.makeTempDir();
  try {
    const plan = studyPlan("quick", { dataset: "synthetic", runsDir: root });
    const dirs = studyRunDirs(plan);
    assertEquals(dirs.length, 7); // resnet18, vit, 2 off-the-shelf controls, hybrid, 2 fine-tuned controls
    await assertRejects(() => loadStudyRows(plan), Error, "7 variant(s)");
    for (const [i, d] of dirs.entries()) {
      await Deno.mkdir(d, { recursive: true });
      await Deno.writeTextFile(join(d, "metrics.json"), JSON.stringify({ model: `m${i}`, accuracy: 0.5 }));
    }
    // A stale variant of an earlier plan (another keep ratio) stays out of the table.
    const stale = runDir(plan, "random", 0.9);
    await Deno.mkdir(stale, { recursive: true });
    await Deno.writeTextFile(join(stale, "metrics.json"), JSON.stringify({ model: "stale", accuracy: 1 }));
    const rows = await loadStudyRows(plan);
    assertEquals(rows.length, 7);
    assert(rows.every((r) => r.model !== "stale"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("trainingProvenance() copies each training run's run.json and lists the commits", async () => {
  const root = await Deno.makeTempDir();
  try {
    const run = (commit: string) =>
      JSON.stringify({ createdAt: "2026-12-01T00:00:00Z", git: { commit, dirty: false } });
    await Deno.mkdir(join(root, "study", "vit"), { recursive: true });
    await Deno.mkdir(join(root, "study_synthetic", "vit"), { recursive: true });
    await Deno.mkdir(join(root, "study", "random_offshelf_k0.5"), { recursive: true });
    await Deno.writeTextFile(join(root, "study", "vit", "run.json"), run("a".repeat(40)));
    await Deno.writeTextFile(join(root, "study_synthetic", "vit", "run.json"), run("b".repeat(40)));
    const p = await trainingProvenance([
      join(root, "study", "vit"),
      join(root, "study_synthetic", "vit"),
      join(root, "study", "random_offshelf_k0.5"), // evaluated only: no run.json
      join(root, "study", "vit"),
    ]);
    assertEquals(Object.keys(p.files).sort(), [
      "training_runs/study/vit.run.json",
      "training_runs/study_synthetic/vit.run.json",
    ]);
    assertEquals(p.commits.sort(), ["a".repeat(40), "b".repeat(40)]);
    assertEquals(p.runs[join(root, "study", "vit")].dirty, false);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("identityDifferences() lists nested differences as path: old → new", () => {
  assertEquals(identityDifferences({ a: 1, b: { c: 2, d: [1] } }, { a: 1, b: { c: 3, d: [1] } }), [
    "b.c: 2 → 3",
  ]);
  assertEquals(identityDifferences({ a: 1 }, { a: 1, e: "x" }), ['e: (absent) → "x"']);
  assertEquals(identityDifferences({ a: undefined }, {}), []);
});

Deno.test(
  "recordRunMetrics() and scorerProbe() refuse a run's model on another test subset than the run's own",
  async () => {
    const { TINY_RUN, withTinyRuns } = await import("./_tiny_run.ts");
    const { loadDataset } = await import("../lib/data/mod.ts");
    const { recordRunMetrics, scorerProbe } = await import("../lib/experiment/study.ts");
    await withTinyRuns("eval_set_test_", async (runTraining, root) => {
      const out = join(root, "resnet18");
      const r = await runTraining({ ...TINY_RUN, model: "resnet18", seed: 0, out, keepModel: true });
      // Another seed's subset: the same size and dataset, other images (the equal-cost notebook's old bug).
      const other = await loadDataset("synthetic", {
        split: "test",
        subset: TINY_RUN.evalSubset,
        subsetSeed: 2,
        log: false,
      });
      try {
        const options = {
          label: "ResNet18",
          strategy: "none",
          keep: 1,
          training: "scratch",
          benchBatch: 8,
        } as const;
        await assertRejects(
          () => recordRunMetrics(r.model!, other, { ...options, measureSpeed: false, run: out }),
          Error,
          "is not the evaluation set of the run",
        );
        await assertRejects(
          () => scorerProbe(out, out, other, 0.5),
          Error,
          "is not the evaluation set of the run",
        );
        const { row } = await recordRunMetrics(r.model!, r.evalDataset!, {
          ...options,
          measureSpeed: false,
          run: out,
        });
        assertEquals(row.run, out);
        assertEquals(row.accuracy, r.result.accuracy, "the run's own set gives the run's own accuracy");
      } finally {
        r.model!.dispose();
      }
    });
  },
);
