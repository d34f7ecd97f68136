/**
 * {@link ViT}: timm's VisionTransformer (CLS token, learned position embeddings, pre-norm blocks with
 * fused qkv attention and an exact-GELU MLP, final norm, CLS head), in NHWC, with real token pruning:
 * given kept patch indices it gathers those tokens and runs its blocks on the shorter sequence.
 *
 * The pieces are public so pruning strategies compose them (timm's `forwardFeatures`/`forwardHead`):
 * {@link ViT.embed} → {@link ViT.block} (×depth) → {@link ViT.forwardHead}.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ParamStore } from "./param_store.ts";
import { conv2d, gelu, layerNorm, linear } from "./layers.ts";
import { gatherTokens } from "../pruning/select_top_k.ts";
import { attentionKernel, maskedAttentionKernel, recordingGradients } from "../backend/mod.ts";
import type {
  ForwardAux,
  ForwardOptions,
  ForwardOutput,
  GmacsOptions,
  GmacsReport,
  Model,
  TensorLayout,
  ViTConfig,
} from "./types.ts";

/**
 * Validates a ViT config (errors quote the bad field) and fills defaults.
 *
 * @example
 * ```ts
 * resolveViTConfig(createModel("vit_tiny").config as ViTConfig).lnEps; // 1e-6
 * ```
 */
export function resolveViTConfig(c: ViTConfig): Required<ViTConfig> {
  const where = "ViT config";
  if (c.model !== "vit") throw new Error(`${where}: model is "${c.model}", expected "vit"`);
  for (const k of ["numClasses", "imgSize", "patchSize", "embedDim", "depth", "numHeads"] as const) {
    if (!(Number.isInteger(c[k]) && c[k] >= 1)) {
      throw new Error(`${where}: ${k} ${c[k]} is not a positive integer`);
    }
  }
  if (c.imgSize % c.patchSize !== 0) {
    throw new Error(`${where}: imgSize ${c.imgSize} is not a multiple of patchSize ${c.patchSize}`);
  }
  if (c.embedDim % c.numHeads !== 0) {
    throw new Error(`${where}: embedDim ${c.embedDim} is not divisible by numHeads ${c.numHeads}`);
  }
  if (!(c.mlpRatio > 0)) throw new Error(`${where}: mlpRatio ${c.mlpRatio} is not positive`);
  if (c.gradCheckpoint !== undefined && typeof c.gradCheckpoint !== "boolean") {
    throw new Error(`${where}: gradCheckpoint ${JSON.stringify(c.gradCheckpoint)} is not a boolean`);
  }
  if (c.init !== undefined && c.init !== "timm" && c.init !== "torch") {
    throw new Error(`${where}: init ${JSON.stringify(c.init)} is not "timm" or "torch"`);
  }
  if (c.distillToken !== undefined && typeof c.distillToken !== "boolean") {
    throw new Error(`${where}: distillToken ${JSON.stringify(c.distillToken)} is not a boolean`);
  }
  return {
    ...c,
    inChans: c.inChans ?? 3,
    lnEps: c.lnEps ?? 1e-6,
    gradCheckpoint: c.gradCheckpoint ?? false,
    init: c.init ?? "timm",
    distillToken: c.distillToken ?? false,
  };
}

/** Options of {@link ViT.block}. */
export interface BlockOptions {
  /** Return the attention probabilities `[B, heads, T, T]`. */
  returnAttention?: boolean;
  /** `[B, T]` token mask in [0, 1] for DynamicViT-style masked softmax (CLS column must be 1). */
  tokenMask?: tf.Tensor2D;
}

/** The engine state fields this file reads (tfjs keeps them on `engine().state`). */
interface EngineTapeState {
  gradientDepth: number;
  activeTape: unknown;
}

function engineState(): EngineTapeState {
  return (tf.engine() as unknown as { state: EngineTapeState }).state;
}

const isRecordingGradients = recordingGradients;

