// Many slides, many processes: `deno task wsi` on a private redis-server (127.0.0.1, a free port, a temp
// folder; stopped at the end) with real worker processes, one of them killed with SIGKILL mid-slide, and
// static shards without Redis. Skipped, with the reason printed, without libopenslide or redis-server
// (Debian: apt-get install -y libopenslide0 redis-server).
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../lib/backend/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { findRedisServer, startRedisServer } from "../lib/util/mod.ts";
import {
  expandSlides,
  openslideAvailable,
  openslideUnavailableReason,
  parseShard,
  readCoordsFile,
  readStepRecords,
  resolveStepSettings,
  runSlideStep,
  shardSlides,
  type SlideStepSettings,
  stepDir,
  type SyntheticSlideSet,
  writeSyntheticSlideSet,
} from "../lib/wsi/mod.ts";
import { formatQueueStatus, queueStatus, redisOptions } from "../lib/wsi/slide_queue.ts";

const TOOL = new URL("../tools/wsi.ts", import.meta.url).pathname;
const HAVE_OPENSLIDE = openslideAvailable();
const HAVE_REDIS = findRedisServer() !== undefined;
if (!HAVE_OPENSLIDE) console.warn(`wsi_queue_test: slide tests SKIPPED: ${openslideUnavailableReason()}`);
if (!HAVE_REDIS) {
  console.warn("wsi_queue_test: queue tests SKIPPED: redis-server not found (apt-get install redis-server)");
}

/** Settings of the queue tests: small patches on small slides, labelled from the annotations. */
function settingsOf(set: SyntheticSlideSet): SlideStepSettings {
  return { tissue: "small", patchSize: 128, annotationsDir: set.annotationsDir };
}
function settingFlags(set: SyntheticSlideSet): string[] {
  return ["--tissue", "small", "--patch-size", "128", "--annotations", set.annotationsDir];
}

let setPromise: Promise<{ dir: string; set: SyntheticSlideSet }> | undefined;
function slideSet() {
  setPromise ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "wsi_queue_test_" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const set = await writeSyntheticSlideSet(join(dir, "slides"), { count: 12, side: 2048, corrupt: 1 });
    return { dir, set };
  })();
  return setPromise;
}

/** A `deno run tools/wsi.ts` child with its stdout read line by line. */
class WsiProcess {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  #waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  readonly done: Promise<Deno.CommandStatus>;
  constructor(args: string[]) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", TOOL, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.child = child;
    const readOut = (async () => {
      let buf = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.lines.push(line);
          this.#waiters = this.#waiters.filter((w) => (w.re.test(line) ? (w.resolve(line), false) : true));
        }
      }
    })();
    const readErr = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) this.stderr += chunk;
    })();
    this.done = Promise.all([readOut, readErr]).then(() => this.child.status);
  }
  /** Resolves with the first line (already seen or coming) matching `re`. */
  waitFor(re: RegExp, timeoutMs = 60_000): Promise<string> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () =>
          reject(
            new Error(
              `no line matching ${re} in ${timeoutMs} ms; got:\n${this.lines.join("\n")}\n${this.stderr}`,
            ),
          ),
        timeoutMs,
      );
      this.#waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) });
    });
  }
  get output(): string {
    return this.lines.join("\n") + "\n" + this.stderr;
  }
}

