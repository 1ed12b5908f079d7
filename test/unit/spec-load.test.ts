/** loadSpecs on valid specs: the LoadedSync it produces, env() resolution, discovery, secrecy. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { formatProblem, SyncctlError } from '../../src/errors.ts';
import { sql } from '../../src/index.ts';
import { loadSpecs } from '../../src/spec/load-specs.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';

const validDir = fileURLToPath(new URL('../fixtures/specs/valid', import.meta.url));

const environment = {
  LAAS_DATABASE_URL: 'postgres://laas:laas-pw@laas.example/laas',
  ORGS_DATABASE_URL: 'postgres://orgs:orgs-pw@orgs.example/orgs',
  CATALOG_DATABASE_URL: 'postgres://cat:cat-pw@catalog.example/catalog',
  REPLICA_DATABASE_URL: 'postgres://rep:rep-pw@replica.example/catalog',
  BILLING_DATABASE_URL: 'postgres://bill:bill-pw@billing.example/billing',
  LEGACY_DATABASE_URL: 'postgres://legacy:legacy-pw@legacy.example/legacy',
  CRM_DATABASE_URL: 'postgres://crm:crm-pw@crm.example/crm',
  AUTH_DATABASE_URL: 'postgres://auth:auth-pw@auth.example/auth',
};

const tmpDirs: string[] = [];
afterAll(() => {
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true });
});

/** Writes spec files into a fresh directory under the OS temp dir (outside the package). */
function specDir(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'syncctl-spec-'));
  tmpDirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

function spec(body: { name: string; source?: string; target?: string; tables: string }): string {
  return `import { defineSync, sql, env } from 'syncctl';
export default defineSync({
  name: '${body.name}',
  source: env('${body.source ?? 'SRC_URL'}'),
  target: env('${body.target ?? 'DST_URL'}'),
  tables: { ${body.tables} },
});
`;
}

const usersTable = `users: { from: 'public.users', to: 'crm.users', key: ['email'], columns: { email: sql\`email\` } }`;

async function loadError(target: string, env: NodeJS.ProcessEnv): Promise<SyncctlError> {
  const error = await loadSpecs(target, env).then(() => undefined, (thrown: unknown) => thrown);
  if (!(error instanceof SyncctlError)) throw new Error(`expected a SyncctlError, got ${String(error)}`);
  return error;
}

const laas: LoadedSync = {
  file: path.join(validDir, 'laas.sync.ts'),
  name: 'laas_to_orgs',
  sourceUrl: environment.LAAS_DATABASE_URL,
  targetUrl: environment.ORGS_DATABASE_URL,
  sourceEnv: 'LAAS_DATABASE_URL',
  targetEnv: 'ORGS_DATABASE_URL',
  tables: [
    {
      name: 'institutes',
      source: { schema: 'public', name: 'institutes' },
      target: { schema: 'organizations', name: 'institute' },
      mode: 'mapped',
      key: ['institute_id'],
      columns: [
        { target: 'institute_id', expression: 'id' },
        { target: 'name', expression: 'name' },
        { target: 'image_url', expression: '"imageUrl"' },
        { target: 'updated_at', expression: 'updated_at' },
      ],
      conflict: { strategy: 'source-wins' },
      truncate: 'apply',
      onError: 'park',
      replicaIdentity: 'auto',
    },
    {
      name: 'users',
      source: { schema: 'public', name: 'users' },
      target: { schema: 'organizations', name: 'user' },
      mode: 'mapped',
      key: ['email'],
      columns: [
        { target: 'email', expression: 'email' },
        { target: 'name', expression: "concat(first_name, ' ', last_name)" },
        { target: 'updated_at', expression: 'updated_at' },
      ],
      where: 'is_active AND email IS NOT NULL',
      conflict: { strategy: 'last-write-wins', column: 'updated_at' },
      truncate: 'apply',
      onError: 'park',
      replicaIdentity: 'auto',
    },
    {
      name: 'memberships',
      source: { schema: 'public', name: 'institute_user' },
      target: { schema: 'organizations', name: 'institute_users' },
      mode: 'mapped',
      key: ['institute_id', 'user_id'],
      columns: [
        { target: 'institute_id', expression: 'institute_id' },
        { target: 'user_id', expression: 'user_id' },
        {
          target: 'role',
          expression: `CASE user_type WHEN 'TEACHER' THEN 'FACULTY' WHEN 'INSTRUCTOR' THEN 'FACULTY'
                   WHEN 'ADMIN' THEN 'ADMIN' ELSE 'STUDENT' END`,
        },
        { target: 'is_active', expression: "status = 'ACTIVE'" },
      ],
      conflict: { strategy: 'manual' },
      truncate: 'apply',
      onError: 'park',
      replicaIdentity: 'auto',
    },
  ],
};

