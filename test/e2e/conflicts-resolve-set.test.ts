/**
 * `syncctl conflicts resolve <id…> --set col=value…` on real servers, the worker running: a person
 * writes the row themselves. The target row becomes the incoming row (mapped) with the given
 * columns set (text values, read as each column's type), the conflict is `resolved` with that row
 * as its result, and the changes queued behind it replay in order. An unknown column, a key
 * column, a value that is not of its column's type or that the target refuses, and a change with
 * no incoming row are errors that name the conflict, the table and the column, and apply nothing.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, churn, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('conflicts_resolve_set');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
/** A value TOASTed out of line (random hex: it does not compress below the threshold). */
const BIG = `(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 400) AS g)`;

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE members (id int PRIMARY KEY, email text, status text, laps int NOT NULL DEFAULT 0, tags text[], meta jsonb, bio text);
    INSERT INTO members (id, email, status) SELECT g, 'm' || g || '@src', 'new' FROM generate_series(1, 20) g;
    UPDATE members SET bio = ${BIG} WHERE id IN (10, 11)`);
  // A CHECK the source does not have, and a column the mapping does not write.
  await dbs().target.query(`CREATE TABLE m (id int PRIMARY KEY, email text, status text, laps int NOT NULL CHECK (laps >= 0), tags text[], meta jsonb, bio text,
    note text NOT NULL DEFAULT 'none')`);
  sync = await loadSync(specs.write({ 'resolve.sync.ts': syncSpec({ name: 'resolve_set', tables: `
    m: { from: 'public.members', to: 'public.m', key: ['id'],
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\`, laps: sql\`laps\`, tags: sql\`tags\`, meta: sql\`meta\`, bio: sql\`bio\` },
      conflict: { strategy: 'manual' } },` }) }),
  env());
  await apply(sync);
  worker = startWorker(sync);
});

afterAll(async () => {
  await worker?.stop();
});

interface Row { id: number; email: string | null; status: string | null; laps: number; tags: string[] | null; meta: unknown; bio_md5: string | null; note: string }
const row = async (id: number) => (await rows<Row>(dbs().target,
  `SELECT id, email, status, laps, tags, meta, md5(bio) AS bio_md5, note FROM m WHERE id = $1`, [id]))[0];
const sourceBio = async (id: number) => (await rows<{ h: string }>(dbs().source, `SELECT md5(bio) AS h FROM members WHERE id = $1`, [id]))[0]!.h;
interface Conflict { id: string; kind: string; outcome: string; resolved_by: string | null; reason: string | null; incoming: Record<string, unknown> | null; result: Record<string, unknown> | null }
const conflictsOf = async (id: number) => rows<Conflict>(dbs().target,
  `SELECT s.id::text, s.kind, s.outcome, s.resolved_by, s.reason, s.incoming, s.result FROM syncctl.sync_conflicts AS s
    WHERE s.sync_name = 'resolve_set' AND s.key = jsonb_build_object('id', $1::int) ORDER BY s.id`, [id]);
const pendingOf = async (id: number, count = 1) => {
  const found = await waitFor(`${count} pending conflict(s) of row ${id}`, async () => {
    const pending = (await conflictsOf(id)).filter((c) => c.outcome === 'pending');
    return pending.length === count ? pending : undefined;
  });
  return found;
};
const localEntries = async (id: number) => (await rows(dbs().target,
  `SELECT 1 FROM syncctl.local_changes WHERE target_table = 'public.m' AND key = jsonb_build_object('id', $1::int)`, [id])).length;
const resolve = (args: readonly string[]) => runSyncctl(['conflicts', 'resolve', ...args, '--specs', sync.file], env());

