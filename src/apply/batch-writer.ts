/**
 * Runs batches against the target: stages rows with COPY into per-table temp tables, then applies
 * them set-based (renderApply) inside one target transaction together with the stream's
 * checkpoint. A row the target rejects is found by replaying that table's statements row by row
 * (only then) and parked in sync_conflicts as `apply_error`, or stops the worker (onError: stop).
 */
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { isUtf8 } from 'node:buffer';
import { SyncctlError } from '../errors.ts';
import type { ConflictRule } from '../spec/schema.ts';
import { WRITER_SETTING } from '../plan/render-ddl.ts';
import { quoteIdent, quoteLiteral, quoteQualified, type QualifiedName } from '../sql/quote.ts';
import { CopyTextBuilder } from './copy-text.ts';
import { KeySet } from './key-set.ts';
import { lastTableName, renderApply, SEQ, stageTableName, type ApplyStatements, type ApplyTable } from './render-apply.ts';
import { renderKeptPrefix } from './kept-prefix.ts';
import { noteParked, parkedTables, resolveParkedSql } from './parked.ts';
import { marksOf, PARKED_SETTING, renderSourceOrder, ROW_FAULT_SQLSTATE, type SourceOrderTable, type TransactionMark } from './source-order.ts';

/** W: an UPDATE's new row; I: an INSERT's row; D: a deleted row's key; K: an UPDATE's old row (its W follows). */
export type StageOp = 'W' | 'I' | 'D' | 'K';

export interface BatchTable {
  readonly apply: ApplyTable;
  /** The spec's table name, for sync_conflicts. */
  readonly tableName: string;
  readonly onError: 'park' | 'stop';
  /** Position in foreign-key order on the target: parents first. */
  readonly order: number;
  /** The spec's conflict strategy, recorded with every change parked for this table. */
  readonly strategy: string;
  /** The spec's conflict rule (source-wins when absent). */
  readonly conflict?: ConflictRule;
}

/** Where the changes being staged come from: their source transaction's commit position and time. */
export interface SourcePosition {
  readonly lsn: string | null;
  readonly commitTime: string | null;
}

interface TableState {
  readonly table: BatchTable;
  readonly statements: ApplyStatements;
  readonly rows: CopyTextBuilder;
  created: boolean;
  /** Rows staged in this transaction (in the temp table or still in `rows`). */
  staged: number;
  /** Some staged write leaves TOAST columns unchanged. */
  toasted: boolean;
  /** Positions (in staged values) of the source columns the target key copies, when it copies them. */
  readonly keyPositions: readonly number[] | undefined;
  /** Keys staged in this slice, while none repeated. */
  keys: KeySet | undefined;
  /** A key occurs twice in this slice: the reduction to the last change per key is needed. */
  repeated: boolean;
  /** The rows staged in this batch as SQL VALUES rows, while the batch is small (see SMALL_ROWS). */
  literals: string[];
  /** Some staged change is a delete (else, without a worker filter, the delete statement is left out). */
  deletes: boolean;
  /** Writes staged in this slice, and how many of them carry a source UPDATE. */
  writes: number;
  updates: number;
  /** The old row (K) of an UPDATE, staged last: its new row comes next. */
  afterK: readonly (Buffer | null)[] | undefined;
  /** Positions (in staged values) of the source columns the target key is computed from. */
  readonly keyReads: readonly number[];
  /** Registered for a shape the table no longer has: dropped once idle (see retire). */
  retired: boolean;
  /**
   * The slice must be applied in source order: it changes a key. Source order updates the row in
   * place; the set form deletes it and inserts another, which target columns the mapping does not
   * write, foreign keys referencing the row (ON DELETE CASCADE) and TOAST values the update left
   * unchanged would all see.
   */
  sourceOrder: boolean;
}

/**
 * SYNCCTL_APPLY=source-order: every slice in source order, change by change, as a native
 * subscription applies it. Slower; it is the definition the set statements must equal, which the
 * conflict differential test compares them with, and a way to rule them out.
 */
const SOURCE_ORDER_ONLY = process.env['SYNCCTL_APPLY'] === 'source-order';
/** SYNCCTL_APPLY=source-order-aside: every change set aside for conflicts goes to source order, none is logged set-based (kept-prefix.ts); for comparing the two. */
const SOURCE_ORDER_ASIDE = process.env['SYNCCTL_APPLY'] === 'source-order-aside';
/**
 * SYNCCTL_APPLY=copy: every batch as a large one is (COPY, then the set statements, with
 * prepareAhead), never in one round trip: the differential tests' batches are small.
 */
const NEVER_SMALL = process.env['SYNCCTL_APPLY'] === 'copy';

/** A table's changes set aside by ApplyStatements.split: how many, and their sequence numbers. */
interface Aside {
  readonly state: TableState;
  readonly rows: number;
  readonly seqs: readonly number[];
}

/** The sequence numbers a moveConflicting statement returned. */
function asideOf(state: TableState, result: pg.QueryResult): Aside {
  return { state, rows: result.rowCount ?? 0, seqs: result.rows.map((r: Record<string, string>) => Number(r[SEQ])) };
}

/** A direct slice with at least this many writes, most of them source UPDATEs, updates before it inserts (see ApplyStatements.direct.updateFirst). */
const UPDATE_FIRST_ROWS = 10_000;

/** Stage rows in memory up to this many bytes per table before copying them into the target. */
const STAGE_FLUSH_BYTES = 4 * 1024 * 1024;
/**
 * Apply what is staged once this many changes wait, without committing: a large source
 * transaction is then applied while it is still arriving instead of all after its commit.
 * Applying slices in arrival order inside one target transaction gives the same result as one
 * big batch, and nothing is visible before the commit.
 */
const APPLY_EVERY_ROWS = 100_000;
/**
 * A batch of at most this many changes (and SMALL_BYTES) that never had to talk to the server
 * before its commit goes in one round trip: BEGIN, the rows as INSERT … VALUES into the stages,
 * the set-based statements, the checkpoint and COMMIT as one simple query. Live streams are made
 * of such batches, and round trips are most of their cost.
 */
const SMALL_ROWS = 2_000;
const SMALL_BYTES = 512 * 1024;
/** A slice of at most this many rows is cleared by DELETE (else TRUNCATE); VACUUM after this many deleted. */
const CLEAR_BY_DELETE_ROWS = 5_000;
const VACUUM_AFTER_ROWS = 50_000;
const ANALYZE_EVERY_MS = 10_000;
/** SQLSTATE of syncctl.local_changes_found: a key of the slice has a local change. */
const LOCAL_CHANGES_FOUND = 'SYCON';
/** Some foreign key that writes rows when it acts (CASCADE, SET NULL, SET DEFAULT) references one of the tables ($1, text[] of qualified names). */
const ACTING_FOREIGN_KEY = `SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = ANY ($1::text[]::regclass[]) ` +
  `AND (confdeltype IN ('c', 'n', 'd') OR confupdtype IN ('c', 'n', 'd')) LIMIT 1`;
