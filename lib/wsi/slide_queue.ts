/**
 * Slide processing on a Redis job queue (BullMQ): {@link enqueueSlides} adds one job per slide and step
 * (job id from the slide and the settings, so adding twice is one job, and slides whose outputs are done are
 * skipped), {@link startSlideWorker} processes jobs with {@link runSlideStep} (a worker killed mid-slide leaves
 * its job stalled; BullMQ hands it to another worker once the lock expires), {@link queueStatus} lists
 * waiting / active (with progress) / done / failed (with reasons). Results live in files, never only in Redis.
 *
 * @module
 */
import { hostname } from "node:os";
import { type Job, Queue, Worker } from "bullmq";
import { sha256Hex, slideFingerprint, slideIdOf } from "./extract_patches.ts";
import {
  resolveStepSettings,
  runSlideStep,
  type SlideStep,
  type SlideStepJob,
  slideStepStatus,
  stepKey,
} from "./slide_steps.ts";

/** Where the queue lives. */
export interface QueueConnection {
  /** `redis://[:password@]host[:port][/db]` (default `$WSI_REDIS_URL`, else `redis://127.0.0.1:6379`). */
  redis?: string;
  /** Queue name (default `"wsi"`). */
  queue?: string;
}

/**
 * Parses a Redis URL into BullMQ connection options (`maxRetriesPerRequest: null`, as BullMQ workers need).
 *
 * @example
 * ```ts
 * redisOptions("redis://:secret@10.0.0.5:6380/2"); // { host: "10.0.0.5", port: 6380, password: "secret", db: 2, ... }
 * ```
 */
export function redisOptions(url?: string): {
  host: string;
  port: number;
  password?: string;
  username?: string;
  db: number;
  maxRetriesPerRequest: null;
} {
  const raw = url ?? Deno.env.get("WSI_REDIS_URL") ?? "redis://127.0.0.1:6379";
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error(`Redis URL "${raw}" is not a URL; expected redis://host:port[/db]`);
  }
  if (u.protocol !== "redis:") throw new Error(`Redis URL "${raw}" must start with redis://`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) {
    throw new Error(`Redis URL "${raw}": database "${u.pathname}" is not an integer`);
  }
  return {
    host: u.hostname || "127.0.0.1",
    port: u.port ? Number(u.port) : 6379,
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    db,
    maxRetriesPerRequest: null,
  };
}

/**
 * Opens the queue (close it when done).
 *
 * @example
 * ```ts
 * const q = openSlideQueue({ redis: "redis://127.0.0.1:6379" });
 * console.log(await q.getJobCounts());
 * await q.close();
 * ```
 */
export function openSlideQueue(conn: QueueConnection = {}): Queue<SlideStepJob> {
  return new Queue<SlideStepJob>(conn.queue ?? "wsi", { connection: redisOptions(conn.redis) });
}

/** Options of {@link enqueueSlides}. */
export interface EnqueueOptions extends QueueConnection {
  /** Tries of a job before it fails (default 3). */
  attempts?: number;
  /** First retry delay in ms, doubled at each retry (default 2000). */
  backoffMs?: number;
  /** Put failed jobs of these slides back in the queue (default false: they stay failed, with their reason). */
  retryFailed?: boolean;
}

/** What {@link enqueueSlides} did, per slide and step. */
export interface EnqueueResult {
  /** Job ids added now. */
  added: string[];
  /** Job ids already waiting, active, delayed or failed (left as they are). */
  queued: string[];
  /** Slides whose outputs are already done (no job). */
  done: string[];
  /** Failed job ids put back in the queue (`retryFailed`). */
  retried: string[];
}

/**
 * The job id of one step of one slide: step, slide id and a hash of the settings, the slide file (size and
 * mtime) and its path. The same slide and settings give the same id on every machine.
 *
 * @example
 * ```ts
 * await slideJobId({ step: "extract", slidePath: "/data/tumor_001.tif", settings: {}, out: "/shared" });
 * // "extract.tumor_001.5c1e…"
 * ```
 */
export async function slideJobId(job: SlideStepJob): Promise<string> {
  const key = stepKey(await resolveStepSettings(job.step, job.settings));
  let fp: unknown = null;
  try {
    fp = await slideFingerprint(job.slidePath);
  } catch { /* unreadable: the job fails with the reason */ }
  const slideId = job.slideId ?? slideIdOf(job.slidePath);
  return `${job.step}.${slideId}.${
    sha256Hex(JSON.stringify([key, fp, job.slidePath, job.out])).slice(0, 16)
  }`;
}

/**
 * Adds one job per slide and step; idempotent: a job with the same id is not added twice, and a slide whose
 * outputs are done (files in `out`) gets no job. A completed job whose outputs have gone is added again.
 *
 * @example
 * ```ts
 * const r = await enqueueSlides(["a.tif", "b.tif"], ["extract", "infer"], { patchSize: 256 }, "/shared/wsi");
 * console.log(r.added.length, r.done.length);
 * ```
 */
