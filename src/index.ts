/** The public API of syncctl: what spec files import. */
export { defineSync } from './spec/define-sync.ts';
export { sql, env } from './spec/sql-fragment.ts';
export type { SqlFragment, EnvRef } from './spec/sql-fragment.ts';
export type { SyncSpecInput, SyncSpec, TableSpec, ConflictRule } from './spec/schema.ts';
