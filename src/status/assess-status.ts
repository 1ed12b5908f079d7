/**
 * When a sync is degraded: the rules `syncctl status` exits 1 on, as one pure function. Degraded
 * means a person should act, or changes are not flowing:
 * - the sync, or a table of the spec, is not registered on the target (apply has not run);
 * - a sync with mapped tables has no slot, its slot's wal_status is unreserved (WAL it needs may
 *   be removed at the next checkpoint) or lost, or no leader is alive (no `syncctl run` holds the
 *   sync's lock on the target: nothing streams);
 * - a table is paused;
 * - a table has parked apply errors pending (changes the target rejected).
 * Pending manual conflicts are shown but do not degrade: parking them is the rule working. An
 * inactive slot while a leader is alive is a worker reconnecting, not a problem by itself.
 */
import type { SyncStatus } from './sync-status.ts';

export const DEGRADED_RULES = [
  'the sync or a table of its spec is not registered on the target (run syncctl apply)',
  'a sync with mapped tables has no replication slot, or its wal_status is unreserved or lost',
  'no leader is alive: no syncctl run holds the sync\'s lock on the target',
  'a table is paused',
  'parked apply errors are pending (syncctl conflicts list --kind apply_error)',
] as const;

export type SyncFacts = Omit<SyncStatus, 'health' | 'problems'>;

/** The reasons the sync is degraded, one sentence each; empty when it is healthy. */
export function assessSync(sync: SyncFacts): string[] {
  if (!sync.registered) return [`sync ${sync.name} is not registered on the target: run syncctl apply`];
  const problems: string[] = [];
  if (sync.slot !== null) {
    const { slot } = sync;
    if (!slot.exists) problems.push(`replication slot ${slot.name} does not exist on the source`);
    else if (slot.walStatus === 'unreserved' || slot.walStatus === 'lost') problems.push(`replication slot ${slot.name} has wal_status ${slot.walStatus}`);
    if (!sync.leader.alive) {
      const last = sync.leader.host !== null ? ` (the checkpoint names ${describeLeader(sync.leader)})` : '';
      problems.push(`no leader: no syncctl run holds the sync's lock on the target${last}${slot.exists && !slot.active ? ', and the slot is inactive' : ''}`);
    }
  }
  for (const t of sync.tables) {
    if (t.state === 'unregistered') problems.push(`table ${t.name} is not registered on the target: run syncctl apply`);
    if (t.state === 'paused') problems.push(`table ${t.name} is paused${t.lastError !== null ? `: ${t.lastError}` : ''}`);
    if (t.parkedErrors > 0) problems.push(`table ${t.name} has ${t.parkedErrors} parked apply error(s) pending`);
  }
  return problems;
}

export function describeLeader(leader: SyncStatus['leader']): string {
  return [leader.host ?? 'unknown host', leader.pid !== null ? `pid ${leader.pid}` : undefined, leader.since !== null ? `since ${leader.since}` : undefined]
    .filter((p) => p !== undefined).join(' ');
}
