/**
 * Accuracy-efficiency figures: accuracy vs GMACs and vs measured img/s with the Pareto front, accuracy vs
 * keep ratio per strategy, measured throughput vs keep ratio.
 *
 * @module
 */
import { Figure } from "./figure.ts";
import { baseLayout, finite, groupBy, PALETTE } from "./_palette.ts";

/** One model/strategy/keep-ratio result for {@link accuracyVsGmacsPlot}. */
export interface AccuracyGmacsPoint {
  /** Model name, e.g. "ViT-S", "CNN-ViT". */
  model: string;
  /** Pruning strategy, e.g. "cnn-topk", "random", "evit"; one trace per model + strategy. */
  strategy?: string;
  /** Analytic GMACs per image. */
  gmacs: number;
  /** Accuracy as a fraction in [0, 1] (plotted in percent). */
  accuracy: number;
  /** Optional 95% interval of the accuracy (fractions). */
  ci?: [number, number];
  /** Optional keep ratio, shown next to the marker. */
  keepRatio?: number;
}

/**
 * Indices of the Pareto-optimal points: no other point has fewer-or-equal GMACs and higher-or-equal
 * accuracy with one of them strictly better. Sorted by GMACs.
 *
 * @example
 * ```ts
 * paretoFront([{ gmacs: 1, accuracy: 0.8 }, { gmacs: 2, accuracy: 0.7 }, { gmacs: 3, accuracy: 0.9 }]); // [0, 2]
 * ```
 */
export function paretoFront(points: readonly { gmacs: number; accuracy: number }[]): number[] {
  const order = points.map((_, i) => i).sort((a, b) =>
    points[a].gmacs - points[b].gmacs || points[b].accuracy - points[a].accuracy
  );
  const front: number[] = [];
  let best = -Infinity;
  for (const i of order) {
    if (points[i].accuracy > best) {
      front.push(i);
      best = points[i].accuracy;
    }
  }
  return front;
}

/** Above this many points with a keep ratio, {@link accuracyVsGmacsPlot} shows keep ratios on hover only. */
export const MAX_POINT_LABELS = 12;

/**
 * Accuracy (%) vs GMACs per image, one marker trace per model/strategy (error bars from `ci`,
 * keep ratios as labels) and the Pareto front over all points as a dashed line.
 *
 * @example
 * ```ts
 * accuracyVsGmacsPlot([{ model: "ViT", gmacs: 4.6, accuracy: 0.81 }, { model: "CNN-ViT", strategy: "cnn", gmacs: 2.4, accuracy: 0.8, keepRatio: 0.5 }]);
 * ```
 */
export function accuracyVsGmacsPlot(
  points: readonly AccuracyGmacsPoint[],
  options: AccuracyPlotOptions = {},
): Figure {
  return accuracyVsCostPlot("accuracyVsGmacsPlot", points, {
    ...options,
    x: (p) => p.gmacs,
    field: "gmacs",
    axis: "GMACs per image",
    hover: "%{x:.4f} GMACs",
    lowerIsBetter: true,
    title: options.title ?? "Accuracy vs compute",
  });
}

/** Options of {@link accuracyVsGmacsPlot} and {@link accuracyVsThroughputPlot}. */
export interface AccuracyPlotOptions {
  title?: string;
  /**
   * Write each point's keep ratio next to it (default: only when at most {@link MAX_POINT_LABELS} points
   * have one; a crowded figure, where controls sit at the same GMACs by construction, shows the keep
   * ratio on hover instead).
   */
  labels?: boolean;
}

/**
 * Accuracy (%) vs measured inference speed (images/s, higher is better), drawn as {@link accuracyVsGmacsPlot}
 * draws GMACs: one trace per model/strategy and the Pareto front (no other point both faster and more
 * accurate). Points need `imgPerS`; the GMACs stay in the hover text.
 *
 * @example
 * ```ts
 * accuracyVsThroughputPlot([{ model: "ViT", gmacs: 4.6, imgPerS: 900, accuracy: 0.81 }]);
 * ```
 */
