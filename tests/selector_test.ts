/**
 * The selector learns from the transformer: stage 1 with the `vit_attention` target fits the importance
 * head to the ViT's own CLS attention (EViT's ranking), computed once per batch outside the gradient tape.
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../lib/backend/mod.ts";
import { createModel, type Hybrid } from "../lib/models/mod.ts";
import { importanceKL, stage1Loss, stage2Loss, train, type TrainBatch } from "../lib/train/mod.ts";
import { Rng } from "../lib/util/mod.ts";
import { stage1Prepare, stage2Prepare, vitAttentionTarget } from "../lib/train/two_stage.ts";
import { crossEntropy } from "../lib/train/losses.ts";
import { maskedHybridForward } from "../lib/pruning/masked_forward.ts";
import { assert, assertThrows } from "./_assert.ts";
import { assertClose, assertNoLeak, seededRandom } from "./_backends.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const images = (n: number, seed: number) =>
  tf.tensor4d(seededRandom(n * 32 * 32 * 3, seed), [n, 32, 32, 3]) as tf.Tensor4D;

Deno.test({
  name: "vitAttentionTarget() is the last block's CLS attention over patches, averaged over heads",
  ...opts,
  fn: async () => {
    await initBackend("wasm", { log: false });
    const h = createModel("hybrid_test", { cnnHead: true }, { seed: 1 }) as Hybrid;
    const x = images(2, 9);
    try {
      const target = await assertNoLeak("vitAttentionTarget", () => {
        const t = vitAttentionTarget(h, x);
        const v = t.arraySync() as number[][];
        t.dispose();
        return v;
      });
      // By hand from the attention maps.
      const out = h.vit.forward(x, { returnAttention: true });
      const att = out.aux!.attention!;
      const last = (await att[att.length - 1].array()) as number[][][][]; // [B, H, T, T]
      for (let b = 0; b < 2; b++) {
        const heads = last[b].length;
        const want = last[b][0][0].slice(1).map((_, j) =>
          last[b].reduce((s, head) => s + head[0][j + 1], 0) / heads
        );
        const got = target[b].map(Math.exp);
        assertClose(got, want, 1e-4, `image ${b}`);
        const total = got.reduce((s, v) => s + v, 0);
        // The CLS row sums to 1 over CLS + patches; over the patches alone it is a little less.
        assert(total > 0.5 && total <= 1 + 1e-5, `attention mass on patches ${total}`);
      }
      // "vit_attention_first": the same from block 0 (different from the last block's).
      const first = (await att[0].array()) as number[][][][];
      const early = tf.tidy(() => vitAttentionTarget(h, x, "first").arraySync()) as number[][];
      for (let b = 0; b < 2; b++) {
        const heads = first[b].length;
        const want = first[b][0][0].slice(1).map((_, j) =>
          first[b].reduce((s, head) => s + head[0][j + 1], 0) / heads
        );
        assertClose(early[b].map(Math.exp), want, 1e-4, `image ${b}, first block`);
      }
      assert(Math.abs(early[0][0] - target[0][0]) > 1e-6, "first and last block targets coincide");
      tf.dispose([out.logits, ...att]);
    } finally {
      x.dispose();
      h.dispose();
    }
  },
});

Deno.test({
  name: "stage 1 with the vit_attention target moves the selector's ranking toward the ViT's attention",
  ...opts,
  fn: async () => {
    await initBackend("wasm", { log: false });
    const x = images(8, 21);
    const y = tf.tensor1d([0, 1, 2, 3, 4, 5, 6, 7], "int32");
    /** Stage 1 with `target` from the same initial weights; KL(ViT attention ‖ selector) before and after. */
    const fit = async (target: "cam" | "vit_attention") => {
      const h = createModel("hybrid_test", { cnnHead: true, keepRatio: 0.5 }, { seed: 2 }) as Hybrid;
      // An untrained ViT attends almost uniformly; sharpen its last block so the target has a ranking.
      const qkv = h.vit.stateDict().get("blocks.1.attn.qkv.weight")!;
      qkv.assign(tf.tidy(() => tf.mul(qkv, 6)));
      const kl = () =>
        tf.tidy(() => importanceKL(h.scores(x), vitAttentionTarget(h, x), { temperature: 1 }).dataSync()[0]);
      try {
        const before = kl();
        const vitBefore = (await h.vit.stateDict().get("head.weight")!.data()).slice();
        const r = await train({
          model: h,
          variables: new Map([...h.trainableVariables()].filter(([k]) => k.startsWith("cnn."))),
          train: (): Iterable<TrainBatch> => [{ x: tf.clone(x), y: tf.clone(y) }],
          stepsPerEpoch: 1,
          epochs: 20,
          lr: 3e-3,
          progress: false,
          loss: stage1Loss(h, { target, importanceWeight: 5 }),
          prepare: stage1Prepare(h, target),
        });
        assert(r.completed);
        const vitAfter = await h.vit.stateDict().get("head.weight")!.data();
        assert(vitAfter.every((v, i) => v === vitBefore[i]), "stage 1 changed the ViT");
        return { before, after: kl() };
      } finally {
        h.dispose();
      }
    };
    try {
      assertThrows(
        () => stage1Loss({ vit: { gridSize: 8 } } as Hybrid, { target: "nope" as "cam" }),
        Error,
        '"nope"',
      );
      assert(stage1Prepare({} as Hybrid, "cam") === undefined, "cam needs no prepared target");
      const att = await fit("vit_attention");
      const cam = await fit("cam");
      assert(
        att.after < att.before && att.after < cam.after,
        `KL(ViT attention ‖ selector): vit_attention ${att.before.toFixed(4)} → ${att.after.toFixed(4)}, ` +
          `cam ${cam.before.toFixed(4)} → ${cam.after.toFixed(4)}`,
      );
    } finally {
      tf.dispose([x, y]);
    }
  },
});

