/**
 * Seeded, class-stratified index selection: train/validation splits and balanced subsets.
 *
 * @module
 */
import { Rng } from "../util/mod.ts";

function byClass(labels: ArrayLike<number>, numClasses: number, rng: Rng): Int32Array[] {
  const lists: number[][] = Array.from({ length: numClasses }, () => []);
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (!(l >= 0 && l < numClasses)) {
      throw new Error(`label ${l} at index ${i} is not in 0..${numClasses - 1}`);
    }
    lists[l].push(i);
  }
  return lists.map((l) => rng.shuffle(Int32Array.from(l)));
}

/**
 * Splits indices into train and validation parts, stratified by class, with a fixed seed: the same
 * labels, fraction and seed always give the same split. Both parts come back sorted.
 *
 * @example
 * ```ts
 * const { train, val } = stratifiedSplit(labels, 10, 0.1, 0); // 90% / 10% of every class
 * ```
 */
export function stratifiedSplit(
  labels: ArrayLike<number>,
  numClasses: number,
  valFraction: number,
  seed = 0,
): { train: Int32Array; val: Int32Array } {
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new Error(`valFraction must be in [0, 1), got ${valFraction}`);
  }
  const train: number[] = [], val: number[] = [];
  for (const list of byClass(labels, numClasses, new Rng(seed))) {
    const k = Math.round(list.length * valFraction);
    for (let i = 0; i < list.length; i++) (i < k ? val : train).push(list[i]);
  }
  const sort = (a: number[]) => Int32Array.from(a).sort();
  return { train: sort(train), val: sort(val) };
}

/**
 * Picks `n` indices as evenly over the classes as the data allows (seeded), sorted.
 *
 * @example
 * ```ts
 * const idx = balancedSubset(labels, 10, 1000, 0); // 100 per class when available
 * ```
 */
export function balancedSubset(
  labels: ArrayLike<number>,
  numClasses: number,
  n: number,
  seed = 0,
): Int32Array {
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`subset size must be a positive integer, got ${n}`);
  if (n > labels.length) {
    throw new Error(`subset size ${n} is larger than the dataset (${labels.length} images)`);
  }
  const lists = byClass(labels, numClasses, new Rng(seed));
  const out: number[] = [];
  const pos = new Array<number>(numClasses).fill(0);
  // Round robin over classes until n are taken.
  while (out.length < n) {
    for (let c = 0; c < numClasses && out.length < n; c++) {
      if (pos[c] < lists[c].length) out.push(lists[c][pos[c]++]);
    }
  }
  return Int32Array.from(out).sort();
}
