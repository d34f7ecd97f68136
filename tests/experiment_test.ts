import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { initBackend } from "../lib/backend/mod.ts";
import { FASHION_MNIST_SYSTEM_DIR } from "../lib/data/mod.ts";
import {
  evaluateStrategy,
  IDENTITY_FILE,
  type IdentityRecord,
  initFromRun,
  loadRunResult,
  runTraining,
  type TrainingRunOptions,
  type TrainingRunResult,
} from "../lib/experiment/mod.ts";
import { createModel, createModelFromConfig } from "../lib/models/mod.ts";
import { exportStateDict, readSafetensors } from "../lib/weights/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { relErr } from "./_backends.ts";

// Not per-backend: these tests train; wasm (with the lead's gradient kernels) keeps them fast.
const opts = { sanitizeOps: false, sanitizeResources: false };
const tiny: Omit<TrainingRunOptions, "model"> = {
  dataset: "synthetic",
  profile: "quick",
  epochs: 1,
  stage1Epochs: 1,
  trainSubset: 128,
  evalSubset: 64,
  batchSize: 32,
  progress: false,
  log: false,
};

let root: string | undefined;
const runs = new Map<string, Promise<TrainingRunResult>>();
/** Trains each base run once (lazily) and shares it between the tests. */
function baseRun(model: "vit" | "resnet18" | "hybrid"): Promise<TrainingRunResult> {
  if (!runs.has(model)) {
    runs.set(
      model,
      (async () => {
        await initBackend("wasm", { log: false });
        root ??= await Deno.makeTempDir({ prefix: "experiment_test_" });
        return runTraining({ ...tiny, model, out: join(root, model) });
      })(),
    );
  }
  return runs.get(model)!;
}

Deno.test({
  name:
    "runTraining() trains vit, resnet18 and the hybrid and writes result.json, run.json, model.safetensors",
  ...opts,
  fn: async () => {
    for (const family of ["vit", "resnet18", "hybrid"] as const) {
      const r = await baseRun(family);
      assert(r.completed, family);
      assertEquals(r.model, undefined); // disposed without keepModel
      for (const f of ["result.json", "run.json", "model.safetensors", "config.json"]) {
        await Deno.stat(join(r.outDir, f));
      }
      const back = await loadRunResult(r.outDir);
      assertEquals(back.accuracy, r.result.accuracy);
      assertEquals([back.family, back.evalImages, back.dataset], [family, 64, "synthetic"]);
      assert(back.macroF1 >= 0 && back.macroF1 <= 1, `${family} macroF1 ${back.macroF1}`);
      assert(back.provenance?.profile === "quick", `${family}: run.json attached`);
      assertEquals(r.evalDataset.size, 64);
      if (family === "hybrid") {
        assertEquals(back.strategy, "cnn");
        await Deno.stat(join(r.outDir, "stage1", "checkpoint.safetensors"));
        assert(back.selection !== undefined, "synthetic masks give selection quality");
      }
    }
    await assertRejects(() => loadRunResult(join(root!, "nope")), Error, "result.json");
  },
});

