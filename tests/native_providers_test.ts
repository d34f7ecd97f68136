/**
 * The native backend's other lowering: the whole native kernel suite again with OpenBLAS
 * (`BLAS_PROVIDER=cblas`, so convolutions go through im2col + GEMM instead of oneDNN primitives),
 * and oneDNN's GEMM with `NATIVE_CONV=im2col`. Both paths exist for machines without oneDNN 2.x.
 */
import { assertEquals } from "./_assert.ts";

async function nativeSuiteWith(env: Record<string, string>): Promise<{ ok: boolean; tail: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", new URL("./native_test.ts", import.meta.url).pathname],
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { ok: out.success, tail: text.split("\n").slice(-40).join("\n") };
}

for (
  const [what, env] of [
    ["OpenBLAS with im2col convolutions (BLAS_PROVIDER=cblas)", { BLAS_PROVIDER: "cblas" }],
    ["oneDNN GEMM with im2col convolutions (NATIVE_CONV=im2col)", { NATIVE_CONV: "im2col" }],
  ] as const
) {
  Deno.test({
    name: `native kernel suite passes with ${what}`,
    ignore: Deno.build.os !== "linux" || !!Deno.env.get("BLAS_LIBRARY") || !!Deno.env.get("BLAS_PROVIDER") ||
      !!Deno.env.get("NATIVE_CONV"),
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const r = await nativeSuiteWith(env);
      assertEquals(r.ok, true, `native_test.ts failed with ${JSON.stringify(env)}:\n${r.tail}`);
      assertEquals(/\| 0 failed/.test(r.tail), true, r.tail);
    },
  });
}
