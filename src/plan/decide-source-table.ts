/**
 * How a source table must be published so that every change reaches the worker and no source
 * write ever fails because of syncctl. Pure: catalog facts in, a decision with its reasons out.
 *
 * Postgres facts this rests on:
 * - An UPDATE or DELETE carries only the replica identity's columns of the old row.
 * - A publication row filter on a column outside the replica identity makes every UPDATE and
 *   DELETE of the table fail on the source ("cannot update table ...").
 * - A column list must include the replica identity's columns, for the same reason.
 * - A table with REPLICA IDENTITY NOTHING, or DEFAULT without a primary key, cannot publish
 *   UPDATE or DELETE at all: those statements fail on the source.
 * - A publication lists a table once, with one row filter and one column list (several spec
 *   tables reading it share them: decideSharedSourceTable).
 */
import type { TableFacts } from '../catalog/facts.ts';
import { formatQualifiedName } from '../sql/quote.ts';
import type { ReplicaIdentitySetting } from './render-ddl.ts';

export interface SourceTableNeeds {
  readonly mode: 'mapped' | 'native';
  /** Source columns the target key is computed from (mapped tables). */
  readonly keyColumnsRead: readonly string[];
  /** Every source column the mapping, the key and the filter read (mapped tables). */
  readonly columnsRead: readonly string[];
  readonly whereColumnsRead: readonly string[];
  readonly hasWhere: boolean;
  /** The filter could be created as a publication row filter (immutable, built-in only). */
  readonly whereValidAsRowFilter: boolean;
  /** Postgres's reason when it is not. */
  readonly whereRowFilterError?: string;
  readonly replicaIdentity: 'auto' | 'full';
}

export interface SourceTableDecision {
  /** undefined: keep the table's replica identity as it is. */
  readonly setReplicaIdentity?: ReplicaIdentitySetting;
  readonly replicaIdentityReason?: string;
  /** Columns the old row carries after the decision. */
  readonly identityColumns: readonly string[];
  readonly filterAt: 'none' | 'publication' | 'worker';
  readonly filterReason?: string;
  /** Publication column list; undefined publishes every column. */
  readonly columnList?: readonly string[];
  /** Not workable at all: the reason and the fix. */
  readonly error?: string;
}