const READ_PARKED = `SELECT current_setting(${quoteLiteral(PARKED_SETTING)}, true) AS parked`;
const BEGIN = `BEGIN; SELECT set_config(${quoteLiteral(WRITER_SETTING)}, 'on', true)`;
/** What PREPARE takes (of the statements a batch runs). */
const PREPARABLE = /^(INSERT|UPDATE|DELETE|SELECT|WITH)\b/;
/**
 * Statements PREPAREd per session (writers can share one: a streamed transaction's stages in
 * the primary session): text → statement name, or null where PREPARE refused it (it is then
 * sent as it is).
 */
const statementNames = new WeakMap<pg.Client, Map<string, string | null>>();
/** Names prepared statements: unique in the process, so a name is never reused after a DEALLOCATE. */
let preparedCount = 0;

/**
 * The marks as source order records them. Formatting a position (its LSN and ISO commit time)
 * costs more than staging a change of it: only the marks a statement carries are formatted.
 */
function formatMarks(marks: readonly { readonly fromSeq: number; readonly position: SourcePosition }[]): TransactionMark[] {
  return marks.map((m) => ({ fromSeq: m.fromSeq, lsn: m.position.lsn, commitTime: m.position.commitTime }));
}

/**
 * ANALYZE syncctl.local_changes (see BatchWriter.analyzedAt), outside any transaction: when it was
 * taken. Without the privilege (the owner's, or MAINTAIN) Postgres skips it with a warning; plans
 * then stay the server's business.
 */
export async function analyzeLocalChanges(client: pg.Client): Promise<number> {
  const at = Date.now();
  await client.query('ANALYZE syncctl.local_changes').catch(() => {});
  return at;
}

/** A table as source order renders it; `onError` overrides the spec's (applyAside: stop). */
function sourceOrderTable(state: TableState, onError = state.table.onError): SourceOrderTable {
  const { apply, tableName, strategy, conflict } = state.table;
  return { apply, tableName, strategy, onError, ...(conflict ? { conflict } : {}) };
}

function sameValue(a: Buffer | null, b: Buffer | null): boolean {
  return a === null || b === null ? a === b : a.equals(b);
}

/** A target table a source TRUNCATE could not empty, and why. */
export interface TruncateRefusal {
  readonly target: QualifiedName;
  readonly reason: string;
}

/** The target's WAL positions after a commit: its end (insert) and how far the target has flushed. */
export interface CommitPosition {
  readonly lsn: string;
  readonly flushed: string;
  /** Rows the commit added to sync_conflicts, counted by table, kind and outcome (the trigger of sql/10_conflict-counts-per-statement.sql). */
  readonly conflicts: readonly ConflictCount[];
  /** Changes of keys with a local change that the commit applied in source order, apart from the set statements (applyAside). */
  readonly setAside: number;
  /** Of those, the changes the rule only logged (kept, pending), logged set-based (kept-prefix.ts). */
  readonly loggedAside: number;
  /** The set statements went on from what prepareAhead did. */
  readonly ahead: boolean;
}

export interface ConflictCount {
  readonly table: string;
  readonly kind: string;
  readonly outcome: string;
  readonly count: number;
}

/** Changes of each spec table the commit applies (sync_tables.changes_applied). */
export type AppliedCounts = ReadonlyMap<string, number>;

const READ_CONFLICTS_LOGGED = `SELECT current_setting('syncctl.conflicts_logged', true) AS logged`;

/**
 * The transaction's conflict counts (sql/9_conflict-counts.sql, counted per statement since sql/10: {"[table, kind, outcome]": n});
 * a schema not migrated yet still writes sql/7's "table|kind|outcome" lines.
 */
function conflictCounts(logged: string | null | undefined): ConflictCount[] {
  if (!logged) return [];
  if (logged.startsWith('{')) {
    return Object.entries(JSON.parse(logged) as Record<string, number>).map(([entry, count]) => {
      const [table = '', kind = '', outcome = ''] = JSON.parse(entry) as string[];
      return { table, kind, outcome, count };
    });
  }
  const counts = new Map<string, number>();
  for (const line of logged.split('\n')) if (line !== '') counts.set(line, (counts.get(line) ?? 0) + 1);
  return [...counts].map(([line, count]) => {
    const [table = '', kind = '', outcome = ''] = line.split('|');
    return { table, kind, outcome, count };
  });
}


export class BatchWriter {
  private readonly tables = new Map<string, TableState>();
  private inTransaction = false;
  /** BEGIN was sent: a lazily begun batch sends it only once it must talk to the server. */
  private begun = false;
  /** Everything staged in this batch is still in memory, as literals too: it may commit in one round trip. */
  private small = !NEVER_SMALL;
  private smallBytes = 0;
  private smallRows = 0;
  private seq = 0;
  private pendingRows = 0;
  /** A COPY into a stage still running (see copyOut). */
  private inflight: Promise<void> | undefined;
  /** The table whose rows that COPY carries. */
  private inflightTable: TableState | undefined;
  /** Staging rows removed by DELETE since the last VACUUM. */
  private deleted = 0;
  /**
   * When this session last ran ANALYZE on syncctl.local_changes (0: due; Infinity: never, the
   * writer was not asked to). The split's lookups of staged keys in it (moveConflicting, the
   * check after the writes) are joins whose plan follows its statistics: statistics from when it
   * held a few rows made a nested loop of two sequential scans of 2,000 entries and 5,000 keys,
   * seconds per slice. So it is analyzed when the session starts (unless the caller just did:
   * `analyzedAt`), and again, outside any transaction (the lock ANALYZE takes would be held to
   * the commit), after a slice met local changes, at most every ANALYZE_EVERY_MS.
   */
  private analyzedAt: number;
  /**
   * What prepareAhead did for the batch about to commit, under the savepoint it took: the changes
   * it set aside and the tables it reduced. applyStaged goes on from there.
   */
  private ahead: { readonly aside: readonly Aside[]; readonly reduced: ReadonlySet<TableState> } | undefined;
  /** Some slice since the last ANALYZE met local changes. */
  private localChangesMet = false;
  /** Changes applyAside applied in the open transaction (CommitPosition.setAside). */
  private asideApplied = 0;
  /** Changes applyAside logged set-based in the open transaction (CommitPosition.loggedAside). */
  private asideLogged = 0;
  /** The set statements went on from prepareAhead's work in the open transaction (CommitPosition.ahead). */
  private aheadUsed = false;
  /** Another session's commit this writer's writes to target tables wait for (see after()). */
  private barrier: Promise<unknown> | undefined;
  private prepared = false;
  /** A statement every commit runs first (the worker's check of the tables it routes). */
  private guard: string | undefined;
  private context: SourcePosition = { lsn: null, commitTime: null };
  /** The source transactions staged in this batch, by the sequence number of their first change. */
  private marks: { fromSeq: number; position: SourcePosition }[] = [];

  private readonly client: pg.Client;
  private readonly syncName: string;
  /** The sync's tables with pending apply errors (see parked.ts). */
  private readonly parked: Set<string>;

