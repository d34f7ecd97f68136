import { join } from "node:path";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import type { EfficiencyReport } from "../lib/metrics/mod.ts";
import { Figure, JUPYTER_DISPLAY } from "../lib/viz/mod.ts";
import {
  classificationFields,
  collectRunInfo,
  efficiencyFields,
  type ResultRow,
  ResultTable,
  summarizeSeeds,
  tokenFields,
  writeReport,
} from "../lib/report/mod.ts";

const rows: ResultRow[] = [
  { model: "ViT-S", strategy: "none", accuracy: 0.8123, gmacs: 4.6, params: 22_050_000, tokenReduction: 0 },
  {
    model: "CNN-ViT",
    strategy: "cnn-topk",
    accuracy: 0.8051,
    accuracyCI: [0.79, 0.82],
    gmacs: 2.41,
    params: 33_200_000,
    tokenReduction: 0.5,
  },
];

Deno.test("ResultTable.toMarkdown() prints the study's columns in percent with units in the headers", () => {
  assertEquals(
    new ResultTable(rows).toMarkdown(),
    [
      "| Model | Strategy | Accuracy (%) | Accuracy 95% CI (%) | Token reduction (%) | GMACs | Params (M) |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
      "| ViT-S | none | 81.23 |  | 0.0 | 4.600 | 22.05 |",
      "| CNN-ViT | cnn-topk | 80.51 | [79.0, 82.0] | 50.0 | 2.410 | 33.20 |",
      "",
    ].join("\n"),
  );
});

Deno.test("ResultTable shows mean ± std over seeds, speed with batch and backend, and escapes pipes", () => {
  const t = new ResultTable([{
    model: "a|b",
    accuracy: 0.9,
    accuracyStd: 0.012,
    seeds: 3,
    throughputImgPerS: 123.45,
    batchSize: 32,
    backend: "wasm",
    peakMemoryMiB: 12.34,
    macroF1: 0.85,
  }], { caption: "Table 1" });
  const md = t.toMarkdown();
  assert(md.startsWith("Table 1\n\n"));
  assert(md.includes("| a\\|b | 90.00 ± 1.20 | 1.20 | 85.00 | 123.5 | 32 | wasm | 12.3 | 3 |"), md);
  assert(md.includes("Inference speed (img/s) | Batch | Backend | Peak tensor memory (MiB)"), md);
  assertThrows(() => new ResultTable([{ model: "x" } as unknown as ResultRow]), TypeError, "rows[0]");
  // efficiency-only rows (no accuracy yet) print a dash, and CSV leaves the cell empty
  const bench = new ResultTable([{ model: "m", accuracy: NaN, gmacs: 0.5 }]);
  assert(bench.toMarkdown().includes("| m | – | 0.500 |"), bench.toMarkdown());
  assertEquals(bench.toCsv().split("\n")[1], "m,,0.5");
});

Deno.test("ResultTable.toCsv() writes raw numbers and splits the interval into two columns", () => {
  const csv = new ResultTable(rows).toCsv();
  const recs = csv.trimEnd().split("\n").map((l) => l.split(","));
  assertEquals(recs[0], [
    "Model",
    "Strategy",
    "Accuracy (%)",
    "Accuracy 95% CI low (%)",
    "Accuracy 95% CI high (%)",
    "Token reduction (%)",
    "GMACs",
    "Params (M)",
  ]);
  assertEquals(recs[1], ["ViT-S", "none", "81.23", "", "", "0", "4.6", "22.05"]);
  assertEquals(recs[2], ["CNN-ViT", "cnn-topk", "80.51", "79", "82", "50", "2.41", "33.2"]);
  assert(new ResultTable([{ model: 'a, "b"', accuracy: 1 }]).toCsv().includes('"a, ""b"""'));
});

Deno.test("ResultTable.toJson() keeps raw fractions and names the columns", () => {
  const j = JSON.parse(new ResultTable(rows).toJson());
  assertEquals(j.rows, rows);
  assertEquals(j.columns.gmacs, "GMACs");
  assertEquals(j.columns.accuracy, "Accuracy (%)");
});

