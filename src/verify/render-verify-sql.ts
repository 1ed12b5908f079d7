/**
 * The SQL of `syncctl verify`, as pure functions of a table's shape (values always go in as
 * parameters; the spec's own SQL is spliced as the copy and the worker splice it).
 *
 * Every statement reads rows through a RowSource: the target table, the source table mapped on the
 * source (direct), or the staged source rows mapped in the target. Each gives the same columns:
 * - k: the key as one text, `ROW(key…)::text` (what both sides are matched by);
 * - kv: the key column values as text; kj: the key as jsonb (how syncctl.local_changes and
 *   sync_conflicts name a key);
 * - vals: every compared column as text; h: a hash of them;
 * - rel, tid, xmin (source rows only): where the row is and which version it is.
 *
 * Hashes are Postgres's own hash functions over the typed values (hash_record_extended, the
 * functions hash partitioning relies on, stable across versions), which need no text: for types
 * whose hash treats as equal only values that print the same (integers, text under "C", dates,
 * timestamps, uuid, bytea, boolean). Every other type (numeric's hash ignores its scale, floats'
 * its -0, enums' hashes their oid, json has none) is hashed as its text. character(n) is hashed as
 * itself under "C": its hash leaves out trailing spaces as its cast to text does, so the value is
 * the text's, without the cast (which costs more than the hash). Rows are spread over
 * buckets by the hash of their key: a bucket is the same set of keys on both sides whatever the
 * collations and plans, and each pass reads a table in one scan.
 */
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';
import type { TypedColumn, VerifyShape } from './verify-shape.ts';

export interface RowSource {
  /** A FROM item. */
  readonly from: string;
  readonly conditions: readonly string[];
  /** SQL per key column, of the target column's type. */
  readonly key: readonly string[];
  /** SQL per compared column, of the target column's type. */
  readonly values: readonly string[];
  /** The target column types of `key` and `values` (format_type). */
  readonly keyTypes: readonly string[];
  readonly valueTypes: readonly string[];
  /** SQL of the source row's relation oid, ctid and xmin as text (source rows only). */
  readonly place?: { readonly rel: string; readonly tid: string; readonly xmin: string };
}

/** The staged source rows, and the same rows mapped (temp tables of the target session). */
export const STAGED_ROWS = 'pg_temp.syncctl_verify_rows';
export const MAPPED_ROWS = 'pg_temp.syncctl_verify_mapped';
const REL = 'syncctl$rel';
const TID = 'syncctl$tid';
const XMIN = 'syncctl$xmin';
const PRESENT = 'syncctl$present';
const KEY_HASH = 'syncctl$kh';
const VALUE = 'syncctl$v';

const types = (shape: VerifyShape) => ({ keyTypes: shape.key.map((k) => k.type), valueTypes: shape.columns.map((c) => c.type) });

export function targetRowSource(shape: VerifyShape): RowSource {
  const column = (name: string) => `t.${quoteIdent(name)}`;
  return {
    from: `${quoteQualified(shape.table.target)} AS t`, conditions: [], key: shape.key.map((k) => column(k.name)), values: shape.columns.map((c) => column(c.name)),
    ...types(shape),
  };
}

/** The source table mapped on the source (direct path): its filters applied, each column computed there. */
export function directRowSource(shape: VerifyShape): RowSource {
  const { source } = shape;
  if (source.kind !== 'direct') throw new Error('not a direct source');
  const select = (name: string) => source.select.get(name)!;
  return {
    from: quoteQualified(shape.table.source),
    conditions: source.where !== undefined ? [source.where] : [],
    key: shape.key.map((k) => select(k.name)),
    values: shape.columns.map((c) => select(c.name)),
    ...types(shape),
    place: { rel: 'tableoid::oid::text', tid: 'ctid::text', xmin: 'xmin::text' },
  };
}

/** The staged source rows after the mapping (renderMapStaged). */
export function mappedRowSource(shape: VerifyShape): RowSource {
  const column = (name: string) => `m.${quoteIdent(name)}`;
  return {
    from: `${MAPPED_ROWS} AS m`, conditions: [], key: shape.key.map((k) => column(k.name)), values: shape.columns.map((c) => column(c.name)),
    ...types(shape),
    place: { rel: column(REL), tid: column(TID), xmin: column(XMIN) },
  };
}

