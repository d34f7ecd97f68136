/**
 * What the trainer iterates: any (async) iterable of `{x, y}` batches, or a function of the epoch that
 * returns one (so each epoch can shuffle with its own seed, reproducibly).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * One batch: images NHWC float32 and int32 labels; extra fields (e.g. `mask`, a `[B, N]` ground-truth
 * patch mask) pass through. The consumer disposes every tensor in it ({@link disposeBatch}).
 */
export interface TrainBatch {
  x: tf.Tensor4D;
  y: tf.Tensor1D;
  /** Ground-truth patch mask `[B, N]` (1 = the object covers the patch), when the dataset has one. */
  mask?: tf.Tensor2D;
}

/** An iterable of batches, or a function from the epoch (0-based) to one. */
export type BatchSource =
  | Iterable<TrainBatch>
  | AsyncIterable<TrainBatch>
  | ((epoch: number) => Iterable<TrainBatch> | AsyncIterable<TrainBatch>);

/**
 * The batches of `source` for `epoch`, as an async iterable, with the batch form checked.
 *
 * @example
 * ```ts
 * for await (const b of iterateSource((e) => ds.batches({ batchSize: 64, shuffle: true, epoch: e }), 0)) {}
 * ```
 */
export async function* iterateSource(source: BatchSource, epoch: number): AsyncGenerator<TrainBatch> {
  const it = typeof source === "function" ? source(epoch) : source;
  if (it == null || (typeof it !== "object")) {
    throw new Error(
      `batch source: expected an iterable of {x, y} batches for epoch ${epoch}, got ${String(it)}`,
    );
  }
  let i = 0;
  for await (const b of it as AsyncIterable<TrainBatch>) {
    if (!b || typeof b !== "object" || !b.x || !b.y || b.x.rank !== 4 || b.y.rank !== 1) {
      throw new Error(
        `batch source: batch ${i} of epoch ${epoch} is not {x: [B, H, W, C] float32, y: [B] int32} ` +
          `(got x ${b?.x ? `[${b.x.shape}]` : "missing"}, y ${b?.y ? `[${b.y.shape}]` : "missing"})`,
      );
    }
    if (b.x.shape[0] !== b.y.shape[0]) {
      throw new Error(
        `batch source: batch ${i} of epoch ${epoch} has ${b.x.shape[0]} images but ${b.y.shape[0]} labels`,
      );
    }
    i++;
    yield b;
  }
}

/**
 * Disposes every tensor of a batch (`x`, `y` and tensor-valued extra fields).
 *
 * @example
 * ```ts
 * disposeBatch(batch);
 * ```
 */
export function disposeBatch(batch: TrainBatch): void {
  tf.dispose(Object.values(batch).filter((v): v is tf.Tensor => v instanceof tf.Tensor));
}
