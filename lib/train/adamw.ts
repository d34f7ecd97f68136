/**
 * AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient, as PyTorch's
 * `torch.optim.AdamW` computes it. Parameters are addressed by their (timm) names, so decay rules,
 * per-parameter learning-rate scales and the saved state all speak the state-dict's language.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ADAMW_KERNEL } from "../backend/mod.ts";

/** Options of {@link AdamW}. */
export interface AdamWOptions {
  /** Base learning rate (default 1e-3); the trainer overrides it per step from a schedule. */
  lr?: number;
  /** Adam's (beta1, beta2) (default [0.9, 0.999]). */
  betas?: [number, number];
  /** Added to the denominator (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay coefficient (default 0.05). */
  weightDecay?: number;
  /**
   * Which parameters get weight decay. Default {@link defaultDecayRule}: none on norms, biases,
   * position embeddings and tokens (anything of rank ≤ 1, or named `*pos_embed*`, `*cls_token*`, `*token*`).
   */
  decay?: (name: string, shape: readonly number[]) => boolean;
  /** Multiplier of the learning rate for a parameter (default 1), e.g. a lower rate for a pre-trained CNN. */
  lrScale?: (name: string) => number;
}

/** The optimiser state as plain data: step count and the two moments per parameter name. */
export interface AdamWState {
  /** Number of steps taken. */
  step: number;
  /** First moments (`exp_avg` in PyTorch) by parameter name. */
  m: Map<string, tf.Tensor>;
  /** Second moments (`exp_avg_sq` in PyTorch) by parameter name. */
  v: Map<string, tf.Tensor>;
}

/**
 * No decay on norms, biases, position embeddings and tokens: decided by name and shape.
 *
 * @example
 * ```ts
 * defaultDecayRule("blocks.0.attn.qkv.weight", [192, 576]); // true
 * defaultDecayRule("blocks.0.norm1.weight", [192]); // false
 * defaultDecayRule("pos_embed", [1, 65, 192]); // false
 * ```
 */
export function defaultDecayRule(name: string, shape: readonly number[]): boolean {
  if (shape.length <= 1) return false; // biases, norm scales/shifts, BN statistics
  const leaf = name.split(".").pop() ?? name;
  if (/pos_embed|cls_token|dist_token|reg_token|mask_token/.test(name)) return false;
  if (leaf === "bias" || /(^|\.)(norm|bn|ln)[^.]*\./.test(name)) return false;
  return true;
}

/**
 * AdamW with decoupled weight decay and saveable state.
 *
 * @example
 * ```ts
 * const opt = new AdamW({ lr: 1e-3, weightDecay: 0.05 });
 * const vars = new Map([["fc.weight", tf.variable(tf.ones([2, 2]))]]);
 * const grads = new Map([["fc.weight", tf.ones([2, 2])]]);
 * opt.step(vars, grads); // lr from the options; pass a number to override
 * ```
 */
export class AdamW {
  /** Current base learning rate (the trainer sets it from the schedule). */
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly decayRule: (name: string, shape: readonly number[]) => boolean;
  private readonly lrScale: (name: string) => number;
  private t = 0;
  private m = new Map<string, tf.Tensor>();
  private v = new Map<string, tf.Tensor>();

  constructor(options: AdamWOptions = {}) {
    this.lr = options.lr ?? 1e-3;
    [this.beta1, this.beta2] = options.betas ?? [0.9, 0.999];
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.05;
    this.decayRule = options.decay ?? defaultDecayRule;
    this.lrScale = options.lrScale ?? (() => 1);
    for (const [k, x] of Object.entries({ lr: this.lr, eps: this.eps, weightDecay: this.weightDecay })) {
      if (!Number.isFinite(x) || x < 0) throw new Error(`AdamW: ${k} must be a finite number ≥ 0, got ${x}`);
    }
    for (const b of [this.beta1, this.beta2]) {
      if (!(b >= 0 && b < 1)) {
        throw new Error(`AdamW: betas must be in [0, 1), got [${this.beta1}, ${this.beta2}]`);
      }
    }
  }

  /** Number of steps taken so far. */
  get stepCount(): number {
    return this.t;
  }

  /** True when `name` (of this shape) receives weight decay. */
  decays(name: string, shape: readonly number[]): boolean {
    return this.weightDecay > 0 && this.decayRule(name, shape);
  }

