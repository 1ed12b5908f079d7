import type { ResolvedTable } from '../plan/plan-sync.ts';
import { quoteIdent } from '../sql/quote.ts';
import type { BatchTable } from './batch-writer.ts';
import type { ApplyTable } from './render-apply.ts';

/**
 * The set-based apply shape of a resolved table, for source columns delivered in `stagedColumns`
 * order (the stream's Relation message, or the initial copy's column list).
 */
export function buildApplyTable(id: string, resolved: ResolvedTable, stagedColumns: readonly string[], options: { asText?: boolean; skipUnchanged?: boolean } = {}): ApplyTable {
  const { table, decision } = resolved;
  const staged = stagedColumns.map((name) => {
    const stagingType = resolved.stagingTypes.get(name) ?? 'text';
    // `asText`: the target rejected a value while staging: every column goes in as text and is cast where the mapping reads it.
    return options.asText && stagingType !== 'text' ? { name, stagingType: 'text', castTo: stagingType } : { name, stagingType };
  });
  return {
    id,
    target: table.target,
    key: resolved.key,
    columns: table.columns.map((c) => ({ target: c.target, expression: c.expression, reads: resolved.columnsRead.get(c.target) ?? [] })),
    ...(decision.filterAt === 'worker' && table.where !== undefined ? { workerFilter: table.where, filterReads: resolved.whereColumnsRead } : {}),
    staged,
    tracked: table.mode === 'mapped',
    keyTypes: resolved.key.map((k) => resolved.targetFacts.columns.find((c) => c.name === k)?.type ?? 'text'),
    ...keySources(resolved, stagedColumns, options.asText === true),
    ...targetOwned(resolved),
    ...(options.skipUnchanged ? { skipUnchanged: true } : {}),
  };
}

/** Under the `fields` rule, the non-key columns the target owns (listed as 'target', or unlisted with default 'target'). */
function targetOwned(resolved: ResolvedTable): { targetOwned?: string[] } {
  const rule = resolved.table.conflict;
  if (rule.strategy !== 'fields') return {};
  const owned = resolved.table.columns.map((c) => c.target)
    .filter((c) => !resolved.key.includes(c) && (rule.owners[c] ?? rule.default) === 'target');
  return owned.length > 0 ? { targetOwned: owned } : {};
}

/** The batch writer's view of a resolved table: its apply shape, and what a parked change records of it. */
export function buildBatchTable(id: string, resolved: ResolvedTable, stagedColumns: readonly string[], order: number, options: { asText?: boolean; skipUnchanged?: boolean } = {}): BatchTable {
  const { table } = resolved;
  return { apply: buildApplyTable(id, resolved, stagedColumns, options), tableName: table.name, onError: table.onError, order, strategy: table.conflict.strategy, conflict: table.conflict };
}

/** Each target key column a bare reference to one staged source column: repeated keys are visible while staging. */
function keySources(resolved: ResolvedTable, stagedColumns: readonly string[], asText: boolean): { keySources?: string[]; exactKeys?: boolean } {
  const sources: string[] = [];
  for (const key of resolved.key) {
    const column = resolved.table.columns.find((c) => c.target === key);
    const reads = resolved.columnsRead.get(key) ?? [];
    if (!column || reads.length !== 1 || !stagedColumns.includes(reads[0]!)) return {};
    const bare = column.expression.trim();
    if (bare !== reads[0] && bare !== quoteIdent(reads[0]!)) return {};
    sources.push(reads[0]!);
  }
  // Integers and uuid compare by identity: two distinct staged keys of the target's own type are two target keys.
  const exact = !asText && sources.every((source, i) => {
    const type = resolved.stagingTypes.get(source);
    return type !== undefined && EXACT_KEY_TYPES.has(type) && resolved.targetFacts.columns.find((c) => c.name === resolved.key[i])?.type === type;
  });
  return { keySources: sources, ...(exact ? { exactKeys: true } : {}) };
}

const EXACT_KEY_TYPES = new Set(['smallint', 'integer', 'bigint', 'uuid']);

/** The source columns a table publishes: its column list, or every column the stream can carry. */
export function publishedColumns(resolved: ResolvedTable): string[] {
  return resolved.decision.columnList
    ? [...resolved.decision.columnList]
    : resolved.sourceFacts.columns.filter((c) => !c.generated).map((c) => c.name);
}
