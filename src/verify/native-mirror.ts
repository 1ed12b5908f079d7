/**
 * A native table as verify compares it: the identity mapping. Its subscription writes each
 * published source column into the target column of the same name, the source's text read by the
 * target type's input function; so each column is mapped by its bare name and staged as the
 * target column's type. Generated source columns are not published, and a generated target
 * column computes its own value: neither is compared, nor target columns the source lacks.
 */
import type { ResolvedTable } from '../plan/plan-sync.ts';
import { quoteIdent } from '../sql/quote.ts';

export function nativeIdentity(resolved: ResolvedTable): ResolvedTable {
  const target = new Map(resolved.targetFacts.columns.map((c) => [c.name, c]));
  const mirrored = resolved.sourceFacts.columns.filter((c) => !c.generated && target.has(c.name) && !target.get(c.name)!.generated).map((c) => c.name);
  return {
    ...resolved,
    table: { ...resolved.table, columns: mirrored.map((name) => ({ target: name, expression: quoteIdent(name) })) },
    columnsRead: new Map(mirrored.map((name) => [name, [name]])),
    stagingTypes: new Map(mirrored.map((name) => [name, target.get(name)!.type])),
  };
}
