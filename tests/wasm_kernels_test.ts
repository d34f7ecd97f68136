/**
 * Every kernel registered by registerWasmTrainingKernels() against the cpu backend, and whole gradient
 * steps of a small conv net and a small attention block on wasm against cpu.
 */
import * as tf from "@tensorflow/tfjs-core";
import type { NamedAttrMap } from "@tensorflow/tfjs-core";
import { initBackend, WASM_TRAINING_KERNELS } from "../lib/backend/mod.ts";
import { assertClose, assertNoLeak, relErr, seededRandom } from "./_backends.ts";
import { assert, assertEquals } from "./_assert.ts";

type Input = { shape: number[]; dtype?: "float32" | "int32"; values?: number[] };

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Runs one kernel on a backend with the given inputs, returns its output values and shape. */
async function runOn(
  backend: "cpu" | "wasm",
  kernel: string,
  inputs: Record<string, Input>,
  attrs: NamedAttrMap,
): Promise<{ values: Float32Array | Int32Array; shape: number[] }> {
  await initBackend(backend, { log: false });
  let seed = 7;
  const ts: Record<string, tf.Tensor> = {};
  for (const [k, v] of Object.entries(inputs)) {
    const n = v.shape.reduce((a, b) => a * b, 1);
    ts[k] = v.values
      ? tf.tensor(v.values, v.shape, v.dtype ?? "float32")
      : tf.tensor(seededRandom(n, seed++), v.shape, "float32");
  }
  const out = tf.engine().runKernel(kernel, ts, attrs) as tf.Tensor;
  const values = (await out.data()) as Float32Array | Int32Array;
  const shape = out.shape;
  out.dispose();
  Object.values(ts).forEach((t) => t.dispose());
  return { values, shape };
}

async function checkKernel(kernel: string, inputs: Record<string, Input>, attrs: NamedAttrMap, what: string) {
  const ref = await runOn("cpu", kernel, inputs, attrs);
  const before = tf.memory().numTensors;
  const got = await runOn("wasm", kernel, inputs, attrs);
  assertEquals(tf.memory().numTensors, before, `${what}: tensors leaked`);
  assertEquals(got.shape, ref.shape, `${what}: shape`);
  assertClose(got.values, ref.values, 1e-5, `${what} (wasm vs cpu)`);
}

Deno.test({
  name: "registerWasmTrainingKernels() adds exactly the kernels wasm lacks",
  ...opts,
  fn: async () => {
    await initBackend("wasm", { log: false });
    for (const k of WASM_TRAINING_KERNELS) assert(tf.getKernel(k, "wasm"), `${k} is registered`);
  },
});

const convCases: {
  x: number[];
  f: number[];
  strides: number | [number, number];
  pad: unknown;
  label: string;
}[] = [
  { x: [2, 9, 9, 3], f: [3, 3, 3, 4], strides: 1, pad: "same", label: "3x3 s1 same" },
  { x: [2, 9, 9, 3], f: [3, 3, 3, 4], strides: 1, pad: "valid", label: "3x3 s1 valid" },
  { x: [2, 8, 8, 3], f: [3, 3, 3, 5], strides: 2, pad: "same", label: "3x3 s2 same (asymmetric pad)" },
  { x: [2, 9, 7, 3], f: [3, 3, 3, 5], strides: [2, 3], pad: "valid", label: "3x3 s(2,3) valid, non-square" },
  {
    x: [1, 10, 10, 2],
    f: [3, 2, 2, 3],
    strides: 1,
    pad: [[0, 0], [1, 2], [0, 1], [0, 0]],
    label: "explicit pad",
  },
  { x: [2, 16, 16, 3], f: [7, 7, 3, 4], strides: 2, pad: 3, label: "7x7 s2 pad 3 (ImageNet stem)" },
  { x: [3, 8, 8, 4], f: [1, 1, 4, 6], strides: 2, pad: "valid", label: "1x1 s2 (downsample)" },
  { x: [2, 16, 16, 3], f: [4, 4, 3, 8], strides: 4, pad: "valid", label: "4x4 s4 (patch embedding)" },
];

for (const c of convCases) {
  Deno.test({
    name: `Conv2DBackpropFilter on wasm matches cpu: ${c.label}`,
    ...opts,
    fn: async () => {
      const info = tf.backend_util.computeConv2DInfo(
        c.x as [number, number, number, number],
        c.f as [number, number, number, number],
        c.strides,
        1,
        c.pad as "same",
      );
      const dy = [c.x[0], info.outHeight, info.outWidth, c.f[3]];
      await checkKernel("Conv2DBackpropFilter", { x: { shape: c.x }, dy: { shape: dy } }, {
        strides: c.strides,
        pad: c.pad as string,
        dataFormat: "NHWC",
        filterShape: c.f,
      }, c.label);
    },
  });
}

