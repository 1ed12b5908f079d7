/**
 * Desired state (specs + decisions) against observed state (catalogs) -> Change[]. Pure.
 * Changes come out in the order apply must run them: target schema and registration, source
 * replica identity, publications, slot, then target triggers and subscription.
 */
import { tableKey, type RegisteredTable, type TableFacts } from '../catalog/facts.ts';
import type { SourceCatalog } from '../catalog/observe-source.ts';
import type { TargetCatalog } from '../catalog/observe-target.ts';
import type { LoadedSync, LoadedTable } from '../spec/loaded-sync.ts';
import { formatQualifiedName, parseQualifiedName, quoteLiteral, quoteQualified, type QualifiedName } from '../sql/quote.ts';
import type { Change, Statement } from './change.ts';
import type { SourceTableDecision } from './decide-source-table.ts';
import type { Migration } from './migrations.ts';
import {
  nativePublicationName, publicationName, renderAddPublicationTable, renderAlterPublicationOptions, renderCreatePublication,
  renderCreateSlot, renderCreateSubscription, renderDropPublication, renderDropPublicationTable, renderDropSlot,
  renderDetachAndDropSubscription, renderDropSubscription, renderDropTrigger, renderEnableSubscription, renderEnableTrigger, renderRefreshSubscription,
  renderAlterSlotFailover, renderReplicaIdentity, renderTrackingTrigger, slotName, subscriptionName, type PublishedTable, type ReplicaIdentitySetting,
} from './render-ddl.ts';

export interface SyncState {
  readonly sync: LoadedSync;
  readonly source: SourceCatalog;
  readonly target: TargetCatalog;
  /** Per spec table name. */
  readonly decisions: ReadonlyMap<string, SourceTableDecision>;
  /** Per spec table name: the row filter as Postgres normalises it (pg_get_expr). */
  readonly rowFilters: ReadonlyMap<string, string>;
  /** Per spec table name: the target key columns (for native tables without a key, the primary key). */
  readonly keys: ReadonlyMap<string, readonly string[]>;
  readonly migrations: readonly Migration[];
}

export function diffSync(state: SyncState): Change[] {
  const { sync } = state;
  const mapped = sync.tables.filter((t) => t.mode === 'mapped');
  const native = sync.tables.filter((t) => t.mode === 'native');
  return [
    ...diffSchema(state),
    ...diffRegistration(state),
    ...bySourceTable(sync.tables).flatMap((group) => diffReplicaIdentity(state, group)),
    ...diffPublication(state, publicationName(sync.name), mapped),
    ...diffPublication(state, nativePublicationName(sync.name), native),
    ...diffSlot(state, mapped.length > 0),
    ...diffCopies(state, mapped),
    ...diffTriggers(state, mapped),
    ...diffSubscription(state, native),
    ...diffRemovedTables(state),
  ];
}