const mirror: LoadedSync = {
  file: path.join(validDir, 'mirror.sync.ts'),
  name: 'catalog_mirror',
  sourceUrl: environment.CATALOG_DATABASE_URL,
  targetUrl: environment.REPLICA_DATABASE_URL,
  sourceEnv: 'CATALOG_DATABASE_URL',
  targetEnv: 'REPLICA_DATABASE_URL',
  tables: [
    {
      name: 'products',
      source: { schema: 'catalog', name: 'products' },
      target: { schema: 'catalog', name: 'products' },
      mode: 'native',
      key: [],
      columns: [],
      where: 'discontinued_at IS NULL',
      conflict: { strategy: 'source-wins' },
      truncate: 'ignore',
      onError: 'stop',
      replicaIdentity: 'full',
    },
    {
      name: 'price_history',
      source: { schema: 'catalog', name: 'price_history' },
      target: { schema: 'catalog', name: 'price_history' },
      mode: 'native',
      key: ['product_id', 'valid_from'],
      columns: [],
      conflict: { strategy: 'source-wins' },
      truncate: 'apply',
      onError: 'park',
      replicaIdentity: 'auto',
    },
  ],
};

const weirdNames: LoadedSync = {
  file: path.join(validDir, 'weird-names.sync.ts'),
  name: 'weird_names_2',
  sourceUrl: environment.LEGACY_DATABASE_URL,
  targetUrl: environment.CRM_DATABASE_URL,
  sourceEnv: 'LEGACY_DATABASE_URL',
  targetEnv: 'CRM_DATABASE_URL',
  tables: [
    {
      name: 'Ünïcode table',
      source: { schema: 'Weird Schema', name: 'Ünïcode "T"' },
      target: { schema: 'CRM', name: 'Members.v2' },
      mode: 'mapped',
      key: ['Member Id', 'e"mail'],
      columns: [
        { target: 'Member Id', expression: '"Id"' },
        { target: 'e"mail', expression: 'lower("E-Mail")' },
        { target: 'status', expression: `CASE WHEN "Active" THEN 'active' ELSE 'inactive' END` },
        { target: 'naïve_column', expression: '"Naïve"' },
      ],
      conflict: { strategy: 'fields', owners: { 'e"mail': 'target', status: 'source' }, default: 'source' },
      truncate: 'apply',
      onError: 'park',
      replicaIdentity: 'auto',
    },
    {
      name: 'accounts',
      source: { schema: 'public', name: 'accounts' },
      target: { schema: 'sales', name: 'Accounts' },
      mode: 'mapped',
      key: ['id'],
      columns: [
        { target: 'id', expression: 'id' },
        { target: 'balance', expression: 'balance' },
      ],
      conflict: { strategy: 'merge', columns: { balance: sql`greatest(incoming.balance, current.balance)` } },
      truncate: 'apply',
      onError: 'park',
      replicaIdentity: 'auto',
    },
  ],
};

