/**
 * Weights: safetensors reading (F32/F16/BF16/F64/I64/I32) and writing, state-dict loading with
 * errors that list unknown/missing/mis-shaped tensors, PyTorch-layout round trips, bicubic position
 * embedding resampling, pretrained loading from a local file and from a (local) hub endpoint, and the
 * offline error.
 */
import * as tf from "@tensorflow/tfjs-core";
import * as path from "node:path";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { assertClose, seededRandom } from "./_backends.ts";
import { initBackend } from "../lib/backend/mod.ts";
import { createModel, type Hybrid, ResNet18, ViT, type ViTConfig } from "../lib/models/mod.ts";
import {
  exportStateDict,
  fetchPretrained,
  loadModel,
  loadPretrained,
  loadStateDict,
  parseSafetensors,
  readSafetensors,
  resamplePosEmbed,
  resizeBicubic,
  saveModel,
  serializeSafetensors,
  writeSafetensors,
} from "../lib/weights/mod.ts";

const cpuTest = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await initBackend("cpu", { log: false });
      await fn();
    },
  });

/** A safetensors file from raw parts, for dtypes our writer does not produce. */
function rawFile(entries: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let off = 0;
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + e.bytes.length] };
    off += e.bytes.length;
  }
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  let p = 8 + h.length;
  for (const e of entries) {
    out.set(e.bytes, p);
    p += e.bytes.length;
  }
  return out;
}

function le(bytesPer: number, values: (number | bigint)[], kind: "u16" | "f64" | "i64"): Uint8Array {
  const out = new Uint8Array(values.length * bytesPer);
  const dv = new DataView(out.buffer);
  values.forEach((v, i) => {
    if (kind === "u16") dv.setUint16(i * 2, v as number, true);
    else if (kind === "f64") dv.setFloat64(i * 8, v as number, true);
    else dv.setBigInt64(i * 8, BigInt(v), true);
  });
  return out;
}

Deno.test("parseSafetensors() reads F16, BF16, F64 and I64 (as int32)", () => {
  const bytes = rawFile([
    { name: "h", dtype: "F16", shape: [3], bytes: le(2, [0x3c00, 0xc000, 0x3800], "u16") },
    { name: "b", dtype: "BF16", shape: [2], bytes: le(2, [0x3f80, 0xc040], "u16") },
    { name: "d", dtype: "F64", shape: [1], bytes: le(8, [0.25], "f64") },
    { name: "i", dtype: "I64", shape: [2, 1], bytes: le(8, [7n, -3n], "i64") },
  ]);
  const { tensors, metadata } = parseSafetensors(bytes, "mixed.safetensors");
  assertEquals(metadata, { format: "pt" });
  assertEquals(Array.from(tensors.get("h")!.data), [1, -2, 0.5]);
  assertEquals(Array.from(tensors.get("b")!.data), [1, -3]);
  assertEquals(Array.from(tensors.get("d")!.data), [0.25]);
  assert(tensors.get("i")!.data instanceof Int32Array);
  assertEquals(Array.from(tensors.get("i")!.data), [7, -3]);
  assertEquals(tensors.get("i")!.shape, [2, 1]);
});

Deno.test("parseSafetensors() rejects I64 outside int32, truncated data and unknown dtypes, naming the file", () => {
  const big = rawFile([{ name: "labels", dtype: "I64", shape: [1], bytes: le(8, [2n ** 40n], "i64") }]);
  assertThrows(
    () => parseSafetensors(big, "big.safetensors"),
    Error,
    'big.safetensors: tensor "labels" (I64) holds 1099511627776',
  );
  const ok = rawFile([{ name: "w", dtype: "F32", shape: [4], bytes: new Uint8Array(16) }]);
  assertThrows(
    () => parseSafetensors(ok.subarray(0, ok.length - 4), "cut.safetensors"),
    Error,
    "file truncated?",
  );
  const odd = rawFile([{ name: "w", dtype: "C64", shape: [1], bytes: new Uint8Array(8) }]);
  assertThrows(() => parseSafetensors(odd, "odd.safetensors"), Error, 'dtype "C64"');
  assertThrows(() => parseSafetensors(new Uint8Array(4), "tiny"), Error, "too short");
});

