/**
 * Batch feeding cost: assembling a batch of 128 32x32x3 images from the in-memory bytes (gather,
 * augment, normalise) and handing it to the backend as tensors, then disposing them.
 * The target is well under 10% of a training step of the smallest model (~100s of ms).
 *
 * Run: `deno bench -A --unstable-ffi tests/data_bench.ts` (TFJS_BACKEND=cpu|wasm|native to choose).
 */
import { backendFromEnv, initBackend } from "../lib/backend/mod.ts";
import { AUGMENT_CIFAR, AUGMENT_HISTOLOGY, loadSynthetic } from "../lib/data/mod.ts";

const info = await initBackend(backendFromEnv(), { log: false });
const ds = loadSynthetic({ split: "test", testSize: 2048, seed: 1 });
const B = 128;
const group = `batch of ${B} [${info.name}]`;

for (
  const [name, augment] of [
    ["no augmentation", undefined],
    ["CIFAR augmentation (crop 4 + hflip)", AUGMENT_CIFAR],
    ["histology augmentation (dihedral + HED + brightness/contrast)", AUGMENT_HISTOLOGY],
  ] as const
) {
  let epoch = 0;
  let it = ds.batches({ batchSize: B, shuffle: true, seed: 1, epoch, augment, dropLast: true });
  Deno.bench({
    name: `${name} [${info.name}]`,
    group,
    baseline: augment === undefined,
    fn: () => {
      let r = it.next();
      if (r.done) {
        it = ds.batches({ batchSize: B, shuffle: true, seed: 1, epoch: ++epoch, augment, dropLast: true });
        r = it.next();
      }
      const b = r.value!;
      b.x.dispose();
      b.y.dispose();
    },
  });
}
