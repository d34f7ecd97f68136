/**
 * The WebGPU backend: adapter detection, what `auto` chooses, the guards against tensors above the
 * adapter's limits, no GPU buffer leaks per training step, and findBatchSize on the GPU. Skipped with the
 * reason where no adapter exists at all (a software adapter, Mesa llvmpipe in CI, counts).
 */
import * as tf from "@tensorflow/tfjs-core";
import { assertEquals, assertRejects } from "./_assert.ts";
import { assertClose, seededRandom, WEBGPU_SKIP_REASON } from "./_backends.ts";
import {
  GpuMemoryError,
  initBackend,
  probeWebGPU,
  releasePooledGpuBuffers,
  softwareAdapterReason,
  webgpuAdapter,
  withGpuErrorScope,
} from "../lib/backend/mod.ts";
import { createModel } from "../lib/models/mod.ts";
import { AdamW, crossEntropy, findBatchSize } from "../lib/train/mod.ts";

const gpu = { ignore: WEBGPU_SKIP_REASON !== undefined, sanitizeOps: false, sanitizeResources: false };
if (WEBGPU_SKIP_REASON) console.warn(`webgpu_test: skipping the GPU tests: ${WEBGPU_SKIP_REASON}`);

/** Bytes of GPU buffers held by live tensors (tfjs-webgpu's count). */
function gpuBytesInUse(): number {
  return (tf.memory() as unknown as { numBytesInGPU: number }).numBytesInGPU;
}

Deno.test("softwareAdapterReason() recognises software rasterisers by name and by the fallback flag", () => {
  for (
    const d of [
      "llvmpipe (LLVM 15.0.6, 256 bits)",
      "lavapipe",
      "SwiftShader Device (Subzero)",
      "Microsoft Basic Render Driver",
    ]
  ) {
    assertEquals(softwareAdapterReason({ description: d }) !== undefined, true, d);
  }
  for (const d of ["Apple M1", "NVIDIA GeForce RTX 3060", "AMD Radeon RX 6800 (RADV NAVI21)"]) {
    assertEquals(softwareAdapterReason({ description: d }), undefined, d);
  }
  assertEquals(softwareAdapterReason({ description: "" }, true)?.includes("isFallbackAdapter"), true);
});

Deno.test({
  name: "initBackend('auto') uses webgpu only on a hardware adapter and reports the adapter it rejected",
  ...gpu,
  fn: async () => {
    const p = await probeWebGPU();
    if (!p.ok) throw new Error(p.reason);
    const info = await initBackend("auto", { log: false });
    if (p.report.software) {
      assertEquals(info.name !== "webgpu", true);
      const why = info.rejected.find((r) => r.name === "webgpu")?.reason ?? "";
      assertEquals(why.includes(p.report.name) && why.includes("software"), true, why);
    } else {
      assertEquals(info.name, "webgpu");
    }
  },
});

Deno.test({
  name: "initBackend('webgpu') names the adapter and its limits",
  ...gpu,
  fn: async () => {
    const info = await initBackend("webgpu", { log: false });
    assertEquals(info.name, "webgpu");
    assertEquals(tf.getBackend(), "webgpu");
    const a = info.adapter!;
    assertEquals(a.name.length > 0, true);
    assertEquals(webgpuAdapter()?.name, a.name);
    assertEquals(a.limits.maxStorageBufferBindingSize > 0 && a.limits.maxBufferSize > 0, true);
    assertEquals(a.limits.maxComputeWorkgroupStorageSize > 0, true);
  },
});

Deno.test({
  name: "webgpu: a tensor above maxStorageBufferBindingSize throws GpuMemoryError naming its shape",
  ...gpu,
  fn: async () => {
    const info = await initBackend("webgpu", { log: false });
    const limit = info.adapter!.limits.maxStorageBufferBindingSize;
    const n = Math.floor(limit / 4) + 1024; // one float32 tensor just above the limit
    if (n * 4 > 2 ** 31) {
      console.log(`  (limit ${limit} B: a tensor above it would not fit this test's memory; skipped)`);
      return;
    }
    const before = tf.memory().numTensors;
    // tfjs-webgpu would bind it anyway and compute zeros; the guard refuses when the buffer is made.
    await assertRejects(
      async () => {
        const y = tf.tidy(() => tf.add(tf.fill([n], 1), 1));
        try {
          await y.data();
        } finally {
          y.dispose();
        }
      },
      GpuMemoryError,
      `shape [${n}]`,
    );
    assertEquals(tf.memory().numTensors, before);
    await assertRejects(
      () =>
        withGpuErrorScope(
          "training step at batch size 4096",
          () => tf.tidy(() => tf.add(tf.fill([n], 1), 1)),
        ),
      GpuMemoryError,
      "batch size 4096",
    );
    assertEquals(tf.memory().numTensors, before);
  },
});

