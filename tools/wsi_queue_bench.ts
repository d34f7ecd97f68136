/**
 * Benchmark of the slide queue: slides/hour and patches/s with 1 and 2 worker processes (`deno task wsi
 * worker`) on a private redis-server, for `extract` and `infer`, on synthetic slides. The clock runs from
 * enqueueing (workers already up) to the last job done; 1 and 2 workers alternate over `--rounds` (default
 * 3) and the summary is the median per worker count, with the range. Process start-up is not counted; each
 * worker's one-time backend and model set-up at its first infer job is (as in production). Numbers taken
 * while other processes use the CPU are noisy: the header prints the load average.
 *
 * ```sh
 * deno run -A tools/wsi_queue_bench.ts                         # 8 slides of 4096 px, workers 1 and 2
 * deno run -A tools/wsi_queue_bench.ts --slides 16 --out results/wsi_queue   # bench.json + run.json
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { collectRunInfo } from "../lib/report/mod.ts";
import { startRedisServer, writeFileAtomic } from "../lib/util/mod.ts";
import {
  readStepRecords,
  resolveStepSettings,
  type SlideStep,
  type SlideStepSettings,
  stepDir,
  writeSyntheticSlideSet,
} from "../lib/wsi/mod.ts";
import { enqueueSlides } from "../lib/wsi/slide_queue.ts";

function fail(msg: string): never {
  console.error(`wsi_queue_bench: ${msg}`);
  Deno.exit(2);
}
let a;
try {
  a = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      slides: { type: "string", default: "8" },
      side: { type: "string", default: "4096" },
      workers: { type: "string", default: "1,2" },
      steps: { type: "string", default: "extract,infer" },
      backend: { type: "string", default: "auto" },
      rounds: { type: "string", default: "3" },
      out: { type: "string" },
      help: { type: "boolean" },
    },
  }).values;
} catch (e) {
  fail((e as Error).message);
}
if (a.help) {
  console.log(
    "Usage: deno run -A tools/wsi_queue_bench.ts [--slides N] [--side PX] [--workers 1,2] " +
      "[--steps extract,infer] [--backend NAME] [--rounds R] [--out DIR (bench.json + run.json)]",
  );
  Deno.exit(0);
}
const nSlides = Number(a.slides), side = Number(a.side);
if (!(Number.isInteger(nSlides) && nSlides >= 1)) fail(`--slides "${a.slides}" is not an integer >= 1`);
if (!(Number.isInteger(side) && side >= 512)) fail(`--side "${a.side}" is not an integer >= 512`);
const rounds = Number(a.rounds);
if (!(Number.isInteger(rounds) && rounds >= 1)) fail(`--rounds "${a.rounds}" is not an integer >= 1`);
const workerCounts = a.workers.split(",").map(Number);
if (workerCounts.some((w) => !(Number.isInteger(w) && w >= 1))) {
  fail(`--workers "${a.workers}" is not a list of counts`);
}
const steps = a.steps.split(",") as SlideStep[];
for (const s of steps) if (s !== "extract" && s !== "infer") fail(`--steps: "${s}" is not extract or infer`);

const TOOL = new URL("./wsi.ts", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "wsi_queue_bench_" });
const redis = await startRedisServer();
const [l1, l5] = Deno.loadavg();
console.log(
  `wsi queue benchmark: ${nSlides} synthetic slides of ${side}x${side} px, ${navigator.hardwareConcurrency} ` +
    `cores, load average ${l1.toFixed(1)} / ${l5.toFixed(1)} (1 / 5 min), backend ${a.backend}`,
);
const set = await writeSyntheticSlideSet(join(dir, "slides"), { count: nSlides, side });
const settings: SlideStepSettings = {
  tissue: "small",
  patchSize: 256,
  annotationsDir: set.annotationsDir,
  topK: 8,
  lowSize: 32,
  highSize: 64,
};

interface Row {
  round: number;
  step: string;
  workers: number;
  slides: number;
  patches: number;
  seconds: number;
  slidesPerHour: number;
  patchesPerSecond: number;
  slidesPerHourPerWorker: number;
  patchesPerSecondPerWorker: number;
}
const rows: Row[] = [];
const backendsUsed = new Set<string>();
try {
  for (let round = 0; round < rounds; round++) {
    for (const w of workerCounts) {
      const out = join(dir, `out_${round}_${w}`);
      for (const step of steps) {
        const queue = `bench_${round}_${step}_${w}`;
        const procs = Array.from({ length: w }, () =>
          new Deno.Command(Deno.execPath(), {
            args: [
              "run",
              "-A",
              TOOL,
              "worker",
              "--redis",
              redis.url,
              "--queue",
              queue,
              "--backend",
              a.backend,
              "--quiet",
            ],
            stdout: "piped",
            stderr: "inherit",
            env: { NO_COLOR: "1" },
          }).spawn());
        let lastDone = 0, t0 = 0, doneCount = 0;
        let allDone: () => void;
        const allDonePromise = new Promise<void>((r) => (allDone = r));
        const ready: Promise<void>[] = [];
        const finished = procs.map((p) => {
          let markReady: () => void;
          ready.push(new Promise((r) => (markReady = r)));
          return (async () => {
            let buf = "";
            for await (const chunk of p.stdout.pipeThrough(new TextDecoderStream())) {
              buf += chunk;
              let i;
              while ((i = buf.indexOf("\n")) >= 0) {
                const line = buf.slice(0, i);
                buf = buf.slice(i + 1);
                if (Deno.env.get("BENCH_DEBUG")) console.error(`[w] ${line}`);
                if (line.includes(" on redis:")) markReady!();
                if (/: done /.test(line)) {
                  lastDone = performance.now();
                  if (++doneCount === nSlides) allDone();
                }
                if (/: failed /.test(line)) console.error(line);
              }
            }
            const st = await p.status;
            if (doneCount < nSlides) {
              allDone(); // do not wait for jobs no worker will finish
              console.error(`a worker ended early: code ${st.code}, signal ${st.signal}`);
            }
            return st;
          })();
        });
        await Promise.all(ready);
        t0 = performance.now();
        const r = await enqueueSlides(set.slides, [step], settings, out, { redis: redis.url, queue });
        if (r.added.length !== nSlides) throw new Error(`expected ${nSlides} jobs, added ${r.added.length}`);
        await allDonePromise;
        for (const p of procs) {
          try {
            p.kill("SIGTERM");
          } catch { /* exited */ }
        }
        for (const st of await Promise.all(finished)) {
          if (st.code !== 0) throw new Error(`a worker exited ${st.code}`);
        }
        const seconds = (lastDone - t0) / 1000;
        const { records } = await readStepRecords(stepDir(out, await resolveStepSettings(step, settings)));
        if (records.length !== nSlides) {
          throw new Error(`${records.length} ${step} records for ${nSlides} slides`);
        }
        for (const x of records) if (x.run.backend) backendsUsed.add(x.run.backend);
        const patches = records.reduce((s, x) => s + (x.result.patches as number), 0);
        const row: Row = {
          round,
          step,
          workers: w,
          slides: nSlides,
          patches,
          seconds: +seconds.toFixed(2),
          slidesPerHour: Math.round((nSlides / seconds) * 3600),
          patchesPerSecond: +(patches / seconds).toFixed(1),
          slidesPerHourPerWorker: Math.round((nSlides / seconds) * 3600 / w),
          patchesPerSecondPerWorker: +(patches / seconds / w).toFixed(1),
        };
        rows.push(row);
        console.log(
          `round ${round} ${
            step.padEnd(8)
          } ${w} worker(s): ${nSlides} slides, ${patches} patches in ${row.seconds} s → ` +
            `${row.slidesPerHour} slides/h, ${row.patchesPerSecond} patches/s (per worker ${row.slidesPerHourPerWorker} ` +
            `slides/h, ${row.patchesPerSecondPerWorker} patches/s)`,
        );
      }
    }
  }
  // summary: median over rounds (and the range), and the ratio of medians
  const median = (v: number[]) => {
    const x = [...v].sort((p, q) => p - q);
    return x.length % 2 ? x[(x.length - 1) / 2] : (x[x.length / 2 - 1] + x[x.length / 2]) / 2;
  };
  const summary = [];
  for (const step of steps) {
    for (const w of workerCounts) {
      const rs = rows.filter((r) => r.step === step && r.workers === w);
      const pps = rs.map((r) => r.patchesPerSecond), sph = rs.map((r) => r.slidesPerHour);
      summary.push({
        step,
        workers: w,
        rounds: rs.length,
        slidesPerHour: median(sph),
        patchesPerSecond: median(pps),
        patchesPerSecondMin: Math.min(...pps),
        patchesPerSecondMax: Math.max(...pps),
        slidesPerHourPerWorker: Math.round(median(sph) / w),
        patchesPerSecondPerWorker: +(median(pps) / w).toFixed(1),
      });
    }
  }
  console.log("\nmedian over rounds (min-max patches/s):");
  for (const r of summary) {
    const one = summary.find((x) => x.step === r.step && x.workers === 1);
    console.log(
      `${
        r.step.padEnd(8)
      } ${r.workers} worker(s): ${r.slidesPerHour} slides/h, ${r.patchesPerSecond} patches/s ` +
        `(${r.patchesPerSecondMin}-${r.patchesPerSecondMax}), per worker ${r.slidesPerHourPerWorker} slides/h, ` +
        `${r.patchesPerSecondPerWorker} patches/s` +
        (one && r.workers > 1
          ? `; ${(r.patchesPerSecond / one.patchesPerSecond).toFixed(2)}x one worker`
          : ""),
    );
  }
  if (a.out) {
    const config = { slides: nSlides, side, workers: workerCounts, steps, rounds, settings };
    await writeFileAtomic(
      join(a.out, "bench.json"),
      JSON.stringify(
        { ...config, backend: [...backendsUsed].join(","), loadavg: [l1, l5], summary, rows },
        null,
        2,
      ) +
        "\n",
    );
    const run = await collectRunInfo({
      experiment: "wsi_queue_bench",
      config,
      backend: [...backendsUsed].join(",") || a.backend,
    });
    await writeFileAtomic(join(a.out, "run.json"), JSON.stringify(run, null, 2) + "\n");
    console.log(`wrote ${join(a.out, "bench.json")}, ${join(a.out, "run.json")}`);
  }
} finally {
  await redis.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
