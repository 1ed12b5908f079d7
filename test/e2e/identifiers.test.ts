/**
 * Names with quotes, spaces, capitals and unicode on both sides: schemas, tables, columns,
 * indexes. plan / apply / plan again (empty) / destroy all work, and the catalogs hold the names
 * exactly.
 */
import { beforeAll, expect, test } from 'vitest';
import { expectStatus, planIds, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('identifiers');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
let dir: string;

const SCHEMA = `"Weird ""Schema"""`;

// Spec text: JS strings hold the names as SQL spells them (quoted, quotes doubled).
const TABLES = `
    unicode: {
      from: '${SCHEMA}."Ünïcode T"', to: '${SCHEMA}."Ünïcode T"',
      key: ['Mixed Case "col"'],
      where: sql\`"Mixed Case ""col""" > 0\`,
      columns: { 'Mixed Case "col"': sql\`"Mixed Case ""col"""\`, 'Naïve Name': sql\`upper("Naïve Name")\` },
    },
    natural: {
      from: '${SCHEMA}."Spaced Table"', to: '${SCHEMA}."Tårget ""Two"""',
      key: ['E-Mail Address'],
      columns: { 'E-Mail Address': sql\`"E-Mail Address"\`, 'Ü': sql\`"Ü"\` },
    },
    mirror: { from: '${SCHEMA}."Native Ü"', to: '${SCHEMA}."Native Ü"', mode: 'native' },`;

beforeAll(async () => {
  const { source, target } = dbs();
  await source.query(`CREATE SCHEMA ${SCHEMA}`);
  await source.query(`CREATE TABLE ${SCHEMA}."Ünïcode T" ("Mixed Case ""col""" int PRIMARY KEY, "Naïve Name" text, "Is Active" boolean NOT NULL DEFAULT true)`);
  await source.query(`CREATE TABLE ${SCHEMA}."Spaced Table" (id int PRIMARY KEY, "E-Mail Address" text NOT NULL, "Ü" text)`);
  await source.query(`CREATE UNIQUE INDEX "Wëird ""idx""" ON ${SCHEMA}."Spaced Table" ("E-Mail Address")`);
  await source.query(`CREATE TABLE ${SCHEMA}."Native Ü" ("Key Col" int PRIMARY KEY, "Väl" text)`);
  await source.query(`INSERT INTO ${SCHEMA}."Native Ü" VALUES (1, 'eins'), (2, 'zwei')`);
  await target.query(`CREATE SCHEMA ${SCHEMA}`);
  await target.query(`CREATE TABLE ${SCHEMA}."Ünïcode T" ("Mixed Case ""col""" int PRIMARY KEY, "Naïve Name" text)`);
  await target.query(`CREATE TABLE ${SCHEMA}."Tårget ""Two""" ("E-Mail Address" text PRIMARY KEY, "Ü" text)`);
  await target.query(`CREATE TABLE ${SCHEMA}."Native Ü" ("Key Col" int PRIMARY KEY, "Väl" text)`);
  dir = specs.write({ 'weird.sync.ts': syncSpec({ name: 'weird_names', tables: TABLES }) });
});

test('plan names every object with its exact name', async () => {
  const plan = expectStatus(await runSyncctl(['plan', dir, '--sql'], env()), 0);
  expect(planIds(plan.stdout)).toEqual([
    'schema:syncctl',
    'sync:weird_names',
    'sync-table:weird_names:unicode',
    'sync-table:weird_names:natural',
    'sync-table:weird_names:mirror',
    'replica-identity:Weird "Schema".Spaced Table',
    'publication:syncctl_weird_names',
    'publication-table:syncctl_weird_names:Weird "Schema".Ünïcode T',
    'publication-table:syncctl_weird_names:Weird "Schema".Spaced Table',
    'publication:syncctl_weird_names_native',
    'publication-table:syncctl_weird_names_native:Weird "Schema".Native Ü',
    'slot:syncctl_weird_names',
    'trigger:Weird "Schema".Ünïcode T',
    'trigger:Weird "Schema".Tårget "Two"',
    'subscription:syncctl_weird_names_native',
  ]);
  expect(plan.stdout).toContain(`| ALTER TABLE "Weird ""Schema"""."Spaced Table" REPLICA IDENTITY USING INDEX "Wëird ""idx"""`);
  expect(plan.stdout).toContain(`| ALTER PUBLICATION "syncctl_weird_names" ADD TABLE "Weird ""Schema"""."Ünïcode T" ("Mixed Case ""col""", "Naïve Name") WHERE (("Mixed Case ""col""" > 0))`);
  expect(plan.stdout).toContain(`| ALTER PUBLICATION "syncctl_weird_names" ADD TABLE "Weird ""Schema"""."Spaced Table" ("E-Mail Address", "Ü")`);
});

test('apply creates them; the catalogs hold the names exactly', async () => {
  const { source, target } = dbs();
  expectStatus(await runSyncctl(['apply', dir], env()), 0);
  expect(await rows(source, `
    SELECT pubname, schemaname, tablename, rowfilter, attnames::text[] AS attnames FROM pg_publication_tables
     WHERE pubname LIKE 'syncctl_weird_names%' ORDER BY pubname, tablename`)).toEqual([
    { pubname: 'syncctl_weird_names', schemaname: 'Weird "Schema"', tablename: 'Spaced Table', rowfilter: null, attnames: ['E-Mail Address', 'Ü'] },
    { pubname: 'syncctl_weird_names', schemaname: 'Weird "Schema"', tablename: 'Ünïcode T', rowfilter: '("Mixed Case ""col""" > 0)', attnames: ['Mixed Case "col"', 'Naïve Name'] },
    { pubname: 'syncctl_weird_names_native', schemaname: 'Weird "Schema"', tablename: 'Native Ü', rowfilter: null, attnames: ['Key Col', 'Väl'] },
  ]);
  expect(await rows(source, `
    SELECT c.relreplident, (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND i.indisreplident) AS index
      FROM pg_class c WHERE c.oid = '"Weird ""Schema"""."Spaced Table"'::regclass`)).toEqual([{ relreplident: 'i', index: 'Wëird "idx"' }]);
  const triggers = await rows<{ t: string; tgargs: Buffer }>(target, `
    SELECT tgrelid::regclass::text AS t, tgargs FROM pg_trigger WHERE tgname = 'syncctl_track' ORDER BY tgrelid::regclass::text COLLATE "C"`);
  expect(triggers.map((r) => ({ t: r.t, args: r.tgargs.toString('utf8').split('\0').slice(0, -1) }))).toEqual([
    { t: '"Weird ""Schema"""."Tårget ""Two"""', args: ['weird_names', 'Weird "Schema".Tårget "Two"', 'E-Mail Address'] },
    { t: '"Weird ""Schema"""."Ünïcode T"', args: ['weird_names', 'Weird "Schema".Ünïcode T', 'Mixed Case "col"'] },
  ]);
  expect(await rows(target, 'SELECT table_name, source_table, target_table, replica_identity_before FROM syncctl.sync_tables ORDER BY table_name')).toEqual([
    { table_name: 'mirror', source_table: '"Weird ""Schema"""."Native Ü"', target_table: '"Weird ""Schema"""."Native Ü"', replica_identity_before: null },
    { table_name: 'natural', source_table: '"Weird ""Schema"""."Spaced Table"', target_table: '"Weird ""Schema"""."Tårget ""Two"""', replica_identity_before: 'default' },
    { table_name: 'unicode', source_table: '"Weird ""Schema"""."Ünïcode T"', target_table: '"Weird ""Schema"""."Ünïcode T"', replica_identity_before: null },
  ]);
  await waitFor('the subscription to copy "Native Ü"', async () =>
    Number((await rows(target, `SELECT count(*) AS n FROM ${SCHEMA}."Native Ü"`))[0]?.['n']) === 2);
  expect(await rows(target, `SELECT "Key Col", "Väl" FROM ${SCHEMA}."Native Ü" ORDER BY 1`)).toEqual([{ 'Key Col': 1, 'Väl': 'eins' }, { 'Key Col': 2, 'Väl': 'zwei' }]);
});

test('the tracking trigger keys rows by the oddly named key column', async () => {
  const target = dbs().target;
  await target.query(`INSERT INTO ${SCHEMA}."Ünïcode T" VALUES (5, 'x')`);
  await target.query(`INSERT INTO ${SCHEMA}."Tårget ""Two""" VALUES ('ä@example.org', 'y')`);
  expect(await rows(target, 'SELECT target_table, key, operation FROM syncctl.local_changes ORDER BY target_table COLLATE "C"')).toEqual([
    { target_table: 'Weird "Schema".Tårget "Two"', key: { 'E-Mail Address': 'ä@example.org' }, operation: 'INSERT' },
    { target_table: 'Weird "Schema".Ünïcode T', key: { 'Mixed Case "col"': 5 }, operation: 'INSERT' },
  ]);
});

test('plan again is empty', async () => {
  const plan = expectStatus(await runSyncctl(['plan', dir, '--detailed-exitcode'], env()), 0);
  expect(planIds(plan.stdout)).toEqual([]);
});

test('destroy removes everything and puts the replica identity back', async () => {
  const { source, target } = dbs();
  expectStatus(await runSyncctl(['destroy', dir, '--allow-destroy'], env()), 0);
  expect(await rows(source, `SELECT pubname FROM pg_publication`)).toEqual([]);
  expect(await rows(source, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE 'syncctl%'`)).toEqual([]);
  expect(await rows(source, `SELECT relreplident FROM pg_class WHERE oid = '"Weird ""Schema"""."Spaced Table"'::regclass`)).toEqual([{ relreplident: 'd' }]);
  expect(await rows(target, `SELECT tgname FROM pg_trigger WHERE tgname = 'syncctl_track'`)).toEqual([]);
  expect(await rows(target, `SELECT subname FROM pg_subscription WHERE subname LIKE 'syncctl_weird%'`)).toEqual([]);
  expect(await rows(target, 'SELECT name FROM syncctl.syncs')).toEqual([]);
  expect(Number((await rows(target, `SELECT count(*) AS n FROM ${SCHEMA}."Native Ü"`))[0]?.['n'])).toBe(2);
  const plan = expectStatus(await runSyncctl(['plan', dir], env()), 0);
  expect(planIds(plan.stdout)).toContain('slot:syncctl_weird_names');
});
