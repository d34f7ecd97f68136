/**
 * Controls on CNN tokens: a hybrid trained with strategy random or attention is the ViT on the same CNN's
 * tokens under another selection. Its CNN stays as loaded (weights and batch-norm statistics), its ViT
 * learns, and its GMACs count the stem that makes the tokens.
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { createStrategy, singleStage } from "../lib/pruning/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { assertClose } from "./_backends.ts";
import { TINY_RUN, withTinyRuns } from "./_tiny_run.ts";

const values = (m: { stateDict(): Map<string, tf.Tensor> }, prefix: string) =>
  new Map(
    [...m.stateDict()].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k, v.dataSync().slice()]),
  );

Deno.test({
  name:
    "runTraining(): random and attention controls on a CNN-token hybrid train the ViT only, on the CNN's tokens",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withTinyRuns("cnn_token_controls_", async (runTraining, root) => {
      const base = { ...TINY_RUN, model: "hybrid", override: { tokens: "cnn" } };
      const hyb = await runTraining({ ...base, keep: 0.5, out: join(root, "hybrid"), keepModel: true });
      const cnnBefore = values(hyb.model!, "cnn.");
      const vitBefore = values(hyb.model!, "vit.");
      hyb.model!.dispose();
      // The CNN's own top-k, trained as the controls are ("hard": the ViT alone on the scorer's hard top-k).
      for (
        const [strategy, location, selection] of [
          ["random", 0, undefined],
          ["attention", 1, undefined],
          ["none", 0, undefined],
          ["cnn", 0, "hard"],
        ] as const
      ) {
        const before = tf.memory().numTensors;
        const r = await runTraining({
          ...base,
          strategy,
          keep: strategy === "none" ? 1 : 0.5,
          selection,
          cnnFrom: hyb.outDir,
          initFrom: hyb.outDir, // the ViT starts as the hybrid's, so any change is this run's training
          out: join(root, `${strategy}${selection ?? ""}`),
          keepModel: true,
        });
        assert(r.completed, `${strategy}: completed`);
        const config = JSON.parse(await Deno.readTextFile(join(r.outDir, "config.json")));
        assertEquals(config.strategy, strategy);
        assertEquals(config.selection, selection ?? "topk");
        assertEquals(config.stage1Epochs, undefined, "stage 1 skipped (cnnFrom)");
        // The CNN (weights and batch-norm statistics) is the loaded one; the ViT moved.
        const cnnAfter = values(r.model!, "cnn.");
        for (const [k, v] of cnnBefore) {
          assertEquals([...cnnAfter.get(k)!], [...v], `${strategy}: ${k} unchanged`);
        }
        const moved = [...values(r.model!, "vit.")].filter(([k, v]) =>
          v.some((x, i) => x !== vitBefore.get(k)![i])
        );
        assert(moved.length > 0, `${strategy}: the ViT did not train`);
        // GMACs: the stem that makes the tokens plus the ViT on the kept tokens.
        const expect = createStrategy(strategy).gmacs(
          r.model!,
          singleStage(strategy === "none" ? 1 : 0.5, location),
        );
        assertClose([r.result.gmacs], [expect], 1e-12, `${strategy} GMACs`);
        r.model!.dispose();
        assertEquals(tf.memory().numTensors, before, `${strategy}: tensors leaked by a control run`);
      }
    });
  },
});