Deno.test("ResultTable displays in Jupyter as Markdown and HTML", () => {
  const t = new ResultTable(rows);
  const b = t[JUPYTER_DISPLAY]();
  assertEquals(b["text/markdown"], t.toMarkdown());
  assert(String(b["text/html"]).includes("<th>GMACs</th>"));
});

Deno.test("classificationFields() gives accuracy, a seeded CI, macro-F1 and AUC", () => {
  const labels = Array.from({ length: 100 }, (_, i) => i % 2);
  const preds = labels.map((y, i) => (i % 10 === 0 ? 1 - y : y));
  const probs = preds.map((p) => (p === 1 ? [0.2, 0.8] : [0.8, 0.2]));
  const a = classificationFields(labels, preds, { seed: 1, resamples: 200, probs });
  const b = classificationFields(labels, preds, { seed: 1, resamples: 200 });
  assertEquals(a.accuracy, 0.9);
  assertEquals(a.accuracyCI, b.accuracyCI);
  assert(a.accuracyCI![0] < 0.9 && a.accuracyCI![1] > 0.9);
  // class 0: P 1, R 0.8 -> F1 8/9; class 1: P 5/6, R 1 -> F1 10/11
  assert(Math.abs(a.macroF1! - (8 / 9 + 10 / 11) / 2) < 1e-12);
  // ties between the 10 flipped negatives and the positives count half: 0.8 + 0.5 * 0.2

  assertEquals(a.auc, 0.9);
  assertEquals(b.auc, undefined);
});

Deno.test("efficiencyFields() and tokenFields() fill the efficiency columns in their units", () => {
  const e = {
    params: 1000,
    gmacs: { total: 1.5, cnn: 0.5, vit: 1 },
    latency: { medianMs: 10, p95Ms: 12 },
    throughput: { imagesPerSecond: 200, batchSize: 16 },
    memory: { tfPeakBytes: 3 * 2 ** 20, tfNewBytes: 0, rssBytes: 100 * 2 ** 20, rssPeakBytes: null },
    backend: "cpu",
    batchSize: 16,
    imgSize: 32,
  } as unknown as EfficiencyReport;
  assertEquals(efficiencyFields(e), {
    gmacs: 1.5,
    gmacsCnn: 0.5,
    gmacsVit: 1,
    params: 1000,
    latencyMsMedian: 10,
    latencyMsP95: 12,
    throughputImgPerS: 200,
    peakMemoryMiB: 3,
    rssMiB: 100,
    backend: "cpu",
    batchSize: 16,
  });
  assertEquals(tokenFields(16, 64), { keptTokens: 16, tokenReduction: 0.75, keepRatio: 0.25 });
});

Deno.test("summarizeSeeds() averages numbers, reports the accuracy std and refuses mixed configurations", () => {
  const s = summarizeSeeds([
    { model: "m", accuracy: 0.8, gmacs: 1, accuracyCI: [0.7, 0.9] },
    { model: "m", accuracy: 0.84, gmacs: 1 },
  ]);
  assertEquals(s.model, "m");
  assert(Math.abs(s.accuracy - 0.82) < 1e-12);
  assert(Math.abs(s.accuracyStd! - Math.sqrt(0.0008)) < 1e-12);
  assertEquals([s.seeds, s.gmacs, s.accuracyCI], [2, 1, undefined]);
  assertEquals(summarizeSeeds([{ model: "m", accuracy: 0.5 }]).seeds, 1);
  assertThrows(
    () => summarizeSeeds([{ model: "a", accuracy: 1 }, { model: "b", accuracy: 1 }]),
    RangeError,
    "model",
  );
});

Deno.test("collectRunInfo() records commit, machine, versions and what the caller passes", async () => {
  const run = await collectRunInfo({
    experiment: "e",
    profile: "quick",
    seeds: [0, 1],
    config: { lr: 1e-3 },
    backend: "wasm",
  });
  assert(run.git.commit === null || /^[0-9a-f]{40}$/.test(run.git.commit), String(run.git.commit));
  assertEquals([run.experiment, run.profile, run.backend], ["e", "quick", "wasm"]);
  assertEquals(run.seeds, [0, 1]);
  assertEquals(run.config, { lr: 1e-3 });
  assert(run.machine.cores >= 1 && run.machine.cpuModel.length > 0);
  assertEquals(run.versions.tfjs, "4.22.0");
  assert(run.versions.deno.length > 0 && !Number.isNaN(Date.parse(run.createdAt)));
});

