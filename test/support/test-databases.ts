/**
 * A fresh pair of databases per test file: one on the source server, one on the target server.
 *
 *   const dbs = useTestDatabases('plan');
 *   // in a test: await dbs().source.query('...'); run(dbs().sourceUrl, dbs().targetUrl);
 *
 * `drop()` removes whatever logical replication left behind (subscriptions, replication slots,
 * walsenders) so DROP DATABASE cannot be blocked, then drops both databases.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { getServers, serverUrl, type ServerInfo } from './servers.ts';

export interface TestDatabases {
  readonly sourceUrl: string;
  readonly targetUrl: string;
  readonly sourceDatabase: string;
  readonly targetDatabase: string;
  /** Connected to the source test database as superuser. */
  readonly source: pg.Client;
  /** Connected to the target test database as superuser. */
  readonly target: pg.Client;
  /** Drops both databases and everything that would block that. Idempotent. */
  drop(): Promise<void>;
}

function databaseName(label: string): string {
  const clean = label.toLowerCase().replace(/[^a-z0-9_]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 40) || 'db';
  return `t_${clean}_${randomBytes(4).toString('hex')}`;
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

async function withClient<T>(server: ServerInfo, database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: serverUrl(server, database) });
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  // A test that kills backends must not crash the worker through an unhandled 'error' event.
  client.on('error', () => {});
  await client.connect();
  return client;
}

export async function createTestDatabases(label: string): Promise<TestDatabases> {
  const servers = getServers();
  const sourceDatabase = databaseName(label);
  const targetDatabase = databaseName(label);
  const created: Array<[ServerInfo, string]> = [];
  const clients: pg.Client[] = [];
  const dropAll = async (): Promise<void> => {
    await Promise.allSettled(clients.map((client) => client.end()));
    const errors: unknown[] = [];
    // Target first: its subscriptions hold walsenders and slots on the source server.
    for (const [server, database] of [...created].reverse()) {
      try {
        await dropDatabase(server, database);
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, `Could not drop test databases ${sourceDatabase}/${targetDatabase}`);
  };

  try {
    await withClient(servers.source, 'postgres', (client) => client.query(`CREATE DATABASE ${ident(sourceDatabase)}`));
    created.push([servers.source, sourceDatabase]);
    await withClient(servers.target, 'postgres', (client) => client.query(`CREATE DATABASE ${ident(targetDatabase)}`));
    created.push([servers.target, targetDatabase]);
    const sourceUrl = serverUrl(servers.source, sourceDatabase);
    const targetUrl = serverUrl(servers.target, targetDatabase);
    const source = await connect(sourceUrl);
    clients.push(source);
    const target = await connect(targetUrl);
    clients.push(target);
    let dropping: Promise<void> | undefined;
    return {
      sourceUrl,
      targetUrl,
      sourceDatabase,
      targetDatabase,
      source,
      target,
      drop() {
        dropping ??= dropAll();
        return dropping;
      },
    };
  } catch (error) {
    await dropAll().catch(() => {});
    throw error;
  }
}

/** Drops one test database after removing subscriptions and replication slots that block it. */
async function dropDatabase(server: ServerInfo, database: string): Promise<void> {
  // 1. Subscriptions living in the database: detach them from their remote slot, then drop.
  const exists = await withClient(server, 'postgres', async (client) => {
    const result = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    return result.rowCount === 1;
  });
  if (exists) {
    await withClient(server, database, async (client) => {
      const subscriptions = await client.query<{ subname: string }>(
        'SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())',
      );
      for (const { subname } of subscriptions.rows) {
        await client.query(`ALTER SUBSCRIPTION ${ident(subname)} DISABLE`);
        await client.query(`ALTER SUBSCRIPTION ${ident(subname)} SET (slot_name = NONE)`);
        await client.query(`DROP SUBSCRIPTION ${ident(subname)}`);
      }
    });
  }

  await withClient(server, 'postgres', async (client) => {
    // 2. Replication slots of the database (left by subscriptions elsewhere or made by tests):
    //    end the walsenders/backends holding them, then drop them. Termination is asynchronous,
    //    so retry while a slot is still active.
    for (let attempt = 0; ; attempt++) {
      const slots = await client.query<{ slot_name: string; active_pid: number | null }>(
        'SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1',
        [database],
      );
      if (slots.rows.length === 0) break;
      let pending = false;
      for (const slot of slots.rows) {
        if (slot.active_pid !== null) await client.query('SELECT pg_terminate_backend($1)', [slot.active_pid]);
        try {
          await client.query('SELECT pg_drop_replication_slot($1)', [slot.slot_name]);
        } catch (error) {
          if (attempt >= 50) throw error;
          pending = true;
        }
      }
      if (pending) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // 3. The database itself; FORCE ends the remaining connections.
    await client.query(`DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`);
  });
}

/**
 * Registers `beforeAll`/`afterAll` in the calling test file: a fresh database pair for the file,
 * dropped after its tests (also when they fail). Returns a getter for use inside tests.
 */
export function useTestDatabases(label: string): () => TestDatabases {
  let databases: TestDatabases | undefined;
  beforeAll(async () => {
    databases = await createTestDatabases(label);
  });
  afterAll(async () => {
    await databases?.drop();
  });
  return () => {
    if (!databases) throw new Error('Test databases not ready: use dbs() inside tests or hooks, not at module level');
    return databases;
  };
}

/** Same as `useTestDatabases`. */
export const withTestDatabases = useTestDatabases;
