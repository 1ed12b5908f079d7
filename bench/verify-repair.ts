/**
 * (v) verify (issue #13): `verify` of the 1M-row pgbench_accounts after its first copy, with no
 * differences, against copying it again (`resync`); then 100 differences made on the target
 * behind syncctl's back, found and repaired by `verify --repair` while the worker runs.
 * verify and resync run through the library, as their commands call it (verifySync,
 * resyncTable), in the harness process; the worker is the `syncctl run` child.
 */
import pino from 'pino';
import { resyncTable } from '../src/lifecycle/resync-table.ts';
import type { Logger } from '../src/observe/logger.ts';
import type { TableVerification } from '../src/verify/verification.ts';
import { verifySync } from '../src/verify/verify-sync.ts';
import { ROWS, ROWS_TEXT } from './config.ts';
import { now } from './db.ts';
import { checkpointBoth, cpuNote, markerTxn, noSlotsLeft, resetTarget, sameData, waitApplied, type Bench } from './harness.ts';
import { say } from './log.ts';
import { fmt, type Results } from './report.ts';

const SCENARIO = `v. verify the ${ROWS_TEXT}-row table (pgbench_accounts)`;
const VERIFY = 'verify, no differences';
const RECOPY = 'recopy (resync)';
const VERIFY_RECOPY = 'verify ÷ recopy (target ≤ 0.33)';
const REPAIR = 'verify --repair, 100 differences';
const REPAIR_VERIFY = 'verify --repair ÷ verify (target < 2)';
/** The spec's name of pgbench_accounts in the identity sync. */
const TABLE = 'accounts';
/** How long a re-check waits for the worker to pass the source read (verify's --timeout). */
const RECHECK_TIMEOUT_MS = 120_000;
const DIFFERENCES = { different: 80, missing: 10, extra: 10 } as const;

export const METHOD_V = `(v) syncctl only, with its identity spec; the target emptied as for (a). "first copy" = \`applyAll()\` as in (a). With the worker ` +
  'streaming: "verify" = `verifySync(sync, { tables: [\'accounts\'] })` (what `syncctl verify --table accounts` runs), from the call to its result, ' +
  `which must find ${ROWS} rows on each side and no difference; "recopy" = \`resyncTable()\` of accounts (what \`syncctl resync\` runs: a new ` +
  'snapshot, the copy, the prune, the hand-over to the stream), from the call to its return, copying every row. The target table holds rows, so the ' +
  'recopy takes the staged path: each source row is shipped, staged and upserted, and a row equal to the target\'s is not written. Then, on one target ' +
  'session with session_replication_role = replica (no trigger fires: syncctl\'s change tracking does not see the writes), 100 keys spread over the ' +
  `table (aid = 1 + (i × 9973 + 101 × rep) mod ${ROWS}) are made to differ: ${DIFFERENCES.different} UPDATEs of abalance, ${DIFFERENCES.missing} DELETEs, ` +
  `${DIFFERENCES.extra} INSERTs of a key beyond the source's; "verify --repair" = \`verifySync(sync, { tables: ['accounts'], repair: true })\` with the ` +
  'worker running, from the call until it returns with the differences repaired (it re-applies them through the stream and checks them again); ' +
  'its two parts (info) split at verify\'s "verified" log line (the differences confirmed, before the repair). ' +
  'Checked: exactly those 100 keys found, with their kinds, all 100 repaired, none left or unconfirmed, and the table equal to the source after. ' +
  'Ratios are per repetition; the table gives their median. CHECKPOINT of both sides before each timed step.';

