/**
 * `syncctl verify` for one sync: every selected table's target compared with its mapped source
 * while the worker streams (scan-table.ts finds candidates, recheck.ts confirms them once the
 * worker is past the read), differences a conflict rule keeps set apart (kept-by-rule.ts), and
 * with `repair` the rest re-applied through the stream (repair-table.ts, send-repair.ts) and checked again.
 * Native tables are compared the same way, their subscription being the applier waited for; they
 * are not repaired. Each verify and repair is a row in syncctl.runs.
 */
import { createPool, createSqlTag, type DatabasePool } from 'slonik';
import { z } from 'zod';
import { connect, type Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { finishRun, messageOf, startRun, type RunCounts } from '../history/record-run.ts';
import type { Logger } from '../observe/logger.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import { planSync, type ResolvedTable } from '../plan/plan-sync.ts';
import { subscriptionName } from '../plan/render-ddl.ts';
import { readValueSettings, type ValueSettings } from '../snapshot/source-evaluation.ts';
import type { LoadedSync, LoadedTable } from '../spec/loaded-sync.ts';
import { HASH_PROBE } from './render-verify-sql.ts';
import { repairTable } from './repair-table.ts';
import { notMirrored, readSubscription } from './subscription-position.ts';
import { tableOk, type SyncVerification, type TableVerification } from './verification.ts';
import { skippedTable, verifyTable, type CheckedTable, type VerifySession } from './verify-table.ts';
import { applierOf } from './worker-position.ts';

const sql = createSqlTag();

export interface VerifyOptions {
  /** Spec table names; all of the sync's tables when absent. */
  readonly tables?: readonly string[];
  readonly repair: boolean;
  /** How long a re-check waits for the worker to pass a read position. */
  readonly timeoutMs: number;
  readonly logger?: Logger;
}

export async function verifySync(sync: LoadedSync, options: VerifyOptions): Promise<SyncVerification> {
  const tables = selectTables(sync, options.tables);
  const source = await connect('source', sync.sourceUrl, 'syncctl verify');
  try {
    const target = await connect('target', sync.targetUrl, 'syncctl verify');
    try {
      const control = await openControl(sync.targetUrl);
      try {
        return await verifyWith({ source, target, control, sync, options, tables });
      } finally {
        await control.end();
      }
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

function selectTables(sync: LoadedSync, names: readonly string[] | undefined): string[] {
  if (names === undefined || names.length === 0) return sync.tables.map((t) => t.name);
  const unknown = names.filter((n) => !sync.tables.some((t) => t.name === n));
  if (unknown.length > 0) {
    throw new SyncctlError('SPEC_INVALID', `sync ${sync.name} has no table ${unknown.join(', ')} (its tables: ${sync.tables.map((t) => t.name).join(', ')})`);
  }
  return [...new Set(names)];
}

async function verifyWith(args: {
  source: Connection; target: Connection; control: DatabasePool; sync: LoadedSync; options: VerifyOptions; tables: readonly string[];
}): Promise<SyncVerification> {
  const { source, target, control, sync, options } = args;
  const plan = await planSync(sync, { source, target });
  const blocking = plan.changes.filter((c) => !c.streamSafe);
  if (blocking.length > 0) {
    throw new SyncctlError('PLAN_PENDING', `${sync.name}: the databases do not match the spec (${blocking.length} change(s) pending: ` +
      `${blocking.map((c) => c.id).join(', ')}); run syncctl apply first`);
  }
  const states = await tableStates(control, sync.name);
  // Both sessions print values alike: the target's settings, made lossless, as the copy's source sessions take them.
  const settings = await readValueSettings(target);
  await pinSettings(source, settings);
  await pinSettings(target, settings);
  const [a, b] = await Promise.all([source.query<{ h: string }>(HASH_PROBE), target.query<{ h: string }>(HASH_PROBE)]);
  const session: VerifySession = {
    source, target, control, sync, settings, sameHashes: a.rows[0]!.h === b.rows[0]!.h, syncName: sync.name, timeoutMs: options.timeoutMs,
    ...(options.logger ? { logger: options.logger } : {}),
  };
  const table = args.tables.length === 1 ? args.tables[0] : undefined;
  const run = await startRun(target, { sync: sync.name, kind: 'verify', ...(table !== undefined ? { table } : {}) });
  const checked: CheckedTable[] = [];
  // Appliers (the worker, the subscription) that did not keep up for one table are not waited for again.
  const behind = new Set<string>();
  try {
    for (const name of args.tables) {
      const spec = sync.tables.find((t) => t.name === name)!;
      const resolved = plan.tables.get(name);
      const skip = spec.mode === 'native' ? await nativeSkipReason(target, sync.name, spec, resolved) : skipReason(states.get(name), resolved);
      const applier = applierOf(sync.name, spec).kind;
      const result = skip !== undefined || resolved === undefined ? { report: skippedTable(spec.name, spec.target, skip ?? 'not planned'), drift: [] }
        : await verifyTable(behind.has(applier) ? { ...session, timeoutMs: 0 } : session, resolved);
      checked.push(result);
      if (result.workerBehind !== undefined) behind.add(applier);
    }
  } catch (error) {
    await finishRun(target, run, { outcome: 'failed', detail: messageOf(error) }).catch(() => {});
    throw error;
  }
  const notCaughtUp = checked.find((c) => c.workerBehind !== undefined)?.workerBehind;
  await finishRun(target, run, {
    outcome: notCaughtUp ? 'failed' : 'ok', counts: verifyCounts(checked.map((c) => c.report)), detail: notCaughtUp ?? summary(checked),
  });
  const reports = options.repair ? await repairAll(session, checked) : checked.map((c) => c.report);
  return { sync: sync.name, tables: reports, ok: reports.every(tableOk) };
}

function skipReason(state: string | undefined, resolved: ResolvedTable | undefined): string | undefined {
  if (resolved === undefined) return 'the table is not planned';
  if (state !== 'streaming') return `the table is ${state ?? 'not registered'}, not streaming: its target is not expected to equal the source`;
  return undefined;
}

/** A native table's state is its subscription's (syncctl.sync_tables does not follow it). */
async function nativeSkipReason(target: Connection, syncName: string, table: LoadedTable, resolved: ResolvedTable | undefined): Promise<string | undefined> {
  if (resolved === undefined) return 'the table is not planned';
  const subscription = subscriptionName(syncName);
  return notMirrored(subscription, await readSubscription(target, { subscription, table: table.target }));
}

/**
 * Repairs every table with differences left, each as a 'repair' run, and checks its keys again.
 * A native table is left as it is: its subscription writes it, and a write by syncctl would race
 * the subscription's apply worker (a repaired row could be overwritten by an older change, or make
 * the next change fail and stop the subscription).
 */
async function repairAll(session: VerifySession, checked: readonly CheckedTable[]): Promise<TableVerification[]> {
  const out: TableVerification[] = [];
  for (const c of checked) {
    if (c.shape === undefined || c.drift.length === 0) {
      out.push(c.report);
      continue;
    }
    if (c.shape.table.mode === 'native') {
      out.push({ ...c.report, notRepaired: `--repair does not write native tables: subscription ${subscriptionName(session.syncName)} writes this table, ` +
        'and a write by syncctl would race its apply worker' });
      continue;
    }
    out.push({ ...c.report, repair: await repairTable(session, c.shape, c.drift) });
  }
  return out;
}

function verifyCounts(tables: readonly TableVerification[]): RunCounts {
  const all = (pick: (t: TableVerification) => number) => tables.reduce((n, t) => n + pick(t), 0);
  const kind = (k: string) => all((t) => t.differences.filter((d) => d.kind === k).length);
  return {
    tables: tables.filter((t) => t.skipped === undefined).length, skipped: tables.filter((t) => t.skipped !== undefined).length,
    rowsCompared: all((t) => Math.max(t.rows.source, t.rows.target)), sourceRows: all((t) => t.rows.source), targetRows: all((t) => t.rows.target),
    missing: kind('missing'), extra: kind('extra'), different: kind('different'),
    excluded: all((t) => t.excluded.length), unconfirmed: all((t) => t.unconfirmed.length),
  };
}

function summary(checked: readonly CheckedTable[]): string {
  const differing = checked.filter((c) => c.report.differences.length > 0).length;
  const keys = checked.reduce((n, c) => n + c.report.differences.length, 0);
  return keys === 0 ? 'no differences' : `${keys} key(s) differ in ${differing} table(s)`;
}

const tableState = z.object({ table: z.string(), state: z.string() });

async function tableStates(control: DatabasePool, syncName: string): Promise<Map<string, string>> {
  const rows = await control.any(sql.type(tableState)`SELECT table_name AS "table", state FROM syncctl.sync_tables WHERE sync_name = ${syncName}`);
  return new Map(rows.map((r) => [r.table, r.state]));
}

/** Session-level, so that every later statement prints this way; a setting the server refuses is left as it is. */
async function pinSettings(db: Connection, settings: ValueSettings): Promise<void> {
  for (const [name, value] of settings.apply) {
    await db.query(`SELECT set_config($1, $2, false)`, [name, value]).catch(() => {});
  }
}

async function openControl(targetUrl: string): Promise<DatabasePool> {
  const secret = passwordOf(targetUrl);
  try {
    return await createPool(targetUrl, { maximumPoolSize: 1, captureStackTrace: false });
  } catch (error) {
    throw new SyncctlError('CONNECTION_FAILED', `cannot connect to the target database ${describeConnection(targetUrl)}: ` +
      redactSecrets(error instanceof Error ? error.message : String(error), secret ? [secret] : []));
  }
}

