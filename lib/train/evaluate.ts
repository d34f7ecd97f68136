/**
 * Evaluation over a batch source: mean loss, accuracy and images/s, with the model in evaluation mode.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Model } from "../models/types.ts";
import { crossEntropy } from "./losses.ts";
import { type BatchSource, disposeBatch, iterateSource, type TrainBatch } from "./batch_source.ts";

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /** Logits of a batch (default `model.forward(x).logits`), e.g. a pruning strategy's forward. */
  logits?: (model: Model, batch: TrainBatch) => tf.Tensor2D;
  /** Epoch passed to a source function (default 0). */
  epoch?: number;
  /** Stop after this many batches. */
  maxBatches?: number;
}

/** What {@link evaluate} measured. */
export interface EvalResult {
  loss: number;
  accuracy: number;
  /** Images evaluated. */
  count: number;
  /** Images per second of the whole loop (forward + data). */
  imgPerSec: number;
  seconds: number;
}

/**
 * Mean cross-entropy and accuracy of `model` over `source` (batches are disposed here).
 *
 * @example
 * ```ts
 * const { accuracy } = await evaluate(model, ds.batches({ batchSize: 256 }));
 * ```
 */
export async function evaluate(
  model: Model,
  source: BatchSource,
  options: EvaluateOptions = {},
): Promise<EvalResult> {
  const t0 = performance.now();
  let sumLoss = 0, correct = 0, count = 0, batches = 0;
  for await (const batch of iterateSource(source, options.epoch ?? 0)) {
    try {
      if (options.maxBatches !== undefined && batches >= options.maxBatches) break;
      const [loss, hits] = tf.tidy(() => {
        const logits = options.logits ? options.logits(model, batch) : model.forward(batch.x).logits;
        const l = tf.mul(crossEntropy(logits, batch.y), batch.y.shape[0]);
        const h = tf.sum(tf.cast(tf.equal(tf.cast(tf.argMax(logits, 1), "int32"), batch.y), "int32"));
        return [l, h];
      });
      try {
        sumLoss += (await loss.data())[0];
        correct += (await hits.data())[0];
      } finally {
        tf.dispose([loss, hits]);
      }
      count += batch.y.shape[0];
      batches++;
    } finally {
      disposeBatch(batch);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    loss: count ? sumLoss / count : NaN,
    accuracy: count ? correct / count : NaN,
    count,
    imgPerSec: count / Math.max(seconds, 1e-9),
    seconds,
  };
}