/** Everything syncctl created for the sync, removed; target data and sync_conflicts stay. */
export function destroySync(state: Omit<SyncState, 'source'> & { source: SourceCatalog | undefined }): Change[] {
  const { sync, target, source } = state;
  const changes: Change[] = [];
  const sub = subscriptionName(sync.name);
  if (target.subscriptions.has(sub)) {
    // Without the source, DROP SUBSCRIPTION cannot drop its slot there (and fails): detach it.
    changes.push(change(sync, 'delete', 'target', `subscription:${sub}`, `subscription ${sub}${source ? '' : ' (its slot stays on the unreachable source)'}`,
      source ? [renderDropSubscription(sub)] : renderDetachAndDropSubscription(sub), { destructive: true, transactional: false }));
  }
  // The worker's replication origins (origin 'none'): each holds a replication state slot of the target server until dropped.
  for (const origin of target.origins ?? []) {
    if (!new RegExp(`^syncctl_\\d+_${sync.name}_\\d+$`).test(origin)) continue;
    changes.push(change(sync, 'delete', 'target', `origin:${origin}`, `replication origin ${origin}`,
      [{ sql: `SELECT pg_replication_origin_drop(${quoteLiteral(origin)})` }]));
  }
  for (const trigger of target.triggers.values()) {
    if (trigger.args[0] !== sync.name) continue;
    changes.push(change(sync, 'delete', 'target', `trigger:${tableKey(trigger.table)}`, `change tracking on ${formatQualifiedName(trigger.table)}`, [renderDropTrigger(trigger.table)]));
  }
  if (source) {
    // The subscription's own slot is left behind when its subscription was dropped while the source was down.
    const slots = [slotName(sync.name), ...(target.subscriptions.has(sub) ? [] : [sub])];
    for (const slot of slots) {
      if (source.slots.has(slot)) {
        changes.push(change(sync, 'delete', 'source', `slot:${slot}`, `replication slot ${slot}`, [renderDropSlot(slot)], { destructive: true }));
      }
    }
    for (const pub of [publicationName(sync.name), nativePublicationName(sync.name)]) {
      if (source.publications.has(pub)) {
        changes.push(change(sync, 'delete', 'source', `publication:${pub}`, `publication ${pub}`, [renderDropPublication(pub)], { destructive: true }));
      }
    }
    const restored = new Set<string>();
    for (const registered of target.registeredTables) {
      if (registered.syncName !== sync.name || registered.replicaIdentityBefore === null) continue;
      const name = parseQualifiedName(registered.sourceTable);
      const facts = name ? source.tables.get(tableKey(name)) : undefined;
      // Tables reading one source table recorded the same identity (diffRegistration): put back once.
      if (!facts || restored.has(tableKey(facts.name))) continue;
      restored.add(tableKey(facts.name));
      const before = parseIdentity(registered.replicaIdentityBefore);
      if (!identityEquals(facts, before)) {
        changes.push(change(sync, 'update', 'source', `replica-identity:${tableKey(facts.name)}`,
          `replica identity of ${formatQualifiedName(facts.name)}`, [renderReplicaIdentity(facts.name, before)],
          { reason: `put back as it was before syncctl changed it (${registered.replicaIdentityBefore})` }));
      }
    }
  }
  // Without the source the registration stays: it remembers the replica identity to put back,
  // which a destroy run once the source is reachable again does.
  if (source && target.syncs.has(sync.name)) {
    changes.push(change(sync, 'delete', 'target', `sync:${sync.name}`, `sync ${sync.name} in syncctl.syncs (its tables, checkpoint and copy progress)`,
      [{ sql: 'DELETE FROM syncctl.syncs WHERE name = $1', params: [sync.name] }], { destructive: true }));
  }
  return changes;
}

function diffSchema(state: SyncState): Change[] {
  const latest = state.migrations.at(-1)?.id ?? 0;
  const current = state.target.schemaVersion ?? 0;
  if (current >= latest) return [];
  const pending = state.migrations.filter((m) => m.id > current);
  return [change(state.sync, state.target.schemaVersion === undefined ? 'create' : 'update', 'target', 'schema:syncctl',
    `syncctl schema (migrations ${pending.map((m) => m.file).join(', ')})`,
    pending.map((m) => ({ sql: m.sql, display: `-- migration ${m.file}\n${m.sql.trim()}` })), { runner: 'migrate' })];
}

