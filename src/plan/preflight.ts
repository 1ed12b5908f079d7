/**
 * Checks that the servers can host a sync, before anything is created. Pure: observed facts in,
 * every problem out at once, each saying how to fix it.
 */
import { tableKey } from '../catalog/facts.ts';
import type { SourceCatalog } from '../catalog/observe-source.ts';
import type { TargetCatalog } from '../catalog/observe-target.ts';
import type { Problem } from '../errors.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { formatQualifiedName, quoteIdent, quoteQualified } from '../sql/quote.ts';

export const MIN_SERVER_VERSION = 150000;

export interface PreflightNeeds {
  /** Replication slots the plan creates on the source (the worker's, a native subscription's). */
  readonly slotsToCreate: number;
}

export function preflight(sync: LoadedSync, source: SourceCatalog, target: TargetCatalog, needs: PreflightNeeds): Problem[] {
  const problems: Problem[] = [];
  const at = (path: string, message: string) => problems.push({ file: sync.file, path, message });
  const s = source.server;
  const t = target.server;

  if (s.versionNum < MIN_SERVER_VERSION) {
    at('source', `the source runs PostgreSQL ${s.version}; syncctl supports PostgreSQL 15 and newer (publication row filters and column lists came in 15)`);
  }
  if (t.versionNum < MIN_SERVER_VERSION) {
    at('target', `the target runs PostgreSQL ${t.version}; syncctl supports PostgreSQL 15 and newer`);
  }
  if (sync.failover && s.versionNum < 170000) {
    at('failover', `failover slots need PostgreSQL 17 or newer on the source, which runs ${s.version}`);
  }
  if (s.walLevel !== 'logical') {
    at('source', `wal_level is ${s.walLevel} on the source; logical replication needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart the server)`);
  }
  const freeSlots = s.maxReplicationSlots - s.replicationSlotsUsed;
  if (needs.slotsToCreate > freeSlots) {
    at('source', `replication slots are exhausted on the source: max_replication_slots = ${s.maxReplicationSlots}, ${s.replicationSlotsUsed} in use, ` +
      `syncctl needs ${needs.slotsToCreate} more (raise max_replication_slots and restart, or drop unused slots)`);
  }
  const freeSenders = s.maxWalSenders - s.walSendersUsed;
  if (needs.slotsToCreate > 0 && needs.slotsToCreate > freeSenders) {
    at('source', `WAL senders are exhausted on the source: max_wal_senders = ${s.maxWalSenders}, ${s.walSendersUsed} in use, ` +
      `syncctl needs ${needs.slotsToCreate} (raise max_wal_senders and restart)`);
  }
  if (!s.canReplicate) {
    at('source', `role ${s.currentUser} lacks the REPLICATION attribute on the source: ALTER ROLE ${quoteIdent(s.currentUser)} WITH REPLICATION`);
  }
  for (const table of sync.tables) {
    const facts = source.tables.get(tableKey(table.source));
    if (!facts) {
      at(`tables.${table.name}.from`, `source table ${formatQualifiedName(table.source)} does not exist`);
    } else if (facts.kind === 'other') {
      at(`tables.${table.name}.from`, `${formatQualifiedName(table.source)} is not a table (views and foreign tables cannot be published)`);
    } else if (!facts.canSelect) {
      at(`tables.${table.name}.from`, `role ${s.currentUser} cannot read ${formatQualifiedName(table.source)} on the source: GRANT SELECT ON ${quoteQualified(table.source)} TO ${quoteIdent(s.currentUser)}`);
    }
    const targetFacts = target.tables.get(tableKey(table.target));
    if (!targetFacts) {
      at(`tables.${table.name}.to`, `target table ${formatQualifiedName(table.target)} does not exist: create it on the target first (syncctl never creates or drops target tables)`);
    } else if (targetFacts.kind === 'other') {
      at(`tables.${table.name}.to`, `${formatQualifiedName(table.target)} on the target is not a table`);
    } else if (!targetFacts.canWrite) {
      at(`tables.${table.name}.to`, `role ${t.currentUser} cannot write ${formatQualifiedName(table.target)} on the target: GRANT SELECT, INSERT, UPDATE, DELETE ON ${quoteQualified(table.target)} TO ${quoteIdent(t.currentUser)}`);
    }
  }
  return problems;
}