async function wsi(args: string[]): Promise<{ code: number; out: string }> {
  const p = new WsiProcess(args);
  const st = await p.done;
  return { code: st.code, out: p.output };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no end after ${ms} ms`)), ms);
    }),
  ]);
}

Deno.test("deno task wsi rejects unknown flags and misplaced ones with a clear message and exit 2", async () => {
  const a = await wsi(["extract", "x.tif", "--out", "o", "--bogus"]);
  assertEquals(a.code, 2);
  assert(a.out.includes("--bogus") && a.out.includes("--help"), a.out);
  const b = await wsi(["extract", "x.tif", "--out", "o", "--concurrency", "2"]);
  assertEquals(b.code, 2);
  assert(b.out.includes('--concurrency does not apply to "extract"'), b.out);
  const c = await wsi(["frobnicate"]);
  assertEquals(c.code, 2);
  assert(c.out.includes('unknown command "frobnicate"'), c.out);
  const d = await wsi(["extract", "x.tif", "--out", "o", "--shard", "3/3"]);
  assertEquals(d.code, 2);
  assert(d.out.includes('shard "3/3" is not i/N'), d.out);
});

Deno.test("formatQueueStatus() draws a progress bar per active slide and lists failures with reasons", () => {
  const text = formatQueueStatus({
    counts: { waiting: 3, active: 1, done: 7, failed: 1, delayed: 0 },
    active: [{
      id: "infer.slide_03.x",
      step: "infer",
      slideId: "slide_03",
      slidePath: "/s/slide_03.tif",
      attemptsMade: 0,
      progress: { stage: "score", done: 40, total: 80 },
      worker: "node7:123",
    }],
    failed: [{
      id: "extract.bad.y",
      step: "extract",
      slideId: "bad",
      slidePath: "/s/bad.tif",
      attemptsMade: 3,
      failedReason: 'Slide.open(): "/s/bad.tif" is not a slide OpenSlide can read',
    }],
    waiting: [],
  }, 10);
  assert(text.startsWith("3 waiting, 1 active, 7 done, 1 failed, 0 delayed"), text);
  assert(text.includes("slide_03") && text.includes("[#####-----]  50% score 40/80  (node7:123)"), text);
  assert(text.includes("after 3 attempts: Slide.open()"), text);
});

Deno.test("redisOptions() parses redis:// URLs and names a bad one", () => {
  assertEquals(redisOptions("redis://:s%40cret@10.0.0.5:6380/2"), {
    host: "10.0.0.5",
    port: 6380,
    password: "s@cret",
    db: 2,
    maxRetriesPerRequest: null,
  });
  let msg = "";
  try {
    redisOptions("http://x:1");
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes('"http://x:1"') && msg.includes("redis://"), msg);
});

Deno.test("shardSlides() gives every slide to exactly one of N shards", () => {
  const slides = Array.from({ length: 13 }, (_, i) => `s${i}`);
  const seen = [0, 1, 2, 3].flatMap((i) => shardSlides(slides, parseShard(`${i}/4`)));
  assertEquals(seen.sort(), [...slides].sort());
  assertEquals(shardSlides(slides, parseShard("0/4")).length, 4);
  assertEquals(shardSlides(slides, parseShard("3/4")).length, 3);
});

Deno.test({
  name: "deno task wsi extract --shard i/N: two array tasks without Redis cover the slides once",
  ignore: !HAVE_OPENSLIDE,
  sanitizeResources: false,
  fn: async () => {
    const { dir, set } = await slideSet();
    const out = join(dir, "shard_out");
    const slides = set.slides.slice(0, 5);
    const runs = await Promise.all(
      ["0/2", "1/2"].map((s) =>
        wsi(["extract", ...slides, "--out", out, ...settingFlags(set), "--shard", s, "--quiet"])
      ),
    );
    for (const r of runs) assertEquals(r.code, 0, r.out);
    assert(runs[0].out.includes("extract: 3 ok"), runs[0].out);
    assert(runs[1].out.includes("extract: 2 ok"), runs[1].out);
    const { records } = await readStepRecords(
      stepDir(out, await resolveStepSettings("extract", settingsOf(set))),
    );
    assertEquals(records.map((r) => r.slideId), ["slide_00", "slide_01", "slide_02", "slide_03", "slide_04"]);
    assertEquals(new Set(records.map((r) => r.run.pid)).size, 2);
    // a second run finds every output done
    const again = await wsi(["extract", ...slides, "--out", out, ...settingFlags(set), "--quiet"]);
    assert(again.out.includes("extract: 5 ok (5 done already), 0 failed"), again.out);
  },
});

Deno.test({
  name:
    "3 queue workers, one killed mid-slide: every good slide once, as one process makes it; the corrupt " +
    "one failed with its reason; enqueue after a Redis restart skips finished slides",
  ignore: !HAVE_OPENSLIDE || !HAVE_REDIS,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { dir, set } = await slideSet();
    const settings = settingsOf(set);
    const all = [...set.slides, ...set.corrupt];
    // the reference: one process, in this test
    const refOut = join(dir, "ref");
    for (const slidePath of set.slides) {
      await runSlideStep({ step: "extract", slidePath, settings, out: refOut });
    }
    const out = join(dir, "queue_out");
    let redis = await startRedisServer();
    const workers: WsiProcess[] = [];
    try {
      const q = ["--redis", redis.url, "--queue", "t1"];
      const enq = await wsi([
        "enqueue",
        ...all,
        "--out",
        out,
        "--step",
        "extract",
        ...settingFlags(set),
        ...q,
        "--attempts",
        "2",
        "--backoff",
        "200",
      ]);
      assert(enq.out.includes("13 added, 0 already queued, 0 done already"), enq.out);
      const enq2 = await wsi([
        "enqueue",
        ...all,
        "--out",
        out,
        "--step",
        "extract",
        ...settingFlags(set),
        ...q,
      ]);
      assert(enq2.out.includes("0 added, 13 already queued"), enq2.out);
      const workerArgs = [
        "worker",
        ...q,
        "--lock-duration",
        "2000",
        "--stalled-interval",
        "500",
        "--exit-when-idle",
        "3",
        "--quiet",
      ];
      const victim = new WsiProcess(workerArgs);
      workers.push(victim);
      await victim.waitFor(/ on redis:/);
      for (let i = 0; i < 2; i++) workers.push(new WsiProcess(workerArgs));
      const started = await victim.waitFor(/: start extract\.slide_/);
      victim.child.kill("SIGKILL");
      const killedJob = started.split(" ").at(-1)!;
      const killedSlide = killedJob.split(".")[1];
      const statuses = await withTimeout(
        Promise.all(workers.slice(1).map((w) => w.done)),
        100_000,
        "workers",
      );
      for (const [i, st] of statuses.entries()) assertEquals(st.code, 0, workers[i + 1].output);
      assertEquals((await victim.done).signal, "SIGKILL");
      const log = workers.slice(1).map((w) => w.output).join("\n");
      assert(log.includes(`done ${killedJob}`), `the killed worker's job was finished by another:\n${log}`);

      const s = await queueStatus({ redis: redis.url, queue: "t1" });
      assertEquals(s.counts, { waiting: 0, active: 0, done: 12, failed: 1, delayed: 0 });
      assertEquals(s.failed[0].slideId, "corrupt_00");
      assertEquals(s.failed[0].attemptsMade, 2);
      assert(
        s.failed[0].failedReason!.includes("is not a slide OpenSlide can read"),
        s.failed[0].failedReason,
      );
      const st = await wsi(["status", ...q]);
      assert(st.out.includes("0 waiting, 0 active, 12 done, 1 failed"), st.out);
      assert(st.out.includes("corrupt_00") && st.out.includes("after 2 attempts: Slide.open()"), st.out);

      // every good slide's output exactly once, equal to the single-process run
      const key = stepDir(out, await resolveStepSettings("extract", settings));
      const refKey = stepDir(refOut, await resolveStepSettings("extract", settings));
      // A process killed with SIGKILL inside an atomic write leaves its temporary file
      // (`<name>.<pid>.<random>.tmp`; the final files stay whole): the victim's are allowed, nobody else's.
      const victimTmp = (name: string) => name.endsWith(".tmp") && name.includes(`.${victim.child.pid}.`);
      const files = (await Array.fromAsync(Deno.readDir(key))).map((e) => e.name).filter((n) => !victimTmp(n))
        .sort();
      const want = set.slides.flatMap((p) => {
        const id = p.split("/").at(-1)!.replace(".tif", "");
        return [`${id}.coords`, `${id}.json`];
      });
      assertEquals(files, [...want, "settings.json"].sort());
      const got = await readStepRecords(key), ref = await readStepRecords(refKey);
      assertEquals(got.bad, []);
      assertEquals(
        got.records.map((r) => [r.slideId, r.result, r.source, r.annotations]),
        ref.records.map((r) => [r.slideId, r.result, r.source, r.annotations]),
      );
      for (const r of got.records) {
        const a = await readCoordsFile(join(key, `${r.slideId}.coords`));
        const b = await readCoordsFile(join(refKey, `${r.slideId}.coords`));
        assertEquals([a.x, a.y, a.labels, a.tissue], [b.x, b.y, b.labels, b.tissue], r.slideId);
      }
      const killedRecord = got.records.find((r) => r.slideId === killedSlide)!;
      assert(killedRecord.run.pid !== victim.child.pid, "written by a surviving worker");
      assert(
        got.records.some((r) => r.result.tumourPatches as number > 0),
        "some slides have tumour patches",
      );

      // a finished job whose output has gone is queued again; the failed one stays failed
      await Deno.remove(join(key, "slide_05.json"));
      const enqAgain = await wsi([
        "enqueue",
        ...all,
        "--out",
        out,
        "--step",
        "extract",
        ...settingFlags(set),
        ...q,
      ]);
      assert(enqAgain.out.includes("1 added, 1 already queued, 11 done already"), enqAgain.out);
      // Redis restarts empty: results live in files, enqueue again skips the finished slides
      await redis.stop();
      redis = await startRedisServer();
      const enq3 = await wsi([
        "enqueue",
        ...all,
        "--out",
        out,
        "--step",
        "extract",
        ...settingFlags(set),
        "--redis",
        redis.url,
        "--queue",
        "t1",
      ]);
      assert(enq3.out.includes("2 added, 0 already queued, 11 done already"), enq3.out);
      // the report aggregates the per-slide outputs
      const rep = await wsi(["report", "--out", out, "--step", "extract", ...settingFlags(set)]);
      assertEquals(rep.code, 0, rep.out);
      assert(rep.out.includes("- slides: 11"), rep.out);
    } finally {
      for (const w of workers) {
        try {
          w.child.kill("SIGKILL");
        } catch { /* exited */ }
        await w.done;
      }
      await redis.stop();
    }
  },
});

