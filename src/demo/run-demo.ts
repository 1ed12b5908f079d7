/**
 * `syncctl demo`: the main job on an embedded default. Two local Postgres servers (source and
 * target), the scenario-1 schema of PRODUCT.md with seed data, plan and apply (with the initial
 * copy), the worker streaming, live inserts, updates and deletes seen arriving, `syncctl status`
 * with row counts, and a clean stop (or, with keep, left running with the connection strings printed).
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startLocalCluster, type LocalCluster } from '../embedded/local-cluster.ts';
import type { Logger } from '../observe/logger.ts';
import { applyAll } from '../plan/reconcile.ts';
import { renderPlanText } from '../plan/render-plan.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import { collectStatus } from '../status/collect-status.ts';
import { renderStatusText } from '../status/render-status.ts';
import { runAsLeader } from '../stream/leader.ts';
import { runWorker } from '../stream/worker.ts';

const SPECS = fileURLToPath(new URL('../../specs/laas_to_orgs.sync.ts', import.meta.url));
const SCHEMA = (file: string) => readFileSync(fileURLToPath(new URL(`../../specs/schema/${file}`, import.meta.url)), 'utf8');

export interface DemoOptions {
  readonly keep: boolean;
  readonly logger: Logger;
  readonly print: (line: string) => void;
  /** Resolves when a kept demo should stop (SIGINT). */
  readonly stopped?: Promise<void>;
}

