/**
 * Secrets never leave syncctl: connection failures name the database as user@host:port/db without
 * the password; no output of plan/apply/destroy (text, --sql, --json, JSON logs) carries one.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { expectStatus, runSyncctl, syncSpec, useSpecDir, type CliResult } from '../support/cli.ts';
import { getServers } from '../support/servers.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('secrets');
const specs = useSpecDir();
const WRONG = 'Wr0ng-P@ss:w/rd%secret';
let dir: string;

const TABLES = `
    items: { from: 'public.items', to: 'public.items', key: ['id'], columns: { id: sql\`id\`, label: sql\`label\` } },
    tags: { from: 'public.tags', to: 'public.tags', mode: 'native' },`;

function withPassword(url: string, password: string): string {
  const parsed = new URL(url);
  parsed.password = encodeURIComponent(password);
  return parsed.href;
}

/** Every form in which a password could leak. */
function expectNoSecret(result: CliResult, secrets: readonly string[]): void {
  const output = result.stdout + result.stderr;
  for (const secret of secrets) {
    expect(output).not.toContain(secret);
    expect(output).not.toContain(encodeURIComponent(secret));
  }
}

beforeAll(async () => {
  const { source, target } = dbs();
  for (const db of [source, target]) {
    await db.query(`CREATE TABLE public.items (id int PRIMARY KEY, label text)`);
    await db.query(`CREATE TABLE public.tags (id int PRIMARY KEY, tag text)`);
  }
  dir = specs.write({ 'secret.sync.ts': syncSpec({ name: 'secret', tables: TABLES }) });
});

describe('a wrong password', () => {
  for (const command of [['plan'], ['apply'], ['destroy', '--allow-destroy']]) {
    test(`${command[0]}: exit 1, the target named as user@host:port/db, no password`, async () => {
      const { target } = getServers();
      const result = await runSyncctl([command[0]!, dir, ...command.slice(1)],
        { SRC_URL: dbs().sourceUrl, DST_URL: withPassword(dbs().targetUrl, WRONG), SYNCCTL_LOG_FORMAT: 'json' });
      expectStatus(result, 1);
      expect(result.stderr).toBe(
        `error: cannot connect to the target database postgres@127.0.0.1:${target.port}/${dbs().targetDatabase}: password authentication failed for user "postgres"\n`);
      expectNoSecret(result, [WRONG, getServers().source.password, getServers().target.password]);
    });
  }

  test('in the source URL too', async () => {
    const { source } = getServers();
    const result = await runSyncctl(['plan', dir], { SRC_URL: withPassword(dbs().sourceUrl, WRONG), DST_URL: dbs().targetUrl });
    expectStatus(result, 1);
    expect(result.stderr).toContain(`error: cannot connect to the source database postgres@127.0.0.1:${source.port}/${dbs().sourceDatabase}: `);
    expectNoSecret(result, [WRONG, getServers().target.password]);
  });

  test('a keyword/value connection string keeps its password out of the error', async () => {
    const result = await runSyncctl(['plan', dir], {
      SRC_URL: `host=127.0.0.1 port=1 user=postgres password=kw-${WRONG} dbname=nowhere`, DST_URL: dbs().targetUrl,
    });
    expectStatus(result, 1);
    expect(result.stderr).toContain('error: cannot connect to the source database host=127.0.0.1 port=1 user=postgres password=*** dbname=nowhere: ');
    expectNoSecret(result, [`kw-${WRONG}`]);
  });

  test('a malformed URL keeps its password out of the error', async () => {
    const result = await runSyncctl(['plan', dir], { SRC_URL: `postgres://postgres:${encodeURIComponent(WRONG)}@127.0.0.1:notaport/db`, DST_URL: dbs().targetUrl });
    expectStatus(result, 1);
    expect(result.stderr).toBe('error: the source connection string postgres://postgres:***@127.0.0.1:notaport/db is not valid: Invalid URL\n');
    expectNoSecret(result, [WRONG]);
  });
});

describe('no password in any output, with JSON logs', () => {
  const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl, SYNCCTL_LOG_FORMAT: 'json', SYNCCTL_LOG_LEVEL: 'debug' });
  const secrets = () => [getServers().source.password, getServers().target.password];

  test.each([
    ['plan', '--sql'],
    ['plan', '--json'],
    ['plan', '--grants'],
    ['apply', '--sql'],
    ['plan', '--sql'],
    ['destroy', '--allow-destroy', '--json'],
    ['apply', '--json'],
    ['destroy', '--allow-destroy', '--sql'],
  ])('%s %s %s', async (command, ...flags) => {
    const result = expectStatus(await runSyncctl([command, dir, ...flags.filter((f): f is string => f !== undefined)], env()), 0);
    expectNoSecret(result, secrets());
    if (flags.includes('--json')) expect(() => JSON.parse(result.stdout) as unknown).not.toThrow();
  });

  test('the subscription SQL shows the connection with *** for its password', async () => {
    const result = expectStatus(await runSyncctl(['plan', dir, '--sql'], env()), 0);
    expect(result.stdout).toContain(`CONNECTION 'postgres://postgres:***@127.0.0.1:${getServers().source.port}/${dbs().sourceDatabase}'`);
  });
});
