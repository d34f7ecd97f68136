/**
 * Input checks shared by the metric functions (internal).
 *
 * @module
 */

/** Throws unless `a` is a non-empty array-like of finite numbers. */
export function checkNumbers(fn: string, arg: string, a: ArrayLike<number>, allowEmpty = false): void {
  if (a === null || typeof a !== "object" || typeof a.length !== "number") {
    throw new TypeError(`${fn}: ${arg} must be an array of numbers, got ${String(a)}`);
  }
  if (!allowEmpty && a.length === 0) {
    throw new RangeError(`${fn}: ${arg} is empty; expected at least one value`);
  }
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      throw new RangeError(`${fn}: ${arg}[${i}] is ${a[i]}; expected a finite number`);
    }
  }
}

/** Throws unless every value of `a` is an integer class index in [0, numClasses). */
export function checkLabels(fn: string, arg: string, a: ArrayLike<number>, numClasses?: number): void {
  checkNumbers(fn, arg, a);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (!Number.isInteger(v) || v < 0 || (numClasses !== undefined && v >= numClasses)) {
      const range = numClasses !== undefined ? `an integer in [0, ${numClasses})` : "a non-negative integer";
      throw new RangeError(`${fn}: ${arg}[${i}] is ${v}; expected ${range}`);
    }
  }
}

/** Throws unless the two arrays have the same length. */
export function checkSameLength(
  fn: string,
  a: ArrayLike<unknown>,
  b: ArrayLike<unknown>,
  names: string,
): void {
  if (a.length !== b.length) {
    throw new RangeError(
      `${fn}: ${names} have different lengths (${a.length} vs ${b.length}); expected equal`,
    );
  }
}

/** Throws unless `rows` is a non-empty list of score rows of equal length; returns that length. */
export function checkRows(fn: string, arg: string, rows: readonly ArrayLike<number>[]): number {
  if (!Array.isArray(rows) || rows.length === 0) {
    throw new RangeError(
      `${fn}: ${arg} must be a non-empty array of score rows, got ${JSON.stringify(rows)}`,
    );
  }
  const c = rows[0].length;
  if (c < 1) throw new RangeError(`${fn}: ${arg}[0] is empty; expected one score per class`);
  rows.forEach((r, i) => {
    if (r.length !== c) {
      throw new RangeError(`${fn}: ${arg}[${i}] has ${r.length} scores; expected ${c} like ${arg}[0]`);
    }
    for (let j = 0; j < c; j++) {
      if (!Number.isFinite(r[j])) {
        throw new RangeError(`${fn}: ${arg}[${i}][${j}] is ${r[j]}; expected a finite number`);
      }
    }
  });
  return c;
}

/** Largest label + 1 over the given label arrays. */
export function inferNumClasses(...arrays: ArrayLike<number>[]): number {
  let m = -1;
  for (const a of arrays) for (let i = 0; i < a.length; i++) m = Math.max(m, a[i]);
  return m + 1;
}