Deno.test({
  name: "webgpu: AdamW training steps release every tensor and GPU buffer they make",
  ...gpu,
  fn: async () => {
    await initBackend("webgpu", { log: false });
    const model = createModel("vit_test", { imgSize: 16, numClasses: 4 });
    const vars = [...model.trainableVariables().values()];
    const nameOf = new Map([...model.trainableVariables()].map(([k, v]) => [v.name, k]));
    const opt = new AdamW({ lr: 1e-3, weightDecay: 0.05 });
    const x = tf.randomNormal([4, 16, 16, 3]) as tf.Tensor4D;
    const y = tf.tensor1d([0, 1, 2, 3], "int32");
    const step = async () => {
      const { value, grads } = tf.variableGrads(
        () => crossEntropy(model.forward(x, { training: true }).logits, y),
        vars,
      );
      opt.step(
        model.trainableVariables(),
        new Map(Object.entries(grads).map(([n, g]) => [nameOf.get(n)!, g])),
      );
      tf.dispose(Object.values(grads));
      const v = (await value.data())[0];
      value.dispose();
      return v;
    };
    try {
      await step(); // warm-up: optimizer state and pooled buffers are made here
      const tensors = tf.memory().numTensors;
      const gpuBytes = gpuBytesInUse();
      for (let i = 0; i < 3; i++) assertEquals(Number.isFinite(await step()), true);
      assertEquals(tf.memory().numTensors, tensors);
      assertEquals(gpuBytesInUse(), gpuBytes);
    } finally {
      tf.dispose([x, y]);
      opt.dispose();
      model.dispose();
    }
  },
});

Deno.test({
  name:
    "findBatchSize() on webgpu stays under the adapter's buffer limit and names the batch size that fails",
  ...gpu,
  fn: async () => {
    const info = await initBackend("webgpu", { log: false });
    const limit = Math.min(
      info.adapter!.limits.maxStorageBufferBindingSize,
      info.adapter!.limits.maxBufferSize,
    );
    // A step whose largest tensor is `perImage` bytes per image: the buffer limit, not the budget, binds.
    const elems = 256 * 1024;
    const perImage = 4 * elems;
    const trial = (n: number) => {
      tf.tidy(() => {
        const x = tf.fill([n, elems], 0.5);
        tf.sum(tf.relu(tf.sub(x, 0.25)));
      });
    };
    const before = tf.memory().numTensors;
    const byLimit = Math.floor(limit / perImage);
    const r = await findBatchSize({ trial, budgetBytes: 64 * limit, maxBatchSize: 4 * byLimit });
    assertEquals(
      r.batchSize <= byLimit && r.batchSize >= byLimit / 2,
      true,
      `batch ${r.batchSize} vs ${byLimit}`,
    );
    assertEquals(r.method.includes("maxStorageBufferBindingSize"), true, r.method);
    assertEquals(tf.memory().numTensors, before);
    // Past the limit, a step fails with an error that names its batch size (not a lost device or zeros).
    const over = byLimit + 1;
    await assertRejects(
      () => withGpuErrorScope(`training step at batch size ${over}`, () => trial(over)),
      GpuMemoryError,
      `batch size ${over}`,
    );
    assertEquals(tf.memory().numTensors, before);
    // The trials' pooled buffers were released: only live tensors hold GPU memory.
    releasePooledGpuBuffers();
    const m = tf.memory() as unknown as { numBytesAllocatedInGPU: number; numBytesInGPU: number };
    assertEquals(m.numBytesAllocatedInGPU, m.numBytesInGPU);
  },
});

Deno.test({
  name: "webgpu kernels: UnsortedSegmentSum (gather's gradient) matches cpu, with and without segment ids",
  ...gpu,
  fn: async () => {
    const run = async () => {
      const x = tf.tensor3d(seededRandom(4 * 3 * 2, 9), [4, 3, 2]);
      const ids = tf.tensor1d([2, 0, 2, 1], "int32");
      const empty = tf.zeros([0, 3, 2]);
      const noIds = tf.tensor1d([], "int32");
      const a = tf.unsortedSegmentSum(x, ids, 3);
      const b = tf.unsortedSegmentSum(empty, noIds, 3);
      const out = [await a.data(), await b.array()];
      tf.dispose([x, ids, empty, noIds, a, b]);
      return out;
    };
    await initBackend("cpu", { log: false });
    const want = await run();
    await initBackend("webgpu", { log: false });
    const before = tf.memory().numTensors;
    const got = await run();
    assertEquals(tf.memory().numTensors, before);
    assertClose(got[0] as Float32Array, want[0] as Float32Array, 1e-6, "segment sum");
    assertEquals(got[1], want[1]);
  },
});

Deno.test({
  name: "webgpu kernels: AddN of more tensors than a shader may bind matches cpu (gradient clipping sums 32)",
  ...gpu,
  fn: async () => {
    const run = async () => {
      const xs = Array.from({ length: 33 }, (_, i) => tf.tensor2d(seededRandom(6, i + 1), [2, 3]));
      const s = tf.addN(xs);
      const g = tf.grad((a: tf.Tensor) => tf.addN(xs.map((x) => tf.mul(a, x))).sum())(xs[0]);
      const out = [await s.data(), await g.data()];
      tf.dispose([...xs, s, g]);
      return out;
    };
    await initBackend("cpu", { log: false });
    const want = await run();
    await initBackend("webgpu", { log: false });
    const before = tf.memory().numTensors;
    const got = await run();
    assertEquals(tf.memory().numTensors, before);
    assertClose(got[0], want[0], 1e-6, "addN of 33");
    assertClose(got[1], want[1], 1e-6, "gradient through addN of 33");
  },
});