export async function scenarioV(b: Bench, rep: number): Promise<void> {
  const c = b.syncctl;
  const sync = b.identSyncs[0]!;
  const table = sync.tables.find((t) => t.name === TABLE);
  if (table === undefined) throw new Error(`(v) the identity spec has no table ${TABLE}`);
  say(`rep ${rep} · v. verify, recopy and repair of pgbench_accounts`);
  await resetTarget(b);

  const copy = await timed(b, 'v. first copy (apply) · syncctl', () => c.setup());
  const copied = await b.tgt.number('SELECT count(*) FROM pgbench_accounts');
  if (copied !== ROWS) throw new Error(`(v) the first copy left ${copied} rows in pgbench_accounts, expected ${ROWS}`);
  await c.startWorker();
  await waitApplied(b, c, await markerTxn(b));

  const clean = await timed(b, 'v. verify, no differences · syncctl', () => verifySync(sync, { tables: [TABLE], repair: false, timeoutMs: RECHECK_TIMEOUT_MS }));
  const report = clean.value.tables[0];
  if (!clean.value.ok || report === undefined || report.rows.source !== ROWS || report.rows.target !== ROWS) {
    throw new Error(`(v) verify after the first copy did not find ${ROWS} equal rows on each side: ${JSON.stringify(clean.value).slice(0, 2000)}`);
  }
  say(`    v. verify: ${clean.seconds.toFixed(2)} s for ${ROWS} rows on each side (${report.path} path: ${report.pathReason}), ${report.rechecked} keys re-checked, no difference`);

  const recopy = await timed(b, 'v. recopy (resync) · syncctl', () => resyncTable({ sync, table }, { by: 'bench' }));
  if (recopy.value.rows !== ROWS || recopy.value.pruned !== 0) {
    throw new Error(`(v) the resync copied ${recopy.value.rows} rows and pruned ${recopy.value.pruned}, expected ${ROWS} and 0`);
  }
  say(`    v. recopy (resync): ${recopy.seconds.toFixed(2)} s for ${recopy.value.rows} rows`);
  await waitApplied(b, c, await markerTxn(b));

  const planted = await plantDifferences(b, rep);
  const log = phaseLog();
  const repaired = await timed(b, 'v. verify --repair, 100 differences · syncctl',
    () => verifySync(sync, { tables: [TABLE], repair: true, timeoutMs: RECHECK_TIMEOUT_MS, logger: log.logger }));
  // verify logs 'verified' once the differences are confirmed, before it repairs them.
  const found = (log.at('verified') ?? Number.NaN) - repaired.started;
  checkRepair(repaired.value.tables[0], planted);
  if (!repaired.value.ok) throw new Error(`(v) verify --repair did not end with nothing differing: ${JSON.stringify(repaired.value).slice(0, 2000)}`);
  await sameData(b, '(v) after verify --repair', c.label);
  say(`    v. verify --repair: ${repaired.seconds.toFixed(2)} s; found and repaired the 100 differences ` +
    `(${DIFFERENCES.different} different, ${DIFFERENCES.missing} missing, ${DIFFERENCES.extra} extra): found and confirmed in ${found.toFixed(2)} s, ` +
    `repaired and checked again in ${(repaired.seconds - found).toFixed(2)} s`);

  const ratio = clean.seconds / recopy.seconds;
  const repairRatio = repaired.seconds / clean.seconds;
  say(`    v. verify ÷ recopy ${ratio.toFixed(2)} (target ≤ 0.33); verify --repair ÷ verify ${repairRatio.toFixed(2)} (target < 2); ` +
    `verify ÷ first copy ${(clean.seconds / copy.seconds).toFixed(2)}`);
  b.results.add(SCENARIO, 'first copy (apply), for reference', 'syncctl', copy.seconds, 's', 'none');
  b.results.add(SCENARIO, VERIFY, 'syncctl', clean.seconds, 's', 'none');
  b.results.add(SCENARIO, 'verify rows/s (rows on each side / time)', 'syncctl', ROWS / clean.seconds, 'rows/s', 'none');
  b.results.add(SCENARIO, RECOPY, 'syncctl', recopy.seconds, 's', 'none');
  b.results.add(SCENARIO, VERIFY_RECOPY, 'syncctl', ratio, '×', 'none');
  b.results.add(SCENARIO, 'verify ÷ first copy (info)', 'syncctl', clean.seconds / copy.seconds, '×', 'none');
  b.results.add(SCENARIO, REPAIR, 'syncctl', repaired.seconds, 's', 'none');
  b.results.add(SCENARIO, REPAIR_VERIFY, 'syncctl', repairRatio, '×', 'none');
  b.results.add(SCENARIO, 'of verify --repair: finding and confirming the differences (info)', 'syncctl', found, 's', 'none');
  b.results.add(SCENARIO, 'of verify --repair: repairing them and checking again (info)', 'syncctl', repaired.seconds - found, 's', 'none');

  await c.teardown();
  await noSlotsLeft(b);
  await checkpointBoth(b);
}

/** Issue #13's targets, from the medians of the per-repetition ratios. */
export function targetsV(results: Results): string[] {
  const ratio = results.median(SCENARIO, VERIFY_RECOPY, 'syncctl');
  const repair = results.median(SCENARIO, REPAIR_VERIFY, 'syncctl');
  const s = (metric: string) => fmt(results.median(SCENARIO, metric, 'syncctl'), 's');
  return [
    `(v) verify with no differences against a recopy: ${s(VERIFY)} s / ${s(RECOPY)} s, ratio ${ratio.toFixed(2)} (target ≤ 0.33): ${ratio <= 0.33 ? 'met' : 'NOT met'}`,
    `(v) 100 differences found and repaired: ${s(REPAIR)} s, ${repair.toFixed(2)}× the verify (target < 2×): ${repair < 2 ? 'met' : 'NOT met'}`,
  ];
}

