/**
 * `deno task wsi`: whole-slide steps for one slide, many slides (optionally a static shard), or a Redis job
 * queue (BullMQ) with any number of workers on any number of machines. This file parses flags; the work is
 * lib/wsi (`runSlideStep`, `enqueueSlides`, `startSlideWorker`, `queueStatus`, `slideReport`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { initBackend, parseBackendChoice } from "../lib/backend/mod.ts";
import {
  expandSlides,
  formatSlideReport,
  parseShard,
  resolveStepSettings,
  runSlideStep,
  shardSlides,
  SLIDE_STEPS,
  slideReport,
  type SlideStep,
  type SlideStepSettings,
  stepDir,
  TISSUE_PRESETS,
  type TissuePreset,
  writeSlideReport,
} from "../lib/wsi/mod.ts";
import { exitUsage } from "./cli.ts";

const USAGE = `Usage: deno task wsi COMMAND [slides or globs...] [options]

Commands
  segment | extract | infer SLIDES   run one step for the slides here, one after another (a failing slide
                                     does not stop the others; exit 1 if any failed); --shard i/N takes a
                                     static share (Slurm array task, Kubernetes Indexed Job), no Redis
  enqueue SLIDES --step S[,S]        one job per slide and step on the Redis queue; the same slide and
                                     settings are one job; slides whose outputs are done get none
  worker                             process queue jobs until stopped (SIGTERM/SIGINT: finish the current
                                     job, take no new one; hard stop after --grace seconds)
  status                             waiting / active (progress per slide) / done / failed (with reasons)
  report                             the slide-level table and metrics of one step's outputs in --out

Outputs: <out>/<step>/<key>/<slide>.json (+ .coords, .mask.png), key = hash of every setting below that
shapes the step; written atomically (temp file + rename), so retries and concurrent workers are safe.

Settings (segment, extract, infer, enqueue, report)
  --out DIR             shared output folder (required except for worker/status)
  --tissue PRESET       ${Object.keys(TISSUE_PRESETS).join(" | ")} (default default)
  --level N             pyramid level of the patches (default 0)
  --patch-size N        patch side at --level (default 256)
  --stride N            grid step (default the patch size)
  --min-tissue X        minimum tissue fraction of a patch, in [0, 1] (default 0.5)
  --save-patches        also write patch PNGs (extract)
  --annotations DIR     ASAP XML per slide, DIR/<slide>.xml (missing: all normal); labels patches
  --label-threshold X   tumour fraction of a tumour patch (default 0.5)
  --cnn NAME|FILE       scoring CNN: registry name or .safetensors model file (default resnet18_test)
  --vit NAME|FILE       classifier: registry name or .safetensors model file (default vit_test)
  --seed N              seed of registry models (default 0)
  --low-size N          CNN input side (default 32)
  --high-size N         classifier input side (default 64)
  --top-k X             patches classified: a count, or a fraction < 1 (default 0.1)
  --batch-size N        images per model call (default 32)
  --aggregate A         max | mean | noisyOr (default max)

Run and queue options
  --shard i/N           segment/extract/infer: only slides i, i+N, i+2N, ... of the sorted list
  --overwrite           segment/extract/infer: redo even when the outputs are done
  --step S[,S]          enqueue: ${SLIDE_STEPS.join(", ")} (infer also extracts when needed); report: one
  --key KEY             report: the settings key folder (default: computed from the settings flags)
  --redis URL           redis://host:port[/db] (default $WSI_REDIS_URL or redis://127.0.0.1:6379)
  --queue NAME          queue name (default wsi)
  --attempts N          enqueue: tries per job before it fails (default 3)
  --backoff MS          enqueue: first retry delay, doubled each retry (default 2000)
  --retry-failed        enqueue: put failed jobs back in the queue
  --concurrency N       worker: jobs at once (default 1)
  --backend NAME        worker/infer: auto | node | native | wasm | cpu (default $TFJS_BACKEND or auto)
  --lock-duration MS    worker: job lock; a dead worker's job is handed on after it (default 30000)
  --stalled-interval MS worker: how often stalled jobs are looked for (default 30000)
  --grace S             worker: seconds to finish the current job after SIGTERM (default 300)
  --exit-when-idle S    worker: exit after the queue has been empty (nothing waiting, active or delayed) S s
  --json                status/report: JSON
  --quiet               no progress bars
  --help                this text
`;

function fail(msg: string): never {
  return exitUsage("wsi", msg, "deno task wsi --help");
}

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    strict: true,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      tissue: { type: "string" },
      level: { type: "string" },
      "patch-size": { type: "string" },
      stride: { type: "string" },
      "min-tissue": { type: "string" },
      "save-patches": { type: "boolean" },
      annotations: { type: "string" },
      "label-threshold": { type: "string" },
      cnn: { type: "string" },
      vit: { type: "string" },
      seed: { type: "string" },
      "low-size": { type: "string" },
      "high-size": { type: "string" },
      "top-k": { type: "string" },
      "batch-size": { type: "string" },
      aggregate: { type: "string" },
      shard: { type: "string" },
      overwrite: { type: "boolean" },
      step: { type: "string" },
      key: { type: "string" },
      redis: { type: "string" },
      queue: { type: "string" },
      attempts: { type: "string" },
      backoff: { type: "string" },
      "retry-failed": { type: "boolean" },
      concurrency: { type: "string" },
      backend: { type: "string" },
      "lock-duration": { type: "string" },
      "stalled-interval": { type: "string" },
      grace: { type: "string" },
      "exit-when-idle": { type: "string" },
      json: { type: "boolean" },
      quiet: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
} catch (e) {
  fail((e as Error).message);
}
const a = parsed.values;
if (a.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const [command, ...rest] = parsed.positionals;
const COMMANDS = [...SLIDE_STEPS, "enqueue", "worker", "status", "report"];
if (!command) fail(`a command is required: ${COMMANDS.join(", ")}`);
if (!COMMANDS.includes(command)) fail(`unknown command "${command}"; expected one of ${COMMANDS.join(", ")}`);

function num(name: string, raw: string | undefined, check: (v: number) => boolean, expected: string) {
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(v) || !check(v)) fail(`--${name} "${raw}" is not ${expected}`);
  return v;
}
const isInt = (min: number) => (v: number) => Number.isInteger(v) && v >= min;
const tryOr = <T>(f: () => T): T => {
  try {
    return f();
  } catch (e) {
    fail((e as Error).message);
  }
};

const ALLOWED: Record<string, string[]> = {
  settings: [
    "out",
    "tissue",
    "level",
    "patch-size",
    "stride",
    "min-tissue",
    "save-patches",
    "annotations",
    "label-threshold",
    "cnn",
    "vit",
    "seed",
    "low-size",
    "high-size",
    "top-k",
    "batch-size",
    "aggregate",
    "quiet",
  ],
  segment: ["shard", "overwrite", "backend"],
  extract: ["shard", "overwrite", "backend"],
  infer: ["shard", "overwrite", "backend"],
  enqueue: ["step", "redis", "queue", "attempts", "backoff", "retry-failed"],
  worker: [
    "redis",
    "queue",
    "concurrency",
    "backend",
    "lock-duration",
    "stalled-interval",
    "grace",
    "exit-when-idle",
    "quiet",
  ],
  status: ["redis", "queue", "json"],
  report: ["step", "key", "json"],
};
const usesSettings = [...SLIDE_STEPS, "enqueue", "report"].includes(command);
const allowed = new Set([...(usesSettings ? ALLOWED.settings : []), ...ALLOWED[command], "help"]);
for (const k of Object.keys(a)) {
  if (!allowed.has(k)) fail(`--${k} does not apply to "${command}"`);
}

function settingsFromFlags(): SlideStepSettings {
  const tissue = a.tissue === undefined ? undefined : a.tissue;
  if (tissue !== undefined && !(tissue in TISSUE_PRESETS)) {
    fail(`--tissue "${tissue}" is not one of ${Object.keys(TISSUE_PRESETS).join(", ")}`);
  }
  const aggregate = a.aggregate;
  if (aggregate !== undefined && !["max", "mean", "noisyOr"].includes(aggregate)) {
    fail(`--aggregate "${aggregate}" is not "max", "mean" or "noisyOr"`);
  }
  return {
    tissue: tissue as TissuePreset | undefined,
    level: num("level", a.level, isInt(0), "an integer ≥ 0"),
    patchSize: num("patch-size", a["patch-size"], isInt(1), "an integer ≥ 1"),
    stride: num("stride", a.stride, isInt(1), "an integer ≥ 1"),
    minTissue: num("min-tissue", a["min-tissue"], (v) => v >= 0 && v <= 1, "in [0, 1]"),
    savePatches: a["save-patches"] || undefined,
    annotationsDir: a.annotations === undefined ? undefined : resolve(a.annotations),
    labelThreshold: num("label-threshold", a["label-threshold"], (v) => v > 0 && v <= 1, "in (0, 1]"),
    cnn: a.cnn === undefined ? undefined : a.cnn.endsWith(".safetensors") ? resolve(a.cnn) : a.cnn,
    vit: a.vit === undefined ? undefined : a.vit.endsWith(".safetensors") ? resolve(a.vit) : a.vit,
    seed: num("seed", a.seed, isInt(0), "an integer ≥ 0"),
    lowSize: num("low-size", a["low-size"], isInt(1), "an integer ≥ 1"),
    highSize: num("high-size", a["high-size"], isInt(1), "an integer ≥ 1"),
    topK: num("top-k", a["top-k"], (v) => v > 0, "a count ≥ 1 or a fraction in (0, 1)"),
    batchSize: num("batch-size", a["batch-size"], isInt(1), "an integer ≥ 1"),
    aggregate: aggregate as SlideStepSettings["aggregate"],
  };
}

function parseSteps(raw: string | undefined, one: boolean): SlideStep[] {
  if (raw === undefined) fail(`--step is required (${SLIDE_STEPS.join(", ")})`);
  const steps = raw.split(",").map((s) => s.trim()).filter(Boolean);
  for (const s of steps) {
    if (!(SLIDE_STEPS as readonly string[]).includes(s)) {
      fail(`--step "${s}" is not one of ${SLIDE_STEPS.join(", ")}`);
    }
  }
  if (steps.length === 0) fail(`--step "${raw}" names no step`);
  if (one && steps.length !== 1) fail(`--step takes one step here, got "${raw}"`);
  return steps as SlideStep[];
}

const conn = { redis: a.redis, queue: a.queue };
if (a.redis !== undefined) {
  const { redisOptions } = await import("../lib/wsi/slide_queue.ts");
  tryOr(() => redisOptions(a.redis));
}

async function slidesFromArgs(): Promise<string[]> {
  if (rest.length === 0) fail(`"${command}" needs slides (paths or globs)`);
  try {
    return await expandSlides(rest);
  } catch (e) {
    fail((e as Error).message);
  }
}

if ((SLIDE_STEPS as readonly string[]).includes(command)) {
  const step = command as SlideStep;
  if (!a.out) fail("--out is required");
  const settings = settingsFromFlags();
  await resolveStepSettings(step, settings).catch((e) => fail(e.message));
  const shard = a.shard === undefined ? undefined : tryOr(() => parseShard(a.shard!));
  let slides = await slidesFromArgs();
  if (shard) slides = shardSlides(slides, shard);
  if (step === "infer") {
    const choice = a.backend === undefined
      ? undefined
      : tryOr(() => parseBackendChoice(a.backend!, "--backend"));
    await initBackend(choice, { log: !a.quiet });
  }
  const out = resolve(a.out);
  let failed = 0, skipped = 0;
  for (const slidePath of slides) {
    try {
      const r = await runSlideStep({ step, slidePath, settings, out }, {
        overwrite: a.overwrite,
        progress: !a.quiet,
      });
      if (r.skipped) skipped++;
      console.log(`${step} ${r.record.slideId}: ${r.skipped ? "done already" : "ok"} → ${r.recordPath}`);
    } catch (e) {
      failed++;
      console.error(`${step} ${slidePath}: FAILED: ${(e as Error).message}`);
    }
  }
  console.log(`${step}: ${slides.length - failed} ok (${skipped} done already), ${failed} failed`);
  Deno.exit(failed ? 1 : 0);
}

if (command === "enqueue") {
  if (!a.out) fail("--out is required");
  const steps = parseSteps(a.step, false);
  const settings = settingsFromFlags();
  for (const s of steps) await resolveStepSettings(s, settings).catch((e) => fail(e.message));
  const slides = await slidesFromArgs();
  const { enqueueSlides } = await import("../lib/wsi/slide_queue.ts");
  const r = await enqueueSlides(slides, steps, settings, resolve(a.out), {
    ...conn,
    attempts: num("attempts", a.attempts, isInt(1), "an integer ≥ 1"),
    backoffMs: num("backoff", a.backoff, isInt(0), "an integer ≥ 0"),
    retryFailed: a["retry-failed"],
  }).catch((e) => {
    console.error(`wsi enqueue: ${e.message}`);
    Deno.exit(1);
  });
  console.log(
    `enqueue: ${r.added.length} added, ${r.queued.length} already queued, ${r.done.length} done already, ` +
      `${r.retried.length} failed jobs retried`,
  );
  Deno.exit(0);
}

if (command === "status") {
  if (rest.length) fail(`"status" takes no slides, got ${JSON.stringify(rest)}`);
  const { formatQueueStatus, queueStatus } = await import("../lib/wsi/slide_queue.ts");
  const s = await queueStatus(conn).catch((e) => {
    console.error(`wsi status: ${e.message}`);
    Deno.exit(1);
  });
  console.log(a.json ? JSON.stringify(s, null, 2) : formatQueueStatus(s));
  Deno.exit(0);
}

if (command === "report") {
  if (!a.out) fail("--out is required");
  if (rest.length) fail(`"report" takes no slides, got ${JSON.stringify(rest)}`);
  const step = a.step === undefined ? "infer" : parseSteps(a.step, true)[0];
  const out = resolve(a.out);
  const dir = a.key !== undefined
    ? `${out}/${step}/${a.key}`
    : stepDir(out, await resolveStepSettings(step, settingsFromFlags()).catch((e) => fail(e.message)));
  let rep;
  try {
    rep = await slideReport(dir);
  } catch (e) {
    let known = "";
    try {
      for await (const d of Deno.readDir(`${out}/${step}`)) if (d.isDirectory) known += ` ${d.name}`;
    } catch { /* none */ }
    console.error(
      `wsi report: ${(e as Error).message}\n${step} keys in ${out}:${known || " none"} ` +
        `(pass the same settings flags as the run, or --key)`,
    );
    Deno.exit(1);
  }
  const files = await writeSlideReport(rep, dir);
  console.log(a.json ? JSON.stringify(rep, null, 2) : formatSlideReport(rep));
  if (!a.json) console.log(`wrote ${files.join(", ")}`);
  Deno.exit(0);
}

