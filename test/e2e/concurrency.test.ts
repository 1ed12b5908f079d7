/** Two applies at once on the same specs: the advisory lock serialises them; one applies, the other finds nothing to do. */
import { beforeAll, expect, test } from 'vitest';
import { expectStatus, loadScenarioOneSchema, planIds, rows, runSyncctl, scenarioOneSpec, useSpecDir } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('concurrency');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
let dir: string;

beforeAll(async () => {
  await loadScenarioOneSchema(dbs());
  dir = specs.write({ 'laas.sync.ts': scenarioOneSpec('laas_to_orgs') });
});

test('two applies started together: both exit 0, exactly one applies the changes', async () => {
  const results = await Promise.all([runSyncctl(['apply', dir], env()), runSyncctl(['apply', dir], env())]);
  for (const result of results) expectStatus(result, 0);
  const applied = results.filter((r) => r.stdout.includes('Apply complete:'));
  const idle = results.filter((r) => r.stdout.includes('No changes. Nothing to apply.'));
  expect(applied).toHaveLength(1);
  expect(idle).toHaveLength(1);
  expect(planIds(idle[0]!.stdout)).toEqual([]);
  for (const result of results) expect(result.stderr).not.toMatch(/error|warning/i);

  // Everything exists once.
  expect(await rows(dbs().source, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database()`)).toEqual([{ slot_name: 'syncctl_laas_to_orgs' }]);
  expect(await rows(dbs().target, `SELECT id FROM syncctl.migrations ORDER BY id`)).toEqual([{ id: 0 }, { id: 1 }, { id: 2 }, { id: 3 }, { id: 4 }, { id: 5 }, { id: 6 }, { id: 7 }, { id: 8 }, { id: 9 }, { id: 10 }]);
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'syncctl_track'`)).toEqual([{ n: 3 }]);
  expectStatus(await runSyncctl(['plan', dir, '--detailed-exitcode'], env()), 0);
});

test('two destroys started together: both exit 0, one removes everything', async () => {
  const results = await Promise.all([
    runSyncctl(['destroy', dir, '--allow-destroy'], env()),
    runSyncctl(['destroy', dir, '--allow-destroy'], env()),
  ]);
  for (const result of results) expectStatus(result, 0);
  expect(results.filter((r) => r.stdout.includes('Destroy complete:'))).toHaveLength(1);
  expect(results.filter((r) => r.stdout.includes('No changes. Nothing to destroy.'))).toHaveLength(1);
  expect(await rows(dbs().source, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database()`)).toEqual([]);
  expect(await rows(dbs().source, `SELECT pubname FROM pg_publication`)).toEqual([]);
});