describe('valid fixtures', () => {
  test('a directory loads every *.sync.ts below it, sorted by relative path', async () => {
    const syncs = await loadSpecs(validDir, environment);
    expect(syncs.map((sync) => path.relative(validDir, sync.file))).toEqual([
      'laas.sync.ts',
      'mirror.sync.ts',
      path.join('nested', 'billing.sync.ts'),
      'users-fanout.sync.ts',
      'weird-names.sync.ts',
    ]);
  });

  test('one source table feeds several mapped tables, each with its own target, key, columns and filter', async () => {
    const [sync] = await loadSpecs(path.join(validDir, 'users-fanout.sync.ts'), environment);
    expect(sync!.tables.map((t) => ({ name: t.name, source: t.source, target: t.target, mode: t.mode, key: t.key, where: t.where }))).toStrictEqual([
      { name: 'users', source: { schema: 'public', name: 'users' }, target: { schema: 'organizations', name: 'user' }, mode: 'mapped',
        key: ['email'], where: 'is_active AND email IS NOT NULL' },
      { name: 'user_auth', source: { schema: 'public', name: 'users' }, target: { schema: 'organizations', name: 'user_auth' }, mode: 'mapped',
        key: ['email'], where: 'is_active AND email IS NOT NULL AND password_hash IS NOT NULL' },
    ]);
    expect(sync!.tables[1]!.columns).toEqual([{ target: 'email', expression: 'email' }, { target: 'password_hash', expression: 'password_hash' }]);
  });

  test('the PRODUCT.md example loads into the expected LoadedSync', async () => {
    const syncs = await loadSpecs(validDir, environment);
    expect(syncs[0]).toStrictEqual(laas);
  });

  test('native tables: no columns, key [] when none is given, options carried through', async () => {
    const syncs = await loadSpecs(path.join(validDir, 'mirror.sync.ts'), environment);
    expect(syncs).toStrictEqual([mirror]);
  });

  test('names with quotes, spaces, capitals, dots and unicode are parsed; unquoted names fold to lower case', async () => {
    const syncs = await loadSpecs(path.join(validDir, 'weird-names.sync.ts'), environment);
    expect(syncs).toStrictEqual([weirdNames]);
  });

  test('the same table name in another target database is another table', async () => {
    const syncs = await loadSpecs(validDir, environment);
    const billing = syncs.find((sync) => sync.name === 'orgs_to_billing')!;
    expect(billing.tables[0]!.target).toEqual(laas.tables[1]!.target);
    expect(billing.targetEnv).not.toBe(laas.targetEnv);
    expect(billing.tables[0]!.conflict).toEqual({ strategy: 'target-wins' });
  });

  test('loading the same directory twice gives the same result', async () => {
    const first = await loadSpecs(validDir, environment);
    const second = await loadSpecs(validDir, environment);
    expect(second).toStrictEqual(first);
    expect(second[0]).toStrictEqual(laas);
  });

  test('a relative directory names files relative to it in problems; LoadedSync.file is absolute', async () => {
    const relative = path.relative(process.cwd(), validDir);
    const error = await loadError(relative, {});
    expect(error.problems[0]!.file).toBe(path.join(relative, 'laas.sync.ts'));
    const syncs = await loadSpecs(relative, environment);
    expect(syncs[0]!.file).toBe(laas.file);
  });
});

describe('env()', () => {
  test('resolves from the given environment, not process.env', async () => {
    const dir = specDir({ 'a.sync.ts': spec({ name: 'a', tables: usersTable }) });
    const [sync] = await loadSpecs(dir, { SRC_URL: 'postgres://one', DST_URL: 'postgres://two' });
    expect(sync).toMatchObject({ sourceUrl: 'postgres://one', targetUrl: 'postgres://two', sourceEnv: 'SRC_URL', targetEnv: 'DST_URL' });
  });

  test('unset variables are ENV_MISSING problems naming the variable, for every file', async () => {
    const dir = specDir({
      'a.sync.ts': spec({ name: 'a', tables: usersTable }),
      'b.sync.ts': spec({ name: 'b', source: 'DST_URL', target: 'OTHER_URL', tables: usersTable }),
    });
    const error = await loadError(dir, { DST_URL: 'postgres://two', OTHER_URL: '' });
    expect(error.code).toBe('ENV_MISSING');
    expect(error.problems.map((problem) => formatProblem(problem).replaceAll(dir + path.sep, ''))).toEqual([
      'a.sync.ts: source: environment variable SRC_URL is not set',
      'b.sync.ts: target: environment variable OTHER_URL is empty',
    ]);
  });

  test('env problems together with other problems make SPEC_INVALID, carrying all of them', async () => {
    const dir = specDir({ 'a.sync.ts': spec({ name: 'A', tables: usersTable }) });
    const error = await loadError(dir, { DST_URL: 'postgres://two' });
    expect(error.code).toBe('SPEC_INVALID');
    expect(error.problems.map((problem) => `${problem.path}: ${problem.message}`)).toEqual([
      'name: expected lower-case letters, digits and underscores, starting with a letter (it names a replication slot)',
      'source: environment variable SRC_URL is not set',
    ]);
  });

  test('a connection string never appears in an error, even when the spec is invalid', async () => {
    const password = 'Sup3r-S3cret-Pa55';
    const url = `postgres://admin:${password}@db.internal:5432/prod?sslmode=require`;
    const dir = specDir({
      'a.sync.ts': spec({ name: 'secret_test', tables: `users: { from: 'public.users', to: 'crm.users', key: ['email'], columns: { email: 'email' }, truncate: 'sometimes' }` }),
      // A value where a name belongs: must not be echoed either.
      'b.sync.ts': spec({ name: 'secret_test_b', source: url, tables: usersTable }),
      'c.sync.ts': spec({ name: 'secret_test_c', source: url, target: url, tables: usersTable.replace("'crm.users'", "'public.users'") }),
    });
    const error = await loadError(dir, { SRC_URL: url, DST_URL: url });
    expect(error.code).toBe('SPEC_INVALID');
    expect(error.problems.length).toBe(5);
    const everything = [error.message, String(error), error.stack ?? '', JSON.stringify(error.problems), JSON.stringify(error.details), ...error.problems.map(formatProblem)].join('\n');
    expect(everything).not.toContain(password);
    expect(everything).not.toContain('db.internal');
  });
});