Deno.test({
  name: "the mlp selector head sees global context: a change far away moves every patch's score",
  ...opts,
  fn: async () => {
    await initBackend("wasm", { log: false });
    const base = images(1, 33);
    // Brighten the top-left 8x8 pixels only (two patches of the 8x8 grid).
    const changed = tf.tidy(() => {
      const pad = tf.pad(tf.fill([1, 8, 8, 3], 2), [[0, 0], [0, 24], [0, 24], [0, 0]]);
      return tf.add(base, pad) as tf.Tensor4D;
    });
    try {
      for (const head of ["linear", "mlp"] as const) {
        const h = createModel("hybrid_test", { selectorHead: head }, { seed: 4 }) as Hybrid;
        try {
          const names = [...h.stateDict().keys()].filter((k) => k.startsWith("cnn.importance_head."));
          if (head === "mlp") {
            assert(names.includes("cnn.importance_head.out_conv.4.weight"), names.join(", "));
          } else assert(names.join() === "cnn.importance_head.weight,cnn.importance_head.bias", names.join());
          const [a, b] = await assertNoLeak(
            `${head} scores`,
            () => tf.tidy(() => [h.scores(base).arraySync(), h.scores(changed).arraySync()]) as number[][][],
          );
          assert(a[0].length === 64);
          // Bottom-right patch: outside the receptive field of the change at layer 1.
          const far = Math.abs(a[0][63] - b[0][63]);
          if (head === "mlp") assert(far > 1e-6, `mlp: the far patch's score did not move (${far})`);
          else assert(far === 0, `linear: the far patch's score moved by ${far}`);
        } finally {
          h.dispose();
        }
      }
      const lin = createModel("hybrid_test", {}) as Hybrid,
        mlp = createModel("hybrid_test", { selectorHead: "mlp" }) as Hybrid;
      // The mlp head costs per patch C·H + H·H/2 + H/2·H/4 + H/4 MACs (C = 8 channels, H = 32) instead of C.
      const extra = (mlp.gmacs().cnn! - lin.gmacs().cnn!) * 1e9;
      assert(Math.abs(extra - 64 * (8 * 32 + 32 * 16 + 16 * 8 + 8 - 8)) < 1e-3, `extra MACs ${extra}`);
      lin.dispose();
      mlp.dispose();
    } finally {
      tf.dispose([base, changed]);
    }
  },
});

Deno.test({
  name: "stage 2 with keepRatioRange draws the keep ratio per batch, so one model trains for every ratio",
  ...opts,
  fn: async () => {
    await initBackend("wasm", { log: false });
    const h = createModel("hybrid_test", { cnnHead: true, keepRatio: 0.5 }, { seed: 6 }) as Hybrid;
    const x = images(2, 41);
    const y = tf.tensor1d([1, 2], "int32");
    try {
      assertThrows(() => stage2Loss(h, { keepRatioRange: [0.9, 0.4] }), Error, "keepRatioRange");
      const loss = stage2Loss(h, { keepRatioRange: [0.3, 0.9], selection: "gather", loss: { aux: 0 } });
      const rng = new Rng(5);
      const drawn: number[] = [];
      for (let step = 0; step < 6; step++) {
        const r = await assertNoLeak(`step ${step}`, () =>
          tf.tidy(() => {
            const out = loss({ model: h, batch: { x, y }, step, epoch: 0, rng: rng.fork(), prepared: {} });
            return out.parts!.keepRatio!.dataSync()[0];
          }));
        assert(r >= 0.3 && r <= 0.9, `ratio ${r}`);
        drawn.push(r);
      }
      assert(new Set(drawn.map((r) => r.toFixed(3))).size > 3, `ratios drawn: ${drawn}`);
      // A fixed ratio consumes nothing from the generator (the default behaviour is unchanged).
      const fixed = stage2Loss(h, { selection: "gather", loss: { aux: 0 } });
      const g = new Rng(9);
      tf.tidy(() => {
        fixed({ model: h, batch: { x, y }, step: 0, epoch: 0, rng: g, prepared: {} });
      });
      assert(g.next() === new Rng(9).next(), "a fixed keep ratio drew from the step's generator");
    } finally {
      tf.dispose([x, y]);
      h.dispose();
    }
  },
});

