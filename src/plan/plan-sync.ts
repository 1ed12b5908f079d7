/**
 * plan for one sync: observe both catalogs, check the spec against them, decide how each source
 * table is published, and diff. Reads only; every check that fails is reported at once.
 */
import { analyzeMapping, type MappingAnalysis } from '../catalog/analyze-mapping.ts';
import { tableKey, type TableFacts } from '../catalog/facts.ts';
import { observeMonetary } from '../catalog/observe-monetary.ts';
import { keyColumnsNeverNull } from '../catalog/prove-key-not-null.ts';
import { observeSource, type SourceCatalog } from '../catalog/observe-source.ts';
import { observeTarget, type TargetCatalog } from '../catalog/observe-target.ts';
import { probeRowFilter } from '../catalog/probe-row-filter.ts';
import type { Connection } from '../db/connect.ts';
import { SyncctlError, type Problem } from '../errors.ts';
import type { LoadedSync, LoadedTable } from '../spec/loaded-sync.ts';
import { formatQualifiedName, parseQualifiedName, type QualifiedName } from '../sql/quote.ts';
import type { Change } from './change.ts';
import { keyIndexProblem } from './check-key-index.ts';
import { mergeProblems } from './check-merge.ts';
import { monetaryProblems } from './check-monetary.ts';
import { decideSharedSourceTable, type SourceTableDecision, type SourceTableReader } from './decide-source-table.ts';
import { destroySync, diffSync, type SyncState } from './diff-sync.ts';
import { listMigrations } from './migrations.ts';
import { preflight } from './preflight.ts';
import { nativePublicationName, publicationName, slotName, subscriptionName } from './render-ddl.ts';

export interface SyncPlan {
  readonly sync: LoadedSync;
  readonly changes: readonly Change[];
  /** Facts worth telling although nothing changes (filters evaluated by the worker). */
  readonly notes: readonly string[];
  readonly warnings: readonly string[];
  /** Per spec table name: what the stream and the initial copy need to know (empty for destroy). */
  readonly tables: ReadonlyMap<string, ResolvedTable>;
}

/** A table as checked against the live catalogs: how it is published and how it maps. */
export interface ResolvedTable {
  readonly table: LoadedTable;
  readonly key: readonly string[];
  readonly decision: SourceTableDecision;
  /** Target column -> the source columns its expression reads (mapped tables). */
  readonly columnsRead: ReadonlyMap<string, readonly string[]>;
  /** Source columns the row filter reads (mapped tables). */
  readonly whereColumnsRead: readonly string[];
  /** Source column -> the type it is staged as in the target. */
  readonly stagingTypes: ReadonlyMap<string, string>;
  readonly sourceFacts: TableFacts;
  readonly targetFacts: TableFacts;
}

export interface Connections {
  readonly source: Connection;
  readonly target: Connection;
}

export async function observeSync(sync: LoadedSync, target: Connection, source: Connection | undefined) {
  const targetCatalog = await observeTarget(target, {
    tables: sync.tables.map((t) => t.target),
    subscriptions: [subscriptionName(sync.name)],
    syncs: [sync.name],
  });
  const registeredSources = targetCatalog.registeredTables
    .map((r) => parseQualifiedName(r.sourceTable))
    .filter((n): n is QualifiedName => n !== undefined);
  const sourceCatalog = source
    ? await observeSource(source, {
      tables: uniqueNames([...sync.tables.map((t) => t.source), ...registeredSources]),
      publications: [publicationName(sync.name), nativePublicationName(sync.name)],
      // The subscription's slot too: destroy drops it when it outlived its subscription.
      slots: [slotName(sync.name), subscriptionName(sync.name)],
    })
    : undefined;
  return { targetCatalog, sourceCatalog };
}

