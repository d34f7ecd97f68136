/**
 * Assertions with the names of `@std/assert` (JSR is not reachable here), built on `node:assert`.
 * Switching to `jsr:@std/assert` later is a one-line change in this file.
 */
import assert from "node:assert/strict";

/** Deep strict equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.deepStrictEqual(actual, expected, msg as string);
}
/** Deep strict inequality. */
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.notDeepStrictEqual(actual, expected, msg as string);
}
/** Truthiness. */
export function assert_(cond: unknown, msg?: string): asserts cond {
  assert.ok(cond, msg as string);
}
export { assert_ as assert };
/** `|actual - expected| <= tolerance`. */
export function assertAlmostEquals(actual: number, expected: number, tolerance = 1e-7, msg?: string): void {
  if (!(Math.abs(actual - expected) <= tolerance)) {
    throw new Error(msg ?? `expected ${actual} to be within ${tolerance} of ${expected}`);
  }
}
/** `fn` throws an error of class `cls` whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  cls: new (...a: never[]) => Error = Error,
  includes?: string,
): Error {
  try {
    fn();
  } catch (e) {
    checkError(e, cls, includes);
    return e as Error;
  }
  throw new Error(`expected the function to throw${includes ? ` an error including "${includes}"` : ""}`);
}
/** `fn` rejects with an error of class `cls` whose message includes `includes`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls: new (...a: never[]) => Error = Error,
  includes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    checkError(e, cls, includes);
    return e as Error;
  }
  throw new Error(
    `expected the promise to reject${includes ? ` with an error including "${includes}"` : ""}`,
  );
}
function checkError(e: unknown, cls: new (...a: never[]) => Error, includes?: string): void {
  if (!(e instanceof cls)) throw new Error(`expected ${cls.name}, got ${String(e)}`);
  if (includes !== undefined && !e.message.includes(includes)) {
    throw new Error(`expected the error message to include "${includes}", got "${e.message}"`);
  }
}
