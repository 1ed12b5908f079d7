/** `syncctl verify` without a database: the shape of a table, its SQL, the comparison of rows, repair messages and the text form. */
import { describe, expect, test } from 'vitest';
import type { ResolvedTable } from '../../src/plan/plan-sync.ts';
import type { CopyPath } from '../../src/snapshot/source-evaluation.ts';
import { compareRows } from '../../src/verify/recheck.ts';
import {
  directRowSource, hashable, renderBucketRows, renderRowsByKey, renderShipByKey, renderStagedDiff, renderBucketSummary, targetRowSource,
} from '../../src/verify/render-verify-sql.ts';
import { nativeIdentity } from '../../src/verify/native-mirror.ts';
import { describeDifference, renderVerificationText } from '../../src/verify/render-verification.ts';
import { bucketCount } from '../../src/verify/scan-table.ts';
import { repairMessages } from '../../src/verify/send-repair.ts';
import type { SyncVerification } from '../../src/verify/verification.ts';
import { notMirrored } from '../../src/verify/subscription-position.ts';
import { buildVerifyShape, type VerifyShape } from '../../src/verify/verify-shape.ts';
import { applierOf } from '../../src/verify/worker-position.ts';

const column = (name: string, type: string, attnum: number) => ({
  name, attnum, type, typeOid: 25, typeSchema: 'pg_catalog', typeName: type, notNull: true, hasDefault: false, generated: false, identity: false,
});

/** users(id, email, first, last, active) -> people(email, name, active), keyed by email, filtered by the worker. */
function resolved(conflict: ResolvedTable['table']['conflict'] = { strategy: 'source-wins' }): ResolvedTable {
  const facts = (schema: string, name: string, columns: ReturnType<typeof column>[]) => ({
    name: { schema, name }, oid: 1, kind: 'table' as const, columns, replicaIdentity: 'default' as const, replicaIdentityColumns: [], primaryKey: [],
    uniqueIndexes: [], canSelect: true, canWrite: true, isOwner: true,
  });
  return {
    table: {
      name: 'people', source: { schema: 'public', name: 'users' }, target: { schema: 'orgs', name: 'people' }, mode: 'mapped', key: ['email'],
      columns: [{ target: 'email', expression: 'email' }, { target: 'name', expression: `concat(first, ' ', last)` }, { target: 'active', expression: 'active' }],
      where: 'active', conflict, truncate: 'apply', onError: 'park', replicaIdentity: 'auto',
    } as ResolvedTable['table'],
    key: ['email'],
    decision: { identityColumns: ['id'], filterAt: 'worker' },
    columnsRead: new Map([['email', ['email']], ['name', ['first', 'last']], ['active', ['active']]]),
    whereColumnsRead: ['active'],
    stagingTypes: new Map([['id', 'integer'], ['email', 'text'], ['first', 'text'], ['last', 'text'], ['active', 'boolean']]),
    sourceFacts: facts('public', 'users', [column('id', 'integer', 1), column('email', 'text', 2), column('first', 'text', 3), column('last', 'text', 4), column('active', 'boolean', 5)]),
    targetFacts: facts('orgs', 'people', [column('email', 'text', 1), column('name', 'text', 2), column('active', 'boolean', 3)]),
  };
}

const direct: CopyPath = {
  direct: true, reason: 'same', filter: 'coalesce((active), false)',
  columns: [{ target: 'email', select: '(email)' }, { target: 'name', select: `(concat(first, ' ', last))` }, { target: 'active', select: '(active)' }],
};
const staged: CopyPath = { direct: false, reason: 'calls f(), which is not built in' };
const shapeOf = (path: CopyPath, r = resolved()) => buildVerifyShape(r, path) as VerifyShape;

