/**
 * The native BLAS backend: every BLAS kernel against the cpu backend (relErr < 1e-5), leaks,
 * thread control, library discovery and the fallback when no BLAS loads.
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend, loadNativeBackend, nativeBackendStatus, setNativeThreads } from "../lib/backend/mod.ts";
import { type Blas, blasCandidates, loadBlas, openBlasLibrary } from "../lib/backend/native/blas.ts";
import {
  blockedLayoutPays,
  type DnnlConv,
  isReferenceImpl,
  openDnnlConv,
} from "../lib/backend/native/dnnl.ts";
import { blasKernelConfigs } from "../lib/backend/native/kernels.ts";
import {
  attentionKernel,
  batchNormTrainKernel,
  GELU_KERNEL,
  geluLean,
  LAYER_NORM_KERNEL,
  layerNormLean,
  maskedAttentionKernel,
} from "../lib/backend/native/fused_ops.ts";
import { batchNorm } from "../lib/models/layers.ts";
import { opByOpAttention } from "../lib/models/vit.ts";
import { assertEquals, assertThrows } from "./_assert.ts";
import { assertClose, seededRandom } from "./_backends.ts";

const native = await loadNativeBackend();
const ignore = !native.ok;
if (!native.ok) {
  console.warn(`native_test: native backend unavailable, kernel tests skipped: ${native.reason}`);
}

const TOL = 1e-5;
let seed = 100;
function rand(shape: number[]): { values: Float32Array; shape: number[] } {
  return { values: seededRandom(shape.reduce((a, b) => a * b, 1), seed++), shape };
}

/** Runs `f` on the given backend with fresh tensors from `inputs`; returns every output's values. */
async function run(
  backend: string,
  inputs: { values: Float32Array; shape: number[] }[],
  f: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const xs = inputs.map((i) => tf.tensor(i.values, i.shape));
  try {
    const out = tf.tidy(() => f(...xs));
    const outs = Array.isArray(out) ? out : [out];
    try {
      return await Promise.all(outs.map(async (t) => (await t.data()) as Float32Array));
    } finally {
      tf.dispose(outs);
    }
  } finally {
    tf.dispose(xs);
  }
}

/** Asserts native and cpu agree on `f` (each output, relErr < 1e-5) and that native does not leak. */
async function parity(
  what: string,
  inputs: { values: Float32Array; shape: number[] }[],
  f: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
): Promise<void> {
  const ref = await run("cpu", inputs, f);
  await tf.setBackend("native");
  const before = tf.memory().numTensors;
  const got = await run("native", inputs, f);
  assertEquals(tf.memory().numTensors, before, `${what}: native leaked tensors`);
  assertEquals(got.length, ref.length);
  for (let i = 0; i < ref.length; i++) assertClose(got[i], ref[i], TOL, `${what} output ${i}`);
}

function nativeTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await initBackend("cpu", { log: false });
      await initBackend("native", { log: false });
      await fn();
    },
  });
}

const grad = (f: (...xs: tf.Tensor[]) => tf.Tensor) => (...xs: tf.Tensor[]) =>
  tf.grads((...ys: tf.Tensor[]) => f(...ys).square().sum())(xs);

nativeTest("native matMul() matches cpu for every transpose combination", async () => {
  for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
    const a = rand(ta ? [7, 5] : [5, 7]), b = rand(tb ? [3, 7] : [7, 3]);
    await parity(`matMul ta=${ta} tb=${tb}`, [a, b], (x, y) => tf.matMul(x, y, ta, tb));
    await parity(`matMul grad ta=${ta} tb=${tb}`, [a, b], grad((x, y) => tf.matMul(x, y, ta, tb)));
  }
});

nativeTest("native matMul() matches cpu with batch dimensions and broadcasting", async () => {
  const cases: [number[], number[], boolean, boolean][] = [
    [[4, 6, 5], [4, 5, 3], false, false],
    [[4, 6, 5], [1, 5, 3], false, false], // broadcast b over the batch
    [[1, 6, 5], [4, 5, 3], false, false], // broadcast a over the batch
    [[2, 3, 6, 5], [2, 3, 3, 5], false, true], // attention-like q·kᵀ, rank 4
    [[2, 3, 5, 6], [2, 3, 5, 4], true, false],
    [[2, 3, 6, 5], [5, 4], false, false], // rank-2 weight against a rank-4 activation
    [[2, 4, 1], [2, 1, 3], false, false], // inner dimension 1
    [[3, 5, 6], [3, 4, 5], true, true],
    [[12, 65, 64], [12, 65, 64], false, true], // ViT attention heads (oneDNN's batched primitive)
    [[12, 65, 65], [12, 65, 64], false, false],
  ];
  for (const [sa, sb, ta, tb] of cases) {
    const a = rand(sa), b = rand(sb);
    const f = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, ta, tb);
    await parity(`matMul [${sa}]x[${sb}]`, [a, b], f);
  }
  // Broadcasting on different axes: tfjs' cpu kernel does not support it, so compare with tiled inputs.
  const a = rand([3, 1, 4, 5]), b = rand([1, 2, 5, 3]);
  const ref = await run(
    "cpu",
    [a, b],
    (x, y) => tf.matMul(tf.tile(x, [1, 2, 1, 1]), tf.tile(y, [3, 1, 1, 1])),
  );
  const got = await run("native", [a, b], (x, y) => tf.matMul(x, y));
  assertClose(got[0], ref[0], TOL, "matMul [3,1,4,5]x[1,2,5,3]");
  // Gradients through batched matmuls (tfjs' BatchMatMul gradient needs equal batch shapes).
  for (const [sa, sb, ta, tb] of [cases[0], cases[3], cases[4]]) {
    await parity(
      `matMul grad [${sa}]x[${sb}]`,
      [rand(sa), rand(sb)],
      grad((x, y) => tf.matMul(x, y, ta, tb)),
    );
  }
});