function diffRegistration(state: SyncState): Change[] {
  const { sync, target } = state;
  const changes: Change[] = [];
  if (!target.syncs.has(sync.name)) {
    changes.push(change(sync, 'create', 'target', `sync:${sync.name}`, `sync ${sync.name} in syncctl.syncs`, [{
      sql: 'INSERT INTO syncctl.syncs (name, spec_file) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', params: [sync.name, sync.file],
    }]));
  }
  const ours = target.registeredTables.filter((r) => r.syncName === sync.name);
  const registered = new Map(ours.map((r) => [r.tableName, r]));
  for (const table of sync.tables) {
    const before = registered.get(table.name);
    const facts = state.source.tables.get(tableKey(table.source));
    const decision = state.decisions.get(table.name);
    // The identity before syncctl changed it, once per source table: when another table of the
    // sync reading the same source table recorded it already, the identity now may be syncctl's own.
    const recorded = ours.find((r) => r.replicaIdentityBefore !== null && r.sourceTable === quoteQualified(table.source))?.replicaIdentityBefore;
    const identityBefore = decision?.setReplicaIdentity && facts ? recorded ?? encodeIdentity(facts) : null;
    const wanted = { source: quoteQualified(table.source), target: quoteQualified(table.target), mode: table.mode };
    const same = before && before.sourceTable === wanted.source && before.targetTable === wanted.target && before.mode === wanted.mode &&
      (identityBefore === null || before.replicaIdentityBefore !== null);
    if (same) continue;
    changes.push(change(sync, before ? 'update' : 'create', 'target', `sync-table:${sync.name}:${table.name}`,
      `table ${table.name} in syncctl.sync_tables (${formatQualifiedName(table.source)} -> ${formatQualifiedName(table.target)}, ${table.mode})`, [{
        sql: `INSERT INTO syncctl.sync_tables (sync_name, table_name, source_table, target_table, mode, replica_identity_before)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (sync_name, table_name) DO UPDATE SET source_table = excluded.source_table, target_table = excluded.target_table,
  mode = excluded.mode, replica_identity_before = coalesce(sync_tables.replica_identity_before, excluded.replica_identity_before),
  updated_at = now()`,
        params: [sync.name, table.name, wanted.source, wanted.target, table.mode, identityBefore],
      }]));
  }
  return changes;
}

/**
 * Tables registered but no longer in the spec: the replica identity syncctl changed is put back
 * (after the table left the publication, so no row filter needs it any more), then the
 * registration, which remembers the old identity, is deleted.
 */
function diffRemovedTables(state: SyncState): Change[] {
  const { sync } = state;
  const changes: Change[] = [];
  const removed = state.target.registeredTables.filter((r) => r.syncName === sync.name && !sync.tables.some((t) => t.name === r.tableName));
  const specSources = new Set(sync.tables.map((t) => tableKey(t.source)));
  const restored = new Set<string>();
  for (const r of removed) {
    const name = parseQualifiedName(r.sourceTable);
    const facts = name ? state.source.tables.get(tableKey(name)) : undefined;
    // Several removed tables may have read one source table: its identity is put back once.
    if (r.replicaIdentityBefore === null || !facts || specSources.has(tableKey(facts.name)) || restored.has(tableKey(facts.name))) continue;
    restored.add(tableKey(facts.name));
    const before = parseIdentity(r.replicaIdentityBefore);
    if (identityEquals(facts, before)) continue;
    changes.push(change(sync, 'update', 'source', `replica-identity:${tableKey(facts.name)}`,
      `replica identity of ${formatQualifiedName(facts.name)}: ${encodeIdentity(facts)} -> ${r.replicaIdentityBefore}`, [renderReplicaIdentity(facts.name, before)],
      { reason: `table ${r.tableName} was removed from the spec: put back as it was before syncctl changed it` }));
  }
  for (const r of removed) {
    changes.push(change(sync, 'delete', 'target', `sync-table:${sync.name}:${r.tableName}`, `table ${r.tableName} in syncctl.sync_tables (${r.sourceTable} -> ${r.targetTable})`,
      [{ sql: 'DELETE FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = $2', params: [sync.name, r.tableName] }],
      { destructive: true, reason: 'the table was removed from the spec; its target rows stay' }));
  }
  return changes;
}

/** One change per source table: the tables reading it share one decision (decideSharedSourceTable). */
function diffReplicaIdentity(state: SyncState, tables: readonly LoadedTable[]): Change[] {
  const table = tables[0]!;
  const decision = state.decisions.get(table.name);
  if (!decision?.setReplicaIdentity) return [];
  const facts = state.source.tables.get(tableKey(table.source))!;
  return [change(state.sync, 'update', 'source', `replica-identity:${tableKey(table.source)}`,
    `replica identity of ${formatQualifiedName(table.source)}: ${encodeIdentity(facts)} -> ${encodeSetting(decision.setReplicaIdentity)}`,
    [renderReplicaIdentity(table.source, decision.setReplicaIdentity)],
    decision.replicaIdentityReason ? { reason: decision.replicaIdentityReason } : {})];
}