describe('buildVerifyShape', () => {
  test('direct: each column as the probe computes it on the source, the worker filter in the WHERE', () => {
    const shape = shapeOf(direct);
    expect(shape.key).toEqual([{ name: 'email', type: 'text' }]);
    expect(shape.columns.map((c) => c.name)).toEqual(['email', 'name', 'active']);
    expect(shape.source).toMatchObject({ kind: 'direct', where: 'coalesce((active), false)' });
    expect(shape.sourceColumns).toEqual(['id', 'email', 'first', 'last', 'active']);
  });

  test('staged: the columns read, the filter for the target, the bare key looked up on the source', () => {
    expect(shapeOf(staged).source).toEqual({
      kind: 'staged', reason: staged.reason, workerFilter: 'active', keySources: ['email'],
      reads: [{ name: 'email', type: 'text' }, { name: 'first', type: 'text' }, { name: 'last', type: 'text' }, { name: 'active', type: 'boolean' }],
      mapping: new Map([['email', 'email'], ['name', `concat(first, ' ', last)`], ['active', 'active']]),
    });
    const computed = resolved();
    const lowered = { ...computed, table: { ...computed.table, columns: [{ target: 'email', expression: 'lower(email)' }, ...computed.table.columns.slice(1)] } };
    expect(shapeOf(staged, lowered).source).not.toHaveProperty('keySources');
  });

  test('fields: the columns the target owns are not compared; an unmapped key cannot be', () => {
    const shape = shapeOf(direct, resolved({ strategy: 'fields', owners: { name: 'target' }, default: 'source' }));
    expect(shape.columns.map((c) => c.name)).toEqual(['email', 'active']);
    expect(shape.targetOwned).toEqual(['name']);
    const r = resolved();
    expect(buildVerifyShape({ ...r, key: ['id'] }, direct)).toEqual({ unverifiable: 'key column "id" is not mapped' });
  });
});

describe('SQL', () => {
  test('hashes take values as they are where the type\'s hash tells apart what prints apart, text otherwise', () => {
    expect(hashable('x', 'integer')).toBe('(x)');
    expect(hashable('x', 'timestamp(3) with time zone')).toBe('(x)');
    expect(hashable('x', 'character varying(20)')).toBe('((x) COLLATE "C")');
    for (const type of ['numeric', 'double precision', 'interval', 'jsonb', 'mood', 'integer[]']) expect(hashable('x', type)).toBe('((x)::text COLLATE "C")');
  });

  test('both sides of the direct path', () => {
    const shape = shapeOf(direct);
    // One scan per side: per bucket of the key's hash, each row's hash seeded with its key's hash.
    expect(renderBucketSummary(directRowSource(shape))).toBe(
      `SELECT (x."syncctl$kh" & $1::bigint)::text AS b, count(*)::float8 AS n, ` +
      `sum(hash_record_extended(ROW(((x."syncctl$v0") COLLATE "C"), ((x."syncctl$v1") COLLATE "C"), (x."syncctl$v2")), x."syncctl$kh"))::text AS h ` +
      `FROM (SELECT hash_record_extended(ROW((((email)) COLLATE "C")), 0) AS "syncctl$kh", (email) AS "syncctl$v0", (concat(first, ' ', last)) AS "syncctl$v1", ` +
      `(active) AS "syncctl$v2" FROM "public"."users" WHERE coalesce((active), false) OFFSET 0) AS x GROUP BY x."syncctl$kh" & $1::bigint`);
    expect(renderBucketSummary(targetRowSource(shape))).toContain(`FROM "orgs"."people" AS t OFFSET 0) AS x`);
    expect(renderBucketRows(targetRowSource(shape))).toBe(
      `SELECT ROW(t."email")::text AS k, ARRAY[(t."email")::text]::text[] AS kv, ` +
      `hash_record_extended(ROW(((t."email") COLLATE "C"), ((t."name") COLLATE "C"), (t."active")), 0)::text AS h FROM "orgs"."people" AS t ` +
      `WHERE (hash_record_extended(ROW(((t."email") COLLATE "C")), 0) & $1::bigint) = ANY ($2::bigint[])`);
    expect(renderRowsByKey(shape, directRowSource(shape))).toBe(
      `SELECT ROW((email))::text AS k, ARRAY[((email))::text]::text[] AS kv, jsonb_build_object('email', (email))::text AS kj, ` +
      `ARRAY[((email))::text, ((concat(first, ' ', last)))::text, ((active))::text]::text[] AS vals, tableoid::oid::text AS rel, ctid::text AS tid, xmin::text AS xmin ` +
      `FROM "public"."users" WHERE coalesce((active), false) AND ((email)) IN (SELECT * FROM unnest($1::text[]::text[]))`);
  });

  test('the staged path: rows shipped by key, compared in the target by a full join on the key', () => {
    const shape = shapeOf(staged);
    expect(renderShipByKey(shape)).toBe(`SELECT to_json(ARRAY[("email")::text, ("first")::text, ("last")::text, ("active")::text, (tableoid::oid)::text, (ctid)::text, ` +
      `(xmin)::text]::text[])::text AS r FROM "public"."users" WHERE ("email") IN (SELECT * FROM unnest($1::text[]::text[]))`);
    expect(renderStagedDiff(shape)).toContain(`FROM pg_temp.syncctl_verify_mapped AS m FULL JOIN (SELECT true AS "syncctl$present", * FROM "orgs"."people") AS t ON m."email" = t."email" `);
  });

  test('buckets: about 256 rows each, a power of two, 64 to 16384', () => {
    expect([0, 100, 1_000_000, 1e9].map(bucketCount)).toEqual([64, 64, 4096, 16_384]);
  });
});

