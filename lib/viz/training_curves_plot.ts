/**
 * Training curves: loss, accuracy and learning rate in three stacked panels.
 *
 * @module
 */
import { Figure } from "./figure.ts";
import { baseLayout, PALETTE } from "./_palette.ts";

/** One logged step or epoch: the x key (`epoch` or `step`) and any numeric series. */
export type HistoryRecord = Record<string, number | undefined>;

/** Which panel a series goes to: 1 = loss, 2 = accuracy-like, 3 = learning rate, 0 = skip. */
function panelOf(key: string): number {
  const k = key.toLowerCase();
  if (k === "lr" || k.includes("learning") || k.endsWith("_lr") || k.endsWith("lr")) return 3;
  if (k.includes("loss")) return 1;
  if (k.includes("acc") || k.includes("f1") || k.includes("auc")) return 2;
  return 0;
}

/**
 * Training curves from a list of records, e.g. `{epoch: 1, trainLoss: 0.9, valLoss: 1.0, valAcc: 0.6, lr: 1e-3}`.
 * Series whose names contain "loss" go to the top panel, "acc"/"f1"/"auc" to the middle one (plotted as
 * given), "lr" to the bottom (log scale). Missing values leave gaps.
 *
 * @example
 * ```ts
 * trainingCurvesPlot([{ epoch: 1, trainLoss: 1.2, valAcc: 0.5, lr: 1e-3 }, { epoch: 2, trainLoss: 0.8, valAcc: 0.7, lr: 5e-4 }]);
 * ```
 */
export function trainingCurvesPlot(
  history: readonly HistoryRecord[],
  options: { x?: string; title?: string } = {},
): Figure {
  if (!Array.isArray(history) || history.length === 0) {
    throw new RangeError(
      "trainingCurvesPlot: history is empty; expected records like {epoch, trainLoss, lr}",
    );
  }
  const xKey = options.x ?? (history[0].epoch !== undefined ? "epoch" : "step");
  if (history.some((h) => typeof h[xKey] !== "number")) {
    throw new RangeError(`trainingCurvesPlot: some records lack a numeric "${xKey}"; pass options.x`);
  }
  const keys: string[] = [];
  for (const h of history) for (const k of Object.keys(h)) if (k !== xKey && !keys.includes(k)) keys.push(k);
  const series = keys.filter((k) => panelOf(k) > 0);
  if (series.length === 0) {
    throw new RangeError(`trainingCurvesPlot: no loss/accuracy/lr series among ${JSON.stringify(keys)}`);
  }
  const x = history.map((h) => h[xKey]);
  const data = series.map((k, c) => {
    const p = panelOf(k);
    return {
      type: "scatter",
      mode: history.length > 30 ? "lines" : "lines+markers",
      name: k,
      x,
      y: history.map((h) => (typeof h[k] === "number" ? h[k] : null)),
      xaxis: p === 1 ? "x" : `x${p}`,
      yaxis: p === 1 ? "y" : `y${p}`,
      line: { color: PALETTE[c % PALETTE.length] },
      connectgaps: false,
    };
  });
  const xTitle = { text: xKey };
  return new Figure(
    data,
    baseLayout(options.title ?? "Training curves", {
      height: 700,
      grid: { rows: 3, columns: 1, pattern: "independent", roworder: "top to bottom" },
      xaxis: { matches: "x3", showticklabels: false },
      xaxis2: { matches: "x3", showticklabels: false },
      xaxis3: { title: xTitle },
      yaxis: { title: { text: "Loss" } },
      yaxis2: { title: { text: "Accuracy / F1" } },
      yaxis3: { title: { text: "Learning rate" }, type: "log", exponentformat: "power" },
    }),
  );
}
