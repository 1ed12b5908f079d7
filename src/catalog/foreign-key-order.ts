import type { Connection } from '../db/connect.ts';
import type { QualifiedName } from '../sql/quote.ts';
import { tableKey } from './facts.ts';

/**
 * Orders target tables parents first by their foreign keys (among the given tables), so copies
 * and writes insert parents before children and deletes run the other way. Cycles keep spec order.
 */
export async function foreignKeyOrder(target: Connection, tables: readonly QualifiedName[]): Promise<Map<string, number>> {
  const keys = tables.map(tableKey);
  const { rows } = await target.query<{ child: string; parent: string }>(`
    SELECT cn.nspname || '.' || c.relname AS child, pn.nspname || '.' || p.relname AS parent
      FROM pg_constraint k
      JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
      JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
     WHERE k.contype = 'f' AND k.conrelid <> k.confrelid`);
  const wanted = new Set(keys);
  const parents = new Map<string, Set<string>>(keys.map((k) => [k, new Set()]));
  for (const r of rows) if (wanted.has(r.child) && wanted.has(r.parent)) parents.get(r.child)!.add(r.parent);
  const order = new Map<string, number>();
  const visiting = new Set<string>();
  const visit = (key: string) => {
    if (order.has(key) || visiting.has(key)) return;
    visiting.add(key);
    for (const parent of parents.get(key) ?? []) visit(parent);
    visiting.delete(key);
    order.set(key, order.size);
  };
  keys.forEach(visit);
  return order;
}