Deno.test({
  name: "initFrom a ViT run reproduces that run's evaluation accuracy before any training",
  ...opts,
  fn: async () => {
    const src = await baseRun("vit");
    const { metadata } = await readSafetensors(join(src.outDir, "model.safetensors"));
    const model = createModelFromConfig(JSON.parse(metadata.config));
    try {
      const rep = await initFromRun(model, src.outDir);
      assertEquals(rep.prefix, "");
      const ev = await evaluateStrategy(model, src.evalDataset, { strategy: "none", keep: 1 });
      assertEquals(ev.accuracy, src.result.accuracy);
      assert(Math.abs(ev.loss - src.result.loss) < 1e-5, `${ev.loss} vs ${src.result.loss}`);
    } finally {
      model.dispose();
    }
    // Through runTraining: a vanishing learning rate keeps the loaded weights' accuracy.
    const r = await runTraining({
      ...tiny,
      model: "vit",
      initFrom: src.outDir,
      lr: 1e-12,
      weightDecay: 0,
      out: join(root!, "vit_init"),
    });
    assertEquals(r.result.accuracy, src.result.accuracy);
    // Same seed, so without the loaded weights this run would sit at the source's initial (untrained) loss.
    assert(Math.abs(r.result.loss - src.result.loss) < 1e-4, `${r.result.loss} vs ${src.result.loss}`);
    assertEquals(r.result.initFrom, src.outDir);
    // A ViT run initialises a hybrid's ViT (vit.*), and a hybrid run a ViT.
    const classes = src.evalDataset.classes.length;
    const hybrid = createModel("hybrid_test", {
      cnnHead: true,
      vit: { numClasses: classes },
      resnet: { numClasses: classes },
    });
    const vit = createModel("vit_test", { numClasses: classes }, { seed: 7 });
    try {
      assertEquals((await initFromRun(hybrid, src.outDir)).prefix, "vit.");
      const file = (await readSafetensors(join(src.outDir, "model.safetensors"))).tensors;
      const inHybrid = await exportStateDict(hybrid, { prefix: "vit." });
      assertEquals(inHybrid.size, file.size);
      for (const [k, v] of inHybrid) {
        assertEquals(Array.from(v.data as Float32Array), Array.from(file.get(k)!.data), k);
      }
      const hsrc = await baseRun("hybrid");
      assertEquals((await initFromRun(vit, hsrc.outDir)).sourceFamily, "hybrid");
      const hfile = (await readSafetensors(join(hsrc.outDir, "model.safetensors"))).tensors;
      for (const [k, v] of await exportStateDict(vit)) {
        assertEquals(Array.from(v.data as Float32Array), Array.from(hfile.get(`vit.${k}`)!.data), k);
      }
    } finally {
      hybrid.dispose();
      vit.dispose();
    }
    // A ResNet18 run cannot initialise a ViT: one error lists the mismatches and quotes the folder.
    const res = await baseRun("resnet18");
    await assertRejects(
      () => runTraining({ ...tiny, model: "vit", initFrom: res.outDir, out: join(root!, "bad_init") }),
      Error,
      `initFrom "${res.outDir}"`,
    );
  },
});

Deno.test({
  name: "cnnFrom reuses a hybrid run's CNN and skips stage 1",
  ...opts,
  fn: async () => {
    const src = await baseRun("hybrid");
    const out = join(root!, "hybrid_cnn_from");
    const r = await runTraining({
      ...tiny,
      model: "hybrid",
      keep: 0.25,
      cnnFrom: src.outDir,
      out,
      keepModel: true,
    });
    try {
      assert(r.completed);
      await assertRejects(() => Deno.stat(join(out, "stage1")), Deno.errors.NotFound);
      await Deno.stat(join(out, "stage2", "checkpoint.safetensors"));
      assertEquals(r.result.keepRatio, 0.25);
      assertEquals(r.result.cnnFrom, src.outDir);
      const { tensors } = await readSafetensors(join(src.outDir, "model.safetensors"));
      const ours = await exportStateDict(r.model!, { prefix: "cnn." }); // PyTorch layout, as in the file
      let compared = 0;
      for (const [k, v] of ours) {
        // The frozen CNN keeps the source's weights; only the importance head trains in stage 2.
        if (k.startsWith("importance_head.")) continue;
        const theirs = tensors.get(`cnn.${k}`)!;
        assert(theirs !== undefined, `cnn.${k} in the source`);
        assertEquals(Array.from(v.data as Float32Array), Array.from(theirs.data as Float32Array), k);
        compared++;
      }
      assert(compared > 10, `compared ${compared} CNN tensors`);
    } finally {
      r.model?.dispose();
    }
  },
});

