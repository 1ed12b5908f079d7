/**
 * `syncctl status` on real servers, through the command line. A sync of two tables, one filtered
 * by the worker (`active`, not a replica-identity column) and one by the publication (`id % 2 = 0`):
 * the leader is alive exactly while a backend holds the sync's advisory lock (checked against
 * pg_locks decoded another way); the worker's checkpoint, slot and lag are reported; a parked
 * apply error, a paused table, a missing slot or no leader make exit 1, pending manual conflicts
 * do not; --counts equals count(*) under the filter on the source and count(*) on the target; an
 * unreachable database exits 2 naming the sync, without its password.
 */
import { hostname } from 'node:os';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import type { SyncStatus } from '../../src/status/sync-status.ts';
import { rows, runSyncctl, syncSpec, useSpecDir, waitFor, type CliResult } from '../support/cli.ts';
import { apply, loadSync, startWorker, waitForStreaming } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('status');
const specs = useSpecDir();
const TABLES = `
    users: { from: 'public.users', to: 'public.users', key: ['id'], where: sql\`active\`, columns: { id: sql\`id\`, email: sql\`email\` } },
    items: { from: 'public.items', to: 'public.items', key: ['id'], where: sql\`id % 2 = 0\`, columns: { id: sql\`id\`, label: sql\`label\` } },`;