function diffPublication(state: SyncState, name: string, tables: readonly LoadedTable[]): Change[] {
  const { sync } = state;
  const observed = state.source.publications.get(name);
  const changes: Change[] = [];
  if (tables.length === 0) {
    if (observed) changes.push(change(sync, 'delete', 'source', `publication:${name}`, `publication ${name}`, [renderDropPublication(name)], { destructive: true }));
    return changes;
  }
  if (!observed) {
    changes.push(change(sync, 'create', 'source', `publication:${name}`, `publication ${name}`, [renderCreatePublication(name)]));
  } else if (!(observed.publishesInsert && observed.publishesUpdate && observed.publishesDelete && observed.publishesTruncate && observed.viaRoot)) {
    changes.push(change(sync, 'update', 'source', `publication:${name}`, `publication ${name} options`, [renderAlterPublicationOptions(name)]));
  }
  const present = new Map((observed?.tables ?? []).map((t) => [tableKey(t.table), t]));
  // Postgres lists a table once per publication: one entry serves every spec table reading it.
  for (const group of bySourceTable(tables)) {
    const table = group[0]!;
    // Shared by the group (decideSharedSourceTable): the column list, and a publication row
    // filter only when every table of the group has that same filter.
    const decision = state.decisions.get(table.name)!;
    const rowFilter = decision.filterAt === 'publication' ? state.rowFilters.get(table.name) : undefined;
    const wanted: PublishedTable = {
      table: table.source,
      ...(decision.columnList ? { columns: decision.columnList } : {}),
      ...(rowFilter !== undefined ? { rowFilter } : {}),
    };
    const have = present.get(tableKey(table.source));
    const id = `publication-table:${name}:${tableKey(table.source)}`;
    const filterNotes = group.map((t) => {
      const reason = state.decisions.get(t.name)!.filterReason;
      return reason !== undefined && group.length > 1 ? `tables.${t.name}: ${reason}` : reason;
    });
    const columnNote = decision.columnList
      ? `column list: only the columns the mapping, key and filter ${group.length > 1 ? `of ${group.map((t) => `tables.${t.name}`).join(', ')} ` : ''}read`
      : undefined;
    const notes = [...filterNotes, columnNote].filter((n): n is string => n !== undefined).join('; ');
    const reason = notes ? { reason: notes } : {};
    if (!have) {
      changes.push(change(sync, 'create', 'source', id, `${formatQualifiedName(table.source)} in publication ${name}`, [renderAddPublicationTable(name, wanted)], reason));
    } else if (have.rowFilter !== wanted.rowFilter || !sameList(have.columns, wanted.columns)) {
      // Publishing every column where a list would do (a column added to the source) only costs traffic.
      const columnsOnly = have.rowFilter === wanted.rowFilter && (have.columns === undefined ||
        (wanted.columns ?? []).every((c) => have.columns!.includes(c)));
      changes.push(change(sync, 'update', 'source', id, `${formatQualifiedName(table.source)} in publication ${name}`,
        [renderDropPublicationTable(name, table.source), renderAddPublicationTable(name, wanted)], { ...reason, streamSafe: columnsOnly }));
    }
  }
  const wantedKeys = new Set(tables.map((t) => tableKey(t.source)));
  for (const [key, have] of present) {
    if (wantedKeys.has(key)) continue;
    changes.push(change(sync, 'delete', 'source', `publication-table:${name}:${key}`, `${formatQualifiedName(have.table)} in publication ${name}`,
      [renderDropPublicationTable(name, have.table)], { destructive: true }));
  }
  return changes;
}

