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
 */
import type { TableFacts } from '../catalog/facts.ts';
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
      filterReason = !needs.whereValidAsRowFilter
        ? `the row filter is evaluated by the worker: Postgres rejects it as a publication row filter (${needs.whereRowFilterError ?? 'not allowed'})`
        : `the row filter is evaluated by the worker: it reads ${list(outside)}, outside the replica identity; as a publication row filter it would make every UPDATE and DELETE of the source table fail (replicaIdentity: 'full' moves it to the source)`;
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
