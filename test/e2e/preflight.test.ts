/**
 * Preflight and plan-time catalog checks on real servers: each failure exits 2 with an error
 * that names the file, the path in the spec and the fix; nothing is created.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/embedded/local-cluster.ts';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir, type CliResult } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('preflight');
const specs = useSpecDir();
const suffix = randomBytes(3).toString('hex');
const NO_REPLICATION = `syncctl_norepl_${suffix}`;
const NO_SELECT = `syncctl_nosel_${suffix}`;
const ROLE_PASSWORD = 'role-pw-7f3a';

const ACCOUNTS = `    accounts: { from: 'public.accounts', to: 'app.accounts', key: ['id'], columns: { id: sql\`id\`, name: sql\`name\` } },`;

/** Writes a one-file spec `check.sync.ts` and returns the file's absolute path. */
function writeSpec(tables: string): string {
  return path.join(specs.write({ 'check.sync.ts': syncSpec({ name: 'check', tables }) }), 'check.sync.ts');
}

function plan(file: string, env: { SRC_URL?: string; DST_URL?: string } = {}): Promise<CliResult> {
  return runSyncctl(['plan', file], { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl, ...env });
}

/** The URL of the source test database as another role. */
function sourceAs(role: string): string {
  const url = new URL(dbs().sourceUrl);
  url.username = role;
  url.password = ROLE_PASSWORD;
  return url.href;
}

beforeAll(async () => {
  const { source, target } = dbs();
  await source.query(`CREATE TABLE public.accounts (id int PRIMARY KEY, email text, name text, age int, active boolean)`);
  await target.query(`CREATE SCHEMA app`);
  await target.query(`CREATE TABLE app.accounts (id int PRIMARY KEY, email text, name text NOT NULL, age int, active boolean)`);
  // One source and one target table per mapping check: a sync reads and writes each table once.
  for (const name of ['m1', 'm2', 'm3', 'm4', 'm5']) {
    await source.query(`CREATE TABLE public.${name} (id int PRIMARY KEY, email text, name text, age int, active boolean)`);
  }
  for (const name of ['m1', 'm2', 'm3']) {
    await target.query(`CREATE TABLE app.${name} (id int PRIMARY KEY, email text, name text NOT NULL, age int, active boolean)`);
  }
  await target.query(`CREATE TABLE app.no_key (id int, email text)`);
  await target.query(`CREATE TABLE app.required (id int PRIMARY KEY, name text, mandatory text NOT NULL)`);
  await source.query(`CREATE ROLE ${NO_REPLICATION} LOGIN PASSWORD '${ROLE_PASSWORD}'`);
  await source.query(`GRANT SELECT ON public.accounts TO ${NO_REPLICATION}`);
  await source.query(`CREATE ROLE ${NO_SELECT} LOGIN REPLICATION PASSWORD '${ROLE_PASSWORD}'`);
});

afterAll(async () => {
  const source = dbs().source;
  for (const role of [NO_REPLICATION, NO_SELECT]) {
    await source.query(`DROP OWNED BY ${role}`).catch(() => {});
    await source.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
  }
});

/** Asserts the run failed with exit 2, the given headline and exactly these `path: message` problem lines of `file`. */
function expectProblems(result: CliResult, headline: string, file: string, problems: string[]): void {
  expectStatus(result, 2);
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines[0]).toBe(`error: ${headline}`);
  expect(lines.slice(1)).toEqual(problems.map((p) => `  ${file}: ${p}`));
  expect(result.stdout).toBe('');
}

describe('preflight', () => {
  test('a source table that does not exist', async () => {
    const file = writeSpec(`    accounts: { from: 'public.nope', to: 'app.accounts', key: ['id'], columns: { id: sql\`id\` } },`);
    expectProblems(await plan(file), 'check: the servers cannot host this sync as they are', file, [
      'tables.accounts.from: source table public.nope does not exist',
    ]);
  });

  test('a target table that does not exist', async () => {
    const file = writeSpec(`    accounts: { from: 'public.accounts', to: 'app.nope', key: ['id'], columns: { id: sql\`id\` } },`);
    expectProblems(await plan(file), 'check: the servers cannot host this sync as they are', file, [
      'tables.accounts.to: target table app.nope does not exist: create it on the target first (syncctl never creates or drops target tables)',
    ]);
  });

  test('a source role without the REPLICATION attribute', async () => {
    const file = writeSpec(ACCOUNTS);
    expectProblems(await plan(file, { SRC_URL: sourceAs(NO_REPLICATION) }), 'check: the servers cannot host this sync as they are', file, [
      `source: role ${NO_REPLICATION} lacks the REPLICATION attribute on the source: ALTER ROLE "${NO_REPLICATION}" WITH REPLICATION`,
    ]);
  });

  test('a source role without SELECT on the table', async () => {
    const file = writeSpec(ACCOUNTS);
    expectProblems(await plan(file, { SRC_URL: sourceAs(NO_SELECT) }), 'check: the servers cannot host this sync as they are', file, [
      `tables.accounts.from: role ${NO_SELECT} cannot read public.accounts on the source: GRANT SELECT ON "public"."accounts" TO "${NO_SELECT}"`,
    ]);
  });

  test('nothing was created by the failed plans', async () => {
    expect(await rows(dbs().source, 'SELECT pubname FROM pg_publication')).toEqual([]);
    expect(await rows(dbs().target, `SELECT nspname FROM pg_namespace WHERE nspname = 'syncctl'`)).toEqual([]);
  });
});

