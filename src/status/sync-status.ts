/**
 * What `syncctl status` reports about one sync, as data: the shape `status --json` prints (one
 * object per sync) and the metrics poller can read. Glossary:
 * - leader: the `syncctl run` holding the sync's session advisory lock on the target; alive while
 *   some backend holds that lock, whatever the checkpoint says.
 * - slot: the sync's logical replication slot on the source (`syncctl_<name>`).
 * - lag: source WAL not yet confirmed by the worker (current position minus confirmed_flush_lsn).
 * - pending conflict: a change a `manual` table parked for a person (any kind but apply_error).
 * - parked error: a change the target rejected (kind apply_error), pending.
 * - degraded: something needs a person; `problems` says what (see assessSync).
 * Times are ISO 8601 in UTC; byte figures are numbers of bytes.
 */

export type Health = 'healthy' | 'degraded';

export interface SyncStatus {
  readonly name: string;
  readonly health: Health;
  /** Why the sync is degraded, one sentence each; empty when healthy. */
  readonly problems: readonly string[];
  /** The sync is registered on the target (its `syncctl apply` ran). */
  readonly registered: boolean;
  readonly leader: LeaderStatus;
  /** The last source transaction applied (the checkpoint); null before the first apply. */
  readonly lastCommit: LastCommit | null;
  /** Source WAL bytes the worker has not confirmed yet; null without a slot. */
  readonly lagBytes: number | null;
  /** Null for a sync without mapped tables (it has no slot of its own). */
  readonly slot: SlotStatus | null;
  readonly tables: readonly TableStatus[];
}

export interface LeaderStatus {
  /** Some backend of the target holds the sync's leader lock. */
  readonly alive: boolean;
  /** Who the checkpoint says leads (or led): `syncctl run`'s host name, process id and since when. */
  readonly host: string | null;
  readonly pid: number | null;
  readonly since: string | null;
  readonly epoch: number;
  /** The target backend holding the lock (pg_locks.pid), when alive. */
  readonly lockBackendPid: number | null;
}

export interface LastCommit {
  readonly lsn: string;
  /** Source commit time; null when only the initial copy's position is known. */
  readonly time: string | null;
}

export interface SlotStatus {
  readonly name: string;
  readonly exists: boolean;
  readonly active: boolean;
  /** reserved, extended, unreserved or lost; null when the slot does not exist. */
  readonly walStatus: string | null;
  /** WAL the slot holds back on the source (current position minus restart_lsn). */
  readonly retainedWalBytes: number | null;
  /** WAL that can still be written before the slot is lost; null when max_slot_wal_keep_size is unlimited. */
  readonly safeWalSizeBytes: number | null;
  readonly confirmedFlushLsn: string | null;
  /** A failover slot (PostgreSQL 17 and later), synchronized to the physical standbys that sync_replication_slots. */
  readonly failover: boolean;
  /** The source's synchronized_standby_slots: the standbys a failover slot never gets ahead of (null: none set). */
  readonly standbySlots: string | null;
}

export type TableState = 'pending' | 'copying' | 'streaming' | 'paused' | 'held' | 'unregistered';

export interface TableStatus {
  /** The spec's table name. */
  readonly name: string;
  readonly source: string;
  readonly target: string;
  readonly mode: 'mapped' | 'native';
  /** The registered state; `unregistered`: in the spec, not applied yet. */
  readonly state: TableState;
  /** The table is registered on the target but no longer in the spec. */
  readonly inSpec: boolean;
  readonly changesApplied: number;
  readonly lastAppliedAt: string | null;
  readonly pendingConflicts: number;
  readonly parkedErrors: number;
  /** The table's own error (why it paused), else the newest pending parked error's reason. */
  readonly lastError: string | null;
  /** With --counts only; null otherwise. */
  readonly counts: TableCounts | null;
}

export interface TableCounts {
  /** Source rows for which the table's row filter holds (all rows without one). */
  readonly sourceRows: number | null;
  readonly targetRows: number | null;
  /** Why a figure is missing (e.g. a worker-evaluated filter the source cannot run). */
  readonly error: string | null;
}