Deno.test("writeReport() replaces its own folder only and leaves no temporary folders", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = join(root, "exp");
    await Deno.mkdir(join(root, "other"));
    await Deno.writeTextFile(join(root, "other", "keep.txt"), "x");
    const run = await collectRunInfo({ experiment: "exp" });
    await writeReport(dir, { table: rows, run, files: { "stale.txt": "old" } });
    assert((await Deno.stat(join(dir, "stale.txt"))).isFile);
    const r = await writeReport(dir, {
      table: new ResultTable(rows),
      run,
      figures: { curve: new Figure([{ type: "scatter", x: [1], y: [1] }]) },
      figureFormats: ["json"],
      files: { "notes/readme.md": "# hi\n" },
    });
    assertEquals(r.files.sort(), [
      "figures/curve.json",
      "notes/readme.md",
      "results.csv",
      "results.json",
      "results.md",
      "run.json",
    ]);
    await assertRejects(() => Deno.stat(join(dir, "stale.txt")), Deno.errors.NotFound);
    assertEquals(await Deno.readTextFile(join(root, "other", "keep.txt")), "x");
    assertEquals(JSON.parse(await Deno.readTextFile(join(dir, "run.json"))).experiment, "exp");
    assertEquals(
      (await Deno.readTextFile(join(dir, "results.md"))).split("\n")[2].split("|")[1].trim(),
      "ViT-S",
    );
    const names = [];
    for await (const e of Deno.readDir(root)) names.push(e.name);
    assertEquals(names.sort(), ["exp", "other"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("writeReport() keeps the previous folder when writing fails", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = join(root, "exp");
    const run = await collectRunInfo();
    await writeReport(dir, { table: rows, run });
    await assertRejects(
      () => writeReport(dir, { table: rows, run, files: { "../escape.txt": "x" } }),
      RangeError,
      "expected a relative path",
    );
    assert((await Deno.stat(join(dir, "results.md"))).isFile);
    const names = [];
    for await (const e of Deno.readDir(root)) names.push(e.name);
    assertEquals(names, ["exp"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("writeReport() keeps a folder's PNG/SVG figures when static export is unavailable (no Chromium)", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = join(root, "exp");
    // A committed results folder: its figures were rendered on a machine with Chromium.
    await Deno.mkdir(join(dir, "figures"), { recursive: true });
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
    await Deno.writeFile(join(dir, "figures", "curve.png"), png);
    await Deno.writeTextFile(join(dir, "figures", "curve.svg"), "<svg>old</svg>");
    await Deno.writeTextFile(join(dir, "figures", "gone.png"), "a figure this run no longer makes");
    // Re-written on a machine without Chromium: a child process with no browser on PATH.
    const script = join(root, "write.ts");
    await Deno.writeTextFile(
      script,
      `import { collectRunInfo, writeReport } from ${
        JSON.stringify(new URL("../lib/report/mod.ts", import.meta.url).href)
      };
import { Figure } from ${JSON.stringify(new URL("../lib/viz/mod.ts", import.meta.url).href)};
const r = await writeReport(${JSON.stringify(dir)}, {
  run: await collectRunInfo({ experiment: "exp" }),
  figures: { curve: new Figure([{ type: "scatter", x: [1], y: [2] }]) },
  figureFormats: ["json", "png", "svg"],
});
console.log(JSON.stringify(r));`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", new URL("../deno.json", import.meta.url).pathname, script],
      clearEnv: true,
      env: { HOME: Deno.env.get("HOME") ?? "/tmp", PATH: "/nonexistent", NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert(out.success, stderr);
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    assertEquals(r.kept, ["figures/curve.png", "figures/curve.svg"]);
    assert(stderr.includes("kept the previous figures/curve.png"), stderr);
    assertEquals([...await Deno.readFile(join(dir, "figures", "curve.png"))], [...png]);
    assertEquals(await Deno.readTextFile(join(dir, "figures", "curve.svg")), "<svg>old</svg>");
    assert((await Deno.stat(join(dir, "figures", "curve.json"))).isFile);
    // Only figures this report still makes are carried over.
    await assertRejects(() => Deno.stat(join(dir, "figures", "gone.png")), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