Deno.test({
  name: "SIGTERM lets a queue worker finish its current slide and take no other",
  ignore: !HAVE_OPENSLIDE || !HAVE_REDIS,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { dir, set } = await slideSet();
    const out = join(dir, "sigterm_out");
    const redis = await startRedisServer();
    let w: WsiProcess | undefined;
    try {
      const q = ["--redis", redis.url, "--queue", "t2"];
      const enq = await wsi([
        "enqueue",
        ...set.slides.slice(0, 3),
        "--out",
        out,
        "--step",
        "segment",
        "--tissue",
        "small",
        ...q,
      ]);
      assert(enq.out.includes("3 added"), enq.out);
      w = new WsiProcess(["worker", ...q, "--quiet"]);
      const started = await w.waitFor(/: start segment\./);
      w.child.kill("SIGTERM");
      const st = await withTimeout(w.done, 60_000, "worker after SIGTERM");
      assertEquals(st.code, 0, w.output);
      assert(w.output.includes(`done ${started.split(" ").at(-1)}`), w.output);
      assert(
        w.output.includes("SIGTERM: finishing the current job") && w.output.includes("stopped"),
        w.output,
      );
      const starts = w.lines.filter((l) => l.includes(": start ")).length;
      assert(starts < 3, `stopped before taking every job:\n${w.output}`);
      const s = await queueStatus({ redis: redis.url, queue: "t2" });
      assertEquals([s.counts.active, s.counts.done, s.counts.waiting], [0, starts, 3 - starts]);
      const { records } = await readStepRecords(
        stepDir(out, await resolveStepSettings("segment", { tissue: "small" })),
      );
      assertEquals(records.length, starts);
    } finally {
      try {
        w?.child.kill("SIGKILL");
      } catch { /* exited */ }
      await w?.done;
      await redis.stop();
    }
  },
});

