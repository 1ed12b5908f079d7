/**
 * Rows -> set-based SQL. Pure: a table's mapping and its staged columns in, statements out.
 *
 * A batch of changes for one source table is staged in a temp table (one row per change: its
 * sequence number, W for the new row of an UPDATE, I for an INSERT's row, D for a delete of the
 * old key or K for the old row of an UPDATE (always followed by the W of its new row), the positions of unchanged TOAST
 * columns, and the source columns). These statements are an optimization of applying the changes
 * one by one in source order (source-order.ts), used by the batch writer only for slices where
 * the two provably give the same result. They run the spec's mapping SQL inside the target over
 * all staged rows at once (K counts as a delete of the old key):
 *   1. keep the last change per target key (DISTINCT ON key ORDER BY seq DESC), mapped;
 *   2. delete the keys whose last change is a delete (or a write the row filter rejects);
 *   3. upsert the writes; 4. update writes that carry unchanged TOAST columns, keeping the
 *   target's value for every column whose mapping reads only unchanged columns;
 *   5. check that no key written has a local change (a conflict: source order applies the rules).
 */
import { quoteIdent, quoteLiteral, quoteQualified, type QualifiedName } from '../sql/quote.ts';

export const SEQ = 'syncctl$seq';
export const OP = 'syncctl$op';
export const UNCHANGED = 'syncctl$unchanged';
export const KEEP = 'syncctl$keep';

export interface StagedColumn {
  readonly name: string;
  /** The type the value is staged as in the target (the source's type, or text). */
  readonly stagingType: string;
  /**
   * Staged as text although the mapping reads it as this type: the target rejected a value of
   * the table while staging it (an enum label or a domain check the target lacks). The cast runs
   * in the apply statements, where a row it rejects is that row's fault alone.
   */
  readonly castTo?: string;
}

export interface ApplyTable {
  /** Names the temp tables: pg_temp."syncctl_stage_<id>", pg_temp."syncctl_last_<id>". */
  readonly id: string;
  readonly target: QualifiedName;
  /** Target key columns. */
  readonly key: readonly string[];
  /** Target column <- SQL over the staged source row. */
  readonly columns: readonly { readonly target: string; readonly expression: string; readonly reads: readonly string[] }[];
  /** A row filter the worker evaluates (one the publication could not carry). */
  readonly workerFilter?: string;
  /** Source columns the worker-evaluated filter reads. */
  readonly filterReads?: readonly string[];
  /** Columns of the staging table, in the order the stream delivers them. */
  readonly staged: readonly StagedColumn[];
  /** The target table has change tracking: staged keys are checked against syncctl.local_changes (conflicts). */
  readonly tracked: boolean;
  /**
   * The target's type of each key column: the change-tracking trigger records keys as the target
   * row holds them (to_jsonb of the row), so the keys to forget are cast the same way first.
   */
  readonly keyTypes: readonly string[];
  /** The staged source column each target key column copies unchanged, in key order; absent when some key column is computed. */
  readonly keySources?: readonly string[];
  /**
   * With `keySources`: every key column is staged as the target's own type, and one whose
   * equality is identity (integers, uuid), so distinct staged keys are distinct target keys.
   */
  readonly exactKeys?: boolean;
  /**
   * Target columns the target owns (the `fields` rule): written when a row is inserted, never by
   * an incoming update, conflict or not, so a change the other side made before it saw the
   * target's value cannot overwrite it (both directions, scenario 3).
   */
  readonly targetOwned?: readonly string[];
  /**
   * An upsert leaves a row alone when it would write the values it has (compared as text: every
   * type has one, not every type has equality). The copy sets it: a recopy (a resync, a new slot
   * after one was lost) then writes only the rows that differ.
   */
  readonly skipUnchanged?: boolean;
}

/** The non-key target columns an incoming update writes: all of them but those the target owns. */
export function updatedColumns(table: ApplyTable): ApplyTable['columns'] {
  return table.columns.filter((c) => !table.key.includes(c.target) && !(table.targetOwned ?? []).includes(c.target));
}