/** Types whose hash function tells apart exactly the values that print differently. */
const HASHED_AS_IS = /^(smallint|integer|bigint|boolean|date|uuid|bytea|oid|timestamp(\(\d\))? with(out)? time zone)$/;
const HASHED_AS_IS_TEXT = /^(text|character varying(\(\d+\))?|character(\(\d+\))?|bpchar)$/;

/** A value as it goes into a hash: itself, text under "C" (equal bytes), or its text. */
export function hashable(sql: string, type: string): string {
  if (HASHED_AS_IS.test(type)) return `(${sql})`;
  if (HASHED_AS_IS_TEXT.test(type)) return `((${sql}) COLLATE "C")`;
  return `((${sql})::text COLLATE "C")`;
}

const hashOf = (sql: readonly string[], types: readonly string[]) => `hash_record_extended(ROW(${sql.map((s, i) => hashable(s, types[i]!)).join(', ')}), 0)`;
const keyText = (rows: RowSource) => `ROW(${rows.key.join(', ')})::text`;
const rowHash = (rows: RowSource) => hashOf(rows.values, rows.valueTypes);
/** $1: the bucket mask (a power of two minus one). */
const bucket = (rows: RowSource) => `(${hashOf(rows.key, rows.keyTypes)} & $1::bigint)`;
const textArray = (sql: readonly string[]) => `ARRAY[${sql.map((s) => `(${s})::text`).join(', ')}]::text[]`;
const keyJson = (shape: VerifyShape, rows: RowSource) =>
  `jsonb_build_object(${shape.key.map((k, i) => `${quoteLiteral(k.name)}, ${rows.key[i]}`).join(', ')})::text`;
const place = (rows: RowSource) => (rows.place ? `, ${rows.place.rel} AS rel, ${rows.place.tid} AS tid, ${rows.place.xmin} AS xmin` : '');

function where(conditions: readonly string[]): string {
  return conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
}

/**
 * Per bucket: rows and the sum of their hashes, in one scan. $1: the mask.
 * Each row's hash is seeded with its key's hash: hash_record_extended adds up its columns' hashes
 * (h × 31 + column), so a sum of unseeded row hashes stays the same when a value moves from one
 * row to another, unless the 64-bit row hashes happen to wrap differently. The subquery (OFFSET 0 keeps the planner from merging it) computes the key's
 * hash once, and hides the key's distinct count from the planner, which then expects few groups
 * and hash-aggregates; over the table itself it expects a group per key and sorts every row.
 */
export function renderBucketSummary(rows: RowSource): string {
  const value = (i: number) => quoteIdent(`${VALUE}${i}`);
  const inner = `SELECT ${hashOf(rows.key, rows.keyTypes)} AS ${quoteIdent(KEY_HASH)}, ${rows.values.map((v, i) => `${v} AS ${value(i)}`).join(', ')} ` +
    `FROM ${rows.from}${where(rows.conditions)} OFFSET 0`;
  const keyHash = `x.${quoteIdent(KEY_HASH)}`;
  const values = rows.values.map((_, i) => hashable(`x.${value(i)}`, rows.valueTypes[i]!));
  return `SELECT (${keyHash} & $1::bigint)::text AS b, count(*)::float8 AS n, sum(hash_record_extended(ROW(${values.join(', ')}), ${keyHash}))::text AS h ` +
    `FROM (${inner}) AS x GROUP BY ${keyHash} & $1::bigint`;
}

/**
 * About how many rows a table holds, from the catalog (its leaf partitions' when partitioned), to
 * size the buckets. A table never vacuumed nor analyzed (reltuples -1) counts a row per 64 bytes
 * of its heap. $1: the table (regclass text).
 */
export const ROW_ESTIMATE = `SELECT coalesce(sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE pg_relation_size(c.oid) / 64 END), 0)::float8 AS n ` +
  `FROM pg_class c WHERE c.relkind <> 'p' AND c.oid IN (SELECT $1::regclass UNION ALL SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf)`;

