/**
 * The equal-cost study (notebook 06): every pruning method compared at the same total GMACs per image,
 * over several seeds, with mean and a 95% Student-t interval over seeds.
 *
 * - {@link matchTokens}: the number of kept tokens at which a control strategy costs what a reference
 *   (the hybrid at some keep ratio, stem and selector included) costs.
 * - {@link seedSummary}: mean, sample standard deviation and the 95% t interval of per-seed numbers.
 * - {@link equalCostPlan}: what the study runs in each profile.
 *
 * @module
 */
import type { Model } from "../models/mod.ts";
import { createStrategy, singleStage, type StrategyName, vitOf } from "../pruning/mod.ts";
import type { ProfileName } from "../profile.ts";
import { envGet } from "../util/env.ts";

/** What notebook 06 runs in a profile. */
export interface EqualCostPlan {
  /** Seeds of the main comparison (each seed trains every model anew). */
  seeds: number[];
  /** Keep ratios of the hybrid at which the controls are matched in GMACs and fine-tuned (every seed). */
  compareKeeps: number[];
  /** Keep ratios of the hybrid's sweep (evaluated, not retrained: the hybrid trains over `keepRange`). */
  sweepKeeps: number[];
  /** Token dropout of the ViT the hybrid and the controls start from (keep ratio drawn per batch). */
  tokenDropout: { min: number; max: number };
  /** Hybrid stage 2: keep ratio drawn per batch in this range (one model serves every ratio). */
  keepRange: [number, number];
  /** Hybrid stage 2: weight of the KL to the full-token ViT's logits (DynamicViT's distillation). */
  distill: number;
  /** Run the one-seed ablation (seed `seeds[0]`, keep `compareKeeps[0]`). */
  ablation: boolean;
  /**
   * Window side of the spread hybrid's top-k (`HybridConfig.spread`): 2 was better than 4 and than none for
   * the seed-0 hybrid on the validation split (`tools/spread_probe.ts`).
   */
  spread: number;
}

const CPU_PLAN: EqualCostPlan = {
  seeds: [0, 1, 2],
  compareKeeps: [0.5, 0.6],
  sweepKeeps: [0.4, 0.5, 0.6, 0.8],
  tokenDropout: { min: 0.5, max: 1 },
  keepRange: [0.4, 0.8],
  distill: 0.5,
  ablation: true,
  spread: 2,
};

const PLANS: Record<ProfileName, EqualCostPlan> = {
  quick: { ...CPU_PLAN, seeds: [0], compareKeeps: [0.5], sweepKeeps: [0.5] },
  cpu: CPU_PLAN,
  // The full profile's sizes come from its training profile; the study's design is the cpu one.
  full: CPU_PLAN,
};

/**
 * The equal-cost plan of a profile (a copy: change it freely). `CNNVIT_SEEDS` (e.g. `"0"` or `"0,1,2"`) and
 * `CNNVIT_ABLATION` (`0` or `1`) override the seeds and the ablation.
 *
 * @example
 * ```ts
 * equalCostPlan("cpu").seeds; // [0, 1, 2]
 * ```
 */
export function equalCostPlan(
  profile: ProfileName,
  env: (name: string) => string | undefined = envGet,
): EqualCostPlan {
  const p = PLANS[profile];
  if (!p) throw new Error(`equalCostPlan: unknown profile "${profile}"; expected quick, cpu or full`);
  const plan = structuredClone(p);
  // Overrides for a machine that cannot afford the whole plan in one sitting; run.json records the plan used.
  const seeds = env("CNNVIT_SEEDS");
  if (seeds !== undefined && seeds.trim() !== "") {
    const list = seeds.split(",").map((s) => Number(s.trim()));
    if (list.some((v) => !Number.isInteger(v) || v < 0)) {
      throw new Error(`CNNVIT_SEEDS: "${seeds}" is not a comma-separated list of integers ≥ 0, e.g. "0,1,2"`);
    }
    plan.seeds = list;
  }
  const ablation = env("CNNVIT_ABLATION");
  if (ablation !== undefined && ablation.trim() !== "") {
    if (ablation !== "0" && ablation !== "1") throw new Error(`CNNVIT_ABLATION: "${ablation}" is not 0 or 1`);
    plan.ablation = ablation === "1";
  }
  return plan;
}

/** What {@link matchTokens} found. */
export interface TokenMatch {
  /** Kept patch tokens. */
  tokens: number;
  /** `tokens / numPatches`. */
  keep: number;
  /** GMACs per image of the strategy at that count. */
  gmacs: number;
}