export interface ApplyStatements {
  readonly createStage: string;
  readonly createLast: string;
  /** Fills the last-change table from the stage. */
  readonly reduce: string;
  readonly deleteRows: string;
  readonly upsertRows: string;
  readonly updateToasted: string;
  /**
   * Writes with unchanged TOAST columns that cannot be applied: a column's mapping (or the row
   * filter) reads an unchanged column together with changed ones, or the target has no row to
   * keep the unchanged values from. `park` moves them from the last-change table into
   * sync_conflicts ($1 sync, $2 table; $3, $4, $5: the first sequence number, commit LSN and
   * commit time of each source transaction of the batch; $6 strategy); `find` lists them (key, reason).
   */
  readonly incomputable: { readonly park: string; readonly find: string };
  /**
   * Fails (SQLSTATE SYCON) when a key of the slice has a local change: a conflict, which source
   * order meets with the table's rule. Runs after the slice's writes, in its transaction.
   */
  readonly checkLocalChanges?: string;
  /**
   * Tracked tables: the staged changes of keys that have a local change, set aside in a side
   * table of the stage's shape (`moveConflicting`, which returns their sequence numbers) so the set
   * statements apply the others, then moved back (`moveBack`) for source order to meet them with
   * the rule. The batch writer says when the split is the same as source order.
   */
  readonly split?: { readonly createSide: string; readonly moveConflicting: string; readonly moveBack: string };
  /** `INSERT INTO <stage> (<all staged columns>) VALUES `, for rows given as literals. */
  readonly insertValues: string;
  /** `COPY <stage> (<all staged columns>) FROM STDIN`, for rows in COPY text form. */
  readonly copyIn: string;
  /**
   * Empties both temp tables after a slice: DELETE for a few rows (their space is reclaimed by
   * `vacuum` now and then), TRUNCATE for many (a new file, and a catalog write, per table).
   */
  readonly clear: { readonly few: readonly string[]; readonly many: readonly string[]; readonly fewStage: readonly string[]; readonly manyStage: readonly string[] };
  /** The staging tables, for one VACUUM of all (VACUUM runs outside any transaction block, alone in its query). */
  readonly tables: string;
  /** Drops both temp tables (a streamed transaction's, once applied or aborted). */
  readonly drop: string;
  /** Removes staged changes from sequence number $1 on (a streamed subtransaction that aborted). */
  readonly discardFrom: string;
  /**
   * A slice in which no key occurs twice needs no reduction to the last change per key: the
   * deletes and upserts read the stage directly (one write of each row less, no sort). Present
   * when every target key column copies one source column (`keySources`), so the worker can see
   * repeated keys while staging; a repeat it cannot see (two source keys cast to one target key)
   * makes the upsert fail, and the batch is applied the careful way.
   */
  readonly direct?: {
    readonly deleteRows: string;
    readonly upsertRows: string;
    readonly checkLocalChanges?: string;
    /**
     * A large slice of mostly source UPDATEs (with `exactKeys`, and columns besides the key):
     * `updateRows` updates the target rows that exist, then, only when it updated fewer rows
     * than were written, `insertMissing` inserts the others. The upsert locks each conflicting
     * row before updating it (one more WAL record per row): 1M rows took 10-15 % longer alone,
     * and the bench's 1M-row apply went from 73-85 k to 86-109 k rows/s with this.
     */
    readonly updateFirst?: { readonly updateRows: string; readonly insertMissing: string };
  };
}

export function stageTableName(table: ApplyTable): string {
  return `pg_temp.${quoteIdent(`syncctl_stage_${table.id}`)}`;
}

export function lastTableName(table: ApplyTable): string {
  return `pg_temp.${quoteIdent(`syncctl_last_${table.id}`)}`;
}

export function sideTableName(table: ApplyTable): string {
  return `pg_temp.${quoteIdent(`syncctl_side_${table.id}`)}`;
}

/**
 * What the mapping reads: the stage, or, for a table staged as text after a rejection, the stage
 * with each column cast to the type the mapping expects. `where` filters the stage itself;
 * `stage` reads a table of the stage's shape instead (the side table).
 */