/** Parameters of one block, relative to `blocks.i.`, in the order a checkpointed block passes them. */
const BLOCK_PARAMS = [
  "norm1.weight",
  "norm1.bias",
  "attn.qkv.weight",
  "attn.qkv.bias",
  "attn.proj.weight",
  "attn.proj.bias",
  "norm2.weight",
  "norm2.bias",
  "mlp.fc1.weight",
  "mlp.fc1.bias",
  "mlp.fc2.weight",
  "mlp.fc2.bias",
] as const;
type BlockParam = typeof BLOCK_PARAMS[number];
/** Looks up a block parameter: the variable itself, or the tensor a checkpointed block was given. */
type BlockParams = (name: BlockParam) => tf.Tensor;

/** tfjs types custom-gradient functions loosely (inputs and the save function in one rest array). */
type LooseCustomGrad = Parameters<typeof tf.customGrad>[0];

/**
 * Gradients of `f(...inputs)` with respect to every input, for output gradient `dy`, computed from
 * inside another gradient function (the backward pass of a checkpointed block).
 *
 * tfjs supports this nesting except for one piece of bookkeeping: when the outer backward pass runs at
 * gradient depth 0, the inner `tf.grads` starts a fresh tape by replacing `engine.state.activeTape` and
 * sets it to null when done, so the outer pass would lose its own tape (its saved tensors would leak
 * and its clean-up would throw on null). The outer tape is put back afterwards.
 */
function nestedGrads(
  f: (...inputs: tf.Tensor[]) => tf.Tensor,
  inputs: tf.Tensor[],
  dy: tf.Tensor,
): tf.Tensor[] {
  const state = engineState();
  const outerTape = state.activeTape;
  try {
    return tf.grads(f)(inputs, dy);
  } finally {
    state.activeTape = outerTape;
  }
}

/**
 * Vision Transformer with timm parameter names (`cls_token`, `pos_embed`, `patch_embed.proj`,
 * `blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`, `head`).
 *
 * @example
 * ```ts
 * const vit = new ViT({ model: "vit", numClasses: 10, imgSize: 32, patchSize: 4, embedDim: 64,
 *   depth: 2, numHeads: 4, mlpRatio: 4 });
 * const keep = tf.tensor2d([[0, 3, 9]], [1, 3], "int32");
 * const { logits } = vit.forward(tf.zeros([1, 32, 32, 3]) as tf.Tensor4D, { keepIndices: keep });
 * ```
 */
export class ViT implements Model {
  readonly family = "vit" as const;
  readonly config: ViTConfig;
  private readonly c: Required<ViTConfig>;
  private readonly store: ParamStore;

  constructor(config: ViTConfig, options: { seed?: number } = {}) {
    this.c = resolveViTConfig(config);
    this.config = structuredClone(config);
    this.store = new ParamStore(options.seed ?? 0);
    this.initParams();
  }

  /** Creates every parameter with the configured initialisation (`init`: timm or PyTorch defaults). */
  private initParams(): void {
    const c = this.c;
    const s = this.store;
    const d = c.embedDim;
    const hidden = Math.round(d * c.mlpRatio);
    const fanIn = c.inChans * c.patchSize ** 2;
    const torch = c.init === "torch";
    const prefix = this.numPrefixTokens;
    s.add("cls_token", [1, 1, d], torch ? new Float32Array(d) : s.normal(d, 1e-6), "plain");
    if (c.distillToken) s.add("dist_token", [1, 1, d], s.normal(d, 0.02, !torch), "plain");
    s.add(
      "pos_embed",
      [1, this.numPatches + prefix, d],
      s.normal((this.numPatches + prefix) * d, 0.02, !torch),
      "plain",
    );
    s.add(
      "patch_embed.proj.weight",
      [c.patchSize, c.patchSize, c.inChans, d],
      s.uniform(fanIn * d, 1 / Math.sqrt(fanIn)),
      "conv2d",
    );
    s.add("patch_embed.proj.bias", [d], s.uniform(d, 1 / Math.sqrt(fanIn)), "plain");
    const linear = (name: string, cin: number, cout: number) => {
      s.linear(`${name}.weight`, cin, cout, torch ? "torch" : "trunc_normal");
      if (torch) s.add(`${name}.bias`, [cout], s.uniform(cout, 1 / Math.sqrt(cin)), "plain");
      else s.fill(`${name}.bias`, cout, 0);
    };
    for (let i = 0; i < c.depth; i++) {
      const p = `blocks.${i}`;
      s.fill(`${p}.norm1.weight`, d, 1);
      s.fill(`${p}.norm1.bias`, d, 0);
      linear(`${p}.attn.qkv`, d, 3 * d);
      linear(`${p}.attn.proj`, d, d);
      s.fill(`${p}.norm2.weight`, d, 1);
      s.fill(`${p}.norm2.bias`, d, 0);
      linear(`${p}.mlp.fc1`, d, hidden);
      linear(`${p}.mlp.fc2`, hidden, d);
    }
    s.fill("norm.weight", d, 1);
    s.fill("norm.bias", d, 0);
    linear("head", d, c.numClasses);
    if (c.distillToken) linear("head_dist", d, c.numClasses);
  }