Deno.test({
  name: "a queue worker's infer records equal one process's (same scores, selection and slide score)",
  ignore: !HAVE_OPENSLIDE || !HAVE_REDIS,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { dir, set } = await slideSet();
    await initBackend("cpu", { log: false });
    const slides = set.slides.slice(0, 2);
    const inferFlags = ["--top-k", "4", "--low-size", "16", "--high-size", "32", "--batch-size", "16"];
    const settings = { ...settingsOf(set), topK: 4, lowSize: 16, highSize: 32, batchSize: 16 };
    const refOut = join(dir, "infer_ref"), out = join(dir, "infer_queue");
    await runSlideStep({ step: "infer", slidePath: slides[0], settings, out: refOut }); // creates the models
    const before = tf.memory().numTensors;
    await runSlideStep({ step: "infer", slidePath: slides[1], settings, out: refOut });
    assertEquals(tf.memory().numTensors, before, "no tensor leak per slide");
    const redis = await startRedisServer();
    try {
      const q = ["--redis", redis.url, "--queue", "t3"];
      const enq = await wsi([
        "enqueue",
        ...slides,
        "--out",
        out,
        "--step",
        "infer",
        ...settingFlags(set),
        ...inferFlags,
        ...q,
      ]);
      assert(enq.out.includes("2 added"), enq.out);
      const w = await wsi(["worker", ...q, "--backend", "cpu", "--exit-when-idle", "2", "--quiet"]);
      assertEquals(w.code, 0, w.out);
      const dirOf = async (o: string) => stepDir(o, await resolveStepSettings("infer", settings));
      const got = await readStepRecords(await dirOf(out)), ref = await readStepRecords(await dirOf(refOut));
      assertEquals(got.records.length, 2);
      const strip = (r: { result: Record<string, unknown> }) => ({ ...r.result, seconds: null });
      assertEquals(got.records.map(strip), ref.records.map(strip));
      assert((got.records[0].result.scores as number[]).length > 4, "every patch scored");
      for (const r of got.records) assertEquals(r.run.backend, "cpu");
      const rep = await wsi(["report", "--out", out, ...settingFlags(set), ...inferFlags]);
      assert(rep.out.includes("- slides: 2") && rep.out.includes("slideScore"), rep.out);
    } finally {
      await redis.stop();
    }
  },
});

Deno.test({
  name: "expandSlides() sorts globs and names a pattern that matches nothing",
  ignore: !HAVE_OPENSLIDE,
  fn: async () => {
    const { set } = await slideSet();
    const dir = set.annotationsDir.replace(/\/annotations$/, "");
    const got = await expandSlides([`${dir}/slide_0[0-2].tif`, `${dir}/slide_01.tif`]);
    assertEquals(got.map((p) => p.split("/").at(-1)), ["slide_00.tif", "slide_01.tif", "slide_02.tif"]);
    let msg = "";
    try {
      await expandSlides([`${dir}/*.svs`]);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.includes("no slide matches") && msg.includes("*.svs"), msg);
  },
});
