/**
 * Run by tests/native_test.ts in a subprocess with `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN reads it once, at load):
 * the filter gradient of a strided 1×1 convolution (a ResNet18 shortcut) on the native backend, against the
 * cpu backend. Prints one JSON line: the implementation oneDNN would have used, whether this backend declined
 * it, and the relative error.
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../lib/backend/mod.ts";
import { loadBlas } from "../lib/backend/native/blas.ts";
import { DnnlDeclined, openDnnlConv } from "../lib/backend/native/dnnl.ts";
import { relErr, seededRandom } from "./_backends.ts";

const xShape: [number, number, number, number] = [2, 32, 32, 4];
const wShape: [number, number, number, number] = [1, 1, 4, 8];
const xv = seededRandom(2 * 32 * 32 * 4, 1), wv = seededRandom(32, 2), dyv = seededRandom(2 * 16 * 16 * 8, 3);
const filterGrad = () =>
  tf.tidy(() =>
    tf.grad((w: tf.Tensor) =>
      tf.sum(
        tf.mul(
          tf.conv2d(tf.tensor4d(xv, xShape), w as tf.Tensor4D, 2, "same"),
          tf.tensor4d(dyv, [2, 16, 16, 8]),
        ),
      )
    )(tf.tensor4d(wv, wShape)).dataSync()
  );
await initBackend("cpu", { log: false });
const want = filterGrad();
await initBackend("native", { log: false });
const got = filterGrad();
let impl = "", declined = false;
const r = loadBlas();
if (r.ok && r.blas.kind === "dnnl") {
  const conv = openDnnlConv(r.blas.file);
  if (conv.ok) {
    try {
      impl = conv.conv.implementation(
        "backwardWeights",
        tf.backend_util.computeConv2DInfo(xShape, wShape, 2, 1, "same"),
      );
    } catch (e) {
      if (!(e instanceof DnnlDeclined)) throw e;
      declined = true;
      impl = e.message;
    }
  }
}
console.log(JSON.stringify({ impl, declined, relErr: relErr(got, want) }));
