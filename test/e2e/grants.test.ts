/**
 * `plan --grants` is enough, both directions: a role that is not a superuser, given exactly what
 * `syncctl plan --grants` prints (run by an administrator, the superuser here) and owning its
 * tables (the output's "or run apply as the owner"), applies two syncs in opposite directions
 * with origin 'none', runs both workers, and their writes are tagged with replication origins
 * (so nothing echoes); destroy drops the origins. Without the grants the role may not use
 * replication origins at all. The statements run as printed, so their function signatures are
 * checked on the server's own version (PG 15 and 18).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { destroyAll } from '../../src/plan/reconcile.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { expectStatus, rows, runSyncctl, useSpecDir, waitFor } from '../support/cli.ts';
import { getServers } from '../support/servers.ts';
import { apply, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('grants');
const specs = useSpecDir();
const ROLE = `syncctl_grants_${randomBytes(3).toString('hex')}`;
const PASSWORD = 'grants-pw-51c2';
const workers: InProcessWorker[] = [];
let dir: string;
let env: Record<string, string>;

/** A test database's URL as the role. */
const as = (url: string) => {
  const u = new URL(url);
  u.username = ROLE;
  u.password = PASSWORD;
  return u.toString();
};

const spec = (name: string, from: string, to: string, key: string) => `import { defineSync, sql, env } from 'syncctl';
export default defineSync({
  name: '${name}', source: env('${name === 'crm_to_legacy' ? 'CRM_URL' : 'LEGACY_URL'}'), target: env('${name === 'crm_to_legacy' ? 'LEGACY_URL' : 'CRM_URL'}'), origin: 'none',
  tables: {
    members: { from: '${from}', to: '${to}', key: ['${key}'],
      columns: { ${key}: sql\`${key === 'id' ? 'member_id' : 'id'}\`, email: sql\`email\` } },
  },
});
`;

