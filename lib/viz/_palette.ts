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
  return {
    ...(title ? { title: { text: title } } : {}),
    font: { family: "DejaVu Sans, Arial, sans-serif", size: 13 },
    legend: { orientation: "v" },
    margin: { l: 70, r: 30, t: title ? 60 : 30, b: 60 },
    ...extra,
  };
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
