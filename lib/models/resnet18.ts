/**
 * {@link ResNet18}: torchvision/timm ResNet18 (BasicBlock [2, 2, 2, 2]) with a `cifar` or `imagenet`
 * stem, a width multiplier, a classification head and an optional importance head that gives one
 * score per ViT patch from an early stage.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ParamStore } from "./param_store.ts";
import { batchNorm, type BatchNormParams, conv2d, gelu, layerNorm, linear } from "./layers.ts";
import type {
  ForwardOptions,
  ForwardOutput,
  GmacsOptions,
  GmacsReport,
  Model,
  ResNetConfig,
  TensorLayout,
} from "./types.ts";

/** One convolution of the network, for parameter creation and analytic GMACs. */
interface ConvSpec {
  name: string;
  k: number;
  cin: number;
  cout: number;
  stride: number;
  pad: number;
  /** Stage the conv belongs to: 0 = stem, 1..4 = layer1..4. */
  stage: number;
}

function outSize(n: number, k: number, s: number, p: number): number {
  return Math.floor((n + 2 * p - k) / s) + 1;
}

/**
 * Validates a ResNet config (errors quote the bad field) and fills defaults.
 *
 * @example
 * ```ts
 * resolveResNetConfig({ model: "resnet18", numClasses: 10, width: 64, stem: "cifar", imgSize: 32 }).bnEps; // 1e-5
 * ```
 */
export function resolveResNetConfig(
  c: ResNetConfig,
): Required<Omit<ResNetConfig, "importance">> & ResNetConfig {
  const where = `ResNet18 config`;
  if (c.model !== "resnet18") throw new Error(`${where}: model is "${c.model}", expected "resnet18"`);
  if (!(Number.isInteger(c.numClasses) && c.numClasses >= 1)) {
    throw new Error(`${where}: numClasses ${c.numClasses} is not a positive integer`);
  }
  if (!(Number.isInteger(c.width) && c.width >= 1)) {
    throw new Error(`${where}: width ${c.width} is not a positive integer`);
  }
  if (c.stem !== "cifar" && c.stem !== "imagenet") {
    throw new Error(`${where}: stem "${c.stem}" is not "cifar" or "imagenet"`);
  }
  if (!(Number.isInteger(c.imgSize) && c.imgSize >= 4)) {
    throw new Error(`${where}: imgSize ${c.imgSize} is not an integer >= 4`);
  }
  const stages = c.stages ?? 4;
  if (!(Number.isInteger(stages) && stages >= 0 && stages <= 4)) {
    throw new Error(`${where}: stages ${c.stages} is not an integer in 0..4`);
  }
  if (c.importance) {
    const { stage, grid } = c.importance;
    if (!(Number.isInteger(stage) && stage >= 0 && stage <= stages)) {
      throw new Error(`${where}: importance.stage ${stage} is not an integer in 0..${stages}`);
    }
    if (!(Number.isInteger(grid) && grid >= 1)) {
      throw new Error(`${where}: importance.grid ${grid} is not a positive integer`);
    }
    const { head, hidden } = c.importance;
    if (head !== undefined && head !== "linear" && head !== "mlp") {
      throw new Error(`${where}: importance.head ${JSON.stringify(head)} is not "linear" or "mlp"`);
    }
    if (hidden !== undefined && !(Number.isInteger(hidden) && hidden >= 4 && hidden % 4 === 0)) {
      throw new Error(`${where}: importance.hidden ${hidden} is not a multiple of 4, at least 4`);
    }
  }
  if (c.init !== undefined && c.init !== "torchvision" && c.init !== "torch") {
    throw new Error(`${where}: init ${JSON.stringify(c.init)} is not "torchvision" or "torch"`);
  }
  return {
    ...c,
    stages,
    bnEps: c.bnEps ?? 1e-5,
    bnMomentum: c.bnMomentum ?? 0.1,
    init: c.init ?? "torchvision",
  };
}

/**
 * ResNet18 in NHWC with timm/torchvision parameter names (`conv1`, `bn1`, `layer1.0.conv1`, ...,
 * `layer2.0.downsample.0`, `fc`, plus `importance_head` when configured).
 *
 * @example
 * ```ts
 * const net = new ResNet18({ model: "resnet18", numClasses: 10, width: 16, stem: "cifar", imgSize: 32 });
 * const { logits } = net.forward(tf.zeros([2, 32, 32, 3]) as tf.Tensor4D);
 * logits.dispose();
 * net.dispose();
 * ```
 */
export class ResNet18 implements Model {
  readonly family = "resnet18" as const;
  readonly config: ResNetConfig;
  private readonly c: ReturnType<typeof resolveResNetConfig>;
  private readonly store: ParamStore;
  private readonly convs: ConvSpec[];

