/** How a source table is published: replica identity, filter placement, column list. */
import { describe, expect, test } from 'vitest';
import type { ColumnFacts, TableFacts } from '../../src/catalog/facts.ts';
import { decideSourceTable, type SourceTableNeeds } from '../../src/plan/decide-source-table.ts';

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
