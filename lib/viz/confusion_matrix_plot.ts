/**
 * Confusion-matrix heatmap.
 *
 * @module
 */
import { Figure } from "./figure.ts";
import { baseLayout } from "./_palette.ts";

/**
 * Heatmap of a confusion matrix (`matrix[true][predicted]`, as `confusionMatrix()` returns), with the
 * count in every cell. `normalize: "true"` colours each row by recall (fraction of the true class) and
 * shows `count (pct%)`.
 *
 * @example
 * ```ts
 * confusionMatrixPlot([[5, 1], [2, 8]], { classNames: ["benign", "tumour"], normalize: "true" });
 * ```
 */
export function confusionMatrixPlot(
  matrix: readonly (readonly number[])[],
  options: { classNames?: string[]; normalize?: "true" | "none"; title?: string } = {},
): Figure {
  const n = matrix.length;
  if (n === 0 || matrix.some((r) => r.length !== n)) {
    throw new RangeError(
      `confusionMatrixPlot: matrix is ${JSON.stringify(matrix).slice(0, 60)}; expected square`,
    );
  }
  const names = options.classNames ?? matrix.map((_, i) => String(i));
  if (names.length !== n) {
    throw new RangeError(
      `confusionMatrixPlot: ${names.length} classNames for a ${n}x${n} matrix; expected ${n}`,
    );
  }
  const norm = options.normalize === "true";
  const z = matrix.map((row) => {
    const s = row.reduce((a, b) => a + b, 0);
    return row.map((v) => (norm ? (s > 0 ? v / s : 0) : v));
  });
  const text = matrix.map((row, i) =>
    row.map((v, j) => (norm ? `${v} (${(100 * z[i][j]).toFixed(0)}%)` : `${v}`))
  );
  return new Figure(
    [{
      type: "heatmap",
      x: names,
      y: names,
      z,
      text,
      texttemplate: "%{text}",
      colorscale: "Blues",
      zmin: 0,
      ...(norm ? { zmax: 1 } : {}),
      colorbar: { title: { text: norm ? "Fraction of true class" : "Count" } },
      hovertemplate: "true %{y}, predicted %{x}: %{text}<extra></extra>",
    }],
    baseLayout(options.title ?? "Confusion matrix", {
      xaxis: { title: { text: "Predicted class" }, type: "category", side: "bottom" },
      yaxis: { title: { text: "True class" }, type: "category", autorange: "reversed" },
      width: Math.max(420, 90 * n + 200),
      height: Math.max(380, 80 * n + 160),
    }),
  );
}