  /** Patch grid side (imgSize / patchSize). */
  get gridSize(): number {
    return this.c.imgSize / this.c.patchSize;
  }

  /** Number of patch tokens N (CLS excluded). */
  get numPatches(): number {
    return this.gridSize ** 2;
  }

  /** Tokens before the patch tokens: CLS, and the distillation token with `distillToken`. */
  get numPrefixTokens(): number {
    return this.c.distillToken ? 2 : 1;
  }

  /** Number of blocks. */
  get depth(): number {
    return this.c.depth;
  }

  private p(name: string): tf.Variable {
    return this.store.get(name);
  }

  /**
   * Patch embedding + CLS (and distillation) token + position embedding: `[B, H, W, C]` → `[B, P + N, D]`
   * with P = {@link ViT.numPrefixTokens}. Call inside `tf.tidy`.
   */
  embed(x: tf.Tensor4D): tf.Tensor3D {
    const c = this.c;
    if (x.rank !== 4 || x.shape[1] !== c.imgSize || x.shape[2] !== c.imgSize || x.shape[3] !== c.inChans) {
      throw new Error(
        `ViT.embed: input shape [${x.shape}] is not [B, ${c.imgSize}, ${c.imgSize}, ${c.inChans}] (NHWC)`,
      );
    }
    const b = x.shape[0];
    const d = c.embedDim;
    const proj = conv2d(x, this.p("patch_embed.proj.weight") as tf.Tensor4D, c.patchSize, 0);
    const patches = tf.reshape(tf.add(proj, this.p("patch_embed.proj.bias")), [b, this.numPatches, d]);
    const prefix = [tf.tile(this.p("cls_token"), [b, 1, 1])];
    if (c.distillToken) prefix.push(tf.tile(this.p("dist_token"), [b, 1, 1]));
    return tf.add(tf.concat([...prefix, patches], 1), this.p("pos_embed")) as tf.Tensor3D;
  }

  /**
   * Multi-head self-attention of block `i` on normalised tokens `[B, T, D]`. Call inside `tf.tidy`.
   */
  attention(
    i: number,
    x: tf.Tensor3D,
    opts: BlockOptions = {},
  ): { out: tf.Tensor3D; attention?: tf.Tensor4D } {
    return this.attentionWith(x, opts, this.blockParams(i));
  }

  private attentionWith(
    x: tf.Tensor3D,
    opts: BlockOptions,
    w: BlockParams,
  ): { out: tf.Tensor3D; attention?: tf.Tensor4D } {
    const h = this.c.numHeads;
    const qkv = linear(x, w("attn.qkv.weight"), w("attn.qkv.bias"));
    if (!opts.returnAttention) {
      // Native backend with oneDNN: one kernel reads q, k, v in place (no head split, transposes or
      // separate softmax), and one computes the gradient straight into qkv's (and the mask's); undefined
      // elsewhere.
      const fused = opts.tokenMask ? maskedAttentionKernel(qkv, opts.tokenMask, h) : attentionKernel(qkv, h);
      if (fused) return { out: linear(fused, w("attn.proj.weight"), w("attn.proj.bias")) as tf.Tensor3D };
    }
    const { ctx, probs } = opByOpAttention(qkv, h, opts.tokenMask);
    const out = linear(ctx, w("attn.proj.weight"), w("attn.proj.bias")) as tf.Tensor3D;
    return opts.returnAttention ? { out, attention: probs } : { out };
  }