test('locally_modified: the row becomes the incoming row with the columns set, the result is recorded, and the key streams again', async () => {
  await dbs().target.query(`UPDATE m SET email = 'local@tgt', status = 'local' WHERE id = 1`);
  await dbs().source.query(`UPDATE members SET status = 'src', laps = 3, tags = '{a}' WHERE id = 1`);
  const [conflict] = await pendingOf(1);
  expect(conflict!.kind).toBe('locally_modified');
  const result = expectStatus(await resolve([conflict!.id, '--set', 'status=checked', '--set', 'tags={x,"y z"}', '--set', 'meta={"by": "alice", "n": 1}',
    '--set', 'note=hand-written', '--set-null', 'email', '--by', 'alice']), 0);
  expect(result.stdout).toContain('1 resolved (the incoming row written with status, tags, meta, note, email set), 0 queued change(s) behind them applied');
  // Incoming (laps) where not set; set columns as their types, email NULL; an unmapped column set too.
  const written = { id: 1, email: null, status: 'checked', laps: 3, tags: ['x', 'y z'], meta: { by: 'alice', n: 1 }, bio_md5: null, note: 'hand-written' };
  expect(await row(1)).toEqual(written);
  const [after] = await conflictsOf(1);
  expect(after).toMatchObject({ outcome: 'resolved', resolved_by: 'alice', reason: 'decided: the incoming row written with status, tags, meta, note, email set',
    result: { id: 1, email: null, status: 'checked', laps: 3, tags: ['x', 'y z'], meta: { by: 'alice', n: 1 }, note: 'hand-written' } });
  expect(await localEntries(1)).toBe(0);
  // The row is syncctl's again: the next source change applies, with no conflict.
  await dbs().source.query(`UPDATE members SET status = 'after' WHERE id = 1`);
  await waitFor('row 1 streaming again', async () => (await row(1))?.status === 'after');
  expect((await conflictsOf(1)).length).toBe(1);
  expect((await row(1))!.note).toBe('hand-written');
});

test('the changes queued behind it replay after the row is written, in order', async () => {
  await dbs().target.query(`UPDATE m SET status = 'local' WHERE id = 2`);
  await dbs().source.query(`UPDATE members SET status = 'first', laps = 1 WHERE id = 2`);
  await dbs().source.query(`UPDATE members SET laps = 2 WHERE id = 2`);
  const [first, second] = await pendingOf(2, 2);
  // The second waits for the first's decision, with --set too.
  const early = await resolve([second!.id, '--set', 'status=x']);
  expectStatus(early, 2);
  expect(early.stderr).toContain(`conflict ${second!.id} is queued behind conflict ${first!.id}`);
  const result = expectStatus(await resolve([first!.id, '--set', 'status=chosen', '--set', 'laps=9']), 0);
  expect(result.stdout).toContain('1 resolved (the incoming row written with status, laps set), 1 queued change(s) behind them applied');
  const [a, b] = await conflictsOf(2);
  expect(a!.result).toMatchObject({ status: 'chosen', laps: 9 });
  expect(b!.outcome).toBe('resolved');
  // The queued change is the source's later row: it replaces what was set.
  expect(await row(2)).toMatchObject({ status: 'first', laps: 2 });
});

test('update_missing and insert_exists: the row is inserted, or the local row replaced', async () => {
  await dbs().target.query(`DELETE FROM m WHERE id = 3; INSERT INTO m (id, email, status, laps) VALUES (100, 'local@tgt', 'local', 0)`);
  await dbs().source.query(`UPDATE members SET status = 'src', laps = 4 WHERE id = 3; INSERT INTO members (id, email, status, laps) VALUES (100, 'm100@src', 'src', 5)`);
  const [missing] = await pendingOf(3);
  const [exists] = await pendingOf(100);
  expect([missing!.kind, exists!.kind]).toEqual(['update_missing', 'insert_exists']);
  expect(await row(3)).toBeUndefined();
  expectStatus(await resolve([missing!.id, exists!.id, '--set', 'status=restored']), 0);
  expect(await row(3)).toMatchObject({ email: 'm3@src', status: 'restored', laps: 4, note: 'none' });
  expect(await row(100)).toMatchObject({ email: 'm100@src', status: 'restored', laps: 5 });
  expect((await conflictsOf(3))[0]!.result).toMatchObject({ id: 3, status: 'restored' });
});

