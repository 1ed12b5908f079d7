/**
 * Streamed in-progress transactions (pgoutput protocol 2 and later, `streaming 'on'`): once a
 * transaction outgrows logical_decoding_work_mem, the server sends it in blocks while it is still
 * running, interleaved with other transactions, then a stream commit or abort.
 *
 * Each block's changes are staged in the target as they arrive (temp tables that outlive target
 * transactions, filled by COPY; no target transaction is held open between blocks) and nothing is
 * applied: at the stream commit they are applied set-based in one target transaction with the
 * checkpoint, like any other source transaction. A stream abort drops them; a subtransaction's
 * abort drops its changes and everything staged after them, as the native apply worker truncates
 * its spool file at the subtransaction's first change (a subtransaction's changes follow its first
 * one until it ends: later changes belong to it or to its own subtransactions).
 *
 * A transaction's changes are kept in segments, each with at most one staging table per source
 * table, because the reduction to the last change per key works within one staging table. A new
 * segment starts when a table's shape changes mid-transaction, and after a TRUNCATE, which runs
 * between the segment before it and the one after.
 */
import type pg from 'pg';
import { BatchWriter, type BatchTable, type StageOp, type TruncateRefusal } from '../apply/batch-writer.ts';
import { SyncctlError } from '../errors.ts';
import type { QualifiedName } from '../sql/quote.ts';

/** A source table in its current shape, as the worker routes it. */
export interface StreamedTable {
  /** Identifies the source table across shapes. */
  readonly key: string;
  /** Identifies the shape (the Relation message the columns come from). */
  readonly shapeId: string;
  /** The staging table definition for this shape, named `id`. */
  readonly define: (id: string) => BatchTable;
}

interface DeferredOp {
  readonly kind: 'truncate';
  readonly tables: readonly { readonly key: string; readonly target: QualifiedName }[];
}

interface Part {
  readonly key: string;
  readonly shapeId: string;
  readonly id: string;
}

interface Segment {
  readonly writer: BatchWriter;
  /** By source table key. */
  readonly parts: Map<string, Part>;
  /** Run after the segment's changes are applied. */
  readonly ops: DeferredOp[];
  /** An op ended the segment: later changes go to a new one. */
  closed: boolean;
}

/** Where a subtransaction's first change went. */
interface Mark {
  readonly segment: number;
  readonly seq: number;
  readonly ops: number;
}

interface Transaction {
  readonly xid: number;
  readonly segments: Segment[];
  readonly subtransactions: Map<number, Mark>;
  changes: number;
}

export interface StreamedContext {
  readonly lsn: string | null;
  readonly commitTime: string | null;
}

export class StreamedTransactions {
  private readonly open = new Map<number, Transaction>();
  private readonly client: pg.Client;
  private readonly syncName: string;

  constructor(client: pg.Client, syncName: string) {
    this.client = client;
    this.syncName = syncName;
  }

  get size(): number {
    return this.open.size;
  }

  /** A stream block begins. The first block of a transaction starts it afresh (the server re-sends after a reconnect). */
  async start(xid: number, first: boolean): Promise<void> {
    if (first) {
      await this.discard(xid);
      this.open.set(xid, { xid, segments: [], subtransactions: new Map(), changes: 0 });
    } else if (!this.open.has(xid)) {
      throw new SyncctlError('APPLY_FAILED', `${this.syncName}: the server continued streamed transaction ${xid}, whose first block this session never received`);
    }
  }

  /** Stages one change of transaction `xid` (made by `subXid`, which is `xid` outside subtransactions). */
  stage(xid: number, subXid: number | undefined, table: StreamedTable, op: StageOp, unchanged: readonly number[] | null,
    values: readonly (Buffer | null)[], fromUpdate = false): Promise<void> | undefined {
    const tx = this.transaction(xid);
    const { segment, index, part } = this.segmentFor(tx, table);
    this.mark(tx, subXid, { segment: index, seq: segment.writer.sequence + 1, ops: segment.ops.length });
    tx.changes++;
    return segment.writer.stage(part.id, op, unchanged, values, fromUpdate);
  }

  truncate(xid: number, subXid: number | undefined, tables: readonly { readonly key: string; readonly target: QualifiedName }[]): void {
    if (tables.length === 0) return;
    const tx = this.transaction(xid);
    if (tx.segments.length === 0) tx.segments.push(this.newSegment());
    const index = tx.segments.length - 1;
    const segment = tx.segments[index]!;
    this.mark(tx, subXid, { segment: index, seq: segment.writer.sequence + 1, ops: segment.ops.length });
    segment.ops.push({ kind: 'truncate', tables });
    segment.closed = true;
  }