  constructor(config: ResNetConfig, options: { seed?: number } = {}) {
    this.c = resolveResNetConfig(config);
    this.config = structuredClone(config);
    this.store = new ParamStore(options.seed ?? 0);
    this.convs = ResNet18.convSpecs(this.c);
    const s = this.store;
    for (const cv of this.convs) {
      // torchvision: Kaiming normal (fan_out); plain nn.Conv2d: uniform ±1/√fan_in (std 1/√(3·fan_in)).
      const fanIn = cv.k * cv.k * cv.cin;
      if (this.c.init === "torch") {
        const n = fanIn * cv.cout;
        s.add(
          `${cv.name}.weight`,
          [cv.k, cv.k, cv.cin, cv.cout],
          s.uniform(n, 1 / Math.sqrt(fanIn)),
          "conv2d",
        );
      } else s.conv(`${cv.name}.weight`, cv.k, cv.cin, cv.cout);
      const bn = ResNet18.bnName(cv.name);
      s.fill(`${bn}.weight`, cv.cout, 1);
      s.fill(`${bn}.bias`, cv.cout, 0);
      s.fill(`${bn}.running_mean`, cv.cout, 0, false);
      s.fill(`${bn}.running_var`, cv.cout, 1, false);
    }
    if (this.c.importance) {
      const ch = this.stageChannels(this.c.importance.stage);
      if (this.c.importance.head === "mlp") {
        const h = this.selectorHidden();
        s.fill("importance_head.in_conv.0.weight", ch, 1);
        s.fill("importance_head.in_conv.0.bias", ch, 0);
        for (
          const [name, fin, fout] of [["in_conv.1", ch, h], ["out_conv.0", h, h / 2], [
            "out_conv.2",
            h / 2,
            h / 4,
          ], ["out_conv.4", h / 4, 1]] as const
        ) {
          s.linear(`importance_head.${name}.weight`, fin, fout, "torch");
          s.add(`importance_head.${name}.bias`, [fout], s.uniform(fout, 1 / Math.sqrt(fin)), "plain");
        }
      } else {
        s.linear("importance_head.weight", ch, 1, "torch");
        s.add("importance_head.bias", [1], new Float32Array(1), "plain");
      }
    }
    if (this.c.stages === 4) {
      const feat = this.c.width * 8;
      s.linear("fc.weight", feat, this.c.numClasses, "torch");
      s.add("fc.bias", [this.c.numClasses], s.uniform(this.c.numClasses, 1 / Math.sqrt(feat)), "plain");
    }
  }

  /** Name of the batch norm following the conv called `name`. */
  private static bnName(conv: string): string {
    if (conv === "conv1") return "bn1";
    if (conv.endsWith("downsample.0")) return conv.replace(/0$/, "1");
    return conv.replace(/conv(\d)$/, "bn$1");
  }

  private static convSpecs(c: ReturnType<typeof resolveResNetConfig>): ConvSpec[] {
    const out: ConvSpec[] = [];
    if (c.stem === "cifar") {
      out.push({ name: "conv1", k: 3, cin: 3, cout: c.width, stride: 1, pad: 1, stage: 0 });
    } else out.push({ name: "conv1", k: 7, cin: 3, cout: c.width, stride: 2, pad: 3, stage: 0 });
    let cin = c.width;
    for (let st = 1; st <= c.stages; st++) {
      const cout = c.width * 2 ** (st - 1);
      for (let b = 0; b < 2; b++) {
        const stride = st > 1 && b === 0 ? 2 : 1;
        const p = `layer${st}.${b}`;
        out.push({ name: `${p}.conv1`, k: 3, cin, cout, stride, pad: 1, stage: st });
        out.push({ name: `${p}.conv2`, k: 3, cin: cout, cout, stride: 1, pad: 1, stage: st });
        if (stride !== 1 || cin !== cout) {
          out.push({ name: `${p}.downsample.0`, k: 1, cin, cout, stride, pad: 0, stage: st });
        }
        cin = cout;
      }
    }
    return out;
  }

  /** Output channels of stage `s` (0 = stem). */
  stageChannels(s: number): number {
    return s === 0 ? this.c.width : this.c.width * 2 ** (s - 1);
  }

  /** Spatial side of stage `s`'s output for an input of side `imgSize`. */
  stageSize(s: number, imgSize = this.c.imgSize): number {
    let n = imgSize;
    if (this.c.stem === "imagenet") n = outSize(outSize(n, 7, 2, 3), 3, 2, 1);
    for (let st = 2; st <= s; st++) n = outSize(n, 3, 2, 1);
    return n;
  }