  /** Transformer block `i` (pre-norm attention + MLP, residuals) on `[B, T, D]`. Call inside `tf.tidy`. */
  block(
    i: number,
    tokens: tf.Tensor3D,
    opts: BlockOptions = {},
  ): { tokens: tf.Tensor3D; attention?: tf.Tensor4D } {
    if (!(i >= 0 && i < this.c.depth)) {
      throw new Error(`ViT.block: block ${i} is not in 0..${this.c.depth - 1}`);
    }
    return this.blockWith(tokens, opts, this.blockParams(i));
  }

  /** Block `i`'s parameters (the variables). */
  private blockParams(i: number): BlockParams {
    return (name) => this.p(`blocks.${i}.${name}`);
  }

  /** A transformer block computed with the parameters `w` gives. */
  private blockWith(
    tokens: tf.Tensor3D,
    opts: BlockOptions,
    w: BlockParams,
  ): { tokens: tf.Tensor3D; attention?: tf.Tensor4D } {
    const eps = this.c.lnEps;
    const a = this.attentionWith(layerNorm(tokens, w("norm1.weight"), w("norm1.bias"), eps), opts, w);
    const x = tf.add(tokens, a.out) as tf.Tensor3D;
    const hn = layerNorm(x, w("norm2.weight"), w("norm2.bias"), eps);
    const m = linear(
      gelu(linear(hn, w("mlp.fc1.weight"), w("mlp.fc1.bias"))),
      w("mlp.fc2.weight"),
      w("mlp.fc2.bias"),
    );
    const out = tf.add(x, m) as tf.Tensor3D;
    return a.attention ? { tokens: out, attention: a.attention } : { tokens: out };
  }

  /**
   * Block `i` with gradient checkpointing: one custom-gradient op whose inputs are the block input, the
   * token mask (if any) and the block's 12 parameters. Its forward runs the block without recording and
   * keeps only those inputs; its gradient recomputes the block under a nested gradient tape and returns
   * the gradients of all of them (so the parameters get theirs through the outer tape as usual).
   */
  private checkpointedBlock(i: number, tokens: tf.Tensor3D, mask?: tf.Tensor2D): tf.Tensor3D {
    const params = BLOCK_PARAMS.map((name) => this.p(`blocks.${i}.${name}`));
    const lead = mask ? 2 : 1;
    const run = (...ins: tf.Tensor[]): tf.Tensor3D =>
      this.blockWith(
        ins[0] as tf.Tensor3D,
        { tokenMask: mask ? ins[1] as tf.Tensor2D : undefined },
        (name) => ins[lead + BLOCK_PARAMS.indexOf(name)],
      ).tokens;
    const op = tf.customGrad(
      ((...args: unknown[]) => {
        const save = args.pop() as tf.GradSaveFunc;
        const inputs = args as tf.Tensor[];
        // Clones sharing the inputs' memory: the block input outlives the forward's tidy only through them.
        save(inputs);
        return {
          value: run(...inputs),
          gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => nestedGrads(run, saved, dy),
        };
      }) as unknown as LooseCustomGrad,
    );
    return op(tokens, ...(mask ? [mask] : []), ...params) as tf.Tensor3D;
  }

  /**
   * Turns gradient checkpointing per block on or off (config field `gradCheckpoint`; timm's
   * `set_grad_checkpointing`). Values and gradients are unchanged; training steps use far less memory
   * for one extra forward pass of the blocks.
   *
   * @example
   * ```ts
   * const vit = createModel("vit_small") as ViT;
   * vit.setGradCheckpointing(true); // vit.config.gradCheckpoint === true
   * ```
   */
  setGradCheckpointing(enable = true): void {
    this.c.gradCheckpoint = enable;
    // The config stays truthful; a config that never named the field keeps it absent (= off).
    if (enable || this.config.gradCheckpoint !== undefined) {
      (this.config as ViTConfig).gradCheckpoint = enable;
    }
  }

