/** `deno task profile` (tools/profile.ts): kernel times of a real step, kernels restored afterwards. */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../lib/backend/mod.ts";
import { profileStep } from "../tools/profile.ts";
import { assertEquals } from "./_assert.ts";

Deno.test({
  name: "profileStep() times the kernels of a training step and restores the backend's kernels",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await initBackend("cpu", { log: false });
    const before = tf.getKernel("Conv2D", "cpu")!.kernelFunc;
    const tensors = tf.memory().numTensors;
    for (
      const [model, mode, expected] of [
        ["resnet18_test", "train", ["Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput"]],
        ["hybrid_test", "infer", ["Conv2D", "BatchMatMul", "Softmax"]],
      ] as const
    ) {
      const p = await profileStep({ model, mode, batch: 2, steps: 1 });
      const names = p.kernels.map((k) => k.kernel);
      for (const k of expected) {
        assertEquals(names.includes(k), true, `${model} ${mode}: ${k} not in ${names}`);
      }
      assertEquals(p.kernels.every((k) => k.msPerStep >= 0 && k.callsPerStep > 0), true);
      assertEquals(
        p.msInKernels <= p.msPerStep * 1.0001,
        true,
        `kernels ${p.msInKernels} > step ${p.msPerStep}`,
      );
      assertEquals(p.backend, "cpu");
    }
    assertEquals(tf.getKernel("Conv2D", "cpu")!.kernelFunc === before, true, "Conv2D kernel not restored");
    assertEquals(tf.memory().numTensors, tensors, "profiling leaked tensors");
  },
});

Deno.test("deno task profile rejects bad arguments with the flag and the expected form", async () => {
  for (
    const [args, msg] of [
      [["--model", "resnet18_test", "--mode", "fit"], '--mode: expected infer or train, got "fit"'],
      [["--model", "resnet18_test", "--batch", "0"], '--batch: expected a positive integer, got "0"'],
      [["--mode", "infer"], "--model is required"],
    ] as const
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../tools/profile.ts", import.meta.url).pathname,
        ...args,
        "--backend",
        "cpu",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 2);
    const err = new TextDecoder().decode(out.stderr);
    assertEquals(err.includes(msg), true, err);
  }
});