/** The rows of some buckets, a hash each. $1: the mask; $2: the buckets (bigint[]). */
export function renderBucketRows(rows: RowSource): string {
  return `SELECT ${keyText(rows)} AS k, ${textArray(rows.key)} AS kv, ${rowHash(rows)}::text AS h${place(rows)} ` +
    `FROM ${rows.from}${where([...rows.conditions, `${bucket(rows)} = ANY ($2::bigint[])`])}`;
}

/** The rows of some keys, every compared column as text. $1…$n: per key column, the keys' values as text (text[]). */
export function renderRowsByKey(shape: VerifyShape, rows: RowSource): string {
  return `SELECT ${keyText(rows)} AS k, ${textArray(rows.key)} AS kv, ${keyJson(shape, rows)} AS kj, ${textArray(rows.values)} AS vals${place(rows)} ` +
    `FROM ${rows.from}${where([...rows.conditions, `${keyIn(rows.key, shape.key)}`])}`;
}

/**
 * The place and version of every source row of some keys, filters or not: how the re-check tells
 * that the source did not write a key between two reads when the key has no row that passes the
 * filters (an extra target row). A row moving out of and back into a filter between two reads
 * leaves the filtered rows the same (none); its row version does not. Undefined when the table has
 * no filter (the compared rows are all its rows), or when a key's source rows can only be found by
 * mapping the whole table (a staged table whose key is not a bare copy of source columns): there
 * the filtered rows' versions are all the re-check has. The key is computed over rows the filters
 * drop, as the worker computes it for the deletes such rows become.
 * $1…$n: per key column, the keys' values as text (text[]).
 */
export function renderRawVersionsByKey(shape: VerifyShape): string | undefined {
  const { source } = shape;
  let key: string[];
  if (source.kind === 'direct') {
    if (source.where === undefined) return undefined;
    key = shape.key.map((k) => source.select.get(k.name)!);
  } else {
    if (source.publicationFilter === undefined && source.workerFilter === undefined) return undefined;
    if (source.keySources === undefined) return undefined;
    key = source.keySources.map(quoteIdent);
  }
  return `SELECT ROW(${key.join(', ')})::text AS k, tableoid::oid::text AS rel, ctid::text AS tid, xmin::text AS xmin ` +
    `FROM ${quoteQualified(shape.table.source)} WHERE ${keyIn(key, shape.key)}`;
}

/** `(k1, k2) IN (…the keys given as text arrays, cast to the key columns' types)`. */
function keyIn(columns: readonly string[], types: readonly TypedColumn[]): string {
  return `(${columns.join(', ')}) IN (SELECT * FROM unnest(${types.map((t, i) => `$${i + 1}::text[]::${t.type}[]`).join(', ')}))`;
}

/** Rows of a count, for the staged path's totals. */
export function renderCount(rows: RowSource): string {
  return `SELECT count(*)::float8 AS n FROM ${rows.from}${where(rows.conditions)}`;
}

/** Compared on both servers: equal unless they hash differently (another byte order). */
export const HASH_PROBE = `SELECT hash_record_extended(ROW(12345::bigint, 'syncctl'::text COLLATE "C", true, date '2000-01-02'), 0)::text AS h`;

// ---- The staged path: source rows shipped into the target and mapped there.

function stagedSource(shape: VerifyShape) {
  if (shape.source.kind !== 'staged') throw new Error('not a staged source');
  return shape.source;
}

export function renderCreateStaged(shape: VerifyShape): string {
  const columns = stagedSource(shape).reads.map((c) => `${quoteIdent(c.name)} ${c.type}`);
  return `CREATE TEMP TABLE syncctl_verify_rows (${[...columns, `${quoteIdent(REL)} text`, `${quoteIdent(TID)} text`, `${quoteIdent(XMIN)} text`].join(', ')})`;
}

export const renderDropStaged = () => `DROP TABLE IF EXISTS ${STAGED_ROWS}, ${MAPPED_ROWS}`;

/** The source side of a full shipment, for COPY … TO STDOUT: the rows the publication's filter passes. */
export function renderShipAll(shape: VerifyShape): string {
  const source = stagedSource(shape);
  return `SELECT ${[...source.reads.map((c) => quoteIdent(c.name)), 'tableoid::oid', 'ctid', 'xmin'].join(', ')} FROM ${quoteQualified(shape.table.source)}` +
    where(source.publicationFilter !== undefined ? [`(${source.publicationFilter})`] : []);
}