Deno.test({
  name: "evaluateStrategy() at keep 1 equals 'none', and leaks no tensors",
  ...opts,
  fn: async () => {
    const src = await baseRun("vit");
    const model = (await runTraining({
      ...tiny,
      model: "vit",
      strategy: "random",
      keep: 0.5,
      out: join(root!, "vit_random"),
      keepModel: true,
    })).model!;
    try {
      const ds = src.evalDataset;
      const none = await evaluateStrategy(model, ds, { strategy: "none", keep: 1 });
      const before = tf.memory().numTensors;
      for (const strategy of ["random", "attention", "merge"] as const) {
        const one = await evaluateStrategy(model, ds, { strategy, keep: 1 });
        assertEquals(Array.from(one.predictions), Array.from(none.predictions), strategy);
        assert(
          relErr(one.probs, none.probs) < 1e-5,
          `${strategy}: probs differ by ${relErr(one.probs, none.probs)}`,
        );
        assertEquals(one.location, strategy === "attention" ? 1 : 0);
      }
      const half = await evaluateStrategy(model, ds, { strategy: "random", keep: 0.5, seed: 3 });
      assertEquals(tf.memory().numTensors, before);
      assertEquals(half.labels.length, 64);
      assertEquals(half.probs.length, 64 * ds.classes.length);
      assert(half.gmacs < none.gmacs, `pruned ${half.gmacs} < unpruned ${none.gmacs} GMACs`);
      assert(half.selection !== undefined && half.selection.images === 64);
      assertEquals(Array.from(none.labels), Array.from(half.labels));
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "runTraining() with gradCheckpoint trains the ViT to the same result and records it in run.json",
  ...opts,
  fn: async () => {
    const src = await baseRun("vit");
    const r = await runTraining({
      ...tiny,
      model: "vit",
      gradCheckpoint: true,
      out: join(root!, "vit_ckpt"),
    });
    // Checkpointing recomputes the same activations: same gradients, so the same trained model.
    assertEquals(r.result.accuracy, src.result.accuracy);
    assert(Math.abs(r.result.loss - src.result.loss) < 1e-5, `${r.result.loss} vs ${src.result.loss}`);
    const run = JSON.parse(await Deno.readTextFile(join(r.outDir, "run.json")));
    assertEquals([run.config.gradCheckpoint, run.config.modelConfig.gradCheckpoint], [true, true]);
    const srcRun = JSON.parse(await Deno.readTextFile(join(src.outDir, "run.json")));
    assertEquals(srcRun.config.gradCheckpoint, false); // the quick profile's default
  },
});

Deno.test({
  name: "runTraining() and evaluateStrategy() reject bad options quoting the value",
  ...opts,
  fn: async () => {
    const src = await baseRun("vit");
    const bad: [Partial<TrainingRunOptions>, string][] = [
      [{ model: "nope" }, '"nope"'],
      [{ model: "vit", keep: 0 }, "keep 0"],
      [{ model: "vit", epochs: 1.5 }, "epochs 1.5"],
      [{ model: "vit", strategy: "cnn" }, 'strategy "cnn"'],
      [{ model: "resnet18", strategy: "random" }, "ResNet18 has no tokens"],
      [{ model: "vit", strategy: "attention", location: 0 }, "location 0"],
      [{ model: "vit", cnnFrom: src.outDir }, "cnnFrom"],
      [{ model: "vit", initFrom: "/nonexistent/run" }, '"/nonexistent/run"'],
      [{ model: "vit", evalSplit: "train" as "test" }, '"train"'],
      [{ model: "vit", resume: true, out: "/nonexistent/run" }, "nothing to resume"],
      [{ model: "hybrid", selection: "gather" }, "lower-lr"],
      [{ model: "hybrid", selection: "hard", cnnMode: "lower-lr" }, 'selection "hard" trains the ViT alone'],
      [
        { model: "hybrid", strategy: "merge" },
        '(or "random" / "attention" / "none" as controls on CNN tokens)',
      ],
      [{ model: "hybrid", strategy: "random" }, 'override { tokens: "cnn" }'],
      [
        {
          model: "hybrid",
          strategy: "attention",
          override: { tokens: "cnn" },
          distill: 0.5,
          keepRange: [0.4, 0.8],
        },
        "distill, keepRange belong to the CNN selector",
      ],
      [{ model: "vit", gradCheckpoint: "yes" as unknown as boolean }, 'gradCheckpoint "yes"'],
      [{ model: "vit", gradCheckpoint: "auto" }, "needs memoryBudgetMiB"],
      [{ model: "resnet18", gradCheckpoint: true }, "needs a ViT or the hybrid"],
    ];
    for (const [o, want] of bad) {
      await assertRejects(() => runTraining({ ...tiny, ...o } as TrainingRunOptions), Error, want);
    }
    const { metadata } = await readSafetensors(join(src.outDir, "model.safetensors"));
    const model = createModelFromConfig(JSON.parse(metadata.config));
    try {
      await assertRejects(
        () => evaluateStrategy(model, src.evalDataset, { strategy: "random", keep: 2 }),
        Error,
        "keep 2",
      );
      await assertRejects(
        () => evaluateStrategy(model, src.evalDataset, { strategy: "cnn", keep: 0.5 }),
        Error,
        'strategy "cnn"',
      );
      await assertRejects(
        () => evaluateStrategy(model, src.evalDataset, { strategy: "none", keep: 0.5 }),
        Error,
        "keep 0.5",
      );
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "runTraining() stopped by its signal writes a checkpoint but no result; resume completes the run",
  ...opts,
  fn: async () => {
    await baseRun("vit");
    const out = join(root!, "vit_stopped");
    const ac = new AbortController();
    ac.abort();
    const stopped = await runTraining({ ...tiny, model: "vit", out, signal: ac.signal });
    assertEquals(stopped.completed, false);
    assert(Number.isNaN(stopped.result.accuracy) && stopped.result.evalImages === 0);
    await Deno.stat(join(out, "checkpoint.safetensors"));
    await assertRejects(() => loadRunResult(out), Error, "result.json");
    const resumed = await runTraining({ ...tiny, model: "vit", out, resume: true });
    assert(resumed.completed);
    assertEquals((await loadRunResult(out)).accuracy, resumed.result.accuracy);
    // Resuming the finished run (a study reloading it, maybe at a later commit) trains nothing: its
    // run.json keeps the training invocation's provenance and lists the new recording.
    const trained = JSON.parse(await Deno.readTextFile(join(out, "run.json")));
    assertEquals(trained.extra.recordedAgain, undefined);
    const again = await runTraining({ ...tiny, model: "vit", out, resume: true });
    assertEquals(again.result.accuracy, resumed.result.accuracy);
    const reloaded = JSON.parse(await Deno.readTextFile(join(out, "run.json")));
    assertEquals(reloaded.createdAt, trained.createdAt);
    assertEquals(reloaded.git, trained.git);
    assertEquals(reloaded.durations, trained.durations);
    assertEquals(reloaded.extra.recordedAgain.length, 1);
    assert(reloaded.extra.recordedAgain[0].createdAt > trained.createdAt, "the recording is listed");
  },
});

Deno.test({
  name: "runTraining() refuses to resume a run with another dataset and lists the differences",
  ...opts,
  fn: async () => {
    const src = await baseRun("vit");
    const out = join(root!, "vit_other_dataset");
    await Deno.mkdir(out);
    for (const f of await Array.fromAsync(Deno.readDir(src.outDir))) {
      if (f.isFile) await Deno.copyFile(join(src.outDir, f.name), join(out, f.name));
    }
    const before = await Deno.readTextFile(join(out, "result.json"));
    // Fashion-MNIST where the Debian package is installed (CI), else the synthetic set with other images.
    const fm = await Deno.stat(FASHION_MNIST_SYSTEM_DIR).then(() => true, () => false);
    const other: Partial<TrainingRunOptions> = fm ? { dataset: "fashion-mnist" } : { trainSubset: 130 };
    const err = await assertRejects(
      () => runTraining({ ...tiny, ...other, model: "vit", out, resume: true }),
      Error,
      "cannot resume",
    );
    assert(err.message.includes("dataset.train.fingerprint"), err.message);
    if (fm) assert(err.message.includes('"synthetic" → "fashion-mnist"'), err.message);
    // Nothing in the folder was touched.
    assertEquals(await Deno.readTextFile(join(out, "result.json")), before);
    // Deliberately: forceResume goes ahead and records what differed.
    const forced = await runTraining({
      ...tiny,
      model: "vit",
      out,
      resume: true,
      forceResume: true,
      trainSubset: 130, // still 4 batches of 32 per epoch, so the checkpoint fits
    });
    assert(forced.completed);
    const rec: IdentityRecord = JSON.parse(await Deno.readTextFile(join(out, IDENTITY_FILE)));
    assertEquals(rec.forcedResumes?.length, 1);
    assert(rec.forcedResumes![0].differences.some((d) => d.startsWith("dataset.train.size: 128 → 130")));
    const runJson = JSON.parse(await Deno.readTextFile(join(out, "run.json")));
    assert(Array.isArray(runJson.extra.forcedResume), "run.json records the forced resume");
  },
});

Deno.test({
  name: "runTraining() refuses a new run into an occupied folder; overwrite moves the old run aside first",
  ...opts,
  fn: async () => {
    await baseRun("vit");
    const out = join(root!, "vit_occupied");
    await runTraining({ ...tiny, model: "vit", out });
    const oldResult = await Deno.readTextFile(join(out, "result.json"));
    await assertRejects(
      () => runTraining({ ...tiny, model: "vit", out, lr: 5e-4 }),
      Error,
      "already holds a run",
    );
    assertEquals(await Deno.readTextFile(join(out, "result.json")), oldResult);
    // An interrupted new run with overwrite: the folder holds the new config and no old result.
    const ac = new AbortController();
    ac.abort();
    const stopped = await runTraining({
      ...tiny,
      model: "vit",
      out,
      lr: 5e-4,
      overwrite: true,
      signal: ac.signal,
    });
    assertEquals(stopped.completed, false);
    await assertRejects(() => loadRunResult(out), Error, "result.json");
    assertEquals(JSON.parse(await Deno.readTextFile(join(out, "config.json"))).lr, 5e-4);
    const aside = (await Array.fromAsync(Deno.readDir(root!))).filter((e) =>
      e.name.startsWith("vit_occupied.replaced-")
    );
    assertEquals(aside.length, 1);
    assertEquals(await Deno.readTextFile(join(root!, aside[0].name, "result.json")), oldResult);
    // The interrupted run resumes with its own identity (same options) and completes.
    const resumed = await runTraining({ ...tiny, model: "vit", out, lr: 5e-4, resume: true });
    assert(resumed.completed);
    await assertRejects(
      () => runTraining({ ...tiny, model: "vit", out, resume: true }),
      Error,
      "lr: 0.0005 → 0.001",
    );
  },
});

Deno.test({
  name:
    "runTraining() trains the hybrid with the selector options (ViT attention target, rank distillation, keep range)",
  ...opts,
  fn: async () => {
    await baseRun("vit");
    await assertRejects(
      () => runTraining({ ...tiny, model: "hybrid", selectorTarget: "nope" as "cam" }),
      Error,
      'selectorTarget "nope"',
    );
    await assertRejects(
      () =>
        runTraining({
          ...tiny,
          model: "hybrid",
          selectorTarget: "vit_attention",
          override: { tokens: "cnn" },
        }),
      Error,
      'selectorTarget "vit_attention" needs pixel tokens',
    );
    await assertRejects(
      () => runTraining({ ...tiny, model: "hybrid", keepRange: [0.9, 0.1] }),
      Error,
      "keepRange [0.9,0.1]",
    );
    const out = join(root!, "hybrid_selector");
    const r = await runTraining({
      ...tiny,
      model: "hybrid",
      initFrom: join(root!, "vit"),
      selectorTarget: "vit_attention",
      rankDistill: 0.5,
      keepRange: [0.4, 0.8],
      selection: "gather",
      cnnMode: "lower-lr",
      out,
    });
    assert(r.completed);
    const config = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
    assertEquals([config.selectorTarget, config.rankDistill, config.keepRange], ["vit_attention", 0.5, [
      0.4,
      0.8,
    ]]);
    assertEquals(r.result.epochs.length, 2, "both stages trained");
  },
});

Deno.test({
  name: "experiment tests: clean up the shared run folders",
  ...opts,
  fn: async () => {
    if (root) await Deno.remove(root, { recursive: true });
  },
});