  private readonly applyEveryRows: number;

  /**
   * `applyEveryRows: Infinity` for a streamed transaction's writer: it only stages (into tables
   * that outlive target transactions) until the transaction's commit arrives.
   */
  /** The session has a replication origin set up: each commit records the source position and commit time in it. */
  private readonly origin: boolean;

  constructor(client: pg.Client, syncName: string, options: { applyEveryRows?: number; origin?: boolean; analyzeLocalChanges?: boolean; analyzedAt?: number } = {}) {
    this.client = client;
    this.syncName = syncName;
    this.origin = options.origin ?? false;
    this.analyzedAt = options.analyzeLocalChanges ? options.analyzedAt ?? 0 : Infinity;
    this.parked = parkedTables(syncName);
    this.applyEveryRows = options.applyEveryRows ?? APPLY_EVERY_ROWS;
  }

  /**
   * The batch about to be staged here writes target tables only once `previous` (the commit of
   * the batch before it, running in another session) is done: two sessions never write the same
   * rows at once, so they cannot deadlock, and a later change never lands before an earlier one.
   */
  after(previous: Promise<unknown>): void {
    this.barrier = previous;
  }

  private async passBarrier(): Promise<void> {
    const barrier = this.barrier;
    if (barrier === undefined) return;
    this.barrier = undefined;
    await barrier;
  }

  /** The target session this writer's batches run in. */
  get session(): pg.Client {
    return this.client;
  }

  /** The sequence number of the last change staged. */
  get sequence(): number {
    return this.seq;
  }

  get open(): boolean {
    return this.inTransaction;
  }

  register(table: BatchTable): void {
    const { keySources, staged } = table.apply;
    const keyPositions = keySources?.map((name) => staged.findIndex((c) => c.name === name));
    const reads = new Set(table.apply.key.flatMap((k) => table.apply.columns.find((c) => c.target === k)?.reads ?? []));
    const keyReads = staged.flatMap((c, i) => (reads.has(c.name) ? [i] : []));
    this.tables.set(table.apply.id, {
      table, statements: renderApply(table.apply), rows: new CopyTextBuilder(), created: false, staged: 0, toasted: false,
      keyPositions, keys: keyPositions ? new KeySet() : undefined, repeated: keyPositions === undefined, literals: [], deletes: false,
      writes: 0, updates: 0, afterK: undefined, keyReads, sourceOrder: false, retired: false,
    });
  }

  /**
   * Session settings, before the session first touches a temp table (temp_buffers cannot change
   * after that). Staging tables live in temp buffers; the default 8 MB would spill every large
   * batch to disk. Commits do not wait for the target's WAL flush (as a native apply worker's do
   * not): the caller confirms a source position only once the target has flushed past its commit.
   */
  async prepare(): Promise<void> {
    if (this.prepared) return;
    await this.client.query(`SET temp_buffers = '128MB'; SET synchronous_commit = off; SET standard_conforming_strings = on`);
    this.prepared = true;
  }

  private async analyzeLocalChanges(): Promise<void> {
    if (this.analyzedAt !== 0 && !(this.localChangesMet && Date.now() - this.analyzedAt >= ANALYZE_EVERY_MS)) return;
    this.localChangesMet = false;
    this.analyzedAt = await analyzeLocalChanges(this.client);
  }

  /**
   * Opens the batch's transaction. `lazy`: BEGIN waits until something must be sent (a small
   * batch then commits in one round trip); a caller that queries the client itself inside the
   * batch calls begin() without it, or ensureBegun(), first.
   */
  async begin(options: { lazy?: boolean } = {}): Promise<void> {
    if (!this.inTransaction) {
      await this.prepare();
      await this.analyzeLocalChanges();
      this.inTransaction = true;
      this.begun = false;
      this.small = !NEVER_SMALL;
    }
    if (!options.lazy) await this.ensureBegun();
  }

  /** Sends the deferred BEGIN, if any: from here on the batch's rows go out by COPY. */
  async ensureBegun(): Promise<void> {
    if (!this.inTransaction || this.begun) return;
    this.begun = true;
    this.dropSmall();
    await this.client.query(BEGIN);
  }

  private dropSmall(): void {
    if (!this.small) return;
    this.small = false;
    for (const state of this.tables.values()) state.literals = [];
  }

  /**
   * Stages one change: W writes `values` (the new row of an UPDATE), I too (an INSERT's row: the
   * conflict rules tell an insert meeting a row from an update meeting none), D deletes the row whose key `values`
   * (the old row) carries, K is the old row of an UPDATE whose new row (W) is staged next;
   * `fromUpdate`: the write is a source UPDATE's new row. Returns a promise only when the staged
   * bytes had to be copied out.
   */
  stage(id: string, op: StageOp, unchanged: readonly number[] | null, values: readonly (Buffer | null)[], fromUpdate = false): Promise<void> | undefined {
    const state = this.tables.get(id)!;
    const seq = ++this.seq;
    const positions = unchanged === null ? null : `{${unchanged.join(',')}}`;
    // No number string per row: V8 keeps those alive a while, and at a million rows they grew the young generation tenfold.
    state.rows.addStagedRow(seq, op, positions, values);
    state.staged++;
    if (unchanged !== null) state.toasted = true;
    // A stage-only writer (a streamed transaction's) never commits in one round trip: no literals.
    if (this.small && this.applyEveryRows !== Infinity) {
      let literal = `(${seq},'${op}',${positions === null ? 'NULL' : `'${positions}'`}`;
      for (const v of values) {
        // Bytes that are not UTF-8 go by COPY, as they are: the target says whether it takes them (never replaced).
        if (v !== null && !isUtf8(v)) { this.dropSmall(); break; }
        literal += v === null ? ',NULL' : `,'${v.toString('utf8').replaceAll("'", "''")}'`;
      }
      literal += ')';
      if (this.small) state.literals.push(literal);
      this.smallBytes += literal.length;
      if (++this.smallRows > SMALL_ROWS || this.smallBytes > SMALL_BYTES) this.dropSmall();
    }
    if (!state.repeated && !state.keys!.add(values, state.keyPositions!)) {
      state.repeated = true;
      state.keys!.clear();
    }
    if (op === 'D' || op === 'K') state.deletes = true;
    else {
      state.writes++;
      if (fromUpdate) state.updates++;
      const old = state.afterK;
      if (old !== undefined && state.keyReads.some((i) => !sameValue(old[i] ?? null, values[i] ?? null))) state.sourceOrder = true;
    }
    state.afterK = op === 'K' ? values : undefined;
    // Never between a K and its W: source order applies the two as one UPDATE.
    if (++this.pendingRows >= this.applyEveryRows && op !== 'K') return this.applyStaged(this.context);
    return state.rows.size >= STAGE_FLUSH_BYTES ? this.copyOut(state, { background: true }) : undefined;
  }

  /** `sql` runs in every target transaction this writer commits, before the checkpoint; its failure fails the batch. */
  setGuard(sql: string): void {
    this.guard = sql;
  }