Deno.test("writeSafetensors() round-trips F32/I32 and metadata, atomically, with an 8-byte aligned header", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = path.join(dir, "t.safetensors");
    const tensors = new Map([
      ["z.weight", { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6.5]) }],
      ["a.index", { shape: [2], data: new Int32Array([-1, 9]) }],
    ]);
    await writeSafetensors(file, tensors, { config: '{"model":"vit"}' });
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["t.safetensors"]);
    const bytes = await Deno.readFile(file);
    assertEquals(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8, 0);
    const back = await readSafetensors(file);
    assertEquals([...back.tensors.keys()], ["a.index", "z.weight"]);
    assertEquals(back.tensors.get("a.index")!.dtype, "I32");
    assertEquals(Array.from(back.tensors.get("a.index")!.data), [-1, 9]);
    assertEquals(Array.from(back.tensors.get("z.weight")!.data), [1, 2, 3, 4, 5, 6.5]);
    assertEquals(back.metadata.config, '{"model":"vit"}');
    assertThrows(
      () => serializeSafetensors(new Map([["w", { shape: [3], data: new Float32Array(2) }]])),
      Error,
      'tensor "w" has 2 values but shape [3]',
    );
    await assertRejects(() => readSafetensors(path.join(dir, "absent.safetensors")), Error, "cannot read");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A safetensors file with any header JSON (valid or not) and `data` bytes after it. */
function withHeader(header: unknown, data = new Uint8Array(16)): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

Deno.test("parseSafetensors() rejects a null or non-object header, naming the file", () => {
  for (
    const [header, what] of [[null, "null"], [[1, 2], "an array"], [7, "number"], ["x", "string"]] as const
  ) {
    assertThrows(
      () => parseSafetensors(withHeader(header), "odd.safetensors"),
      Error,
      `odd.safetensors: header is ${what}`,
    );
  }
  const entry = { "w": null };
  assertThrows(
    () => parseSafetensors(withHeader(entry), "e.safetensors"),
    Error,
    'e.safetensors: tensor "w" is null',
  );
  assertThrows(
    () => parseSafetensors(withHeader({ __metadata__: { n: 3 } }), "m.safetensors"),
    Error,
    'm.safetensors: __metadata__ key "n" is not a string',
  );
});

Deno.test("parseSafetensors() rejects negative or fractional dimensions and bad, overlapping or out-of-range offsets", () => {
  const t = (shape: unknown, data_offsets: unknown) => ({ dtype: "F32", shape, data_offsets });
  const cases: [Record<string, unknown>, string][] = [
    // -2 x -1 has 2 elements: only the sign check catches it
    [{ w: t([-2, -1], [0, 8]) }, 'tensor "w" has shape [-2,-1]; expected non-negative integers'],
    [{ w: t([1.5, 2], [0, 12]) }, 'tensor "w" has shape [1.5,2]'],
    [{ w: t(["2"], [0, 8]) }, 'tensor "w" has shape ["2"]'],
    [{ w: t([2], [0.5, 8.5]) }, 'tensor "w" has data_offsets [0.5,8.5]; expected two non-negative integers'],
    [{ w: t([2], [-8, 0]) }, 'tensor "w" has data_offsets [-8,0]'],
    [{ w: t([0], [8, 0]) }, 'tensor "w" has data_offsets [8,0]'],
    [
      { w: t([2], [12, 20]) },
      'tensor "w" data_offsets [12, 20] do not fit shape [2] of F32 in 16 data bytes',
    ],
    [{ a: t([2], [0, 8]), b: t([2], [4, 12]) }, 'tensors "a" [0, 8] and "b" [4, 12] overlap'],
    [{ a: t([4], [0, 16]), b: t([2], [8, 16]) }, 'tensors "a" [0, 16] and "b" [8, 16] overlap'],
  ];
  for (const [header, message] of cases) {
    assertThrows(
      () => parseSafetensors(withHeader(header), "bad.safetensors"),
      Error,
      `bad.safetensors: ${message}`,
    );
  }
  // Adjacent, empty and out-of-order tensors are fine.
  const ok = parseSafetensors(
    withHeader({ b: t([2], [8, 16]), a: t([2], [0, 8]), e: t([0, 3], [8, 8]) }),
    "ok",
  );
  assertEquals([...ok.tensors.keys()], ["b", "a", "e"]);
});