test('errors name the conflict, the table and the column, and apply nothing', async () => {
  await dbs().target.query(`UPDATE m SET status = 'local' WHERE id = 4; DELETE FROM m WHERE id = 5`);
  await dbs().source.query(`UPDATE members SET status = 'src', laps = 7 WHERE id = 4; DELETE FROM members WHERE id = 5`);
  const [four] = await pendingOf(4);
  const [five] = await pendingOf(5);
  expect(five!.kind).toBe('delete_missing');
  const refused = async (args: readonly string[], message: string) => {
    const result = await resolve(args);
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toContain(message);
  };
  const c = `conflict ${four!.id} (resolve_set.m)`;
  await refused([four!.id, '--set', 'nope=1'], `${c}: --set nope: public.m has no column "nope" (its columns: id, email, status, laps, tags, meta, bio, note)`);
  await refused([four!.id, '--set', 'id=44'], `${c}: --set id: "id" is a key column of public.m: the key follows the source`);
  await refused([four!.id, '--set', 'laps=abc'], `${c}: --set laps=abc: not a value of the column's type integer: invalid input syntax for type integer: "abc"`);
  await refused([four!.id, '--set', 'meta={oops'], `${c}: --set meta={oops: not a value of the column's type jsonb: invalid input syntax for type json`);
  await refused([four!.id, '--set', 'laps=-1'], `${c}: the row with --set laps cannot be written: new row for relation "m" violates check constraint`);
  await refused([four!.id, '--set', 'status'], '--set status: expected column=value');
  await refused([four!.id, '--set', 'status=a', '--set', 'status=b'], '--set status: given twice');
  await refused([four!.id, '--use', 'incoming', '--set', 'status=a'], 'resolve needs one decision: --use incoming, --use current, or --set col=value…');
  // Several at once: the delete has no incoming row, so neither is applied.
  await refused([four!.id, five!.id, '--set', 'status=fine'],
    `conflict ${five!.id} (resolve_set.m): the incoming change deletes the row: there is no incoming row to set columns of; decide it with --use incoming or --use current`);
  expect((await conflictsOf(4)).map((x) => x.outcome)).toEqual(['pending']);
  expect((await conflictsOf(5)).map((x) => x.outcome)).toEqual(['pending']);
  expect(await row(4)).toMatchObject({ status: 'local', laps: 0 });
  expect(await localEntries(4)).toBe(1);
  // Then a good one goes through.
  expectStatus(await resolve([four!.id, '--set', 'laps=8']), 0);
  expect(await row(4)).toMatchObject({ status: 'src', laps: 8 });
});

test('a column computed from a TOAST value the change left unchanged keeps the target\'s value, or must be set when there is no row', async () => {
  // Row 10: the source changes laps only; bio (TOASTed) is not in the stream.
  await dbs().target.query(`UPDATE m SET status = 'local' WHERE id = 10; DELETE FROM m WHERE id = 11`);
  await dbs().source.query(`UPDATE members SET laps = 6 WHERE id IN (10, 11)`);
  const [ten] = await pendingOf(10);
  const [eleven] = await pendingOf(11);
  expectStatus(await resolve([ten!.id, '--set', 'status=kept-bio']), 0);
  expect(await row(10)).toMatchObject({ status: 'kept-bio', laps: 6, bio_md5: await sourceBio(10) });
  // Row 11 was deleted here: nothing to keep bio from.
  const refused = await resolve([eleven!.id, '--set', 'status=x']);
  expect(refused.status).toBe(2);
  expect(refused.stderr).toContain(`conflict ${eleven!.id} (resolve_set.m): --set bio: the target has no row with this key, and the incoming change left ` +
    'the TOAST values these are computed from unchanged (the stream does not carry them): set them too');
  expect(await row(11)).toBeUndefined();
  expectStatus(await resolve([eleven!.id, '--set', 'status=x', '--set', 'bio=short now']), 0);
  expect(await row(11)).toMatchObject({ status: 'x', laps: 6, bio_md5: (await rows<{ h: string }>(dbs().target, `SELECT md5('short now') AS h`))[0]!.h });
});