export function stagedRows(table: ApplyTable, alias: string, where = '', withId = false, stage = stageTableName(table)): string {
  const filter = where === '' ? '' : ` WHERE ${where}`;
  // withId: each row's ctid as "syncctl$id" (a subquery then, even when nothing is cast).
  const id = withId ? `ctid AS ${quoteIdent('syncctl$id')}, ` : '';
  if (!table.staged.some((c) => c.castTo !== undefined)) return withId ? `(SELECT ${id}* FROM ${stage}${filter}) AS ${quoteIdent(alias)}` : `${stage}${filter}`;
  const columns = table.staged.map((c) => (c.castTo === undefined ? quoteIdent(c.name) : `${quoteIdent(c.name)}::${c.castTo} AS ${quoteIdent(c.name)}`));
  return `(SELECT ${id}${[SEQ, OP, UNCHANGED].map(quoteIdent).join(', ')}, ${columns.join(', ')} FROM ${stage}${filter}) AS ${quoteIdent(alias)}`;
}

/**
 * A row's key as jsonb, `value(k, i)` giving key column k's value. Typed: as syncctl.local_changes
 * holds it (the change-tracking trigger builds it from the target row, each value of its target
 * column's type), so the two compare equal; untyped: as sync_conflicts logs it.
 */
export function keyObject(table: ApplyTable, value: (k: string, i: number) => string, typed: boolean): string {
  return `jsonb_build_object(${table.key.map((k, i) => `${quoteLiteral(k)}, ${value(k, i)}${typed ? `::${table.keyTypes[i]}` : ''}`).join(', ')})`;
}

const INTEGER_TYPES = new Set(['smallint', 'integer', 'bigint']);

/**
 * `c.key` (a syncctl.local_changes row) is the key of the row `alias` (its key columns by name):
 * the jsonb object the change-tracking trigger builds. For an integer key, first the equality of
 * the key values themselves, which a hash join builds from the local changes and probes with the
 * staged integers (building an object per staged row was most of the statement). The jsonb
 * equality stays, as a filter (IS TRUE: not a hash key), so what matches is exactly what the
 * object equality matches; a local change whose key holds no integer there fails the cast, the
 * set form with it, and source order decides.
 */
function localKeyIs(table: ApplyTable, alias: string): string {
  const object = keyObject(table, (k) => `${alias}.${quoteIdent(k)}`, true);
  if (!table.keyTypes.every((t) => INTEGER_TYPES.has(t))) return `c.key = ${object}`;
  const values = table.key.map((k, i) => `(c.key -> ${quoteLiteral(k)})::${table.keyTypes[i]} = ${alias}.${quoteIdent(k)}::${table.keyTypes[i]}`);
  return `${values.join(' AND ')} AND (c.key = ${object}) IS TRUE`;
}

/**
 * Why a write with unchanged TOAST columns (their positions in `unchanged`, an int2[] expression)
 * cannot be applied, as SQL text expressions: `missing`, the target has no row to keep their
 * values from; `partial`, a mapping or the filter reads them together with changed columns.
 */
export function toastReasons(table: ApplyTable, unchanged: string): { missing: string; partial: string } {
  const names = `array_to_string(ARRAY(SELECT (ARRAY[${table.staged.map((c) => quoteLiteral(c.name)).join(', ')}]::text[])[p] ` +
    `FROM unnest(${unchanged}) AS p), ', ')`;
  return {
    missing: `'the update leaves TOAST column(s) ' || ${names} || ' unchanged, which the stream does not carry, ` +
      `and the target has no row with this key to keep them from'`,
    partial: `'the mapping or row filter reads TOAST column(s) ' || ${names} || ' that the update left unchanged, together ` +
      `with changed columns; the stream does not carry unchanged TOAST values: set replicaIdentity: ''full'' on this table so that updates log the whole old row'`,
  };
}

