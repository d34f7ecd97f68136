/**
 * Kernels of tfjs-backend-webgpu 4.22.0 that fail on our training paths, replaced by
 * {@link registerWebGPUTrainingKernels}:
 *
 * - `UnsortedSegmentSum` (the gradient of `gather`) throws "Cannot infer the missing size in [-1,0]" when
 *   there are no segment ids (a gather of zero rows, as token merging makes when a step merges nothing);
 *   the replacement returns the zeros the op means there and calls the webgpu kernel otherwise.
 *
 * - `AddN` with more inputs than a shader may bind storage buffers (`maxStorageBuffersPerShaderStage`, 8 by
 *   default in wgpu: one is the output) fails validation ("Too many bindings of type StorageBuffers"),
 *   e.g. the squared norms of 32 gradients summed for gradient clipping; the replacement adds in chunks.
 *
 * Every other kernel a training step of ResNet18, the ViT, the hybrid and the pruning strategies needs
 * exists in tfjs-webgpu and matches the cpu backend (`tests/webgpu_models_test.ts`). Each replacement is
 * tested against the cpu backend in `tests/webgpu_test.ts`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs-core";

/** The kernels {@link registerWebGPUTrainingKernels} replaces. */
export const WEBGPU_REPLACED_KERNELS = ["UnsortedSegmentSum", "AddN"] as const;

const patched = new Set<string>();

function unsortedSegmentSum(original: KernelFunc, backendName: string): KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    const { numSegments } = args.attrs as unknown as { numSegments: number };
    if (x.shape.length > 0 && x.shape[0] === 0) {
      const fill = tf.getKernel("Fill", backendName)!.kernelFunc;
      return fill({
        inputs: {},
        backend: args.backend,
        attrs: {
          shape: [numSegments, ...x.shape.slice(1)],
          value: 0,
          dtype: x.dtype,
        } as unknown as NamedAttrMap,
      });
    }
    return original(args);
  };
}

function addN(original: KernelFunc): KernelFunc {
  return (args) => {
    const tensors = Object.values(args.inputs) as TensorInfo[];
    const backend = args.backend as {
      device: GPUDevice;
      disposeData(dataId: object): boolean;
    };
    const perShader = Math.max(2, backend.device.limits.maxStorageBuffersPerShaderStage - 1);
    if (tensors.length <= perShader) return original(args);
    let level = tensors;
    let owned: TensorInfo[] = [];
    while (level.length > perShader) {
      const next: TensorInfo[] = [];
      for (let i = 0; i < level.length; i += perShader) {
        const chunk = level.slice(i, i + perShader);
        next.push(
          chunk.length === 1
            ? chunk[0]
            : original({ ...args, inputs: chunk as unknown as NamedTensorInfoMap }) as TensorInfo,
        );
      }
      for (const t of owned) if (!next.includes(t)) backend.disposeData(t.dataId);
      owned = next.filter((t) => !tensors.includes(t));
      level = next;
    }
    const out = original({ ...args, inputs: level as unknown as NamedTensorInfoMap }) as TensorInfo;
    for (const t of owned) backend.disposeData(t.dataId);
    return out;
  };
}

/**
 * Replaces the webgpu kernels listed in {@link WEBGPU_REPLACED_KERNELS} (once per backend name; the
 * original kernel still runs every case it handles).
 *
 * @example
 * ```ts
 * registerWebGPUTrainingKernels();
 * await tf.setBackend("webgpu");
 * ```
 */
export function registerWebGPUTrainingKernels(backendName = "webgpu"): void {
  if (patched.has(backendName)) return;
  const seg = tf.getKernel("UnsortedSegmentSum", backendName);
  if (!seg) {
    throw new Error(`registerWebGPUTrainingKernels: backend "${backendName}" has no "UnsortedSegmentSum"`);
  }
  tf.unregisterKernel("UnsortedSegmentSum", backendName);
  tf.registerKernel({ ...seg, kernelFunc: unsortedSegmentSum(seg.kernelFunc, backendName) });
  const add = tf.getKernel("AddN", backendName)!;
  tf.unregisterKernel("AddN", backendName);
  tf.registerKernel({ ...add, kernelFunc: addN(add.kernelFunc) });
  patched.add(backendName);
}