export function accuracyVsThroughputPlot(
  points: readonly (AccuracyGmacsPoint & { imgPerS: number })[],
  options: AccuracyPlotOptions = {},
): Figure {
  return accuracyVsCostPlot("accuracyVsThroughputPlot", points, {
    ...options,
    x: (p) => (p as AccuracyGmacsPoint & { imgPerS: number }).imgPerS,
    field: "imgPerS",
    axis: "Measured inference speed (images/s)",
    hover: "%{x:.0f} img/s",
    lowerIsBetter: false,
    title: options.title ?? "Accuracy vs measured speed",
  });
}

function accuracyVsCostPlot(
  fn: string,
  points: readonly AccuracyGmacsPoint[],
  options: AccuracyPlotOptions & {
    x: (p: AccuracyGmacsPoint) => number;
    field: string;
    axis: string;
    hover: string;
    lowerIsBetter: boolean;
    title: string;
  },
): Figure {
  if (points.length === 0) {
    throw new RangeError(`${fn}: points is empty; expected at least one result`);
  }
  points.forEach((p, i) => {
    finite(fn, `points[${i}].${options.field}`, options.x(p));
    finite(fn, `points[${i}].accuracy`, p.accuracy);
  });
  const xOf = options.x;
  const groups = groupBy(points, (p) => (p.strategy ? `${p.model} · ${p.strategy}` : p.model));
  const labels = options.labels ?? points.filter((p) => p.keepRatio !== undefined).length <= MAX_POINT_LABELS;
  const data: Record<string, unknown>[] = [];
  // Past the palette's length the colours repeat, so the marker shape changes with each round of colours.
  const symbols = ["circle", "diamond", "square", "triangle-up"];
  let c = 0;
  for (const [name, unsorted] of groups) {
    const ps = [...unsorted].sort((a, b) => xOf(a) - xOf(b));
    const hasCi = ps.some((p) => p.ci);
    const symbol = symbols[Math.floor(c / PALETTE.length) % symbols.length];
    const color = PALETTE[c++ % PALETTE.length];
    data.push({
      type: "scatter",
      // A group's points (one model at several keep ratios) are joined in GMACs order, so each method reads
      // as one curve; a thin line, as the points are what was measured.
      mode: (ps.length > 1 ? "lines+markers" : "markers") + (labels ? "+text" : ""),
      name,
      x: ps.map(xOf),
      y: ps.map((p) => 100 * p.accuracy),
      text: ps.map((p) => (p.keepRatio !== undefined ? `r=${p.keepRatio}` : "")),
      textposition: "top center",
      marker: { size: 10, color, symbol },
      line: { width: 1, color },
      ...(hasCi
        ? {
          error_y: {
            type: "data",
            symmetric: false,
            array: ps.map((p) => (p.ci ? 100 * (p.ci[1] - p.accuracy) : 0)),
            arrayminus: ps.map((p) => (p.ci ? 100 * (p.accuracy - p.ci[0]) : 0)),
          },
        }
        : {}),
      hovertemplate: `${options.hover}, %{y:.2f}% %{text}<extra>${name}</extra>`,
    });
  }
  // Higher speed is better: the front of (−speed, accuracy) is the front of (speed, accuracy).
  const sign = options.lowerIsBetter ? 1 : -1;
  const front = paretoFront(points.map((p) => ({ gmacs: sign * xOf(p), accuracy: p.accuracy })));
  if (!options.lowerIsBetter) front.reverse();
  data.push({
    type: "scatter",
    mode: "lines",
    name: "Pareto front",
    x: front.map((i) => xOf(points[i])),
    y: front.map((i) => 100 * points[i].accuracy),
    line: { dash: "dash", color: "#555555", shape: options.lowerIsBetter ? "hv" : "vh" },
    hoverinfo: "skip",
  });
  return new Figure(
    data,
    baseLayout(options.title, {
      xaxis: { title: { text: options.axis }, rangemode: "tozero" },
      yaxis: { title: { text: "Top-1 accuracy (%)" } },
    }),
  );
}

/** One strategy/keep-ratio result for {@link accuracyVsKeepRatioPlot}. */
export interface KeepRatioPoint {
  /** Pruning strategy (one line each). */
  strategy: string;
  /** Fraction of patch tokens kept, in (0, 1]. */
  keepRatio: number;
  /** Accuracy as a fraction (plotted in percent). */
  accuracy: number;
  /** Standard deviation over seeds (fraction), drawn as error bars. */
  std?: number;
}

