/**
 * A private `redis-server` (Debian package `redis-server`) on 127.0.0.1, a free port and a temporary folder,
 * for tests and benchmarks of the slide queue. Nothing is persisted; {@link RedisServer.stop} ends it and
 * removes the folder.
 *
 * @module
 */

/** A running private redis-server. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>`. */
  url: string;
  port: number;
  /** Its working folder (removed by `stop`). */
  dir: string;
  /** The process id. */
  pid: number;
  /** Stops the server (SIGTERM, then waits for it) and removes its folder. */
  stop(): Promise<void>;
}

/** Path of the `redis-server` binary, or `undefined` when it is not installed. */
export function findRedisServer(): string | undefined {
  for (const p of ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch { /* next */ }
  }
  return undefined;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function ping(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await c.write(new TextEncoder().encode("PING\r\n"));
      const buf = new Uint8Array(16);
      const n = await c.read(buf);
      return n !== null && new TextDecoder().decode(buf.subarray(0, n)).startsWith("+PONG");
    } finally {
      c.close();
    }
  } catch {
    return false;
  }
}

/**
 * Starts a private redis-server (no persistence) and waits until it answers PING.
 *
 * @example
 * ```ts
 * const redis = await startRedisServer();
 * try {
 *   // ... use redis.url
 * } finally {
 *   await redis.stop();
 * }
 * ```
 */
export async function startRedisServer(opts: { timeoutMs?: number } = {}): Promise<RedisServer> {
  const bin = findRedisServer();
  if (!bin) {
    throw new Error("startRedisServer(): redis-server not found (Debian: apt-get install -y redis-server)");
  }
  const dir = await Deno.makeTempDir({ prefix: "redis_" });
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = freePort();
    const child = new Deno.Command(bin, {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        dir,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        `${dir}/redis.log`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    while (!exited && Date.now() < deadline) {
      if (await ping(port)) {
        return {
          url: `redis://127.0.0.1:${port}`,
          port,
          dir,
          pid: child.pid,
          async stop() {
            if (!exited) {
              try {
                child.kill("SIGTERM");
              } catch { /* gone */ }
            }
            await status;
            await Deno.remove(dir, { recursive: true }).catch(() => {});
          },
        };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!exited) {
      child.kill("SIGKILL");
      await status;
    }
  }
  let log = "";
  try {
    log = (await Deno.readTextFile(`${dir}/redis.log`)).slice(-500);
  } catch { /* none */ }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  throw new Error(`startRedisServer(): redis-server did not start on 127.0.0.1 (3 tries); log: ${log}`);
}