nativeTest("native fused matMul() matches cpu for bias shapes and every activation", async () => {
  const activations = ["linear", "relu", "relu6", "elu", "leakyrelu", "sigmoid", "prelu"] as const;
  for (const activation of activations) {
    const a = rand([2, 6, 5]), b = rand([5, 4]);
    const bias = rand([4]), alpha = rand([4]);
    await parity(`fused matMul ${activation}`, [a, b, bias, alpha], (x, y, z, w) =>
      tf.fused.matMul({
        a: x as tf.Tensor3D,
        b: y as tf.Tensor3D,
        bias: z,
        activation,
        preluActivationWeights: activation === "prelu" ? w : undefined,
        leakyreluAlpha: 0.1,
      }));
  }
  for (const biasShape of [[1], [6, 1], [6, 4], [1, 4]]) {
    const a = rand([6, 5]), b = rand([4, 5]), bias = rand(biasShape);
    await parity(
      `fused matMul bias [${biasShape}]`,
      [a, b, bias],
      (x, y, z) =>
        tf.fused.matMul({
          a: x as tf.Tensor2D,
          b: y as tf.Tensor2D,
          transposeB: true,
          bias: z,
          activation: "relu",
        }),
    );
  }
  // (tfjs' fused matMul gradient only handles equal batch shapes, on every backend.)
  const a = rand([6, 5]), b = rand([5, 4]), bias = rand([4]);
  await parity(
    "fused matMul gradient",
    [a, b, bias],
    grad((x, y, z) =>
      tf.fused.matMul({ a: x as tf.Tensor2D, b: y as tf.Tensor2D, bias: z, activation: "relu" })
    ),
  );
});

interface ConvCase {
  x: number[];
  f: number[];
  strides: number | [number, number];
  pad: "same" | "valid" | number;
  dil: number | [number, number];
}
const CONV_CASES: ConvCase[] = [
  { x: [2, 9, 9, 5], f: [3, 3, 5, 7], strides: 1, pad: "same", dil: 1 },
  { x: [2, 9, 9, 5], f: [3, 3, 5, 7], strides: 2, pad: "same", dil: 1 },
  { x: [2, 10, 8, 5], f: [3, 3, 5, 7], strides: 2, pad: "valid", dil: 1 },
  { x: [2, 8, 8, 5], f: [3, 3, 5, 4], strides: 1, pad: 1, dil: 1 }, // explicit padding
  { x: [1, 11, 11, 6], f: [7, 7, 6, 8], strides: 2, pad: 3, dil: 1 }, // ImageNet-style stem
  { x: [2, 8, 8, 3], f: [3, 3, 3, 16], strides: 1, pad: 1, dil: 1 }, // CIFAR stem (cin 3)
  { x: [2, 7, 7, 8], f: [1, 1, 8, 6], strides: 1, pad: "valid", dil: 1 }, // pointwise (no im2col)
  { x: [2, 8, 8, 8], f: [1, 1, 8, 6], strides: 2, pad: "valid", dil: 1 }, // downsample shortcut
  { x: [2, 8, 8, 4], f: [4, 4, 4, 6], strides: 4, pad: "valid", dil: 1 }, // ViT patch embedding
  { x: [1, 12, 10, 4], f: [3, 2, 4, 5], strides: [2, 1], pad: "same", dil: 1 }, // non-square
  { x: [2, 7, 7, 3], f: [4, 4, 3, 5], strides: 1, pad: "same", dil: 1 }, // asymmetric padding (1, 2)
  { x: [2, 6, 6, 3], f: [2, 2, 3, 5], strides: 1, pad: "valid", dil: 1 },
  { x: [1, 6, 6, 3], f: [3, 3, 3, 4], strides: 1, pad: 3, dil: 1 }, // padding >= kernel: scatter-add path
  { x: [1, 40, 40, 32], f: [3, 3, 32, 8], strides: 1, pad: "same", dil: 1 }, // grows the im2col scratch
  { x: [2, 10, 10, 4], f: [3, 3, 4, 5], strides: 1, pad: "same", dil: 2 },
  { x: [1, 12, 12, 3], f: [3, 3, 3, 4], strides: 1, pad: "valid", dil: [2, 3] },
];

nativeTest("native conv2d() matches cpu for strides, padding modes and dilations", async () => {
  for (const c of CONV_CASES) {
    await parity(
      `conv2d x[${c.x}] f[${c.f}] s=${c.strides} pad=${c.pad} dil=${c.dil}`,
      [rand(c.x), rand(c.f)],
      (x, f) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, c.strides, c.pad, "NHWC", c.dil),
    );
  }
});

nativeTest("native conv2d() gradients (Conv2DBackpropInput/Filter) match cpu", async () => {
  for (const c of CONV_CASES.filter((c) => c.dil === 1)) {
    await parity(
      `conv2d grads x[${c.x}] f[${c.f}] s=${c.strides} pad=${c.pad}`,
      [rand(c.x), rand(c.f)],
      grad((x, f) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, c.strides, c.pad)),
    );
  }
});

