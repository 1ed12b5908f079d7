/**
 * What `syncctl verify` compares for one table, and where the mapped source rows are computed.
 *
 * Both sides are reduced to the same rows: the target key columns and every mapped target column,
 * each of the target column's type, printed as text under the same value settings on both
 * sessions (see verify-session.ts). Target columns the spec does not map are not compared.
 *
 * - direct: the mapping (and a filter the worker evaluates) gives the same values on the source
 *   as in the target (the initial copy's probe, decideCopyPath), so the source computes the mapped
 *   rows itself and only hashes travel.
 * - staged: the source rows (the columns the mapping and the filter read) are shipped into a
 *   temp table on the target and mapped there, as the copy's staging path and the worker do.
 */
import type { CopyPath } from '../snapshot/source-evaluation.ts';
import type { ResolvedTable } from '../plan/plan-sync.ts';
import type { LoadedTable } from '../spec/loaded-sync.ts';
import { quoteIdent } from '../sql/quote.ts';

export interface TypedColumn {
  readonly name: string;
  /** format_type of the target column, with its modifier. */
  readonly type: string;
}

export interface DirectSource {
  readonly kind: 'direct';
  /** Target column -> SQL over the source row giving its value, of the target column's type. */
  readonly select: ReadonlyMap<string, string>;
  /** The rows that travel: the publication's filter and the worker's, as one condition over the source row. */
  readonly where?: string;
  readonly reason: string;
}

export interface StagedSource {
  readonly kind: 'staged';
  /** Source columns the mapping and the worker's filter read, with the type each is staged as in the target. */
  readonly reads: readonly TypedColumn[];
  readonly mapping: ReadonlyMap<string, string>;
  /** Evaluated on the source, as the publication evaluates it. */
  readonly publicationFilter?: string;
  /** Evaluated in the target over the staged row, as the worker evaluates it. */
  readonly workerFilter?: string;
  /**
   * Per target key column, the source column it is a bare copy of, of the very same type: rows
   * can then be looked up by key on the source. Absent: finding a key's source rows means
   * mapping the whole table.
   */
  readonly keySources?: readonly string[];
  readonly reason: string;
}

export interface VerifyShape {
  readonly table: LoadedTable;
  readonly key: readonly TypedColumn[];
  /** The mapped target columns compared, in spec order (the key columns among them). */
  readonly columns: readonly TypedColumn[];
  /**
   * Columns the target owns under the `fields` rule: written when a row is inserted and never by
   * an incoming update, so they are the target's to differ in. Not compared.
   */
  readonly targetOwned: readonly string[];
  readonly source: DirectSource | StagedSource;
  /** Every source column, in attnum order: what a repair sends of a row. */
  readonly sourceColumns: readonly string[];
}

/** Why a table cannot be compared at all, or its shape. */
export function buildVerifyShape(resolved: ResolvedTable, path: CopyPath): VerifyShape | { readonly unverifiable: string } {
  const { table, decision } = resolved;
  const targetTypes = new Map(resolved.targetFacts.columns.map((c) => [c.name, c.type]));
  const mapping = new Map(table.columns.map((c) => [c.target, c.expression]));
  // A key column the spec does not map holds its default: there is no source value to compare it with.
  const unmapped = resolved.key.find((k) => !mapping.has(k));
  if (unmapped !== undefined) return { unverifiable: `key column "${unmapped}" is not mapped` };
  const typed = (name: string): TypedColumn => ({ name, type: targetTypes.get(name) ?? 'text' });
  const publicationFilter = decision.filterAt === 'publication' && table.where !== undefined ? table.where : undefined;
  const workerFilter = decision.filterAt === 'worker' && table.where !== undefined ? table.where : undefined;
  const rule = table.conflict;
  const targetOwned = rule.strategy !== 'fields' ? [] : table.columns.map((c) => c.target)
    .filter((c) => !resolved.key.includes(c) && (rule.owners[c] ?? rule.default) === 'target');
  const shape = {
    table,
    key: resolved.key.map(typed),
    columns: table.columns.filter((c) => !targetOwned.includes(c.target)).map((c) => typed(c.target)),
    targetOwned,
    sourceColumns: resolved.sourceFacts.columns.map((c) => c.name),
  };
  if (path.direct) {
    const conditions = [...(publicationFilter !== undefined ? [`(${publicationFilter})`] : []), ...(path.filter !== undefined ? [path.filter] : [])];
    return {
      ...shape,
      source: {
        kind: 'direct', select: new Map(path.columns.map((c) => [c.target, c.select])),
        ...(conditions.length > 0 ? { where: conditions.join(' AND ') } : {}), reason: path.reason,
      },
    };
  }
  const readNames = [...new Set([...shape.columns.flatMap((c) => resolved.columnsRead.get(c.name) ?? []),
    ...(workerFilter !== undefined ? resolved.whereColumnsRead : [])])];
  // A mapping of constants alone reads nothing; one column keeps the staged rows countable.
  if (readNames.length === 0 && resolved.sourceFacts.columns[0] !== undefined) readNames.push(resolved.sourceFacts.columns[0].name);
  const keySources = bareKeySources(resolved);
  return {
    ...shape,
    source: {
      kind: 'staged',
      reads: readNames.map((name) => ({ name, type: resolved.stagingTypes.get(name) ?? 'text' })),
      mapping,
      ...(publicationFilter !== undefined ? { publicationFilter } : {}),
      ...(workerFilter !== undefined ? { workerFilter } : {}),
      ...(keySources !== undefined ? { keySources } : {}),
      reason: path.reason,
    },
  };
}

/**
 * The source column behind each key column when every key column is a bare reference to a source
 * column of the same type: equal values print the same and compare the same on both sides.
 */
function bareKeySources(resolved: ResolvedTable): string[] | undefined {
  const sources: string[] = [];
  for (const key of resolved.key) {
    const expression = resolved.table.columns.find((c) => c.target === key)?.expression.trim();
    const reads = resolved.columnsRead.get(key) ?? [];
    const column = reads[0];
    if (expression === undefined || reads.length !== 1 || column === undefined) return undefined;
    if (expression !== column && expression !== quoteIdent(column)) return undefined;
    const sourceType = resolved.sourceFacts.columns.find((c) => c.name === column)?.type;
    const targetType = resolved.targetFacts.columns.find((c) => c.name === key)?.type;
    if (sourceType === undefined || sourceType !== targetType || resolved.stagingTypes.get(column) !== sourceType) return undefined;
    sources.push(column);
  }
  return sources;
}
