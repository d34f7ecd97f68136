/**
 * State dicts: loading tensors into a {@link Model} by timm name with layout conversion, and
 * exporting a model's state in PyTorch layouts (conv OIHW, linear `[out, in]`), so checkpoints move
 * between PyTorch/timm and this library without renaming.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Model, TensorLayout } from "../models/types.ts";
import type { RawTensor, TensorToWrite } from "./safetensors.ts";

/** Which layout tensors handed to {@link loadStateDict} are in. */
export type StateLayout = "pytorch" | "tfjs";

/**
 * Shape of a tensor of `layout` in PyTorch given our (tfjs) shape.
 *
 * @example
 * ```ts
 * pytorchShape([3, 3, 16, 32], "conv2d"); // [32, 16, 3, 3]
 * ```
 */
export function pytorchShape(shape: number[], layout: TensorLayout): number[] {
  if (layout === "conv2d") return [shape[3], shape[2], shape[0], shape[1]];
  if (layout === "linear") return [shape[1], shape[0]];
  return [...shape];
}

/** Permutation taking a PyTorch-layout tensor to ours. */
function fromPyTorchPerm(layout: TensorLayout): number[] | undefined {
  if (layout === "conv2d") return [2, 3, 1, 0]; // OIHW -> HWIO
  if (layout === "linear") return [1, 0];
  return undefined;
}

/** Permutation taking our layout to PyTorch's. */
function toPyTorchPerm(layout: TensorLayout): number[] | undefined {
  if (layout === "conv2d") return [3, 2, 0, 1]; // HWIO -> OIHW
  if (layout === "linear") return [1, 0];
  return undefined;
}

/** Options of {@link loadStateDict}. */
export interface LoadStateDictOptions {
  /** Layout of the given tensors (default `"pytorch"`). */
  layout?: StateLayout;
  /** Prefix of the model's names to load into (e.g. `"vit."` for a hybrid's ViT); default none. */
  prefix?: string;
  /** Allow model tensors absent from `tensors` (they keep their values); default false. */
  allowMissing?: boolean;
  /** Allow tensors unknown to the model (ignored); default false. */
  allowUnknown?: boolean;
  /** Names (of `tensors`) to skip, e.g. a head being replaced. */
  skip?: Iterable<string>;
  /** Where the tensors came from, for error messages. */
  source?: string;
}

/** What {@link loadStateDict} did. */
export interface LoadStateDictReport {
  loaded: string[];
  missing: string[];
  unknown: string[];
}

/** Buffers that timm/PyTorch checkpoints carry but our models do not need. */
const IGNORED = /(^|\.)num_batches_tracked$/;

/**
 * Copies `tensors` (timm names) into the model's variables, converting layouts. Throws one error that
 * lists every unknown, missing and mis-shaped tensor (nothing is changed then).
 *
 * @example
 * ```ts
 * const { tensors } = await readSafetensors("resnet18.safetensors");
 * loadStateDict(model, tensors); // PyTorch layouts
 * ```
 */
export function loadStateDict(
  model: Model,
  tensors: Map<string, RawTensor | TensorToWrite>,
  options: LoadStateDictOptions = {},
): LoadStateDictReport {
  const layout = options.layout ?? "pytorch";
  const prefix = options.prefix ?? "";
  const source = options.source ?? "state dict";
  const skip = new Set(options.skip ?? []);
  const state = model.stateDict();
  const layouts = model.stateLayouts();
  const targets = new Map([...state].filter(([k]) => k.startsWith(prefix)));
  const unknown: string[] = [];
  const misShaped: string[] = [];
  const nonFloat: string[] = [];
  const plan: [string, tf.Variable, RawTensor | TensorToWrite, TensorLayout][] = [];
  const seen = new Set<string>();
  for (const [name, t] of tensors) {
    if (IGNORED.test(name) || skip.has(name)) continue;
    const full = prefix + name;
    const v = targets.get(full);
    if (!v) {
      unknown.push(name);
      continue;
    }
    seen.add(full);
    const lay = layouts.get(full) ?? "plain";
    const expected = layout === "pytorch" ? pytorchShape(v.shape, lay) : v.shape;
    if (expected.length !== t.shape.length || expected.some((d, i) => d !== t.shape[i])) {
      misShaped.push(`${name}: got [${t.shape}], expected [${expected}]`);
      continue;
    }
    if (!(t.data instanceof Float32Array)) {
      nonFloat.push(`${name} (${"dtype" in t ? t.dtype : "I32"})`);
      continue;
    }
    plan.push([full, v, t, lay]);
  }
  const missing = [...targets.keys()].filter((k) => !seen.has(k)).map((k) => k.slice(prefix.length))
    .filter((k) => !skip.has(k));
  const problems: string[] = [];
  if (unknown.length && !options.allowUnknown) {
    problems.push(`unknown tensors (${unknown.length}): ${unknown.join(", ")}`);
  }
  if (missing.length && !options.allowMissing) {
    problems.push(`missing tensors (${missing.length}): ${missing.join(", ")}`);
  }
  if (misShaped.length) problems.push(`mis-shaped tensors (${misShaped.length}): ${misShaped.join("; ")}`);
  if (nonFloat.length) problems.push(`non-float tensors: ${nonFloat.join(", ")}`);
  if (problems.length) {
    throw new Error(
      `loadStateDict(${source} -> ${model.family}${prefix ? ` "${prefix}"` : ""}): ${problems.join(" | ")}`,
    );
  }
  for (const [, v, t, lay] of plan) {
    tf.tidy(() => {
      let x = tf.tensor(t.data as Float32Array, [...t.shape], "float32");
      const perm = layout === "pytorch" ? fromPyTorchPerm(lay) : undefined;
      if (perm) x = tf.transpose(x, perm);
      v.assign(x);
    });
  }
  return { loaded: plan.map(([n]) => n.slice(prefix.length)), missing, unknown };
}

/**
 * The model's state (incl. batch-norm running stats) as tensors in PyTorch layouts, by timm name.
 *
 * @example
 * ```ts
 * const tensors = await exportStateDict(model);
 * await writeSafetensors("model.safetensors", tensors);
 * ```
 */
export async function exportStateDict(
  model: Model,
  options: { layout?: StateLayout; prefix?: string } = {},
): Promise<Map<string, TensorToWrite>> {
  const layout = options.layout ?? "pytorch";
  const prefix = options.prefix ?? "";
  const layouts = model.stateLayouts();
  const out = new Map<string, TensorToWrite>();
  for (const [name, v] of model.stateDict()) {
    if (!name.startsWith(prefix)) continue;
    const lay = layouts.get(name) ?? "plain";
    const perm = layout === "pytorch" ? toPyTorchPerm(lay) : undefined;
    const t = perm ? tf.transpose(v, perm) : tf.clone(v);
    try {
      out.set(name.slice(prefix.length), { shape: [...t.shape], data: (await t.data()) as Float32Array });
    } finally {
      t.dispose();
    }
  }
  return out;
}
