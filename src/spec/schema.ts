/**
 * The spec contract, as zod schemas: the single source of truth for the spec's TypeScript types.
 *
 * Glossary
 * - sync: one source database, one target database, a set of tables; names the publication
 *   (`syncctl_<name>`), the slot (`syncctl_<name>`) and, for native tables, the subscription.
 * - table: one source table mapped to one target table; `mode: 'mapped'` (default) is applied by
 *   the syncctl worker through the column mapping; `mode: 'native'` is a plain 1:1 mirror applied
 *   by a native Postgres subscription. Several mapped tables may read one source table (each
 *   with its own target, key, columns and filter); a native table reads its source table alone.
 * - key: the target columns that identify a row on both sides (a natural key when ids differ).
 */
import { z } from 'zod';
import { isEnvRef, isSqlFragment, type EnvRef, type SqlFragment } from './sql-fragment.ts';

/** Postgres truncates identifiers at 63 bytes (NAMEDATALEN - 1). */
export const MAX_IDENTIFIER_BYTES = 63;

const sqlFragment = z.custom<SqlFragment>(isSqlFragment, { message: 'expected a sql`...` fragment' });
const envRef = z.custom<EnvRef>(isEnvRef, {
  message: "expected env('VARIABLE'): connection strings come from the environment, never the spec",
});

const identifier = z
  .string()
  .min(1, 'expected a non-empty name')
  .refine((s) => Buffer.byteLength(s) <= MAX_IDENTIFIER_BYTES, `expected at most ${MAX_IDENTIFIER_BYTES} bytes (Postgres's identifier limit)`)
  .refine((s) => !s.includes('\0'), 'a name cannot contain a NUL byte');

/** Sync names become slot names, which Postgres restricts to [a-z0-9_]. `syncctl_` + name + `_native` must fit 63. */
const syncName = z
  .string()
  .regex(/^[a-z][a-z0-9_]*$/, 'expected lower-case letters, digits and underscores, starting with a letter (it names a replication slot)')
  .max(48, 'expected at most 48 characters (it names the replication slot syncctl_<name>_native)');

/** `schema.table` or `table`; quoted parts keep their case. */
const qualifiedTable = z.string().min(1, 'expected a table name such as public.users');

const sourceWins = z.object({ strategy: z.literal('source-wins') }).strict();
const targetWins = z.object({ strategy: z.literal('target-wins') }).strict();
const lastWriteWins = z
  .object({ strategy: z.literal('last-write-wins'), column: identifier })
  .strict();
const fieldOwnership = z
  .object({
    strategy: z.literal('fields'),
    /** Which side owns each target column; unlisted columns belong to `default`. */
    owners: z.record(identifier, z.enum(['source', 'target'])),
    default: z.enum(['source', 'target']).default('source'),
  })
  .strict();
/** The names a merge column's SQL reads its two rows by: the row the incoming change would leave, and the target row as it is. */
export const MERGE_INCOMING = 'incoming';
export const MERGE_CURRENT = 'current';

/** The rules `merge` may leave its unlisted columns to: any rule that decides a row at once. */
const mergeOtherwise = z.discriminatedUnion('strategy', [sourceWins, targetWins, lastWriteWins, fieldOwnership]);
const merge = z
  .object({
    strategy: z.literal('merge'),
    /**
     * Per target column (never a key column), SQL over `incoming` (the target row as the incoming
     * change would leave it) and `current` (the target row as it is), both of the target table's row type.
     */
    columns: z.record(identifier, sqlFragment),
    /** The rule for the columns not listed, and for a change that meets no target row or deletes one; source-wins when absent. */
    otherwise: mergeOtherwise.optional(),
  })
  .strict();
const manual = z.object({ strategy: z.literal('manual') }).strict();

export const conflictSchema = z.discriminatedUnion('strategy', [
  sourceWins,
  targetWins,
  lastWriteWins,
  fieldOwnership,
  merge,
  manual,
]);

export const tableSchema = z
  .object({
    from: qualifiedTable,
    to: qualifiedTable,
    /** `mapped` (default): the syncctl worker applies the mapping. `native`: a plain mirror by native subscription. */
    mode: z.enum(['mapped', 'native']).default('mapped'),
    /** Target columns that identify a row; required for mapped tables. */
    key: z.array(identifier).min(1, 'expected at least one key column').optional(),
    /** Target column <- SQL over the source row. Required for mapped tables, absent for native ones. */
    columns: z.record(identifier, sqlFragment).optional(),
    /** Rows for which this is not true do not travel. */
    where: sqlFragment.optional(),
    conflict: conflictSchema.default({ strategy: 'source-wins' }),
    /** What a TRUNCATE of the source table does to the target. */
    truncate: z.enum(['apply', 'ignore']).default('apply'),
    /** A row the target rejects: park it in sync_conflicts and go on, or stop the table. */
    onError: z.enum(['park', 'stop']).default('park'),
    /**
     * `auto` (default): syncctl widens the source replica identity only where it must (a natural
     * key the identity does not carry) and evaluates row filters on non-identity columns in the
     * worker. `full`: REPLICA IDENTITY FULL, so every filter can be a publication row filter.
     */
    replicaIdentity: z.enum(['auto', 'full']).default('auto'),
  })
  .strict();

export const syncSchema = z
  .object({
    name: syncName,
    source: envRef,
    target: envRef,
    /**
     * Which source changes travel, as a native subscription's `origin`: `any` (default) every
     * change; `none` only changes made on the source itself, not those another replication wrote
     * there (syncctl's reverse sync included): two syncs in opposite directions set it on both.
     */
    origin: z.enum(['any', 'none']).optional(),
    /**
     * PostgreSQL 17 and later: the slot is a failover slot, synchronized to physical standbys
     * (sync_replication_slots there), so the sync survives a failover of the source.
     */
    failover: z.boolean().optional(),
    tables: z
      .record(identifier, tableSchema)
      .refine((tables) => Object.keys(tables).length > 0, 'expected at least one table'),
  })
  .strict();

export type SyncSpecInput = z.input<typeof syncSchema>;
export type SyncSpec = z.output<typeof syncSchema>;
export type TableSpec = z.output<typeof tableSchema>;
export type ConflictRule = z.output<typeof conflictSchema>;
export type MergeOtherwiseRule = z.output<typeof mergeOtherwise>;