  /** A source transaction begins: the changes staged from here on are its own (for what is parked of them). */
  setContext(context: SourcePosition): void {
    this.context = context;
    this.marks.push({ fromSeq: this.seq + 1, position: context });
  }

  /** COPY a ready-made text stream (the initial copy) into a table's stage. */
  async stageCopy(id: string, columns: readonly string[], source: NodeJS.ReadableStream): Promise<void> {
    const state = this.tables.get(id)!;
    await this.ensureBegun();
    await this.ensureCreated(state);
    const sink = this.client.query(copyFrom(`COPY ${stageTableName(state.table.apply)} (${columns.map(quoteIdent).join(', ')}) FROM STDIN`));
    await pipeline(source, sink);
    // Rows this process never saw: repeated keys are possible, and they may be many.
    state.staged += CLEAR_BY_DELETE_ROWS + 1;
    state.repeated = true;
  }

  /**
   * The part of the batch's set form that writes only this session's temp tables: the last COPY,
   * setting aside the changes of keys with a local change, the reduction to the last change per
   * key. Run while the batch before it still commits in the other session (the worker calls it
   * before that commit is done; commit() passes the barrier after it), so the target does it
   * beside that commit rather than after it. It reads syncctl.local_changes as of before that
   * commit: a key whose local change that commit forgets is set aside all the same, and source
   * order, reading after the barrier, applies its changes as they come (no conflict); a local
   * change recorded later is the set form's check after its writes (checkLocalChanges). The
   * reduction maps rows by the spec's SQL, which is over the source row: nothing the other
   * session writes. A large batch only: a small one commits in one round trip.
   */
  async prepareAhead(): Promise<void> {
    this.ahead = undefined;
    if (!this.inTransaction || this.small || SOURCE_ORDER_ONLY) return;
    const pending = this.pendingTables();
    if (pending.length === 0 || !this.provable(pending) || this.setPath(pending) !== 'usual') return;
    await this.settle();
    await this.ensureBegun();
    for (const state of pending) await this.copyOut(state);
    const splittable = pending.filter((s) => s.statements.split !== undefined);
    const reduced = pending.filter((s) => this.reduces(s));
    if (splittable.length === 0 && reduced.length === 0) return;
    await this.client.query('SAVEPOINT syncctl_batch');
    try {
      const result = await this.client.query([...splittable.map((s) => s.statements.split!.moveConflicting), ...reduced.map((s) => s.statements.reduce)].join(';\n'));
      const results = (Array.isArray(result) ? result : [result]) as pg.QueryResult[];
      this.ahead = { aside: splittable.map((state, i) => asideOf(state, results[i]!)).filter((a) => a.rows > 0), reduced: new Set(reduced) };
    } catch {
      // A row the mapping rejects: applyStaged runs it all again after the barrier, and source order decides.
      await this.client.query('ROLLBACK TO SAVEPOINT syncctl_batch; RELEASE SAVEPOINT syncctl_batch');
    }
  }

  /** The tables with changes staged, parents first. */
  private pendingTables(): TableState[] {
    return [...this.tables.values()].filter((s) => s.staged > 0).sort((a, b) => a.table.order - b.table.order);
  }

  /**
   * Applies everything staged so far inside the open transaction: set-based when that provably
   * gives what source order gives, else (or when a set statement fails) in source order.
   * `dropping`: the staging tables are dropped next (a streamed transaction's), no need to empty them.
   */
  async applyStaged(context: SourcePosition, options: { dropping?: boolean } = {}): Promise<void> {
    let ahead = this.ahead;
    this.ahead = undefined;
    await this.settle();
    await this.passBarrier();
    const pending = this.pendingTables();
    this.pendingRows = 0;
    if (pending.length === 0) return;
    await this.ensureBegun();
    for (const state of pending) await this.copyOut(state);
    let conflicts = false;
    const path = this.setPath(pending);
    // prepareAhead's work is for the usual path only, while it is provable: the batch before this
    // one may have parked changes of a table meanwhile (source order then, from the start).
    if (ahead !== undefined && (path !== 'usual' || !this.provable(pending))) {
      await this.client.query('ROLLBACK TO SAVEPOINT syncctl_batch; RELEASE SAVEPOINT syncctl_batch');
      ahead = undefined;
    }
    if (this.provable(pending)) {
      if (ahead === undefined) await this.client.query('SAVEPOINT syncctl_batch');
      try {
        const clear = !options.dropping;
        const splittable = pending.filter((s) => s.statements.split !== undefined);
        let aside: readonly Aside[];
        if (path === 'toasted') {
          aside = await this.setAside(splittable);
          await this.applyToasted(pending, clear);
        } else if (path === 'updatesFirst') {
          // One table only: its deletes and updates run ahead of the batch, which would break
          // the foreign-key order between tables (parents' writes first, children's deletes first).
          aside = await this.setAside(splittable);
          const updated = await this.updateExisting(pending[0]!);
          await this.client.query(this.batchStatements(pending, clear, updated).join(';\n'));
        } else {
          // The usual case in one round trip: every statement of the batch (that prepareAhead did
          // not run) as one simple query.
          const moves = ahead === undefined ? splittable.map((s) => s.statements.split!.moveConflicting) : [];
          const results = await this.client.query([...moves, ...this.batchStatements(pending, clear, undefined, ahead?.reduced)]
            .join(';\n')) as unknown as pg.QueryResult[];
          aside = ahead?.aside ?? splittable.map((state, i) => asideOf(state, results[i]!)).filter((a) => a.rows > 0);
          this.aheadUsed ||= ahead !== undefined;
        }
        if (aside.length > 0) {
          conflicts = true;
          this.localChangesMet = true;
          await this.applyAside(pending, aside, context, clear);
        }
        await this.client.query('RELEASE SAVEPOINT syncctl_batch');
        for (const state of pending) this.reset(state);
        return;
      } catch (error) {
        // Whatever failed (a constraint the set form's order trips, a row at fault, a transient
        // error), source order decides: it applies, parks only rows at fault, or fails the batch.
        await this.client.query('ROLLBACK TO SAVEPOINT syncctl_batch; RELEASE SAVEPOINT syncctl_batch');
        conflicts ||= (error as { code?: string }).code === LOCAL_CHANGES_FOUND;
        this.localChangesMet ||= conflicts;
      }
    }
    await this.applyInSourceOrder(pending, context, !options.dropping, conflicts);
  }

  /** Moves the staged changes of keys with a local change into their side tables (see ApplyStatements.split). */
  private async setAside(splittable: readonly TableState[]): Promise<Aside[]> {
    const aside: Aside[] = [];
    for (const state of splittable) {
      const moved = asideOf(state, await this.client.query(state.statements.split!.moveConflicting));
      if (moved.rows > 0) aside.push(moved);
    }
    return aside;
  }