/**
 * Accuracy (%) vs keep ratio, one line per strategy (sorted by keep ratio, ± std error bars).
 *
 * @example
 * ```ts
 * accuracyVsKeepRatioPlot([{ strategy: "cnn", keepRatio: 0.5, accuracy: 0.8 }, { strategy: "random", keepRatio: 0.5, accuracy: 0.7 }]);
 * ```
 */
export function accuracyVsKeepRatioPlot(
  points: readonly KeepRatioPoint[],
  options: { title?: string } = {},
): Figure {
  if (points.length === 0) throw new RangeError("accuracyVsKeepRatioPlot: points is empty; expected results");
  points.forEach((p, i) => {
    finite("accuracyVsKeepRatioPlot", `points[${i}].keepRatio`, p.keepRatio);
    finite("accuracyVsKeepRatioPlot", `points[${i}].accuracy`, p.accuracy);
  });
  const data = [...groupBy(points, (p) => p.strategy)].map(([name, ps], c) => {
    const s = [...ps].sort((a, b) => a.keepRatio - b.keepRatio);
    return {
      type: "scatter",
      mode: "lines+markers",
      name,
      x: s.map((p) => p.keepRatio),
      y: s.map((p) => 100 * p.accuracy),
      line: { color: PALETTE[c % PALETTE.length] },
      ...(s.some((p) => p.std !== undefined)
        ? { error_y: { type: "data", array: s.map((p) => 100 * (p.std ?? 0)), visible: true } }
        : {}),
    };
  });
  return new Figure(
    data,
    baseLayout(options.title ?? "Accuracy vs keep ratio", {
      xaxis: { title: { text: "Keep ratio (fraction of patch tokens kept)" }, range: [0, 1.05] },
      yaxis: { title: { text: "Top-1 accuracy (%)" } },
    }),
  );
}

/** One measured throughput for {@link throughputVsKeepRatioPlot}. */
export interface ThroughputPoint {
  /** Line name (strategy or model). */
  name: string;
  keepRatio: number;
  /** Measured images per second. */
  imagesPerSecond: number;
}

/**
 * Measured throughput vs keep ratio, one line per name. The batch size and backend are part of the
 * axis title, since throughput means nothing without them.
 *
 * @example
 * ```ts
 * throughputVsKeepRatioPlot([{ name: "CNN-ViT", keepRatio: 0.5, imagesPerSecond: 120 }], { batchSize: 32, backend: "wasm" });
 * ```
 */
export function throughputVsKeepRatioPlot(
  points: readonly ThroughputPoint[],
  options: { batchSize: number; backend: string; title?: string },
): Figure {
  if (points.length === 0) {
    throw new RangeError("throughputVsKeepRatioPlot: points is empty; expected measurements");
  }
  if (!Number.isInteger(options?.batchSize) || !options.backend) {
    throw new RangeError(
      `throughputVsKeepRatioPlot: options is ${JSON.stringify(options)}; expected {batchSize, backend}`,
    );
  }
  points.forEach((p, i) =>
    finite("throughputVsKeepRatioPlot", `points[${i}].imagesPerSecond`, p.imagesPerSecond)
  );
  const data = [...groupBy(points, (p) => p.name)].map(([name, ps], c) => {
    const s = [...ps].sort((a, b) => a.keepRatio - b.keepRatio);
    return {
      type: "scatter",
      mode: "lines+markers",
      name,
      x: s.map((p) => p.keepRatio),
      y: s.map((p) => p.imagesPerSecond),
      line: { color: PALETTE[c % PALETTE.length] },
    };
  });
  return new Figure(
    data,
    baseLayout(options.title ?? "Throughput vs keep ratio", {
      xaxis: { title: { text: "Keep ratio (fraction of patch tokens kept)" }, range: [0, 1.05] },
      yaxis: {
        title: { text: `Throughput (img/s, batch ${options.batchSize}, ${options.backend})` },
        rangemode: "tozero",
      },
    }),
  );
}
