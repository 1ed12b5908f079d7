/**
 * End-to-end helpers for the stream: run the worker (in this process or as `node bin/syncctl run`)
 * and wait until the target equals the mapped source.
 *
 * "Equals" compares whole tables: every mapped column of every row, as text (rows of megabytes by
 * md5 and length of that text). The expected rows are computed on the SOURCE by the spec's own SQL
 * (its column expressions and row filter), each cast to the target column's type, so the
 * comparison reads exactly what the target should hold:
 *
 *   await expectTargetMatches(dbs(), sync.tables);           // polls, then compares row by row
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { createLogger } from '../../src/observe/logger.ts';
import { applyAll } from '../../src/plan/reconcile.ts';
import { loadSpecs } from '../../src/spec/load-specs.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { quoteIdent, quoteQualified, type QualifiedName } from '../../src/sql/quote.ts';
import { runWorker, type WorkerOptions } from '../../src/stream/worker.ts';
import { REPO_ROOT } from './cli.ts';

/** A mapped table as the comparison needs it (a LoadedTable fits). */
export interface MappedTable {
  readonly source: QualifiedName;
  readonly target: QualifiedName;
  readonly key: readonly string[];
  readonly columns: readonly { readonly target: string; readonly expression: string }[];
  readonly where?: string;
  /** Compare only the target rows for which this (SQL over the target row) holds, e.g. to leave out a parked key. */
  readonly targetWhere?: string;
}

export interface Databases {
  readonly source: pg.Client;
  readonly target: pg.Client;
}

interface Side {
  /** SELECT k (the key as text), r (the row as text) */
  readonly select: string;
  /** SELECT h: a hash per row (of its key and of each column's text), cheap on megabyte values. */
  readonly hashes: string;
}

