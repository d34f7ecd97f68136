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
