import { TINY_RUN, withTinyRuns } from "./_tiny_run.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, assertNoLeak, forEachBackend, relErr, seededRandom } from "./_backends.ts";
import { createModel } from "../lib/models/mod.ts";
import type { ViT } from "../lib/models/vit.ts";
import { createStrategy, singleStage } from "../lib/pruning/mod.ts";
import { deitLoss } from "../lib/train/mod.ts";
import { Rng } from "../lib/util/mod.ts";

function distilledVit(seed = 1): ViT {
  return createModel("vit_test", { numClasses: 3, distillToken: true }, { seed }) as unknown as ViT;
}

const logSoftmax = (row: number[]) => {
  const m = Math.max(...row);
  const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
  return row.map((v) => v - lse);
};

forEachBackend(
  "deitLoss() hard: (1-α)·smoothed CE on labels + α·CE on the teacher's argmax, by hand",
  async (tfc) => {
    const cls = [[1, 2, 0], [0.5, -1, 2]];
    const dist = [[0, 1, 3], [2, 0, 0]];
    const teacher = [[5, 1, 0], [0, 0, 4]]; // argmax 0, 2
    const labels = [1, 2];
    const eps = 0.1;
    let ce = 0, kd = 0;
    for (let i = 0; i < 2; i++) {
      const lc = logSoftmax(cls[i]);
      ce -= lc.reduce((s, v, c) => s + ((c === labels[i] ? 1 - eps : 0) + eps / 3) * v, 0) / 2;
      kd -= logSoftmax(dist[i])[[0, 2][i]] / 2;
    }
    const r = deitLoss(
      tfc.tensor2d(cls),
      tfc.tensor2d(dist),
      tfc.tensor1d(labels, "int32"),
      tfc.tensor2d(teacher),
      { labelSmoothing: eps, alpha: 0.3 },
    );
    assertClose(await r.loss.data(), [0.7 * ce + 0.3 * kd], 1e-5, "hard loss");
    assertClose(await r.parts.distill.data(), [kd], 1e-5, "distill term");
    tfc.dispose([r.loss, r.parts.ce, r.parts.distill]);
  },
);

forEachBackend(
  "deitLoss() soft: T²·KL(teacher ‖ student) at temperature T, by hand; bad options throw",
  async (tfc) => {
    const dist = [[0, 1, 3]];
    const teacher = [[2, 1, 0]];
    const t = 2;
    const ls = logSoftmax(dist[0].map((v) => v / t));
    const lt = logSoftmax(teacher[0].map((v) => v / t));
    const kl = lt.reduce((s, v, c) => s + Math.exp(v) * (v - ls[c]), 0) * t * t;
    const args = [
      tfc.tensor2d([[0, 0, 0]]),
      tfc.tensor2d(dist),
      tfc.tensor1d([0], "int32"),
      tfc.tensor2d(teacher),
    ] as const;
    const r = deitLoss(...args, { mode: "soft", temperature: t });
    const ce = Math.log(3); // uniform cls logits
    assertClose(await r.loss.data(), [0.5 * ce + 0.5 * kl], 1e-5, "soft loss");
    tfc.dispose([r.loss, r.parts.ce, r.parts.distill]);
    assertThrows(() => deitLoss(...args, { alpha: 2 }), Error, "alpha 2");
    assertThrows(() => deitLoss(...args, { mode: "kl" as "soft" }), Error, '"kl"');
    tfc.dispose([...args]);
  },
);

forEachBackend("ViT with a distillation token: two prefix tokens, logits average both heads", async (tf) => {
  const vit = distilledVit();
  assertEquals(vit.numPrefixTokens, 2);
  const names = [...vit.stateDict().keys()];
  for (const n of ["dist_token", "head_dist.weight", "head_dist.bias"]) assert(names.includes(n), n);
  assertEquals(vit.stateDict().get("pos_embed")!.shape, [1, 64 + 2, 64]);
  const x = tf.tensor4d(seededRandom(2 * 32 * 32 * 3, 9), [2, 32, 32, 3]);
  await assertNoLeak("distilled forward", () => {
    const out = vit.forward(x, { returnAux: true });
    const { clsLogits, distLogits } = out.aux!;
    assertEquals(out.logits.shape, [2, 3]);
    const avg = tf.tidy(() => tf.div(tf.add(clsLogits!, distLogits!), 2));
    assert(relErr(out.logits.dataSync(), avg.dataSync()) < 1e-6);
    assert(relErr(clsLogits!.dataSync(), distLogits!.dataSync()) > 1e-3, "the heads differ");
    assertEquals(out.aux!.tokensPerBlock, [66, 66]);
    tf.dispose([out.logits, avg, clsLogits!, distLogits!]);
  });
  // The GMACs count both prefix tokens and both heads.
  const plain = createModel("vit_test", { numClasses: 3 }) as unknown as ViT;
  assert(vit.gmacs().total > plain.gmacs().total);
  plain.dispose();
  x.dispose();
  vit.dispose();
});