// worker
if (rest.length) fail(`"worker" takes no slides, got ${JSON.stringify(rest)}`);
const choice = a.backend === undefined ? undefined : tryOr(() => parseBackendChoice(a.backend!, "--backend"));
const concurrency = num("concurrency", a.concurrency, isInt(1), "an integer ≥ 1") ?? 1;
const graceS = num("grace", a.grace, (v) => v >= 0, "a number of seconds ≥ 0") ?? 300;
const idleS = num("exit-when-idle", a["exit-when-idle"], (v) => v > 0, "a positive number of seconds");
const lockDuration = num("lock-duration", a["lock-duration"], isInt(1000), "an integer ≥ 1000 (ms)");
const stalledInterval = num("stalled-interval", a["stalled-interval"], isInt(100), "an integer ≥ 100 (ms)");
const { openSlideQueue, startSlideWorker } = await import("../lib/wsi/slide_queue.ts");
let backend: Promise<unknown> | undefined; // initialised at the first infer job
const w = startSlideWorker({
  ...conn,
  concurrency,
  lockDuration,
  stalledInterval,
  prepare: async (job) => {
    if (job.step !== "infer") return;
    backend ??= initBackend(choice, { log: !a.quiet }).then((b) => {
      console.log(`worker ${Deno.pid}: backend ${b.name}`);
    });
    await backend;
  },
  onEvent: (e) => console.log(`worker ${Deno.pid}: ${e.type} ${e.jobId}${e.detail ? `: ${e.detail}` : ""}`),
});
console.log(
  `worker ${Deno.pid}: ${w.name} on ${
    conn.redis ?? Deno.env.get("WSI_REDIS_URL") ?? "redis://127.0.0.1:6379"
  } ` +
    `queue ${conn.queue ?? "wsi"}, concurrency ${concurrency}`,
);
let stopping = false;
const stop = async (why: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`worker ${Deno.pid}: ${why}: finishing the current job (hard stop in ${graceS} s)`);
  await w.close(graceS * 1000);
  console.log(`worker ${Deno.pid}: stopped`);
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
// The worker's Redis connections alone do not keep the process alive while the queue is empty: poll.
const q = idleS === undefined ? undefined : openSlideQueue(conn);
let idleSince = Date.now();
while (!stopping) {
  await new Promise((r) => setTimeout(r, 500));
  if (!q || stopping) continue;
  const c = await q.getJobCounts("waiting", "active", "delayed", "prioritized");
  const busy = (c.waiting ?? 0) + (c.active ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0);
  if (busy > 0) idleSince = Date.now();
  else if (Date.now() - idleSince >= idleS! * 1000) {
    await q.close();
    await stop("queue empty");
  }
}
