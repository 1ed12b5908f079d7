/**
 * (g) conflicts backlog (issue #11): (c)'s backlog, with 10 % of the pgbench_accounts keys it
 * touches written locally on the target meanwhile, drained by syncctl under last-write-wins.
 *
 * Last-write-wins needs a column to compare: pgbench_accounts gets `updated_at timestamptz` on
 * both sides for the scenario (dropped after it), and a source trigger sets it to
 * clock_timestamp() on every UPDATE, so each backlog change carries the time it was made. While
 * pgbench writes the backlog (the worker stopped), the harness sets updated_at = clock_timestamp()
 * on the target for 1 key in 10 of those the backlog has touched so far (the keys whose hash
 * ends in 0, read from the source's pgbench_history). For such a key, the backlog's changes made
 * before the local write are older than it (the target keeps its row: outcome kept), the first one
 * made after it is newer (applied, and the local change is forgotten). Either way every one of
 * those keys meets its rule at least once: the keys in sync_conflicts must be exactly the keys
 * written locally that the backlog touched, or the run fails.
 *
 * Native is measured on the same table and the same backlog without the local writes: it has no
 * conflict rule to apply to them, so its plain (c) drain is the yardstick.
 */
import { ROWS } from './config.ts';
import { sleep } from './db.ts';
import {
  checkpointBoth, drainBacklog, noSlotsLeft, resetTarget, sameData, settleSlot, writeBacklog, type Backlog, type Bench, type Meanwhile,
} from './harness.ts';
import { say } from './log.ts';
import { fmt, type Results } from './report.ts';
import { CONFLICTS_SYNC, LWW_COLUMN } from './specs.ts';

const SCENARIO = 'g. conflicts backlog: (c) with 10 % of its keys written locally, last-write-wins';
const DRAIN = 'tx/s (start → caught up)';
/** The native column of (g) holds native's drain of the same backlog without local writes. */
const NATIVE_LABEL = { native: 'plain (c), no local writes' };
/** 1 key in 10, by a hash of the key: the same keys whatever the order the backlog touches them in. */
const LOCAL_SHARE = 'hashint4(aid) % 10 = 0';
/** How often the local writer looks for keys the backlog touched since its last pass. */
const LOCAL_WRITE_EVERY_MS = 250;
const EPOCH = `'2000-01-01 00:00:00+00'`;

export const METHOD_G = '(g) pgbench_accounts gets `updated_at timestamptz NOT NULL` on both sides for this scenario (dropped after it), and a BEFORE ' +
  'UPDATE trigger on the source sets it to clock_timestamp(), for both contestants. Each contestant copies the tables (native: its subscription; ' +
  `syncctl: a spec with \`conflict: { strategy: 'last-write-wins', column: '${LWW_COLUMN}' }\` on accounts, sync ${CONFLICTS_SYNC}), then runs (c) ` +
  'exactly (same backlog, marker, checkpoints, timing). For syncctl, while pgbench writes the backlog, the harness reads on the source every ' +
  `${LOCAL_WRITE_EVERY_MS} ms the keys pgbench_history shows the backlog touched, and on the target sets updated_at = clock_timestamp() on those with ` +
  `${LOCAL_SHARE} it has not written yet (a last pass after pgbench ends): 10 % of the touched keys, written locally while the backlog builds, each ` +
  'recorded by syncctl\'s change tracking. Native drains the same backlog without local writes ("plain (c)"): it has no conflict rule, so it ' +
  'would not apply (g)\'s workload as last-write-wins does (an UPDATE meeting a locally changed row is applied over it: the source wins); the ratio ' +
  'is syncctl\'s drain with conflicts against that plain drain. Checked after each syncctl drain (a mismatch fails the run): the keys in ' +
  'syncctl.sync_conflicts are exactly the keys written locally that the backlog touched; each has at most one `applied` conflict and none after it; ' +
  'every key not written locally, and the tellers and branches, equal the source; a locally written key equals the source row where a source ' +
  'change came after the local write (an `applied` conflict), and otherwise keeps its own row, newer than the source\'s.';

export async function scenarioG(b: Bench, rep: number): Promise<void> {
  await addUpdatedAt(b);
  try {
    const order = rep % 2 === 1 ? ['native', 'syncctl'] : ['syncctl', 'native'];
    for (const who of order) {
      if (who === 'native') await nativePlainDrain(b, rep);
      else await syncctlConflictDrain(b, rep);
    }
  } finally {
    await dropUpdatedAt(b);
  }
}