const dwCases: {
  x: number[];
  f: number[];
  strides: number | [number, number];
  dilations: number | [number, number];
  pad: unknown;
  label: string;
}[] = [
  { x: [2, 9, 9, 3], f: [3, 3, 3, 1], strides: 1, dilations: 1, pad: "same", label: "3x3 s1 same" },
  {
    x: [2, 8, 8, 3],
    f: [3, 3, 3, 2],
    strides: 2,
    dilations: 1,
    pad: "same",
    label: "3x3 s2 same, multiplier 2",
  },
  {
    x: [1, 11, 11, 2],
    f: [3, 3, 2, 1],
    strides: 1,
    dilations: 2,
    pad: "valid",
    label: "3x3 dilation 2 valid",
  },
  {
    x: [1, 11, 10, 2],
    f: [3, 2, 2, 2],
    strides: 1,
    dilations: [2, 3],
    pad: "same",
    label: "dilations (2,3) same",
  },
  { x: [2, 9, 9, 4], f: [5, 5, 4, 1], strides: 2, dilations: 1, pad: "valid", label: "5x5 s2 valid" },
];

/**
 * cpu's depthwise backprop kernels ignore dilations (tfjs refuses dilated gradients at the op level), so
 * dilated cases are checked by the adjoint identities that define the gradients, using the forward
 * depthwise convolution (which handles dilations on both backends):
 * ⟨dW, W'⟩ = ⟨dy, conv(x, W')⟩ and ⟨dx, x'⟩ = ⟨dy, conv(x', W)⟩.
 */
async function checkDepthwiseAdjoint(c: (typeof dwCases)[number], dy: number[]) {
  await initBackend("wasm", { log: false });
  const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const [x, x2, w, w2, g] = [
    tf.tensor4d(seededRandom(n(c.x), 11), c.x as [number, number, number, number]),
    tf.tensor4d(seededRandom(n(c.x), 12), c.x as [number, number, number, number]),
    tf.tensor4d(seededRandom(n(c.f), 13), c.f as [number, number, number, number]),
    tf.tensor4d(seededRandom(n(c.f), 14), c.f as [number, number, number, number]),
    tf.tensor4d(seededRandom(n(dy), 15), dy as [number, number, number, number]),
  ];
  const attrs = { strides: c.strides, dilations: c.dilations, pad: c.pad as string };
  const dot = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.sum(tf.mul(a, b)).dataSync()[0]);
  const conv = (xx: tf.Tensor4D, ww: tf.Tensor4D) =>
    tf.depthwiseConv2d(xx, ww, c.strides, c.pad as "same", "NHWC", c.dilations);
  const dW = tf.engine().runKernel("DepthwiseConv2dNativeBackpropFilter", { x, dy: g }, {
    ...attrs,
    filterShape: c.f,
  }) as tf.Tensor;
  const dX = tf.engine().runKernel("DepthwiseConv2dNativeBackpropInput", { dy: g, filter: w }, {
    ...attrs,
    inputShape: c.x,
  }) as tf.Tensor;
  const y1 = conv(x, w2), y2 = conv(x2, w);
  const pairs: [string, number, number][] = [
    ["filter", dot(dW, w2), dot(g, y1)],
    ["input", dot(dX, x2), dot(g, y2)],
  ];
  tf.dispose([x, x2, w, w2, g, dW, dX, y1, y2]);
  for (const [what, got, want] of pairs) {
    const e = Math.abs(got - want) / Math.abs(want);
    assert(e < 1e-5, `${c.label}: ${what} gradient fails the adjoint identity (${got} vs ${want}, rel ${e})`);
  }
}