export function decideSourceTable(facts: TableFacts, needs: SourceTableNeeds): SourceTableDecision {
  const current = describeIdentity(facts);
  let setReplicaIdentity: ReplicaIdentitySetting | undefined;
  let replicaIdentityReason: string | undefined;
  let identityColumns = facts.replicaIdentityColumns;

  const full = () => {
    identityColumns = facts.columns.map((c) => c.name);
    return facts.replicaIdentity === 'full' ? undefined : ({ kind: 'full' } as const);
  };
  // The unique NOT NULL index with the fewest columns that carries the key's source columns, else FULL.
  const widen = (): ReplicaIdentitySetting | undefined => {
    const index = smallestIdentityIndex(facts, needs.keyColumnsRead);
    if (!index) return full();
    identityColumns = index.columns;
    return { kind: 'index', index: index.name };
  };

  if (needs.replicaIdentity === 'full') {
    setReplicaIdentity = full();
    if (setReplicaIdentity) replicaIdentityReason = `the spec asks for replicaIdentity: 'full' (was ${current})`;
  } else if (identityColumns.length === 0) {
    // Without an identity, UPDATE and DELETE of a published table fail on the source.
    setReplicaIdentity = widen();
    replicaIdentityReason =
      `${facts.name.schema}.${facts.name.name} has replica identity ${current}, so publishing its UPDATEs and DELETEs ` +
      `would make them fail on the source; ${setReplicaIdentity?.kind === 'index' ? `unique index ${(setReplicaIdentity as { index: string }).index} identifies rows` : 'no unique NOT NULL index exists, so the whole old row identifies it'}`;
  } else {
    const missing = needs.keyColumnsRead.filter((c) => !identityColumns.includes(c));
    if (needs.mode === 'mapped' && missing.length > 0) {
      setReplicaIdentity = widen();
      replicaIdentityReason =
        `the target key is computed from ${list(needs.keyColumnsRead)}, but the replica identity (${current}) does not carry ` +
        `${list(missing)}: updates and deletes could not find their target row. ` +
        (setReplicaIdentity?.kind === 'index'
          ? `Unique index ${(setReplicaIdentity as { index: string }).index} carries them.`
          : `No unique NOT NULL index covers them, so the whole old row is logged (REPLICA IDENTITY FULL).`);
    }
  }

  let filterAt: SourceTableDecision['filterAt'] = 'none';
  let filterReason: string | undefined;
  let error: string | undefined;
  if (needs.hasWhere) {
    const outside = needs.whereColumnsRead.filter((c) => !identityColumns.includes(c));
    if (needs.whereValidAsRowFilter && outside.length === 0) {
      filterAt = 'publication';
    } else if (needs.mode === 'native') {
      error = !needs.whereValidAsRowFilter
        ? `the row filter cannot be a publication row filter: ${needs.whereRowFilterError ?? 'rejected by Postgres'}; a native table can only be filtered at the source`
        : `the row filter reads ${list(outside)}, which the replica identity does not carry; as a publication row filter it would make every UPDATE and DELETE of the source table fail. Set replicaIdentity: 'full' or use mode: 'mapped'`;
    } else {
      filterAt = 'worker';
      filterReason = ownFilterReason(needs, identityColumns);
    }
  }

  let columnList: string[] | undefined;
  if (needs.mode === 'mapped' && !(setReplicaIdentity?.kind === 'full' || (!setReplicaIdentity && facts.replicaIdentity === 'full'))) {
    const wanted = new Set([...needs.columnsRead, ...needs.whereColumnsRead, ...identityColumns]);
    const publishable = facts.columns.filter((c) => !c.generated);
    const listed = publishable.filter((c) => wanted.has(c.name)).map((c) => c.name);
    if (listed.length < publishable.length) columnList = listed;
  }

  return {
    ...(setReplicaIdentity ? { setReplicaIdentity, replicaIdentityReason } : {}),
    identityColumns,
    filterAt,
    ...(filterReason ? { filterReason } : {}),
    ...(columnList ? { columnList } : {}),
    ...(error ? { error } : {}),
  };
}

/** Why a table's own filter cannot be a publication row filter; undefined when it can. */
function ownFilterReason(needs: SourceTableNeeds, identityColumns: readonly string[]): string | undefined {
  if (!needs.hasWhere) return undefined;
  if (!needs.whereValidAsRowFilter) {
    return `the row filter is evaluated by the worker: Postgres rejects it as a publication row filter (${needs.whereRowFilterError ?? 'not allowed'})`;
  }
  const outside = needs.whereColumnsRead.filter((c) => !identityColumns.includes(c));
  if (outside.length === 0) return undefined;
  return `the row filter is evaluated by the worker: it reads ${list(outside)}, outside the replica identity; as a publication row filter it would make every UPDATE and DELETE of the source table fail (replicaIdentity: 'full' moves it to the source)`;
}

/** One spec table reading the source table. */
export interface SourceTableReader {
  /** The spec table's name (its key in `tables`). */
  readonly name: string;
  readonly needs: SourceTableNeeds;
  /** The row filter as Postgres normalised it (pg_get_expr), when Postgres accepts it as a publication row filter. */
  readonly rowFilter?: string;
}

/**
 * How a source table read by several spec tables (all mapped: the spec refuses a native table
 * that shares its source table) is published. Postgres lists a table once per publication, with
 * one row filter and one column list, and the table has one replica identity; so:
 * - the replica identity carries the key columns of every reader (and is FULL if any asks for it);
 * - the column list is the union of what every reader's mapping, key and filter read;
 * - the row filter is a publication row filter only when every reader has the same one and it can
 *   be one; otherwise the publication has none and each reader's own filter runs in the worker,
 *   over columns the column list carries.
 * Invariant: every decision returned has the same setReplicaIdentity, identityColumns and
 * columnList, and either all have filterAt 'publication' (with one filter) or none has.
 * One reader gets exactly decideSourceTable's decision.
 */
