import * as tf from "@tensorflow/tfjs-core";
import { assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { initBackend, parseBackendChoice } from "../lib/backend/mod.ts";

Deno.test("parseBackendChoice() rejects an unknown name and lists the valid ones", () => {
  assertThrows(() => parseBackendChoice("gpu", "TFJS_BACKEND"), Error, '"gpu"');
  assertEquals(parseBackendChoice(" WASM "), "wasm");
});

Deno.test({
  name: "initBackend('auto') picks an offline backend and says why the others were rejected",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const info = await initBackend("auto", { log: false });
    assertEquals(tf.getBackend(), info.tfBackend);
    if (info.name !== "node") {
      const node = info.rejected.find((r) => r.name === "node");
      assertEquals(node !== undefined && node.reason.length > 0, true);
    }
  },
});

Deno.test({
  name: "initBackend('node') fails with the reason when tfjs-node is not installed",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    let nodeLoads = true;
    try {
      await import("@tensorflow/tfjs-node");
    } catch {
      nodeLoads = false;
    }
    if (nodeLoads) {
      console.log("  (tfjs-node is installed here; checking that it is chosen instead)");
      assertEquals((await initBackend("node", { log: false })).name, "node");
      return;
    }
    await assertRejects(() => initBackend("node", { log: false }), Error, "tfjs-node");
  },
});

Deno.test({
  name: "initBackend() logs one short line; the reasons for rejected backends only when verbose",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const logged: string[] = [];
    const orig = console.log;
    console.log = (...a: unknown[]) => logged.push(a.join(" "));
    let quiet, loud;
    try {
      quiet = await initBackend("auto", { verbose: false });
      assertEquals(logged, [`backend ${quiet.summary}`]);
      logged.length = 0;
      loud = await initBackend("auto", { verbose: true });
    } finally {
      console.log = orig;
    }
    assertEquals(quiet.summary, loud.summary);
    assertEquals(quiet.summary.startsWith(`${quiet.name}: `), true, quiet.summary);
    assertEquals(quiet.summary.length < 60, true, quiet.summary);
    assertEquals(quiet.reason.length < 80, true, quiet.reason);
    if (quiet.name === "native") assertEquals(/ \d+ threads?$/.test(quiet.summary), true, quiet.summary);
    // Verbose: the summary line, then one line per rejected backend with its full reason.
    assertEquals(logged[0], `backend ${loud.summary}`);
    for (const r of loud.rejected) {
      assertEquals(
        logged.some((l) => l.includes(`${r.name} not used: ${r.reason}`)),
        true,
        logged.join("\n"),
      );
    }
  },
});