  /**
   * The changes set aside, after the set statements applied the rest of the slice: back in their
   * stages, and applied in source order, where each meets the table's rule; the first changes of
   * each key that the rule would only log (kept, pending) are logged set-based before that and
   * taken out (kept-prefix.ts: they write nothing, so what follows meets the same row). Strict
   * (every table as onError: stop): a change that fails raises, the caller rolls the whole slice
   * back and applies it in source order, which parks what is at fault. Nothing is parked here.
   *
   * Why this is source order's result: the two groups have no key in common (a key with a local
   * change has every change of it set aside; a slice that changes a key is not split), and each
   * change writes, and each rule reads, only the row of its own key; so, unless a statement fails,
   * every row ends as source order leaves it, and each change set aside meets the same row and
   * local change. Constraints between rows of different keys (unique, foreign keys) only make a
   * statement fail. What else writes rows of the slice's tables are foreign keys that act (ON
   * DELETE/UPDATE CASCADE, SET NULL, SET DEFAULT): a slice with a table such a key references is
   * not split.
   */
  private async applyAside(pending: readonly TableState[], aside: readonly Aside[], context: SourcePosition, cleared: boolean): Promise<void> {
    const { rows } = await this.client.query(ACTING_FOREIGN_KEY, [pending.map((s) => quoteQualified(s.table.apply.target))]);
    if (rows.length > 0) throw Object.assign(new Error('a foreign key acts on the slice\'s tables: not split'), { code: LOCAL_CHANGES_FOUND });
    const tables = aside.map(({ state }) => sourceOrderTable(state, 'stop'));
    const marks = formatMarks(marksOf(this.rawMarks(context), aside.flatMap((a) => a.seqs)));
    for (const a of aside) this.deleted += a.rows;
    const kept = SOURCE_ORDER_ASIDE ? [] : tables.flatMap((t) => renderKeptPrefix(this.syncName, t, marks) ?? []);
    const results = await this.client.query([
      // What the rule only logs, logged set-based first, once the rows are locked (see
      // kept-prefix.ts); source order goes on from there.
      ...kept.map((k) => k.lock),
      ...kept.map((k) => k.log),
      // The set statements empty the stages only when they are to be reused.
      ...(cleared ? [] : aside.map(({ state: s }) => `DELETE FROM ${stageTableName(s.table.apply)}`)),
      ...aside.map(({ state: s }) => s.statements.split!.moveBack),
      renderSourceOrder(this.syncName, tables, marks, 'strict'),
      ...aside.map(({ state: s }) => `DELETE FROM ${stageTableName(s.table.apply)}`),
    ].join(';\n'));
    for (const a of aside) this.asideApplied += a.rows;
    for (const r of (results as unknown as pg.QueryResult[]).slice(kept.length, 2 * kept.length)) this.asideLogged += r.rowCount ?? 0;
  }

  /**
   * The set statements give the source-order result unless the slice changes a key (see
   * TableState.sourceOrder), or a write leaves TOAST values unchanged and (a) its key occurs
   * twice in the slice (the reduction keeps only the last change, whose unchanged values may
   * come from an earlier one) or (b) the slice deletes rows (a delete cascading on the target
   * could remove the row the write keeps its values from before, not after, the write), or the
   * target owns columns (the `fields` rule) and a key occurs twice (an insert writes them, a later
   * update does not: the reduction to the last change would write the update's values).
   * Otherwise constraints need no rule here: the set form never commits a result that violates
   * one, and when it fails, source order runs. A table with changes pending in sync_conflicts
   * goes in source order, which supersedes them as later changes of their keys apply.
   */
  private provable(pending: readonly TableState[]): boolean {
    if (SOURCE_ORDER_ONLY) return false;
    if (pending.some((s) => s.sourceOrder || this.parked.has(s.table.tableName))) return false;
    if (pending.some((s) => s.repeated && (s.table.apply.targetOwned ?? []).length > 0)) return false;
    if (!pending.some((s) => s.toasted)) return true;
    return pending.every((s) => !(s.toasted && s.repeated) && !s.deletes && s.table.apply.workerFilter === undefined);
  }

  /** Set-based, for a slice with unchanged TOAST values: statement by statement (the park statement takes parameters). */
  private async applyToasted(pending: readonly TableState[], clear: boolean): Promise<void> {
    for (const state of pending) {
      await this.client.query(state.statements.reduce);
      if (state.toasted) await this.parkIncomputable(state);
    }
    for (const state of [...pending].reverse()) await this.client.query(state.statements.deleteRows);
    for (const state of pending) {
      await this.client.query(state.statements.upsertRows);
      if (state.toasted) await this.client.query(state.statements.updateToasted);
    }
    for (const state of pending) {
      if (state.statements.checkLocalChanges) await this.client.query(state.statements.checkLocalChanges);
      if (clear) await this.client.query(this.clearSql(state, false).join(';\n'));
    }
  }

  /**
   * Every staged change, across the slice's tables, one by one in source order (see
   * source-order.ts): first in one statement; if that fails, again with each change in its own
   * subtransaction, parking the changes that fail because of the row itself. An error that is not
   * the row's (or a row's error on an `onError: stop` table) fails the batch.
   */
  private async applyInSourceOrder(pending: readonly TableState[], context: SourcePosition, clear: boolean, conflicts = false): Promise<void> {
    const tables = pending.map((state) => sourceOrderTable(state));
    const marks = formatMarks(this.rawMarks(context));
    await this.client.query('SAVEPOINT syncctl_order');
    try {
      // The fast pass fails on the first local change it meets: with conflicts known, only the careful pass can apply the slice.
      if (conflicts) throw new Error('conflicts: the careful pass');
      this.noteParked(await this.client.query(`${renderSourceOrder(this.syncName, tables, marks, false)};\n${READ_PARKED}`));
      await this.client.query('RELEASE SAVEPOINT syncctl_order');
    } catch {
      await this.client.query('ROLLBACK TO SAVEPOINT syncctl_order; RELEASE SAVEPOINT syncctl_order');
      try {
        this.noteParked(await this.client.query(`${renderSourceOrder(this.syncName, tables, marks, true)};\n${READ_PARKED}`));
      } catch (error) {
        const { code = '', detail, table } = error as { code?: string; detail?: string; table?: string };
        if (!ROW_FAULT_SQLSTATE.test(code) || detail === undefined) throw error;
        // A row at fault on an onError: stop table (source-order.ts raised it with its key).
        const key = JSON.parse(detail) as Record<string, unknown>;
        throw new SyncctlError('APPLY_FAILED', `${this.syncName}.${table}: the target rejected the row with key ${JSON.stringify(key)}: ${(error as Error).message}`, {
          details: { table, key },
        });
      }
    }
    for (const state of pending) {
      const statements = clear ? this.clearSql(state, true) : [];
      if (statements.length > 0) await this.client.query(statements.join(';\n'));
      this.reset(state);
    }
  }

  /** Where each source transaction of the open batch begins, for what source order records (see marksOf). */
  private rawMarks(context: SourcePosition): readonly { readonly fromSeq: number; readonly position: SourcePosition }[] {
    return this.marks.length > 0 ? this.marks : [{ fromSeq: 0, position: context }];
  }

