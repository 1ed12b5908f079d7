/**
 * Changes of tables whose initial copy has not finished (a table added to a running sync): the
 * worker cannot apply them yet, and cannot stop the other tables to wait. They are written to
 * syncctl.held_changes inside the batch's target transaction, together with the checkpoint that
 * moves past them, and replayed in order, in one transaction with their deletion, once the copy
 * is done. Changes of transactions that committed before the copy's snapshot are in the copy and
 * are left out then.
 */
import type { StageOp } from '../apply/batch-writer.ts';
import type pg from 'pg';
import { formatLsn, type Lsn } from './pgoutput-decoder.ts';

export interface HeldChange {
  /** As staged (W, D, K: see render-apply), or T for a TRUNCATE. */
  readonly op: StageOp | 'T';
  readonly unchanged: readonly number[] | null;
  readonly columns: readonly string[];
  readonly values: readonly (Buffer | null)[] | null;
}

interface Pending {
  readonly t: string;
  readonly l: string;
  readonly o: string;
  readonly u: readonly number[] | null;
  readonly c: readonly string[];
  readonly v: readonly (string | null)[] | null;
}

export interface ReplayedChange {
  /** The commit position of the source transaction that made it. */
  readonly commitLsn: string;
  readonly op: StageOp | 'T';
  readonly unchanged: number[] | null;
  readonly columns: string[];
  readonly values: (Buffer | null)[];
}

/** Held rows written per statement, and read back per page. */
const FLUSH_ROWS = 5_000;
const PAGE_ROWS = 10_000;

const text = (values: readonly (Buffer | null)[]) => values.map((v) => (v === null ? null : v.toString('utf8')));
const bytes = (values: readonly (string | null)[] | null) => (values ?? []).map((v) => (v === null ? null : Buffer.from(v, 'utf8')));

export class HeldChanges {
  private pending: Pending[] = [];
  /** The session of the batch being staged (the worker alternates two). */
  private readonly session: () => pg.Client;
  private readonly syncName: string;

  private readonly beforeWrite: () => Promise<void>;

  /** `beforeWrite` runs before held rows are written (the batch's deferred BEGIN). */
  constructor(session: () => pg.Client, syncName: string, beforeWrite: () => Promise<void> = async () => {}) {
    this.session = session;
    this.syncName = syncName;
    this.beforeWrite = beforeWrite;
  }

  /** Holds one change of `table` from the transaction committing at `commitLsn`; writes a page when enough wait (inside the open transaction). */
  hold(table: string, commitLsn: Lsn, change: HeldChange): Promise<void> | undefined {
    this.pending.push({
      t: table, l: formatLsn(commitLsn), o: change.op, u: change.unchanged, c: change.columns,
      v: change.values ? text(change.values) : null,
    });
    return this.pending.length >= FLUSH_ROWS ? this.flush() : undefined;
  }

  /** Writes what is held in memory, inside the caller's open target transaction. */
  async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    await this.beforeWrite();
    const rows = this.pending;
    this.pending = [];
    await this.session().query(
      `INSERT INTO syncctl.held_changes (sync_name, table_name, commit_lsn, op, unchanged, columns, vals)
       SELECT $1, r.t, r.l::pg_lsn, r.o::"char", r.u, r.c, r.v
         FROM jsonb_to_recordset($2::jsonb) AS r(t text, l text, o text, u int2[], c text[], v text[])`,
      [this.syncName, JSON.stringify(rows.map((r) => ({ ...r, u: r.u === null ? null : `{${r.u.join(',')}}`, c: pgArray(r.c), v: r.v && pgArray(r.v) })))]);
  }

  /** The transaction holding them rolled back. */
  discard(): void {
    this.pending = [];
  }

  /**
   * Replays, in order, the held changes of `table` from transactions committed at or after
   * `snapshotLsn`, then deletes all of them: inside the caller's open target transaction.
   */
  async replay(table: string, snapshotLsn: Lsn, apply: (change: ReplayedChange) => Promise<void> | undefined): Promise<number> {
    let after = 0n;
    let count = 0;
    for (;;) {
      const { rows } = await this.session().query<{ position: string; commit_lsn: string; op: string; unchanged: number[] | null; columns: string[]; vals: (string | null)[] | null }>(
        `SELECT h.seq::text AS position, h.commit_lsn::text AS commit_lsn, h.op, h.unchanged, h.columns, h.vals FROM syncctl.held_changes AS h
          WHERE h.sync_name = $1 AND h.table_name = $2 AND h.seq > $3 AND h.commit_lsn >= $4::pg_lsn ORDER BY h.seq LIMIT ${PAGE_ROWS}`,
        [this.syncName, table, String(after), formatLsn(snapshotLsn)]);
      for (const r of rows) {
        await apply({ commitLsn: r.commit_lsn, op: r.op as ReplayedChange['op'], unchanged: r.unchanged, columns: r.columns, values: bytes(r.vals) });
        count++;
      }
      if (rows.length < PAGE_ROWS) break;
      after = BigInt(rows[rows.length - 1]!.position);
    }
    await this.session().query('DELETE FROM syncctl.held_changes WHERE sync_name = $1 AND table_name = $2', [this.syncName, table]);
    return count;
  }
}

/** A text[] literal: jsonb_to_recordset reads array fields from their text form. */
function pgArray(values: readonly (string | null)[]): string {
  return `{${values.map((v) => (v === null ? 'NULL' : `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`)).join(',')}}`;
}