forEachBackend(
  "pruning a distilled ViT: keep ratio 1 equals the unpruned model, keep 0.5 keeps both prefix tokens",
  async (tf) => {
    const vit = distilledVit(2);
    const x = tf.tensor4d(seededRandom(2 * 32 * 32 * 3, 4), [2, 32, 32, 3]);
    const full = vit.forward(x).logits;
    for (const name of ["random", "attention"] as const) {
      const s = createStrategy(name, { seed: 3 });
      const loc = name === "attention" ? 1 : 0;
      const one = s.forward(vit, x, { schedule: singleStage(1, loc), rng: new Rng(1) });
      assert(relErr(await one.logits.data(), await full.data()) < 1e-5, `${name} at keep 1`);
      const half = s.forward(vit, x, { schedule: singleStage(0.5, loc), rng: new Rng(1), returnAux: true });
      assertEquals(half.aux!.tokensPerBlock![1], 2 + 32, name);
      assertEquals(half.aux!.keptIndices!.shape, [2, 32]);
      tf.dispose([
        one.logits,
        half.logits,
        half.aux!.keptIndices!,
        ...(half.aux!.clsLogits ? [half.aux!.clsLogits, half.aux!.distLogits!] : []),
      ]);
    }
    full.dispose();
    x.dispose();
    vit.dispose();
  },
);

Deno.test({
  name: "runTraining() distils a ViT from a ResNet18 run with token dropout and records the teacher's cost",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { join } = await import("node:path");
    await withTinyRuns("distill_test_", async (runTraining, root) => {
      const tiny = TINY_RUN;
      const cnn = await runTraining({ ...tiny, model: "resnet18", out: join(root, "cnn") });
      const r = await runTraining({
        ...tiny,
        model: "vit",
        teacher: cnn.outDir,
        tokenDropout: 0.5,
        out: join(root, "vit"),
      });
      assert(r.completed);
      assert(r.result.teacherGmacsPerTrainImage! > 0);
      assertEquals(r.result.teacher, cnn.outDir);
      const config = JSON.parse(await Deno.readTextFile(join(r.outDir, "config.json")));
      assertEquals(config.distillMode, "hard");
      assertEquals(config.tokenDropout, { min: 0.5, max: 1 });
      assertEquals(config.modelConfig.distillToken, true);
      let err: Error | undefined;
      await runTraining({ ...tiny, model: "vit", teacher: r.outDir, out: join(root, "bad") }).catch((e) =>
        err = e
      );
      assert(err?.message.includes("expected a resnet18"), err?.message);
    });
  },
});

forEachBackend(
  'init "torch": ViT linears and ResNet18 convs uniform ±1/√fan_in; the default is unchanged',
  async () => {
    const vit = createModel("vit_test", { init: "torch" }) as unknown as ViT;
    const timm = createModel("vit_test") as unknown as ViT;
    const w = await vit.stateDict().get("blocks.0.mlp.fc1.weight")!.data();
    const bound = 1 / Math.sqrt(64);
    const max = Array.from(w).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert(max <= bound && max > 0.95 * bound, `max ${max} vs bound ${bound}`);
    assert((await vit.stateDict().get("head.bias")!.data()).some((v) => v !== 0));
    assert((await timm.stateDict().get("head.bias")!.data()).every((v) => v === 0));
    const t = await timm.stateDict().get("blocks.0.mlp.fc1.weight")!.data();
    assert(t.every((v) => Math.abs(v) <= 0.04 + 1e-7), "timm: truncated normal std 0.02 (±2 std)");
    const r = createModel("resnet18_test", { init: "torch" });
    const c = await r.stateDict().get("layer1.0.conv1.weight")!.data();
    const fanIn = 9 * (r.config as { width: number }).width;
    assert(c.every((v) => Math.abs(v) <= 1 / Math.sqrt(fanIn)));
    assertThrows(() => createModel("vit_test", { init: "xavier" }), Error, '"xavier"');
    for (const m of [vit, timm, r]) m.dispose();
  },
);

Deno.test("resolveRunOptions() decayOn: the profile's default (all for cpu), validated", async () => {
  const { resolveRunOptions } = await import("../lib/experiment/mod.ts");
  assertEquals((await resolveRunOptions({ model: "vit", profile: "cpu" })).decayOn, "all");
  assertEquals((await resolveRunOptions({ model: "vit", profile: "quick" })).decayOn, "weights");
  let err: Error | undefined;
  await resolveRunOptions({ model: "vit", decayOn: "some" as "all" }).catch((e) => err = e);
  assert(err?.message.includes('decayOn "some"'), err?.message);
});