  /** The tables a source-order block parked rows of (it lists them in PARKED_SETTING). */
  private noteParked(results: unknown): void {
    const last = (results as pg.QueryResult<{ parked: string | null }>[]).at(-1);
    for (const name of (last?.rows[0]?.parked ?? '').split(',')) if (name !== '') noteParked(this.syncName, name);
  }

  /** Empties a table's staging after its slice is applied (`stageOnly`: the direct path left the last-change table empty). */
  private clearSql(state: TableState, stageOnly: boolean): readonly string[] {
    const few = state.staged <= CLEAR_BY_DELETE_ROWS;
    if (few) this.deleted += state.staged;
    const c = state.statements.clear;
    return stageOnly ? (few ? c.fewStage : c.manyStage) : (few ? c.few : c.many);
  }

  /**
   * A table's staging for a shape it no longer has (the worker registered a new one): dropped,
   * with the statements prepared for it, once nothing of it is staged or in a transaction, so
   * that a long-lived session does not collect them.
   */
  retire(id: string): void {
    const state = this.tables.get(id);
    if (state) state.retired = true;
  }

  private async dropRetired(): Promise<void> {
    if (this.inTransaction) return;
    for (const [id, state] of this.tables) {
      if (!state.retired || state.staged > 0) continue;
      this.tables.delete(id);
      if (state.created) await this.client.query(state.statements.drop);
      const names = statementNames.get(this.client);
      const temps = [stageTableName(state.table.apply), lastTableName(state.table.apply)];
      for (const [sql, name] of names ?? []) {
        if (!temps.some((t) => sql.includes(t))) continue;
        names!.delete(sql);
        if (name !== null) await this.client.query(`DEALLOCATE ${name}`);
      }
    }
  }

  /** Deleted staging rows leave dead space that only VACUUM makes reusable (temp tables have no autovacuum). */
  private async vacuumIfDue(): Promise<void> {
    if (this.deleted < VACUUM_AFTER_ROWS || this.inTransaction) return;
    this.deleted = 0;
    const created = [...this.tables.values()].filter((s) => s.created);
    if (created.length > 0) await this.client.query(`VACUUM ${created.map((s) => s.statements.tables).join(', ')}`);
  }

  private reset(state: TableState): void {
    state.staged = 0;
    state.toasted = false;
    state.deletes = false;
    state.writes = 0;
    state.updates = 0;
    state.afterK = undefined;
    state.sourceOrder = false;
    if (state.keyPositions) {
      state.keys!.clear();
      state.repeated = false;
    }
  }

  /**
   * Which set path a provable slice takes: with unchanged TOAST values, statement by statement;
   * one large table of mostly source UPDATEs, its updates first; else the usual one round trip.
   */
  private setPath(pending: readonly TableState[]): 'toasted' | 'updatesFirst' | 'usual' {
    if (pending.some((s) => s.toasted)) return 'toasted';
    return pending.length === 1 && this.updatesFirst(pending[0]!) ? 'updatesFirst' : 'usual';
  }

  /** The table's slice goes through the last-change table: some key repeats, or the set form has no direct statements. */
  private reduces(state: TableState): boolean {
    return state.repeated || state.statements.direct === undefined;
  }

  /** A large direct slice of mostly source UPDATEs: applied by updateExisting(), then batchStatements() inserts what it missed. */
  private updatesFirst(state: TableState): boolean {
    return !state.repeated && state.statements.direct?.updateFirst !== undefined && state.writes >= UPDATE_FIRST_ROWS && state.updates * 2 >= state.writes;
  }

  /** Deletes, then updates the target rows that exist; says whether every write was an update, or some still need inserting. */
  private async updateExisting(state: TableState): Promise<{ table: TableState; complete: boolean }> {
    const { deleteRows, updateFirst } = state.statements.direct!;
    if (state.deletes || state.table.apply.workerFilter !== undefined) await this.client.query(deleteRows);
    const result = await this.client.query(updateFirst!.updateRows);
    return { table: state, complete: (result.rowCount ?? 0) >= state.writes };
  }

  /**
   * The whole batch, in the order the step-by-step path runs it. A table whose slice repeats no
   * key skips the reduction and reads its stage directly; one that `updated` already updated
   * only inserts what the update missed.
   */
  private batchStatements(pending: readonly TableState[], clear: boolean, updated?: { table: TableState; complete: boolean },
    reduced?: ReadonlySet<TableState>): string[] {
    const direct = (state: TableState) => (this.reduces(state) ? undefined : state.statements.direct);
    const statements: string[] = [];
    for (const state of pending) if (!direct(state) && !reduced?.has(state)) statements.push(state.statements.reduce);
    for (const state of [...pending].reverse()) {
      // Nothing to delete: no delete staged, and no row filter that could turn a write into one.
      if (updated?.table === state || (!state.deletes && state.table.apply.workerFilter === undefined)) continue;
      statements.push(direct(state)?.deleteRows ?? state.statements.deleteRows);
    }
    for (const state of pending) {
      if (updated?.table !== state) statements.push(direct(state)?.upsertRows ?? state.statements.upsertRows);
      else if (!updated.complete) statements.push(direct(state)!.updateFirst!.insertMissing);
    }
    for (const state of pending) {
      const check = direct(state) ? direct(state)!.checkLocalChanges : state.statements.checkLocalChanges;
      if (check) statements.push(check);
      if (clear) statements.push(...this.clearSql(state, direct(state) !== undefined));
    }
    return statements;
  }

  /**
   * `statements` as EXECUTEs of statements prepared on this session, each PREPAREd (outside any
   * transaction) the first time it is seen. Parsing and planning are most of a small batch's cost
   * in the target: a micro-benchmark of a caught-up batch of four pgbench tables took 1.8-2.5 ms of
   * backend CPU planned every time, 0.6-1.2 ms prepared; in the bench's (d), 1.44 against 0.65 ms
   * per commit. Only small batches run them: a generic plan made for a few staged rows is no plan
   * for a million.
   */
  private async asPrepared(statements: readonly string[]): Promise<string[]> {
    let names = statementNames.get(this.client);
    if (names === undefined) statementNames.set(this.client, names = new Map());
    const out: string[] = [];
    for (const sql of statements) {
      let name = names.get(sql);
      if (name === undefined) {
        name = null;
        if (PREPARABLE.test(sql)) {
          const candidate = `syncctl_${++preparedCount}`;
          try {
            await this.client.query(`PREPARE ${candidate} AS ${sql}`);
            name = candidate;
          } catch {
            // PREPARE parses and analyzes, it does not plan: a statement it refuses runs as text,
            // and whatever is wrong with it fails the batch, where the careful path takes over.
          }
        }
        names.set(sql, name);
      }
      out.push(name === null ? sql : `EXECUTE ${name}`);
    }
    return out;
  }

