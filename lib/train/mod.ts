/**
 * Training: AdamW with decoupled weight decay, cosine schedule with warm-up, global-norm clipping,
 * losses (label-smoothed CE, DynamicViT ratio loss, KL distillation, hybrid loss), atomic checkpoints,
 * the resumable trainer, evaluation, memory-budgeted batch size and two-stage hybrid training.
 *
 * @example
 * ```ts
 * import { train } from "./lib/train/mod.ts";
 * ```
 *
 * @module
 */
export * from "./adamw.ts";
export * from "./cosine_schedule.ts";
export * from "./clip_grad_norm.ts";
export * from "./losses.ts";
export * from "./batch_source.ts";
export * from "./checkpoint.ts";
export * from "./evaluate.ts";
export * from "./trainer.ts";
export * from "./two_stage.ts";
export * from "./batch_size.ts";
export * from "./train_profile.ts";
