/**
 * The target key must be backed by an index that makes it identify one row and that ON CONFLICT
 * can use: a primary key, or a unique index that is not deferrable, not partial, valid, and whose
 * columns are NOT NULL. Anything else is refused with the index, the column and the reason.
 */
import { describe, expect, test } from 'vitest';
import type { ColumnFacts, TableFacts, UniqueIndexFacts } from '../../src/catalog/facts.ts';
import { keyIndexProblem } from '../../src/plan/check-key-index.ts';

const column = (name: string, attnum: number, notNull: boolean): ColumnFacts => ({
  name, attnum, type: 'text', typeOid: 25, typeSchema: 'pg_catalog', typeName: 'text', notNull, hasDefault: false,
  generated: false, identity: false,
});

function table(indexes: readonly UniqueIndexFacts[], nullable: readonly string[] = []): TableFacts {
  return {
    name: { schema: 'crm', name: 'Members' }, oid: 1, kind: 'table',
    columns: ['id', 'email', 'region'].map((c, i) => column(c, i + 1, !nullable.includes(c))),
    replicaIdentity: 'default', replicaIdentityColumns: [], primaryKey: indexes.find((i) => i.primary)?.columns ?? [],
    uniqueIndexes: indexes, canSelect: true, canWrite: true, isOwner: true,
  };
}
const unique = (name: string, columns: string[], extra: Partial<UniqueIndexFacts> = {}): UniqueIndexFacts =>
  ({ name, columns, primary: false, usableAsIdentity: true, ...extra });
const upsert = { upsert: true };

describe('keyIndexProblem', () => {
  test('a primary key or a plain unique index on NOT NULL columns backs the key, in any column order', () => {
    expect(keyIndexProblem(['id'], table([unique('members_pkey', ['id'], { primary: true })]), upsert)).toBeUndefined();
    expect(keyIndexProblem(['region', 'email'], table([unique('members_email_region', ['email', 'region'])]), upsert)).toBeUndefined();
  });

  test('no index covering exactly the key: the fix is a unique index', () => {
    expect(keyIndexProblem(['email'], table([unique('members_email_region', ['email', 'region'])]), upsert))
      .toBe('no primary key or unique index on crm."Members" covers exactly (email); the key must identify one target row: ' +
        'CREATE UNIQUE INDEX ON crm."Members" (email)');
  });

  test('a unique index on a nullable column: NULL keys never match, the fix is NOT NULL', () => {
    const problem = keyIndexProblem(['email', 'region'], table([unique('members_email_region', ['email', 'region'], { usableAsIdentity: false })], ['region']), upsert);
    expect(problem).toBe('unique index members_email_region on crm."Members" covers the key (email, region), but column region is nullable: ' +
      'NULL never equals NULL in a unique index, so every change to a row whose key holds a NULL would insert another row instead of ' +
      'updating it. Make it NOT NULL (ALTER TABLE crm."Members" ALTER COLUMN region SET NOT NULL), or keep such rows out with a row ' +
      'filter (where: sql`region IS NOT NULL`, on the source columns the key is computed from)');
  });

  test('a nullable key column that the row filter provably keeps from NULL is fine', () => {
    const indexes = [unique('members_email_region', ['email', 'region'], { usableAsIdentity: false })];
    expect(keyIndexProblem(['email', 'region'], table(indexes, ['region']), { upsert: true, neverNull: ['region'] })).toBeUndefined();
    expect(keyIndexProblem(['email', 'region'], table(indexes, ['email', 'region']), { upsert: true, neverNull: ['region'] }))
      .toContain('but column email is nullable');
  });

  test('a deferrable unique constraint or primary key: ON CONFLICT refuses it as an arbiter', () => {
    const problem = keyIndexProblem(['email'], table([unique('members_email_key', ['email'], { deferrable: true, usableAsIdentity: false })]), upsert);
    expect(problem).toContain('unique index members_email_key on crm."Members" covers the key (email), but it is DEFERRABLE:');
    expect(problem).toContain('ON CONFLICT cannot use a deferrable unique index, so every write of the table would fail');
    const pk = keyIndexProblem(['id'], table([unique('members_pkey', ['id'], { primary: true, deferrable: true, usableAsIdentity: false })]), upsert);
    expect(pk).toContain('primary key members_pkey on crm."Members" covers the key (id), but it is DEFERRABLE');
    // Native tables are applied by Postgres's subscription, which does not upsert.
    expect(keyIndexProblem(['email'], table([unique('members_email_key', ['email'], { deferrable: true })]), { upsert: false })).toBeUndefined();
  });

  test('a partial or invalid unique index does not back the key', () => {
    expect(keyIndexProblem(['email'], table([unique('members_email_active', ['email'], { partial: true, usableAsIdentity: false })]), upsert))
      .toContain('unique index members_email_active on crm."Members" covers the key (email), but it is partial (WHERE …): rows outside its predicate');
    expect(keyIndexProblem(['email'], table([unique('members_email_key', ['email'], { valid: false, usableAsIdentity: false })]), upsert))
      .toContain('but it is invalid (a failed CREATE INDEX CONCURRENTLY): REINDEX INDEX crm.members_email_key');
  });

  test('one usable index among unusable ones is enough; several reasons for one index are all given', () => {
    const indexes = [unique('members_email_key', ['email'], { deferrable: true }), unique('members_email_key2', ['email'])];
    expect(keyIndexProblem(['email'], table(indexes), upsert)).toBeUndefined();
    const problem = keyIndexProblem(['email'], table([unique('members_email_key', ['email'], { deferrable: true })], ['email']), upsert)!;
    expect(problem).toContain('it is DEFERRABLE');
    expect(problem).toContain('column email is nullable');
  });
});