Deno.test("serializeSafetensors() pads the header to 8 bytes in UTF-8 bytes (non-ASCII metadata), read back by Python", async () => {
  const metadata = { note: "Größe in µm — 組織, 🩺", config: '{"model":"vit"}' };
  const tensors = new Map([
    ["w", { shape: [3], data: new Float32Array([1.5, -2, 3.25]) }],
    ["i", { shape: [2], data: new Int32Array([7, -9]) }],
  ]);
  const bytes = serializeSafetensors(tensors, metadata);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEquals((8 + n) % 8, 0, `data starts at byte ${8 + n}`);
  const back = parseSafetensors(bytes, "utf8.safetensors");
  assertEquals(back.metadata, metadata);
  assertEquals(Array.from(back.tensors.get("w")!.data), [1.5, -2, 3.25]);
  // An independent reader (Python's struct + json, the layout of the reference implementation).
  const dir = await Deno.makeTempDir();
  try {
    const file = path.join(dir, "utf8.safetensors");
    await Deno.writeFile(file, bytes);
    const py = [
      "import json, struct, sys",
      "b = open(sys.argv[1], 'rb').read()",
      "(n,) = struct.unpack('<Q', b[:8])",
      "h = json.loads(b[8:8 + n].decode('utf-8'))",
      "base = 8 + n",
      "w = h['w']; s, e = w['data_offsets']",
      "i = h['i']; s2, e2 = i['data_offsets']",
      "print(json.dumps({'aligned': base % 8 == 0, 'meta': h['__metadata__'],",
      "  'w': list(struct.unpack('<3f', b[base + s:base + e])), 'i': list(struct.unpack('<2i', b[base + s2:base + e2]))}))",
    ].join("\n");
    const out = await new Deno.Command("python3", { args: ["-c", py, file] }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    assertEquals(JSON.parse(new TextDecoder().decode(out.stdout)), {
      aligned: true,
      meta: metadata,
      w: [1.5, -2, 3.25],
      i: [7, -9],
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- state dicts

cpuTest(
  "loadStateDict() lists unknown, missing and mis-shaped tensors in one error and changes nothing",
  async () => {
    const net = new ResNet18({ model: "resnet18", numClasses: 3, width: 4, stem: "cifar", imgSize: 8 });
    const state = await exportStateDict(net);
    const before = Array.from(await net.stateDict().get("conv1.weight")!.data());
    const bad = new Map(state);
    bad.delete("layer1.0.bn1.running_var");
    bad.set("layer9.weight", { shape: [1], data: new Float32Array(1) });
    bad.set("conv1.weight", { shape: [4, 3, 5, 5], data: new Float32Array(300) });
    bad.set("fc.weight", { shape: [32, 3], data: new Float32Array(96) }); // our layout, not PyTorch's
    const e = assertThrows(() => loadStateDict(net, bad, { source: "bad.safetensors" }));
    assert(e.message.includes("bad.safetensors"), e.message);
    assert(e.message.includes("unknown tensors (1): layer9.weight"), e.message);
    assert(e.message.includes("missing tensors (1): layer1.0.bn1.running_var"), e.message);
    assert(e.message.includes("conv1.weight: got [4,3,5,5], expected [4,3,3,3]"), e.message);
    assert(e.message.includes("fc.weight: got [32,3], expected [3,32]"), e.message);
    assertEquals(Array.from(await net.stateDict().get("conv1.weight")!.data()), before);
    // timm's num_batches_tracked buffers are accepted and ignored.
    const withCounters = new Map(state);
    withCounters.set("bn1.num_batches_tracked", { shape: [], data: new Float32Array([3]) });
    assertEquals(loadStateDict(net, withCounters).unknown, []);
    net.dispose();
  },
);

cpuTest(
  "exportStateDict() -> safetensors -> loadStateDict() reproduces a model (PyTorch layouts, BN stats)",
  async () => {
    const a = createModel("hybrid_test", { cnnHead: true }, { seed: 1 });
    const b = createModel("hybrid_test", { cnnHead: true }, { seed: 2 });
    const x = tf.tensor4d(seededRandom(2 * 32 * 32 * 3), [2, 32, 32, 3]);
    try {
      tf.dispose(a.forward(x, { training: true }).logits); // move the running stats away from their init
      const exported = await exportStateDict(a);
      // PyTorch layouts on export.
      assertEquals(exported.get("cnn.conv1.weight")!.shape, [8, 3, 3, 3]);
      assertEquals(exported.get("vit.blocks.0.attn.qkv.weight")!.shape, [192, 64]);
      const file = parseSafetensors(serializeSafetensors(exported));
      loadStateDict(b, file.tensors);
      const ya = a.forward(x, { returnAux: true });
      const yb = b.forward(x, { returnAux: true });
      assertEquals(Array.from(await yb.logits.data()), Array.from(await ya.logits.data()));
      assertEquals(Array.from(await yb.aux!.cnnLogits!.data()), Array.from(await ya.aux!.cnnLogits!.data()));
      tf.dispose([ya as unknown as tf.TensorContainer, yb as unknown as tf.TensorContainer]);
    } finally {
      x.dispose();
      a.dispose();
      b.dispose();
    }
  },
);

cpuTest("saveModel() / loadModel() rebuild a model from its file alone", async () => {
  const dir = await Deno.makeTempDir();
  const m = createModel("vit_test", { numClasses: 3 }, { seed: 5 });
  const x = tf.tensor4d(seededRandom(32 * 32 * 3), [1, 32, 32, 3]);
  try {
    const file = path.join(dir, "m.safetensors");
    await saveModel(m, file, { note: "test" });
    const back = await loadModel(file);
    assertEquals(back.config, m.config);
    const [a, b] = [m.forward(x).logits, back.forward(x).logits];
    assertEquals(Array.from(await b.data()), Array.from(await a.data()));
    tf.dispose([a, b]);
    back.dispose();
    assertEquals((await readSafetensors(file)).metadata.note, "test");
    const bare = path.join(dir, "bare.safetensors");
    await writeSafetensors(bare, new Map([["w", { shape: [1], data: new Float32Array(1) }]]));
    await assertRejects(() => loadModel(bare), Error, 'has no "config" in its metadata');
  } finally {
    x.dispose();
    m.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- resampling

Deno.test("resizeBicubic() keeps constants, reproduces linear ramps inside, and is the identity at equal size", () => {
  const ramp = new Float32Array([0, 1, 2, 3]);
  // Output i samples source (i + 0.5) / 2 - 0.5; for i = 3, 4 all four taps are inside. PyTorch's plain
  // bicubic (A = -0.75) weights at t = 0.25 are [-0.10546875, 0.87890625, 0.26171875, -0.03515625]
  // (by hand from its cubic_convolution1/2), so it does not reproduce the ramp exactly...
  const up = resizeBicubic(ramp, 1, 4, 1, 1, 8);
  assertClose([up[3], up[4]], [1.296875, 1.703125], 1e-7, "plain bicubic on a ramp");
  // ...while the antialiased kernel (a = -0.5, normalised) does.
  const upAa = resizeBicubic(ramp, 1, 4, 1, 1, 8, { antialias: true });
  assertClose([upAa[3], upAa[4]], [1.25, 1.75], 1e-7, "antialiased bicubic on a ramp");
  for (const antialias of [false, true]) {
    const c = resizeBicubic(new Float32Array(14 * 14 * 2).fill(0.7), 14, 14, 2, 8, 8, { antialias });
    assert(c.every((v) => Math.abs(v - 0.7) < 1e-6), `constant field (antialias ${antialias})`);
    const c2 = resizeBicubic(new Float32Array(4 * 4).fill(-2), 4, 4, 1, 9, 9, { antialias });
    assert(c2.every((v) => Math.abs(v + 2) < 1e-6), `constant field upsampled (antialias ${antialias})`);
  }
  const img = seededRandom(5 * 5 * 3);
  assertClose(resizeBicubic(img, 5, 5, 3, 5, 5), img, 1e-7, "identity");
  assertThrows(() => resizeBicubic(img, 4, 4, 3, 2, 2), Error, "75 values do not make an image [4, 4, 3]");
});

Deno.test("resizeBicubic() matches torch.nn.functional.interpolate (bicubic, align_corners=False, +-antialias)", () => {
  // Reference values printed by PyTorch 1.13 (float64) for x[i] = sin(0.7 i + 0.3), an [h=4, w=5, c=2]
  // channels-last image, resized to [oh, ow] with antialias on/off.
  const x = Float32Array.from({ length: 4 * 5 * 2 }, (_, i) => Math.sin(0.7 * i + 0.3));
  const cases: [number, number, boolean, number[]][] = [
    [3, 2, true, [
      0.495450,
      0.334369,
      -0.499031,
      -0.359126,
      0.237140,
      -0.096409,
      -0.266184,
      0.063051,
      -0.206914,
      -0.451672,
      0.175157,
      0.435842,
    ]],
    [7, 9, false, [
      0.161437,
      0.835547,
      0.538139,
      0.872550,
      1.012588,
      0.834599,
      0.794000,
      0.185211,
      0.107723,
      -0.575239,
      -0.639758,
      -1.008857,
      -1.009767,
      -0.849667,
      -0.675638,
      -0.138313,
      -0.388595,
      0.377468,
      0.431482,
      0.954879,
      0.676103,
      0.849898,
      0.950502,
      0.614536,
      0.558330,
      -0.090489,
      -0.163499,
      -0.744613,
      -0.792433,
      -0.975672,
      -0.954785,
      -0.634040,
      -0.467412,
      0.100528,
      -0.086710,
      0.615297,
      0.822507,
      1.087696,
      0.852038,
      0.770748,
      0.805691,
      0.245345,
      0.168176,
      -0.508011,
      -0.570345,
      -0.965073,
      -0.984814,
      -0.873810,
      -0.820631,
      -0.270624,
      -0.124048,
      0.461074,
      0.380187,
      0.947365,
      1.067599,
      1.019539,
      0.872037,
      0.545584,
      0.506957,
      -0.177477,
      -0.261591,
      -0.839059,
      -0.878819,
      -1.009348,
      -0.996730,
      -0.606158,
      -0.529977,
      0.151038,
      0.249690,
      0.742752,
      0.785578,
      1.108887,
      1.077239,
      0.726530,
      0.699714,
      0.200095,
      0.096417,
      -0.561157,
      -0.633665,
      -0.985059,
      -0.993475,
      -0.831020,
      -0.788824,
      -0.204821,
      -0.122440,
      0.539389,
      0.568361,
      0.860621,
      1.017715,
      1.025852,
      0.889016,
      0.306174,
      0.402507,
      -0.175073,
      -0.323454,
      -0.834054,
      -0.881887,
      -0.947332,
      -0.923499,
      -0.503835,
      -0.440408,
      0.225925,
      0.299264,
      0.820856,
      0.776250,
      0.818170,
      1.058380,
      0.756270,
      0.735757,
      0.021258,
      0.194708,
      -0.414049,
      -0.586549,
      -0.983748,
      -1.013837,
      -0.890344,
      -0.846269,
      -0.273002,
      -0.197879,
      0.499451,
      0.564382,
      0.976597,
      0.885473,
      0.762510,
      1.048783,
      0.554425,
    ]],
    [7, 9, true, [
      0.189132,
      0.838096,
      0.494714,
      0.846580,
      0.998461,
      0.792238,
      0.731878,
      0.174728,
      0.094464,
      -0.582580,
      -0.609205,
      -0.931278,
      -0.989535,
      -0.847285,
      -0.620168,
      -0.072875,
      -0.384248,
      0.365223,
      0.420531,
      0.931226,
      0.621348,
      0.832641,
      0.928088,
      0.588716,
      0.535886,
      -0.052158,
      -0.146077,
      -0.727682,
      -0.725584,
      -0.892825,
      -0.941891,
      -0.657474,
      -0.427348,
      0.133769,
      -0.118810,
      0.571799,
      0.831155,
      1.067842,
      0.831356,
      0.775647,
      0.763508,
      0.191521,
      0.154553,
      -0.468313,
      -0.583866,
      -0.967724,
      -0.912773,
      -0.788393,
      -0.818676,
      -0.282960,
      -0.055943,
      0.509555,
      0.374820,
      0.930991,
      1.025506,
      0.967594,
      0.846088,
      0.562987,
      0.457073,
      -0.203933,
      -0.218998,
      -0.743231,
      -0.854068,
      -0.980922,
      -0.890112,
      -0.530614,
      -0.537773,
      0.111247,
      0.288171,
      0.739742,
      0.738571,
      1.058499,
      1.057937,
      0.714571,
      0.727229,
      0.261436,
      0.078471,
      -0.567188,
      -0.557971,
      -0.900799,
      -0.989420,
      -0.839240,
      -0.726909,
      -0.189055,
      -0.171960,
      0.487889,
      0.586786,
      0.853130,
      0.985708,
      1.018877,
      0.847867,
      0.265544,
      0.425137,
      -0.136309,
      -0.362756,
      -0.840951,
      -0.806754,
      -0.867109,
      -0.910279,
      -0.485573,
      -0.375352,
      0.236534,
      0.276745,
      0.795070,
      0.783774,
      0.781182,
      1.032312,
      0.737406,
      0.716577,
      0.016467,
      0.252537,
      -0.349360,
      -0.594782,
      -0.972348,
      -0.925294,
      -0.831137,
      -0.848763,
      -0.283754,
      -0.176927,
      0.462649,
      0.514583,
      0.945537,
      0.874676,
      0.726203,
      1.036541,
      0.569625,
    ]],
    [2, 3, false, [
      0.727334,
      0.846536,
      -0.258089,
      -0.807060,
      -0.397908,
      0.183597,
      0.476435,
      -0.093406,
      -0.955042,
      -0.586256,
      0.742583,
      0.841705,
    ]],
  ];
  for (const [oh, ow, antialias, expected] of cases) {
    const got = resizeBicubic(x, 4, 5, 2, oh, ow, { antialias });
    assertClose(got, expected, 1e-5, `4x5 -> ${oh}x${ow} antialias=${antialias}`);
  }
});

Deno.test("resamplePosEmbed() keeps the CLS embedding and resamples the patch grid", () => {
  const d = 3;
  const pos = seededRandom((1 + 14 * 14) * d);
  const r = resamplePosEmbed(pos, [1, 197, d], 8);
  assertEquals(r.shape, [1, 65, d]);
  assertEquals(Array.from(r.data.subarray(0, d)), Array.from(pos.subarray(0, d)));
  const same = resamplePosEmbed(pos, [1, 197, d], 14);
  assertEquals(Array.from(same.data), Array.from(pos));
  assertThrows(() => resamplePosEmbed(pos.subarray(0, 11 * d), [1, 11, d], 4), Error, "10 patch positions");
});

// ---------------------------------------------------------------- pretrained

const vitTimm: ViTConfig = {
  model: "vit",
  numClasses: 1000,
  imgSize: 16,
  patchSize: 4,
  embedDim: 16,
  depth: 1,
  numHeads: 2,
  mlpRatio: 2,
};

cpuTest("loadPretrained() from a local file resamples pos_embed and replaces the head", async () => {
  const dir = await Deno.makeTempDir();
  const src = new ViT(vitTimm, { seed: 1 });
  const dst = new ViT({ ...vitTimm, imgSize: 32, numClasses: 10 }, { seed: 2 });
  try {
    const file = path.join(dir, "vit.safetensors");
    await writeSafetensors(file, await exportStateDict(src));
    const headBefore = Array.from(await dst.stateDict().get("head.weight")!.data());
    const report = await loadPretrained(dst, file);
    assertEquals(report.resampled, ["pos_embed"]);
    assertEquals(report.replaced, ["head.weight", "head.bias"]);
    assertEquals(Array.from(await dst.stateDict().get("head.weight")!.data()), headBefore);
    assertEquals(
      Array.from(await dst.stateDict().get("blocks.0.attn.qkv.weight")!.data()),
      Array.from(await src.stateDict().get("blocks.0.attn.qkv.weight")!.data()),
    );
    assertEquals(dst.stateDict().get("pos_embed")!.shape, [1, 65, 16]);
    // The same checkpoint goes into a hybrid's ViT (part inferred from pos_embed).
    const hybrid = createModel("hybrid_test", {
      vit: { embedDim: 16, depth: 1, numHeads: 2, mlpRatio: 2 },
    }) as Hybrid;
    const hr = await loadPretrained(hybrid, file);
    assertEquals([hr.resampled, hr.replaced], [["pos_embed"], ["head.weight", "head.bias"]]);
    assertEquals(
      Array.from(await hybrid.stateDict().get("vit.blocks.0.mlp.fc1.weight")!.data()),
      Array.from(await src.stateDict().get("blocks.0.mlp.fc1.weight")!.data()),
    );
    hybrid.dispose();
    // A patch-size mismatch is an error that says what to do.
    const p8 = new ViT({ ...vitTimm, patchSize: 8 });
    await assertRejects(() => loadPretrained(p8, file), Error, "create the model with patchSize 4");
    p8.dispose();
  } finally {
    src.dispose();
    dst.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

cpuTest("loadPretrained() loads a ResNet18 checkpoint into a hybrid's truncated scorer", async () => {
  const dir = await Deno.makeTempDir();
  const resnet = new ResNet18({ model: "resnet18", numClasses: 1000, width: 8, stem: "cifar", imgSize: 32 }, {
    seed: 3,
  });
  const hybrid = createModel("hybrid_test", {}, { seed: 4 }) as Hybrid; // scorer: stem + layer1 of a w8 ResNet
  try {
    const file = path.join(dir, "resnet.safetensors");
    await writeSafetensors(file, await exportStateDict(resnet));
    const report = await loadPretrained(hybrid, file);
    assert(report.loaded.includes("layer1.1.conv2.weight"), "layer1 loaded");
    assert(!report.loaded.some((n) => n.startsWith("layer2") || n.startsWith("fc")), "later stages skipped");
    assertEquals(
      Array.from(await hybrid.stateDict().get("cnn.layer1.0.bn1.running_var")!.data()),
      Array.from(await resnet.stateDict().get("layer1.0.bn1.running_var")!.data()),
    );
  } finally {
    resnet.dispose();
    hybrid.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

cpuTest(
  "fetchPretrained() downloads a pinned hub file into the cache once, and offline says where to put it",
  async () => {
    const dir = await Deno.makeTempDir();
    const body = serializeSafetensors(new Map([["w", { shape: [2], data: new Float32Array([1, 2]) }]]));
    const sha256 = await sha256Hex(body);
    const rev = "0123456789abcdef0123456789abcdef01234567";
    let hits = 0;
    const ac = new AbortController();
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen: () => {} },
      (req) => {
        hits++;
        const p = new URL(req.url).pathname;
        if (!p.endsWith(`/owner/model/resolve/${rev}/model.safetensors`) && !p.includes("/resolve/main/")) {
          return new Response("not found", { status: 404 });
        }
        return new Response(body, {
          headers: { "content-length": String(body.length), "x-repo-commit": rev },
        });
      },
    );
    try {
      const endpoint = `http://127.0.0.1:${server.addr.port}`;
      const pin = { cacheDir: dir, endpoint, silent: true, revision: rev, sha256 };
      const file = await fetchPretrained("owner/model", pin);
      assertEquals(path.basename(file), "owner--model--0123456789ab--model.safetensors");
      assertEquals(Array.from((await readSafetensors(file)).tensors.get("w")!.data), [1, 2]);
      await fetchPretrained("owner/model", pin);
      assertEquals(hits, 1);
      const e = await assertRejects(() => fetchPretrained("owner/other", pin));
      assert(
        e.message.includes("HTTP 404") &&
          e.message.includes(path.join(dir, "owner--other--0123456789ab--model.safetensors")),
        e.message,
      );
      ac.abort();
      await server.finished;
      const offline = await assertRejects(() =>
        fetchPretrained("vit_small_patch16_224", { ...pin, endpoint: "http://127.0.0.1:9" })
      );
      assert(
        offline.message.includes("Without network") && offline.message.includes("put it at"),
        offline.message,
      );
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), [
        "owner--model--0123456789ab--model.safetensors",
      ]);
      await assertRejects(
        () => fetchPretrained("no such thing"),
        Error,
        "neither a file nor a known checkpoint",
      );
    } finally {
      if (!ac.signal.aborted) ac.abort();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

cpuTest(
  "fetchPretrained() refuses unpinned downloads and a checksum mismatch, leaving no file behind",
  async () => {
    const dir = await Deno.makeTempDir();
    const body = serializeSafetensors(new Map([["w", { shape: [2], data: new Float32Array([1, 2]) }]]));
    const good = await sha256Hex(body);
    const rev = "89abcdef0123456789abcdef0123456789abcdef";
    let hits = 0;
    const ac = new AbortController();
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen: () => {} },
      () => {
        hits++;
        return new Response(body, { headers: { "x-repo-commit": rev } });
      },
    );
    try {
      const base = { cacheDir: dir, endpoint: `http://127.0.0.1:${server.addr.port}`, silent: true };
      // Unpinned (no revision or checksum, as the PRETRAINED entries are until someone checks them): refused.
      await assertRejects(() => fetchPretrained("owner/model", base), Error, "is not pinned");
      await assertRejects(
        () => fetchPretrained("resnet18", { ...base, revision: rev }),
        Error,
        '"resnet18" (timm/resnet18.a1_in1k/model.safetensors) is not pinned',
      );
      await assertRejects(
        () => fetchPretrained("owner/model", { ...base, revision: "main", sha256: good }),
        RangeError,
        'revision is "main"; expected a hub commit',
      );
      await assertRejects(
        () => fetchPretrained("owner/model", { ...base, revision: rev, sha256: "abc" }),
        RangeError,
        'sha256 is "abc"; expected 64 hex digits',
      );
      assertEquals(hits, 0);
      // A download whose bytes do not match the pin: a clear error, and nothing in the cache.
      const bad = "0".repeat(64);
      await assertRejects(
        () => fetchPretrained("owner/model", { ...base, revision: rev, sha256: bad }),
        Error,
        `has SHA-256 ${good}, expected ${bad} (the pin for owner/model); the download was deleted`,
      );
      assertEquals(hits, 1);
      assertEquals([...Deno.readDirSync(dir)], []);
      // The right pin downloads; a cached file that no longer matches is reported, not used.
      const file = await fetchPretrained("owner/model", {
        ...base,
        revision: rev,
        sha256: good.toUpperCase(),
      });
      Deno.writeFileSync(file, new Uint8Array([1, 2, 3]));
      await assertRejects(
        () => fetchPretrained("owner/model", { ...base, revision: rev, sha256: good }),
        Error,
        "the cached file",
      );
      // A local path is checked when a checksum is given.
      await assertRejects(
        () => fetchPretrained(file, { sha256: good }),
        Error,
        `the file ${file} has SHA-256`,
      );
      // allowUnpinned takes "main" and says how to pin what it got.
      const warn = console.warn;
      const said: string[] = [];
      console.warn = (m: string) => said.push(m);
      try {
        const f = await fetchPretrained("owner/other", { ...base, allowUnpinned: true });
        assertEquals(path.basename(f), "owner--other--main--model.safetensors");
      } finally {
        console.warn = warn;
      }
      assert(said.some((m) => m.includes(`revision: "${rev}", sha256: "${good}"`)), said.join("\n"));
    } finally {
      ac.abort();
      await server.finished;
      await Deno.remove(dir, { recursive: true });
    }
  },
);