export function renderApply(table: ApplyTable): ApplyStatements {
  const stage = stageTableName(table);
  const rows = stagedRows(table, 'syncctl$rows');
  const last = lastTableName(table);
  const target = quoteQualified(table.target);
  const keyCols = table.key.map(quoteIdent);
  const nonKey = table.columns.filter((c) => !table.key.includes(c.target));
  const updated = updatedColumns(table);
  const positions = new Map(table.staged.map((c, i) => [c.name, i + 1]));

  const createStage = `CREATE TEMP TABLE IF NOT EXISTS ${stage} (` +
    [`${quoteIdent(SEQ)} bigint NOT NULL DEFAULT 0`, `${quoteIdent(OP)} "char" NOT NULL DEFAULT 'W'`, `${quoteIdent(UNCHANGED)} int2[]`,
      ...table.staged.map((c) => `${quoteIdent(c.name)} ${c.stagingType}`)].join(', ') + ') ON COMMIT PRESERVE ROWS';
  // The mapped, reduced rows: one per target key, the last change wins.
  const mappedColumns = table.columns.map((c) => `(${c.expression}) AS ${quoteIdent(c.target)}`);
  const keep = table.workerFilter !== undefined ? `coalesce((${table.workerFilter}), false)` : 'true';
  const reduceSelect =
    `SELECT DISTINCT ON (${keyCols.join(', ')}) * FROM (SELECT ${quoteIdent(SEQ)}, ${quoteIdent(OP)}, ${quoteIdent(UNCHANGED)}, ` +
    `${keep} AS ${quoteIdent(KEEP)}, ${mappedColumns.join(', ')} FROM ${rows}) AS mapped ` +
    `ORDER BY ${keyCols.join(', ')}, ${quoteIdent(SEQ)} DESC`;
  // Emptied by the batch itself (clear), not ON COMMIT DELETE ROWS: that truncates every staging
  // table touched at each commit, about half a millisecond each, most of a small batch's cost.
  const createLast = `CREATE TEMP TABLE IF NOT EXISTS ${last} ON COMMIT PRESERVE ROWS AS ${reduceSelect} WITH NO DATA`;
  const reduce = `INSERT INTO ${last} ${reduceSelect}`;

  const keyMatch = (alias: string) => table.key.map((k) => `t.${quoteIdent(k)} = ${alias}.${quoteIdent(k)}`).join(' AND ');
  const isDelete = `(l.${quoteIdent(OP)} NOT IN ('W', 'I') OR NOT l.${quoteIdent(KEEP)})`;
  const isPlainWrite = `l.${quoteIdent(OP)} IN ('W', 'I') AND l.${quoteIdent(KEEP)} AND l.${quoteIdent(UNCHANGED)} IS NULL`;
  const isToastedWrite = `l.${quoteIdent(OP)} IN ('W', 'I') AND l.${quoteIdent(KEEP)} AND l.${quoteIdent(UNCHANGED)} IS NOT NULL`;

  const deleteRows = `DELETE FROM ${target} AS t USING ${last} AS l WHERE ${isDelete} AND ${keyMatch('l')}`;
  const insertCols = table.columns.map((c) => quoteIdent(c.target));
  const differs = (alias: string) => (table.skipUnchanged
    ? ` WHERE ROW(${updated.map((c) => `t.${quoteIdent(c.target)}`).join(', ')})::text IS DISTINCT FROM ROW(${updated.map((c) => `${alias}.${quoteIdent(c.target)}`).join(', ')})::text`
    : '');
  const onConflict = updated.length === 0
    ? 'DO NOTHING'
    : `DO UPDATE SET ${updated.map((c) => `${quoteIdent(c.target)} = excluded.${quoteIdent(c.target)}`).join(', ')}${differs('excluded')}`;
  const upsertRows =
    `INSERT INTO ${target} AS t (${insertCols.join(', ')}) SELECT ${insertCols.map((c) => `l.${c}`).join(', ')} FROM ${last} AS l ` +
    `WHERE ${isPlainWrite} ON CONFLICT (${keyCols.join(', ')}) ${onConflict}`;
  const toastedSet = updated.map((c) => {
    const reads = c.reads.map((r) => positions.get(r)).filter((p): p is number => p !== undefined);
    const col = quoteIdent(c.target);
    // A column whose mapping reads only unchanged TOAST values is unchanged itself.
    return reads.length === 0 ? `${col} = l.${col}` : `${col} = CASE WHEN l.${quoteIdent(UNCHANGED)} @> '{${reads.join(',')}}'::int2[] THEN t.${col} ELSE l.${col} END`;
  });
  const updateToasted = toastedSet.length === 0
    ? 'SELECT 1 WHERE false'
    : `UPDATE ${target} AS t SET ${toastedSet.join(', ')} FROM ${last} AS l WHERE ${isToastedWrite} AND ${keyMatch('l')}`;

  // Unchanged TOAST values are not in the stream: a column that reads one of them together with a
  // changed column (or a filter reading one) cannot be computed without the old row.
  const positionsOf = (names: readonly string[]) => names.map((r) => positions.get(r)).filter((p): p is number => p !== undefined);
  const overlaps = (reads: readonly number[]) => `l.${quoteIdent(UNCHANGED)} && '{${reads.join(',')}}'::int2[]`;
  const partialColumns = nonKey.map((c) => positionsOf(c.reads)).filter((reads) => reads.length > 0)
    .map((reads) => `(${overlaps(reads)} AND NOT l.${quoteIdent(UNCHANGED)} @> '{${reads.join(',')}}'::int2[])`);
  const filterReads = table.workerFilter !== undefined ? positionsOf(table.filterReads ?? []) : [];
  const missingRow = `NOT EXISTS (SELECT 1 FROM ${target} AS t WHERE ${keyMatch('l')})`;
  // The filter's verdict (keep) is unknown when it read an unchanged column; the rest only matters for rows kept.
  const incomputable = `l.${quoteIdent(OP)} IN ('W', 'I') AND l.${quoteIdent(UNCHANGED)} IS NOT NULL AND (` +
    [...(filterReads.length > 0 ? [overlaps(filterReads)] : []), `(l.${quoteIdent(KEEP)} AND (${[missingRow, ...partialColumns].join(' OR ')}))`].join(' OR ') + ')';
  const reasons = toastReasons(table, `l.${quoteIdent(UNCHANGED)}`);
  const reason = `CASE WHEN ${missingRow} THEN ${reasons.missing} ELSE ${reasons.partial} END`;
  const keyJson = keyObject(table, (k) => `l.${quoteIdent(k)}`, false);
  const internals = `ARRAY[${[SEQ, OP, UNCHANGED, KEEP].map(quoteLiteral).join(', ')}]`;
  const park = `WITH bad AS (DELETE FROM ${last} AS l WHERE ${incomputable} RETURNING l.*, ${keyJson} AS "syncctl$key", ${reason} AS "syncctl$reason") ` +
    `INSERT INTO syncctl.sync_conflicts (sync_name, table_name, kind, key, incoming, source_lsn, source_commit_time, strategy, outcome, reason) ` +
    `SELECT $1, $2, 'apply_error', b."syncctl$key", to_jsonb(b) - ${internals} - 'syncctl$key' - 'syncctl$reason', ($4::pg_lsn[])[m.i], ($5::timestamptz[])[m.i], ` +
    // The change's own transaction: the last mark at or before it (marks in sequence order, found
    // by binary search: width_bucket counts the marks at or before it; none: no position).
    `$6, 'pending', b."syncctl$reason" FROM bad AS b CROSS JOIN LATERAL (SELECT nullif(width_bucket(b.${quoteIdent(SEQ)}, $3::bigint[]), 0) AS i) AS m`;
  const find = `SELECT ${keyJson} AS key, ${reason} AS reason FROM ${last} AS l WHERE ${incomputable} ORDER BY l.${quoteIdent(SEQ)}`;

  // A staged key with a local change is a conflict: the check fails the set form (SQLSTATE SYCON),
  // and source order meets each such change with the table's rule. It runs after the writes: a
  // local write committed before a row's lock was taken is seen by this later statement, and one
  // after it waits for this transaction (it lands after the worker's write). Gated: with no local
  // change recorded for the table (the usual case), the staged rows are not read at all.
  const targetName = quoteLiteral(`${table.target.schema}.${table.target.name}`);
  const check = (from: string) => `SELECT syncctl.local_changes_found(${targetName}) FROM (SELECT 1 FROM syncctl.local_changes AS c, ${from} AS l ` +
    `WHERE EXISTS (SELECT 1 FROM syncctl.local_changes WHERE target_table = ${targetName}) AND c.target_table = ${targetName} ` +
    `AND ${localKeyIs(table, 'l')} LIMIT 1) AS found`;
  const checkLast = table.tracked ? check(last) : undefined;
  const keyOnly = table.key.map((k) => `(${table.columns.find((c) => c.target === k)!.expression}) AS ${quoteIdent(k)}`);
  const checkStaged = table.tracked ? check(`(SELECT ${keyOnly.join(', ')} FROM ${rows})`) : undefined;
  // A change is set aside by the key its row maps to (a K and the W of its pair have the same key:
  // a slice that changes a key goes to source order whole). Found in a subquery, so that the
  // mapping reads the staged columns by their own names and nothing of local_changes; the rows
  // found are deleted by ctid (a TID scan: a join of the stage with itself by ctid can be planned
  // as a nested loop of two scans, seconds for 50k rows).
  const side = sideTableName(table);
  const ID = quoteIdent('syncctl$id');
  const split = table.tracked ? {
    createSide: `CREATE TEMP TABLE IF NOT EXISTS ${side} (LIKE ${stage}) ON COMMIT PRESERVE ROWS`,
    moveConflicting: `WITH moved AS (DELETE FROM ${stage} AS s WHERE s.ctid = ANY (ARRAY(SELECT k.${ID} ` +
      `FROM (SELECT ${ID}, ${keyOnly.join(', ')} FROM ${stagedRows(table, 'syncctl$rows', '', true)}) AS k ` +
      `WHERE EXISTS (SELECT 1 FROM syncctl.local_changes WHERE target_table = ${targetName}) ` +
      `AND EXISTS (SELECT 1 FROM syncctl.local_changes AS c WHERE c.target_table = ${targetName} ` +
      `AND ${localKeyIs(table, 'k')}))) RETURNING s.*) ` +
      `INSERT INTO ${side} SELECT * FROM moved RETURNING ${quoteIdent(SEQ)}`,
    moveBack: `WITH back AS (DELETE FROM ${side} RETURNING *) INSERT INTO ${stage} SELECT * FROM back`,
  } : undefined;
  const direct = table.keySources ? {
    deleteRows: `DELETE FROM ${target} AS t USING (SELECT ${keyOnly.join(', ')} FROM ${rows} WHERE ${quoteIdent(OP)} NOT IN ('W', 'I') OR NOT ${keep}) AS l ` +
      `WHERE ${keyMatch('l')}`,
    upsertRows: `INSERT INTO ${target} AS t (${insertCols.join(', ')}) SELECT ${table.columns.map((c) => `(${c.expression})`).join(', ')} FROM ${rows} ` +
      `WHERE ${quoteIdent(OP)} IN ('W', 'I') AND ${keep} ON CONFLICT (${keyCols.join(', ')}) ${onConflict}`,
    ...(table.tracked ? { checkLocalChanges: checkStaged! } : {}),
    ...(table.exactKeys && updated.length > 0 ? { updateFirst: updateFirst() } : {}),
  } : undefined;

  function updateFirst(): { updateRows: string; insertMissing: string } {
    const written = `(SELECT ${mappedColumns.join(', ')} FROM ${rows} WHERE ${quoteIdent(OP)} IN ('W', 'I') AND ${keep}) AS s`;
    return {
      updateRows: `UPDATE ${target} AS t SET ${updated.map((c) => `${quoteIdent(c.target)} = s.${quoteIdent(c.target)}`).join(', ')} ` +
        `FROM ${written} WHERE ${keyMatch('s')}${differs('s').replace(' WHERE ', ' AND ')}`,
      insertMissing: `INSERT INTO ${target} AS t (${insertCols.join(', ')}) SELECT ${insertCols.map((c) => `s.${c}`).join(', ')} FROM ${written} ` +
        `WHERE NOT EXISTS (SELECT 1 FROM ${target} AS t WHERE ${keyMatch('s')}) ON CONFLICT (${keyCols.join(', ')}) ${onConflict}`,
    };
  }

  const stagedColumns = [SEQ, OP, UNCHANGED, ...table.staged.map((c) => c.name)].map(quoteIdent).join(', ');
  return {
    createStage,
    createLast,
    reduce,
    deleteRows,
    upsertRows,
    updateToasted,
    incomputable: { park, find },
    ...(checkLast ? { checkLocalChanges: checkLast } : {}),
    insertValues: `INSERT INTO ${stage} (${stagedColumns}) VALUES `,
    copyIn: `COPY ${stage} (${stagedColumns}) FROM STDIN`,
    clear: { few: [`DELETE FROM ${stage}`, `DELETE FROM ${last}`], many: [`TRUNCATE ${stage}, ${last}`], fewStage: [`DELETE FROM ${stage}`], manyStage: [`TRUNCATE ${stage}`] },
    tables: `${stage}, ${last}${split ? `, ${side}` : ''}`,
    drop: `DROP TABLE IF EXISTS ${stage}, ${last}${split ? `, ${side}` : ''}`,
    ...(split ? { split } : {}),
    ...(direct ? { direct } : {}),
    discardFrom: `DELETE FROM ${stage} WHERE ${quoteIdent(SEQ)} >= $1`,
  };
}
