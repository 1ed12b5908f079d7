/**
 * The differential suite for slices with conflicts. Set-based apply splits a slice whose keys
 * have local changes: the changes of those keys go to source order (where each meets the
 * table's rule), the rest stay set-based. The oracle is source order itself: one source feeds
 * two syncs into two targets that get the very same local writes; one worker runs as usual, the
 * other with SYNCCTL_APPLY=source-order (every change one by one, as a native subscription
 * applies it). Both targets must end with the same rows, the same conflicts (kind, key, incoming,
 * current, result, outcome, source position, in each key's order) and the same local changes left.
 *
 * Deterministic: the workers are stopped while the source workload (test/support/workload.ts)
 * and the local writes run, in three rounds (local writes, then a third of the workload), so
 * each change meets the same row and local change on both targets whatever the batching; then
 * both workers drain the backlog (the one splitting is killed once on the way).
 *
 *   SYNCCTL_DIFF_SEEDS=1,2,3   seeds to run (default 1,2,3)
 *   SYNCCTL_DIFF_TXNS=200      source transactions per case (default 200)
 *
 * Both workers commit every 5 to 24 changes (--batch-rows, by seed), so that the drain is many
 * slices, most of them without a key change (a slice that changes a key is not split).
 */
import type pg from 'pg';
import { afterAll, expect, test } from 'vitest';
import { syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, loadSync, sleep, spawnWorker, type ChildWorker } from '../support/stream.ts';
import { createTestDatabases } from '../support/test-databases.ts';
import { Rng, VARIANTS, Workload, type Variant } from '../support/workload.ts';

const SEEDS = (process.env['SYNCCTL_DIFF_SEEDS'] ?? '1,2,3').split(',').map((s) => Number(s.trim())).filter((s) => Number.isSafeInteger(s));
const TXNS = Number(process.env['SYNCCTL_DIFF_TXNS'] ?? 200);
const ROUNDS = 3;

/**
 * A rule per table (every rule but merge, which conflicts.test.ts and conflicts-merge.test.ts
 * cover), and the target tables. Not target-wins on a child: kept children make their parents'
 * deletes fail, a parked change keeps its table in source order, and nothing would be split.
 */
const RULES: Record<Variant, Record<string, { target: string; key: string; rule: string }>> = {
  identity: {
    parent: { target: 'parent', key: 'id', rule: `{ strategy: 'last-write-wins', column: 'score' }` },
    child: { target: 'child', key: 'id', rule: `{ strategy: 'source-wins' }` },
    doc: { target: 'doc', key: 'id', rule: `{ strategy: 'target-wins' }` },
    account: { target: 'account', key: 'id', rule: `{ strategy: 'fields', owners: { name: 'target' } }` },
  },
  mapped: {
    parent: { target: 'parent_m', key: 'pid', rule: `{ strategy: 'last-write-wins', column: 'title' }` },
    child: { target: 'child_m', key: 'cid', rule: `{ strategy: 'source-wins' }` },
    doc: { target: 'doc_m', key: 'id', rule: `{ strategy: 'manual' }` },
    account: { target: 'account_m', key: 'email', rule: `{ strategy: 'fields', owners: { display: 'target' } }` },
  },
};

/**
 * A plainer source workload than Workload's (which changes keys and leaves TOAST values unchanged
 * often enough that most of its slices go to source order whole): single-row updates, inserts and
 * deletes of parent, child and account rows by random id, each valid whatever rows exist (a
 * missing row is a no-op, a present one is not inserted again, a parent with children stays), so
 * no model is needed. Most of its slices are split when a key has a local change.
 */
