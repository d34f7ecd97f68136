/**
 * ROC curves figure.
 *
 * @module
 */
import type { OneVsRestRoc, RocCurve } from "../metrics/mod.ts";
import { Figure } from "./figure.ts";
import { baseLayout, PALETTE } from "./_palette.ts";

/** A named ROC curve. */
export interface NamedRoc {
  name: string;
  curve: RocCurve;
}

/**
 * ROC curves (one line each, AUC in the legend) and the chance diagonal. Takes named curves, or the
 * result of `rocOneVsRest()` (one curve per class; `classNames` names them).
 *
 * @example
 * ```ts
 * rocPlot([{ name: "CNN-ViT", curve: rocCurve(isTumour, scores) }]);
 * rocPlot(rocOneVsRest(labels, probs), { classNames: ["a", "b", "c"] });
 * ```
 */
export function rocPlot(
  curves: readonly NamedRoc[] | OneVsRestRoc,
  options: { classNames?: string[]; title?: string } = {},
): Figure {
  const list: NamedRoc[] = Array.isArray(curves)
    ? [...curves]
    : (curves as OneVsRestRoc).curves.flatMap((c, k) =>
      c ? [{ name: options.classNames?.[k] ?? `class ${k}`, curve: c }] : []
    );
  if (list.length === 0) throw new RangeError("rocPlot: no curves; expected at least one ROC curve");
  const data: Record<string, unknown>[] = list.map((r, c) => ({
    type: "scatter",
    mode: "lines",
    name: `${r.name} (AUC ${r.curve.auc.toFixed(3)})`,
    x: r.curve.fpr,
    y: r.curve.tpr,
    line: { color: PALETTE[c % PALETTE.length], shape: "linear" },
  }));
  data.push({
    type: "scatter",
    mode: "lines",
    name: "chance",
    x: [0, 1],
    y: [0, 1],
    line: { dash: "dot", color: "#999999" },
    hoverinfo: "skip",
  });
  const title = options.title ??
    (Array.isArray(curves)
      ? "ROC"
      : `ROC one-vs-rest (macro AUC ${(curves as OneVsRestRoc).macroAuc.toFixed(3)})`);
  return new Figure(
    data,
    baseLayout(title, {
      xaxis: { title: { text: "False positive rate" }, range: [0, 1], constrain: "domain" },
      yaxis: { title: { text: "True positive rate" }, range: [0, 1.02], scaleanchor: "x" },
      width: 560,
      height: 520,
    }),
  );
}