  private conv(x: tf.Tensor4D, name: string, stride: number, pad: number): tf.Tensor4D {
    return conv2d(x, this.store.get(`${name}.weight`) as tf.Tensor4D, stride, pad);
  }

  private bn(x: tf.Tensor4D, name: string, training: boolean): tf.Tensor4D {
    const s = this.store;
    const p: BatchNormParams = {
      weight: s.get(`${name}.weight`),
      bias: s.get(`${name}.bias`),
      runningMean: s.get(`${name}.running_mean`),
      runningVar: s.get(`${name}.running_var`),
    };
    return batchNorm(x, p, { training, eps: this.c.bnEps, momentum: this.c.bnMomentum });
  }

  /**
   * Convolution + batch norm (+ ReLU). In training: conv, batch-stat BN, ReLU. In evaluation the BN is
   * folded into the convolution (`w * scale`, bias `shift`) and runs as one fused kernel with the ReLU.
   */
  private convBn(
    x: tf.Tensor4D,
    conv: string,
    bn: string,
    stride: number,
    pad: number,
    training: boolean,
    relu: boolean,
  ): tf.Tensor4D {
    if (training) {
      const y = this.bn(this.conv(x, conv, stride, pad), bn, true);
      return relu ? tf.relu(y) : y;
    }
    const s = this.store;
    const scale = tf.mul(s.get(`${bn}.weight`), tf.rsqrt(tf.add(s.get(`${bn}.running_var`), this.c.bnEps)));
    const shift = tf.sub(s.get(`${bn}.bias`), tf.mul(s.get(`${bn}.running_mean`), scale));
    const filter = tf.mul(s.get(`${conv}.weight`), scale) as tf.Tensor4D;
    return tf.fused.conv2d({
      x,
      filter,
      strides: stride,
      pad: pad === 0 ? "valid" : pad,
      bias: shift,
      activation: relu ? "relu" : "linear",
    });
  }

  /** The stem (conv1, bn1, relu, and the max-pool of the imagenet stem). Call inside `tf.tidy`. */
  stem(x: tf.Tensor4D, training = false): tf.Tensor4D {
    if (x.rank !== 4 || x.shape[3] !== 3) {
      throw new Error(`ResNet18.forward: input shape [${x.shape}] is not [B, H, W, 3] (NHWC)`);
    }
    const imagenet = this.c.stem === "imagenet";
    let y = this.convBn(x, "conv1", "bn1", imagenet ? 2 : 1, imagenet ? 3 : 1, training, true);
    if (imagenet) y = tf.maxPool(y, 3, 2, 1);
    return y;
  }

  /** Stage `s` (1..4): two BasicBlocks. Call inside `tf.tidy`. */
  layer(s: number, x: tf.Tensor4D, training = false): tf.Tensor4D {
    if (s < 1 || s > this.c.stages) {
      throw new Error(`ResNet18.layer: stage ${s} is not in 1..${this.c.stages}`);
    }
    let y = x;
    for (let b = 0; b < 2; b++) {
      const p = `layer${s}.${b}`;
      const stride = s > 1 && b === 0 ? 2 : 1;
      let h = this.convBn(y, `${p}.conv1`, `${p}.bn1`, stride, 1, training, true);
      h = this.convBn(h, `${p}.conv2`, `${p}.bn2`, 1, 1, training, false);
      const short = this.hasParam(`${p}.downsample.0.weight`)
        ? this.convBn(y, `${p}.downsample.0`, `${p}.downsample.1`, stride, 0, training, false)
        : y;
      y = tf.relu(tf.add(h, short));
    }
    return y;
  }

  private hasParam(name: string): boolean {
    return this.store.has(name);
  }

  /** Runs the stem and layers 1..`upTo`. Call inside `tf.tidy`. */
  features(x: tf.Tensor4D, upTo: number, training = false): tf.Tensor4D {
    let y = this.stem(x, training);
    for (let s = 1; s <= upTo; s++) y = this.layer(s, y, training);
    return y;
  }

  /**
   * Importance scores `[B, grid²]` from a stage's feature map: average-pooled onto the ViT patch grid
   * (nearest upsampling when the map is smaller), then a linear map to one score. Call inside `tf.tidy`.
   */
  importanceScores(feature: tf.Tensor4D): tf.Tensor2D {
    if (!this.c.importance) {
      throw new Error("ResNet18.importanceScores: this ResNet has no importance head (config.importance)");
    }
    const g = this.c.importance.grid;
    const h = feature.shape[1];
    let pooled: tf.Tensor4D;
    if (h === g) pooled = feature;
    else if (h % g === 0) pooled = tf.avgPool(feature, h / g, h / g, "valid");
    else if (g % h === 0) pooled = tf.image.resizeNearestNeighbor(feature, [g, g]);
    else {
      throw new Error(
        `ResNet18.importanceScores: feature map side ${h} and patch grid ${g} do not divide each other; ` +
          "choose another importance stage or scorer input size",
      );
    }
    const b = feature.shape[0];
    if (this.c.importance.head === "mlp") return this.mlpScores(tf.reshape(pooled, [b, g * g, -1]));
    const s = linear(
      pooled,
      this.store.get("importance_head.weight"),
      this.store.get("importance_head.bias"),
    );
    return tf.reshape(s, [b, g * g]);
  }