/** Issue #11's target, from the medians. */
export function targetsG(results: Results): string[] {
  const s = results.median(SCENARIO, DRAIN, 'syncctl');
  const n = results.median(SCENARIO, DRAIN, 'native');
  const r = s / n;
  return [`(g) syncctl's drain with conflicts against native's plain (c) drain: ${fmt(s, 'tx/s')} / ${fmt(n, 'tx/s')} tx/s = ` +
    `${r.toFixed(2)}× (target ≥ 1.0×): ${r >= 1 ? 'met' : 'NOT met'}. Conflicts recorded = keys written locally that the backlog touched: checked in every repetition.`];
}

async function nativePlainDrain(b: Bench, rep: number): Promise<void> {
  const c = b.native;
  say(`rep ${rep} · g. ${c.label}: plain (c) backlog on pgbench_accounts with ${LWW_COLUMN} (no local writes)`);
  await resetTarget(b);
  await c.setup();
  await settleSlot(b, c);
  const backlog = await writeBacklog(b, c);
  const { seconds } = await drainBacklog(b, c, backlog, `g. plain (c) backlog drain · ${c.label}`);
  say(`    g. ${c.label}: ${describeBacklog(backlog)}; drained in ${seconds.toFixed(2)} s = ${fmt(backlog.ntx / seconds, 'tx/s')} tx/s. ` +
    'Native is not run on (g) itself: it has no last-write-wins; it would apply each incoming UPDATE over the local writes (source wins).');
  b.results.add(SCENARIO, DRAIN, 'native', backlog.ntx / seconds, 'tx/s', 'higher', { labels: NATIVE_LABEL });
  b.results.add(SCENARIO, 'backlog size', 'native', backlog.ntx, 'tx', 'none');
  await sameData(b, '(g, plain (c))', c.label);
  await c.teardown();
  await noSlotsLeft(b);
  await checkpointBoth(b);
}

async function syncctlConflictDrain(b: Bench, rep: number): Promise<void> {
  const c = b.syncctlConflicts;
  say(`rep ${rep} · g. ${c.label}: (c) backlog with 10 % of its keys written locally meanwhile, last-write-wins on ${LWW_COLUMN}`);
  await resetTarget(b);
  await forgetLocalChanges(b);
  await c.setup();
  await c.startWorker();
  await settleSlot(b, c);
  const before = await b.tgt.number('SELECT coalesce(max(id), 0) FROM syncctl.sync_conflicts');
  const writer = new LocalWriter(b);
  const backlog = await writeBacklog(b, c, () => writer.start());
  const local = [...writer.keys];
  const touched = await b.src.number('SELECT count(DISTINCT aid) FROM pgbench_history');
  const localTouched = new Set((await b.src.rows<{ aid: number }>('SELECT DISTINCT aid FROM pgbench_history WHERE aid = ANY($1::int[])', [local]))
    .map((r) => r.aid));
  say(`    g. ${describeBacklog(backlog)}; ${local.length} keys written locally on the target in ${writer.passes} passes ` +
    `(${((100 * local.length) / touched).toFixed(1)} % of the ${touched} keys the backlog touched; ${localTouched.size} of them touched by it)`);
  const { seconds, startup } = await drainBacklog(b, c, backlog, `g. conflicts backlog drain · ${c.label}`);
  const ntx = backlog.ntx;
  say(`    g. ${c.label}: drained in ${seconds.toFixed(2)} s = ${fmt(ntx / seconds, 'tx/s')} tx/s` +
    (startup !== undefined ? ` (worker startup to "streaming" ${startup.toFixed(2)} s; ${fmt(ntx / (seconds - startup), 'tx/s')} tx/s after it)` : ''));
  const conflicts = await checkConflicts(b, before, localTouched);
  const outcome = await checkRows(b, local, conflicts.applied);
  b.results.add(SCENARIO, DRAIN, 'syncctl', ntx / seconds, 'tx/s', 'higher', { labels: NATIVE_LABEL });
  b.results.add(SCENARIO, 'backlog size', 'syncctl', ntx, 'tx', 'none');
  if (startup !== undefined) b.results.add(SCENARIO, 'tx/s after worker startup (info)', 'syncctl', ntx / (seconds - startup), 'tx/s', 'none');
  b.results.add(SCENARIO, 'keys written locally, touched by the backlog', 'syncctl', localTouched.size, 'keys', 'none');
  b.results.add(SCENARIO, 'keys in sync_conflicts (= the line above, checked)', 'syncctl', conflicts.keys, 'keys', 'none');
  b.results.add(SCENARIO, 'conflicts recorded (rows in sync_conflicts)', 'syncctl', conflicts.rows, 'rows', 'none');
  b.results.add(SCENARIO, 'of which the source won (applied)', 'syncctl', conflicts.applied.size, 'rows', 'none');
  b.results.add(SCENARIO, 'of which the target won (kept)', 'syncctl', conflicts.kept, 'rows', 'none');
  b.results.add(SCENARIO, 'locally written keys keeping their local row', 'syncctl', outcome.keptLocal, 'keys', 'none');
  await c.teardown();
  await noSlotsLeft(b);
  await forgetLocalChanges(b);
  await checkpointBoth(b);
}

