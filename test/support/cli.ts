/**
 * End-to-end helpers around the real command line: spawn `node bin/syncctl …` with an
 * environment, write spec files into a temp dir, poll until a condition holds.
 *
 *   const specs = useSpecDir();                       // temp dirs removed after the file
 *   const dir = specs.write({ 'a.sync.ts': syncSpec({ name: 'a', tables: '...' }) });
 *   const result = await runSyncctl(['plan', dir], { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll } from 'vitest';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = path.join(REPO_ROOT, 'bin', 'syncctl');

export interface CliResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the CLI as a user would. The child gets this process's environment minus vitest's own
 * variables (the spec loader behaves differently under VITEST) plus `env`.
 */
export function runSyncctl(args: readonly string[], env: Record<string, string>, options: { timeoutMs?: number } = {}): Promise<CliResult> {
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('VITEST') && name !== 'NODE_OPTIONS') childEnv[name] = value;
  }
  Object.assign(childEnv, { SYNCCTL_LOG_LEVEL: 'warn' }, env);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
  });
}

/** Throws with the CLI's output when the exit status is not the expected one. */
export function expectStatus(result: CliResult, status: number): CliResult {
  if (result.status !== status) {
    throw new Error(`expected exit ${status}, got ${result.status}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`);
  }
  return result;
}

/** The `id:` lines of a text plan, in order. */
export function planIds(stdout: string): string[] {
  return [...stdout.matchAll(/^\s+id: (.+)$/gm)].map((m) => m[1]!);
}

/** The change line (`+ source publication …`) of the change with `id` in a text plan. */
export function changeLine(stdout: string, id: string): string | undefined {
  const lines = stdout.split('\n');
  const at = lines.findIndex((line) => line.trim() === `id: ${id}`);
  return at > 0 ? lines[at - 1]!.trim() : undefined;
}

/** Temp directories for spec files, removed after the test file. */
export function useSpecDir(): { write(files: Record<string, string>): string } {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  return {
    write(files) {
      const dir = mkdtempSync(path.join(tmpdir(), 'syncctl-e2e-'));
      dirs.push(dir);
      for (const [name, text] of Object.entries(files)) {
        mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
        writeFileSync(path.join(dir, name), text);
      }
      return dir;
    },
  };
}

/** A spec file's text; `tables` is the body of the `tables: { … }` object. */
export function syncSpec(spec: { name: string; tables: string; source?: string; target?: string }): string {
  return `import { defineSync, sql, env } from 'syncctl';

export default defineSync({
  name: '${spec.name}',
  source: env('${spec.source ?? 'SRC_URL'}'),
  target: env('${spec.target ?? 'DST_URL'}'),
  tables: {
${spec.tables}
  },
});
`;
}

/** Scenario 1's three tables as in specs/laas_to_orgs.sync.ts, keyed by the spec's table names. */
export const SCENARIO_ONE_TABLES = {
  institutes: `    institutes: {
      from: 'public.institutes', to: 'organizations.institute', key: ['institute_id'],
      columns: { institute_id: sql\`id\`, name: sql\`name\`, image_url: sql\`"imageUrl"\`, updated_at: sql\`updated_at\` },
    },`,
  users: `    users: {
      from: 'public.users', to: 'organizations.user', where: sql\`is_active AND email IS NOT NULL\`, key: ['email'],
      columns: { email: sql\`email\`, name: sql\`concat(first_name, ' ', last_name)\`, updated_at: sql\`updated_at\` },
      conflict: { strategy: 'last-write-wins', column: 'updated_at' },
    },`,
  memberships: `    memberships: {
      from: 'public.institute_user', to: 'organizations.institute_users', key: ['institute_id', 'user_id'],
      columns: {
        institute_id: sql\`institute_id\`, user_id: sql\`user_id\`,
        role: sql\`CASE user_type WHEN 'TEACHER' THEN 'FACULTY' WHEN 'INSTRUCTOR' THEN 'FACULTY' WHEN 'ADMIN' THEN 'ADMIN' ELSE 'STUDENT' END\`,
        is_active: sql\`status = 'ACTIVE'\`,
      },
      conflict: { strategy: 'manual' },
    },`,
} as const;

export function scenarioOneSpec(name: string, tables: readonly (keyof typeof SCENARIO_ONE_TABLES)[] = ['institutes', 'users', 'memberships']): string {
  return syncSpec({ name, tables: tables.map((t) => SCENARIO_ONE_TABLES[t]).join('\n') });
}

/** Loads specs/schema/laas-source.sql into the source and orgs-target.sql into the target. */
export async function loadScenarioOneSchema(db: { source: pg.Client; target: pg.Client }): Promise<void> {
  await db.source.query(readFileSync(path.join(REPO_ROOT, 'specs/schema/laas-source.sql'), 'utf8'));
  await db.target.query(readFileSync(path.join(REPO_ROOT, 'specs/schema/orgs-target.sql'), 'utf8'));
}

/** Polls `check` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Rows of a query as plain objects. */
export async function rows<T extends pg.QueryResultRow = Record<string, unknown>>(client: pg.Client, sql: string, params: unknown[] = []): Promise<T[]> {
  return (await client.query<T>(sql, params)).rows;
}
