/**
 * Plots and images: plotly figure builders returning plain specs ({@link Figure}), attention and
 * selection images as PNG ({@link PngImage}), export to HTML/PNG/SVG, and {@link show}, the one
 * display call of every notebook (inline in Jupyter, files elsewhere).
 *
 * @example
 * ```ts
 * import { accuracyVsGmacsPlot, show } from "./lib/viz/mod.ts";
 * await show(accuracyVsGmacsPlot([{ model: "ViT", gmacs: 1.2, accuracy: 0.8 }]));
 * ```
 *
 * @module
 */
export * from "./figure.ts";
export * from "./plotly_js.ts";
export * from "./efficiency_plots.ts";
export * from "./training_curves_plot.ts";
export * from "./confusion_matrix_plot.ts";
export * from "./roc_plot.ts";
export * from "./colormap.ts";
export * from "./png_image.ts";
export * from "./attention.ts";
export * from "./images.ts";
export * from "./export_figure.ts";
export * from "./show.ts";
export * from "./froc_plot.ts";