export async function enqueueSlides(
  slides: readonly string[],
  steps: readonly SlideStep[],
  settings: SlideStepJob["settings"],
  out: string,
  opts: EnqueueOptions = {},
): Promise<EnqueueResult> {
  const ids = new Map<string, string>();
  for (const p of slides) {
    const id = slideIdOf(p);
    if (ids.has(id)) {
      throw new Error(`enqueueSlides(): "${p}" and "${ids.get(id)}" have the same slide id "${id}"`);
    }
    ids.set(id, p);
  }
  for (const step of steps) await resolveStepSettings(step, settings); // checks settings before any job
  const q = openSlideQueue(opts);
  const res: EnqueueResult = { added: [], queued: [], done: [], retried: [] };
  try {
    for (const step of steps) {
      for (const slidePath of slides) {
        const job: SlideStepJob = { step, slidePath, settings, out };
        const jobId = await slideJobId(job);
        if ((await slideStepStatus(job)).done) {
          res.done.push(jobId);
          continue;
        }
        const existing = await q.getJob(jobId);
        if (existing) {
          const state = await existing.getState();
          if (state === "completed") await existing.remove(); // outputs gone: redo
          else if (state === "failed" && opts.retryFailed) {
            await existing.retry("failed");
            res.retried.push(jobId);
            continue;
          } else {
            res.queued.push(jobId);
            continue;
          }
        }
        await q.add(`${step} ${slideIdOf(slidePath)}`, job, {
          jobId,
          attempts: opts.attempts ?? 3,
          backoff: { type: "exponential", delay: opts.backoffMs ?? 2000 },
          removeOnComplete: false,
          removeOnFail: false,
        });
        res.added.push(jobId);
      }
    }
  } finally {
    await q.close();
  }
  return res;
}

/** Options of {@link startSlideWorker}. */
export interface SlideWorkerOptions extends QueueConnection {
  /** Jobs processed at once by this worker (default 1). */
  concurrency?: number;
  /** Lock of an active job in ms; a dead worker's job is handed on after it expires (default 30000). */
  lockDuration?: number;
  /** How often stalled jobs are looked for, ms (default 30000). */
  stalledInterval?: number;
  /** Times a job may stall (its worker died) before it fails (default 2). */
  maxStalledCount?: number;
  /** Called before each job (e.g. to initialise the compute backend once for `infer`). */
  prepare?: (job: SlideStepJob) => Promise<void>;
  /** Events: job started, done, failed, stalled (for logs). */
  onEvent?: (e: { type: "start" | "done" | "failed" | "stalled"; jobId: string; detail?: string }) => void;
}

/** A running worker. */
export interface SlideWorker {
  /** The BullMQ worker. */
  worker: Worker<SlideStepJob>;
  /** Its name in the queue (`host:pid`). */
  name: string;
  /**
   * Stops taking jobs and waits for the current ones to finish; `graceMs` later (if given) it stops hard,
   * leaving unfinished jobs to be handed to another worker when their lock expires.
   */
  close(graceMs?: number): Promise<void>;
}

/**
 * Starts a worker that runs {@link runSlideStep} for each job, reporting progress (throttled to 2 per second)
 * to the queue. A slide that throws fails the attempt with the error message as its reason.
 *
 * @example
 * ```ts
 * const w = startSlideWorker({ redis: "redis://127.0.0.1:6379", concurrency: 1 });
 * Deno.addSignalListener("SIGTERM", () => w.close(60_000));
 * ```
 */
export function startSlideWorker(opts: SlideWorkerOptions = {}): SlideWorker {
  const name = `${hostname()}:${Deno.pid}`;
  const ev = opts.onEvent ?? (() => {});
  const processor = async (job: Job<SlideStepJob>) => {
    ev({ type: "start", jobId: job.id! });
    await opts.prepare?.(job.data);
    let last = 0;
    const r = await runSlideStep(job.data, {
      onProgress: (stage, done, total) => {
        const now = Date.now();
        if (now - last < 500 && done < total) return;
        last = now;
        job.updateProgress({ stage, done, total }).catch(() => {});
      },
    });
    return { recordPath: r.recordPath, skipped: r.skipped, seconds: r.record.run.seconds };
  };
  const worker = new Worker<SlideStepJob>(opts.queue ?? "wsi", processor, {
    connection: redisOptions(opts.redis),
    concurrency: opts.concurrency ?? 1,
    lockDuration: opts.lockDuration ?? 30_000,
    stalledInterval: opts.stalledInterval ?? 30_000,
    maxStalledCount: opts.maxStalledCount ?? 2,
    name,
  });
  worker.on("completed", (job) => ev({ type: "done", jobId: job.id! }));
  worker.on("failed", (job, err) => ev({ type: "failed", jobId: job?.id ?? "?", detail: err.message }));
  worker.on("stalled", (jobId) => ev({ type: "stalled", jobId }));
  worker.on("error", (err) => console.error(`worker ${name}: ${err.message}`));
  let closing: Promise<void> | undefined;
  return {
    worker,
    name,
    close(graceMs?: number) {
      closing ??= (async () => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const graceful = worker.close();
        if (graceMs !== undefined) {
          const hard = new Promise<void>((resolve) => {
            timer = setTimeout(() => worker.close(true).then(resolve, resolve), graceMs);
          });
          await Promise.race([graceful, hard]);
        } else await graceful;
        clearTimeout(timer);
      })();
      return closing;
    },
  };
}

