import type { Connection } from '../db/connect.ts';
import { tableKey, type RegisteredTable, type ServerFacts, type SubscriptionFacts, type TableFacts, type TriggerFacts } from './facts.ts';
import type { QualifiedName } from '../sql/quote.ts';
import { observeServer } from './observe-server.ts';
import { observeTables } from './observe-tables.ts';

export const SYNCCTL_SCHEMA = 'syncctl';
export const TRACKING_TRIGGER = 'syncctl_track';

export interface TargetCatalog {
  readonly server: ServerFacts;
  readonly tables: ReadonlyMap<string, TableFacts | undefined>;
  /** Highest applied migration id; undefined when the syncctl schema does not exist. */
  readonly schemaVersion: number | undefined;
  /** Tracking triggers by target table key. */
  readonly triggers: ReadonlyMap<string, TriggerFacts>;
  readonly subscriptions: ReadonlyMap<string, SubscriptionFacts>;
  /** Registered syncs (name -> spec file) and their tables. */
  readonly syncs: ReadonlyMap<string, { specFile: string }>;
  readonly registeredTables: readonly RegisteredTable[];
  /** syncctl's replication origins of this database (`syncctl_<database oid>_<sync>_<n>`, see the worker's tagWrites). */
  readonly origins?: readonly string[];
}

export async function observeTarget(
  db: Connection,
  wanted: { tables: readonly QualifiedName[]; subscriptions: readonly string[]; syncs: readonly string[] },
): Promise<TargetCatalog> {
  const server = await observeServer(db);
  const tables = await observeTables(db, wanted.tables);
  const schemaVersion = await observeSchemaVersion(db);
  const registered = schemaVersion === undefined ? { syncs: new Map(), tables: [] } : await observeRegistered(db, wanted.syncs);
  return {
    server,
    tables,
    schemaVersion,
    triggers: await observeTrackingTriggers(db),
    subscriptions: await observeSubscriptions(db, wanted.subscriptions),
    syncs: registered.syncs,
    registeredTables: registered.tables,
    origins: await observeOrigins(db),
  };
}

/** pg_replication_origin is shared by the cluster: the names carry this database's oid. */
async function observeOrigins(db: Connection): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `SELECT roname AS name FROM pg_replication_origin
      WHERE starts_with(roname, 'syncctl_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '_') ORDER BY 1`);
  return rows.map((r) => r.name);
}

async function observeSchemaVersion(db: Connection): Promise<number | undefined> {
  const { rows } = await db.query<{ exists: boolean }>(
    `SELECT to_regclass(format('%I.migrations', $1::text)) IS NOT NULL AS exists`, [SYNCCTL_SCHEMA]);
  if (!rows[0]?.exists) return undefined;
  const version = await db.query<{ id: number | null }>(`SELECT max(id)::int AS id FROM syncctl.migrations`);
  return version.rows[0]?.id ?? 0;
}

async function observeRegistered(db: Connection, syncs: readonly string[]) {
  const s = await db.query<{ name: string; spec_file: string }>(
    `SELECT name, spec_file FROM syncctl.syncs WHERE name = ANY($1::text[])`, [syncs]);
  const t = await db.query<{
    sync_name: string; table_name: string; source_table: string; target_table: string; mode: 'mapped' | 'native';
    state: string; replica_identity_before: string | null;
  }>(`SELECT sync_name, table_name, source_table, target_table, mode, state, replica_identity_before
        FROM syncctl.sync_tables WHERE sync_name = ANY($1::text[]) ORDER BY sync_name, table_name`, [syncs]);
  return {
    syncs: new Map(s.rows.map((r) => [r.name, { specFile: r.spec_file }])),
    tables: t.rows.map((r): RegisteredTable => ({
      syncName: r.sync_name, tableName: r.table_name, sourceTable: r.source_table, targetTable: r.target_table,
      mode: r.mode, state: r.state, replicaIdentityBefore: r.replica_identity_before,
    })),
  };
}

/** Every syncctl tracking trigger in the database, also on tables no spec names any more. */
async function observeTrackingTriggers(db: Connection): Promise<Map<string, TriggerFacts>> {
  const { rows } = await db.query<{
    schema: string; table: string; name: string; function_name: string; args: Buffer; nargs: number; enabled: string;
    tgtype: number; has_when: boolean;
  }>(`
    SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name,
           fn.nspname || '.' || f.proname AS function_name, t.tgargs AS args, t.tgnargs AS nargs,
           t.tgenabled::text AS enabled, t.tgtype::int AS tgtype, t.tgqual IS NOT NULL AS has_when
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_proc f ON f.oid = t.tgfoid
      JOIN pg_namespace fn ON fn.oid = f.pronamespace
     WHERE t.tgname = $1 AND NOT t.tgisinternal`, [TRACKING_TRIGGER]);
  // tgtype bits: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32, INSTEAD 64.
  const ROW_AFTER_IUD = 1 | 4 | 8 | 16;
  return new Map(rows.map((r) => {
    const table = { schema: r.schema, name: r.table };
    const args = r.nargs === 0 ? [] : r.args.toString('utf8').split('\0').slice(0, r.nargs);
    return [tableKey(table), {
      table, name: r.name, functionName: r.function_name, args,
      enabled: r.enabled !== 'D',
      shapeMatches: r.tgtype === ROW_AFTER_IUD && r.has_when,
    }];
  }));
}

async function observeSubscriptions(db: Connection, names: readonly string[]): Promise<Map<string, SubscriptionFacts>> {
  // subconninfo is readable only by superusers, and carries a password: never read it.
  const { rows } = await db.query<{ name: string; enabled: boolean; slot_name: string | null; publications: string[]; tables: string[] }>(`
    SELECT s.subname AS name, s.subenabled AS enabled, s.subslotname::text AS slot_name, s.subpublications AS publications,
           array(SELECT n.nspname || '.' || c.relname FROM pg_subscription_rel sr
                   JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE sr.srsubid = s.oid ORDER BY 1) AS tables
      FROM pg_subscription s
     WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.subname = ANY($1::text[])`, [names]);
  return new Map(rows.map((r) => [r.name, { name: r.name, enabled: r.enabled, slotName: r.slot_name, publications: r.publications, tables: r.tables }]));
}