export function decideSharedSourceTable(facts: TableFacts, readers: readonly SourceTableReader[]): Map<string, SourceTableDecision> {
  if (readers.length === 1) return new Map([[readers[0]!.name, decideSourceTable(facts, readers[0]!.needs)]]);
  const first = readers[0]!;
  const sameFilter = readers.every((r) => r.needs.hasWhere && r.needs.whereValidAsRowFilter && r.rowFilter !== undefined && r.rowFilter === first.rowFilter);
  const union = (pick: (needs: SourceTableNeeds) => readonly string[]) => [...new Set(readers.flatMap((r) => pick(r.needs)))];
  const shared = decideSourceTable(facts, {
    mode: 'mapped',
    keyColumnsRead: union((n) => n.keyColumnsRead),
    // Every reader's filter columns too: a filter the worker evaluates reads them from the stream.
    columnsRead: union((n) => [...n.columnsRead, ...n.whereColumnsRead]),
    whereColumnsRead: sameFilter ? first.needs.whereColumnsRead : [],
    hasWhere: sameFilter,
    whereValidAsRowFilter: sameFilter,
    replicaIdentity: readers.some((r) => r.needs.replicaIdentity === 'full') ? 'full' : 'auto',
  });
  const names = readers.map((r) => `tables.${r.name}`);
  const identity = shared.setReplicaIdentity
    ? { setReplicaIdentity: shared.setReplicaIdentity, replicaIdentityReason: `${shared.replicaIdentityReason} (one replica identity serves ${names.join(', ')})` }
    : {};
  const common = { ...identity, identityColumns: shared.identityColumns, ...(shared.columnList ? { columnList: shared.columnList } : {}) };
  const decisions = new Map<string, SourceTableDecision>();
  for (const reader of readers) {
    if (sameFilter) {
      decisions.set(reader.name, { ...common, filterAt: shared.filterAt, ...(shared.filterReason ? { filterReason: shared.filterReason } : {}) });
      continue;
    }
    if (!reader.needs.hasWhere) {
      decisions.set(reader.name, { ...common, filterAt: 'none' });
      continue;
    }
    const others = readers.filter((r) => r !== reader);
    const unfiltered = others.filter((r) => !r.needs.hasWhere).map((r) => `tables.${r.name}`);
    const filterReason = ownFilterReason(reader.needs, shared.identityColumns) ??
      `the row filter is evaluated by the worker: ${formatQualifiedName(facts.name)} also feeds ` +
      `${unfiltered.length > 0 ? `${unfiltered.join(', ')} without a row filter` : `${others.map((r) => `tables.${r.name}`).join(', ')} with another row filter`}, ` +
      `and a publication carries one row filter per table`;
    decisions.set(reader.name, { ...common, filterAt: 'worker', filterReason });
  }
  return decisions;
}

/** The unique index Postgres accepts as replica identity with the fewest columns covering `columns`. */
function smallestIdentityIndex(facts: TableFacts, columns: readonly string[]) {
  return facts.uniqueIndexes
    .filter((i) => i.usableAsIdentity && columns.every((c) => i.columns.includes(c)))
    .sort((a, b) => a.columns.length - b.columns.length)[0];
}

export function describeIdentity(facts: TableFacts): string {
  switch (facts.replicaIdentity) {
    case 'default': return facts.primaryKey.length > 0 ? `primary key (${facts.primaryKey.join(', ')})` : 'default, without a primary key';
    case 'index': return `index ${facts.replicaIdentityIndex} (${facts.replicaIdentityColumns.join(', ')})`;
    case 'full': return 'full';
    case 'nothing': return 'nothing';
  }
}

function list(columns: readonly string[]): string {
  return columns.join(', ');
}