export async function planSync(sync: LoadedSync, db: Connections): Promise<SyncPlan> {
  const { targetCatalog, sourceCatalog } = await observeSync(sync, db.target, db.source);
  const source = sourceCatalog!;
  const hasMapped = sync.tables.some((t) => t.mode === 'mapped');
  const hasNative = sync.tables.some((t) => t.mode === 'native');
  const slotsToCreate = (hasMapped && !source.slots.has(slotName(sync.name)) ? 1 : 0) +
    (hasNative && !targetCatalog.subscriptions.has(subscriptionName(sync.name)) ? 1 : 0);
  const preflightProblems = preflight(sync, source, targetCatalog, { slotsToCreate });
  if (preflightProblems.length > 0) {
    throw new SyncctlError('PREFLIGHT_FAILED', `${sync.name}: the servers cannot host this sync as they are`, { problems: preflightProblems });
  }

  const problems: Problem[] = [];
  const decisions = new Map<string, SourceTableDecision>();
  const rowFilters = new Map<string, string>();
  const keys = new Map<string, readonly string[]>();
  const notes: string[] = [];
  const resolved = new Map<string, ResolvedTable>();
  // Every table that checked out, grouped by source table: one publication entry and one replica
  // identity serve all the tables reading a source table, so they are decided together.
  const checkedTables: { table: LoadedTable; checked: CheckedTable; sourceFacts: TableFacts; targetFacts: TableFacts }[] = [];
  const bySource = new Map<string, { facts: TableFacts; readers: SourceTableReader[] }>();
  for (const table of sync.tables) {
    const sourceFacts = source.tables.get(tableKey(table.source))!;
    const targetFacts = targetCatalog.tables.get(tableKey(table.target))!;
    const at = (path: string, message: string) => problems.push({ file: sync.file, path: `tables.${table.name}.${path}`, message });
    const checked = table.mode === 'mapped'
      ? await checkMappedTable(db.target, sync, table, sourceFacts, targetFacts, at)
      : checkNativeTable(table, sourceFacts, targetFacts, at);
    if (!checked) continue;
    keys.set(table.name, checked.key);

    const probe = table.where !== undefined ? await probeRowFilter(db.source, table.source, table.where) : undefined;
    if (probe?.ok) rowFilters.set(table.name, probe.normalized);
    const reader: SourceTableReader = {
      name: table.name,
      needs: {
        mode: table.mode,
        keyColumnsRead: checked.keyColumnsRead,
        columnsRead: checked.columnsRead,
        whereColumnsRead: table.mode === 'native' && probe?.ok ? probe.columnsRead : checked.whereColumnsRead,
        hasWhere: table.where !== undefined,
        whereValidAsRowFilter: probe?.ok ?? false,
        ...(probe && !probe.ok ? { whereRowFilterError: probe.error } : {}),
        replicaIdentity: table.replicaIdentity,
      },
      ...(probe?.ok ? { rowFilter: probe.normalized } : {}),
    };
    checkedTables.push({ table, checked, sourceFacts, targetFacts });
    const group = bySource.get(tableKey(table.source)) ?? { facts: sourceFacts, readers: [] };
    group.readers.push(reader);
    bySource.set(tableKey(table.source), group);
  }
  // A table that failed its checks has no say in how its source table is published: plan stops
  // with its problem before anything is diffed.
  const decided = new Map<string, SourceTableDecision>();
  for (const { facts, readers } of bySource.values()) {
    for (const [name, decision] of decideSharedSourceTable(facts, readers)) decided.set(name, decision);
  }
  for (const { table, checked, sourceFacts, targetFacts } of checkedTables) {
    const decision = decided.get(table.name)!;
    if (decision.error) {
      problems.push({ file: sync.file, path: `tables.${table.name}.where`, message: decision.error });
      continue;
    }
    if (decision.filterReason) notes.push(`${sync.name}.${table.name}: ${decision.filterReason}`);
    decisions.set(table.name, decision);
    resolved.set(table.name, {
      table, key: checked.key, decision, columnsRead: checked.mapping?.columnsRead ?? new Map(), whereColumnsRead: checked.whereColumnsRead,
      stagingTypes: checked.mapping?.stagingTypes ?? new Map(), sourceFacts, targetFacts,
    });
  }
  if (resolved.size > 0) {
    const sourceMonetary = await observeMonetary(db.source, [...resolved.values()].map((r) => r.sourceFacts.oid));
    problems.push(...monetaryProblems(sync, resolved.values(), sourceMonetary, await observeMonetary(db.target, [])));
  }
  if (problems.length > 0) {
    throw new SyncctlError('CATALOG_MISMATCH', `${sync.name}: the spec does not fit the live databases`, { problems });
  }
  const state: SyncState = { sync, source, target: targetCatalog, decisions, rowFilters, keys, migrations: listMigrations() };
  return { sync, changes: diffSync(state), notes, warnings: [], tables: resolved };
}

/** The plan that removes what syncctl created for a sync. The source may be unreachable. */
export async function planDestroy(sync: LoadedSync, target: Connection, source: Connection | undefined): Promise<SyncPlan> {
  const { targetCatalog, sourceCatalog } = await observeSync(sync, target, source);
  const slots = [slotName(sync.name), ...(targetCatalog.subscriptions.has(subscriptionName(sync.name)) ? [subscriptionName(sync.name)] : [])];
  const warnings = source ? [] : [
    `the source database could not be reached: replication slot${slots.length > 1 ? 's' : ''} ${slots.join(', ')} and publications ` +
    `${publicationName(sync.name)}, ${nativePublicationName(sync.name)} may be left behind there. An abandoned slot retains WAL ` +
    `until the source's disk fills. Run destroy again when the source is reachable (the sync stays registered on the target until then), ` +
    `or drop ${slots.length > 1 ? 'them' : 'it'} there by hand: ${slots.map((s) => `SELECT pg_drop_replication_slot('${s}')`).join('; ')}`,
  ];
  const changes = destroySync({
    sync, source: sourceCatalog, target: targetCatalog, decisions: new Map(), rowFilters: new Map(), keys: new Map(),
    migrations: listMigrations(),
  });
  return { sync, changes, notes: [], warnings, tables: new Map() };
}