/**
 * The kept-token count at which `strategy` on `model` (pruning before block `location`) costs closest to
 * `targetGmacs` per image; on a tie, the cheaper count. Searched over every count 1..numPatches with the
 * strategy's own GMACs accounting, so a control gets the compute the reference spends (the hybrid's stem and
 * selector included) in tokens.
 *
 * @example
 * ```ts
 * const m = matchTokens(vit, "random", 0, hybrid.gmacs({ keepRatio: 0.5 }).total);
 * m.tokens; // a few more than 0.5 × numPatches: the hybrid's stem is paid in tokens
 * ```
 */
export function matchTokens(
  model: Model,
  strategy: StrategyName,
  location: number,
  targetGmacs: number,
): TokenMatch {
  if (!Number.isFinite(targetGmacs) || targetGmacs <= 0) {
    throw new RangeError(`matchTokens: targetGmacs ${targetGmacs} is not a positive number`);
  }
  const n = vitOf(model).numPatches;
  const s = createStrategy(strategy, { seed: 0 });
  let best: TokenMatch | undefined;
  for (let t = 1; t <= n; t++) {
    const keep = t / n;
    const gmacs = s.gmacs(model, singleStage(keep, location));
    const d = Math.abs(gmacs - targetGmacs);
    if (!best || d < Math.abs(best.gmacs - targetGmacs) - 1e-12) best = { tokens: t, keep, gmacs };
  }
  return best!;
}

/** Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom. */
const T975 = [
  12.706,
  4.303,
  3.182,
  2.776,
  2.571,
  2.447,
  2.365,
  2.306,
  2.262,
  2.228,
  2.201,
  2.179,
  2.16,
  2.145,
  2.131,
  2.12,
  2.11,
  2.101,
  2.093,
  2.086,
  2.08,
  2.074,
  2.069,
  2.064,
  2.06,
  2.056,
  2.052,
  2.048,
  2.045,
  2.042,
];

/** Mean over seeds with its spread. */
export interface SeedSummary {
  mean: number;
  /** Sample standard deviation (0 for one seed). */
  std: number;
  n: number;
  /** 95% Student-t interval of the mean; `[mean, mean]` for one seed (no interval from one run). */
  ci: [number, number];
  values: number[];
}

/**
 * Mean, sample standard deviation and 95% Student-t interval of per-seed values.
 *
 * @example
 * ```ts
 * seedSummary([0.70, 0.72, 0.74]); // mean 0.72, std 0.02, ci ≈ [0.670, 0.770] (t = 4.303, n = 3)
 * ```
 */
export function seedSummary(values: readonly number[]): SeedSummary {
  if (values.length === 0 || values.some((v) => !Number.isFinite(v))) {
    throw new RangeError(`seedSummary: values ${JSON.stringify(values)} must be one or more finite numbers`);
  }
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : 0;
  const half = n > 1 ? (T975[Math.min(n - 2, T975.length - 1)] ?? 1.96) * std / Math.sqrt(n) : 0;
  return { mean, std, n, ci: [mean - half, mean + half], values: [...values] };
}

/**
 * `"73.2 [71.0, 75.4]"` (percent, one decimal) for a {@link SeedSummary} of fractions; one seed prints
 * `"73.2 (1 seed)"`.
 *
 * @example
 * ```ts
 * formatSeedCI(seedSummary([0.7, 0.72, 0.74])); // "72.0 [67.0, 77.0]"
 * ```
 */
export function formatSeedCI(s: SeedSummary, scale = 100, digits = 1): string {
  const f = (v: number) => (v * scale).toFixed(digits);
  return s.n > 1 ? `${f(s.mean)} [${f(s.ci[0])}, ${f(s.ci[1])}]` : `${f(s.mean)} (1 seed)`;
}

/**
 * Per-seed paired differences `a[i] − b[i]` summarised: the comparison of two methods trained on the same
 * seeds (same data order and initialisation), tighter than comparing two independent intervals.
 *
 * @example
 * ```ts
 * pairedDifference([0.75, 0.74, 0.76], [0.70, 0.71, 0.70]).mean; // ≈ 0.047
 * ```
 */
export function pairedDifference(a: readonly number[], b: readonly number[]): SeedSummary {
  if (a.length !== b.length) {
    throw new RangeError(
      `pairedDifference: ${a.length} values against ${b.length}; expected one per seed each`,
    );
  }
  return seedSummary(a.map((v, i) => v - b[i]));
}
