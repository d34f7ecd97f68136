/**
 * csv-stringify (npm) with a local type declaration, see `_csv_types.d.ts` (internal).
 *
 * @module
 */
// @ts-types="./_csv_types.d.ts"
import { stringify } from "csv-stringify/sync";

export { stringify };
