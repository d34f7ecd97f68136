/**
 * `deno task bench` (tools/bench.ts, tools/bench_torch.py): the fair timing protocol (warm-up until
 * stable, the same rule on the PyTorch side, rounds in alternating order, medians and spreads) and the
 * `--out` provenance file. No wall-clock assertions: the protocol runs on fake clocks.
 */
import { isStable, spread, timeUntilStable } from "../lib/metrics/stable_timing.ts";
import { benchRunJsonPath, roundOrder, summarizeRounds } from "../tools/bench.ts";
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "./_assert.ts";

const BENCH = new URL("../tools/bench.ts", import.meta.url).pathname;
const PROTOCOL_PY = new URL("../tools/bench_protocol.py", import.meta.url).pathname;

/** A step function on a fake clock: step i takes durations[i] seconds. */
function fakeStep(durations: number[]) {
  let t = 0, i = 0;
  return {
    now: () => t * 1000,
    step: () => {
      if (i >= durations.length) throw new Error(`fake step ${i} has no duration`);
      t += durations[i++];
    },
    calls: () => i,
  };
}

Deno.test("timeUntilStable() warms up until the last 3 steps agree within 5%, then times the steps", async () => {
  // A slow start (JIT, allocator, caches), then steady 2 s steps with 1% noise.
  const d = [9, 5, 3, 2.2, 2.0, 2.02, 2.01, ...new Array(10).fill(0).map((_, i) => 2 + (i % 3) * 0.01)];
  const f = fakeStep(d);
  const t = await timeUntilStable(f.step, { now: f.now, iters: 10 });
  assertEquals(t.warmupSteps, 7, `warm-up ${t.warmupS}`);
  assertEquals(t.stable, true);
  assertEquals(t.samplesS.length, 10);
  assertEquals(f.calls(), 17);
  assertAlmostEquals(t.medianS, 2.01, 1e-9);
  assertAlmostEquals(t.minS, 2, 1e-9);
  assertAlmostEquals(t.maxS, 2.02, 1e-9);
});

Deno.test("timeUntilStable() runs at least minWarmup steps and stops at maxWarmup when never stable", async () => {
  const steady = fakeStep(new Array(20).fill(1));
  const a = await timeUntilStable(steady.step, { now: steady.now, minWarmup: 3, iters: 10 });
  assertEquals([a.warmupSteps, a.stable], [3, true]);
  const noisy = fakeStep(new Array(40).fill(0).map((_, i) => (i % 2 ? 1 : 1.5)));
  const b = await timeUntilStable(noisy.step, { now: noisy.now, minWarmup: 3, maxWarmup: 8, iters: 10 });
  assertEquals([b.warmupSteps, b.stable, b.samplesS.length], [8, false, 10]);
  assertEquals(isStable([9, 5.0, 5.1, 5.05]), true);
  assertEquals(isStable([9, 5.0, 6.0, 5.05]), false);
  await assertRejects(
    () => timeUntilStable(() => {}, { minWarmup: 5, maxWarmup: 2 }),
    RangeError,
    "maxWarmup",
  );
});