  /** Hidden width of the MLP selector head. */
  private selectorHidden(): number {
    const ch = this.stageChannels(this.c.importance!.stage);
    return this.c.importance!.hidden ?? Math.max(32, Math.ceil(ch / 4) * 4);
  }

  /** DynamicViT's predictor on per-patch features `[B, N, C]`: local half + image-mean half → MLP → `[B, N]`. */
  private mlpScores(x: tf.Tensor3D): tf.Tensor2D {
    const p = (n: string) => this.store.get(`importance_head.${n}`);
    const [b, n] = x.shape;
    const h = this.selectorHidden();
    let y = layerNorm(x, p("in_conv.0.weight"), p("in_conv.0.bias"), 1e-5);
    y = gelu(linear(y, p("in_conv.1.weight"), p("in_conv.1.bias")));
    const local = tf.slice(y, [0, 0, 0], [b, n, h / 2]);
    const global = tf.mean(tf.slice(y, [0, 0, h / 2], [b, n, h / 2]), 1, true);
    y = tf.concat([local, tf.tile(global, [1, n, 1])], 2) as tf.Tensor3D;
    y = gelu(linear(y, p("out_conv.0.weight"), p("out_conv.0.bias")));
    y = gelu(linear(y, p("out_conv.2.weight"), p("out_conv.2.bias")));
    return tf.reshape(linear(y, p("out_conv.4.weight"), p("out_conv.4.bias")), [b, n]);
  }

  /** Global average pool + `fc`. Call inside `tf.tidy`. */
  head(feature: tf.Tensor4D): tf.Tensor2D {
    if (this.c.stages !== 4) {
      throw new Error(`ResNet18.head: this ResNet is truncated after stage ${this.c.stages} (no fc)`);
    }
    const pooled = tf.mean(feature, [1, 2]) as tf.Tensor2D;
    return linear(pooled, this.store.get("fc.weight"), this.store.get("fc.bias"));
  }

  forward(x: tf.Tensor4D, options: ForwardOptions = {}): ForwardOutput {
    const training = options.training ?? false;
    return tf.tidy(() => {
      let y = this.stem(x, training);
      let scores: tf.Tensor2D | undefined;
      const imp = this.c.importance;
      if (imp && imp.stage === 0 && options.returnAux) scores = this.importanceScores(y);
      for (let s = 1; s <= this.c.stages; s++) {
        y = this.layer(s, y, training);
        if (imp && imp.stage === s && options.returnAux) scores = this.importanceScores(y);
      }
      const logits = this.head(y);
      const out: ForwardOutput = { logits };
      if (options.returnAux) out.aux = scores ? { cnnLogits: logits, scores } : { cnnLogits: logits };
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
   * Analytic GMACs (conv + linear multiply-accumulates) for one image. `upTo` limits the count to
   * the stem and layers 1..upTo (plus the importance head at `importanceStage`), as the hybrid runs them.
   */
  gmacs(options: GmacsOptions & { upTo?: number; importanceStage?: number } = {}): GmacsReport {
    const img = options.imgSize ?? this.c.imgSize;
    const upTo = options.upTo ?? this.c.stages;
    let macs = 0;
    for (const cv of this.convs) {
      if (cv.stage > upTo) continue;
      // Every conv of stage s outputs the stage's side; the stem conv's output precedes the max-pool.
      const n = cv.stage === 0 ? outSize(img, cv.k, cv.stride, cv.pad) : this.stageSize(cv.stage, img);
      macs += n * n * cv.cout * cv.cin * cv.k * cv.k;
    }
    const impStage = options.importanceStage ?? this.c.importance?.stage;
    if (this.c.importance && impStage !== undefined && impStage <= upTo) {
      const ch = this.stageChannels(impStage);
      const h = this.selectorHidden();
      const perPatch = this.c.importance.head === "mlp"
        ? ch * h + h * (h / 2) + (h / 2) * (h / 4) + h / 4
        : ch;
      macs += this.c.importance.grid ** 2 * perPatch;
    }
    if (upTo === 4 && this.c.stages === 4) macs += this.c.width * 8 * this.c.numClasses;
    const total = macs / 1e9;
    return { total, cnn: total };
  }

  dispose(): void {
    this.store.dispose();
  }
}