describe('compareRows', () => {
  const shape = shapeOf(direct);
  const row = (vals: (string | null)[], place = {}) => ({ k: '(a@x)', kv: ['a@x'], kj: '{"email": "a@x"}', vals, ...place });
  test('missing, extra, different with the columns, equal', () => {
    expect(compareRows(shape, '(a@x)', ['a@x'], [row(['a@x', 'A B', 'true'])], undefined)).toMatchObject({ kind: 'missing', columns: [] });
    expect(compareRows(shape, '(a@x)', ['a@x'], [], row(['a@x', 'A B', 'true']))).toMatchObject({ kind: 'extra', columns: [] });
    expect(compareRows(shape, '(a@x)', ['a@x'], [row(['a@x', 'A B', 'true'])], row(['a@x', 'A C', null]))).toMatchObject({ kind: 'different', columns: ['name', 'active'] });
    expect(compareRows(shape, '(a@x)', ['a@x'], [row(['a@x', 'A B', 'true'])], row(['a@x', 'A B', 'true']))).toBeUndefined();
    expect(compareRows(shape, '(a@x)', ['a@x'], [], undefined)).toBeUndefined();
  });

  test('two source rows mapped to one key never agree with the target', () => {
    const one = row(['a@x', 'A B', 'true']);
    expect(compareRows(shape, '(a@x)', ['a@x'], [one, one], one)).toMatchObject({ kind: 'different', columns: [] });
  });
});

test('repair messages: at most 1000 rows and 1000 keys to delete each, every source column named', () => {
  const shape = shapeOf(direct);
  const rows = Array.from({ length: 2500 }, (_, i) => [String(i), `u${i}@x`, 'F', 'L', 'true']);
  const messages = repairMessages('s', shape, rows, [{ email: 'gone@x' }]);
  expect(messages.map((m) => [m.rows.length, m.deleteKeys.length])).toEqual([[1000, 1], [1000, 0], [500, 0]]);
  expect(messages[0]).toMatchObject({ sync: 's', table: 'people', columns: ['id', 'email', 'first', 'last', 'active'] });
});

test('the text form: each key with its kind and columns, kept and unconfirmed ones with the reason, a total', () => {
  const result: SyncVerification = {
    sync: 'shop', ok: false,
    tables: [
      {
        table: 'people', target: 'orgs.people', path: 'direct', pathReason: 'same', rows: { source: 10, target: 10 }, rechecked: 4,
        differences: [{ key: { email: 'a@x' }, kind: 'missing', columns: [] }, { key: { email: 'b@x' }, kind: 'different', columns: ['name', 'active'] }],
        excluded: [{ key: { email: 'c@x' }, kind: 'different', columns: ['name'], reason: 'target-wins: a local UPDATE (by bob at 2026-01-01T00:00:00Z) is still recorded' }],
        unconfirmed: [],
      },
      { table: 'items', target: 'orgs.items', skipped: 'the table is paused, not streaming', rows: { source: 0, target: 0 }, rechecked: 0, differences: [], excluded: [], unconfirmed: [] },
    ],
  };
  expect(renderVerificationText([result])).toBe(`sync shop
  people -> orgs.people (mapped on the source): 10 source row(s), 10 target row(s): 2 difference(s)
    missing    email=a@x
    different  email=b@x (name, active)
    kept by conflict rule: different email=c@x (name): target-wins: a local UPDATE (by bob at 2026-01-01T00:00:00Z) is still recorded
  items -> orgs.items: not compared: the table is paused, not streaming
verify: 2 key(s) differ in 1 table(s); 1 table(s) and 10 row(s) compared; 1 kept by a conflict rule; 1 table(s) not compared
`);
  expect(describeDifference({ key: { institute_id: '1', user_id: null }, kind: 'extra', columns: [] })).toBe('institute_id=1, user_id=NULL');
});