for (const c of dwCases) {
  const info = tf.backend_util.computeConv2DInfo(
    c.x as [number, number, number, number],
    c.f as [number, number, number, number],
    c.strides,
    c.dilations,
    c.pad as "same",
    undefined,
    true,
  );
  const dy = [c.x[0], info.outHeight, info.outWidth, c.f[2] * c.f[3]];
  const attrs = { strides: c.strides, dilations: c.dilations, pad: c.pad as string };
  const dilated = c.dilations !== 1;
  Deno.test({
    name: `DepthwiseConv2dNativeBackprop{Filter,Input} on wasm ${
      dilated ? "satisfy the adjoint identity" : "match cpu"
    }: ${c.label}`,
    ...opts,
    fn: async () => {
      if (dilated) return await checkDepthwiseAdjoint(c, dy);
      await checkKernel("DepthwiseConv2dNativeBackpropFilter", { x: { shape: c.x }, dy: { shape: dy } }, {
        ...attrs,
        filterShape: c.f,
      }, c.label);
      await checkKernel("DepthwiseConv2dNativeBackpropInput", { dy: { shape: dy }, filter: { shape: c.f } }, {
        ...attrs,
        inputShape: c.x,
      }, c.label);
      await checkDepthwiseAdjoint(c, dy);
    },
  });
}

Deno.test({
  name: "UnsortedSegmentSum on wasm matches cpu: repeats, empty segments and out-of-range ids",
  ...opts,
  fn: async () => {
    await checkKernel(
      "UnsortedSegmentSum",
      {
        x: { shape: [6, 5] },
        segmentIds: { shape: [6], dtype: "int32", values: [0, 2, 2, 5, -1, 0] },
      },
      { numSegments: 4 },
      "2-D float",
    );
    await checkKernel(
      "UnsortedSegmentSum",
      {
        x: { shape: [4, 3, 2] },
        segmentIds: { shape: [4], dtype: "int32", values: [1, 1, 0, 3] },
      },
      { numSegments: 5 },
      "3-D values",
    );
    await checkKernel(
      "UnsortedSegmentSum",
      {
        x: { shape: [5], dtype: "int32", values: [1, 2, 3, 4, 5] },
        segmentIds: { shape: [5], dtype: "int32", values: [0, 1, 0, 1, 2] },
      },
      { numSegments: 3 },
      "int32 values",
    );
  },
});

/** A small conv net: conv-bn(batch stats)-relu, strided conv, max-pool, 1x1 conv, global average pool, dense. */
function convNetLoss(x: tf.Tensor4D, y: tf.Tensor1D, v: Record<string, tf.Variable>): tf.Scalar {
  return tf.tidy(() => {
    let h: tf.Tensor4D = tf.conv2d(x, v.c1 as tf.Tensor4D, 1, "same");
    const { mean, variance } = tf.moments(h, [0, 1, 2]);
    h = tf.relu(tf.add(tf.mul(tf.div(tf.sub(h, mean), tf.sqrt(tf.add(variance, 1e-5))), v.g), v.b));
    h = tf.relu(tf.conv2d(h, v.c2 as tf.Tensor4D, 2, "same"));
    h = tf.maxPool(h, 3, 2, "same");
    h = tf.add(h, tf.conv2d(h, v.c3 as tf.Tensor4D, 1, "valid"));
    const pooled = tf.mean(h, [1, 2]) as tf.Tensor2D;
    const logits = tf.add(tf.matMul(pooled, v.w as tf.Tensor2D), v.wb);
    return tf.losses.softmaxCrossEntropy(tf.oneHot(y, 5), logits) as tf.Scalar;
  });
}

/** A small pre-norm attention block with a gather of kept tokens, erf-GELU MLP and a CLS head. */
function attnLoss(x: tf.Tensor3D, y: tf.Tensor1D, v: Record<string, tf.Variable>): tf.Scalar {
  return tf.tidy(() => {
    const [B, T, D] = x.shape;
    const heads = 2, hd = D / heads;
    const keep = tf.tensor2d([[0, 2, 3, 5], [0, 1, 4, 5]], [2, 4], "int32");
    const t = tf.gather(x, keep, 1, 1) as tf.Tensor3D; // [B, 4, D]
    const k = keep.shape[1];
    const ln = (z: tf.Tensor3D, g: tf.Variable, b: tf.Variable) => {
      const { mean, variance } = tf.moments(z, -1, true);
      return tf.add(tf.mul(tf.div(tf.sub(z, mean), tf.sqrt(tf.add(variance, 1e-6))), g), b) as tf.Tensor3D;
    };
    const h = ln(t, v.g1, v.b1);
    const qkv = tf.add(tf.matMul(tf.reshape(h, [B * k, D]), v.wqkv as tf.Tensor2D), v.bqkv);
    const qkv5 = tf.transpose(tf.reshape(qkv, [B, k, 3, heads, hd]), [2, 0, 3, 1, 4]);
    const [q, kk, vv] = tf.unstack(qkv5) as tf.Tensor4D[];
    const att = tf.softmax(tf.mul(tf.matMul(q, kk, false, true), 1 / Math.sqrt(hd)));
    const o = tf.reshape(tf.transpose(tf.matMul(att, vv), [0, 2, 1, 3]), [B * k, D]);
    const t2 = tf.add(t, tf.reshape(tf.matMul(o, v.wo as tf.Tensor2D), [B, k, D])) as tf.Tensor3D;
    const h2 = tf.reshape(ln(t2, v.g2, v.b2), [B * k, D]);
    const u = tf.matMul(h2, v.w1 as tf.Tensor2D);
    const gelu = tf.mul(tf.mul(u, 0.5), tf.add(1, tf.erf(tf.mul(u, Math.SQRT1_2))));
    const t3 = tf.add(t2, tf.reshape(tf.matMul(gelu, v.w2 as tf.Tensor2D), [B, k, D]));
    const cls = tf.squeeze(tf.slice(t3, [0, 0, 0], [B, 1, D]), [1]) as tf.Tensor2D;
    const logits = tf.matMul(cls, v.head as tf.Tensor2D);
    void T;
    return tf.losses.softmaxCrossEntropy(tf.oneHot(y, 3), logits) as tf.Scalar;
  });
}

