/**
 * The in-memory cache of decoded dataset files shared by the loaders, so that loading the train and
 * the validation split (or loading twice in a notebook) decodes the files once.
 *
 * @module
 */

const entries = new Map<string, { key: string; value: unknown }>();

/**
 * Returns the cached value for `id` when its `key` (e.g. sizes and modification times) is unchanged,
 * otherwise computes, stores and returns it.
 *
 * @example
 * ```ts
 * const data = cached("cifar:/data/test_batch.bin", "30730000:1700000000", () => decode());
 * ```
 */
export function cached<T>(id: string, key: string, compute: () => T): T {
  const hit = entries.get(id);
  if (hit && hit.key === key) return hit.value as T;
  const value = compute();
  entries.set(id, { key, value });
  return value;
}

/**
 * Drops every decoded dataset kept in memory (the next load reads the files again).
 *
 * @example
 * ```ts
 * clearDatasetCache();
 * ```
 */
export function clearDatasetCache(): void {
  entries.clear();
}
