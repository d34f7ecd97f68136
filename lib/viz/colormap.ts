/**
 * Colour maps for heatmaps (value in [0, 1] → RGB bytes).
 *
 * @module
 */

/** Names of the built-in colour maps. */
export type ColormapName = "viridis" | "inferno" | "jet" | "gray";

const STOPS: Record<"viridis" | "inferno", string[]> = {
  viridis: [
    "#440154",
    "#472d7b",
    "#3b528b",
    "#2c728e",
    "#21918c",
    "#28ae80",
    "#5ec962",
    "#addc30",
    "#fde725",
  ],
  inferno: [
    "#000004",
    "#1f0c48",
    "#550f6d",
    "#88226a",
    "#ba3655",
    "#e35933",
    "#f98e09",
    "#f9cb35",
    "#fcffa4",
  ],
};

const parsed = new Map<string, number[][]>();
function stops(name: "viridis" | "inferno"): number[][] {
  if (!parsed.has(name)) {
    parsed.set(name, STOPS[name].map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16))));
  }
  return parsed.get(name)!;
}

/**
 * RGB bytes of `value` (clamped to [0, 1]) in the colour map `name`.
 *
 * @example
 * ```ts
 * colormap(0, "viridis"); // [68, 1, 84]
 * ```
 */
export function colormap(value: number, name: ColormapName = "viridis"): [number, number, number] {
  const v = Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : 0;
  switch (name) {
    case "gray": {
      const g = Math.round(255 * v);
      return [g, g, g];
    }
    case "jet": {
      const f = (x: number) => Math.round(255 * Math.min(1, Math.max(0, x)));
      return [f(1.5 - Math.abs(4 * v - 3)), f(1.5 - Math.abs(4 * v - 2)), f(1.5 - Math.abs(4 * v - 1))];
    }
    case "viridis":
    case "inferno": {
      const s = stops(name);
      const pos = v * (s.length - 1), i = Math.min(s.length - 2, Math.floor(pos)), t = pos - i;
      return [0, 1, 2].map((c) => Math.round(s[i][c] + (s[i + 1][c] - s[i][c]) * t)) as [
        number,
        number,
        number,
      ];
    }
    default:
      throw new RangeError(
        `colormap: name is ${JSON.stringify(name)}; expected viridis, inferno, jet or gray`,
      );
  }
}