export function renderCopyIntoStaged(shape: VerifyShape): string {
  return `COPY ${STAGED_ROWS} (${[...stagedSource(shape).reads.map((c) => c.name), REL, TID, XMIN].map(quoteIdent).join(', ')}) FROM STDIN`;
}

/**
 * The source rows of some keys, looked up by the source columns the key is a bare copy of
 * (keySources), as a JSON array per row. $1…$n: per key column, the keys' values as text.
 */
export function renderShipByKey(shape: VerifyShape): string {
  const source = stagedSource(shape);
  const keySources = source.keySources;
  if (keySources === undefined) throw new Error('the key is not a copy of source columns');
  const conditions = [...(source.publicationFilter !== undefined ? [`(${source.publicationFilter})`] : []), keyIn(keySources.map(quoteIdent), shape.key)];
  return `SELECT to_json(${textArray([...source.reads.map((c) => quoteIdent(c.name)), 'tableoid::oid', 'ctid', 'xmin'])})::text AS r ` +
    `FROM ${quoteQualified(shape.table.source)}${where(conditions)}`;
}

/** Rows shipped by renderShipByKey into the staging table. $1: a JSON array of them. */
export function renderInsertStaged(shape: VerifyShape): string {
  const { reads } = stagedSource(shape);
  const values = [...reads.map((c, i) => `(e->>${i})::${c.type}`), ...[0, 1, 2].map((i) => `e->>${reads.length + i}`)];
  return `INSERT INTO ${STAGED_ROWS} SELECT ${values.join(', ')} FROM jsonb_array_elements($1::jsonb) AS e`;
}

/** The staged rows the worker's filter keeps, mapped as the worker maps them, each column cast to the target column's type. */
export function renderMapStaged(shape: VerifyShape): string {
  const source = stagedSource(shape);
  const columns = shape.columns.map((c) => `CAST((${source.mapping.get(c.name)!}) AS ${c.type}) AS ${quoteIdent(c.name)}`);
  return `CREATE TEMP TABLE syncctl_verify_mapped AS SELECT ${[...columns, ...[REL, TID, XMIN].map(quoteIdent)].join(', ')} FROM ${STAGED_ROWS}` +
    where(source.workerFilter !== undefined ? [`coalesce((${source.workerFilter}), false)`] : []);
}

/** Keys (as text arrays) that differ between the mapped staged rows and the target table: missing, extra or different. */
export function renderStagedDiff(shape: VerifyShape): string {
  const m = mappedRowSource(shape);
  const t = targetRowSource(shape);
  const target = `(SELECT true AS ${quoteIdent(PRESENT)}, * FROM ${quoteQualified(shape.table.target)}) AS t`;
  const join = shape.key.map((k, i) => `${m.key[i]} = ${t.key[i]}`).join(' AND ');
  const absentM = `m.${quoteIdent(TID)} IS NULL`;
  const absentT = `t.${quoteIdent(PRESENT)} IS NULL`;
  return `SELECT CASE WHEN ${absentM} THEN ${textArray(t.key)} ELSE ${textArray(m.key)} END AS kv FROM ${MAPPED_ROWS} AS m FULL JOIN ${target} ON ${join} ` +
    `WHERE ${absentM} OR ${absentT} OR ROW(${m.values.map((v) => `(${v})::text`).join(', ')}) IS DISTINCT FROM ROW(${t.values.map((v) => `(${v})::text`).join(', ')})`;
}

// ---- Repair: whole source rows.

/** Whole source rows by place, every column as text in attnum order. $1: relation oids; $2: ctids. */
export function renderWholeRows(shape: VerifyShape): string {
  return `SELECT tableoid::oid::text AS rel, ctid::text AS tid, ${textArray(shape.sourceColumns.map(quoteIdent))} AS r FROM ${quoteQualified(shape.table.source)} ` +
    `WHERE (tableoid::oid, ctid) IN (SELECT * FROM unnest($1::oid[], $2::tid[]))`;
}
