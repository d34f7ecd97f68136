/**
 * CAMELYON16 figures: lesion-level FROC curves, and slide metrics against the fraction of patches read at high
 * resolution.
 *
 * @module
 */
import { FROC_FP_RATES, type FrocResult } from "../metrics/mod.ts";
import { Figure } from "./figure.ts";
import { baseLayout, groupBy, PALETTE } from "./_palette.ts";

/**
 * FROC curves (sensitivity against mean false positives per slide, log x axis from 1/8 to 16), with the
 * challenge's evaluation points marked and the FROC score in the legend.
 *
 * @example
 * ```ts
 * frocPlot([{ name: "ViT, all patches", curve: froc(slides) }]);
 * ```
 */
export function frocPlot(
  curves: readonly { name: string; curve: FrocResult }[],
  title = "Lesion FROC",
): Figure {
  if (curves.length === 0) throw new RangeError("frocPlot: no curves");
  const data: Record<string, unknown>[] = [];
  curves.forEach((c, k) => {
    const color = PALETTE[k % PALETTE.length];
    data.push({
      type: "scatter",
      mode: "lines",
      name: `${c.name} (FROC ${c.curve.score.toFixed(3)})`,
      x: c.curve.fpsPerSlide.map((v) => Math.max(v, 1 / 16)),
      y: c.curve.sensitivity,
      line: { color, shape: "hv" },
      legendgroup: c.name,
    }, {
      type: "scatter",
      mode: "markers",
      x: [...FROC_FP_RATES],
      y: c.curve.sensitivityAt,
      marker: { color, size: 7 },
      showlegend: false,
      legendgroup: c.name,
    });
  });
  return new Figure(
    data,
    baseLayout(title, {
      xaxis: {
        title: { text: "Mean false positives per slide" },
        type: "log",
        range: [Math.log10(1 / 8), Math.log10(16)],
      },
      yaxis: { title: { text: "Lesion sensitivity" }, range: [0, 1.02] },
      width: 640,
      height: 460,
    }),
  );
}

/** One point of {@link readFractionPlot}. */
export interface ReadFractionPoint {
  /** Series name, e.g. `"CNN top-k"`, `"random"`. */
  method: string;
  /** Fraction of tissue patches read at high resolution. */
  fraction: number;
  auc: number;
  froc: number;
  seconds: number;
}

/**
 * Slide AUC (solid) and FROC (dashed) against the fraction of patches read at high resolution, one colour per
 * method; hover shows the wall time.
 *
 * @example
 * ```ts
 * readFractionPlot(rows.map((r) => ({ method: r.mode, fraction: r.fraction, auc: r.auc, froc: r.froc, seconds: r.seconds })));
 * ```
 */
export function readFractionPlot(
  points: readonly ReadFractionPoint[],
  title = "Metrics vs patches read",
): Figure {
  if (points.length === 0) throw new RangeError("readFractionPlot: no points");
  const data: Record<string, unknown>[] = [];
  let k = 0;
  for (const [method, pts] of groupBy(points, (p) => p.method)) {
    const s = [...pts].sort((a, b) => a.fraction - b.fraction);
    const color = PALETTE[k++ % PALETTE.length];
    const text = s.map((p) => `${p.seconds.toFixed(1)} s`);
    data.push(
      {
        type: "scatter",
        mode: "lines+markers",
        name: `${method}: AUC`,
        x: s.map((p) => p.fraction),
        y: s.map((p) => p.auc),
        text,
        line: { color },
      },
      {
        type: "scatter",
        mode: "lines+markers",
        name: `${method}: FROC`,
        x: s.map((p) => p.fraction),
        y: s.map((p) => p.froc),
        text,
        line: { color, dash: "dash" },
      },
    );
  }
  return new Figure(
    data,
    baseLayout(title, {
      xaxis: { title: { text: "Fraction of tissue patches read at high resolution" }, range: [-0.02, 1.02] },
      yaxis: { title: { text: "Slide AUC / FROC score" }, range: [0, 1.02] },
      width: 680,
      height: 460,
    }),
  );
}