Deno.test({
  name: "stage 2 rankDistill adds KL(ViT attention ‖ selector scores) to the loss, with its weight",
  ...opts,
  fn: async () => {
    await initBackend("wasm", { log: false });
    const h = createModel("hybrid_test", { keepRatio: 0.5 }, { seed: 8 }) as Hybrid;
    const x = images(2, 51);
    const y = tf.tensor1d([3, 4], "int32");
    try {
      const weights = { rankDistill: 0.7, aux: 0 };
      const prepare = stage2Prepare(h, weights)!;
      const ctx = { model: h, batch: { x, y }, step: 0, epoch: 0 };
      await assertNoLeak("rankDistill step", () => {
        const prepared = prepare({ ...ctx, rng: new Rng(1) });
        const [withRank, plain, byHand] = tf.tidy(() => {
          const a = stage2Loss(h, { selection: "gather", loss: weights })({
            ...ctx,
            rng: new Rng(1),
            prepared,
          });
          const b = stage2Loss(h, { selection: "gather", loss: { aux: 0 } })({
            ...ctx,
            rng: new Rng(1),
            prepared,
          });
          // The gather path runs the scorer in training mode (batch statistics).
          const kl = importanceKL(h.scores(x, true), prepared.attention, { temperature: 1 });
          return [a.loss.dataSync()[0], b.loss.dataSync()[0], kl.dataSync()[0]];
        });
        tf.dispose(Object.values(prepared));
        assert(byHand > 0, `KL ${byHand}`);
        assertClose([withRank - plain], [0.7 * byHand], 1e-4, "rank term");
      });
      const noAttention = stage2Loss(h, { selection: "gather", loss: weights });
      assertThrows(
        () => tf.tidy(() => void noAttention({ ...ctx, rng: new Rng(1), prepared: {} })),
        Error,
        "rankDistill needs",
      );
    } finally {
      tf.dispose([x, y]);
      h.dispose();
    }
  },
});

Deno.test({
  name:
    "stage 2 with a frozen CNN skips the auxiliary CNN loss: the trained variables get the same gradients",
  ...opts,
  fn: async () => {
    await initBackend("wasm", { log: false });
    const h = createModel("hybrid_test", { cnnHead: true, keepRatio: 0.5 }, { seed: 12 }) as Hybrid;
    const x = images(2, 61);
    const y = tf.tensor1d([5, 6], "int32");
    // What stage 2 trains with a frozen CNN: the ViT and the importance head.
    const vars = [...h.trainableVariables()]
      .filter(([k]) => !k.startsWith("cnn.") || k.startsWith("cnn.importance_head."))
      .map(([, v]) => v);
    const grads = (aux: number, cnnTraining: boolean) =>
      tf.tidy(() => {
        const loss = stage2Loss(h, { loss: { aux }, cnnTraining, noiseScale: 0 });
        let parts: string[] = [];
        const g = tf.variableGrads(() => {
          const out = loss({ model: h, batch: { x, y }, step: 0, epoch: 0, rng: new Rng(3), prepared: {} });
          parts = Object.keys(out.parts ?? {});
          return out.loss;
        }, vars);
        return { parts, flat: Object.values(g.grads).flatMap((t) => [...t.dataSync()]) };
      });
    try {
      const frozen = await assertNoLeak("frozen-CNN step", () => grads(0.3, false));
      const noAux = grads(0, false);
      const trained = grads(0.3, true);
      assert(!frozen.parts.includes("aux"), `parts ${frozen.parts}`);
      assert(trained.parts.includes("aux"), `a CNN in training keeps its auxiliary loss: ${trained.parts}`);
      assertClose(frozen.flat, noAux.flat, 1e-6, "frozen CNN, aux 0.3 vs aux 0");
      assert(frozen.flat.some((v) => v !== 0), "the trained variables get gradients");
      // Why skipping is exact: the CNN's own loss reaches none of the variables stage 2 trains.
      assertThrows(
        () =>
          tf.tidy(() => {
            tf.variableGrads(() => {
              const out = maskedHybridForward(h, x, { keepRatio: 0.5, cnnTraining: false, cnnLogits: true });
              return crossEntropy(out.cnnLogits!, y);
            }, vars);
          }),
        Error,
        "Cannot find a connection",
      );
    } finally {
      tf.dispose([x, y]);
      h.dispose();
    }
  },
});
