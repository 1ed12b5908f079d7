import type { Connection } from '../db/connect.ts';
import type { QualifiedName } from '../sql/quote.ts';
import { tableKey, type ColumnFacts, type ReplicaIdentity, type TableFacts, type UniqueIndexFacts } from './facts.ts';

/** Reads the named tables in two queries; a table that does not exist maps to undefined. */
export async function observeTables(db: Connection, names: readonly QualifiedName[]): Promise<Map<string, TableFacts | undefined>> {
  const result = new Map<string, TableFacts | undefined>(names.map((n) => [tableKey(n), undefined]));
  if (names.length === 0) return result;
  const { rows: tables } = await db.query<{
    oid: number; schema: string; name: string; relkind: string; relreplident: string; ri_index: string | null;
    can_select: boolean; can_write: boolean; is_owner: boolean;
  }>(`
    SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind,
           c.relreplident::text AS relreplident,
           (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = c.oid AND i.indisreplident) AS ri_index,
           has_table_privilege(c.oid, 'SELECT') AS can_select,
           has_table_privilege(c.oid, 'INSERT,UPDATE,DELETE') AS can_write,
           pg_has_role(c.relowner, 'USAGE') AS is_owner
      FROM unnest($1::text[], $2::text[]) AS wanted(schema, name)
      JOIN pg_namespace n ON n.nspname = wanted.schema
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = wanted.name`,
    [names.map((n) => n.schema), names.map((n) => n.name)]);
  if (tables.length === 0) return result;
  const oids = tables.map((t) => t.oid);

  const { rows: columns } = await db.query<{
    oid: number; name: string; attnum: number; type: string; type_oid: number; type_schema: string; type_name: string;
    not_null: boolean; has_default: boolean; generated: boolean; identity: boolean;
  }>(`
    SELECT a.attrelid::int AS oid, a.attname AS name, a.attnum::int AS attnum,
           format_type(a.atttypid, a.atttypmod) AS type, a.atttypid::int AS type_oid,
           tn.nspname AS type_schema, t.typname AS type_name, a.attnotnull AS not_null,
           a.atthasdef AS has_default, a.attgenerated <> '' AS generated, a.attidentity <> '' AS identity
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      JOIN pg_namespace tn ON tn.oid = t.typnamespace
     WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attrelid, a.attnum`, [oids]);

  const { rows: indexes } = await db.query<{
    oid: number; name: string; columns: string[]; primary: boolean; usable: boolean; deferrable: boolean; partial: boolean; valid: boolean;
  }>(`
    SELECT i.indrelid::int AS oid, ic.relname AS name, i.indisprimary AS primary,
           NOT i.indimmediate AS deferrable, i.indpred IS NOT NULL AS partial, i.indisvalid AS valid,
           array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
           (i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indisvalid AND
            NOT EXISTS (SELECT 1 FROM unnest(i.indkey::int2[]) k(attnum)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                         WHERE NOT a.attnotnull)) AS usable
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
     WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND i.indexprs IS NULL
           AND 0 <> ALL (i.indkey::int2[])
     ORDER BY i.indisprimary DESC, ic.relname`, [oids]);

  for (const t of tables) {
    const cols: ColumnFacts[] = columns.filter((c) => c.oid === t.oid).map((c) => ({
      name: c.name, attnum: c.attnum, type: c.type, typeOid: c.type_oid, typeSchema: c.type_schema, typeName: c.type_name,
      notNull: c.not_null, hasDefault: c.has_default, generated: c.generated, identity: c.identity,
    }));
    const uniques: UniqueIndexFacts[] = indexes.filter((i) => i.oid === t.oid).map((i) => ({
      name: i.name, columns: i.columns, primary: i.primary, usableAsIdentity: i.usable,
      deferrable: i.deferrable, partial: i.partial, valid: i.valid,
    }));
    const primaryKey = uniques.find((u) => u.primary)?.columns ?? [];
    const replicaIdentity = identityOf(t.relreplident);
    const replicaIdentityColumns =
      replicaIdentity === 'full' ? cols.map((c) => c.name)
      : replicaIdentity === 'index' ? uniques.find((u) => u.name === t.ri_index)?.columns ?? []
      : replicaIdentity === 'default' ? primaryKey
      : [];
    const name = { schema: t.schema, name: t.name };
    result.set(tableKey(name), {
      name,
      oid: t.oid,
      kind: t.relkind === 'r' ? 'table' : t.relkind === 'p' ? 'partitioned' : 'other',
      columns: cols,
      replicaIdentity,
      ...(t.ri_index ? { replicaIdentityIndex: t.ri_index } : {}),
      replicaIdentityColumns,
      primaryKey,
      uniqueIndexes: uniques,
      canSelect: t.can_select,
      canWrite: t.can_write,
      isOwner: t.is_owner,
    });
  }
  return result;
}

function identityOf(relreplident: string): ReplicaIdentity {
  switch (relreplident) {
    case 'f': return 'full';
    case 'i': return 'index';
    case 'n': return 'nothing';
    default: return 'default';
  }
}