describe('native tables', () => {
  /** products(id, name, price, shout generated) mirrored into products(id, name, price int8 -> numeric, shout generated, note): the plan's entry, no columns. */
  function native(): ResolvedTable {
    const r = resolved();
    const facts = (columns: ReturnType<typeof column>[]) => ({ ...r.sourceFacts, name: { schema: 'public', name: 'products' }, columns });
    return {
      ...r,
      table: { ...r.table, name: 'products', source: { schema: 'public', name: 'products' }, target: { schema: 'public', name: 'products' }, mode: 'native', key: [],
        columns: [], where: 'id % 10 <> 0' },
      key: ['id'], decision: { identityColumns: ['id'], filterAt: 'publication' }, columnsRead: new Map(), whereColumnsRead: [], stagingTypes: new Map(),
      sourceFacts: facts([column('id', 'integer', 1), column('name', 'text', 2), column('price', 'bigint', 3), { ...column('shout', 'text', 4), generated: true }]),
      targetFacts: facts([column('id', 'integer', 1), column('name', 'text', 2), column('price', 'numeric', 3), { ...column('shout', 'text', 4), generated: true },
        column('note', 'text', 5)]),
    };
  }

  test('the identity mapping: every published source column into its namesake, staged as the target column\'s type', () => {
    const identity = nativeIdentity(native());
    expect(identity.table.columns).toEqual([{ target: 'id', expression: '"id"' }, { target: 'name', expression: '"name"' }, { target: 'price', expression: '"price"' }]);
    expect(identity.table.mode).toBe('native');
    const shape = buildVerifyShape(identity, staged) as VerifyShape;
    expect(shape.key).toEqual([{ name: 'id', type: 'integer' }]);
    expect(shape.columns.map((c) => c.name)).toEqual(['id', 'name', 'price']);
    expect(shape.source).toMatchObject({
      kind: 'staged', publicationFilter: 'id % 10 <> 0', keySources: ['id'],
      reads: [{ name: 'id', type: 'integer' }, { name: 'name', type: 'text' }, { name: 'price', type: 'numeric' }],
    });
    expect(shape.source).not.toHaveProperty('workerFilter');
  });

  test('the applier: the worker for a mapped table, the sync\'s subscription for a native one', () => {
    expect(applierOf('shop', resolved().table)).toEqual({ kind: 'worker' });
    expect(applierOf('shop', native().table)).toEqual({ kind: 'subscription', subscription: 'syncctl_shop_native', table: { schema: 'public', name: 'products' } });
  });

  test('compared only once the subscription holds the table and has copied it', () => {
    const reading = { slot: 'syncctl_shop_native', enabled: true, running: true };
    expect(notMirrored('syncctl_shop_native', { ...reading, state: 'r' })).toBeUndefined();
    expect(notMirrored('syncctl_shop_native', { ...reading, state: 'd' })).toBe(
      `subscription syncctl_shop_native is still copying the table (pg_subscription_rel state 'd'): its target is not expected to equal the source yet`);
    expect(notMirrored('syncctl_shop_native', { ...reading, state: null })).toBe('subscription syncctl_shop_native does not hold the table: run syncctl apply');
    expect(notMirrored('syncctl_shop_native', undefined)).toBe('there is no subscription syncctl_shop_native: run syncctl apply');
  });

  test('the text form says why a native table is not repaired', () => {
    const result: SyncVerification = {
      sync: 'shop', ok: false,
      tables: [{
        table: 'products', target: 'public.products', path: 'direct', pathReason: 'same', rows: { source: 3, target: 3 }, rechecked: 1,
        differences: [{ key: { id: '2' }, kind: 'different', columns: ['name'] }], excluded: [], unconfirmed: [],
        notRepaired: '--repair does not write native tables: subscription syncctl_shop_native writes this table, and a write by syncctl would race its apply worker',
      }],
    };
    expect(renderVerificationText([result])).toBe(`sync shop
  products -> public.products (mapped on the source): 3 source row(s), 3 target row(s): 1 difference(s)
    different  id=2 (name)
    not repaired: --repair does not write native tables: subscription syncctl_shop_native writes this table, and a write by syncctl would race its apply worker
verify: 1 key(s) differ in 1 table(s); 1 table(s) and 3 row(s) compared
`);
  });
});