  /** Writes whose unchanged TOAST values cannot be kept or computed: parked (or the worker stops), never written with NULLs. */
  private async parkIncomputable(state: TableState): Promise<void> {
    const { incomputable } = state.statements;
    if (state.table.onError === 'stop') {
      const { rows } = await this.client.query<{ key: Record<string, unknown>; reason: string }>(incomputable.find);
      if (rows[0]) {
        throw new SyncctlError('APPLY_FAILED', `${this.syncName}.${state.table.tableName}: cannot apply the row with key ${JSON.stringify(rows[0].key)}: ${rows[0].reason}`, {
          details: { table: state.table.tableName, key: rows[0].key },
        });
      }
      return;
    }
    const marks = this.marks.length > 0 ? this.marks : [{ fromSeq: 0, position: this.context }];
    const parked = await this.client.query(incomputable.park, [this.syncName, state.table.tableName, marks.map((m) => m.fromSeq),
      marks.map((m) => m.position.lsn), marks.map((m) => m.position.commitTime), state.table.strategy]);
    if ((parked.rowCount ?? 0) > 0) noteParked(this.syncName, state.table.tableName);
  }

  /** Applies what is staged, then empties the tables' targets; returns those it could not empty (see truncateTargets). */
  async truncate(ids: readonly string[], context: SourcePosition): Promise<TruncateRefusal[]> {
    await this.applyStaged(context);
    return this.truncateTargets(ids.map((id) => this.tables.get(id)!.table.apply.target));
  }

  /**
   * TRUNCATE target tables (their local-change records with them), inside the open transaction.
   * A table another table references by a foreign key (one outside the sync, or not truncated
   * with it) cannot be truncated: its rows are deleted instead, as the source's rows were, and the
   * target's foreign keys act on that as on any delete. A table whose rows cannot be deleted
   * either (rows elsewhere still reference them) is returned with the reason, untouched.
   */
  async truncateTargets(targets: readonly QualifiedName[]): Promise<TruncateRefusal[]> {
    await this.settle();
    await this.passBarrier();
    if (targets.length === 0) return [];
    await this.ensureBegun();
    // An emptied table forgets its local changes, and what was parked of it: the source emptied it
    // after those changes, so retrying one later would bring back a row the source no longer has.
    const emptied = async (done: readonly QualifiedName[]) => {
      if (done.length === 0) return;
      await this.client.query(`DELETE FROM syncctl.local_changes WHERE target_table = ANY($1::text[])`, [done.map((t) => `${t.schema}.${t.name}`)]);
      if (this.parked.size > 0) {
        await this.client.query(resolveParkedSql(`c.table_name IN (SELECT table_name FROM syncctl.sync_tables WHERE sync_name = $1 AND target_table = ANY ($2::text[]))`,
          'the source truncated the table'), [this.syncName, done.map(quoteQualified)]);
      }
    };
    try {
      await this.client.query(`SAVEPOINT syncctl_truncate; TRUNCATE ${targets.map(quoteQualified).join(', ')}; RELEASE SAVEPOINT syncctl_truncate`);
      await emptied(targets);
      return [];
    } catch (error) {
      await this.client.query('ROLLBACK TO SAVEPOINT syncctl_truncate; RELEASE SAVEPOINT syncctl_truncate');
      // 0A000: "cannot truncate a table referenced in a foreign key constraint".
      if ((error as { code?: string }).code !== '0A000') throw error;
    }
    // Children before parents: retried while some table's delete succeeds.
    let remaining = [...targets];
    const reasons = new Map<QualifiedName, string>();
    for (let progress = true; progress && remaining.length > 0;) {
      progress = false;
      for (const t of [...remaining]) {
        try {
          await this.client.query(`SAVEPOINT syncctl_truncate; DELETE FROM ${quoteQualified(t)}; RELEASE SAVEPOINT syncctl_truncate`);
          remaining = remaining.filter((r) => r !== t);
          progress = true;
        } catch (error) {
          await this.client.query('ROLLBACK TO SAVEPOINT syncctl_truncate; RELEASE SAVEPOINT syncctl_truncate');
          if (!ROW_FAULT_SQLSTATE.test((error as { code?: string }).code ?? '')) throw error;
          reasons.set(t, (error as Error).message);
        }
      }
    }
    await emptied(targets.filter((t) => !remaining.includes(t)));
    return remaining.map((target) => ({ target, reason: reasons.get(target)! }));
  }

  /**
   * Applies what is staged, runs `before` if given, records the checkpoint and commits: rows and
   * position in one transaction. Returns the target's WAL position after the commit (once the target has flushed
   * past it, the commit survives a crash of the target too) and its flush position then.
   */
  async commit(checkpoint: { lsn: string; commitTime: string | null }, before?: (client: pg.Client) => Promise<unknown>,
    applied: AppliedCounts = new Map()): Promise<CommitPosition> {
    await this.passBarrier();
    const pending = this.pendingTables();
    if (before === undefined && this.inTransaction && !this.begun && this.small && !pending.some((s) => s.toasted) && this.provable(pending)) {
      return this.commitSmall(pending, checkpoint, applied);
    }
    await this.ensureBegun();
    await this.applyStaged(checkpoint);
    // Work of the caller's that belongs in this transaction, after its changes (parked changes retried).
    if (before !== undefined) await before(this.client);
    return this.commitTail(checkpoint, [], applied);
  }

  /**
   * The applied counts, the checkpoint and COMMIT, after `before`, as one simple query (values as
   * literals: a simple query takes no parameters).
   */
  private async commitTail(checkpoint: { lsn: string; commitTime: string | null }, before: readonly string[], applied: AppliedCounts): Promise<CommitPosition> {
    const counts = [...applied].filter(([, n]) => n > 0).map(([table, n]) => `(${quoteLiteral(table)}, ${n})`);
    const results = await this.client.query([...before, ...(this.guard ? [this.guard] : []),
      ...(counts.length === 0 ? [] : [`UPDATE syncctl.sync_tables AS t SET changes_applied = t.changes_applied + v.n, last_applied_at = now()
       FROM (VALUES ${counts.join(', ')}) AS v (table_name, n) WHERE t.sync_name = ${quoteLiteral(this.syncName)} AND t.table_name = v.table_name`]),
      `INSERT INTO syncctl.checkpoints (sync_name, commit_lsn, commit_time, updated_at)
       VALUES (${quoteLiteral(this.syncName)}, ${quoteLiteral(checkpoint.lsn)}::pg_lsn, ${checkpoint.commitTime === null ? 'NULL' : `${quoteLiteral(checkpoint.commitTime)}::timestamptz`}, now())
       ON CONFLICT (sync_name) DO UPDATE SET commit_lsn = excluded.commit_lsn, commit_time = coalesce(excluded.commit_time, checkpoints.commit_time), updated_at = now()`,
      ...(this.origin && checkpoint.commitTime !== null
        ? [`SELECT pg_replication_origin_xact_setup(${quoteLiteral(checkpoint.lsn)}::pg_lsn, ${quoteLiteral(checkpoint.commitTime)}::timestamptz)`] : []),
      // Third from the end: read below.
      READ_CONFLICTS_LOGGED,
      'COMMIT',
      'SELECT pg_current_wal_insert_lsn()::text AS lsn, pg_current_wal_flush_lsn()::text AS flushed'].join(';\n')) as unknown as pg.QueryResult[];
    this.finish();
    await this.vacuumIfDue();
    await this.dropRetired();
    const position = results[results.length - 1]!.rows[0] as { lsn: string; flushed: string };
    const [setAside, loggedAside, ahead] = [this.asideApplied, this.asideLogged, this.aheadUsed];
    this.asideApplied = 0;
    this.asideLogged = 0;
    this.aheadUsed = false;
    return { ...position, conflicts: conflictCounts((results[results.length - 3]!.rows[0] as { logged: string | null }).logged), setAside, loggedAside, ahead };
  }