describe('discovery', () => {
  test('spec files outside the package resolve `syncctl` to this copy', async () => {
    const dir = specDir({ 'deep/er/a.sync.ts': spec({ name: 'outside', tables: usersTable }) });
    expect(dir.startsWith(path.resolve(fileURLToPath(new URL('../..', import.meta.url))))).toBe(false);
    const [sync] = await loadSpecs(dir, { SRC_URL: 'x', DST_URL: 'y' });
    expect(sync!.tables[0]!.columns).toEqual([{ target: 'email', expression: 'email' }]);
  });

  test('one file can be loaded on its own, whatever its name', async () => {
    const dir = specDir({ 'one.ts': spec({ name: 'one', tables: usersTable }) });
    const syncs = await loadSpecs(path.join(dir, 'one.ts'), { SRC_URL: 'x', DST_URL: 'y' });
    expect(syncs.map((sync) => sync.name)).toEqual(['one']);
  });

  test('node_modules and dot-directories are skipped; other files are ignored', async () => {
    const broken = 'throw new Error("must not be loaded");\n';
    const dir = specDir({
      'a.sync.ts': spec({ name: 'a', tables: usersTable }),
      'helpers.ts': broken,
      'node_modules/pkg/x.sync.ts': broken,
      '.cache/y.sync.ts': broken,
    });
    const syncs = await loadSpecs(dir, { SRC_URL: 'x', DST_URL: 'y' });
    expect(syncs.map((sync) => sync.name)).toEqual(['a']);
  });

  test('a directory without spec files is SPEC_INVALID naming the directory', async () => {
    const dir = specDir({ 'readme.md': '# nothing here\n', 'node_modules/x.sync.ts': '' });
    const error = await loadError(dir, {});
    expect(error.code).toBe('SPEC_INVALID');
    expect(error.message).toContain(dir);
    expect(error.problems).toEqual([{ file: dir, message: 'expected at least one *.sync.ts file in this directory' }]);
  });

  test('a path that does not exist is SPEC_INVALID naming it', async () => {
    const missing = path.join(tmpdir(), 'syncctl-does-not-exist', 'specs');
    const error = await loadError(missing, {});
    expect(error.code).toBe('SPEC_INVALID');
    expect(error.problems).toEqual([{ file: missing, message: 'no such file or directory' }]);
  });

  test('load failures alone are SPEC_LOAD_FAILED; every file is reported', async () => {
    const dir = specDir({
      'a.sync.ts': 'throw new RangeError("first line\\nsecond line");\n',
      'b.sync.ts': 'const x = 1;\nconst x = 2;\nexport default x;\n',
    });
    const error = await loadError(dir, {});
    expect(error.code).toBe('SPEC_LOAD_FAILED');
    expect(error.problems.map((problem) => formatProblem(problem).replaceAll(dir + path.sep, ''))).toEqual([
      'a.sync.ts: failed to load: RangeError: first line',
      "b.sync.ts: failed to load: SyntaxError: Identifier 'x' has already been declared",
    ]);
  });

  test('a relative import inside a spec works', async () => {
    const dir = specDir({
      'shared/columns.ts': "import { sql } from 'syncctl';\nexport const email = sql`lower(email)`;\n",
      'a.sync.ts': spec({ name: 'a', tables: usersTable }).replace("from 'syncctl';", "from 'syncctl';\nimport { email } from './shared/columns.ts';").replace('sql`email` }', 'email }'),
    });
    const [sync] = await loadSpecs(dir, { SRC_URL: 'x', DST_URL: 'y' });
    expect(sync!.tables[0]!.columns).toEqual([{ target: 'email', expression: 'lower(email)' }]);
  });

  test('a spec and its helper load as ES modules in a package.json with "type": "commonjs" (what npm init writes)', async () => {
    const dir = specDir({
      'package.json': '{ "name": "users-project", "type": "commonjs" }\n',
      'shared/columns.ts': "import { sql } from 'syncctl';\nexport const email = sql`lower(email)`;\n",
      'a.sync.ts': spec({ name: 'a', tables: usersTable }).replace("from 'syncctl';", "from 'syncctl';\nimport { email } from './shared/columns.ts';").replace('sql`email` }', 'email }'),
    });
    const [sync] = await loadSpecs(dir, { SRC_URL: 'x', DST_URL: 'y' });
    expect(sync!.tables[0]!.columns).toEqual([{ target: 'email', expression: 'lower(email)' }]);
  });
});