function diffSlot(state: SyncState, wanted: boolean): Change[] {
  const { sync } = state;
  const name = slotName(sync.name);
  const slot = state.source.slots.get(name);
  if (!wanted) {
    return slot ? [change(sync, 'delete', 'source', `slot:${name}`, `replication slot ${name}`, [renderDropSlot(name)], { destructive: true })] : [];
  }
  if (!slot) return [initialCopy(state, name, 'create')];
  const wrong = slot.slotType !== 'logical' ? `it is a ${slot.slotType} slot`
    : slot.plugin !== 'pgoutput' ? `it uses plugin ${slot.plugin}`
    : slot.database !== state.source.server.database ? `it belongs to database ${slot.database}`
    : slot.walStatus === 'lost' ? 'the WAL it needs was removed (wal_status lost)'
    : undefined;
  if (!wrong) {
    const failover = sync.failover === true;
    if (slot.failover === failover || state.source.server.versionNum < 170000) return [];
    return [change(sync, 'update', 'source', `slot-failover:${name}`, `replication slot ${name}: failover ${failover ? 'on' : 'off'}`,
      [renderAlterSlotFailover(name, failover)], { runner: 'replication-command' })];
  }
  return [
    change(sync, 'delete', 'source', `slot:${name}`, `replication slot ${name}`, [renderDropSlot(name)],
      { destructive: true, reason: `${wrong}; recreating it loses its position: the tables are copied again` }),
    initialCopy(state, name, 'update'),
  ];
}

/** Creates the slot with an exported snapshot and copies every mapped table under it. */
function initialCopy(state: SyncState, slot: string, action: 'create' | 'update'): Change {
  const tables = state.sync.tables.filter((t) => t.mode === 'mapped');
  return change(state.sync, action, 'source', `slot:${slot}`, `replication slot ${slot} (pgoutput) and the initial copy of ${tables.length} table(s)`,
    [renderCreateSlot(slot, state.sync.failover === true), ...tables.map((t) => ({ sql: `-- copy ${formatQualifiedName(t.source)} -> ${formatQualifiedName(t.target)} under the slot's snapshot` }))],
    { runner: 'initial-copy', copyTables: tables.map((t) => t.name) });
}

/**
 * With the slot in place: tables not copied yet (added to the sync, or a copy cut short) are copied
 * under their own snapshot. A held table (`syncctl pause`) was copied: its changes wait for resume.
 */
function diffCopies(state: SyncState, tables: readonly LoadedTable[]): Change[] {
  const { sync } = state;
  const slot = state.source.slots.get(slotName(sync.name));
  if (!slot || diffSlot(state, true).length > 0) return [];
  const registered = new Map(state.target.registeredTables.filter((r) => r.syncName === sync.name).map((r) => [r.tableName, r]));
  return tables
    .filter((t) => !['streaming', 'held'].includes(registered.get(t.name)?.state ?? ''))
    .map((t) => {
      const state_ = registered.get(t.name)?.state;
      return change(sync, 'create', 'target', `copy:${sync.name}:${t.name}`, `initial copy of ${formatQualifiedName(t.source)} -> ${formatQualifiedName(t.target)}`,
        [{ sql: `-- copy ${formatQualifiedName(t.source)} -> ${formatQualifiedName(t.target)} under a temporary slot's snapshot` }],
        { runner: 'table-copy', copyTables: [t.name], ...(state_ === 'copying' ? { reason: 'an earlier copy was cut short: it resumes at the first unfinished chunk' } : {}) });
    });
}