  /** Whether training steps checkpoint each block (see {@link ViTConfig.gradCheckpoint}). */
  get gradCheckpointing(): boolean {
    return this.c.gradCheckpoint;
  }

  /**
   * Final norm and the CLS-token head: `[B, T, D]` → logits `[B, classes]`. With a distillation token, the
   * average of both heads (DeiT's inference). Call inside `tf.tidy`.
   */
  forwardHead(tokens: tf.Tensor3D): tf.Tensor2D {
    const h = this.forwardHeads(tokens);
    return h.dist ? tf.div(tf.add(h.cls, h.dist), 2) as tf.Tensor2D : h.cls;
  }

  /**
   * Both heads' logits: `cls` from the CLS token (`head`) and, with a distillation token, `dist` from it
   * (`head_dist`); timm's distilled training output. Call inside `tf.tidy`.
   */
  forwardHeads(tokens: tf.Tensor3D): { cls: tf.Tensor2D; dist?: tf.Tensor2D } {
    const [b, , d] = tokens.shape;
    const head = (i: number, name: string) => {
      const tok = tf.reshape(tf.slice(tokens, [0, i, 0], [b, 1, d]), [b, d]);
      const normed = layerNorm(tok, this.p("norm.weight"), this.p("norm.bias"), this.c.lnEps);
      return linear(normed, this.p(`${name}.weight`), this.p(`${name}.bias`)) as tf.Tensor2D;
    };
    return this.c.distillToken
      ? { cls: head(0, "head"), dist: head(1, "head_dist") }
      : { cls: head(0, "head") };
  }

