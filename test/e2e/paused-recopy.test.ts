/**
 * A paused table copied again by `syncctl apply` while `syncctl run` keeps streaming, and the
 * source keeps writing it: the worker drops a paused table's changes, so a change it dropped
 * after the copy's snapshot would be lost. The worker's batch that drops them commits only while
 * the table is still paused; apply leaves 'paused' before it takes the snapshot. Also: a column
 * read only by the worker-side row filter, gone from the source, pauses the table (it
 * crash-looped the worker before); here renamed, as a publication column list keeps it from
 * being dropped.
 */
import { afterAll, expect, test } from 'vitest';
import { runSyncctl, syncSpec, useSpecDir, waitFor, rows } from '../support/cli.ts';
import { apply, churn, expectTargetMatches, loadSync, startWorker, waitForStreaming, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('paused_recopy');
const specs = useSpecDir();
let worker: InProcessWorker | undefined;
afterAll(async () => { await worker?.stop().catch(() => {}); });

const tables = `
    items: { from: 'public.items', to: 'public.items', key: ['id'], where: sql\`visible\`,
      columns: { id: sql\`id\`, qty: sql\`qty\` } },
    notes: { from: 'public.notes', to: 'public.notes', key: ['id'], columns: { id: sql\`id\`, body: sql\`body\` } },`;

const pausedState = async () => (await rows<{ state: string; error: string | null }>(dbs().target,
  `SELECT state, error FROM syncctl.sync_tables WHERE sync_name = 'recopy' AND table_name = 'items'`))[0];

test('a filter column gone from the source pauses the table; recopied by apply while the worker runs and the source writes it: nothing lost', async () => {
  await dbs().source.query(`
    CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, visible boolean NOT NULL DEFAULT true, note text);
    CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO items SELECT g, g, true, 'n' FROM generate_series(1, 200) g;`);
  await dbs().target.query(`CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL); CREATE TABLE notes (id int PRIMARY KEY, body text);`);
  const dir = specs.write({ 'recopy.sync.ts': syncSpec({ name: 'recopy', tables }) });
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const sync = await loadSync(dir, env);
  await apply(sync);
  // The filter reads `visible`, which is outside the replica identity: the worker evaluates it.
  expect((await runSyncctl(['plan', dir, '--sql'], env)).stdout).not.toContain('WHERE');
  worker = startWorker(sync, { reload: () => loadSync(dir, env) });
  await waitForStreaming(dbs(), 'recopy');

  // Renamed (the publication's column list keeps it from being dropped): gone from the worker's view all the same.
  await dbs().source.query(`ALTER TABLE items RENAME COLUMN visible TO shown; UPDATE items SET qty = qty + 1 WHERE id <= 3`);
  const paused = await waitFor('items paused', async () => ((await pausedState())?.state === 'paused' ? pausedState() : undefined));
  expect(paused!.error).toContain('visible');
  await dbs().source.query(`INSERT INTO notes VALUES (1, 'still streaming')`);
  await waitFor('notes streamed', async () => (await rows(dbs().target, `SELECT 1 FROM notes WHERE id = 1`)).length === 1);
  expect(worker.finished()).toBe(false);

  // Fix the source, then recopy while the source keeps writing items and the worker keeps running.
  await dbs().source.query(`ALTER TABLE items RENAME COLUMN shown TO visible`);
  let next = 1_000;
  const load = churn(dbs().source, () => `BEGIN; UPDATE items SET qty = qty + 1 WHERE id = ${1 + (next % 200)};
    INSERT INTO items (id, qty) VALUES (${next++}, 1); COMMIT`, { pauseMs: 2 });
  const applied = await runSyncctl(['apply', dir], env);
  expect(applied.status, applied.stderr).toBe(0);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  await load.stop();
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the recopy under writes', timeoutMs: 60_000 });
  expect((await pausedState())?.state).toBe('streaming');
  expect((await rows(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`))).toEqual([{ n: 0 }]);
  expect(worker.finished()).toBe(false);
});
