/** How a source table is published: replica identity, filter placement, column list; shared by the spec tables reading it. */
import { describe, expect, test } from 'vitest';
import type { ColumnFacts, TableFacts } from '../../src/catalog/facts.ts';
import {
  decideSharedSourceTable, decideSourceTable, type SourceTableDecision, type SourceTableNeeds, type SourceTableReader,
} from '../../src/plan/decide-source-table.ts';

const column = (name: string, attnum: number, extra: Partial<ColumnFacts> = {}): ColumnFacts => ({
  name, attnum, type: 'text', typeOid: 25, typeSchema: 'pg_catalog', typeName: 'text', notNull: false, hasDefault: false,
  generated: false, identity: false, ...extra,
});

const users: TableFacts = {
  name: { schema: 'public', name: 'users' }, oid: 1, kind: 'table',
  columns: [column('id', 1, { notNull: true }), column('email', 2), column('name', 3), column('is_active', 4), column('notes', 5)],
  replicaIdentity: 'default', replicaIdentityColumns: ['id'], primaryKey: ['id'],
  uniqueIndexes: [{ name: 'users_pkey', columns: ['id'], primary: true, usableAsIdentity: true }],
  canSelect: true, canWrite: true, isOwner: true,
};

const needs = (over: Partial<SourceTableNeeds> = {}): SourceTableNeeds => ({
  mode: 'mapped', keyColumnsRead: ['id'], columnsRead: ['id', 'name'], whereColumnsRead: [], hasWhere: false,
  whereValidAsRowFilter: true, replicaIdentity: 'auto', ...over,
});

describe('decideSourceTable', () => {
  test('a key the primary key carries changes nothing; the column list holds what the mapping reads', () => {
    const d = decideSourceTable(users, needs());
    expect(d.setReplicaIdentity).toBeUndefined();
    expect(d.columnList).toEqual(['id', 'name']);
    expect(d.filterAt).toBe('none');
  });

  test('a natural key outside the identity: a unique NOT NULL index when one covers it', () => {
    const withIndex = { ...users, uniqueIndexes: [...users.uniqueIndexes, { name: 'users_email_key', columns: ['email'], primary: false, usableAsIdentity: true }] };
    const d = decideSourceTable(withIndex, needs({ keyColumnsRead: ['email'], columnsRead: ['email', 'name'] }));
    expect(d.setReplicaIdentity).toEqual({ kind: 'index', index: 'users_email_key' });
    expect(d.replicaIdentityReason).toContain('does not carry email');
    expect(d.columnList).toEqual(['email', 'name']);
  });

  test('a natural key with no usable index: FULL, and then no column list', () => {
    const d = decideSourceTable(users, needs({ keyColumnsRead: ['email'] }));
    expect(d.setReplicaIdentity).toEqual({ kind: 'full' });
    expect(d.replicaIdentityReason).toContain('REPLICA IDENTITY FULL');
    expect(d.columnList).toBeUndefined();
  });

  test('a filter on non-identity columns is evaluated by the worker, never a publication filter that breaks UPDATEs', () => {
    const d = decideSourceTable(users, needs({ hasWhere: true, whereColumnsRead: ['is_active'] }));
    expect(d.filterAt).toBe('worker');
    expect(d.filterReason).toContain('would make every UPDATE and DELETE of the source table fail');
    expect(d.columnList).toEqual(['id', 'name', 'is_active']);
  });

  test('a filter on identity columns is a publication row filter', () => {
    expect(decideSourceTable(users, needs({ hasWhere: true, whereColumnsRead: ['id'] })).filterAt).toBe('publication');
  });

  test('a filter Postgres rejects as a row filter (mutable function) stays in the worker with its reason', () => {
    const d = decideSourceTable(users, needs({ hasWhere: true, whereColumnsRead: ['id'], whereValidAsRowFilter: false, whereRowFilterError: 'invalid publication WHERE expression' }));
    expect(d.filterAt).toBe('worker');
    expect(d.filterReason).toContain('invalid publication WHERE expression');
  });

  test('replicaIdentity full moves the filter to the publication', () => {
    const d = decideSourceTable(users, needs({ hasWhere: true, whereColumnsRead: ['is_active'], replicaIdentity: 'full' }));
    expect(d.setReplicaIdentity).toEqual({ kind: 'full' });
    expect(d.filterAt).toBe('publication');
  });

  test('a table without any identity gets one: its UPDATEs would fail once published', () => {
    const bare = { ...users, replicaIdentityColumns: [], primaryKey: [], uniqueIndexes: [] };
    const d = decideSourceTable(bare, needs({ keyColumnsRead: [] }));
    expect(d.setReplicaIdentity).toEqual({ kind: 'full' });
    expect(d.replicaIdentityReason).toContain('would make them fail on the source');
  });

  test('a native table whose filter reads non-identity columns is an error with the fix', () => {
    const d = decideSourceTable(users, needs({ mode: 'native', hasWhere: true, whereColumnsRead: ['is_active'] }));
    expect(d.error).toContain("Set replicaIdentity: 'full'");
  });
});