  /**
   * Runs the blocks on embedded tokens `[B, 1 + N, D]`: gathers `keepIndices` first, applies the
   * token mask and the reducer, and collects aux outputs. Returns the final tokens (before the final
   * norm). `preselected` says the tokens were already reduced to CLS + the given patch indices out of
   * `numPatches` (the hybrid's top-k). Call inside `tf.tidy`; used by {@link ViT.forward} and the hybrid.
   *
   * With `gradCheckpoint` on and a gradient tape recording, every block whose attention probabilities
   * are not needed (all of them unless `returnAttention` or an attention-based reducer asks) runs
   * checkpointed: the tape keeps the block's input, not its activations, and backward recomputes them.
   * Token masks, gathered tokens and reducers work as without it.
   */
  forwardTokens(
    tokens: tf.Tensor3D,
    options: ForwardOptions = {},
    preselected?: { keptIndices: tf.Tensor2D; numPatches: number },
  ): { tokens: tf.Tensor3D; keptIndices?: tf.Tensor2D; attention: tf.Tensor4D[]; tokensPerBlock: number[] } {
    const [b, t] = tokens.shape;
    const prefix = this.numPrefixTokens;
    const n = preselected ? preselected.numPatches : t - prefix;
    if ((options.keepIndices || preselected) && options.tokenMask) {
      throw new Error("ViT.forward: give keepIndices or tokenMask, not both");
    }
    if (options.keptMask && !(options.keepIndices || preselected)) {
      throw new Error("ViT.forward: keptMask marks padding among gathered tokens; it needs keepIndices");
    }
    let x = tokens;
    let kept: tf.Tensor2D | undefined = preselected?.keptIndices;
    if (options.keepIndices && !preselected) {
      const ki = options.keepIndices;
      if (ki.rank !== 2 || ki.shape[0] !== b || ki.shape[1] < 1 || ki.shape[1] > n) {
        throw new Error(`ViT.forward: keepIndices shape [${ki.shape}] is not [${b}, k] with 1 <= k <= ${n}`);
      }
      kept = ki.dtype === "int32" ? ki : (tf.cast(ki, "int32") as tf.Tensor2D);
      x = gatherTokens(tokens, kept, prefix);
    }
    let mask: tf.Tensor2D | undefined;
    if (options.keptMask) {
      const m = options.keptMask;
      const k = x.shape[1] - prefix;
      if (m.rank !== 2 || m.shape[0] !== b || m.shape[1] !== k) {
        throw new Error(`ViT.forward: keptMask shape [${m.shape}] is not [${b}, ${k}] (the gathered tokens)`);
      }
      mask = tf.concat([tf.ones([b, prefix]), tf.cast(m, "float32")], 1) as tf.Tensor2D;
    }
    if (options.tokenMask) {
      const m = options.tokenMask;
      if (m.rank !== 2 || m.shape[0] !== b || m.shape[1] !== n) {
        throw new Error(`ViT.forward: tokenMask shape [${m.shape}] is not [${b}, ${n}]`);
      }
      mask = tf.concat([tf.ones([b, prefix]), tf.cast(m, "float32")], 1) as tf.Tensor2D;
    }
    const reducer = options.reducer;
    const attention: tf.Tensor4D[] = [];
    const tokensPerBlock: number[] = [];
    // Plain inference (no gradient tape, no attention or reducer): each block in its own tidy, and the
    // previous block's output freed, so peak memory is one block's intermediates instead of all of them.
    const lean = !options.returnAttention && !reducer && !isRecordingGradients();
    if (lean) {
      for (let i = 0; i < this.c.depth; i++) {
        tokensPerBlock.push(x.shape[1]);
        const prev = x;
        x = tf.tidy(() => this.block(i, prev, { tokenMask: mask }).tokens);
        if (prev !== tokens) prev.dispose();
      }
      return { tokens: x, keptIndices: kept, attention, tokensPerBlock };
    }
    // Gradient checkpointing applies to every block whose attention probabilities are not wanted, the
    // last one included: tfjs keeps every intermediate gradient of the outer tape until backward ends, so
    // an uncheckpointed last block would hold its gradients through all the recomputations (ViT-Small,
    // batch 64: peak 1839 instead of 1168 MiB of tensors).
    const checkpoint = this.c.gradCheckpoint && isRecordingGradients();
    for (let i = 0; i < this.c.depth; i++) {
      tokensPerBlock.push(x.shape[1]);
      const reduceHere = reducer?.afterBlocks.includes(i) ?? false;
      const wantAttn = (options.returnAttention ?? false) ||
        (reduceHere && (reducer?.needsAttention ?? false));
      const r = checkpoint && !wantAttn
        ? { tokens: this.checkpointedBlock(i, x, mask), attention: undefined }
        : this.block(i, x, { returnAttention: wantAttn, tokenMask: mask });
      x = r.tokens;
      if (r.attention && options.returnAttention) attention.push(r.attention);
      if (reduceHere && reducer) {
        if (mask) throw new Error("ViT.forward: a reducer cannot be combined with tokenMask");
        if (!kept) kept = tf.tile(tf.reshape(tf.range(0, n, 1, "int32"), [1, n]), [b, 1]) as tf.Tensor2D;
        const red = reducer.reduce(x, { block: i, attention: r.attention, keptIndices: kept });
        x = red.tokens;
        kept = red.keptIndices;
      }
    }
    return { tokens: x, keptIndices: kept, attention, tokensPerBlock };
  }

