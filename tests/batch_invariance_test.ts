/**
 * Token selection does not depend on the batch size: evaluating in batches of 1, 5 or 12 keeps the same
 * tokens for each image (a batch-dependent scorer, e.g. one normalising over the batch, would not). Images
 * with a flat background make many scores near-equal, where float noise would show first.
 */
import * as tf from "@tensorflow/tfjs-core";
import { createModel, type Model, type ViT } from "../lib/models/mod.ts";
import { createStrategy, singleStage } from "../lib/pruning/mod.ts";
import { assertEquals } from "./_assert.ts";
import { assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";

/** Fashion-MNIST-like images: one background value after normalisation and a small textured object. */
function flatBackgroundImages(n: number, size: number, seed: number): tf.Tensor4D {
  const noise = seededRandom(n * size * size * 3, seed);
  const v = new Float32Array(n * size * size * 3).fill(-0.81);
  for (let i = 0; i < n; i++) {
    const o = 4 + (i % 5) * 3; // the object moves from image to image
    for (let y = o; y < o + 10; y++) {
      for (let x = o; x < o + 10; x++) {
        for (let c = 0; c < 3; c++) {
          const at = ((i * size + y) * size + x) * 3 + c;
          v[at] = noise[at];
        }
      }
    }
  }
  return tf.tensor4d(v, [n, size, size, 3]);
}

forEachBackend("cnn and attention selection keep the same tokens whatever the batch size", async () => {
  const vit = createModel("vit_test", {}, { seed: 3 }) as unknown as ViT & Model;
  const hybrid = createModel("hybrid_test", {}, { seed: 3 });
  const n = 12;
  const x = flatBackgroundImages(n, 32, 5);
  try {
    for (const [name, model, location] of [["cnn", hybrid, 0], ["attention", vit, 1]] as const) {
      const strategy = createStrategy(name, {});
      const keptAt = (batch: number) =>
        tf.tidy(() => {
          const rows: number[][] = [];
          for (let i = 0; i < n; i += batch) {
            const xb = tf.slice(x, [i, 0, 0, 0], [Math.min(batch, n - i), -1, -1, -1]);
            const out = strategy.forward(model, xb, {
              schedule: singleStage(0.5, location),
              returnAux: true,
            });
            rows.push(...(out.aux!.keptIndices!.arraySync() as number[][]));
          }
          return rows;
        });
      const whole = await assertNoLeak(`${name} selection`, () => keptAt(n));
      for (const batch of [1, 5]) {
        assertEquals(keptAt(batch), whole, `${name}: batch ${batch} keeps the tokens batch ${n} keeps`);
      }
    }
  } finally {
    x.dispose();
    vit.dispose();
    hybrid.dispose();
  }
});
