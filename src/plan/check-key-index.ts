/**
 * A table's key must identify one target row, and the worker writes rows with
 * INSERT … ON CONFLICT (key). So some index covering exactly the key columns must be:
 * - a primary key, or unique;
 * - on NOT NULL columns: NULL never equals NULL in a unique index, so a row whose key holds a NULL
 *   is never found again, and every change to it inserts another row (a nullable column is fine
 *   where the row filter provably keeps NULL keys out: `neverNull`);
 * - not deferrable: ON CONFLICT refuses a deferrable index as its arbiter, every write would fail;
 * - not partial: it is unique only among the rows its predicate selects (and ON CONFLICT infers
 *   it only with that predicate);
 * - valid: an index a failed CREATE INDEX CONCURRENTLY left behind enforces nothing.
 * Pure: catalog facts in, the reason and the fix out.
 */
import type { TableFacts, UniqueIndexFacts } from '../catalog/facts.ts';
import { formatQualifiedName, quoteIdent } from '../sql/quote.ts';

export interface KeyIndexNeeds {
  /** Rows are upserted with ON CONFLICT (mapped tables); a native subscription does not upsert. */
  readonly upsert: boolean;
  /** Key columns that are nullable on the target but never written NULL (the row filter keeps NULL keys out). */
  readonly neverNull?: readonly string[];
}

export function keyIndexProblem(key: readonly string[], facts: TableFacts, needs: KeyIndexNeeds): string | undefined {
  const wanted = new Set(key);
  const table = formatQualifiedName(facts.name);
  const covering = facts.uniqueIndexes.filter((i) => i.columns.length === wanted.size && i.columns.every((c) => wanted.has(c)));
  if (covering.length === 0) {
    return `no primary key or unique index on ${table} covers exactly (${key.join(', ')}); ` +
      `the key must identify one target row: CREATE UNIQUE INDEX ON ${table} (${key.join(', ')})`;
  }
  const reasons = covering.map((index) => ({ index, why: unusable(index, facts, needs) }));
  if (reasons.some((r) => r.why.length === 0)) return undefined;
  const { index, why } = reasons[0]!;
  return `${index.primary ? 'primary key' : 'unique index'} ${index.name} on ${table} covers the key (${key.join(', ')}), but ${why.join('; and ')}`;
}

/** Why `index` cannot back the key, each with its fix; empty when it can. */
function unusable(index: UniqueIndexFacts, facts: TableFacts, needs: KeyIndexNeeds): string[] {
  const table = formatQualifiedName(facts.name);
  const why: string[] = [];
  if (needs.upsert && index.deferrable) {
    why.push('it is DEFERRABLE: ON CONFLICT cannot use a deferrable unique index, so every write of the table would fail. ' +
      `Recreate ${index.primary ? 'the primary key' : 'the constraint'} without DEFERRABLE`);
  }
  if (index.partial) {
    why.push('it is partial (WHERE …): rows outside its predicate may repeat the key, and ON CONFLICT does not infer it. ' +
      `Create a unique index on the key without a predicate: CREATE UNIQUE INDEX ON ${table} (${index.columns.join(', ')})`);
  }
  if (index.valid === false) {
    why.push(`it is invalid (a failed CREATE INDEX CONCURRENTLY): REINDEX INDEX ${formatQualifiedName({ schema: facts.name.schema, name: index.name })}`);
  }
  const nullable = index.columns.filter((c) => !facts.columns.find((col) => col.name === c)?.notNull && !needs.neverNull?.includes(c));
  if (!index.primary && nullable.length > 0) {
    const many = nullable.length > 1;
    why.push(`column${many ? 's' : ''} ${nullable.join(', ')} ${many ? 'are' : 'is'} nullable: NULL never equals NULL in a unique index, so every ` +
      'change to a row whose key holds a NULL would insert another row instead of updating it. ' +
      `Make ${many ? 'them' : 'it'} NOT NULL (ALTER TABLE ${table} ${nullable.map((c) => `ALTER COLUMN ${readableIdent(c)} SET NOT NULL`).join(', ')}), ` +
      `or keep such rows out with a row filter (where: sql\`${nullable.map((c) => `${readableIdent(c)} IS NOT NULL`).join(' AND ')}\`, ` +
      'on the source columns the key is computed from)');
  }
  return why;
}

/** A column name as a person types it: bare when Postgres would not fold it, else quoted. */
function readableIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : quoteIdent(name);
}