nativeTest("native conv2dTranspose() (Conv2DBackpropInput as an op) matches cpu", async () => {
  const x = rand([2, 4, 4, 6]), f = rand([3, 3, 5, 6]);
  await parity(
    "conv2dTranspose",
    [x, f],
    (a, b) => tf.conv2dTranspose(a as tf.Tensor4D, b as tf.Tensor4D, [2, 8, 8, 5], 2, "same"),
  );
});

nativeTest(
  "native convolutions on small many-channel maps (oneDNN's blocked-layout path) match cpu",
  async () => {
    // Output maps of at most 4x4 with channel counts divisible by 16 run with nChw16c activations.
    const cases: [number[], number[], number, "same" | "valid"][] = [
      [[2, 4, 4, 32], [3, 3, 32, 16], 1, "same"],
      [[2, 8, 8, 16], [3, 3, 16, 32], 2, "same"],
      [[3, 4, 4, 16], [1, 1, 16, 48], 1, "valid"],
    ];
    for (const [sx, sf, stride, pad] of cases) {
      const ci = tf.backend_util.computeConv2DInfo(
        sx as [number, number, number, number],
        sf as [number, number, number, number],
        stride,
        1,
        pad,
      );
      assertEquals(blockedLayoutPays(ci), true, `[${sx}] * [${sf}] should take the blocked path`);
      await parity(
        `conv2d blocked [${sx}]*[${sf}] s${stride}`,
        [rand(sx), rand(sf)],
        (x, f) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, stride, pad),
      );
      await parity(
        `fused conv2d blocked [${sx}]*[${sf}]`,
        [rand(sx), rand(sf), rand([sf[3]])],
        (x, f, b) =>
          tf.fused.conv2d({
            x: x as tf.Tensor4D,
            filter: f as tf.Tensor4D,
            strides: stride,
            pad,
            bias: b,
            activation: "relu",
          }),
      );
      await parity(
        `conv2d blocked grads [${sx}]*[${sf}]`,
        [rand(sx), rand(sf)],
        grad((x, f) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, stride, pad)),
      );
    }
  },
);

nativeTest("native fused conv2d() matches cpu with bias and activations", async () => {
  for (const activation of ["linear", "relu", "relu6", "elu", "sigmoid"] as const) {
    await parity(
      `fused conv2d ${activation}`,
      [rand([2, 6, 6, 3]), rand([3, 3, 3, 5]), rand([5])],
      (x, f, b) =>
        tf.fused.conv2d({
          x: x as tf.Tensor4D,
          filter: f as tf.Tensor4D,
          strides: 1,
          pad: "same",
          bias: b,
          activation,
        }),
    );
  }
});

nativeTest("native sum()/mean() over leading axes (GEMM with ones) and other axes match cpu", async () => {
  const x = rand([4, 5, 6, 7]);
  for (const axis of [0, [0, 1], [1, 0], [0, 1, 2], -1, [1, 2], [0, 2], [0, 1, 2, 3]]) {
    for (const keepDims of [false, true]) {
      await parity(
        `sum axis ${JSON.stringify(axis)} keepDims ${keepDims}`,
        [x],
        (t) => tf.sum(t, axis, keepDims),
      );
      await parity(
        `mean axis ${JSON.stringify(axis)} keepDims ${keepDims}`,
        [x],
        (t) => tf.mean(t, axis, keepDims),
      );
    }
  }
  // Batch-norm statistics and their gradient, as the models compute them (weighted by a fixed random
  // tensor: the plain sum of squares of a normalised tensor is a constant, its gradient ~0).
  const batchNormLoss = (u: tf.Tensor, w: tf.Tensor) => {
    const m = tf.mean(u, [0, 1, 2]);
    const v = tf.mean(tf.square(tf.sub(u, m)), [0, 1, 2]);
    return tf.sum(tf.mul(tf.mul(tf.sub(u, m), tf.rsqrt(tf.add(v, 1e-5))), w));
  };
  await parity(
    "batch-norm style gradient",
    [rand([3, 4, 4, 8]), rand([3, 4, 4, 8])],
    (t, w) => tf.grad((u: tf.Tensor) => batchNormLoss(u, w))(t),
  );
});

nativeTest("native split() matches cpu on every axis, with the tiny-run fallback", async () => {
  const x = rand([2, 5, 48]);
  await parity("split last axis in 3", [x], (t) => tf.split(t, 3, -1));
  await parity("split last axis sizes", [x], (t) => tf.split(t, [16, 32], 2));
  await parity("split middle axis", [x], (t) => tf.split(t, [2, 3], 1));
  await parity("split first axis", [x], (t) => tf.split(t, 2, 0));
  await parity("split tiny runs (fallback)", [rand([3, 4])], (t) => tf.split(t, 2, 1));
  await parity(
    "split gradient",
    [x],
    grad((t) => {
      const [a, b, c] = tf.split(t, 3, -1);
      return tf.add(tf.mul(a, b), c);
    }),
  );
});