Deno.test("tools/bench_protocol.py (the PyTorch side) follows the same warm-up rule as timeUntilStable()", async () => {
  let seed = 7;
  const rand = () => (seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  const cases = [
    { durations: [9, 5, 3, 2.2, 2.0, 2.02, 2.01, ...new Array(12).fill(2)] },
    { durations: new Array(30).fill(0).map((_, i) => (i % 2 ? 1 : 1.5)), maxWarmup: 6, iters: 4 },
    {
      durations: new Array(40).fill(0).map(() => 1 + 0.12 * rand()),
      minWarmup: 4,
      tolerance: 0.06,
      iters: 5,
    },
    { durations: new Array(40).fill(0).map(() => 1 + 0.3 * rand()), window: 2, tolerance: 0.1, iters: 3 },
  ];
  for (const c of cases) {
    const out = await new Deno.Command("python3", { args: [PROTOCOL_PY, JSON.stringify(c)] }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const py = JSON.parse(new TextDecoder().decode(out.stdout));
    const f = fakeStep(c.durations);
    const ts = await timeUntilStable(f.step, { ...c, now: f.now });
    assertEquals([py.warmupSteps, py.stable, py.samplesS.length], [
      ts.warmupSteps,
      ts.stable,
      ts.samplesS.length,
    ]);
    assertAlmostEquals(py.medianS, ts.medianS, 1e-9);
  }
});

Deno.test("roundOrder() alternates which side runs first; spread() gives median, range and quartiles", () => {
  assertEquals(roundOrder(1, ["native", "torch"]), ["native", "torch"]);
  assertEquals(roundOrder(2, ["native", "torch"]), ["torch", "native"]);
  assertEquals(roundOrder(3, ["native", "wasm", "torch"]), ["native", "wasm", "torch"]);
  assertThrows(() => roundOrder(0, ["native"]), RangeError, "round");
  assertEquals(spread([3, 1, 2, 10]), { median: 2.5, min: 1, max: 10, q1: 1.75, q3: 4.75, n: 4 });
  assertThrows(() => spread([]), RangeError, "at least one");
});

Deno.test("summarizeRounds() reports the median over rounds and ratios paired within each round", () => {
  const r = (backend: string, inferImgS: number, trainImgS?: number, error?: string) => ({
    model: "vit_small",
    backend,
    inferImgS,
    trainImgS,
    error,
  });
  const [ours, torch, other] = summarizeRounds([
    [r("native", 120, 30), r("torch", 60, 20), { model: "resnet18", backend: "native", error: "boom" }],
    [r("torch", 40, 10), r("native", 100, 20)],
    [r("native", 90, 25), r("torch", 50, 0, "crashed")],
  ]);
  assertEquals([ours.backend, ours.inferImgS, ours.trainImgS, ours.rounds], ["native", 100, 25, 3]);
  assertEquals([ours.inferImgSSpread!.min, ours.inferImgSSpread!.max], [90, 120]);
  // Per round: 120/60 = 2 and 100/40 = 2.5; round 3 has no PyTorch measurement. (Ratio of medians: 2.)
  assertEquals([ours.inferVsTorch!.median, ours.inferVsTorch!.min, ours.inferVsTorch!.max], [2.25, 2, 2.5]);
  assertEquals(ours.trainVsTorch!.median, 1.75);
  assertEquals([torch.backend, torch.inferImgS, torch.rounds, torch.inferVsTorch], [
    "torch",
    50,
    2,
    undefined,
  ]);
  assertEquals([other.model, other.error, other.rounds], ["resnet18", "boom", 0]);
});

Deno.test("benchRunJsonPath() refuses a run.json that records another run, and keeps it intact", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/bench.json`;
    assertEquals(benchRunJsonPath(out), `${dir}/run.json`); // none yet
    const study = JSON.stringify({ experiment: "compare", git: { commit: "abc" } });
    Deno.writeTextFileSync(`${dir}/run.json`, study);
    assertThrows(() => benchRunJsonPath(out), Error, `"${dir}/run.json" already records another run`);
    // A bench run that wrote this same file (the old form records only its command) may be replaced;
    // one that wrote another output may not.
    Deno.writeTextFileSync(
      `${dir}/run.json`,
      JSON.stringify({
        experiment: "bench",
        command: ["tools/bench.ts", "--out", "results/bench/bench.json"],
      }),
    );
    assertEquals(benchRunJsonPath(out), `${dir}/run.json`);
    Deno.writeTextFileSync(
      `${dir}/run.json`,
      JSON.stringify({ experiment: "bench", outputs: ["kernels.json"] }),
    );
    assertThrows(() => benchRunJsonPath(out), Error, 'outputs ["kernels.json"]');
    Deno.writeTextFileSync(`${dir}/run.json`, "null");
    assertThrows(() => benchRunJsonPath(out), Error, "not a run record");

    // The CLI refuses before it measures anything, and leaves the file as it was.
    Deno.writeTextFileSync(`${dir}/run.json`, study);
    const res = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", BENCH, "--out", out, "--kernels-only", "--backends", "cpu"],
    }).output();
    const stderr = new TextDecoder().decode(res.stderr);
    assertEquals(res.code, 2); // a usage error: one line, no stack trace
    assert(stderr.includes("already records another run") && !stderr.includes("    at "), stderr);
    assertEquals(Deno.readTextFileSync(`${dir}/run.json`), study);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["run.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