  /**
   * One update of every variable that has a gradient. Gradients are not disposed (the caller owns them).
   * Variables without a gradient are left alone (their moments too).
   */
  step(variables: Map<string, tf.Variable>, grads: Map<string, tf.Tensor>, lr: number = this.lr): void {
    if (!Number.isFinite(lr) || lr < 0) {
      throw new Error(`AdamW.step: lr must be a finite number ≥ 0, got ${lr}`);
    }
    for (const name of grads.keys()) {
      if (!variables.has(name)) {
        throw new Error(`AdamW.step: gradient for "${name}" but no variable of that name`);
      }
    }
    this.t += 1;
    const t = this.t;
    const bc1 = 1 - Math.pow(this.beta1, t);
    const bc2 = 1 - Math.pow(this.beta2, t);
    const fused = tf.getKernel(ADAMW_KERNEL, tf.getBackend()) !== undefined;
    for (const [name, variable] of variables) {
      const g = grads.get(name);
      if (g === undefined) continue;
      if (g.shape.join(",") !== variable.shape.join(",")) {
        throw new Error(
          `AdamW.step: gradient of "${name}" has shape [${g.shape}], expected the variable's [${variable.shape}]`,
        );
      }
      const plr = lr * this.lrScale(name);
      const decay = this.decays(name, variable.shape);
      const oldM = this.m.get(name);
      const oldV = this.v.get(name);
      if (fused && g.dtype === "float32" && variable.dtype === "float32") {
        // One pass per tensor where the backend has the kernel (wasm, native): same arithmetic.
        const [p, m, v] = tf.tidy(() => {
          const zeros = oldM && oldV ? undefined : tf.zerosLike(variable);
          return tf.engine().runKernel(ADAMW_KERNEL, {
            param: variable,
            grad: g,
            m: oldM ?? zeros!,
            v: oldV ?? zeros!,
          }, {
            lr: plr,
            beta1: this.beta1,
            beta2: this.beta2,
            eps: this.eps,
            decay: decay ? 1 - plr * this.weightDecay : 1,
            bc1,
            bc2,
          } as unknown as tf.NamedAttrMap) as tf.Tensor[];
        });
        variable.assign(p);
        p.dispose();
        oldM?.dispose();
        oldV?.dispose();
        this.m.set(name, m);
        this.v.set(name, v);
        continue;
      }
      const [m, v] = tf.tidy(() => {
        const gm = tf.mul(g, 1 - this.beta1);
        const gv = tf.mul(tf.square(g), 1 - this.beta2);
        const m = oldM ? tf.add(tf.mul(oldM, this.beta1), gm) : gm;
        const v = oldV ? tf.add(tf.mul(oldV, this.beta2), gv) : gv;
        let p: tf.Tensor = variable;
        if (decay) p = tf.mul(p, 1 - plr * this.weightDecay);
        const denom = tf.add(tf.sqrt(tf.div(v, bc2)), this.eps);
        p = tf.sub(p, tf.mul(tf.div(tf.div(m, bc1), denom), plr));
        variable.assign(p);
        return [tf.keep(m), tf.keep(v)];
      });
      oldM?.dispose();
      oldV?.dispose();
      this.m.set(name, m);
      this.v.set(name, v);
    }
  }

  /** Clones of the state (the caller disposes the tensors, or passes them to a checkpoint writer). */
  state(): AdamWState {
    const clone = (src: Map<string, tf.Tensor>) => new Map([...src].map(([k, x]) => [k, tf.clone(x)]));
    return { step: this.t, m: clone(this.m), v: clone(this.v) };
  }

  /** Replaces the state with clones of `s` (shapes are checked against existing moments' names only). */
  loadState(s: AdamWState): void {
    if (!Number.isInteger(s.step) || s.step < 0) {
      throw new Error(`AdamW.loadState: step must be an integer ≥ 0, got ${s.step}`);
    }
    for (const k of s.m.keys()) {
      if (!s.v.has(k)) throw new Error(`AdamW.loadState: "${k}" has a first moment but no second moment`);
    }
    this.dispose();
    this.t = s.step;
    for (const [k, x] of s.m) this.m.set(k, tf.clone(x));
    for (const [k, x] of s.v) this.v.set(k, tf.clone(x));
  }

  /** Frees the moments. */
  dispose(): void {
    for (const x of this.m.values()) x.dispose();
    for (const x of this.v.values()) x.dispose();
    this.m.clear();
    this.v.clear();
  }
}