  /** Embedding + blocks + final tokens, as timm's `forward_features` (without the final norm). */
  forwardFeatures(x: tf.Tensor4D, options: ForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => this.forwardTokens(this.embed(x), options).tokens);
  }

  forward(x: tf.Tensor4D, options: ForwardOptions = {}): ForwardOutput {
    return tf.tidy(() => {
      const r = this.forwardTokens(this.embed(x), options);
      const heads = this.forwardHeads(r.tokens);
      const logits = heads.dist ? tf.div(tf.add(heads.cls, heads.dist), 2) as tf.Tensor2D : heads.cls;
      const out: ForwardOutput = { logits };
      if (options.returnAux || options.returnAttention) {
        const aux: ForwardAux = { tokensPerBlock: r.tokensPerBlock };
        if (heads.dist) Object.assign(aux, { clsLogits: heads.cls, distLogits: heads.dist });
        if (r.keptIndices) {
          aux.keptIndices = r.keptIndices === options.keepIndices ? tf.clone(r.keptIndices) : r.keptIndices;
        }
        if (options.returnAttention) aux.attention = r.attention;
        out.aux = aux;
      }
      return out as unknown as tf.TensorContainer;
    }) as unknown as ForwardOutput;
  }

  trainableVariables(): Map<string, tf.Variable> {
    return this.store.trainable();
  }

  stateDict(): Map<string, tf.Variable> {
    return this.store.state();
  }

  stateLayouts(): Map<string, TensorLayout> {
    return this.store.layouts();
  }

  paramCount(): number {
    return this.store.paramCount();
  }

  /**
   * Analytic GMACs: patch embedding, per block qkv + q·kᵀ + attn·v + proj + MLP at the block's token
   * count, and the head. Token counts come from `tokensPerBlock`, else `keepRatio` (CLS + k).
   */
  gmacs(options: GmacsOptions = {}): GmacsReport {
    const c = this.c;
    const img = options.imgSize ?? c.imgSize;
    const n = (img / c.patchSize) ** 2;
    const d = c.embedDim;
    const hidden = Math.round(d * c.mlpRatio);
    let macs = n * d * c.inChans * c.patchSize ** 2;
    const k = options.keepRatio === undefined || options.keepRatio >= 1
      ? n
      : Math.max(1, Math.min(n, Math.round(options.keepRatio * n)));
    const perBlock = options.tokensPerBlock ?? new Array(c.depth).fill(k + this.numPrefixTokens);
    if (perBlock.length !== c.depth) {
      throw new Error(`ViT.gmacs: tokensPerBlock has ${perBlock.length} entries, expected depth ${c.depth}`);
    }
    for (const t of perBlock) macs += t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * hidden;
    macs += d * c.numClasses * (c.distillToken ? 2 : 1);
    return { total: macs / 1e9, vit: macs / 1e9 };
  }

  dispose(): void {
    this.store.dispose();
  }
}

/**
 * Multi-head self-attention from the fused projection `qkv` `[b, t, 3·d]` (timm's layout) as tfjs ops:
 * the merged-heads context `[b, t, d]` and the probabilities `[b, heads, t, t]`. With `tokenMask`
 * (`[b, t]`, 1 = kept) DynamicViT's softmax with policy: masked keys get no weight, except each token on
 * itself (`p = (e·P + ε/t) / (Σ e·P + ε)`, ε = 1e-6). The reference the fused kernels are tested against.
 * Call inside `tf.tidy`.
 *
 * @example
 * ```ts
 * const { ctx } = opByOpAttention(qkv, 4, mask);
 * ```
 */
export function opByOpAttention(
  qkv: tf.Tensor3D,
  heads: number,
  tokenMask?: tf.Tensor2D,
): { ctx: tf.Tensor3D; probs: tf.Tensor4D } {
  const [b, t, d3] = qkv.shape;
  const d = d3 / 3, dh = d / heads;
  const [q, k, v] = tf.split(qkv, 3, 2).map((m) =>
    tf.transpose(tf.reshape(m, [b, t, heads, dh]), [0, 2, 1, 3])
  );
  let logits = tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dh)) as tf.Tensor4D;
  let probs: tf.Tensor4D;
  if (tokenMask) {
    const policy = tf.reshape(tokenMask, [b, 1, 1, t]);
    const eye = tf.reshape(tf.eye(t), [1, 1, t, t]);
    const attnPolicy = tf.add(policy, tf.mul(tf.sub(1, policy), eye));
    logits = tf.sub(logits, tf.max(logits, -1, true));
    const e = tf.mul(tf.exp(logits), attnPolicy);
    const eps = 1e-6;
    probs = tf.div(tf.add(e, eps / t), tf.add(tf.sum(e, -1, true), eps)) as tf.Tensor4D;
  } else {
    probs = tf.softmax(logits) as tf.Tensor4D;
  }
  const ctx = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [b, t, d]) as tf.Tensor3D;
  return { ctx, probs };
}
