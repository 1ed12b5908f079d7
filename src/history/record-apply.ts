/**
 * The run history of one sync's `syncctl apply`: one 'apply' run for the plan, and one 'copy' run
 * per table copied (with its rows). syncctl.runs is on the target and may not exist before the
 * plan's migrations ran, so the apply run is written once it can be: before the first change that
 * is not the migration, or after that one, with the time the apply began.
 *
 * Recording never fails the apply: the history is a log of what happened, and a write that
 * cannot be made (the connection the failing change broke) is given up.
 */
import type { Change } from '../plan/change.ts';
import type { CopyProgress } from '../snapshot/initial-copy.ts';
import { finishRun, messageOf, recordFinishedRun, startRun, type RunWriter } from './record-run.ts';

interface TableCopy {
  id: Promise<number | undefined>;
  rows: number;
  finished: boolean;
}

export class ApplyHistory {
  private readonly db: RunWriter;
  private readonly sync: string;
  private readonly startedAt = new Date();
  private applyRun: Promise<number | undefined> | undefined;
  private readonly applied: string[] = [];
  private copies = new Map<string, TableCopy>();
  private copyStartedAt = new Date();
  private copiedTables = 0;
  private copiedRows = 0;
  /** Writes made from progress callbacks (which cannot wait), in order. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(db: RunWriter, sync: string) {
    this.db = db;
    this.sync = sync;
  }

  async beforeChange(change: Change): Promise<void> {
    if (change.runner !== 'migrate') await this.ensureApplyRun();
    if (change.runner === 'initial-copy' || change.runner === 'table-copy') {
      this.copies = new Map();
      this.copyStartedAt = new Date();
    }
  }

  /** A copy's progress: a table's 'copy' run starts with its first chunk and ends with its last. */
  copyProgress(progress: CopyProgress): void {
    let copy = this.copies.get(progress.table);
    if (copy === undefined) {
      const startedAt = new Date(progress.startedAt);
      const id = this.queue(() => startRun(this.db, { sync: this.sync, kind: 'copy', table: progress.table, startedAt }));
      copy = { id, rows: 0, finished: false };
      this.copies.set(progress.table, copy);
    }
    copy.rows = progress.rows;
    if (progress.chunksDone === progress.chunks && !copy.finished) {
      copy.finished = true;
      this.finishCopy(progress.table, copy, { outcome: 'ok' });
    }
  }

  async afterChange(change: Change): Promise<void> {
    this.applied.push(change.id);
    if (change.runner === 'migrate') await this.ensureApplyRun();
    // A table with nothing left to copy (empty, or its chunks all done before) reports no progress.
    for (const table of change.copyTables ?? []) {
      const copy = this.copies.get(table);
      if (copy === undefined) {
        this.copiedTables++;
        this.queue(() => recordFinishedRun(this.db, { sync: this.sync, kind: 'copy', table, startedAt: this.copyStartedAt, outcome: 'ok', counts: { rows: 0 } }));
      } else if (!copy.finished) {
        copy.finished = true;
        this.finishCopy(table, copy, { outcome: 'ok' });
      }
    }
    await this.writes;
  }

  /** The apply ended: ok, or failed with `error` (its copies in progress fail with it). */
  async finish(error?: unknown): Promise<void> {
    if (error !== undefined) {
      for (const [table, copy] of this.copies) {
        if (!copy.finished) {
          copy.finished = true;
          this.finishCopy(table, copy, { outcome: 'failed', detail: messageOf(error) });
        }
      }
    }
    await this.ensureApplyRun();
    const id = await this.applyRun;
    await this.writes;
    if (id === undefined) return;
    const counts = { changes: this.applied.length, tablesCopied: this.copiedTables, rowsCopied: this.copiedRows };
    const done = this.applied.length === 0 ? 'no changes' : `${this.applied.length} change(s): ${this.applied.join(', ')}`;
    await finishRun(this.db, id, error === undefined ? { outcome: 'ok', counts, detail: done }
      : { outcome: 'failed', counts, detail: `${messageOf(error)}${this.applied.length > 0 ? ` (applied before it: ${this.applied.join(', ')})` : ''}` })
      .catch(() => {});
  }

  private finishCopy(table: string, copy: TableCopy, end: { outcome: 'ok' | 'failed'; detail?: string }): void {
    if (end.outcome === 'ok') {
      this.copiedTables++;
      this.copiedRows += copy.rows;
    }
    this.queue(async () => {
      const id = await copy.id;
      if (id !== undefined) await finishRun(this.db, id, { ...end, counts: { rows: copy.rows } });
    });
  }

  private async ensureApplyRun(): Promise<void> {
    this.applyRun ??= startRun(this.db, { sync: this.sync, kind: 'apply', startedAt: this.startedAt }).catch(() => undefined);
    // Not written (syncctl.runs does not exist yet): tried again after the migration.
    if ((await this.applyRun) === undefined) this.applyRun = undefined;
  }

  private queue<T>(write: () => Promise<T>): Promise<T | undefined> {
    const result = this.writes.then(write).catch(() => undefined);
    this.writes = result;
    return result;
  }
}