/** One job in {@link QueueStatus}. */
export interface QueueJobInfo {
  id: string;
  step: string;
  slideId: string;
  slidePath: string;
  attemptsMade: number;
  /** Active jobs: `{ stage, done, total }` as last reported. */
  progress?: { stage?: string; done?: number; total?: number };
  /** Failed jobs: the reason. */
  failedReason?: string;
  /** The worker processing or last processing it. */
  worker?: string;
}

/** What {@link queueStatus} returns. */
export interface QueueStatus {
  counts: { waiting: number; active: number; done: number; failed: number; delayed: number };
  active: QueueJobInfo[];
  failed: QueueJobInfo[];
  waiting: QueueJobInfo[];
}

function info(j: Job<SlideStepJob>): QueueJobInfo {
  const p = j.progress;
  return {
    id: j.id!,
    step: j.data.step,
    slideId: slideIdOf(j.data.slidePath),
    slidePath: j.data.slidePath,
    attemptsMade: j.attemptsMade,
    ...(typeof p === "object" && p !== null ? { progress: p as QueueJobInfo["progress"] } : {}),
    ...(j.failedReason ? { failedReason: j.failedReason } : {}),
    ...(j.processedBy ? { worker: j.processedBy } : {}),
  };
}

/**
 * Counts and details of the queue: every active job with its progress, every failed job with its reason,
 * and the first `limit` waiting jobs (default 20).
 *
 * @example
 * ```ts
 * const s = await queueStatus({ redis: "redis://127.0.0.1:6379" });
 * s.failed.map((f) => `${f.slideId}: ${f.failedReason}`);
 * ```
 */
export async function queueStatus(conn: QueueConnection = {}, limit = 20): Promise<QueueStatus> {
  const q = openSlideQueue(conn);
  try {
    const c = await q.getJobCounts("waiting", "active", "completed", "failed", "delayed", "prioritized");
    const [active, failed, waiting] = await Promise.all([
      q.getJobs(["active"], 0, -1, true),
      q.getJobs(["failed"], 0, -1, true),
      q.getJobs(["waiting", "prioritized"], 0, limit - 1, true),
    ]);
    return {
      counts: {
        waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
        active: c.active ?? 0,
        done: c.completed ?? 0,
        failed: c.failed ?? 0,
        delayed: c.delayed ?? 0,
      },
      active: active.filter(Boolean).map((j) => info(j as Job<SlideStepJob>)),
      failed: failed.filter(Boolean).map((j) => info(j as Job<SlideStepJob>)),
      waiting: waiting.filter(Boolean).map((j) => info(j as Job<SlideStepJob>)),
    };
  } finally {
    await q.close();
  }
}

/**
 * Renders a {@link QueueStatus} as text: counts, a progress bar per active slide, failed slides with reasons.
 *
 * @example
 * ```ts
 * console.log(formatQueueStatus(await queueStatus()));
 * ```
 */
export function formatQueueStatus(s: QueueStatus, width = 24): string {
  const c = s.counts;
  const lines = [
    `${c.waiting} waiting, ${c.active} active, ${c.done} done, ${c.failed} failed, ${c.delayed} delayed (retry)`,
  ];
  if (s.active.length) lines.push("active:");
  for (const j of s.active) {
    const p = j.progress ?? {};
    const frac = p.total ? Math.min(1, (p.done ?? 0) / p.total) : 0;
    const fill = Math.round(frac * width);
    lines.push(
      `  ${j.step.padEnd(7)} ${j.slideId.padEnd(20)} [${"#".repeat(fill)}${"-".repeat(width - fill)}] ` +
        `${(100 * frac).toFixed(0).padStart(3)}% ${p.stage ?? "starting"} ${p.done ?? 0}/${p.total ?? "?"}` +
        (j.worker ? `  (${j.worker})` : ""),
    );
  }
  if (s.failed.length) lines.push("failed:");
  for (const j of s.failed) {
    lines.push(
      `  ${j.step.padEnd(7)} ${j.slideId.padEnd(20)} after ${j.attemptsMade} attempts: ${j.failedReason}`,
    );
  }
  return lines.join("\n");
}