let sync: LoadedSync;
let dir: string;
let env: Record<string, string>;
/** A session of its own on the target that takes and gives back advisory locks. */
let holder: pg.Client;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, active boolean NOT NULL);
    INSERT INTO users SELECT g, 'u' || g || '@example.org', g % 5 <> 0 FROM generate_series(1, 50) g;
    CREATE TABLE items (id int PRIMARY KEY, label text);
    INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 30) g`);
  await dbs().target.query(`
    CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);
    CREATE TABLE items (id int PRIMARY KEY, label text CONSTRAINT items_label_check CHECK (label <> 'refused'))`);
  dir = specs.write({ 'status.sync.ts': syncSpec({ name: 'status', tables: TABLES }) });
  sync = await loadSync(dir, env);
  await apply(sync);
  holder = new pg.Client(dbs().targetUrl);
  holder.on('error', () => {});
  await holder.connect();
});

afterAll(async () => {
  await holder?.end().catch(() => {});
});

async function status(args: readonly string[] = [], environment = env, specs = dir): Promise<{ result: CliResult; sync: SyncStatus }> {
  const result = await runSyncctl(['status', specs, '--json', ...args], environment);
  if (result.status !== 0 && result.status !== 1) throw new Error(`status exited ${result.status}\n${result.stdout}\n${result.stderr}`);
  const all = JSON.parse(result.stdout) as SyncStatus[];
  expect(all).toHaveLength(1);
  return { result, sync: all[0]! };
}

const leaderKey = (name: string) => `hashtextextended('syncctl leader ' || '${name}', 0)`;
const takeLock = async (name: string) => (await holder.query(`SELECT pg_try_advisory_lock(${leaderKey(name)}) AS ok`)).rows[0].ok as boolean;
const dropLock = (name: string) => holder.query(`SELECT pg_advisory_unlock(${leaderKey(name)})`);
/** The backend holding the sync's leader lock, decoded as one 64-bit key (status decodes high and low halves). */
const lockHolder = async (): Promise<number | undefined> => (await rows<{ pid: number }>(dbs().target, `
  SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND ((classid::bigint << 32) | objid::bigint) = ${leaderKey('status')}`))[0]?.pid;
const table = (s: SyncStatus, name: string) => s.tables.find((t) => t.name === name)!;

test('applied, no worker yet: the checkpoint and an inactive slot are shown; no leader is degraded (exit 1)', async () => {
  const { result, sync: s } = await status();
  expect(result.status).toBe(1);
  expect(s).toMatchObject({
    name: 'status', health: 'degraded', registered: true,
    leader: { alive: false, host: null, pid: null, since: null, lockBackendPid: null },
    lastCommit: { lsn: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/), time: null },
    slot: { name: 'syncctl_status', exists: true, active: false, walStatus: expect.stringMatching(/^(reserved|extended)$/), confirmedFlushLsn: expect.any(String) },
  });
  expect(s.problems).toEqual([expect.stringMatching(/^no leader: no syncctl run holds the sync's lock on the target, and the slot is inactive$/)]);
  expect(s.slot!.retainedWalBytes).toBeGreaterThanOrEqual(0);
  expect(s.lagBytes).toBeGreaterThanOrEqual(0);
  expect(s.slot!.safeWalSizeBytes === null || typeof s.slot!.safeWalSizeBytes === 'number').toBe(true);
  expect(s.tables.map((t) => [t.name, t.source, t.target, t.mode, t.state, t.inSpec, t.pendingConflicts, t.parkedErrors, t.lastError, t.counts]))
    .toEqual([['users', 'public.users', 'public.users', 'mapped', 'streaming', true, 0, 0, null, null], ['items', 'public.items', 'public.items', 'mapped', 'streaming', true, 0, 0, null, null]]);

  const text = await runSyncctl(['status', dir], env);
  expect(text.status).toBe(1);
  expect(text.stdout).toContain('status: degraded');
  expect(text.stdout).toMatch(/leader +none/);
  expect(text.stdout).toMatch(/slot +syncctl_status: inactive, wal_status (reserved|extended), retains /);
  expect(text.stdout).toMatch(/TABLE +STATE +APPLIED +LAST APPLIED \(UTC\) +CONFLICTS +PARKED +LAST ERROR/);
  expect(text.stdout).toMatch(/users +streaming +0 +- +0 +0 +-/);
}, 60_000);

test('the leader is alive exactly while a backend holds the sync\'s lock; another sync\'s lock does not count', async () => {
  expect(await takeLock('statusx')).toBe(true);
  expect((await status()).sync.leader.alive).toBe(false);
  await dropLock('statusx');

  expect(await takeLock('status')).toBe(true);
  const pid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  expect(await lockHolder()).toBe(pid);
  const held = await status();
  expect(held.result.status).toBe(0);
  // An inactive slot while a leader is alive is a worker reconnecting: healthy.
  expect(held.sync).toMatchObject({ health: 'healthy', problems: [], leader: { alive: true, lockBackendPid: pid }, slot: { active: false } });

  // The checkpoint names the leader; with the lock given back, that name is history.
  await dbs().target.query(`UPDATE syncctl.checkpoints SET leader_host = 'host-a', leader_pid = 4242, leader_since = '2026-01-02 03:04:05+00', leader_epoch = 3
                             WHERE sync_name = 'status'`);
  expect((await status()).sync.leader).toEqual({ alive: true, host: 'host-a', pid: 4242, since: '2026-01-02T03:04:05.000000Z', epoch: 3, lockBackendPid: pid });
  await dropLock('status');
  const gone = await status();
  expect(gone.result.status).toBe(1);
  expect(gone.sync.leader).toMatchObject({ alive: false, host: 'host-a', pid: 4242, lockBackendPid: null });
  expect(gone.sync.problems).toEqual([expect.stringContaining('no leader: no syncctl run holds the sync\'s lock on the target (the checkpoint names host-a pid 4242 since 2026-01-02T03:04:05.000000Z)')]);
  const text = await runSyncctl(['status', dir], env);
  expect(text.stdout).toMatch(/leader +none \(the checkpoint names host-a pid 4242/);
}, 60_000);

test('the worker streams: last commit, active slot and lag; a parked apply error degrades (exit 1), a pending manual conflict does not', async () => {
  const worker = startWorker(sync);
  try {
    await waitForStreaming(dbs(), 'status');
    await dbs().source.query(`INSERT INTO users VALUES (51, 'u51@example.org', true); INSERT INTO items VALUES (32, 'item 32'), (100, 'refused')`);
    await waitFor('users 51 and the parked item 100', async () => (await rows(dbs().target, 'SELECT 1 FROM users WHERE id = 51')).length === 1 &&
      (await rows(dbs().target, `SELECT 1 FROM syncctl.sync_conflicts WHERE kind = 'apply_error' AND outcome = 'pending'`)).length === 1);
    // This process's worker may take the lead itself (then the checkpoint names it); if it does not, the test leads.
    if ((await lockHolder()) === undefined) expect(await takeLock('status')).toBe(true);
    const { result, sync: s } = await status();
    expect(result.status).toBe(1);
    expect(s.leader.alive).toBe(true);
    expect(s.leader.lockBackendPid).toBe(await lockHolder());
    if (s.leader.lockBackendPid !== (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid) {
      expect(s.leader).toMatchObject({ host: hostname(), pid: process.pid });
    }
    expect(s.lastCommit!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(s.slot).toMatchObject({ exists: true, active: true });
    expect(s.lagBytes).toBeGreaterThanOrEqual(0);
    expect(table(s, 'items')).toMatchObject({ state: 'streaming', parkedErrors: 1, pendingConflicts: 0, lastError: expect.stringContaining('items_label_check') });
    expect(s.problems).toEqual(['table items has 1 parked apply error(s) pending']);
    // Whatever the worker counts, a table it applied to since has a count to go with the time.
    for (const t of s.tables) if (t.lastAppliedAt !== null) expect(t.changesApplied).toBeGreaterThan(0);

    await dbs().target.query(`UPDATE syncctl.sync_conflicts SET outcome = 'resolved' WHERE kind = 'apply_error'`);
    await dbs().target.query(`INSERT INTO syncctl.sync_conflicts (sync_name, table_name, kind, key, strategy, outcome, reason)
                              VALUES ('status', 'users', 'insert_exists', '{"id": 7}', 'manual', 'pending', 'waiting for a person')`);
    const manual = await status();
    expect(manual.result.status).toBe(0);
    expect(manual.sync).toMatchObject({ health: 'healthy', problems: [] });
    expect(table(manual.sync, 'users')).toMatchObject({ pendingConflicts: 1, parkedErrors: 0, lastError: null });
    expect(table(manual.sync, 'items')).toMatchObject({ pendingConflicts: 0, parkedErrors: 0, lastError: null });
  } finally {
    await worker.stop();
  }
}, 90_000);

test('--counts: source rows under the row filter (worker and publication filters) and target rows, as count(*) gives them', async () => {
  // users' filter reads a column outside the replica identity: the worker evaluates it, the publication carries items' only.
  expect(await rows(dbs().source, `SELECT tablename, rowfilter FROM pg_publication_tables WHERE pubname = 'syncctl_status' ORDER BY tablename`))
    .toEqual([{ tablename: 'items', rowfilter: '((id % 2) = 0)' }, { tablename: 'users', rowfilter: null }]);
  // A row written on the target alone, and item 100 refused by the target: the two sides differ.
  await dbs().target.query(`INSERT INTO users VALUES (1000, 'local@example.org')`);
  const count = async (client: pg.Client, sql: string) => Number((await client.query(sql)).rows[0].n);
  const expected = {
    users: { sourceRows: await count(dbs().source, 'SELECT count(*) AS n FROM users WHERE active'), targetRows: await count(dbs().target, 'SELECT count(*) AS n FROM users') },
    items: { sourceRows: await count(dbs().source, 'SELECT count(*) AS n FROM items WHERE id % 2 = 0'), targetRows: await count(dbs().target, 'SELECT count(*) AS n FROM items') },
  };
  expect(expected).toEqual({ users: { sourceRows: 41, targetRows: 42 }, items: { sourceRows: 17, targetRows: 16 } });
  const { sync: s } = await status(['--counts']);
  expect(table(s, 'users').counts).toEqual({ ...expected.users, error: null });
  expect(table(s, 'items').counts).toEqual({ ...expected.items, error: null });
  const text = await runSyncctl(['status', dir, '--counts'], env);
  expect(text.stdout).toMatch(/TABLE .* SOURCE ROWS +TARGET ROWS +LAST ERROR/);
  expect(text.stdout).toMatch(/users +streaming .* 41 +42 +-/);
}, 60_000);

test('a paused table degrades (exit 1) with its error; changes applied and their time are read from sync_tables', async () => {
  if ((await lockHolder()) === undefined) expect(await takeLock('status')).toBe(true);
  await dbs().target.query(`UPDATE syncctl.sync_tables SET state = 'paused', error = 'column "email" of public.users changed type',
                              changes_applied = 42, last_applied_at = '2026-01-02 03:04:05.5+00' WHERE sync_name = 'status' AND table_name = 'users'`);
  try {
    const { result, sync: s } = await status();
    expect(result.status).toBe(1);
    expect(s.problems).toEqual(['table users is paused: column "email" of public.users changed type']);
    expect(table(s, 'users')).toMatchObject({ state: 'paused', changesApplied: 42, lastAppliedAt: '2026-01-02T03:04:05.500000Z', lastError: 'column "email" of public.users changed type' });
    const text = await runSyncctl(['status', dir], env);
    expect(text.stdout).toMatch(/users +paused +42 +2026-01-02 03:04:05 +1 +0 +column "email" of public.users changed type/);
    expect(text.stdout).toContain('  degraded:\n    - table users is paused');
  } finally {
    await dbs().target.query(`UPDATE syncctl.sync_tables SET state = 'streaming', error = NULL WHERE sync_name = 'status' AND table_name = 'users'`);
  }
  expect((await status()).result.status).toBe(0);
}, 60_000);

test('a sync not applied yet is degraded; an unreachable database exits 2 naming the sync, never its password', async () => {
  const never = specs.write({ 'never.sync.ts': syncSpec({ name: 'never', tables: TABLES }) });
  const { result, sync: s } = await status([], env, never);
  expect(result.status).toBe(1);
  expect(s).toMatchObject({ name: 'never', registered: false, health: 'degraded', problems: ['sync never is not registered on the target: run syncctl apply'] });
  expect(s.tables.map((t) => t.state)).toEqual(['unregistered', 'unregistered']);

  const unreachable = { ...env, SRC_URL: 'postgres://syncctl:s3cret-pw@127.0.0.1:1/nowhere' };
  const text = await runSyncctl(['status', dir], unreachable);
  expect(text.status).toBe(2);
  expect(text.stderr).toContain('error: sync status: cannot connect to the source database syncctl@127.0.0.1:1/nowhere');
  expect(text.stdout).toContain('status: unreadable');
  const json = await runSyncctl(['status', dir, '--json'], unreachable);
  expect(json.status).toBe(2);
  expect(JSON.parse(json.stdout)).toEqual([]);
  for (const out of [text.stdout, text.stderr, json.stdout, json.stderr]) expect(out).not.toContain('s3cret-pw');
}, 60_000);

test('a slot dropped by hand degrades (exit 1)', async () => {
  await dbs().source.query(`SELECT pg_drop_replication_slot('syncctl_status')`);
  const { result, sync: s } = await status();
  expect(result.status).toBe(1);
  expect(s.slot).toEqual({ name: 'syncctl_status', exists: false, active: false, walStatus: null, retainedWalBytes: null, safeWalSizeBytes: null, confirmedFlushLsn: null, failover: false, standbySlots: null });
  expect(s.lagBytes).toBeNull();
  expect(s.problems).toEqual(['replication slot syncctl_status does not exist on the source']);
  expect((await runSyncctl(['status', dir], env)).stdout).toMatch(/slot +syncctl_status: missing/);
}, 60_000);
