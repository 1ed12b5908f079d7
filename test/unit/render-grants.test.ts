/** `plan --grants`: the privileges each role needs, both directions included (test/e2e/grants.test.ts runs them). */
import { expect, test } from 'vitest';
import { renderGrants } from '../../src/plan/render-grants.ts';
import type { LoadedSync, LoadedTable } from '../../src/spec/loaded-sync.ts';

const table = (source: string, target: string): LoadedTable => ({
  name: 'members', source: { schema: source.split('.')[0]!, name: source.split('.')[1]! }, target: { schema: target.split('.')[0]!, name: target.split('.')[1]! },
  mode: 'mapped', key: ['id'], columns: [], conflict: { strategy: 'source-wins' }, truncate: 'apply', onError: 'park', replicaIdentity: 'auto',
});
const sync = (name: string, from: string, to: string, t: LoadedTable, origin?: 'none'): LoadedSync => ({
  file: `/specs/${name}.sync.ts`, name, sourceUrl: `postgres://${from}:secret@a:5432/${from}db`, targetUrl: `postgres://${to}:secret@b:5432/${to}db`,
  sourceEnv: `${from.toUpperCase()}_URL`, targetEnv: `${to.toUpperCase()}_URL`, tables: [t], ...(origin ? { origin } : {}),
});

test('both directions: each target role may use replication origins; each source role may emit logical messages', () => {
  const out = renderGrants([
    sync('crm_to_legacy', 'crm', 'legacy', table('crm.members', 'legacy.members'), 'none'),
    sync('legacy_to_crm', 'legacy', 'crm', table('legacy.members', 'crm.members'), 'none'),
  ]);
  expect(out.split('\n').slice(0, 23)).toEqual([
    '-- sync crm_to_legacy: on the source (CRM_URL)',
    'ALTER ROLE "crm" WITH REPLICATION;  -- read the replication slot',
    'GRANT CREATE ON DATABASE "crmdb" TO "crm";  -- CREATE PUBLICATION',
    'GRANT SELECT ON "crm"."members" TO "crm";',
    '-- Postgres requires ownership of a table to add it to a publication or change its replica identity:',
    '--   ALTER TABLE "crm"."members" OWNER TO "crm";  (or run apply as the owner)',
    '-- pg_logical_emit_message (run\'s heartbeats, verify\'s barrier, verify --repair\'s rows) is executable by every role;',
    '-- only where EXECUTE was revoked from PUBLIC does it need, as on PostgreSQL 15-16 and 17+ respectively:',
    '--   GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO "crm";',
    '--   GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text, boolean) TO "crm";',
    '',
    '-- sync crm_to_legacy: on the target (LEGACY_URL)',
    'GRANT CREATE ON DATABASE "legacydb" TO "legacy";  -- the syncctl schema',
    'GRANT USAGE ON SCHEMA "legacy" TO "legacy";',
    'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER ON "legacy"."members" TO "legacy";',
    '-- origin \'none\': the worker tags its writes with replication origins (syncctl_<database oid>_<sync>_<n>), so that the sync',
    '-- reading this database the other way does not send them back; Postgres lets only superusers use origins unless granted:',
    'GRANT EXECUTE ON FUNCTION pg_replication_origin_oid(text) TO "legacy";  -- is the session\'s origin there',
    'GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO "legacy";  -- one per worker session, the first time',
    'GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO "legacy";  -- the session\'s writes carry it',
    'GRANT EXECUTE ON FUNCTION pg_replication_origin_session_reset() TO "legacy";  -- and stop carrying it',
    'GRANT EXECUTE ON FUNCTION pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone) TO "legacy";  -- each commit records the source LSN and commit time',
    'GRANT EXECUTE ON FUNCTION pg_replication_origin_drop(text) TO "legacy";  -- syncctl destroy drops the origins',
  ]);
  // The other direction: the CRM's role gets the origin grants on the CRM.
  expect(out).toContain('-- sync legacy_to_crm: on the target (CRM_URL)');
  expect(out).toContain('GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO "crm";');
});

test('a sync that lets every origin through (the default) uses none: no origin grants', () => {
  const out = renderGrants([sync('one_way', 'crm', 'legacy', table('crm.members', 'legacy.members'))]);
  expect(out).not.toContain('pg_replication_origin');
  expect(out).toContain('pg_logical_emit_message');
});
