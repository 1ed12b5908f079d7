import type { Connection } from '../db/connect.ts';
import type { QualifiedName } from '../sql/quote.ts';
import type { PublicationFacts, ServerFacts, SlotFacts, TableFacts } from './facts.ts';
import { observeServer } from './observe-server.ts';
import { observeTables } from './observe-tables.ts';

export interface SourceCatalog {
  readonly server: ServerFacts;
  readonly tables: ReadonlyMap<string, TableFacts | undefined>;
  readonly publications: ReadonlyMap<string, PublicationFacts>;
  readonly slots: ReadonlyMap<string, SlotFacts>;
}

export async function observeSource(
  db: Connection,
  wanted: { tables: readonly QualifiedName[]; publications: readonly string[]; slots: readonly string[] },
): Promise<SourceCatalog> {
  const server = await observeServer(db);
  const tables = await observeTables(db, wanted.tables);
  return { server, tables, publications: await observePublications(db, wanted.publications), slots: await observeSlots(db, wanted.slots) };
}

export async function observePublications(db: Connection, names: readonly string[]): Promise<Map<string, PublicationFacts>> {
  const { rows } = await db.query<{
    name: string; ins: boolean; upd: boolean; del: boolean; trunc: boolean; via_root: boolean;
    tables: { schema: string; name: string; row_filter: string | null; columns: string[] | null }[];
  }>(`
    SELECT p.pubname AS name, p.pubinsert AS ins, p.pubupdate AS upd, p.pubdelete AS del, p.pubtruncate AS trunc,
           p.pubviaroot AS via_root,
           coalesce((SELECT json_agg(json_build_object(
                        'schema', n.nspname, 'name', c.relname,
                        'row_filter', pg_get_expr(pr.prqual, pr.prrelid),
                        'columns', CASE WHEN pr.prattrs IS NULL THEN NULL ELSE
                          (SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                            WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs::int2[])) END)
                      ORDER BY n.nspname, c.relname)
                       FROM pg_publication_rel pr
                       JOIN pg_class c ON c.oid = pr.prrelid
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE pr.prpubid = p.oid), '[]') AS tables
      FROM pg_publication p WHERE p.pubname = ANY($1::text[])`, [names]);
  return new Map(rows.map((r) => [r.name, {
    name: r.name,
    publishesInsert: r.ins,
    publishesUpdate: r.upd,
    publishesDelete: r.del,
    publishesTruncate: r.trunc,
    viaRoot: r.via_root,
    tables: r.tables.map((t) => ({
      table: { schema: t.schema, name: t.name },
      ...(t.row_filter === null ? {} : { rowFilter: t.row_filter }),
      ...(t.columns === null ? {} : { columns: t.columns }),
    })),
  }]));
}

export async function observeSlots(db: Connection, names: readonly string[]): Promise<Map<string, SlotFacts>> {
  const { rows } = await db.query<{
    name: string; plugin: string | null; slot_type: string; database: string | null; active: boolean;
    active_pid: number | null; wal_status: string | null; restart_lsn: string | null; confirmed_flush_lsn: string | null;
    invalidation_reason: string | null; failover: boolean | null;
  }>(`
    SELECT slot_name::text AS name, plugin::text AS plugin, slot_type, database::text AS database, active, active_pid,
           wal_status, restart_lsn::text AS restart_lsn, confirmed_flush_lsn::text AS confirmed_flush_lsn,
           to_jsonb(s) ->> 'invalidation_reason' AS invalidation_reason, (to_jsonb(s) ->> 'failover')::boolean AS failover
      FROM pg_replication_slots AS s WHERE slot_name = ANY($1::text[])`, [names]);
  return new Map(rows.map((r) => [r.name, {
    name: r.name, plugin: r.plugin, slotType: r.slot_type, database: r.database, active: r.active, activePid: r.active_pid,
    walStatus: r.wal_status, restartLsn: r.restart_lsn, confirmedFlushLsn: r.confirmed_flush_lsn, failover: r.failover ?? false,
    ...(r.invalidation_reason === null ? {} : { invalidationReason: r.invalidation_reason }),
  }]));
}