function plainTransaction(rng: Rng): string {
  const op = () => {
    const p = rng.int(1, 30);
    const c = rng.int(1, 120);
    const a = rng.int(1, 45);
    switch (rng.int(0, 8)) {
      case 0: case 1: return `UPDATE parent SET score = ${rng.int(0, 99)}, name = 'parent ${p} v${rng.int(1, 999)}' WHERE id = ${p}`;
      case 2: return `INSERT INTO parent VALUES (${p}, 'parent ${p} new', ${rng.int(0, 99)}) ON CONFLICT DO NOTHING`;
      case 3: return `DELETE FROM parent WHERE id = ${p} AND NOT EXISTS (SELECT 1 FROM child WHERE parent_id = ${p})`;
      case 4: return `UPDATE child SET qty = ${rng.int(0, 9)}, label = 'child ${c} v${rng.int(1, 999)}' WHERE id = ${c}`;
      case 5: return `INSERT INTO child SELECT ${c}, ${p}, 'child ${c} new', ${rng.int(0, 9)} WHERE EXISTS (SELECT 1 FROM parent WHERE id = ${p}) ON CONFLICT DO NOTHING`;
      case 6: return `DELETE FROM child WHERE id = ${c}`;
      case 7: return `UPDATE account SET name = 'name ${a} v${rng.int(1, 999)}', active = ${rng.chance(0.7)} WHERE id = ${a}`;
      default: return rng.chance(0.5) ? `DELETE FROM account WHERE id = ${a}`
        : `INSERT INTO account VALUES (${a}, 'u${a}@example.com', 'name ${a} new', true) ON CONFLICT DO NOTHING`;
    }
  };
  return `BEGIN;\n${Array.from({ length: rng.int(1, 4) }, op).join(';\n')};\nCOMMIT;`;
}

type Case = { readonly variant: Variant; readonly workload: 'Workload' | 'plain' };
const CASES: readonly Case[] = [{ variant: 'identity', workload: 'Workload' }, { variant: 'mapped', workload: 'Workload' }, { variant: 'identity', workload: 'plain' }];

const specs = useSpecDir();
const children = new Set<ChildWorker>();
afterAll(async () => {
  for (const w of children) if (w.child.exitCode === null && w.child.signalCode === null) { w.child.kill('SIGKILL'); await w.exited; }
});

/**
 * Local writes for one round, the same SQL for both targets (drawn from the rows target A holds,
 * which are target B's: neither worker has run since the copy or the previous round).
 */
async function localWrites(rng: Rng, variant: Variant, target: pg.Client, round: number): Promise<string> {
  const ids = async (table: string, key: string) => (await target.query<{ k: string }>(`SELECT ${key}::text AS k FROM ${table} ORDER BY 1`)).rows.map((r) => r.k);
  const some = (keys: readonly string[], share: number) => keys.filter(() => rng.chance(share));
  const list = (keys: readonly string[]) => `ARRAY[${keys.map((k) => `'${k.replaceAll("'", "''")}'`).join(', ')}]::text[]`;
  const sql: string[] = [];
  if (variant === 'identity') {
    const parents = await ids('parent', 'id');
    sql.push(`UPDATE parent SET score = score + 1000 WHERE id::text = ANY (${list(some(parents, 0.15))})`,
      `UPDATE parent SET score = score - 1000 WHERE id::text = ANY (${list(some(parents, 0.1))})`);
    const childIds = await ids('child', 'id');
    sql.push(`UPDATE child SET label = label || ' local ${round}' WHERE id::text = ANY (${list(some(childIds, 0.15))})`,
      `DELETE FROM child WHERE id::text = ANY (${list(some(childIds, 0.03))})`);
    sql.push(`UPDATE doc SET rev = rev + 100 WHERE id::text = ANY (${list(some(await ids('doc', 'id'), 0.2))})`);
    const accounts = await ids('account', 'id');
    const top = Math.max(0, ...accounts.map(Number));
    sql.push(`UPDATE account SET name = name || ' local ${round}', active = NOT active WHERE id::text = ANY (${list(some(accounts, 0.15))})`,
      `DELETE FROM account WHERE id::text = ANY (${list(some(accounts, 0.03))})`,
      // Keys the source is likely to insert next: insert_exists.
      `INSERT INTO account SELECT g, 'local' || g || '@${round}', 'local ' || g, true FROM generate_series(${top + 1}, ${top + 3}) g ON CONFLICT DO NOTHING`);
  } else {
    const parents = await ids('parent_m', 'pid');
    sql.push(`UPDATE parent_m SET title = title || ' ~' WHERE pid::text = ANY (${list(some(parents, 0.15))})`,
      `UPDATE parent_m SET title = 'A' WHERE pid::text = ANY (${list(some(parents, 0.1))})`);
    const childIds = await ids('child_m', 'cid');
    sql.push(`UPDATE child_m SET descr = descr || ' local ${round}' WHERE cid::text = ANY (${list(some(childIds, 0.15))})`,
      `DELETE FROM child_m WHERE cid::text = ANY (${list(some(childIds, 0.03))})`);
    sql.push(`UPDATE doc_m SET rev = rev + 100 WHERE id::text = ANY (${list(some(await ids('doc_m', 'id'), 0.2))})`);
    const accounts = await ids('account_m', 'email');
    sql.push(`UPDATE account_m SET display = display || ' local ${round}' WHERE email = ANY (${list(some(accounts, 0.15))})`,
      `DELETE FROM account_m WHERE email = ANY (${list(some(accounts, 0.03))})`);
  }
  return sql.join(';\n');
}