async function targetTypes(target: pg.Client, table: QualifiedName): Promise<Map<string, string>> {
  const { rows } = await target.query<{ name: string; type: string }>(
    `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
      WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, [quoteQualified(table)]);
  return new Map(rows.map((r) => [r.name, r.type]));
}

async function sides(db: Databases, table: MappedTable): Promise<{ source: Side; target: Side }> {
  const types = await targetTypes(db.target, table.target);
  const expression = new Map(table.columns.map((c) => [c.target, c.expression]));
  // The spec's SQL on the source row, cast as an insert into the target column would cast it.
  const mapped = (column: string) => `(CAST((${expression.get(column)!}) AS ${types.get(column)!}))::text`;
  const plain = (column: string) => `(${quoteIdent(column)})::text`;
  // ROW(...)::text keeps NULL apart from '' and is much cheaper than jsonb on big tables.
  const build = (value: (column: string) => string, from: string, where?: string): Side => {
    const filter = `FROM ${from}${where !== undefined ? ` WHERE coalesce((${where}), false)` : ''}`;
    const hash = (columns: readonly string[]) => `hashtextextended(ROW(${columns.map((c) => `hashtextextended(${value(c)}, 0)`).join(', ')})::text, 0)`;
    return {
      select: `SELECT ROW(${table.key.map(value).join(', ')})::text AS k, ROW(${table.columns.map((c) => value(c.target)).join(', ')})::text AS r ${filter}`,
      hashes: `SELECT ${hash(table.key)}::numeric * 3 + ${hash(table.columns.map((c) => c.target))} AS h ${filter}`,
    };
  };
  return {
    source: build(mapped, quoteQualified(table.source), table.where),
    target: build(plain, quoteQualified(table.target), table.targetWhere),
  };
}

/** Row count and an order-independent hash of all rows: cheap to poll, compared exactly later. */
async function digest(client: pg.Client, side: Side): Promise<string> {
  const { rows } = await client.query<{ n: number; d: string | null }>(`SELECT count(*)::int AS n, sum(h)::text AS d FROM (${side.hashes}) AS q`);
  return `${rows[0]!.n}:${rows[0]!.d ?? ''}`;
}

/** Rows up to this long are compared as text; longer ones (megabytes of TOAST) by md5 and length. */
const EXACT_ROW_CHARS = 8192;

async function fetchRows(client: pg.Client, side: Side): Promise<Map<string, string>> {
  const { rows } = await client.query<{ k: string; r: string }>(
    `SELECT k, CASE WHEN length(r) <= ${EXACT_ROW_CHARS} THEN r ELSE left(r, 200) || '… md5 ' || md5(r) || ', ' || length(r) || ' chars' END AS r ` +
    `FROM (${side.select}) AS q`);
  const out = new Map<string, string>();
  for (const row of rows) {
    // A key seen twice would be a duplicate (the target's unique key makes it impossible there).
    out.set(out.has(row.k) ? `${row.k} (duplicate ${out.size})` : row.k, row.r);
  }
  return out;
}

function clip(text: string | undefined): string {
  if (text === undefined) return '(absent)';
  return text.length > 300 ? `${text.slice(0, 200)} … ${text.slice(-80)}` : text;
}

/** Differences between expected (mapped source) and actual (target) rows, at most `limit` listed. */
export async function compareTable(db: Databases, table: MappedTable, limit = 10): Promise<string[]> {
  const s = await sides(db, table);
  const [expected, actual] = await Promise.all([fetchRows(db.source, s.source), fetchRows(db.target, s.target)]);
  const problems: string[] = [];
  for (const [key, row] of expected) {
    const got = actual.get(key);
    if (got !== row) problems.push(`${key}: expected ${clip(row)}, target has ${clip(got)}`);
  }
  for (const [key, row] of actual) {
    if (!expected.has(key)) problems.push(`${key}: not in the mapped source, target has ${clip(row)}`);
  }
  if (problems.length === 0) return [];
  const name = `${table.target.schema}.${table.target.name}`;
  return [`${name} (${table.columns.map((c) => c.target).join(', ')}): ${expected.size} expected row(s), ${actual.size} on the target, ` +
    `${problems.length} difference(s)`,
    ...problems.slice(0, limit)];
}

/**
 * Polls until every table's target equals its mapped source (cheap digests on both servers),
 * then compares them row by row; throws with the differences after `timeoutMs`.
 */
export async function expectTargetMatches(db: Databases, tables: readonly MappedTable[], options: { timeoutMs?: number; what?: string } = {}): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  const prepared: { table: MappedTable; sides: { source: Side; target: Side } }[] = [];
  for (const t of tables) prepared.push({ table: t, sides: await sides(db, t) });
  for (;;) {
    const started = Date.now();
    let same = true;
    for (const p of prepared) {
      const [a, b] = await Promise.all([digest(db.source, p.sides.source), digest(db.target, p.sides.target)]);
      if (a !== b) { same = false; break; }
    }
    if (same || Date.now() > deadline) break;
    // Digests of big tables cost CPU the worker needs: poll at most half of the time.
    await sleep(Math.max(100, Date.now() - started));
  }
  const problems: string[] = [];
  for (const t of tables) problems.push(...(await compareTable(db, t)));
  if (problems.length > 0) {
    throw new Error(`${options.what ? `${options.what}: ` : ''}the target does not equal the mapped source\n  ${problems.join('\n  ')}`);
  }
}

/** The sync a spec file or directory defines, with env() resolved from `env`. */
export async function loadSync(specPath: string, env: Record<string, string>): Promise<LoadedSync> {
  const syncs = await loadSpecs(specPath, env);
  if (syncs.length !== 1) throw new Error(`expected one sync in ${specPath}, got ${syncs.length}`);
  return syncs[0]!;
}

/** `syncctl apply` through the library; returns the ids of the changes applied. */
export async function apply(sync: LoadedSync): Promise<string[]> {
  const plans = await applyAll([sync]);
  return plans.flatMap((p) => p.changes.map((c) => c.id));
}

export interface InProcessWorker {
  /** Settles when the worker returns (resolves) or fails (rejects). */
  readonly done: Promise<void>;
  /** The error the worker failed with, once it did. */
  readonly error: () => unknown;
  readonly finished: () => boolean;
  /** SIGTERM's path: abort, then wait for the worker to return. */
  stop(): Promise<void>;
}

/** runWorker in this process with a warn-level logger. */
export function startWorker(sync: LoadedSync, options: Partial<WorkerOptions> = {}): InProcessWorker {
  const controller = new AbortController();
  let failure: unknown;
  let finished = false;
  const done = runWorker({
    sync, logger: createLogger({ level: (process.env['SYNCCTL_TEST_LOG_LEVEL'] ?? 'warn') as 'warn', pretty: false }), signal: controller.signal, ...options,
  }).then(
    () => { finished = true; },
    (error: unknown) => { failure = error; finished = true; throw error; },
  );
  done.catch(() => {});
  return {
    done,
    error: () => failure,
    finished: () => finished,
    async stop() {
      controller.abort();
      await done;
    },
  };
}

export interface ChildWorker {
  readonly child: ChildProcess;
  readonly pid: number;
  /** stderr so far (JSON log lines, error messages). */
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node bin/syncctl run <specPath>` as a child process (for kill -9 and RSS measurements). */
export function spawnWorker(specPath: string, env: Record<string, string>, args: readonly string[] = []): ChildWorker {
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('VITEST') && name !== 'NODE_OPTIONS') childEnv[name] = value;
  }
  Object.assign(childEnv, { SYNCCTL_LOG_LEVEL: 'warn', SYNCCTL_LOG_FORMAT: 'json' }, env);
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'syncctl'), 'run', specPath, ...args], {
    cwd: REPO_ROOT, env: childEnv, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  return { child, pid: child.pid!, stderr: () => stderr, exited };
}