  /**
   * A small batch in one round trip. When the target rejects something, the transaction goes
   * back to the savepoint taken after the rows were staged, and the batch is applied carefully.
   */
  private async commitSmall(pending: readonly TableState[], checkpoint: { lsn: string; commitTime: string | null }, applied: AppliedCounts): Promise<CommitPosition> {
    for (const state of pending) await this.ensureCreated(state);
    const statements = [BEGIN];
    for (const state of pending) statements.push(state.statements.insertValues + state.literals.join(','));
    if (pending.length > 0) statements.push('SAVEPOINT syncctl_batch', ...await this.asPrepared(this.batchStatements(pending, true)), 'RELEASE SAVEPOINT syncctl_batch');
    try {
      return await this.commitTail(checkpoint, statements, applied);
    } catch (error) {
      // The guard's verdict (tables routed, leader fence) does not depend on the rows: no second attempt.
      if (['SYTAB', 'SYLDR'].includes((error as { code?: string }).code ?? '')) {
        this.begun = true;
        await this.rollback();
        throw error;
      }
      this.begun = true;
      this.dropSmall();
      for (const state of pending) state.rows.discard();
      try {
        await this.client.query('ROLLBACK TO SAVEPOINT syncctl_batch; RELEASE SAVEPOINT syncctl_batch');
      } catch {
        // It failed before the savepoint (staging the rows): nothing of the batch is applied.
        await this.rollback();
        throw this.stagingError(error, pending);
      }
      // A local change met: the set statements apply the other keys, source order those (applyStaged).
      if ((error as { code?: string }).code === LOCAL_CHANGES_FOUND) await this.applyStaged(checkpoint);
      else await this.applyInSourceOrder(pending, checkpoint, true);
      return this.commitTail(checkpoint, [], applied);
    }
  }

  private finish(): void {
    this.ahead = undefined;
    this.inTransaction = false;
    this.begun = false;
    this.small = !NEVER_SMALL;
    this.smallRows = 0;
    this.smallBytes = 0;
    this.seq = 0;
    this.marks = [];
    for (const state of this.tables.values()) {
      state.literals = [];
      // A small batch's rows went as literals: their COPY text was never needed.
      if (state.rows.rows > 0) state.rows.discard();
      if (state.staged > 0) this.reset(state);
    }
  }

  /** Commits the open transaction with no checkpoint (the initial copy records its own). */
  async commitPlain(): Promise<void> {
    await this.settle();
    await this.ensureBegun();
    await this.client.query('COMMIT');
    this.finish();
  }

  async rollback(): Promise<void> {
    await this.settle().catch(() => {});
    if (!this.inTransaction) return;
    if (this.begun) await this.client.query('ROLLBACK').catch(() => {});
    this.finish();
    this.asideApplied = 0;
    this.asideLogged = 0;
    this.aheadUsed = false;
    this.pendingRows = 0;
    for (const state of this.tables.values()) {
      state.rows.takeBlocks();
      this.reset(state);
      // Temp tables created in the rolled-back transaction are gone.
      state.created = false;
    }
  }

  /** Leaves a table's staged changes out of the next apply (a streamed transaction's table copied after it committed). */
  forget(id: string): void {
    const state = this.tables.get(id);
    if (state) state.staged = 0;
  }

  /** Copies every table's rows held in memory into its stage. */
  async copyAll(): Promise<void> {
    for (const state of this.tables.values()) if (state.rows.rows > 0) await this.copyOut(state, { background: true });
  }

  /** Removes every change staged with sequence number `from` or later (an aborted subtransaction's). */
  async discardFrom(from: number): Promise<void> {
    for (const state of this.tables.values()) {
      if (state.staged === 0) continue;
      await this.copyOut(state);
      await this.client.query(state.statements.discardFrom, [from]);
    }
  }

  /** Drops the staging tables (a streamed transaction's, applied or aborted). */
  async drop(): Promise<void> {
    await this.settle().catch(() => {});
    for (const state of this.tables.values()) {
      state.rows.takeBlocks();
      state.staged = 0;
      if (!state.created) continue;
      await this.client.query(state.statements.drop);
      state.created = false;
    }
  }

  private async ensureCreated(state: TableState): Promise<void> {
    if (state.created) return;
    await this.client.query(state.statements.createStage);
    await this.client.query(state.statements.createLast);
    if (state.statements.split) await this.client.query(state.statements.split.createSide);
    state.created = true;
  }

  /**
   * COPYs a table's rows held in memory into its stage. `background`: returns once the COPY has
   * started, so the caller builds the next rows while the target reads these; at most one COPY
   * runs at a time (memory stays bounded), and the client's queue keeps every later statement
   * after it. Its failure surfaces at the next settle().
   */
  private async copyOut(state: TableState, options: { background?: boolean } = {}): Promise<void> {
    await this.ensureBegun();
    await this.ensureCreated(state);
    if (state.rows.rows > 0) {
      const data = state.rows.takeBlocks();
      await this.settle();
      const sink = this.client.query(copyFrom(state.statements.copyIn));
      const running = pipeline(Readable.from(data), sink).then(() => state.rows.recycle(data));
      running.catch(() => {});
      this.inflight = running;
      this.inflightTable = state;
    }
    if (!options.background) await this.settle();
  }

  /** Waits for the COPY running in the background, if any; throws its error (a value the target rejects as STAGING_REJECTED). */
  private async settle(): Promise<void> {
    const running = this.inflight;
    if (running === undefined) return;
    const state = this.inflightTable!;
    this.inflight = undefined;
    this.inflightTable = undefined;
    try {
      await running;
    } catch (error) {
      throw this.stagingError(error, [state]);
    }
  }

  /**
   * A data error while staging (an enum label or a domain the target does not accept) is no
   * row's fault yet: the stage's typed column refused it before any mapping ran. The caller
   * stages those tables as text and applies the batch again, where the cast fails for that row alone.
   */
  private stagingError(error: unknown, states: readonly TableState[]): unknown {
    const code = (error as { code?: string }).code ?? '';
    if (!ROW_FAULT_SQLSTATE.test(code)) return error;
    const tables = states.map((s) => s.table.tableName);
    return new SyncctlError('STAGING_REJECTED', `${this.syncName}: the target rejected a value while staging ${tables.join(', ')}: ${(error as Error).message}`, {
      details: { tables }, cause: error,
    });
  }
}