interface CheckedTable {
  readonly key: readonly string[];
  readonly keyColumnsRead: readonly string[];
  readonly columnsRead: readonly string[];
  readonly whereColumnsRead: readonly string[];
  readonly mapping?: MappingAnalysis;
}

async function checkMappedTable(
  target: Connection, sync: LoadedSync, table: LoadedTable, sourceFacts: TableFacts, targetFacts: TableFacts,
  at: (path: string, message: string) => void,
): Promise<CheckedTable | undefined> {
  const analysis = await analyzeMapping(target, sync, table, sourceFacts, targetFacts);
  for (const p of analysis.problems) at(p.path!.slice(`tables.${table.name}.`.length), p.message);
  // A nullable key column is fine where the row filter keeps NULL keys out; until the mapping
  // itself is sound, nothing is said about it.
  const nullable = table.key.filter((k) => !targetFacts.columns.find((c) => c.name === k)?.notNull);
  const neverNull = analysis.problems.length > 0 ? table.key
    : await keyColumnsNeverNull(target, table, sourceFacts, analysis.stagingTypes, nullable);
  const keyProblem = keyIndexProblem(table.key, targetFacts, { upsert: true, neverNull });
  if (keyProblem) at('key', keyProblem);
  if (keyProblem || analysis.problems.length > 0) return undefined;
  const merge = await mergeProblems(target, table);
  for (const p of merge) at(p.path!, p.message);
  if (merge.length > 0) return undefined;
  // Generated source columns are not in the stream (syncctl publishes stored columns only), nor
  // in the copy, which reads what the stream carries: a mapping cannot read them.
  const generated = new Set(sourceFacts.columns.filter((c) => c.generated).map((c) => c.name));
  let readsGenerated = false;
  const generatedProblem = (path: string, reads: readonly string[]) => {
    const names = reads.filter((c) => generated.has(c));
    if (names.length === 0) return;
    readsGenerated = true;
    at(path, `reads generated source column(s) ${names.join(', ')} of ${formatQualifiedName(table.source)}: generated columns are not ` +
      `replicated (Postgres before 18 cannot publish them, and syncctl does not); compute the value in the mapping from the columns ` +
      `${names.length === 1 ? 'it is' : 'they are'} generated from`);
  };
  for (const [column, reads] of analysis.columnsRead) generatedProblem(`columns.${column}`, reads);
  generatedProblem('where', analysis.whereColumnsRead);
  if (readsGenerated) return undefined;
  return {
    key: table.key,
    keyColumnsRead: analysis.keyColumnsRead,
    columnsRead: [...new Set([...analysis.columnsRead.values()].flat())],
    whereColumnsRead: analysis.whereColumnsRead,
    mapping: analysis,
  };
}

function checkNativeTable(
  table: LoadedTable, sourceFacts: TableFacts, targetFacts: TableFacts, at: (path: string, message: string) => void,
): CheckedTable | undefined {
  let ok = true;
  if (tableKey(table.source) !== tableKey(table.target)) {
    at('to', `a native table keeps its name on both sides (native subscriptions match tables by name): expected ${formatQualifiedName(table.source)}, got ${formatQualifiedName(table.target)}`);
    ok = false;
  }
  const targetColumns = new Set(targetFacts.columns.map((c) => c.name));
  const missing = sourceFacts.columns.filter((c) => !c.generated && !targetColumns.has(c.name)).map((c) => c.name);
  if (missing.length > 0) {
    at('to', `a native mirror needs every source column on the target; ${formatQualifiedName(table.target)} lacks ${missing.join(', ')}`);
    ok = false;
  }
  const key = table.key.length > 0 ? table.key : targetFacts.primaryKey;
  if (key.length === 0) {
    at('key', `${formatQualifiedName(table.target)} has no primary key; give key: [...] backed by a unique index`);
    ok = false;
  } else if (table.key.length > 0) {
    const problem = keyIndexProblem(table.key, targetFacts, { upsert: false });
    if (problem) { at('key', problem); ok = false; }
  }
  if (!ok) return undefined;
  // Native tables publish every column; the columns their filter reads come from the source probe.
  return { key, keyColumnsRead: [], columnsRead: [], whereColumnsRead: [] };
}

function uniqueNames(names: readonly QualifiedName[]): QualifiedName[] {
  const seen = new Map(names.map((n) => [tableKey(n), n]));
  return [...seen.values()];
}

export type { SourceCatalog, TargetCatalog };
