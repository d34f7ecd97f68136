/**
 * Pretrained timm checkpoints: {@link loadPretrained} reads a local safetensors file or downloads one
 * from the Hugging Face hub (cached in `data/weights/`, with a progress bar), pinned to a hub commit and
 * checked against a SHA-256 (a mismatch is an error and leaves no file), then adapts it to the
 * model: position embeddings resampled to the model's patch grid, classification head replaced when
 * the class count differs, and the parts of a ResNet a truncated scorer does not have skipped.
 *
 * @module
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Model } from "../models/types.ts";
import { Progress } from "../util/mod.ts";
import { type RawTensor, readSafetensors } from "./safetensors.ts";
import { loadStateDict, type LoadStateDictReport, pytorchShape } from "./state_dict.ts";
import { resamplePosEmbed } from "./resample.ts";

/** A checkpoint on the Hugging Face hub, optionally pinned to a commit and a checksum. */
export interface HubCheckpoint {
  /** `owner/name` on the hub. */
  hubId: string;
  /** File in the repository. */
  file: string;
  family: "resnet18" | "vit";
  /** Hub commit (40 hex digits) the file is downloaded from. */
  revision?: string;
  /** SHA-256 of the file (64 hex digits; the hub lists it on the file's page). */
  sha256?: string;
}

/**
 * Known timm checkpoints by short name. Their `revision` and `sha256` are not filled in: this project was
 * built without network access to the hub, and a pin nobody checked would be worse than none. Until they
 * are, downloading one needs `{ revision, sha256 }` (from the hub's file page) or `{ allowUnpinned: true }`,
 * which prints the commit and checksum it got so they can be pinned here.
 */
export const PRETRAINED: Record<string, HubCheckpoint> = {
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
  /** Hub commit to download from (overrides the {@link PRETRAINED} pin). */
  revision?: string;
  /** Expected SHA-256 of the file, hex (overrides the {@link PRETRAINED} pin); also checks local files. */
  sha256?: string;
  /**
   * Download from the hub's `main` without a revision or checksum pin (default false: refused). The
   * commit and checksum received are printed so they can be pinned.
   */
  allowUnpinned?: boolean;
}

/** What {@link loadPretrained} did. */
export interface PretrainedReport extends LoadStateDictReport {
  /** The file read. */
  file: string;
  /** Tensors adapted: `pos_embed` resampled, head tensors replaced (kept at the model's init). */
  resampled: string[];
  replaced: string[];
}

function cacheName(hubId: string, revision: string, file: string): string {
  return `${hubId.replaceAll("/", "--")}--${revision.slice(0, 12)}--${file}`;
}

/** SHA-256 of a file, hex. */
async function sha256Of(file: string): Promise<string> {
  const h = createHash("sha256");
  const f = await Deno.open(file, { read: true });
  for await (const chunk of f.readable) h.update(chunk); // the stream closes the file
  return h.digest("hex");
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
 * local file, downloading into the cache when needed. Downloads are pinned: a hub commit (`revision`) and
 * the file's SHA-256, from the options or the {@link PRETRAINED} entry; the bytes are hashed as they
 * arrive and a mismatch is an error that leaves no file behind. A cached file (and a local path, when
 * `sha256` is given) is checked too. Offline, the error says where to put the file.
 *
 * @example
 * ```ts
 * const file = await fetchPretrained("vit_small_patch16_224", {
 *   revision: "<40-hex hub commit>",
 *   sha256: "<64-hex SHA-256 from the hub's file page>",
 * });
 * ```
 */
export async function fetchPretrained(source: string, options: PretrainedOptions = {}): Promise<string> {
  const want = options.sha256?.toLowerCase();
  if (want !== undefined && !/^[0-9a-f]{64}$/.test(want)) {
    throw new RangeError(
      `fetchPretrained: sha256 is ${JSON.stringify(options.sha256)}; expected 64 hex digits`,
    );
  }
  const check = async (file: string, expected: string | undefined, what: string) => {
    if (expected === undefined) return file;
    const got = await sha256Of(file);
    if (got !== expected) {
      throw new Error(
        `fetchPretrained: ${what} ${file} has SHA-256 ${got}, expected ${expected}; ` +
          `delete it (or pass the right file) and try again`,
      );
    }
    return file;
  };
  if (await exists(source)) return await check(source, want, "the file");
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
  const revision = options.revision ?? known?.revision;
  const sha256 = want ?? known?.sha256?.toLowerCase();
  if (revision !== undefined && !/^[0-9a-f]{40}$/.test(revision)) {
    throw new RangeError(
      `fetchPretrained: revision is ${JSON.stringify(revision)}; expected a hub commit (40 hex digits)`,
    );
  }
  if ((revision === undefined || sha256 === undefined) && !options.allowUnpinned) {
    throw new Error(
      `fetchPretrained: "${source}" (${hubId}/${file}) is not pinned (revision ${
        revision ?? "missing"
      }, sha256 ${
        sha256 ?? "missing"
      }); pass { revision: "<hub commit>", sha256: "<file SHA-256>" } from the file's page on the hub, ` +
        `or { allowUnpinned: true } to take whatever "main" holds now`,
    );
  }
  const dir = options.cacheDir ?? DEFAULT_WEIGHTS_DIR;
  const dest = path.join(dir, cacheName(hubId, revision ?? "main", file));
  if (await exists(dest)) return await check(dest, sha256, "the cached file");
  let endpoint = options.endpoint;
  if (!endpoint) {
    try {
      endpoint = Deno.env.get("HF_ENDPOINT") ?? undefined;
    } catch {
      endpoint = undefined;
    }
  }
  const url = `${endpoint ?? "https://huggingface.co"}/${hubId}/resolve/${revision ?? "main"}/${file}`;
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
  const hash = createHash("sha256");
  let ok = false;
  let got = "";
  try {
    let n = 0;
    for await (const chunk of res.body) {
      let off = 0;
      while (off < chunk.length) off += await f.write(chunk.subarray(off));
      hash.update(chunk);
      n += chunk.length;
      bar.update(total ? n : 0);
    }
    if (total && n !== total) throw offline(`connection closed after ${n} of ${total} bytes`);
    got = hash.digest("hex");
    if (sha256 !== undefined && got !== sha256) {
      throw new Error(
        `fetchPretrained: ${url} has SHA-256 ${got}, expected ${sha256} (the pin for ${hubId}); ` +
          `the download was deleted`,
      );
    }
    await f.sync();
    ok = true;
  } finally {
    f.close();
    await bar.stop();
    if (!ok) await Deno.remove(tmp).catch(() => {});
  }
  await Deno.rename(tmp, dest);
  if (revision === undefined || sha256 === undefined) {
    console.warn(
      `fetchPretrained: ${hubId}/${file} downloaded unpinned; to pin it: { revision: "${
        res.headers.get("x-repo-commit") ?? "<see the hub>"
      }", sha256: "${got}" }`,
    );
  }
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