test('safe while the worker applies changes of the same key: every source change lands, in order, after the row written', async () => {
  await dbs().target.query(`UPDATE m SET status = 'local' WHERE id = 12`);
  await dbs().source.query(`UPDATE members SET status = 'src' WHERE id = 12`);
  const [conflict] = await pendingOf(12);
  const writer = await import('pg').then(({ default: pg }) => new pg.Client({ connectionString: dbs().sourceUrl }));
  await writer.connect();
  try {
    const laps = churn(writer, () => `UPDATE members SET laps = laps + 1 WHERE id = 12`, { pauseMs: 5 });
    await waitFor('some laps', async () => laps.committed() > 20);
    expectStatus(await resolve([conflict!.id, '--set', 'email=hand@tgt']), 0);
    await waitFor('more laps after the resolve', async () => laps.committed() > 60);
    await laps.stop();
  } finally {
    await writer.end();
  }
  const want = (await rows<{ laps: number }>(dbs().source, `SELECT laps FROM members WHERE id = 12`))[0]!.laps;
  // Each change either queued behind the conflict (replayed by the resolve) or landed after it: none lost.
  await waitFor('the last lap applied', async () => (await row(12))?.laps === want);
  expect((await conflictsOf(12)).filter((x) => x.outcome === 'pending')).toEqual([]);
  expect((await conflictsOf(12))[0]!.result).toMatchObject({ email: 'hand@tgt' });
  // Every later change writes the whole mapped row: email is the source's again.
  expect(await row(12)).toMatchObject({ email: 'm12@src', status: 'src', laps: want });
  expect(worker!.finished()).toBe(false);
});

test('a decision committed while the worker waits for the row: the worker reads the local change after it has the row, and applies the change', async () => {
  await dbs().target.query(`UPDATE m SET status = 'local' WHERE id = 17`);
  await dbs().source.query(`UPDATE members SET status = 'src' WHERE id = 17`);
  const [conflict] = await pendingOf(17);
  // What `conflicts resolve --use current` does, held open: the row locked, the local change
  // forgotten, the conflict resolved. The next change of the key is set aside (the worker still
  // sees the local change) and waits for the row; once it has it, it must read the local change
  // again (gone: the change applies), not as it was when its statement began (held as pending).
  const { default: pg } = await import('pg');
  const holder = new pg.Client({ connectionString: dbs().targetUrl });
  await holder.connect();
  try {
    await holder.query('BEGIN');
    await holder.query(`SELECT 1 FROM m WHERE id = 17 FOR UPDATE`);
    await holder.query(`DELETE FROM syncctl.local_changes WHERE target_table = 'public.m' AND key = jsonb_build_object('id', 17)`);
    await holder.query(`UPDATE syncctl.sync_conflicts SET outcome = 'resolved', resolved_by = 'test', resolved_at = clock_timestamp() WHERE id = $1`, [conflict!.id]);
    // Too large a batch to commit in one round trip: the change is set aside, and kept-prefix.ts meets it.
    await dbs().source.query(`UPDATE members SET laps = 7 WHERE id = 17;
      INSERT INTO members (id, email, status) SELECT g, 'm' || g || '@src', 'new' FROM generate_series(1001, 4000) AS g`);
    await waitFor('the worker waiting for the row', async () => (await rows(dbs().target,
      `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'syncctl run%' AND wait_event_type = 'Lock'`)).length > 0);
    await holder.query('COMMIT');
  } finally {
    await holder.end();
  }
  await waitFor('the change applied', async () => (await row(17))?.laps === 7);
  expect((await conflictsOf(17)).map((c) => c.outcome)).toEqual(['resolved']);
  expect(await row(17)).toMatchObject({ status: 'src', laps: 7 });
});
