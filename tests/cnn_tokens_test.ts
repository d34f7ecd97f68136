/** CNN tokens (timm's hybrid ViT): the ViT's patch tokens projected from the scorer's stage feature map. */
import * as tf from "@tensorflow/tfjs-core";
import { createModel, type Hybrid } from "../lib/models/mod.ts";
import { createStrategy, singleStage } from "../lib/pruning/mod.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";

const images = (n: number, seed: number) =>
  tf.tensor4d(seededRandom(n * 32 * 32 * 3, seed), [n, 32, 32, 3]) as tf.Tensor4D;

forEachBackend('tokens "cnn": the ViT embeds the stage map, same grid, GMACs counted by hand', async () => {
  const pixels = createModel("hybrid_test", {}, { seed: 1 }) as Hybrid;
  const cnn = createModel("hybrid_test", { tokens: "cnn" }, { seed: 1 }) as Hybrid;
  const x = images(2, 3);
  try {
    const stage = cnn.config.scoreStage;
    const side = cnn.cnn.stageSize(stage), ch = cnn.cnn.stageChannels(stage);
    const g = pixels.vit.gridSize;
    assertEquals(cnn.vit.gridSize, g, "same patch grid");
    assertEquals(cnn.vit.numPatches, pixels.vit.numPatches);
    const k = side / g;
    const w = cnn.vit.stateDict().get("patch_embed.proj.weight")!;
    const d = cnn.vit.config.embedDim;
    assertEquals(w.size, k * k * ch * d, `projection ${w.shape}: ${k}x${k}, ${ch} → ${d}`);
    // Only the patch-embedding term differs: N·D·C·k² instead of N·D·3·p².
    const n = g * g, p = pixels.vit.config.patchSize;
    const a = pixels.gmacs({ keepRatio: 0.5 }), b = cnn.gmacs({ keepRatio: 0.5 });
    assertClose([b.cnn!], [a.cnn!], 1e-12, "scorer GMACs");
    assertClose(
      [b.vit! - a.vit!],
      [(n * d * ch * k * k - n * d * 3 * p * p) / 1e9],
      1e-12,
      "patch embedding",
    );
    const logits = await assertNoLeak("forward with CNN tokens", () => {
      const out = cnn.forward(x, { keepRatio: 0.5 });
      const v = out.logits.arraySync();
      out.logits.dispose();
      return v;
    });
    assertEquals([logits.length, logits[0].length], [2, 10]);
    // The cnn pruning strategy (one scorer pass for scores and tokens) runs the same model.
    const viaStrategy = tf.tidy(() =>
      createStrategy("cnn").forward(cnn, x, { schedule: singleStage(0.5, 0) }).logits.arraySync()
    );
    for (let i = 0; i < 2; i++) assertClose(viaStrategy[i], logits[i], 1e-4, `strategy image ${i}`);
  } finally {
    tf.dispose(x);
    pixels.dispose();
    cnn.dispose();
  }
});