nativeTest(
  "native Identity and same-dtype Cast share memory instead of copying, and free it once",
  async () => {
    await tf.setBackend("native");
    const a = tf.tensor([1, 2, 3, 4], [2, 2]);
    const before = tf.memory();
    const b = tf.clone(a), c = tf.cast(a, "float32"), d = tf.cast(a, "int32");
    const mid = tf.memory();
    // clone and same-dtype cast add tensors but no data buffers; the int32 cast is a real copy.
    assertEquals(mid.numTensors - before.numTensors, 3);
    assertEquals(mid.numDataBuffers - before.numDataBuffers, 1);
    a.dispose();
    assertEquals(Array.from(await b.data()), [1, 2, 3, 4]);
    assertEquals(Array.from(await c.data()), [1, 2, 3, 4]);
    assertEquals(d.dtype, "int32");
    tf.dispose([b, c, d]);
    assertEquals(tf.memory().numDataBuffers, before.numDataBuffers - 1);
  },
);

nativeTest("native backend keeps tensors apart from the wasm backend it shares a module with", async () => {
  await tf.setBackend("wasm");
  const w = tf.tensor([1, 2, 3, 4], [2, 2]);
  await tf.setBackend("native");
  const n = tf.tensor([10, 20, 30, 40], [2, 2]);
  const prod = tf.matMul(n, w); // w moves to native
  assertEquals(Array.from(await prod.data()), [70, 100, 150, 220]);
  await tf.setBackend("wasm");
  assertEquals(Array.from(await w.data()), [1, 2, 3, 4]);
  tf.dispose([w, n, prod]);
});

nativeTest("native backend reports its library and honours the thread count", () => {
  const s = nativeBackendStatus();
  if (!s) throw new Error("nativeBackendStatus() is undefined after loading");
  assertEquals(s.blasKernels.includes("Conv2DBackpropFilter"), true);
  const before = s.threads;
  setNativeThreads(1);
  if (s.threads !== undefined) assertEquals(nativeBackendStatus()?.threads, 1);
  setNativeThreads(before ?? 1);
  assertThrows(() => setNativeThreads(0), Error, "positive integer");
  return Promise.resolve();
});

nativeTest("native convolutions run as oneDNN JIT primitives where oneDNN 2.x is the GEMM library", () => {
  const s = nativeBackendStatus();
  if (!s) throw new Error("nativeBackendStatus() is undefined after loading");
  const r = loadBlas();
  if (!r.ok || r.blas.kind !== "dnnl" || Deno.env.get("NATIVE_CONV")) return Promise.resolve();
  const conv = openDnnlConv(r.blas.file);
  if (!conv.ok) {
    assertEquals(/im2col/.test(s.convolution), true, s.convolution);
    return Promise.resolve();
  }
  assertEquals(s.convolution, `oneDNN ${conv.conv.version} primitives`);
  // A reference ("ref:any") implementation would be correct but ~100x slow: require JIT code.
  const ci = tf.backend_util.computeConv2DInfo([8, 16, 16, 32], [3, 3, 32, 32], 1, 1, "same");
  for (const kind of ["forward", "backwardData", "backwardWeights"] as const) {
    const impl = conv.conv.implementation(kind, ci);
    assertEquals(/^ref|gemm:ref/.test(impl), false, `${kind}: oneDNN chose ${impl}`);
  }
  // Small maps with many channels prefer the blocked nChw16c layout, which has JIT kernels only on
  // AVX-512 CPUs: on an AVX2 CPU that choice fell back to reference code (ResNet18 training 30x slower).
  for (const shape of [[64, 4, 4, 64], [64, 8, 8, 32]] as const) {
    const small = tf.backend_util.computeConv2DInfo(
      [...shape],
      [3, 3, shape[3], 64],
      shape[1] === 8 ? 2 : 1,
      1,
      "same",
    );
    const impl = conv.conv.implementation("forward", small);
    assertEquals(isReferenceImpl(impl), false, `forward ${shape}: oneDNN chose ${impl}`);
  }
  return Promise.resolve();
});

Deno.test("blasCandidates() tries oneDNN first, then Accelerate on macOS and OpenBLAS on Linux", () => {
  if (Deno.env.get("BLAS_LIBRARY") || Deno.env.get("BLAS_PROVIDER")) return;
  const linux = blasCandidates("linux");
  assertEquals(linux[0], { path: "libdnnl.so.3", kind: "dnnl" });
  assertEquals(linux.find((c) => c.kind === "cblas"), { path: "libopenblas.so.0", kind: "cblas" });
  const mac = blasCandidates("darwin");
  assertEquals(mac[0].kind, "dnnl");
  assertEquals(
    mac.find((c) => c.kind === "cblas")?.path,
    "/System/Library/Frameworks/Accelerate.framework/Accelerate",
  );
});

/** Every library of each kind that opens here (oneDNN and OpenBLAS on the CI machine). */
function openProviders(): Blas[] {
  const out: Blas[] = [];
  for (const kind of ["dnnl", "cblas"] as const) {
    for (const c of blasCandidates().filter((c) => c.kind === kind || c.kind === "any")) {
      try {
        out.push(openBlasLibrary({ path: c.path, kind }));
        break;
      } catch { /* next candidate */ }
    }
  }
  return out;
}