type Spec = Record<string, number[]>;

async function gradientsOn(
  backend: "cpu" | "wasm",
  spec: Spec,
  inputShape: number[],
  labels: number[],
  loss: (x: tf.Tensor, y: tf.Tensor1D, v: Record<string, tf.Variable>) => tf.Scalar,
): Promise<Record<string, Float32Array>> {
  await initBackend(backend, { log: false });
  const v: Record<string, tf.Variable> = {};
  let seed = 100;
  for (const [k, shape] of Object.entries(spec)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const init = k.startsWith("g")
      ? new Float32Array(n).fill(1)
      : seededRandom(n, seed++).map((z) => z * 0.5);
    v[k] = tf.variable(tf.tensor(init, shape), true, `${backend}_${k}_${Math.random()}`);
  }
  const x = tf.tensor(seededRandom(inputShape.reduce((a, b) => a * b, 1), 1), inputShape);
  const y = tf.tensor1d(labels, "int32");
  const out: Record<string, Float32Array> = {};
  try {
    await assertNoLeak(`gradient step on ${backend}`, async () => {
      const { value, grads } = tf.variableGrads(() => loss(x, y, v), Object.values(v));
      // One SGD step, as training would do, then read the gradients.
      for (const [name, g] of Object.entries(grads)) {
        const key = Object.keys(v).find((k) => v[k].name === name)!;
        out[key] = (await g.data()) as Float32Array;
        tf.tidy(() => v[key].assign(tf.sub(v[key], tf.mul(g, 0.1))));
      }
      out.loss = (await value.data()) as Float32Array;
      value.dispose();
      tf.dispose(grads);
    });
  } finally {
    tf.dispose([x, y, ...Object.values(v)]);
  }
  return out;
}

async function compareGradients(
  spec: Spec,
  inputShape: number[],
  labels: number[],
  loss: (x: tf.Tensor, y: tf.Tensor1D, v: Record<string, tf.Variable>) => tf.Scalar,
) {
  const ref = await gradientsOn("cpu", spec, inputShape, labels, loss);
  const got = await gradientsOn("wasm", spec, inputShape, labels, loss);
  assertEquals(Object.keys(got).sort(), Object.keys(ref).sort());
  const errs = Object.keys(ref).map((k) => `${k}: ${relErr(got[k], ref[k]).toExponential(2)}`);
  for (const k of Object.keys(ref)) {
    assertClose(got[k], ref[k], 1e-4, `gradient of ${k} (all: ${errs.join(", ")})`);
  }
}

Deno.test({
  name: "a gradient step of a small conv net runs on wasm, matches cpu and leaks no tensors",
  ...opts,
  fn: () =>
    compareGradients(
      { c1: [3, 3, 3, 8], g: [8], b: [8], c2: [3, 3, 8, 8], c3: [1, 1, 8, 8], w: [8, 5], wb: [5] },
      [4, 12, 12, 3],
      [0, 1, 4, 2],
      (x, y, v) => convNetLoss(x as tf.Tensor4D, y, v),
    ),
});

Deno.test({
  name: "a gradient step of a small attention block with token gather runs on wasm and matches cpu",
  ...opts,
  fn: () =>
    compareGradients(
      {
        g1: [8],
        b1: [8],
        wqkv: [8, 24],
        bqkv: [24],
        wo: [8, 8],
        g2: [8],
        b2: [8],
        w1: [8, 16],
        w2: [16, 8],
        head: [8, 3],
      },
      [2, 6, 8],
      [2, 0],
      (x, y, v) => attnLoss(x as tf.Tensor3D, y, v),
    ),
});

