/**
 * Small pure functions that turn desired objects into DDL. Identifiers go through quoteIdent,
 * literals through quoteLiteral; spec SQL (row filters) is inserted only in parentheses and every
 * statement runs alone over the extended protocol.
 */
import { quoteIdent, quoteLiteral, quoteQualified, type QualifiedName } from '../sql/quote.ts';
import { redactConnectionStrings } from '../observe/redact.ts';
import type { Statement } from './change.ts';

export const PUBLISH_OPTIONS = `publish = 'insert, update, delete, truncate', publish_via_partition_root = true`;

export interface PublishedTable {
  readonly table: QualifiedName;
  readonly columns?: readonly string[];
  readonly rowFilter?: string;
}

export function publicationName(sync: string): string {
  return `syncctl_${sync}`;
}
export function nativePublicationName(sync: string): string {
  return `syncctl_${sync}_native`;
}
export function slotName(sync: string): string {
  return `syncctl_${sync}`;
}
export function subscriptionName(sync: string): string {
  return `syncctl_${sync}_native`;
}

export function renderCreatePublication(name: string): Statement {
  return { sql: `CREATE PUBLICATION ${quoteIdent(name)} WITH (${PUBLISH_OPTIONS})` };
}

export function renderAlterPublicationOptions(name: string): Statement {
  return { sql: `ALTER PUBLICATION ${quoteIdent(name)} SET (${PUBLISH_OPTIONS})` };
}

export function renderDropPublication(name: string): Statement {
  return { sql: `DROP PUBLICATION IF EXISTS ${quoteIdent(name)}` };
}

export function renderPublishedTable(table: PublishedTable): string {
  const columns = table.columns ? ` (${table.columns.map(quoteIdent).join(', ')})` : '';
  const filter = table.rowFilter !== undefined ? ` WHERE (${table.rowFilter})` : '';
  return `${quoteQualified(table.table)}${columns}${filter}`;
}

export function renderAddPublicationTable(publication: string, table: PublishedTable): Statement {
  return { sql: `ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ${renderPublishedTable(table)}` };
}

export function renderDropPublicationTable(publication: string, table: QualifiedName): Statement {
  return { sql: `ALTER PUBLICATION ${quoteIdent(publication)} DROP TABLE ${quoteQualified(table)}` };
}

export type ReplicaIdentitySetting = { kind: 'default' } | { kind: 'full' } | { kind: 'nothing' } | { kind: 'index'; index: string };

export function renderReplicaIdentity(table: QualifiedName, identity: ReplicaIdentitySetting): Statement {
  const clause = identity.kind === 'index' ? `USING INDEX ${quoteIdent(identity.index)}` : identity.kind.toUpperCase();
  return { sql: `ALTER TABLE ${quoteQualified(table)} REPLICA IDENTITY ${clause}` };
}

/** Display form: the slot is created on a replication connection, exporting its snapshot for the copy. */
export function renderCreateSlot(slot: string, failover = false): Statement {
  return { sql: `CREATE_REPLICATION_SLOT ${quoteIdent(slot)} LOGICAL pgoutput (SNAPSHOT 'export'${failover ? ', FAILOVER true' : ''})` };
}

/** Turns failover on or off for an existing slot (PostgreSQL 17 and later; a replication command). */
export function renderAlterSlotFailover(slot: string, failover: boolean): Statement {
  return { sql: `ALTER_REPLICATION_SLOT ${quoteIdent(slot)} (FAILOVER ${failover})` };
}

export function renderDropSlot(slot: string): Statement {
  return { sql: `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${quoteLiteral(slot)}` };
}

/** The worker marks its own writes with this setting; the trigger's WHEN clause skips them. */
export const WRITER_SETTING = 'syncctl.writer';

export function renderTrackingTrigger(sync: string, table: QualifiedName, key: readonly string[]): Statement {
  const args = [sync, `${table.schema}.${table.name}`, ...key].map(quoteLiteral).join(', ');
  return {
    sql: `CREATE OR REPLACE TRIGGER syncctl_track AFTER INSERT OR UPDATE OR DELETE ON ${quoteQualified(table)} ` +
      `FOR EACH ROW WHEN (current_setting(${quoteLiteral(WRITER_SETTING)}, true) IS DISTINCT FROM 'on') ` +
      `EXECUTE FUNCTION syncctl.track_change(${args})`,
  };
}

export function renderEnableTrigger(table: QualifiedName): Statement {
  return { sql: `ALTER TABLE ${quoteQualified(table)} ENABLE TRIGGER syncctl_track` };
}

export function renderDropTrigger(table: QualifiedName): Statement {
  return { sql: `DROP TRIGGER IF EXISTS syncctl_track ON ${quoteQualified(table)}` };
}

export function renderCreateSubscription(name: string, connection: string, publication: string): Statement {
  const render = (conninfo: string) =>
    `CREATE SUBSCRIPTION ${quoteIdent(name)} CONNECTION ${quoteLiteral(conninfo)} PUBLICATION ${quoteIdent(publication)} ` +
    `WITH (slot_name = ${quoteLiteral(name)}, create_slot = true, copy_data = true)`;
  return { sql: render(connection), display: render(redactConnectionStrings(connection)) };
}

export function renderRefreshSubscription(name: string): Statement {
  return { sql: `ALTER SUBSCRIPTION ${quoteIdent(name)} REFRESH PUBLICATION WITH (copy_data = true)` };
}

export function renderEnableSubscription(name: string): Statement {
  return { sql: `ALTER SUBSCRIPTION ${quoteIdent(name)} ENABLE` };
}

/** DROP SUBSCRIPTION also drops its slot on the source. */
export function renderDropSubscription(name: string): Statement {
  return { sql: `DROP SUBSCRIPTION IF EXISTS ${quoteIdent(name)}` };
}

/**
 * Drops a subscription without connecting to its publisher (which DROP SUBSCRIPTION would do to
 * drop the slot, failing while the source is down): detach the slot first. The slot stays on the
 * source.
 */
export function renderDetachAndDropSubscription(name: string): Statement[] {
  return [
    { sql: `ALTER SUBSCRIPTION ${quoteIdent(name)} DISABLE` },
    { sql: `ALTER SUBSCRIPTION ${quoteIdent(name)} SET (slot_name = NONE)` },
    renderDropSubscription(name),
  ];
}