/** Everything the two targets must agree on, as JSON text per part. */
async function state(target: pg.Client, variant: Variant): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const { target: table, key } of Object.values(RULES[variant])) {
    out[table] = JSON.stringify((await target.query(`SELECT to_jsonb(t)::text AS r FROM ${table} AS t ORDER BY ${key}`)).rows.map((r) => r.r));
  }
  // Per key, in the order they were logged; the change as staged carries batch sequence numbers, so only whether there is one.
  out['sync_conflicts'] = JSON.stringify((await target.query(
    `SELECT table_name, kind, key::text, incoming::text, current::text, result::text, source_lsn::text, source_commit_time::text, strategy, outcome,
            reason, sqlstate, change IS NOT NULL AS has_change
       FROM syncctl.sync_conflicts ORDER BY table_name, key::text, id`)).rows);
  out['local_changes'] = JSON.stringify((await target.query(
    `SELECT target_table, key::text, operation FROM syncctl.local_changes ORDER BY 1, 2`)).rows);
  return out;
}

for (const seed of SEEDS) {
  for (const testCase of CASES) {
    const { variant, workload: kind } = testCase;
    test(`seed ${seed}: ${variant} spec, ${kind === 'plain' ? 'plain' : 'differential'} workload: conflicts split from set-based apply equal source order`, { timeout: 600_000 }, async () => {
      const a = await createTestDatabases(`dconf_${variant}_${seed}_a`);
      const b = await createTestDatabases(`dconf_${variant}_${seed}_b`);
      const workers: ChildWorker[] = [];
      try {
        const workload = new Workload(seed, TXNS);
        await a.source.query(`${workload.setupSql()}; CREATE TABLE marker (id int PRIMARY KEY)`);
        for (const t of [a.target, b.target]) await t.query(`${VARIANTS[variant].targetDdl}; CREATE TABLE marker (id int PRIMARY KEY)`);
        let tables = VARIANTS[variant].tables;
        for (const [name, r] of Object.entries(RULES[variant])) tables = tables.replace(`from: 'public.${name}',`, `from: 'public.${name}', conflict: ${r.rule},`);
        tables += `\n    marker: { from: 'public.marker', to: 'public.marker', key: ['id'], columns: { id: sql\`id\` } },`;
        const env = (dst: string) => ({ SRC_URL: a.sourceUrl, DST_URL: dst });
        const dirA = specs.write({ 'a.sync.ts': syncSpec({ name: `dconf_a_${variant}_${seed}`, tables }) });
        const dirB = specs.write({ 'b.sync.ts': syncSpec({ name: `dconf_b_${variant}_${seed}`, tables }) });
        await apply(await loadSync(dirA, env(a.targetUrl)));
        await apply(await loadSync(dirB, env(b.targetUrl)));

        const rng = new Rng(seed ^ 0x10ca1);
        const plain = new Rng(seed ^ 0x91a17);
        for (let round = 0; round < ROUNDS; round++) {
          const local = await localWrites(rng, variant, a.target, round);
          await a.target.query(local);
          await b.target.query(local);
          for (let i = 0; i < Math.ceil(workload.transactions / ROUNDS) && round * Math.ceil(workload.transactions / ROUNDS) + i < workload.transactions; i++) {
            const sql = kind === 'plain' ? plainTransaction(plain) : workload.nextTransaction();
            try {
              await a.source.query(sql);
            } catch (error) {
              await a.source.query('ROLLBACK').catch(() => {});
              if (!/^(23|40)/.test(String((error as { code?: unknown }).code ?? ''))) throw error;
              if (kind !== 'plain') workload.rejected();
            }
          }
        }
        await a.source.query('INSERT INTO marker VALUES (1)');

        // Small target transactions: many slices, most without a key change (which sends a slice to source order whole).
        const batchRows = String(5 + ((seed * 7) % 20));
        const spawn = (dir: string, dst: string, extra: Record<string, string> = {}) => {
          const w = spawnWorker(dir, { ...env(dst), SYNCCTL_LOG_LEVEL: 'debug', ...extra }, ['--batch-rows', batchRows]);
          children.add(w);
          workers.push(w);
          return w;
        };
        // Every other case, the splitting worker stages every batch by COPY, as a large batch is
        // (the set statements' first part then runs while the batch before commits: prepareAhead).
        const copyAll = (seed + CASES.indexOf(testCase)) % 2 === 1;
        const large: Record<string, string> = copyAll ? { SYNCCTL_APPLY: 'copy' } : {};
        let splitting = spawn(dirA, a.targetUrl, large);
        spawn(dirB, b.targetUrl, { SYNCCTL_APPLY: 'source-order' });
        // Killed once mid-drain: what it committed stays, the rest is applied again from the checkpoint.
        await sleep(1_500 + (seed % 5) * 300);
        splitting.child.kill('SIGKILL');
        await splitting.exited;
        splitting = spawn(dirA, a.targetUrl, large);

        const caughtUp = async (t: pg.Client) => (await t.query('SELECT 1 FROM marker')).rowCount === 1;
        const problem = () => workers.filter((w) => w.child.exitCode !== null).map((w) => `a worker exited (${w.child.exitCode}):\n${w.stderr().slice(-3000)}`).join('\n');
        await waitFor('both targets to apply the whole workload', async () => {
          const p = problem();
          if (p) throw new Error(p);
          return (await caughtUp(a.target)) && (await caughtUp(b.target));
        }, 300_000);

        // The splitting worker set changes aside (its debug log says how many per commit), and the oracle never did.
        const logged = (w: ChildWorker, field: 'setAside' | 'loggedAside') => [...w.stderr().matchAll(new RegExp(`"${field}":(\\d+)`, 'g'))]
          .reduce((n, m) => n + Number(m[1]), 0);
        const setAside = (w: ChildWorker) => logged(w, 'setAside');
        const [sa, sb] = [await state(a.target, variant), await state(b.target, variant)];
        const conflicts = JSON.parse(sa['sync_conflicts']!) as unknown[];
        const aside = workers.filter((w) => w !== workers[1]).reduce((n, w) => n + setAside(w), 0);
        // Of those, the changes the rule only logged, logged set-based (kept-prefix.ts).
        const asideLogged = workers.filter((w) => w !== workers[1]).reduce((n, w) => n + logged(w, 'loggedAside'), 0);
        const ahead = workers.filter((w) => w !== workers[1]).reduce((n, w) => n + [...w.stderr().matchAll(/"ahead":true/g)].length, 0);
        console.log(`seed ${seed} ${variant}${copyAll ? ' (every batch by COPY)' : ''}: ${conflicts.length} conflicts; commits prepared ahead: ${ahead}; changes set aside by the splitting worker: ${aside}, ` +
          `of which logged set-based: ${asideLogged}`);
        for (const part of Object.keys(sa)) {
          const [ra, rb] = [JSON.parse(sa[part]!) as unknown[], JSON.parse(sb[part]!) as unknown[]].map((rows) => rows.map((r) => JSON.stringify(r)));
          const onlyA = ra!.filter((r) => !rb!.includes(r)).slice(0, 5);
          const onlyB = rb!.filter((r) => !ra!.includes(r)).slice(0, 5);
          expect(sa[part], `seed ${seed} ${variant} (${kind}): ${part} differs from source order\n  split:\n    ${onlyA.join('\n    ')}\n  ` +
            `source order:\n    ${onlyB.join('\n    ')}\n  rerun: SYNCCTL_DIFF_SEEDS=${seed} npx vitest run test/e2e/differential-conflicts.test.ts`).toEqual(sb[part]);
        }
        expect(conflicts.length).toBeGreaterThan(0);
        // Workload's slices are mostly sent to source order whole (key changes, TOAST, parked rows): only the plain one must split.
        if (kind === 'plain') expect(aside).toBeGreaterThan(0);
        if (kind === 'plain') expect(asideLogged).toBeGreaterThan(0);
        expect(setAside(workers[1]!)).toBe(0);
        // Batches by COPY: the plain workload's (set-based, most of them) were prepared while the one before committed.
        if (copyAll && kind === 'plain') expect(ahead).toBeGreaterThan(0);
      } finally {
        for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) { w.child.kill('SIGKILL'); await w.exited; }
        await a.drop();
        await b.drop();
      }
    });
  }
}