forEachBackend(
  'tokens "cnn": the task loss reaches the stem through the tokens, not only the scores',
  () => {
    // scoreGradient "none": no gradient through the top-k scores; the stem still learns through the tokens.
    const m = createModel("hybrid_test", { tokens: "cnn", scoreGradient: "none" }, { seed: 2 }) as Hybrid;
    const x = images(2, 4);
    const y = tf.oneHot(tf.tensor1d([1, 3], "int32"), 10) as tf.Tensor2D;
    try {
      const stem = [...m.trainableVariables()].filter(([k]) => k.startsWith("cnn.conv1"));
      assert(stem.length > 0, "stem variables");
      const before = tf.memory().numTensors;
      const norm = tf.tidy(() => {
        const { grads } = tf.variableGrads(
          () =>
            tf.losses.softmaxCrossEntropy(
              y,
              m.forward(x, { training: true, keepRatio: 0.5 }).logits,
            ) as tf.Scalar,
          stem.map(([, v]) => v),
        );
        return tf.sum(tf.stack(Object.values(grads).map((g) => tf.sum(tf.abs(g))))).dataSync()[0];
      });
      assertEquals(tf.memory().numTensors, before, "tensors leaked by the gradient step");
      assert(norm > 0, `stem gradient ${norm}`);
      // The pixel hybrid with the same setting gives the stem nothing from the task loss.
      const px = createModel("hybrid_test", { scoreGradient: "none" }, { seed: 2 }) as Hybrid;
      try {
        const pstem = [...px.trainableVariables()].filter(([k]) => k.startsWith("cnn.conv1")).map(([, v]) =>
          v
        );
        // tfjs refuses a gradient with respect to variables the loss does not depend on.
        assertThrows(
          () =>
            tf.tidy(() => {
              tf.variableGrads(
                () =>
                  tf.losses.softmaxCrossEntropy(
                    y,
                    px.forward(x, { training: true, keepRatio: 0.5 }).logits,
                  ) as tf.Scalar,
                pstem,
              );
            }),
          Error,
          "Cannot find a connection",
        );
      } finally {
        px.dispose();
      }
    } finally {
      tf.dispose([x, y]);
      m.dispose();
    }
  },
  { backends: ["cpu", "wasm"] },
);

Deno.test('tokens "cnn": a scorer at another image size or a bad value is refused', () => {
  assertThrows(
    () => createModel("hybrid_test", { tokens: "cnn", scorerImgSize: 16 }),
    Error,
    "scorerImgSize",
  );
  assertThrows(() => createModel("hybrid_test", { tokens: "patches" as never }), Error, "tokens");
});

Deno.test('tokens "cnn": every strategy pays for the stem that makes the tokens (hand count)', () => {
  const pixels = createModel("hybrid_test", {}, { seed: 1 }) as Hybrid;
  const cnn = createModel("hybrid_test", { tokens: "cnn" }, { seed: 1 }) as Hybrid;
  try {
    const n = cnn.vit.numPatches, ch = cnn.cnn.stageChannels(cnn.config.scoreStage);
    // The stem up to scoreStage is the scorer without its linear importance head (one MAC per channel and patch).
    const stem = cnn.gmacs().cnn! - n * ch / 1e9;
    assertClose([cnn.tokenizerGmacs()], [stem], 1e-12, "tokenizer GMACs");
    assertEquals(pixels.tokenizerGmacs(), 0, "pixel tokens: the ViT's patch embedding is the tokenizer");
    const vitOnly = (m: Hybrid, keep: number) => m.vit.gmacs({ keepRatio: keep }).total;
    for (const keep of [0.25, 0.5]) {
      const s = singleStage(keep, 0);
      // Random (and merge, attention) on CNN tokens: the stem runs although nothing reads the scores.
      assertClose(
        [createStrategy("random").gmacs(cnn, s)],
        [stem + vitOnly(cnn, keep)],
        1e-12,
        `random ${keep}`,
      );
      assertClose(
        [createStrategy("random").gmacs(pixels, s)],
        [vitOnly(pixels, keep)],
        1e-12,
        "random, pixels",
      );
      // The CNN's top-k costs exactly its importance head more than random tokens.
      assertClose(
        [createStrategy("cnn").gmacs(cnn, s) - createStrategy("random").gmacs(cnn, s)],
        [n * ch / 1e9],
        1e-9, // a difference of two sums: rounding
        `cnn − random at keep ${keep}`,
      );
    }
    assertClose(
      [createStrategy("none").gmacs(cnn, singleStage(1, 0))],
      [stem + vitOnly(cnn, 1)],
      1e-12,
      "none",
    );
    const att = createStrategy("attention").gmacs(cnn, singleStage(0.5, 1));
    assertClose(
      [att - createStrategy("attention").gmacs(pixels, singleStage(0.5, 1))],
      [
        stem + (vitOnly(cnn, 1) - vitOnly(pixels, 1)),
      ],
      1e-9,
      "attention: stem + the projection's difference",
    );
  } finally {
    pixels.dispose();
    cnn.dispose();
  }
});
