// The one function of csv-stringify used here, typed without the package's own declarations: they
// reference @types/node from npm, whose newer node:assert typings break unrelated modules type-checked
// in the same program (tests/_assert.ts).

/** Serializes records (arrays of cells) to CSV text, quoting where needed. */
export function stringify(records: unknown[][], options?: { header?: boolean }): string;
