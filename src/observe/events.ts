/**
 * What a running sync reports about itself: the worker, the leader election and the monitor emit
 * these, and whoever wants them (the metrics, a test) listens. The apply code knows nothing of
 * Prometheus; the metrics know nothing of how rows are applied.
 */
import { EventEmitter } from 'node:events';
import type { ConflictCount } from '../apply/batch-writer.ts';

export type ChangeOp = 'insert' | 'update' | 'delete' | 'truncate';

/** One target commit of the worker. */
export interface CommittedEvent {
  /** Source transactions it applied. */
  readonly transactions: number;
  /** Changes it applied, per spec table and operation. */
  readonly changes: ReadonlyMap<string, Readonly<Record<ChangeOp, number>>>;
  /** Rows it added to sync_conflicts. */
  readonly conflicts: readonly ConflictCount[];
  /** Time from the batch's first source transaction being read to its commit. */
  readonly seconds: number;
}

/** A sample of the source side, taken by the monitor every few seconds. */
export interface SourceSample {
  /** The source's clock minus ours (ms), measured around the sample's query. */
  readonly clockOffsetMs: number;
  /** The source's current WAL position (bytes since 0/0). */
  readonly currentLsn: bigint;
  /** The heartbeat written by this sample, if the source allowed it: its WAL position and source time (Unix ms). */
  readonly heartbeat?: { readonly lsn: bigint; readonly atMs: number };
  /** The sync's slot, or undefined when it is gone. */
  readonly slot?: {
    readonly active: boolean;
    readonly walStatus: string | null;
    readonly retainedBytes: number | null;
    readonly safeWalSizeBytes: number | null;
  };
}

/** A sample of the target's control tables, taken by the monitor every few seconds. */
export interface TargetSample {
  readonly tables: readonly {
    readonly table: string;
    readonly state: string;
    readonly conflictsPending: number;
    readonly oldestPendingSeconds: number;
    readonly applyErrorsPending: number;
    readonly copyRows: number;
  }[];
}

export interface SyncEventMap {
  committed: [CommittedEvent];
  /** The worker reads the slot (true) or its session ended (false). */
  streaming: [boolean];
  /** This process took the lead of the sync (true) or stands by (false). */
  leader: [boolean];
  source: [SourceSample];
  target: [TargetSample];
}

/**
 * Where the worker stands, read when someone asks (a scrape): plain fields the worker assigns as
 * it goes, so the hot path pays nothing per change. Times are source commit times (Unix ms).
 */
export class Progress {
  /** Every source transaction that ended at or before this WAL position has been applied (or had nothing for the sync). */
  appliedLsn = 0n;
  /** Commit time of the last source transaction applied. */
  lastAppliedCommitMs: number | null = null;
  /** Commit time of the oldest source transaction read but not yet committed to the target (null: none). */
  oldestUnappliedMs: number | null = null;
}

/** The events of one sync, and its progress. */
export class SyncEvents extends EventEmitter<SyncEventMap> {
  readonly progress = new Progress();
  readonly sync: string;

  constructor(sync: string) {
    super();
    this.sync = sync;
  }
}