  /**
   * A stream block ended: what it staged goes to the target now, while the source transaction
   * goes on, so that its commit finds the work done.
   */
  async flush(xid: number): Promise<void> {
    for (const segment of this.open.get(xid)?.segments ?? []) await segment.writer.copyAll();
  }

  /** Source table keys with changes staged in the transaction. */
  tables(xid: number): Set<string> {
    const keys = new Set<string>();
    for (const segment of this.open.get(xid)?.segments ?? []) {
      for (const key of segment.parts.keys()) keys.add(key);
      for (const op of segment.ops) for (const t of op.tables) keys.add(t.key);
    }
    return keys;
  }

  changes(xid: number): number {
    return this.open.get(xid)?.changes ?? 0;
  }

  /**
   * The transaction committed: applies what it staged, inside the caller's open target
   * transaction (`main` holds it), leaving out tables `include` rejects, then drops its staging.
   * Returns the target tables a TRUNCATE of it could not empty.
   */
  async apply(xid: number, main: BatchWriter, include: (key: string) => boolean, context: StreamedContext): Promise<TruncateRefusal[]> {
    const refused: TruncateRefusal[] = [];
    const tx = this.open.get(xid);
    if (!tx) return refused;
    for (const segment of tx.segments) {
      for (const part of segment.parts.values()) if (!include(part.key)) segment.writer.forget(part.id);
      await segment.writer.applyStaged(context, { dropping: true });
      for (const op of segment.ops) refused.push(...await main.truncateTargets(op.tables.filter((t) => include(t.key)).map((t) => t.target)));
    }
    await this.discard(xid);
    return refused;
  }

  /** The transaction (`subXid` = `xid`) or one of its subtransactions aborted. */
  async abort(xid: number, subXid: number): Promise<void> {
    if (subXid === xid) return this.discard(xid);
    const tx = this.open.get(xid);
    const mark = tx?.subtransactions.get(subXid);
    if (!tx || !mark) return; // the subtransaction changed nothing this sync stages
    for (const later of tx.segments.splice(mark.segment + 1)) await later.writer.drop();
    const segment = tx.segments[mark.segment]!;
    await segment.writer.discardFrom(mark.seq);
    segment.ops.length = mark.ops;
    segment.closed = mark.ops > 0;
    for (const [id, m] of tx.subtransactions) {
      if (m.segment > mark.segment || (m.segment === mark.segment && m.seq >= mark.seq && m.ops >= mark.ops)) tx.subtransactions.delete(id);
    }
  }

  async discard(xid: number): Promise<void> {
    const tx = this.open.get(xid);
    if (!tx) return;
    this.open.delete(xid);
    for (const segment of tx.segments) await segment.writer.drop();
  }

  private transaction(xid: number): Transaction {
    const tx = this.open.get(xid);
    if (!tx) throw new SyncctlError('APPLY_FAILED', `${this.syncName}: a streamed change of transaction ${xid} arrived outside its stream`);
    return tx;
  }

  private newSegment(): Segment {
    return { writer: new BatchWriter(this.client, this.syncName, { applyEveryRows: Infinity }), parts: new Map(), ops: [], closed: false };
  }

  /** The segment the table's next change goes to: the last one, unless an op closed it or the table changed shape in it. */
  private segmentFor(tx: Transaction, table: StreamedTable): { segment: Segment; index: number; part: Part } {
    let segment = tx.segments[tx.segments.length - 1];
    const existing = segment?.parts.get(table.key);
    if (!segment || segment.closed || (existing && existing.shapeId !== table.shapeId)) {
      segment = this.newSegment();
      tx.segments.push(segment);
    }
    const index = tx.segments.length - 1;
    let part = segment.parts.get(table.key);
    if (!part) {
      part = { key: table.key, shapeId: table.shapeId, id: `x${tx.xid}_${index}_${table.shapeId}` };
      segment.parts.set(table.key, part);
      segment.writer.register(table.define(part.id));
    }
    return { segment, index, part };
  }

  private mark(tx: Transaction, subXid: number | undefined, mark: Mark): void {
    if (subXid === undefined || subXid === tx.xid || tx.subtransactions.has(subXid)) return;
    tx.subtransactions.set(subXid, mark);
  }
}
