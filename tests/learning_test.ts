/**
 * Training learns: on a small set whose label is plainly in the pixels, a small ResNet18, a small ViT and a
 * ViT trained through random token pruning drive the loss down and beat chance by a wide margin, on every
 * backend that trains (native and wasm; the pure-JS cpu backend is the reference for single steps in the
 * parity and gradient tests, and too slow to train a ResNet: over 15 minutes for this test). Parity tests
 * check one step against PyTorch; this checks that many steps go somewhere.
 */
import { createModel, type Model } from "../lib/models/mod.ts";
import { createStrategy, singleStage } from "../lib/pruning/mod.ts";
import { AUGMENT_CIFAR, InMemoryDataset } from "../lib/data/mod.ts";
import { crossEntropy, evaluate, train, type TrainBatch } from "../lib/train/mod.ts";
import { Rng } from "../lib/util/mod.ts";
import { assert } from "./_assert.ts";
import type { BackendName } from "../lib/backend/mod.ts";
import { assertNoLeak, forEachBackend } from "./_backends.ts";

/** The backends models are trained on. */
const TRAINING_BACKENDS: BackendName[] = ["native", "wasm"];
const CLASSES = 4;
const SIZE = 32;

/**
 * 4 classes: a 10x10 square of the class's colour (red, green, blue, yellow, each channel jittered) at a
 * random position on uniform noise, so a model must find the square and read its colour.
 */
function colourSet(n: number, seed: number, split: "train" | "test"): InMemoryDataset {
  const rng = new Rng(seed);
  const images = new Uint8Array(n * SIZE * SIZE * 3);
  const labels = new Uint8Array(n);
  const colours = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]];
  for (let i = 0; i < n; i++) {
    const label = i % CLASSES;
    labels[i] = label;
    const base = i * SIZE * SIZE * 3;
    for (let p = 0; p < SIZE * SIZE * 3; p++) images[base + p] = Math.floor(rng.next() * 110);
    const oy = Math.floor(rng.next() * (SIZE - 10)), ox = Math.floor(rng.next() * (SIZE - 10));
    const tint = colours[label].map((on) => (on ? 190 + rng.next() * 65 : rng.next() * 50));
    for (let y = oy; y < oy + 10; y++) {
      for (let x = ox; x < ox + 10; x++) {
        for (let c = 0; c < 3; c++) images[base + (y * SIZE + x) * 3 + c] = Math.floor(tint[c]);
      }
    }
  }
  return new InMemoryDataset({
    name: "coloured squares",
    classes: ["red", "green", "blue", "yellow"],
    split,
    imageShape: [SIZE, SIZE, 3],
    mean: [0.3, 0.3, 0.3],
    std: [0.3, 0.3, 0.3],
    images,
    labels,
    source: "tests/learning_test.ts",
  });
}

const trainSet = colourSet(256, 1, "train");
const testSet = colourSet(128, 2, "test");

/** Trains `model` for 4 epochs and returns the first and last epoch's mean loss and test accuracy. */
export async function learn(model: Model, pruned: boolean, epochs = 4, lr = 2e-3) {
  const batchSize = 32;
  const strategy = createStrategy("random", { seed: 3 });
  const schedule = singleStage(0.5, 0);
  const r = await train({
    model,
    epochs,
    stepsPerEpoch: trainSet.numBatches(batchSize, true),
    train: (epoch) =>
      trainSet.batches({ batchSize, shuffle: true, seed: 5, epoch, dropLast: true }) as Iterable<TrainBatch>,
    lr,
    warmupSteps: 4,
    seed: 7,
    progress: false,
    loss: pruned
      ? ({ model: m, batch, rng }) => {
        const { logits } = strategy.forward(m, batch.x, { schedule, training: true, rng });
        return { loss: crossEntropy(logits, batch.y), logits };
      }
      : undefined,
  });
  assert(r.completed);
  const evalRng = new Rng(11);
  const ev = await evaluate(model, () => testSet.batches({ batchSize: 64 }) as Iterable<TrainBatch>, {
    logits: pruned ? (m, b) => strategy.forward(m, b.x, { schedule, rng: evalRng }).logits : undefined,
  });
  return {
    first: r.epochs[0].trainLoss,
    last: r.epochs[r.epochs.length - 1].trainLoss,
    accuracy: ev.accuracy,
  };
}

for (
  const [preset, pruned] of [["resnet18_test", false], ["vit_test", false], ["vit_test", true]] as const
) {
  const what = `${preset}${pruned ? " with random token pruning at keep 0.5" : ""}`;
  forEachBackend(`train() on a learnable set: ${what} drives the loss down and beats chance`, async () => {
    const model = createModel(preset, { numClasses: CLASSES }, { seed: 0 });
    try {
      const r = await assertNoLeak(`training ${what}`, () => learn(model, pruned));
      const chance = 1 / CLASSES;
      assert(
        r.last < 0.5 * r.first,
        `${what}: loss ${r.first.toFixed(3)} → ${r.last.toFixed(3)} did not halve`,
      );
      assert(
        r.accuracy >= chance + 0.45,
        `${what}: test accuracy ${(100 * r.accuracy).toFixed(1)}% is not well above chance (${
          100 * chance
        }%)`,
      );
    } finally {
      model.dispose();
    }
  }, { backends: TRAINING_BACKENDS });
}

forEachBackend(
  "train() is deterministic: two hybrid runs from one seed give bitwise-equal weights",
  async (tf) => {
    const run = async () => {
      const model = createModel("hybrid_test", { numClasses: CLASSES, cnnHead: true }, { seed: 3 });
      try {
        await train({
          model,
          epochs: 1,
          stepsPerEpoch: 4,
          train: (epoch) =>
            trainSet.batches({
              batchSize: 32,
              shuffle: true,
              seed: 5,
              epoch,
              dropLast: true,
              augment: AUGMENT_CIFAR,
            }) as Iterable<
              TrainBatch
            >,
          lr: 2e-3,
          seed: 7,
          progress: false,
          // The hybrid's own training forward: CNN scores, top-k gather, straight-through gate, both heads.
          loss: ({ model: m, batch }) => {
            const { logits } = m.forward(batch.x, { training: true });
            return { loss: crossEntropy(logits, batch.y), logits };
          },
        });
        const out = new Map<string, Float32Array>();
        for (const [k, v] of model.stateDict()) out.set(k, (await v.data()) as Float32Array);
        return out;
      } finally {
        model.dispose();
      }
    };
    const a = await run(), b = await run();
    for (const [k, v] of a) {
      const w = b.get(k)!;
      let same = v.length === w.length;
      for (let i = 0; same && i < v.length; i++) same = Object.is(v[i], w[i]);
      assert(same, `${k} differs between two runs with the same seed on ${tf.getBackend()}`);
    }
  },
  { backends: TRAINING_BACKENDS },
);