function describeBacklog(backlog: Backlog): string {
  return `backlog ${backlog.ntx} tx (${backlog.walMb.toFixed(0)} MB WAL, written at ${backlog.tps.toFixed(0)} tx/s)`;
}

/**
 * While pgbench writes the backlog: every LOCAL_WRITE_EVERY_MS, the keys with LOCAL_SHARE that
 * pgbench_history (written in the same source transaction as the account's UPDATE) shows touched
 * and that it has not written yet get updated_at = clock_timestamp() on the target, one UPDATE a
 * pass. stop() runs a last pass after pgbench is done.
 */
class LocalWriter implements Meanwhile {
  readonly keys = new Set<number>();
  passes = 0;
  private running = true;
  private failure: unknown;
  private loop: Promise<void> | undefined;
  private readonly b: Bench;

  constructor(b: Bench) {
    this.b = b;
  }

  start(): this {
    this.loop = this.run();
    return this;
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        await this.pass();
      } catch (error) {
        this.failure ??= error;
        return;
      }
      await sleep(LOCAL_WRITE_EVERY_MS);
    }
  }

  private async pass(): Promise<void> {
    const rows = await this.b.srcDense.rows<{ aid: number }>(`SELECT DISTINCT aid FROM pgbench_history WHERE ${LOCAL_SHARE}`);
    const fresh = rows.map((r) => r.aid).filter((aid) => !this.keys.has(aid));
    if (fresh.length === 0) return;
    await this.b.tgtPoll2.exec(`UPDATE pgbench_accounts SET ${LWW_COLUMN} = clock_timestamp() WHERE aid = ANY($1::int[])`, [fresh]);
    for (const aid of fresh) this.keys.add(aid);
    this.passes++;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    if (this.failure !== undefined) throw this.failure;
    await this.pass();
  }
}

interface ConflictCheck {
  readonly rows: number;
  readonly keys: number;
  readonly kept: number;
  /** Keys with an `applied` conflict: a source change newer than the local write. */
  readonly applied: ReadonlySet<number>;
}

/** The drain's conflicts against the keys written locally that the backlog touched; a mismatch fails the run. */
async function checkConflicts(b: Bench, before: number, expected: ReadonlySet<number>): Promise<ConflictCheck> {
  const rows = await b.tgt.rows<{ aid: number; kind: string; outcome: string }>(
    `SELECT (key ->> 'aid')::int AS aid, kind, outcome FROM syncctl.sync_conflicts WHERE sync_name = $1 AND id > $2 ORDER BY id`, [CONFLICTS_SYNC, before]);
  const byKey = new Map<number, string[]>();
  for (const r of rows) byKey.set(r.aid, [...(byKey.get(r.aid) ?? []), r.outcome]);
  const kinds = count(rows.map((r) => r.kind));
  const outcomes = count(rows.map((r) => r.outcome));
  const missing = [...expected].filter((k) => !byKey.has(k));
  const extra = [...byKey.keys()].filter((k) => !expected.has(k));
  // After an applied conflict the key's local change is forgotten: no conflict of it may follow.
  const outOfOrder = [...byKey].filter(([, o]) => o.filter((x) => x === 'applied').length > 1 || (o.includes('applied') && o.at(-1) !== 'applied'));
  const applied = new Set([...byKey].filter(([, o]) => o.includes('applied')).map(([k]) => k));
  const line = `g. conflicts: ${rows.length} rows in syncctl.sync_conflicts for ${byKey.size} keys (kinds ${describe(kinds)}; outcomes ${describe(outcomes)}); ` +
    `keys written locally that the backlog touched: ${expected.size}: ` +
    (missing.length === 0 && extra.length === 0 ? 'the same keys' : `MISMATCH: ${missing.length} without a conflict (e.g. ${missing.slice(0, 5).join(', ')}), ` +
      `${extra.length} with a conflict but not written locally (e.g. ${extra.slice(0, 5).join(', ')})`);
  say(`    ${line}`);
  if (missing.length > 0 || extra.length > 0) throw new Error(`(g) ${line}`);
  if (outOfOrder.length > 0) {
    throw new Error(`(g) ${outOfOrder.length} keys have a conflict after an applied one, or several applied ones (e.g. ${outOfOrder.slice(0, 5).map(([k, o]) => `${k}: ${o.join(' ')}`).join('; ')})`);
  }
  return { rows: rows.length, keys: byKey.size, kept: outcomes.get('kept') ?? 0, applied };
}

