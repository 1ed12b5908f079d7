/**
 * Writing the run history (syncctl.runs, migration 8): one row per apply, copy, resync, verify,
 * repair, pause, resume and worker session. A run is started ('running') and finished with an
 * outcome, counts and a detail line. Plain pg: it takes a pg.Client or a Connection (src/db/connect.ts),
 * anything with `query(text, values)`; reads for people are in read-runs.ts.
 */
import { hostname } from 'node:os';
import { redactConnectionStrings } from '../observe/redact.ts';

export type RunKind = 'apply' | 'copy' | 'resync' | 'verify' | 'repair' | 'pause' | 'resume' | 'worker';

/** 'stopped': ended on request (a worker's SIGTERM); 'lost': closed by someone else after its process died. */
export type RunOutcome = 'ok' | 'failed' | 'stopped' | 'lost';

/** Rows copied, pruned, keys repaired, changes applied…: whatever the kind counts. */
export type RunCounts = Readonly<Record<string, number>>;

/** A pg.Client, a pg.PoolClient or a Connection: the recorder only runs parameterized statements. */
export interface RunWriter {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

export interface RunStart {
  readonly sync: string;
  readonly kind: RunKind;
  /** The spec's table name, for per-table runs (copy, resync, pause, resume, repair of one table). */
  readonly table?: string;
  /** When the run began, if before it could be recorded (apply creates syncctl.runs itself). */
  readonly startedAt?: Date;
  /** Counts known at the start (they are replaced, not merged, by finishRun's). */
  readonly counts?: RunCounts;
  readonly detail?: string;
}

export interface RunEnd {
  readonly outcome: RunOutcome;
  readonly counts?: RunCounts;
  /** One line for a person: what was done, or why it failed. */
  readonly detail?: string;
}

/** Inserts a 'running' run and returns its id. */
export async function startRun(db: RunWriter, run: RunStart): Promise<number> {
  const result = await db.query(
    `INSERT INTO syncctl.runs (sync_name, kind, table_name, started_at, counts, detail, host, pid)
     VALUES ($1, $2, $3, coalesce($4::timestamptz, clock_timestamp()), $5::jsonb, $6, $7, $8)
     RETURNING id::float8 AS id`,
    [run.sync, run.kind, run.table ?? null, run.startedAt?.toISOString() ?? null, JSON.stringify(run.counts ?? {}), clean(run.detail), hostname(), process.pid],
  );
  return (result.rows[0] as { id: number }).id;
}

/**
 * Inserts a run that is already over (a pause or resume: one statement, recorded in its
 * transaction; or a run whose outcome was known before syncctl.runs could be written).
 */
export async function recordFinishedRun(db: RunWriter, run: RunStart & RunEnd): Promise<number> {
  const result = await db.query(
    `INSERT INTO syncctl.runs (sync_name, kind, table_name, started_at, ended_at, outcome, counts, detail, host, pid)
     VALUES ($1, $2, $3, coalesce($4::timestamptz, clock_timestamp()), clock_timestamp(), $5, $6::jsonb, $7, $8, $9)
     RETURNING id::float8 AS id`,
    [run.sync, run.kind, run.table ?? null, run.startedAt?.toISOString() ?? null, run.outcome, JSON.stringify(run.counts ?? {}), clean(run.detail),
      hostname(), process.pid],
  );
  return (result.rows[0] as { id: number }).id;
}

/** Ends a run. Counts, when given, replace the row's; detail, when given, replaces it. */
export async function finishRun(db: RunWriter, id: number, end: RunEnd): Promise<void> {
  await db.query(
    `UPDATE syncctl.runs SET ended_at = clock_timestamp(), outcome = $2,
       counts = coalesce($3::jsonb, counts), detail = coalesce($4, detail)
     WHERE id = $1`,
    [id, end.outcome, end.counts === undefined ? null : JSON.stringify(end.counts), clean(end.detail)],
  );
}

/** Updates a running run's counts (a long copy or a worker session reporting progress). */
export async function updateRunCounts(db: RunWriter, id: number, counts: RunCounts): Promise<void> {
  await db.query(`UPDATE syncctl.runs SET counts = $2::jsonb WHERE id = $1`, [id, JSON.stringify(counts)]);
}

/**
 * Closes as 'lost' the runs of a kind still 'running' for a sync, but for `except` (a new leader
 * closing the sessions of a worker that died without saying so). Returns how many it closed.
 */
export async function closeLostRuns(db: RunWriter, sync: string, kind: RunKind, except?: number): Promise<number> {
  const result = await db.query(
    `UPDATE syncctl.runs SET ended_at = clock_timestamp(), outcome = 'lost',
       detail = coalesce(detail || '; ', '') || 'ended without recording an outcome'
     WHERE sync_name = $1 AND kind = $2 AND outcome = 'running' AND id IS DISTINCT FROM $3
     RETURNING id`,
    [sync, kind, except ?? null],
  );
  return result.rows.length;
}

/**
 * Runs `work` as a recorded run: started before, finished 'ok' with the counts it returns, or
 * 'failed' with the error's message. The work's own error is what escapes; a failure to record the
 * failure (the connection it broke) is not allowed to hide it.
 */
export async function recordRun<T>(
  db: RunWriter,
  run: RunStart,
  work: (id: number) => Promise<{ readonly result: T; readonly counts?: RunCounts; readonly detail?: string }>,
): Promise<T> {
  const id = await startRun(db, run);
  let outcome: Awaited<ReturnType<typeof work>>;
  try {
    outcome = await work(id);
  } catch (error) {
    await finishRun(db, id, { outcome: 'failed', detail: messageOf(error) }).catch(() => {});
    throw error;
  }
  await finishRun(db, id, { outcome: 'ok', counts: outcome.counts, detail: outcome.detail });
  return outcome.result;
}

/** The first line of an error's message, as a run's detail. */
export function messageOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n', 1)[0] ?? message;
}

/** Details are read by people and scripts: no password, and not a novel. */
const MAX_DETAIL = 2_000;

function clean(detail: string | undefined): string | null {
  if (detail === undefined) return null;
  const text = redactConnectionStrings(detail);
  return text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL - 1)}…` : text;
}
