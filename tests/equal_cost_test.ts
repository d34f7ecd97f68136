/** The equal-cost study's arithmetic: controls matched in GMACs to the hybrid, and intervals over seeds. */
import {
  equalCostPlan,
  formatSeedCI,
  matchTokens,
  pairedDifference,
  seedSummary,
} from "../lib/experiment/equal_cost.ts";
import { createModel } from "../lib/models/mod.ts";
import { createStrategy, singleStage } from "../lib/pruning/mod.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, forEachBackend } from "./_backends.ts";

forEachBackend("matchTokens gives a control the tokens the hybrid's GMACs buy", () => {
  const vit = createModel("vit_test", {}, { seed: 1 });
  const hybrid = createModel("hybrid_test", {}, { seed: 1 });
  try {
    const n = 64; // vit_test: 32 px, patch 4
    const random = createStrategy("random"), attention = createStrategy("attention");
    // An exact hit returns that count.
    const g35 = random.gmacs(vit, singleStage(35 / n, 0));
    assertEquals(matchTokens(vit, "random", 0, g35), { tokens: 35, keep: 35 / n, gmacs: g35 });
    // The hybrid at keep 0.5 runs 32 tokens plus its stem and selector: random gets more tokens.
    const target = createStrategy("cnn").gmacs(hybrid, singleStage(0.5, 0));
    const m = matchTokens(vit, "random", 0, target);
    assert(m.tokens > 32, `random matched ${m.tokens} tokens; the hybrid's stem should buy more than 32`);
    // Nearest: one token more or fewer is farther from the target.
    for (const t of [m.tokens - 1, m.tokens + 1]) {
      const g = random.gmacs(vit, singleStage(t / n, 0));
      assert(Math.abs(g - target) >= Math.abs(m.gmacs - target), `${t} tokens (${g}) is nearer to ${target}`);
    }
    // Attention prunes after block 1 (the first block sees every token): fewer tokens at the same cost.
    const a = matchTokens(vit, "attention", 1, target);
    assert(a.tokens < m.tokens, `attention ${a.tokens} tokens, random ${m.tokens}`);
    assertClose([a.gmacs], [attention.gmacs(vit, singleStage(a.keep, 1))], 1e-12, "attention GMACs");
    assertThrows(() => matchTokens(vit, "random", 0, 0), RangeError, "targetGmacs 0");
  } finally {
    vit.dispose();
    hybrid.dispose();
  }
}, { backends: ["cpu"] });

Deno.test("seedSummary: mean, sample sd and the 95% Student-t interval, by hand", () => {
  const s = seedSummary([0.70, 0.72, 0.74]);
  assertClose([s.mean], [0.72], 1e-12, "mean");
  assertClose([s.std], [0.02], 1e-12, "std");
  // t(0.975, 2 df) = 4.303; half-width 4.303 · 0.02 / √3.
  const half = 4.303 * 0.02 / Math.sqrt(3);
  assertClose(s.ci, [0.72 - half, 0.72 + half], 1e-12, "ci");
  assertEquals(formatSeedCI(s), "72.0 [67.0, 77.0]");
  const one = seedSummary([0.5]);
  assertEquals(one.ci, [0.5, 0.5]);
  assertEquals(formatSeedCI(one), "50.0 (1 seed)");
  const d = pairedDifference([0.75, 0.74, 0.76], [0.70, 0.71, 0.70]);
  assertClose(d.values, [0.05, 0.03, 0.06], 1e-12, "paired differences");
  assertThrows(() => seedSummary([]), RangeError, "one or more");
  assertThrows(() => pairedDifference([1], [1, 2]), RangeError, "one per seed");
});

Deno.test("equalCostPlan: three seeds in the cpu profile, one in quick, and a copy each time", () => {
  const none = () => undefined;
  assertEquals(equalCostPlan("cpu", none).seeds, [0, 1, 2]);
  assertEquals(equalCostPlan("quick", none).seeds, [0]);
  const env = (v: Record<string, string>) => (k: string) => v[k];
  assertEquals(equalCostPlan("cpu", env({ CNNVIT_SEEDS: "0, 3" })).seeds, [0, 3]);
  assertEquals(equalCostPlan("cpu", env({ CNNVIT_ABLATION: "0" })).ablation, false);
  assertThrows(() => equalCostPlan("cpu", env({ CNNVIT_SEEDS: "0,x" })), Error, "CNNVIT_SEEDS");
  assertThrows(() => equalCostPlan("cpu", env({ CNNVIT_ABLATION: "yes" })), Error, "CNNVIT_ABLATION");
  const p = equalCostPlan("cpu", none);
  p.seeds.push(9);
  assertEquals(equalCostPlan("cpu", none).seeds, [0, 1, 2]);
  for (const prof of ["quick", "cpu", "full"] as const) {
    const q = equalCostPlan(prof, none);
    for (const k of q.compareKeeps) {
      assert(q.sweepKeeps.includes(k), `${prof}: compare keep ${k} not in the sweep`);
    }
  }
});
