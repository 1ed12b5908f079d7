/** The test harness itself: the two servers from global-setup and the per-file database pairs. */
import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { getServers, serverUrl, type ServerInfo } from '../support/servers.ts';
import { createTestDatabases, useTestDatabases } from '../support/test-databases.ts';

const expectedMajor = Number(process.env.PG_MAJOR ?? 18);

async function query<T extends pg.QueryResultRow>(server: ServerInfo, sql: string, database = 'postgres'): Promise<T[]> {
  const client = new pg.Client({ connectionString: serverUrl(server, database) });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

async function databaseExists(server: ServerInfo, name: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: serverUrl(server) });
  await client.connect();
  try {
    return (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1;
  } finally {
    await client.end();
  }
}

describe('servers', () => {
  for (const role of ['source', 'target'] as const) {
    test(`${role} answers, runs PG_MAJOR with wal_level=logical`, async () => {
      const server = getServers()[role];
      expect(server.host).toBe('127.0.0.1');
      expect(server.major).toBe(expectedMajor);
      const [row] = await query<{ wal_level: string; version: string }>(
        server,
        "SELECT current_setting('wal_level') AS wal_level, current_setting('server_version_num') AS version",
      );
      expect(row?.wal_level).toBe('logical');
      expect(Math.floor(Number(row?.version) / 10_000)).toBe(expectedMajor);
      const [show] = await query<{ wal_level: string }>(server, 'SHOW wal_level');
      expect(show?.wal_level).toBe('logical');
    });
  }

  test('source and target are distinct servers', () => {
    const { source, target } = getServers();
    expect(source.port).not.toBe(target.port);
  });

  test('TCP connections need the password', async () => {
    const { source } = getServers();
    const client = new pg.Client({ host: source.host, port: source.port, user: source.user, password: `${source.password}x`, database: 'postgres' });
    client.on('error', () => {});
    await expect(client.connect()).rejects.toMatchObject({ code: '28P01' });
    await client.end().catch(() => {});
  });
});

describe('test databases', () => {
  const dbs = useTestDatabases('harness file!');

  test('useTestDatabases gives connected clients on fresh databases', async () => {
    const { source, target, sourceDatabase, targetDatabase, sourceUrl, targetUrl } = dbs();
    expect(sourceDatabase).toMatch(/^t_harness_file_[0-9a-f]{8}$/);
    expect(sourceDatabase).not.toBe(targetDatabase);
    expect((await source.query('SELECT current_database() AS db')).rows[0]?.db).toBe(sourceDatabase);
    expect((await target.query('SELECT current_database() AS db')).rows[0]?.db).toBe(targetDatabase);
    expect(new URL(sourceUrl).pathname).toBe(`/${sourceDatabase}`);
    expect(new URL(targetUrl).pathname).toBe(`/${targetDatabase}`);
  });

  test('drop() removes a database pair holding a logical slot', async () => {
    const { source, target } = getServers();
    const pair = await createTestDatabases('slot');
    const slot = `${pair.sourceDatabase}_slot`;
    await pair.source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
    await pair.target.query('CREATE TABLE t (id int PRIMARY KEY)');
    await pair.drop();
    await pair.drop(); // idempotent
    expect(await databaseExists(source, pair.sourceDatabase)).toBe(false);
    expect(await databaseExists(target, pair.targetDatabase)).toBe(false);
    const slots = await query<{ slot_name: string }>(source, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = '${slot}'`);
    expect(slots).toEqual([]);
  });

  test('drop() removes a database pair joined by a live subscription', async () => {
    const { source, target } = getServers();
    const pair = await createTestDatabases('sub');
    await pair.source.query('CREATE TABLE items (id int PRIMARY KEY, name text)');
    await pair.source.query("INSERT INTO items VALUES (1, 'a'), (2, 'b')");
    await pair.source.query('CREATE PUBLICATION pub FOR TABLE items');
    await pair.target.query('CREATE TABLE items (id int PRIMARY KEY, name text)');
    const conninfo = `host=${source.host} port=${source.port} user=${source.user} password=${source.password} dbname=${pair.sourceDatabase}`;
    await pair.target.query(`CREATE SUBSCRIPTION sub CONNECTION '${conninfo}' PUBLICATION pub`);
    // Wait until the initial copy arrived, so a walsender is really attached to the slot.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const count = Number((await pair.target.query('SELECT count(*) AS n FROM items')).rows[0]?.n);
      if (count === 2) break;
      if (Date.now() > deadline) throw new Error('subscription did not copy the rows in 30 s');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await pair.drop();
    expect(await databaseExists(source, pair.sourceDatabase)).toBe(false);
    expect(await databaseExists(target, pair.targetDatabase)).toBe(false);
    const slots = await query(source, `SELECT slot_name FROM pg_replication_slots WHERE database = '${pair.sourceDatabase}'`);
    expect(slots).toEqual([]);
  });
});
