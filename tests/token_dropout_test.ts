import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { assertNoLeak, forEachBackend, seededRandom } from "./_backends.ts";
import { createModel } from "../lib/models/mod.ts";
import type { ViT } from "../lib/models/vit.ts";
import { drawKeptIndices, keepCount, tokenDropoutIndices } from "../lib/pruning/mod.ts";
import { crossEntropy } from "../lib/train/mod.ts";
import { Rng } from "../lib/util/mod.ts";

Deno.test("drawKeptIndices() keeps a fraction within [min, max], distinct ascending indices per image", () => {
  const rng = new Rng(7);
  const n = 64;
  const ks = new Set<number>();
  for (let t = 0; t < 200; t++) {
    const { k, indices } = drawKeptIndices(rng, 3, n, { min: 0.5, max: 0.9 });
    ks.add(k);
    assert(k >= keepCount(n, 0.5) && k <= keepCount(n, 0.9), `k ${k}`);
    assertEquals(indices!.length, 3 * k);
    for (let b = 0; b < 3; b++) {
      const row = Array.from(indices!.subarray(b * k, (b + 1) * k));
      for (let i = 0; i < k; i++) {
        assert(row[i] >= 0 && row[i] < n);
        if (i > 0) assert(row[i] > row[i - 1], `row ${row} not strictly ascending`);
      }
    }
  }
  // The ratio really varies across batches (uniform draw), covering both ends of the range closely.
  assert(Math.min(...ks) <= 34 && Math.max(...ks) >= 55, `k range ${Math.min(...ks)}..${Math.max(...ks)}`);
});

Deno.test("drawKeptIndices() is deterministic under a seed and differs across images", () => {
  const a = drawKeptIndices(new Rng(3), 4, 64, { min: 0.5, max: 0.5 });
  const b = drawKeptIndices(new Rng(3), 4, 64, { min: 0.5, max: 0.5 });
  const c = drawKeptIndices(new Rng(4), 4, 64, { min: 0.5, max: 0.5 });
  assertEquals(a.k, 32);
  assertEquals(Array.from(a.indices!), Array.from(b.indices!));
  assert(Array.from(a.indices!).join() !== Array.from(c.indices!).join());
  const rows = [0, 1, 2, 3].map((i) => Array.from(a.indices!.subarray(i * 32, (i + 1) * 32)).join());
  assertEquals(new Set(rows).size, 4);
});

Deno.test("drawKeptIndices() at ratio 1 keeps every token (no indices) and refuses a bad range", () => {
  assertEquals(drawKeptIndices(new Rng(0), 2, 64, { min: 1, max: 1 }), { k: 64 });
  assertThrows(() => drawKeptIndices(new Rng(0), 2, 64, { min: 0, max: 1 }), Error, '{"min":0,"max":1}');
  assertThrows(() => drawKeptIndices(new Rng(0), 2, 64, { min: 0.8, max: 0.5 }), Error, "min <= max");
});

forEachBackend(
  "token dropout: ratio 1 equals the plain forward; a training step leaks no tensors",
  async (tf) => {
    const vit = createModel("vit_test", { numClasses: 4 }, { seed: 1 }) as unknown as ViT;
    const x = tf.tensor4d(seededRandom(2 * 32 * 32 * 3, 5), [2, 32, 32, 3]);
    const y = tf.tensor1d([1, 3], "int32");
    const full = vit.forward(x).logits;
    const keep = tokenDropoutIndices(new Rng(0), 2, vit.numPatches, { min: 1, max: 1 });
    assertEquals(keep, undefined);
    const same = vit.forward(x, { keepIndices: keep }).logits;
    assertEquals(Array.from(await same.data()), Array.from(await full.data()));
    await assertNoLeak("token-dropout step", () => {
      const rng = new Rng(2);
      const { value, grads } = tf.variableGrads(() => {
        const k = tokenDropoutIndices(rng, 2, vit.numPatches, { min: 0.5, max: 0.5 });
        const out = vit.forward(x, { training: true, keepIndices: k, returnAux: true });
        assertEquals(out.aux!.tokensPerBlock![0], 1 + vit.numPatches / 2);
        return crossEntropy(out.logits, y);
      }, [...vit.trainableVariables().values()]);
      assert(Number.isFinite(value.dataSync()[0]));
      tf.dispose([value, ...Object.values(grads)]);
    });
    tf.dispose([x, y, full, same]);
    vit.dispose();
  },
);

Deno.test("resolveRunOptions() takes tokenDropout as a number or a range, for a plain ViT only", async () => {
  const { resolveRunOptions } = await import("../lib/experiment/mod.ts");
  assertEquals(
    (await resolveRunOptions({ model: "vit", profile: "quick", tokenDropout: 0.5 })).tokenDropout,
    {
      min: 0.5,
      max: 1,
    },
  );
  assertEquals(
    (await resolveRunOptions({ model: "vit", profile: "quick", tokenDropout: { min: 0.6, max: 0.8 } }))
      .tokenDropout,
    { min: 0.6, max: 0.8 },
  );
  const bad = async (o: Record<string, unknown>, msg: string) => {
    let err: Error | undefined;
    try {
      await resolveRunOptions({ model: "vit", profile: "quick", ...o });
    } catch (e) {
      err = e as Error;
    }
    assert(err?.message.includes(msg), `${JSON.stringify(o)}: ${err?.message}`);
  };
  await bad({ tokenDropout: 1.5 }, '{"min":1.5,"max":1}');
  await bad({ model: "resnet18", tokenDropout: 0.5 }, 'tokenDropout needs model "vit"');
  await bad({ strategy: "random", tokenDropout: 0.5 }, 'strategy "random"');
});