describe('decideSharedSourceTable: one source table feeding several spec tables', () => {
  const withEmailIndex: TableFacts = {
    ...users, uniqueIndexes: [...users.uniqueIndexes, { name: 'users_email_key', columns: ['email'], primary: false, usableAsIdentity: true }],
  };
  const reader = (name: string, over: Partial<SourceTableNeeds> = {}, rowFilter?: string): SourceTableReader =>
    ({ name, needs: needs(over), ...(rowFilter !== undefined ? { rowFilter } : {}) });
  const shared = (d: SourceTableDecision) => ({ set: d.setReplicaIdentity, identity: d.identityColumns, columns: d.columnList });

  test('one reader decides exactly as decideSourceTable', () => {
    const over = { hasWhere: true, whereColumnsRead: ['is_active'] };
    expect(decideSharedSourceTable(users, [reader('users', over)]).get('users')).toEqual(decideSourceTable(users, needs(over)));
  });

  test('the replica identity carries every reader\'s key columns; one decision for all', () => {
    const both = { ...withEmailIndex, uniqueIndexes: [...withEmailIndex.uniqueIndexes, { name: 'users_id_email', columns: ['id', 'email'], primary: false, usableAsIdentity: true }] };
    const d = decideSharedSourceTable(both, [
      reader('users', { keyColumnsRead: ['id'], columnsRead: ['id', 'name'] }),
      reader('user_auth', { keyColumnsRead: ['email'], columnsRead: ['email', 'notes'] }),
    ]);
    expect(d.get('users')!.setReplicaIdentity).toEqual({ kind: 'index', index: 'users_id_email' });
    expect(d.get('users')!.replicaIdentityReason).toContain('one replica identity serves tables.users, tables.user_auth');
    expect(shared(d.get('user_auth')!)).toEqual(shared(d.get('users')!));
  });

  test('the column list is the union of what every reader reads, filters included', () => {
    const d = decideSharedSourceTable(users, [
      reader('users', { columnsRead: ['id', 'name'] }),
      reader('user_auth', { columnsRead: ['id', 'email'], hasWhere: true, whereColumnsRead: ['is_active'] }, 'is_active'),
    ]);
    expect(d.get('users')!.columnList).toEqual(['id', 'email', 'name', 'is_active']);
    expect(d.get('user_auth')!.columnList).toEqual(['id', 'email', 'name', 'is_active']);
  });

  test('any reader asking for replicaIdentity full makes it FULL for all, without a column list', () => {
    const d = decideSharedSourceTable(users, [reader('users'), reader('user_auth', { replicaIdentity: 'full' })]);
    expect(d.get('users')!.setReplicaIdentity).toEqual({ kind: 'full' });
    expect(d.get('users')!.columnList).toBeUndefined();
  });

  test('the same publication-capable filter on every reader is the publication row filter of all', () => {
    const over = { hasWhere: true, whereColumnsRead: ['id'] };
    const d = decideSharedSourceTable(users, [reader('users', over, '(id > 10)'), reader('user_auth', over, '(id > 10)')]);
    expect(d.get('users')!.filterAt).toBe('publication');
    expect(d.get('user_auth')!.filterAt).toBe('publication');
  });

  test('the same filter outside the identity runs in the worker for every reader', () => {
    const over = { hasWhere: true, whereColumnsRead: ['is_active'] };
    const d = decideSharedSourceTable(users, [reader('users', over, 'is_active'), reader('user_auth', over, 'is_active')]);
    expect([d.get('users')!.filterAt, d.get('user_auth')!.filterAt]).toEqual(['worker', 'worker']);
    expect(d.get('users')!.filterReason).toContain('outside the replica identity');
  });

  test('different filters: no publication filter, each reader\'s own filter runs in the worker, on columns the list carries', () => {
    const full = { ...users, replicaIdentity: 'full' as const, replicaIdentityColumns: users.columns.map((c) => c.name) };
    const d = decideSharedSourceTable(full, [
      reader('users', { hasWhere: true, whereColumnsRead: ['is_active'] }, 'is_active'),
      reader('user_auth', { hasWhere: true, whereColumnsRead: ['is_active', 'notes'] }, '(is_active AND (notes IS NOT NULL))'),
    ]);
    expect(d.get('users')!.filterAt).toBe('worker');
    expect(d.get('users')!.filterReason).toBe(
      'the row filter is evaluated by the worker: public.users also feeds tables.user_auth with another row filter, and a publication carries one row filter per table');
    expect(d.get('user_auth')!.filterAt).toBe('worker');
  });

  test('a reader without a filter: the others\' filters run in the worker, it has none', () => {
    const d = decideSharedSourceTable(users, [
      reader('users', { hasWhere: true, whereColumnsRead: ['id'] }, '(id > 10)'),
      reader('user_auth', { columnsRead: ['id', 'notes'] }),
    ]);
    expect(d.get('user_auth')!.filterAt).toBe('none');
    expect(d.get('users')!.filterAt).toBe('worker');
    expect(d.get('users')!.filterReason).toContain('also feeds tables.user_auth without a row filter');
    // The worker evaluates it on the stream: its columns are published.
    expect(d.get('users')!.columnList).toEqual(['id', 'name', 'notes']);
  });

  test('a filter Postgres rejects keeps its own reason', () => {
    const d = decideSharedSourceTable(users, [
      reader('users', { hasWhere: true, whereColumnsRead: ['id'], whereValidAsRowFilter: false, whereRowFilterError: 'invalid publication WHERE expression' }),
      reader('user_auth', { hasWhere: true, whereColumnsRead: ['id'] }, '(id > 10)'),
    ]);
    expect(d.get('users')!.filterReason).toContain('invalid publication WHERE expression');
    expect(d.get('user_auth')!.filterAt).toBe('worker');
  });
});