Deno.test({
  name:
    "both GEMM providers (oneDNN dnnl_sgemm, CBLAS) agree with a plain loop for every transpose and stride",
  ignore,
  fn: () => {
    const providers = openProviders();
    if (Deno.build.os === "linux" && !Deno.env.get("BLAS_LIBRARY") && !Deno.env.get("BLAS_PROVIDER")) {
      // The CI machine installs both (libdnnl2 with python3-torch, libopenblas0): test both, not whichever loads.
      assertEquals(
        providers.map((p) => p.kind).sort(),
        ["cblas", "dnnl"],
        "expected oneDNN and OpenBLAS to load",
      );
    }
    for (const blas of providers) {
      for (const [m, n, k] of [[3, 5, 7], [17, 9, 33], [64, 1, 10], [1, 40, 3]]) {
        for (const ta of [false, true]) {
          for (const tb of [false, true]) {
            // Leading dimensions wider than the matrix, so a row-major/stride mix-up shows.
            const lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 3, ldc = n + 1;
            const a = seededRandom((ta ? k : m) * lda, m + 7 * n);
            const b = seededRandom((tb ? n : k) * ldb, k + 11 * n);
            const c0 = seededRandom(m * ldc, 5);
            const c = c0.slice();
            blas.sgemm(ta, tb, m, n, k, 0.5, a, lda, b, ldb, 2, c, ldc);
            for (let i = 0; i < m; i++) {
              for (let j = 0; j < ldc; j++) {
                let want = c0[i * ldc + j];
                if (j < n) {
                  let acc = 0;
                  for (let p = 0; p < k; p++) {
                    acc += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
                  }
                  want = 0.5 * acc + 2 * want;
                }
                const got = c[i * ldc + j];
                if (Math.abs(got - want) > 1e-4 * (1 + Math.abs(want))) {
                  throw new Error(
                    `${blas.kind} (${blas.path}) ${ta ? "T" : "N"}${tb ? "T" : "N"} m=${m} n=${n} k=${k}: ` +
                      `C[${i},${j}] = ${got}, expected ${want}`,
                  );
                }
              }
            }
          }
        }
      }
    }
  },
});

Deno.test({
  name: "loadBlas() gives a GEMM that computes a known product",
  ignore,
  fn: () => {
    const r = loadBlas();
    if (!r.ok) throw new Error(r.reason);
    const c = new Float32Array(4);
    r.blas.sgemm(
      false,
      false,
      2,
      2,
      3,
      1,
      new Float32Array([1, 2, 3, 4, 5, 6]),
      3,
      new Float32Array([1, 0, 0, 1, 1, 1]),
      2,
      0,
      c,
      2,
    );
    assertEquals(Array.from(c), [4, 5, 10, 11]);
  },
});

async function autoBackendIn(env: Record<string, string>, flags: string[]): Promise<string> {
  const code = `import { initBackend } from "${new URL("../lib/backend/mod.ts", import.meta.url).href}";
const info = await initBackend("auto", { log: false });
console.log(JSON.stringify({ name: info.name, rejected: info.rejected }));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", ...flags, code],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  if (!out.success) throw new Error(`subprocess failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

Deno.test({
  name: "initBackend('auto') falls back to wasm with a reason when no BLAS library loads",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const r = JSON.parse(
      await autoBackendIn({ BLAS_LIBRARY: "/nonexistent/libnoblas.so" }, ["--unstable-ffi"]),
    );
    assertEquals(r.name, "wasm");
    const nat = r.rejected.find((x: { name: string }) => x.name === "native");
    assertEquals(/no BLAS library could be loaded.*libnoblas/.test(nat.reason), true, nat.reason);
  },
});

Deno.test({
  name: "BLAS_PROVIDER=cblas makes the native backend use OpenBLAS instead of oneDNN",
  ignore: ignore || Deno.build.os !== "linux" || !!Deno.env.get("BLAS_LIBRARY"),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const code = `import { loadNativeBackend, nativeBackendStatus } from "${
      new URL("../lib/backend/mod.ts", import.meta.url).href
    }";
const r = await loadNativeBackend();
console.log(JSON.stringify(r.ok ? nativeBackendStatus()?.library : r.reason));`;
    const run = async (provider: string) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--unstable-ffi", code],
        env: { BLAS_PROVIDER: provider },
        stdout: "piped",
        stderr: "piped",
      }).output();
      return String(JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? '""'));
    };
    assertEquals(/openblas/.test(await run("cblas")), true);
    assertEquals(/dnnl.*oneDNN/.test(await run("dnnl")), true);
    assertEquals(/BLAS_PROVIDER: expected "dnnl" or "cblas"/.test(await run("mkl")), true);
  },
});

Deno.test({
  name: "initBackend('auto') picks native where the BLAS loads",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const r = JSON.parse(await autoBackendIn({}, ["--unstable-ffi"]));
    assertEquals(r.name, "native");
  },
});

// ---------------------------------------------------------------- lean fused ops (any backend)

const geluRef = (x: tf.Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
const layerNormRef = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, eps: number) => {
  const axis = x.rank - 1;
  const mean = tf.mean(x, axis, true);
  const centered = tf.sub(x, mean);
  const variance = tf.mean(tf.square(centered), axis, true);
  return tf.add(tf.mul(tf.mul(centered, tf.rsqrt(tf.add(variance, eps))), w), b);
};