async function timed<T>(b: Bench, cpuKey: string, work: () => Promise<T>): Promise<{ value: T; seconds: number; started: number }> {
  await checkpointBoth(b);
  const cpu = b.cpu();
  await cpu.begin();
  const started = now();
  const value = await work();
  const seconds = now() - started;
  await cpuNote(b, cpuKey, cpu);
  return { value, seconds, started };
}

/** A logger for verifySync that notes when each message was first logged, and passes the lines to the run's log. */
function phaseLog(): { logger: Logger; at: (msg: string) => number | undefined } {
  const first = new Map<string, number>();
  const logger = pino({ level: 'info' }, {
    write(line: string) {
      const { msg, level: _level, time: _time, pid: _pid, hostname: _host, ...fields } = JSON.parse(line) as Record<string, unknown> & { msg: string };
      if (!first.has(msg)) first.set(msg, now());
      say(`      verify log: ${msg} ${JSON.stringify(fields)}`);
    },
  });
  return { logger, at: (msg) => first.get(msg) };
}

interface Planted {
  readonly different: readonly number[];
  readonly missing: readonly number[];
  readonly extra: readonly number[];
}

/**
 * 100 keys spread over the table made to differ on the target, on a session with
 * session_replication_role = replica: no trigger fires, so syncctl's change tracking does not
 * record them (as a write it never saw: a restore, a manual fix, a bug).
 */
async function plantDifferences(b: Bench, rep: number): Promise<Planted> {
  const total = DIFFERENCES.different + DIFFERENCES.missing + DIFFERENCES.extra;
  // 9973 is prime, so i × 9973 mod ROWS is a different key for every i.
  const keys = Array.from({ length: total }, (_, i) => 1 + ((i * 9973 + rep * 101) % ROWS));
  const planted: Planted = {
    different: keys.filter((_, i) => i % 10 >= 2),
    missing: keys.filter((_, i) => i % 10 === 0),
    extra: keys.filter((_, i) => i % 10 === 1).map((k) => ROWS + k),
  };
  const db = b.tgtPoll2;
  await db.exec('SET session_replication_role = replica');
  try {
    await db.exec('UPDATE pgbench_accounts SET abalance = abalance + 1000 WHERE aid = ANY($1::int[])', [planted.different]);
    await db.exec('DELETE FROM pgbench_accounts WHERE aid = ANY($1::int[])', [planted.missing]);
    await db.exec(`INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT k, 1, 0, 'extra' FROM unnest($1::int[]) AS k`, [planted.extra]);
  } finally {
    await db.exec('RESET session_replication_role');
  }
  return planted;
}

/** The repair's report: exactly the planted keys, with their kinds, all repaired; anything else fails the run. */
function checkRepair(report: TableVerification | undefined, planted: Planted): void {
  if (report === undefined) throw new Error('(v) verify --repair reported no table');
  const found = (kind: string) => report.differences.filter((d) => d.kind === kind).map((d) => Number(d.key['aid'])).sort((x, y) => x - y);
  const problems: string[] = [];
  for (const kind of ['different', 'missing', 'extra'] as const) {
    const want = [...planted[kind]].sort((x, y) => x - y);
    if (found(kind).join(',') !== want.join(',')) problems.push(`${kind}: found ${found(kind).join(' ')}, planted ${want.join(' ')}`);
  }
  if (report.differences.length !== 100) problems.push(`${report.differences.length} differences found, 100 planted`);
  if (report.excluded.length > 0 || report.unconfirmed.length > 0) problems.push(`${report.excluded.length} excluded, ${report.unconfirmed.length} unconfirmed`);
  const repair = report.repair;
  if (repair === undefined) problems.push('no repair');
  else if (repair.repaired !== 100 || repair.remaining.length > 0 || repair.unconfirmed.length > 0) {
    problems.push(`repaired ${repair.repaired} of ${repair.keys}, ${repair.remaining.length} remaining, ${repair.unconfirmed.length} unconfirmed`);
  }
  if (problems.length > 0) throw new Error(`(v) verify --repair: ${problems.join('; ')}`);
}
