/**
 * {@link ParamStore}: the named variables of one model (timm names, tfjs layouts), with seeded
 * initialisers matching timm/PyTorch defaults.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { Rng } from "../util/mod.ts";
import type { TensorLayout } from "./types.ts";

interface Entry {
  variable: tf.Variable;
  layout: TensorLayout;
  trainable: boolean;
}

let storeCounter = 0;

/**
 * Named variables of a model. Creation order is kept (state dicts list tensors in it).
 *
 * @example
 * ```ts
 * const store = new ParamStore(0);
 * const w = store.linear("fc.weight", 8, 2);
 * store.dispose();
 * ```
 */
export class ParamStore {
  private readonly entries = new Map<string, Entry>();
  private readonly rng: Rng;
  private readonly prefix = `m${storeCounter++}`;

  /** `seed` makes initial weights reproducible. */
  constructor(seed = 0) {
    this.rng = new Rng(seed);
  }

  /** Registers a variable from values; throws if `name` exists. */
  add(
    name: string,
    shape: number[],
    values: Float32Array,
    layout: TensorLayout,
    trainable = true,
  ): tf.Variable {
    if (this.entries.has(name)) throw new Error(`ParamStore: duplicate parameter name "${name}"`);
    const variable = tf.tidy(() =>
      tf.variable(tf.tensor(values, shape, "float32"), trainable, `${this.prefix}/${name}`, "float32")
    );
    this.entries.set(name, { variable, layout, trainable });
    return variable;
  }

  /** Normal(0, std) values, truncated to ±2 std when `truncate` (timm's trunc_normal_). */
  normal(n: number, std: number, truncate = false): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let v = this.rng.normal();
      while (truncate && Math.abs(v) > 2) v = this.rng.normal();
      out[i] = v * std;
    }
    return out;
  }

  /** Uniform(-bound, bound) values. */
  uniform(n: number, bound: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.rng.next() * 2 - 1) * bound;
    return out;
  }

  /** Conv kernel HWIO `[k, k, cin, cout]`, Kaiming normal (fan_out, relu) as torchvision ResNets. */
  conv(name: string, k: number, cin: number, cout: number, std?: number): tf.Variable {
    const n = k * k * cin * cout;
    const s = std ?? Math.sqrt(2 / (k * k * cout));
    return this.add(name, [k, k, cin, cout], this.normal(n, s), "conv2d");
  }

  /** Linear weight `[in, out]`; truncated normal std 0.02 (timm ViT) or PyTorch's uniform default. */
  linear(
    name: string,
    cin: number,
    cout: number,
    init: "trunc_normal" | "torch" = "trunc_normal",
  ): tf.Variable {
    const v = init === "trunc_normal"
      ? this.normal(cin * cout, 0.02, true)
      : this.uniform(cin * cout, 1 / Math.sqrt(cin));
    return this.add(name, [cin, cout], v, "linear");
  }

  /** A vector filled with `value` (biases, norm scales). */
  fill(name: string, n: number, value: number, trainable = true): tf.Variable {
    return this.add(name, [n], new Float32Array(n).fill(value), "plain", trainable);
  }

  /** The variable called `name`; throws with the known names if absent. */
  get(name: string): tf.Variable {
    const e = this.entries.get(name);
    if (!e) throw new Error(`ParamStore: no parameter "${name}"`);
    return e.variable;
  }

  /** Whether a parameter called `name` exists. */
  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** All variables in creation order. */
  state(): Map<string, tf.Variable> {
    return new Map([...this.entries].map(([k, e]) => [k, e.variable]));
  }

  /** Trainable variables in creation order. */
  trainable(): Map<string, tf.Variable> {
    return new Map([...this.entries].filter(([, e]) => e.trainable).map(([k, e]) => [k, e.variable]));
  }

  /** Layout of every variable. */
  layouts(): Map<string, TensorLayout> {
    return new Map([...this.entries].map(([k, e]) => [k, e.layout]));
  }

  /** Number of trainable scalars. */
  paramCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.trainable) n += e.variable.size;
    return n;
  }

  /** Disposes every variable. */
  dispose(): void {
    for (const e of this.entries.values()) e.variable.dispose();
    this.entries.clear();
  }
}