for (const backend of ["cpu", "native"] as const) {
  Deno.test({
    name: `geluLean() and layerNormLean() match the op-by-op versions and their gradients [${backend}]`,
    ignore: backend === "native" && ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await initBackend(backend, { log: false });
      const x = tf.tensor(rand([3, 5, 16]).values, [3, 5, 16]);
      const w = tf.tensor(rand([16]).values, [16]), b = tf.tensor(rand([16]).values, [16]);
      const up = tf.tensor(rand([3, 5, 16]).values, [3, 5, 16]); // weights the loss so gradients are generic
      const check = async (
        what: string,
        f: (...t: tf.Tensor[]) => tf.Tensor,
        g: (...t: tf.Tensor[]) => tf.Tensor,
      ) => {
        const before = tf.memory().numTensors;
        const [yf, yg] = [tf.tidy(() => f(x, w, b)), tf.tidy(() => g(x, w, b))];
        assertClose(await yf.data(), await yg.data(), 1e-6, `${what} value`);
        const loss = (h: (...t: tf.Tensor[]) => tf.Tensor) => (...t: tf.Tensor[]) =>
          tf.sum(tf.mul(h(...t), up));
        const gf = tf.grads(loss(f))([x, w, b]), gg = tf.grads(loss(g))([x, w, b]);
        for (let i = 0; i < 3; i++) {
          assertClose(await gf[i].data(), await gg[i].data(), 1e-5, `${what} grad ${i}`);
        }
        tf.dispose([yf, yg, ...gf, ...gg]);
        assertEquals(tf.memory().numTensors, before, `${what}: leaked tensors`);
      };
      await check(
        "gelu",
        (t, w2, b2) => tf.add(tf.mul(geluLean(t), w2), b2),
        (t, w2, b2) => tf.add(tf.mul(geluRef(t), w2), b2),
      );
      await check(
        "layerNorm",
        (t, w2, b2) => layerNormLean(t, w2, b2, 1e-6),
        (t, w2, b2) => layerNormRef(t, w2, b2, 1e-6),
      );
      assertThrows(() => layerNormLean(x, tf.ones([3]), b, 1e-6), Error, "16 elements");
      tf.dispose([x, w, b, up]);
      if (backend === "native" && /^oneDNN/.test(nativeBackendStatus()?.convolution ?? "")) {
        // The whole-op kernels are what ran above: check they are registered, then a ViT-sized case
        // with an offset mean (variance by E[x²]−E[x]² would lose it).
        assertEquals(tf.getKernel(GELU_KERNEL, "native") !== undefined, true, "oneDNN GELU kernel missing");
        assertEquals(
          tf.getKernel(LAYER_NORM_KERNEL, "native") !== undefined,
          true,
          "oneDNN LN kernel missing",
        );
        const before = tf.memory().numTensors;
        const big = rand([2, 65, 384]);
        const inputs = [
          { values: big.values.map((v, i) => 30 + v * (1 + (i % 7))), shape: big.shape },
          rand([384]),
          rand([384]),
        ];
        const got = await run("native", inputs, (t, w2, b2) => [layerNormLean(t, w2, b2, 1e-6), geluLean(t)]);
        const ref = await run("cpu", inputs, (t, w2, b2) => [layerNormRef(t, w2, b2, 1e-6), geluRef(t)]);
        assertClose(got[0], ref[0], 1e-5, "layer norm, offset mean");
        assertClose(got[1], ref[1], 1e-6, "gelu, large inputs");
        await tf.setBackend("native");
        assertEquals(tf.memory().numTensors, before, "whole-op kernels leaked tensors");
      }
    },
  });
}

Deno.test({
  name: "geluLean() and layerNormLean() keep less memory on the gradient tape than the op-by-op versions",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const x = tf.randomNormal([4, 65, 96]);
    const w = tf.ones([96]), b = tf.zeros([96]);
    const heldBy = (f: (t: tf.Tensor) => tf.Tensor) => {
      const base = tf.memory().numBytes;
      let held = 0;
      const g = tf.grad((t: tf.Tensor) => {
        const y = tf.sum(f(t));
        held = tf.memory().numBytes - base;
        return y;
      })(x);
      g.dispose();
      return held;
    };
    const refBytes = heldBy((t) => geluRef(layerNormRef(t, w, b, 1e-6)));
    const leanBytes = heldBy((t) => geluLean(layerNormLean(t, w, b, 1e-6)));
    if (!(leanBytes < 0.5 * refBytes)) {
      throw new Error(
        `lean ops hold ${leanBytes} bytes during the forward pass, op-by-op ${refBytes}: expected < half`,
      );
    }
    tf.dispose([x, w, b]);
  },
});