export async function runDemo(options: DemoOptions): Promise<void> {
  const { print } = options;
  const started = Date.now();
  const clusters: LocalCluster[] = [];
  const controller = new AbortController();
  try {
    print('Starting two embedded PostgreSQL servers (source: LaaS, target: organizations)...');
    const [source, target] = await Promise.all([startLocalCluster({}), startLocalCluster({})]);
    clusters.push(source, target);
    await runSql(source.url(), SCHEMA('laas-source.sql') + SCHEMA('laas-seed.sql'));
    await runSql(target.url(), SCHEMA('orgs-target.sql'));
    const environment = { ...process.env, LAAS_DATABASE_URL: source.url(), ORGS_DATABASE_URL: target.url() };
    const syncs = await loadSpecsOutsideNodeModules(SPECS, environment);

    print('\n$ syncctl apply specs/laas_to_orgs.sync.ts');
    let copied = 0;
    await applyAll(syncs, {
      onPlan: (plans) => print(renderPlanText(plans)),
      onCopyProgress: (p) => { copied = Math.max(copied, p.rows); },
    });
    print(`\nInitial copy done. Target now holds: ${await counts(target.url())}`);

    print('\n$ syncctl run specs/   (streaming in the background)');
    let committed = 0;
    // As `syncctl run` does: the worker applies while this process holds the sync's leader lock.
    const worker = runAsLeader({
      sync: syncs[0]!, logger: options.logger, signal: controller.signal,
      lead: (epoch, lost) => runWorker({
        sync: syncs[0]!, logger: options.logger, signal: lost, leaderEpoch: epoch, onCommit: (c) => { committed += c.changes; },
      }),
    });
    const src = new pg.Client(source.url());
    await src.connect();
    try {
      const steps: [string, string, () => Promise<boolean>][] = [
        ['insert a user and a membership',
          `WITH u AS (INSERT INTO users (email, first_name, last_name) VALUES ('grace@laas.example', 'Grace', 'Hopper') RETURNING id)
           INSERT INTO institute_user SELECT 1, id, 'TEACHER', 'ACTIVE' FROM u`,
          async () => (await one(target.url(), `SELECT count(*) FROM organizations."user" WHERE email = 'grace@laas.example' AND name = 'Grace Hopper'`)) === '1'],
        ['rename a user (names are concatenated on the way)',
          `UPDATE users SET last_name = 'Hopper-Murray', updated_at = now() WHERE email = 'grace@laas.example'`,
          async () => (await one(target.url(), `SELECT name FROM organizations."user" WHERE email = 'grace@laas.example'`)) === 'Grace Hopper-Murray'],
        ['deactivate a user (the row filter removes it from the target)',
          `UPDATE users SET is_active = false WHERE email = 'user1@laas.example'`,
          async () => (await one(target.url(), `SELECT count(*) FROM organizations."user" WHERE email = 'user1@laas.example'`)) === '0'],
        ['suspend a membership (status becomes is_active = false)',
          `UPDATE institute_user SET status = 'SUSPENDED' WHERE user_id = 2`,
          async () => (await one(target.url(), `SELECT is_active::text FROM organizations.institute_users WHERE user_id = 2`)) === 'false'],
        ['delete a membership',
          `DELETE FROM institute_user WHERE user_id = 3`,
          async () => (await one(target.url(), `SELECT count(*) FROM organizations.institute_users WHERE user_id = 3`)) === '0'],
      ];
      for (const [what, statement, arrived] of steps) {
        const t0 = Date.now();
        await src.query(statement);
        await waitFor(arrived, 10_000);
        print(`  ${what}: arrived in ${Date.now() - t0} ms`);
      }
      // A person edits the target, then the source changes the same row: the table's rule
      // (last-write-wins on updated_at) decides, and the meeting is a row in sync_conflicts.
      const tgt = new pg.Client(target.url());
      await tgt.connect();
      try {
        await tgt.query(`UPDATE organizations."user" SET name = 'Grace B. Hopper', updated_at = now() + interval '1 hour' WHERE email = 'grace@laas.example'`);
        await src.query(`UPDATE users SET first_name = 'G.', updated_at = now() WHERE email = 'grace@laas.example'`);
        const conflict = `SELECT kind || ' under ' || strategy || ': ' || outcome || ', the target keeps "' || (result->>'name') || '"' ` +
          `FROM syncctl.sync_conflicts WHERE kind = 'locally_modified' AND table_name = 'users'`;
        await waitFor(async () => (await one(target.url(), conflict)) !== undefined, 10_000);
        print(`  a local edit on the target (newer) meets a source rename (older): ${await one(target.url(), conflict)}`);
      } finally {
        await tgt.end();
      }
    } finally {
      await src.end();
    }
    print(`\n${committed} change(s) streamed.`);
    print('\n$ syncctl status specs/laas_to_orgs.sync.ts --counts');
    print(renderStatusText(await collectStatus(syncs, { counts: true })));
    if (options.keep) {
      print('\nStill running (Ctrl-C stops). Connect with:');
      print(`  LAAS_DATABASE_URL=${source.url()}`);
      print(`  ORGS_DATABASE_URL=${target.url()}`);
      await options.stopped;
    }
    controller.abort();
    await worker;
    print(`\nStopped cleanly after ${((Date.now() - started) / 1000).toFixed(1)} s.`);
  } finally {
    controller.abort();
    await Promise.all(clusters.map((c) => c.stop()));
  }
}

/**
 * Node refuses to strip types under node_modules, so the demo's spec in an installed syncctl
 * (node_modules/syncctl/specs/) is loaded from a copy in a temp directory, as a user's spec would be.
 */
async function loadSpecsOutsideNodeModules(file: string, environment: NodeJS.ProcessEnv): ReturnType<typeof loadSpecs> {
  if (!file.split(path.sep).includes('node_modules')) return loadSpecs(file, environment);
  const dir = mkdtempSync(path.join(tmpdir(), 'syncctl-demo-'));
  try {
    const copy = path.join(dir, path.basename(file));
    copyFileSync(file, copy);
    return await loadSpecs(copy, environment);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function runSql(url: string, sql: string): Promise<void> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function one(url: string, sql: string): Promise<string | undefined> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    const { rows } = await client.query<{ v: unknown }>(`SELECT (${sql}) AS v`);
    return rows[0]?.v === null || rows[0]?.v === undefined ? undefined : String(rows[0].v);
  } finally {
    await client.end();
  }
}

async function counts(url: string): Promise<string> {
  const c = await one(url, `SELECT format('%s institutes, %s users, %s memberships', (SELECT count(*) FROM organizations.institute),
    (SELECT count(*) FROM organizations."user"), (SELECT count(*) FROM organizations.institute_users))`);
  return c ?? '';
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('a change did not arrive in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