/** Peak resident set size (VmHWM) of a live process, in kB; undefined once it is gone. */
export function peakRssKb(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The sync's checkpoint on the target and its slot's confirmed position on the source. */
export async function positions(db: Databases, syncName: string): Promise<{ checkpoint: string | undefined; confirmed: string | undefined }> {
  const c = await db.target.query<{ lsn: string }>('SELECT commit_lsn::text AS lsn FROM syncctl.checkpoints WHERE sync_name = $1', [syncName]);
  const s = await db.source.query<{ lsn: string | null }>(
    'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [`syncctl_${syncName}`]);
  return { checkpoint: c.rows[0]?.lsn, confirmed: s.rows[0]?.lsn ?? undefined };
}

/** Waits until the sync's slot is in use (a worker is streaming from it). */
export async function waitForStreaming(db: Databases, syncName: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await db.source.query<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [`syncctl_${syncName}`]);
    if (rows[0]?.active) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for a worker to stream from syncctl_${syncName}`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface Churn {
  /** Transactions committed so far. */
  readonly committed: () => number;
  /** Stops after the transaction in flight; resolves with the number committed. */
  stop(): Promise<number>;
}

/**
 * A write workload: calls `transaction()` (which returns the SQL of one source transaction,
 * e.g. `BEGIN; …; COMMIT`) in a loop on `client` until stopped. A transaction the source rejects
 * (a random key collided) is rolled back and the loop goes on.
 */
export function churn(client: pg.Client, transaction: () => string, options: { pauseMs?: number } = {}): Churn {
  let stopping = false;
  let committed = 0;
  let failure: unknown;
  const loop = (async () => {
    while (!stopping) {
      try {
        await client.query(transaction());
        committed++;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        if (!(error as Error).message.match(/duplicate key|violates/)) throw error;
      }
      if (options.pauseMs) await sleep(options.pauseMs);
    }
  })().catch((error: unknown) => { failure = error; });
  return {
    committed: () => committed,
    async stop() {
      stopping = true;
      await loop;
      if (failure) throw failure;
      return committed;
    },
  };
}

/** A random integer in [min, max]. */
export function randomInt(min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1));
}