function diffTriggers(state: SyncState, tables: readonly LoadedTable[]): Change[] {
  const { sync, target } = state;
  const changes: Change[] = [];
  for (const table of tables) {
    const key = state.keys.get(table.name) ?? table.key;
    const wantedArgs = [sync.name, tableKey(table.target), ...key];
    const have = target.triggers.get(tableKey(table.target));
    const id = `trigger:${tableKey(table.target)}`;
    const subject = `change tracking on ${formatQualifiedName(table.target)}`;
    if (!have) {
      changes.push(change(sync, 'create', 'target', id, subject, [renderTrackingTrigger(sync.name, table.target, key)]));
    } else if (have.functionName !== 'syncctl.track_change' || !sameList(have.args, wantedArgs) || !have.shapeMatches) {
      changes.push(change(sync, 'update', 'target', id, subject, [renderTrackingTrigger(sync.name, table.target, key)]));
    } else if (!have.enabled) {
      changes.push(change(sync, 'update', 'target', id, `${subject} (disabled by hand)`, [renderEnableTrigger(table.target)]));
    }
  }
  const wanted = new Set(tables.map((t) => tableKey(t.target)));
  for (const [key, have] of target.triggers) {
    if (have.args[0] !== sync.name || wanted.has(key)) continue;
    changes.push(change(sync, 'delete', 'target', `trigger:${key}`, `change tracking on ${formatQualifiedName(have.table)}`, [renderDropTrigger(have.table)]));
  }
  return changes;
}

function diffSubscription(state: SyncState, tables: readonly LoadedTable[]): Change[] {
  const { sync } = state;
  const name = subscriptionName(sync.name);
  const have = state.target.subscriptions.get(name);
  const id = `subscription:${name}`;
  if (tables.length === 0) {
    return have ? [change(sync, 'delete', 'target', id, `subscription ${name}`, [renderDropSubscription(name)], { destructive: true, transactional: false })] : [];
  }
  if (!have) {
    return [change(sync, 'create', 'target', id, `subscription ${name} to publication ${nativePublicationName(sync.name)}`,
      [renderCreateSubscription(name, sync.sourceUrl, nativePublicationName(sync.name))],
      { transactional: false, reason: 'native tables are mirrored by Postgres itself; it copies their rows first' })];
  }
  const statements: Statement[] = [];
  if (!have.enabled) statements.push(renderEnableSubscription(name));
  if (!sameList([...have.tables].sort(), tables.map((t) => tableKey(t.target)).sort())) statements.push(renderRefreshSubscription(name));
  return statements.length === 0 ? [] : [change(sync, 'update', 'target', id, `subscription ${name}`, statements, { transactional: false })];
}

function change(
  sync: LoadedSync, action: Change['action'], side: Change['side'], id: string, subject: string, statements: readonly Statement[],
  options: { destructive?: boolean; transactional?: boolean; reason?: string; runner?: Change['runner']; copyTables?: readonly string[]; streamSafe?: boolean } = {},
): Change {
  return {
    id, sync: sync.name, action, side, subject, statements,
    destructive: options.destructive ?? false,
    transactional: options.transactional ?? true,
    ...(options.reason ? { reason: options.reason } : {}),
    ...(options.runner ? { runner: options.runner } : {}),
    ...(options.copyTables ? { copyTables: options.copyTables } : {}),
    ...(options.streamSafe || id.startsWith('trigger:') || options.runner === 'table-copy' ? { streamSafe: true } : {}),
  };
}

/** The spec tables grouped by source table, in spec order (groups by their first table). */
function bySourceTable(tables: readonly LoadedTable[]): LoadedTable[][] {
  const groups = new Map<string, LoadedTable[]>();
  for (const t of tables) groups.set(tableKey(t.source), [...(groups.get(tableKey(t.source)) ?? []), t]);
  return [...groups.values()];
}

function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** 'default' | 'nothing' | 'full' | 'index:<name>', as kept in sync_tables.replica_identity_before. */
export function encodeIdentity(facts: TableFacts): string {
  return facts.replicaIdentity === 'index' ? `index:${facts.replicaIdentityIndex}` : facts.replicaIdentity;
}

function encodeSetting(setting: ReplicaIdentitySetting): string {
  return setting.kind === 'index' ? `index:${setting.index}` : setting.kind;
}

function parseIdentity(text: string): ReplicaIdentitySetting {
  if (text.startsWith('index:')) return { kind: 'index', index: text.slice('index:'.length) };
  return { kind: text as 'default' | 'nothing' | 'full' };
}

function identityEquals(facts: TableFacts, setting: ReplicaIdentitySetting): boolean {
  return encodeIdentity(facts) === encodeSetting(setting);
}

export type { RegisteredTable, QualifiedName };
