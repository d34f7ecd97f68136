/**
 * Experiments as library calls, for notebooks and `deno task train`: {@link runTraining} (one training
 * run with its result.json, run.json and weights), {@link loadRunResult}, {@link evaluateStrategy}
 * (a trained model under a pruning strategy, without training) and {@link initFromRun}.
 *
 * @example
 * ```ts
 * import { evaluateStrategy, runTraining } from "./lib/experiment/mod.ts";
 * const run = await runTraining({ model: "vit", profile: "quick", dataset: "synthetic", keepModel: true });
 * const r = await evaluateStrategy(run.model!, run.evalDataset, { strategy: "random", keep: 0.5 });
 * run.model!.dispose();
 * ```
 *
 * @module
 */
export * from "./run_training.ts"; // incl. evaluate_strategy.ts
export * from "./init_from_run.ts";
