import { assertEquals } from "./_assert.ts";
import * as lib from "../lib/mod.ts";

Deno.test("lib/mod.ts re-exports every value of every folder's barrel, and tf", async () => {
  const barrels = [
    "backend/mod.ts",
    "data/mod.ts",
    "experiment/mod.ts",
    "experiment/study.ts",
    "experiment/cam.ts",
    "metrics/mod.ts",
    "models/mod.ts",
    "pruning/mod.ts",
    "report/mod.ts",
    "train/mod.ts",
    "util/mod.ts",
    "viz/mod.ts",
    "weights/mod.ts",
    "wsi/mod.ts",
    "profile.ts",
  ];
  const missing: string[] = [];
  for (const b of barrels) {
    const m = await import(`../lib/${b}`);
    for (const [name, value] of Object.entries(m)) {
      if ((lib as Record<string, unknown>)[name] !== value) missing.push(`${b}: ${name}`);
    }
  }
  assertEquals(missing, []);
  assertEquals(typeof lib.tf.tensor, "function");
  assertEquals(typeof lib.createModel, "function");
});