describe('mapping checks in the target, all reported at once', () => {
  let result: CliResult;
  let file: string;

  beforeAll(async () => {
    file = writeSpec(`
    missing_column: { from: 'public.m1', to: 'app.m1', key: ['id'], columns: { id: sql\`id\`, name: sql\`nmae\` } },
    wrong_type: { from: 'public.m2', to: 'app.m2', key: ['id'], columns: { id: sql\`id\`, name: sql\`name\`, age: sql\`name\` } },
    not_boolean: { from: 'public.m3', to: 'app.m3', key: ['id'], where: sql\`age + 1\`, columns: { id: sql\`id\`, name: sql\`name\` } },
    unkeyed: { from: 'public.m4', to: 'app.no_key', key: ['email'], columns: { id: sql\`id\`, email: sql\`email\` } },
    unmapped: { from: 'public.m5', to: 'app.required', key: ['id'], columns: { id: sql\`id\`, name: sql\`name\` } },`);
    result = await plan(file);
  });

  test('the run fails with exit 2 and one line per problem', () => {
    expectStatus(result, 2);
    expect(result.stderr.split('\n')[0]).toBe('error: check: the spec does not fit the live databases');
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(6);
  });

  test.each([
    ['missing_column', 'tables.missing_column.columns.name: column "nmae" does not exist (hint: Perhaps you meant to reference the column "m1.name".)'],
    ['wrong_type', 'tables.wrong_type.columns.age: column "age" is of type integer but expression is of type text (hint: You will need to rewrite or cast the expression.)'],
    ['not_boolean', 'tables.not_boolean.where: expected a boolean expression, got integer'],
    ['unkeyed', 'tables.unkeyed.key: no primary key or unique index on app.no_key covers exactly (email); the key must identify one target row: CREATE UNIQUE INDEX ON app.no_key (email)'],
    ['unmapped', 'tables.unmapped.columns: target column "mandatory" of app.required is NOT NULL without a default and is not mapped: every insert would fail'],
  ])('%s', (_name, problem) => {
    expect(result.stderr.split('\n')).toContain(`  ${file}: ${problem}`);
  });
});

describe('a source server without logical decoding and without free slots', () => {
  let cluster: LocalCluster | undefined;
  let home: string;

  beforeAll(async () => {
    home = mkdtempSync(path.join(tmpdir(), 'syncctl-preflight-'));
    chmodSync(home, 0o755); // the server may run as the postgres OS user
    cluster = await startLocalCluster({
      dataDir: path.join(home, 'data'),
      settings: { wal_level: 'replica', max_replication_slots: 1, max_wal_senders: 1 },
    });
    const client = new pg.Client({ connectionString: cluster.url() });
    await client.connect();
    try {
      await client.query(`CREATE TABLE public.accounts (id int PRIMARY KEY, email text, name text, age int, active boolean)`);
      await client.query(`SELECT pg_create_physical_replication_slot('occupied')`);
    } finally {
      await client.end();
    }
  });

  afterAll(async () => {
    await cluster?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  test('both problems are reported at once, each with its fix', async () => {
    const file = writeSpec(ACCOUNTS);
    expectProblems(await plan(file, { SRC_URL: cluster!.url() }), 'check: the servers cannot host this sync as they are', file, [
      'source: wal_level is replica on the source; logical replication needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart the server)',
      'source: replication slots are exhausted on the source: max_replication_slots = 1, 1 in use, syncctl needs 1 more (raise max_replication_slots and restart, or drop unused slots)',
    ]);
  });
});