beforeAll(async () => {
  // Roles are the cluster's: one on each server.
  for (const db of [dbs().source, dbs().target]) await db.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`);
  await dbs().source.query(`CREATE SCHEMA crm AUTHORIZATION ${ROLE}; CREATE TABLE crm.members (id int PRIMARY KEY, email text NOT NULL);
    ALTER TABLE crm.members OWNER TO ${ROLE}`);
  await dbs().target.query(`CREATE SCHEMA legacy AUTHORIZATION ${ROLE}; CREATE TABLE legacy.members (member_id int PRIMARY KEY, email text NOT NULL);
    ALTER TABLE legacy.members OWNER TO ${ROLE}`);
  dir = specs.write({ 'c.sync.ts': spec('crm_to_legacy', 'crm.members', 'legacy.members', 'member_id'), 'l.sync.ts': spec('legacy_to_crm', 'legacy.members', 'crm.members', 'id') });
  env = { CRM_URL: as(dbs().sourceUrl), LEGACY_URL: as(dbs().targetUrl) };
});

afterAll(async () => {
  for (const w of workers) await w.stop().catch(() => {});
  // Best effort: the role's privileges go with the test databases; the servers are the run's own.
  for (const db of [dbs().source, dbs().target]) await db.query(`DROP OWNED BY ${ROLE}; DROP ROLE ${ROLE}`).catch(() => {});
});

/** The statements of `plan --grants` for one side of one sync, as printed (comments left out). */
function statements(grants: string, sync: string, side: 'source' | 'target'): string[] {
  const lines = grants.split('\n');
  const from = lines.findIndex((l) => l.startsWith(`-- sync ${sync}: on the ${side} (`));
  expect(from, `${sync} ${side} section`).toBeGreaterThanOrEqual(0);
  const section = lines.slice(from + 1);
  return section.slice(0, section.indexOf('')).filter((l) => !l.startsWith('--'));
}

test('without the grants the role may not use replication origins', async () => {
  const role = new pg.Client({ connectionString: as(dbs().targetUrl) });
  await role.connect();
  try {
    await expect(role.query(`SELECT pg_replication_origin_create('syncctl_grants_probe')`)).rejects.toMatchObject({ code: '42501' });
    // Logical messages need no grant (PUBLIC may execute them).
    await role.query(`SELECT pg_logical_emit_message(true, 'syncctl.grants', 'probe')`);
  } finally {
    await role.end();
  }
});

test('what plan --grants prints lets a role that is not a superuser sync both ways with tagged writes, and destroy', async () => {
  const grants = expectStatus(await runSyncctl(['plan', dir, '--grants'], env), 0).stdout;
  expect(grants).toContain(`GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO "${ROLE}";`);
  // An administrator runs them: crm_to_legacy reads the CRM (source server) and writes legacy (target server); legacy_to_crm the other way.
  for (const [sync, side, db] of [['crm_to_legacy', 'source', dbs().source], ['crm_to_legacy', 'target', dbs().target],
    ['legacy_to_crm', 'source', dbs().target], ['legacy_to_crm', 'target', dbs().source]] as const) {
    for (const sql of statements(grants, sync, side)) await db.query(sql);
  }
  // The commented pg_logical_emit_message grant names this version's function.
  const emit = getServers().source.major >= 17 ? '(boolean, text, text, boolean)' : '(boolean, text, text)';
  expect(grants).toContain(`--   GRANT EXECUTE ON FUNCTION pg_logical_emit_message${emit} TO "${ROLE}";`);
  await dbs().source.query(`GRANT EXECUTE ON FUNCTION pg_logical_emit_message${emit} TO ${ROLE}`);

  const syncs: LoadedSync[] = [await loadSync(`${dir}/c.sync.ts`, env), await loadSync(`${dir}/l.sync.ts`, env)];
  for (const s of syncs) await apply(s);
  for (const s of syncs) workers.push(startWorker(s));
  await dbs().source.query(`INSERT INTO crm.members VALUES (1, 'a@crm')`);
  await dbs().target.query(`INSERT INTO legacy.members VALUES (2, 'b@legacy')`);
  await waitFor('both rows on both sides', async () =>
    (await rows(dbs().source, 'SELECT 1 FROM crm.members')).length === 2 && (await rows(dbs().target, 'SELECT 1 FROM legacy.members')).length === 2);
  // Each worker's writes carry its origins, which recorded where the source stands: the tags that keep them from coming back.
  for (const db of [dbs().source, dbs().target]) {
    await waitFor('an origin with progress', async () => (await rows<{ n: number }>(db, `SELECT count(*)::int AS n FROM pg_replication_origin o
      JOIN pg_replication_origin_status s ON s.local_id = o.roident WHERE o.roname LIKE 'syncctl\\_%' AND s.remote_lsn <> '0/0'`))[0]!.n > 0);
  }
  // Nothing echoed: each sync applied one change, the other side's own.
  const applied = async (db: pg.Client, sync: string) => (await rows<{ n: number }>(db,
    `SELECT changes_applied::int AS n FROM syncctl.sync_tables WHERE sync_name = $1`, [sync]))[0]?.n;
  await new Promise((resolve) => setTimeout(resolve, 1500));
  expect([await applied(dbs().target, 'crm_to_legacy'), await applied(dbs().source, 'legacy_to_crm')]).toEqual([1, 1]);
  for (const w of workers.splice(0)) await w.stop();
  // destroy, as the role, drops the origins too (pg_replication_origin_drop).
  await destroyAll(syncs, { allowDestroy: true });
  for (const db of [dbs().source, dbs().target]) {
    expect(await rows(db, `SELECT roname FROM pg_replication_origin WHERE roname LIKE 'syncctl\\_%\\_crm_to_legacy\\_%' OR roname LIKE 'syncctl\\_%\\_legacy_to_crm\\_%'`)).toEqual([]);
  }
});
