import type { Connection } from '../db/connect.ts';
import type { ServerFacts } from './facts.ts';

export async function observeServer(db: Connection): Promise<ServerFacts> {
  const { rows } = await db.query<{
    version_num: string; version: string; database: string; current_user: string; is_superuser: boolean;
    can_replicate: boolean; can_create: boolean; wal_level: string; max_slots: string; slots_used: string;
    max_senders: string; senders_used: string;
  }>(`
    SELECT current_setting('server_version_num') AS version_num,
           current_setting('server_version') AS version,
           current_database() AS database,
           current_user AS current_user,
           r.rolsuper AS is_superuser,
           (r.rolsuper OR r.rolreplication) AS can_replicate,
           has_database_privilege(current_database(), 'CREATE') AS can_create,
           current_setting('wal_level') AS wal_level,
           current_setting('max_replication_slots') AS max_slots,
           (SELECT count(*) FROM pg_replication_slots) AS slots_used,
           current_setting('max_wal_senders') AS max_senders,
           (SELECT count(*) FROM pg_stat_replication) AS senders_used
      FROM pg_roles r WHERE r.rolname = current_user`);
  const row = rows[0]!;
  return {
    versionNum: Number(row.version_num),
    version: row.version,
    database: row.database,
    currentUser: row.current_user,
    isSuperuser: row.is_superuser,
    canReplicate: row.can_replicate,
    canCreateInDatabase: row.can_create,
    walLevel: row.wal_level,
    maxReplicationSlots: Number(row.max_slots),
    replicationSlotsUsed: Number(row.slots_used),
    maxWalSenders: Number(row.max_senders),
    walSendersUsed: Number(row.senders_used),
  };
}
