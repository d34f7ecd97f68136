/**
 * Pretrained timm checkpoints: {@link loadPretrained} reads a local safetensors file or downloads one
 * from the Hugging Face hub (cached in `data/weights/`, with a progress bar), then adapts it to the
 * model: position embeddings resampled to the model's patch grid, classification head replaced when
 * the class count differs, and the parts of a ResNet a truncated scorer does not have skipped.
 *
 * @module
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Model } from "../models/types.ts";
import { Progress } from "../util/mod.ts";
import { type RawTensor, readSafetensors } from "./safetensors.ts";
import { loadStateDict, type LoadStateDictReport, pytorchShape } from "./state_dict.ts";
import { resamplePosEmbed } from "./resample.ts";

/** Known timm checkpoints by short name. */
export const PRETRAINED: Record<string, { hubId: string; file: string; family: "resnet18" | "vit" }> = {
  resnet18: { hubId: "timm/resnet18.a1_in1k", file: "model.safetensors", family: "resnet18" },
  vit_small_patch16_224: {
    hubId: "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    file: "model.safetensors",
    family: "vit",
  },
  vit_tiny_patch16_224: {
    hubId: "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    file: "model.safetensors",
    family: "vit",
  },
};

/** Default cache: `<repo>/data/weights/`. */
export const DEFAULT_WEIGHTS_DIR: string = fileURLToPath(new URL("../../data/weights/", import.meta.url));

/** Options of {@link loadPretrained} and {@link fetchPretrained}. */
export interface PretrainedOptions {
  /** Cache directory (default {@link DEFAULT_WEIGHTS_DIR}). */
  cacheDir?: string;
  /** Hub endpoint (default `HF_ENDPOINT` or https://huggingface.co). */
  endpoint?: string;
  /** For a hybrid: load into `"vit"` or `"cnn"` (default: inferred from the checkpoint). */
  part?: "vit" | "cnn";
  /** Silence the download progress bar. */
  silent?: boolean;
}

/** What {@link loadPretrained} did. */
export interface PretrainedReport extends LoadStateDictReport {
  /** The file read. */
  file: string;
  /** Tensors adapted: `pos_embed` resampled, head tensors replaced (kept at the model's init). */
  resampled: string[];
  replaced: string[];
}

function cacheName(hubId: string, file: string): string {
  return `${hubId.replaceAll("/", "--")}--${file}`;
}

function isHubId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(s);
}

async function exists(p: string): Promise<boolean> {
  try {
    return (await Deno.stat(p)).isFile;
  } catch {
    return false;
  }
}

/**
 * Resolves `source` (a local path, a short name from {@link PRETRAINED}, or a hub id `owner/name`) to a
 * local file, downloading into the cache when needed. Offline, the error says where to put the file.
 *
 * @example
 * ```ts
 * const file = await fetchPretrained("vit_small_patch16_224"); // data/weights/timm--vit_small...safetensors
 * ```
 */
export async function fetchPretrained(source: string, options: PretrainedOptions = {}): Promise<string> {
  if (await exists(source)) return source;
  const known = PRETRAINED[source];
  const hubId = known?.hubId ?? (isHubId(source) ? source : undefined);
  if (!hubId) {
    throw new Error(
      `fetchPretrained: "${source}" is neither a file nor a known checkpoint (${
        Object.keys(PRETRAINED).join(", ")
      }) ` +
        `nor a Hugging Face hub id "owner/name"`,
    );
  }
  const file = known?.file ?? "model.safetensors";
  const dir = options.cacheDir ?? DEFAULT_WEIGHTS_DIR;
  const dest = path.join(dir, cacheName(hubId, file));
  if (await exists(dest)) return dest;
  let endpoint = options.endpoint;
  if (!endpoint) {
    try {
      endpoint = Deno.env.get("HF_ENDPOINT") ?? undefined;
    } catch {
      endpoint = undefined;
    }
  }
  const url = `${endpoint ?? "https://huggingface.co"}/${hubId}/resolve/main/${file}`;
  const offline = (why: string) =>
    new Error(
      `fetchPretrained: cannot download ${url} (${why}). Without network, download that file elsewhere and ` +
        `put it at ${dest} (or pass its path as the source).`,
    );
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw offline((e as Error).message.split("\n")[0]);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw offline(`HTTP ${res.status} ${res.statusText}`);
  }
  await Deno.mkdir(dir, { recursive: true });
  const total = Number(res.headers.get("content-length") ?? 0);
  const bar = new Progress(total || 1, { label: `download ${hubId}`, unit: "bytes", silent: options.silent });
  const tmp = `${dest}.${Deno.pid}.part`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  let ok = false;
  try {
    let got = 0;
    for await (const chunk of res.body) {
      let off = 0;
      while (off < chunk.length) off += await f.write(chunk.subarray(off));
      got += chunk.length;
      bar.update(total ? got : 0);
    }
    if (total && got !== total) throw offline(`connection closed after ${got} of ${total} bytes`);
    ok = true;
  } finally {
    f.close();
    await bar.stop();
    if (!ok) await Deno.remove(tmp).catch(() => {});
  }
  await Deno.rename(tmp, dest);
  return dest;
}

