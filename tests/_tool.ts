/** Runs a tool of tools/ as a user would (a subprocess, wasm backend) for the end-to-end tool tests. */
import { join, resolve } from "node:path";
import { assertEquals } from "./_assert.ts";

const root = resolve(new URL("..", import.meta.url).pathname);

/**
 * Runs `deno run -A tools/<script> ...args` on the wasm backend and asserts it exits 0 (the failure message
 * shows the end of its stderr).
 *
 * @example
 * ```ts
 * await runTool("synthetic_study.ts", ["--profile", "quick", "--out", dir]);
 * ```
 */
export async function runTool(script: string, args: string[]): Promise<void> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(root, "tools", script), ...args],
    stdout: "piped",
    stderr: "piped",
    env: { TFJS_BACKEND: "wasm" },
  }).output();
  assertEquals(r.code, 0, new TextDecoder().decode(r.stderr).slice(-3000));
}