Deno.test({
  name:
    "training-mode batchNorm(): the oneDNN kernel matches the tfjs-op version (output, gradients, running stats)",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const shape = [4, 6, 5, 8];
    const xv = rand(shape).values.map((v, i) => 3 + v * (1 + (i % 5))), up = rand(shape).values;
    const wv = rand([8]).values, bv = rand([8]).values;
    const results: Float32Array[][] = [];
    for (const backend of ["cpu", "native"] as const) {
      await initBackend(backend, { log: false });
      if (backend === "native") {
        // The kernel path is what runs on native (with oneDNN), the tfjs ops on cpu.
        const probe = tf.tidy(() =>
          batchNormTrainKernel(tf.zeros([1, 2, 2, 8]), tf.ones([8]), tf.zeros([8]), 1e-5)
        );
        const viaKernel = /^oneDNN/.test(nativeBackendStatus()?.convolution ?? "");
        assertEquals(probe !== undefined, viaKernel);
        if (probe) tf.dispose([probe.y, probe.mean, probe.variance]);
      }
      const before = tf.memory().numTensors;
      const p = tf.tidy(() => ({
        weight: tf.variable(tf.tensor1d(wv)),
        bias: tf.variable(tf.tensor1d(bv)),
        runningMean: tf.variable(tf.zeros([8])),
        runningVar: tf.variable(tf.ones([8])),
      }));
      const x = tf.tensor4d(xv, shape as [number, number, number, number]);
      const u = tf.tensor4d(up, shape as [number, number, number, number]);
      const bn = (t: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
        batchNorm(t as tf.Tensor4D, { ...p, weight: w as tf.Variable, bias: b as tf.Variable }, {
          training: true,
          eps: 1e-5,
          momentum: 0.1,
        });
      const y = tf.tidy(() => bn(x, p.weight, p.bias)); // updates the running statistics once
      const { value, grads } = tf.valueAndGrads((t: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(bn(t, w, b), u))
      )([x, p.weight, p.bias]); // and again
      results.push([
        await y.data() as Float32Array,
        ...(await Promise.all(grads.map((g) => g.data()))) as Float32Array[],
        await p.runningMean.data() as Float32Array,
        await p.runningVar.data() as Float32Array,
      ]);
      y.dispose();
      tf.dispose([value, ...grads, x, u, p.weight, p.bias, p.runningMean, p.runningVar]);
      assertEquals(tf.memory().numTensors - before, 0, `${backend}: leaked tensors`);
    }
    const names = ["y", "dx", "dweight", "dbias", "running mean", "running var"];
    for (let i = 0; i < names.length; i++) assertClose(results[1][i], results[0][i], 1e-5, names[i]);
  },
});

nativeTest(
  "a convolution oneDNN refuses falls back to im2col + GEMM with one warning per shape",
  async () => {
    const r = loadBlas();
    if (!r.ok) throw new Error(r.reason);
    // A stand-in for oneDNN whose convolutions all fail, as an unsupported geometry would.
    const refusing = {
      version: "test",
      forward: () => {
        throw new Error("unimplemented (test)");
      },
      backwardData: () => {
        throw new Error("unimplemented (test)");
      },
      backwardWeights: () => {
        throw new Error("unimplemented (test)");
      },
    } as unknown as DnnlConv;
    const configs = blasKernelConfigs("native", r.blas, (n) => tf.getKernel(n, "wasm")?.kernelFunc, refusing);
    const kernel = (name: string) => configs.find((k) => k.kernelName === name)!.kernelFunc;
    const x = rand([2, 7, 7, 3]), f = rand([3, 3, 3, 4]);
    const ref = await run("cpu", [x, f], (a, b) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, "same"));
    await tf.setBackend("native");
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (...m: unknown[]) => warnings.push(m.join(" "));
    try {
      for (let i = 0; i < 2; i++) {
        const [xt, ft] = [tf.tensor(x.values, x.shape), tf.tensor(f.values, f.shape)];
        const info = kernel(tf.Conv2D)({
          inputs: { x: xt, filter: ft },
          backend: tf.backend(),
          attrs: { strides: 2, pad: "same", dataFormat: "NHWC", dilations: 1 },
        }) as tf.TensorInfo;
        const out = tf.engine().makeTensorFromTensorInfo(info);
        assertClose((await out.data()) as Float32Array, ref[0], TOL, "im2col fallback");
        tf.dispose([xt, ft, out]);
      }
    } finally {
      console.warn = warn;
    }
    assertEquals(warnings.length, 1, `expected one warning, got ${JSON.stringify(warnings)}`);
    assertEquals(
      /Conv2D: oneDNN failed .*unimplemented \(test\).*im2col/.test(warnings[0]),
      true,
      warnings[0],
    );
  },
);

nativeTest(
  "native fused attention kernel (q, k, v read in place from qkv) matches the op-by-op attention on cpu",
  async () => {
    const opByOp = (qkv: tf.Tensor, heads: number) => {
      const [b, t, d3] = qkv.shape, d = d3 / 3, dh = d / heads;
      const [q, k, v] = tf.split(qkv, 3, 2).map((m) =>
        tf.transpose(tf.reshape(m, [b, t, heads, dh]), [0, 2, 1, 3])
      );
      const probs = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dh)));
      return tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [b, t, d]);
    };
    if (!/^oneDNN/.test(nativeBackendStatus()?.convolution ?? "")) return; // no oneDNN: the op path runs
    for (const [b, t, d, heads] of [[2, 5, 12, 3], [3, 65, 64, 4], [1, 1, 8, 2]]) {
      const qkv = rand([b, t, 3 * d]);
      qkv.values.forEach((v, i) => qkv.values[i] = 3 * v); // sharper softmax
      const ref = await run("cpu", [qkv], (x) => opByOp(x, heads));
      await tf.setBackend("native");
      const before = tf.memory().numTensors;
      const got = await run("native", [qkv], (x) => {
        const fused = attentionKernel(x as tf.Tensor3D, heads);
        if (!fused) throw new Error("attentionKernel() is undefined on native with oneDNN");
        return fused;
      });
      assertEquals(tf.memory().numTensors, before, "attention kernel leaked");
      assertClose(got[0], ref[0], TOL, `attention b=${b} t=${t} d=${d} heads=${heads}`);
    }
    // Gradients (the kernel's custom gradient: dV, dP, softmax backward, dQ, dK in oneDNN) vs cpu ops.
    for (const [b, t, d, heads] of [[2, 5, 12, 3], [2, 27, 64, 4]]) {
      const qkv = rand([b, t, 3 * d]), up = rand([b, t, d]);
      const loss = (f: (x: tf.Tensor) => tf.Tensor) => (x: tf.Tensor, u: tf.Tensor) =>
        tf.sum(tf.mul(f(x), u));
      const ref = await run(
        "cpu",
        [qkv, up],
        (x, u) => tf.grad((y: tf.Tensor) => loss((z) => opByOp(z, heads))(y, u))(x),
      );
      await tf.setBackend("native");
      const before = tf.memory().numTensors;
      const fusedLoss = loss((z) => {
        const fused = attentionKernel(z as tf.Tensor3D, heads);
        if (!fused) throw new Error("attentionKernel() is undefined under a tape on native with oneDNN");
        return fused;
      });
      const got = await run("native", [qkv, up], (x, u) => tf.grad((y: tf.Tensor) => fusedLoss(y, u))(x));
      assertEquals(tf.memory().numTensors, before, "attention gradient leaked");
      assertClose(got[0], ref[0], TOL, `attention gradient b=${b} t=${t} d=${d} heads=${heads}`);
    }
  },
);

