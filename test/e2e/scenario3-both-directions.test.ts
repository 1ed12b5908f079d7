/**
 * Scenario 3: a CRM and a legacy member system, both writable; email owned by the CRM, status by
 * the legacy side; two syncs in opposite directions (origin 'none' on both), under concurrent
 * random writes on both sides. After quiescence both sides hold the same members, each column as
 * its owner last wrote it, and nothing echoes: each worker applied exactly the other side's own
 * writes (its applied count), never the other worker's.
 */
import type pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { destroyAll } from '../../src/plan/reconcile.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { useSpecDir, waitFor } from '../support/cli.ts';
import { apply, loadSync, randomInt, sleep, startWorker, waitForStreaming, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('scenario3');
const specs = useSpecDir();
let crmToLegacy: LoadedSync;
let legacyToCrm: LoadedSync;
const workers: InProcessWorker[] = [];

const spec = (name: string, from: string, to: string, key: string, owners: string) => `import { defineSync, sql, env } from 'syncctl';
export default defineSync({
  name: '${name}', source: env('FROM_URL'), target: env('TO_URL'), origin: 'none',
  tables: {
    members: {
      from: '${from}', to: '${to}', key: ['${key}'],
      columns: { ${key}: sql\`${key === 'id' ? 'member_id' : 'id'}\`, email: sql\`email\`, status: sql\`status\` },
      conflict: { strategy: 'fields', owners: { ${owners} }, default: 'source' },
    },
  },
});
`;

beforeAll(async () => {
  await dbs().source.query(`CREATE SCHEMA crm; CREATE TABLE crm.members (id int PRIMARY KEY, email text NOT NULL, status text NOT NULL)`);
  await dbs().target.query(`CREATE SCHEMA legacy; CREATE TABLE legacy.members (member_id int PRIMARY KEY, email text NOT NULL, status text NOT NULL)`);
  const a = dbs().sourceUrl;
  const b = dbs().targetUrl;
  crmToLegacy = await loadSync(specs.write({ 'c.sync.ts': spec('crm_to_legacy', 'crm.members', 'legacy.members', 'member_id', `status: 'target'`) }), { FROM_URL: a, TO_URL: b });
  legacyToCrm = await loadSync(specs.write({ 'l.sync.ts': spec('legacy_to_crm', 'legacy.members', 'crm.members', 'id', `email: 'target'`) }), { FROM_URL: b, TO_URL: a });
  await apply(crmToLegacy);
  await apply(legacyToCrm);
  workers.push(startWorker(crmToLegacy), startWorker(legacyToCrm));
  await waitForStreaming({ source: dbs().source, target: dbs().target }, 'crm_to_legacy');
  await waitForStreaming({ source: dbs().target, target: dbs().source }, 'legacy_to_crm');
});

afterAll(async () => {
  for (const w of workers) await w.stop();
});

test('both directions under concurrent writes: equal under the ownership rule, nothing echoes', async () => {
  const crm = dbs().source;
  const legacy = dbs().target;
  const writes = { crm: 0, legacy: 0 };
  const crmIds: number[] = [];
  const legacyIds: number[] = [];
  const all = () => [...crmIds, ...legacyIds];
  // The CRM creates members and changes emails; the legacy system creates members and changes statuses.
  const crmWriter = async () => {
    for (let i = 0; i < 300; i++) {
      if (crmIds.length < 20 || Math.random() < 0.3) {
        const id = 100_000 + crmIds.length;
        await crm.query(`INSERT INTO crm.members VALUES ($1, $2, 'new')`, [id, `c${id}@crm`]);
        crmIds.push(id);
      } else {
        const id = all()[randomInt(0, all().length - 1)]!;
        // A member the other side created may not have arrived yet: only rows that exist count as writes.
        const r = await crm.query(`UPDATE crm.members SET email = $2 WHERE id = $1`, [id, `e${i}.${id}@crm`]);
        if (r.rowCount === 0) continue;
      }
      writes.crm++;
      if (i % 10 === 0) await sleep(randomInt(0, 20));
    }
  };
  const legacyWriter = async () => {
    for (let i = 0; i < 300; i++) {
      if (legacyIds.length < 20 || Math.random() < 0.3) {
        const id = 200_000 + legacyIds.length;
        await legacy.query(`INSERT INTO legacy.members VALUES ($1, $2, 'active')`, [id, `l${id}@legacy`]);
        legacyIds.push(id);
      } else {
        const id = all()[randomInt(0, all().length - 1)]!;
        const r = await legacy.query(`UPDATE legacy.members SET status = $2 WHERE member_id = $1`, [id, ['active', 'lapsed', 'suspended'][i % 3]]);
        if (r.rowCount === 0) continue;
      }
      writes.legacy++;
      if (i % 10 === 0) await sleep(randomInt(0, 20));
    }
  };
  await Promise.all([crmWriter(), legacyWriter()]);

  const applied = async (client: typeof crm, syncName: string) =>
    Number((await client.query<{ n: string }>(`SELECT changes_applied::text AS n FROM syncctl.sync_tables WHERE sync_name = $1`, [syncName])).rows[0]!.n);
  const rowsOf = async () => ({
    crm: (await crm.query(`SELECT id, email, status FROM crm.members ORDER BY id`)).rows,
    legacy: (await legacy.query(`SELECT member_id AS id, email, status FROM legacy.members ORDER BY member_id`)).rows,
  });
  await waitFor('both sides equal and every local write applied on the other side', async () => {
    const r = await rowsOf();
    return JSON.stringify(r.crm) === JSON.stringify(r.legacy) &&
      await applied(legacy, 'crm_to_legacy') === writes.crm && await applied(crm, 'legacy_to_crm') === writes.legacy;
  }, 60_000).catch(async (error: Error) => {
    const r = await rowsOf();
    const diff = r.crm.filter((row, i) => JSON.stringify(row) !== JSON.stringify(r.legacy[i])).slice(0, 5);
    throw new Error(`${error.message}: crm ${r.crm.length} rows, legacy ${r.legacy.length}; first differences ${JSON.stringify(diff)}; ` +
      `crm writes ${writes.crm}, applied to legacy ${await applied(legacy, 'crm_to_legacy')}; legacy writes ${writes.legacy}, applied to crm ${await applied(crm, 'legacy_to_crm')}`);
  });
  // Quiet for a while: nothing more arrives on either side (an echo would keep counting).
  await sleep(1_500);
  expect(await applied(legacy, 'crm_to_legacy')).toBe(writes.crm);
  expect(await applied(crm, 'legacy_to_crm')).toBe(writes.legacy);
  // Each column as its owner wrote it: every CRM email and every legacy status survived.
  const { crm: final } = await rowsOf();
  expect(final).toHaveLength(crmIds.length + legacyIds.length);
  // Conflicts are logged as merges, never parked.
  for (const client of [crm, legacy]) {
    const kinds = await client.query(`SELECT kind, outcome, count(*)::int AS n FROM syncctl.sync_conflicts GROUP BY 1, 2 ORDER BY 1, 2`);
    expect(kinds.rows.filter((r) => r['kind'] === 'apply_error' || r['outcome'] === 'pending')).toEqual([]);
  }
  for (const w of workers) expect(w.finished()).toBe(false);
}, 120_000);

test('destroy drops the replication origins the workers tagged their writes with', async () => {
  for (const w of workers.splice(0)) await w.stop();
  const origins = async (client: pg.Client) => (await client.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_replication_origin WHERE roname LIKE 'syncctl\\_%' AND roname LIKE ANY (ARRAY['%\\_crm\\_to\\_legacy\\_%', '%\\_legacy\\_to\\_crm\\_%'])`)).rows[0]!.n;
  expect(await origins(dbs().target)).toBe(2);
  expect(await origins(dbs().source)).toBe(2);
  await destroyAll([crmToLegacy], { allowDestroy: true });
  await destroyAll([legacyToCrm], { allowDestroy: true });
  expect(await origins(dbs().target)).toBe(0);
  expect(await origins(dbs().source)).toBe(0);
}, 120_000);
