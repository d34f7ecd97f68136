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