Deno.test({
  name: "GatherV2 with batchDims on wasm gives the right tokens (the stock wasm kernel does not)",
  ...opts,
  fn: async () => {
    const x = { shape: [2, 3, 4, 2] };
    const idx = { shape: [2, 2], dtype: "int32" as const, values: [3, 0, 1, 1] };
    await checkKernel("GatherV2", { x, indices: idx }, { axis: 2, batchDims: 1 }, "axis 2, batchDims 1");
    await checkKernel(
      "GatherV2",
      { x: { shape: [2, 5, 3] }, indices: idx },
      { axis: 1, batchDims: 1 },
      "axis 1",
    );
    await checkKernel(
      "GatherV2",
      { x: { shape: [5, 3] }, indices: idx },
      { axis: 0, batchDims: 0 },
      "batchDims 0",
    );
    // Whole rows of >= 16 values (gathered tokens) take the row-copy path, also for int32.
    const rows = { shape: [6], dtype: "int32" as const, values: [5, 0, 2, 2, 7, 1] };
    await checkKernel(
      "GatherV2",
      { x: { shape: [8, 24] }, indices: rows },
      { axis: 0, batchDims: 0 },
      "rows of 24",
    );
    await checkKernel(
      "GatherV2",
      { x: { shape: [3, 8, 4, 5] }, indices: rows },
      { axis: 1, batchDims: 0 },
      "axis 1 rows",
    );
    await checkKernel(
      "GatherV2",
      {
        x: { shape: [8, 16], dtype: "int32", values: Array.from({ length: 128 }, (_, i) => i * 3 - 50) },
        indices: rows,
      },
      { axis: 0, batchDims: 0 },
      "int32 rows",
    );
    // Hand-checked values, so the cpu reference itself is pinned.
    await initBackend("wasm", { log: false });
    const t = tf.tensor3d([[[1], [2], [3]], [[4], [5], [6]]]);
    const g = tf.gather(t, tf.tensor2d([[2, 0], [1, 1]], [2, 2], "int32"), 1, 1);
    assertEquals(Array.from(await g.data()), [3, 1, 5, 5]);
    tf.dispose([t, g]);
  },
});

Deno.test({
  name: "Slice on wasm (block copies read in place) matches cpu for every rank and cut",
  ...opts,
  fn: async () => {
    const cases: [number[], number[], number[]][] = [
      [[10], [3], [4]],
      [[6, 7], [1, 2], [3, 4]],
      [[6, 7], [2, 0], [3, 7]], // whole rows: one run
      [[4, 65, 12], [0, 1, 0], [4, 64, 12]], // the hybrid's patch tokens
      [[4, 65, 12], [0, 0, 0], [4, 1, 12]], // CLS
      [[3, 5, 6, 4], [1, 2, 3, 1], [2, 2, 2, 2]],
      [[3, 5, 6, 4], [0, 0, 0, 0], [-1, -1, -1, -1]],
    ];
    for (const [shape, begin, size] of cases) {
      await checkKernel(
        "Slice",
        { x: { shape } },
        { begin, size },
        `slice [${shape}] at [${begin}] size [${size}]`,
      );
    }
    const n = 2 * 9 * 3;
    await checkKernel(
      "Slice",
      { x: { shape: [2, 9, 3], dtype: "int32", values: Array.from({ length: n }, (_, i) => i - 7) } },
      { begin: [1, 4, 1], size: [1, 5, 2] },
      "int32 slice",
    );
  },
});

Deno.test({
  name: "BatchMatMul with transposed operands on wasm matches cpu (2-D, batched, broadcast)",
  ...opts,
  fn: async () => {
    for (const [ta, tb] of [[true, false], [false, true], [true, true]]) {
      const label = `transposeA=${ta} transposeB=${tb}`;
      await checkKernel("BatchMatMul", {
        a: { shape: ta ? [7, 5] : [5, 7] },
        b: { shape: tb ? [3, 7] : [7, 3] },
      }, {
        transposeA: ta,
        transposeB: tb,
      }, `2-D ${label}`);
      await checkKernel(
        "BatchMatMul",
        {
          a: { shape: ta ? [2, 4, 6, 5] : [2, 4, 5, 6] },
          b: { shape: tb ? [1, 4, 3, 6] : [1, 4, 6, 3] },
        },
        { transposeA: ta, transposeB: tb },
        `batched, broadcast ${label}`,
      );
    }
  },
});