nativeTest(
  "native masked attention kernel (DynamicViT's token policy) matches the ViT's op-by-op masked attention on cpu, with gradients for qkv and the mask",
  async () => {
    if (!/^oneDNN/.test(nativeBackendStatus()?.convolution ?? "")) return; // no oneDNN: the op path runs
    // The last case is degenerate: scores ×12, so in many rows a masked key scores far above every kept
    // one and the kept weights fall below ε: there the max's own gradient matters.
    for (const [b, t, d, heads, sharp] of [[2, 5, 12, 3, 3], [3, 17, 64, 4, 3], [2, 9, 8, 2, 12]]) {
      const qkv = rand([b, t, 3 * d]), up = rand([b, t, d]);
      qkv.values.forEach((v, i) => qkv.values[i] = sharp * v);
      // A hard mask (CLS and a few tokens kept) plus a soft one, as a straight-through mask can carry.
      const mask = {
        values: Float32Array.from({ length: b * t }, (_, i) => (i % t === 0 || (i * 7) % 3 === 0 ? 1 : 0)),
        shape: [b, t],
      };
      const soft = { values: Float32Array.from(rand([b, t]).values, (v) => 0.5 + 0.5 * v), shape: [b, t] };
      for (const m of [mask, soft]) {
        const ref = await run(
          "cpu",
          [qkv, m],
          (x, mm) => opByOpAttention(x as tf.Tensor3D, heads, mm as tf.Tensor2D).ctx,
        );
        await tf.setBackend("native");
        let before = tf.memory().numTensors;
        const got = await run("native", [qkv, m], (x, mm) => {
          const fused = maskedAttentionKernel(x as tf.Tensor3D, mm as tf.Tensor2D, heads);
          if (!fused) throw new Error("maskedAttentionKernel() is undefined on native with oneDNN");
          return fused;
        });
        assertEquals(tf.memory().numTensors, before, "masked attention kernel leaked");
        assertClose(got[0], ref[0], TOL, `masked attention b=${b} t=${t} d=${d} heads=${heads}`);
        // Gradients with respect to qkv and the mask.
        const refGrads = await run(
          "cpu",
          [qkv, m, up],
          (x, mm, u) =>
            tf.grads((y: tf.Tensor, z: tf.Tensor) =>
              tf.sum(tf.mul(opByOpAttention(y as tf.Tensor3D, heads, z as tf.Tensor2D).ctx, u))
            )([x, mm]),
        );
        await tf.setBackend("native");
        before = tf.memory().numTensors;
        const gotGrads = await run(
          "native",
          [qkv, m, up],
          (x, mm, u) =>
            tf.grads((y: tf.Tensor, z: tf.Tensor) => {
              const fused = maskedAttentionKernel(y as tf.Tensor3D, z as tf.Tensor2D, heads);
              if (!fused) throw new Error("maskedAttentionKernel() is undefined under a tape");
              return tf.sum(tf.mul(fused, u));
            })([x, mm]),
        );
        assertEquals(tf.memory().numTensors, before, "masked attention gradient leaked");
        assertClose(gotGrads[0], refGrads[0], TOL, `masked attention dqkv b=${b} t=${t}`);
        assertClose(gotGrads[1], refGrads[1], TOL, `masked attention dmask b=${b} t=${t}`);
      }
    }
  },
);

nativeTest(
  "a strided 1×1 filter gradient returns on oneDNN's AVX2 kernels (its jit_1x1:avx2 never did)",
  async () => {
    // oneDNN takes its ISA cap from the environment at load, so the AVX2 case runs in a subprocess; before the
    // fix it spun forever in oneDNN's JIT code, so the subprocess has a deadline.
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./_avx2_strided_1x1.ts", import.meta.url).pathname],
      env: { ONEDNN_MAX_CPU_ISA: "AVX2" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.success, true, `subprocess failed or timed out: ${stderr.slice(-2000)}`);
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!;
    const r = JSON.parse(line) as { impl: string; declined: boolean; relErr: number };
    assertEquals(r.relErr < TOL, true, `filter gradient relErr ${r.relErr}`);
    // Where oneDNN is the convolution library and would pick its AVX2 1×1 kernel, this backend declines it.
    if (/jit_1x1:avx2/.test(r.impl)) assertEquals(r.declined, true, r.impl);
  },
);