/** The model tensors a checkpoint is loaded into (a hybrid's part, or the model itself). */
function target(
  model: Model,
  tensors: Map<string, RawTensor>,
  part?: "vit" | "cnn",
): { prefix: string; family: string } {
  if (model.family !== "hybrid") return { prefix: "", family: model.family };
  const p = part ?? (tensors.has("pos_embed") ? "vit" : "cnn");
  return { prefix: `${p}.`, family: p === "vit" ? "vit" : "resnet18" };
}

/**
 * Loads a pretrained timm checkpoint into `model` (ResNet18, ViT, or one part of a hybrid): resamples
 * `pos_embed` to the model's grid (bicubic, as timm), replaces the classification head when the class
 * count differs, and skips layers a truncated scorer ResNet lacks. Anything else that does not fit is
 * an error listing the tensors.
 *
 * @example
 * ```ts
 * const vit = createModel("vit_small", { imgSize: 224, patchSize: 16, numClasses: 10 });
 * await loadPretrained(vit, "vit_small_patch16_224"); // head replaced, pos_embed kept (14x14)
 * ```
 */
export async function loadPretrained(
  model: Model,
  source: string,
  options: PretrainedOptions = {},
): Promise<PretrainedReport> {
  const file = await fetchPretrained(source, options);
  const { tensors } = await readSafetensors(file);
  const { prefix, family } = target(model, tensors, options.part);
  const state = model.stateDict();
  const layouts = model.stateLayouts();
  const resampled: string[] = [];
  const replaced: string[] = [];
  const skip: string[] = [];
  const adapted = new Map(tensors);
  const shapeOf = (name: string) => {
    const v = state.get(prefix + name);
    return v ? pytorchShape(v.shape, layouts.get(prefix + name) ?? "plain") : undefined;
  };
  const same = (a: number[] | undefined, b: number[]) =>
    !!a && a.length === b.length && a.every((d, i) => d === b[i]);
  if (family === "vit") {
    const pos = tensors.get("pos_embed");
    const want = shapeOf("pos_embed");
    if (pos && want && !same(want, pos.shape) && pos.shape[2] === want[2]) {
      const g = Math.round(Math.sqrt(want[1] - 1));
      const r = resamplePosEmbed(pos.data as Float32Array, pos.shape, g);
      adapted.set("pos_embed", { dtype: "F32", shape: r.shape, data: r.data });
      resampled.push("pos_embed");
    }
    for (const h of ["head.weight", "head.bias"]) {
      const t = tensors.get(h);
      if (t && !same(shapeOf(h), t.shape)) {
        skip.push(h);
        replaced.push(h);
      }
    }
    const pe = tensors.get("patch_embed.proj.weight");
    const wantPe = shapeOf("patch_embed.proj.weight");
    if (pe && wantPe && !same(wantPe, pe.shape)) {
      throw new Error(
        `loadPretrained(${file}): patch embedding is [${pe.shape}] but the model's is [${wantPe}]; the checkpoint's ` +
          `patch size ${pe.shape[2]} differs from the model's ${wantPe[2]}: create the model with patchSize ${
            pe.shape[2]
          } ` +
          `(and resize images) instead`,
      );
    }
  } else {
    for (const h of ["fc.weight", "fc.bias"]) {
      const t = tensors.get(h);
      if (!t) continue;
      if (!state.has(prefix + h)) skip.push(h); // truncated scorer: no fc
      else if (!same(shapeOf(h), t.shape)) {
        skip.push(h);
        replaced.push(h);
      }
    }
    for (const name of tensors.keys()) {
      const m = /^layer(\d)\./.exec(name);
      if (
        m && !state.has(prefix + name) &&
        ![...state.keys()].some((k) => k.startsWith(`${prefix}layer${m[1]}.`))
      ) {
        skip.push(name); // a stage the truncated scorer does not have
      }
    }
  }
  const extraMissing = [...state.keys()].filter((k) => k.startsWith(`${prefix}importance_head.`)).map((k) =>
    k.slice(prefix.length)
  );
  const report = loadStateDict(model, adapted, {
    prefix,
    skip,
    allowMissing: true,
    source: file,
  });
  const missing = report.missing.filter((k) => !extraMissing.includes(k) && !replaced.includes(k));
  if (missing.length) {
    throw new Error(
      `loadPretrained(${file}): the checkpoint lacks ${missing.length} model tensors: ${missing.join(", ")}`,
    );
  }
  return { ...report, file, resampled, replaced };
}