/**
 * The rows after the drain: every key not written locally, and the tellers and branches, as on the
 * source; a locally written key as the source has it if a source change came after the local
 * write (an applied conflict), else its own row, newer than the source's. A row that is neither
 * fails the run.
 */
async function checkRows(b: Bench, local: readonly number[], applied: ReadonlySet<number>): Promise<{ keptLocal: number }> {
  const rest = `SELECT concat_ws(' ', count(*), sum(abalance), sum(extract(epoch from ${LWW_COLUMN})),
      (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches))
    FROM pgbench_accounts WHERE NOT (aid = ANY($1::int[]))`;
  const [s, t] = await Promise.all([b.src.value(rest, [local]), b.tgt.value(rest, [local])]);
  if (s !== t) {
    throw new Error(`(g) the keys not written locally differ from the source (count, sum(abalance), sum(epoch of ${LWW_COLUMN}), tellers, branches): ` +
      `source ${s}, target ${t}`);
  }
  const read = `SELECT aid, abalance, extract(epoch from ${LWW_COLUMN})::text AS at FROM pgbench_accounts WHERE aid = ANY($1::int[])`;
  type Row = { aid: number; abalance: number; at: string };
  const [srcRows, tgtRows] = await Promise.all([b.src.rows<Row>(read, [local]), b.tgt.rows<Row>(read, [local])]);
  const source = new Map(srcRows.map((r) => [r.aid, r]));
  let keptLocal = 0;
  const wrong: string[] = [];
  for (const r of tgtRows) {
    const s = source.get(r.aid);
    const same = s !== undefined && s.abalance === r.abalance && s.at === r.at;
    const newer = s !== undefined && Number(r.at) > Number(s.at);
    if (same && applied.has(r.aid)) continue;
    if (!same && newer && !applied.has(r.aid)) {
      keptLocal++;
      continue;
    }
    wrong.push(`${r.aid} (target ${r.abalance} at ${r.at}, source ${s?.abalance} at ${s?.at}, ${applied.has(r.aid) ? 'an applied conflict' : 'no applied conflict'})`);
  }
  if (tgtRows.length !== local.length) wrong.push(`${local.length - tgtRows.length} locally written keys missing on the target`);
  if (wrong.length > 0) throw new Error(`(g) ${wrong.length} locally written keys are not as last-write-wins leaves them: ${wrong.slice(0, 5).join('; ')}`);
  say(`    g. rows as last-write-wins leaves them: ${ROWS - local.length} keys not written locally equal the source; of the ${local.length} written ` +
    `locally, ${local.length - keptLocal} equal the source (a newer source change came) and ${keptLocal} keep their local row`);
  return { keptLocal };
}

function count(values: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}

function describe(m: ReadonlyMap<string, number>): string {
  return [...m].map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
}

/** updated_at on both sides, set by the source on every UPDATE; rows copied before carry 2000-01-01. */
async function addUpdatedAt(b: Bench): Promise<void> {
  await b.src.exec(`ALTER TABLE pgbench_accounts ADD COLUMN ${LWW_COLUMN} timestamptz NOT NULL DEFAULT ${EPOCH}`);
  await b.src.exec(`CREATE FUNCTION bench_touch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN NEW.${LWW_COLUMN} := clock_timestamp(); RETURN NEW; END $$`);
  await b.src.exec('CREATE TRIGGER bench_touch BEFORE UPDATE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION bench_touch()');
  await b.tgt.exec(`ALTER TABLE pgbench_accounts ADD COLUMN ${LWW_COLUMN} timestamptz NOT NULL DEFAULT ${EPOCH}`);
}

async function dropUpdatedAt(b: Bench): Promise<void> {
  await b.src.exec('DROP TRIGGER IF EXISTS bench_touch ON pgbench_accounts');
  await b.src.exec('DROP FUNCTION IF EXISTS bench_touch()');
  await b.src.exec(`ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS ${LWW_COLUMN}`);
  await b.tgt.exec(`ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS ${LWW_COLUMN}`);
  await forgetLocalChanges(b);
}

/**
 * syncctl keeps a local change it let stand (kept) after its sync is destroyed; left there, it
 * would make the next syncctl copy of pgbench_accounts take the staged path, and the next drain
 * meet it as a conflict.
 */
async function forgetLocalChanges(b: Bench): Promise<void> {
  await b.tgt.exec(`DELETE FROM syncctl.local_changes WHERE target_table = 'public.pgbench_accounts'`);
}
