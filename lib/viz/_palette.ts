/** Shared plot styling (internal). @module */

/** Colour-blind friendly categorical palette (Okabe-Ito). */
export const PALETTE = [
  "#0072B2",
  "#E69F00",
  "#009E73",
  "#D55E00",
  "#CC79A7",
  "#56B4E9",
  "#F0E442",
  "#000000",
];

/** Base layout every figure starts from. */
export function baseLayout(
  title: string | undefined,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const lines = title ? wrapTitle(title) : [];
  return {
    ...(title ? { title: { text: lines.join("<br>") } } : {}),
    font: { family: "DejaVu Sans, Arial, sans-serif", size: 13 },
    legend: { orientation: "v" },
    margin: { l: 70, r: 30, t: title ? 40 + 20 * lines.length : 30, b: 60 },
    ...extra,
  };
}

/**
 * A figure title cut into lines of at most `width` characters at spaces (plotly does not wrap titles, and a
 * long one was cut off at the figure's edge). A word longer than `width` gets a line of its own.
 *
 * @example
 * ```ts
 * wrapTitle("Accuracy vs GMACs per image (fashion-mnist, mean of 3 seeds)", 40);
 * // ["Accuracy vs GMACs per image", "(fashion-mnist, mean of 3 seeds)"]
 * ```
 */
export function wrapTitle(title: string, width = 80): string[] {
  const lines: string[] = [];
  let cur = "";
  for (const word of title.split(/\s+/).filter(Boolean)) {
    if (cur && cur.length + 1 + word.length > width) {
      lines.push(cur);
      cur = word;
    } else {
      cur = cur ? `${cur} ${word}` : word;
    }
  }
  if (cur) lines.push(cur);
  return lines;
}

/** Groups items by a key, keeping first-seen order. */
export function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) {
    const k = key(it);
    if (!m.has(k)) m.set(k, []);
    m.get(k)!.push(it);
  }
  return m;
}

/** Throws unless `v` is finite. */
export function finite(fn: string, what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new RangeError(`${fn}: ${what} is ${JSON.stringify(v)}; expected a finite number`);
  }
  return v;
}
