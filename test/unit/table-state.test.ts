/** Which table `syncctl pause | resume | resync` names, and what each refuses to do and why. No database. */
import { describe, expect, test } from 'vitest';
import { SyncctlError } from '../../src/errors.ts';
import { locateTable, wrongState, type NamedTable } from '../../src/lifecycle/table-state.ts';
import type { LoadedSync, LoadedTable } from '../../src/spec/loaded-sync.ts';

const table = (name: string): LoadedTable => ({
  name, source: { schema: 'public', name }, target: { schema: 'public', name }, mode: 'mapped', key: ['id'], columns: [],
  conflict: { strategy: 'source-wins' }, truncate: 'apply', onError: 'park', replicaIdentity: 'auto',
} as LoadedTable);
const sync = (name: string, tables: string[]): LoadedSync => ({
  file: `/specs/${name}.sync.ts`, name, sourceUrl: 'postgres://s', targetUrl: 'postgres://t', sourceEnv: 'S', targetEnv: 'T', tables: tables.map(table),
});
const syncs = [sync('shop', ['users', 'orders']), sync('crm', ['users', 'leads'])];

const failure = (fn: () => unknown): SyncctlError => {
  try {
    fn();
  } catch (error) {
    if (error instanceof SyncctlError) return error;
    throw error;
  }
  throw new Error('expected a SyncctlError');
};

describe('locateTable', () => {
  test('<sync>.<table>, or a table name only one sync has', () => {
    expect(locateTable(syncs, 'crm.users')).toMatchObject({ sync: { name: 'crm' }, table: { name: 'users' } });
    expect(locateTable(syncs, 'orders')).toMatchObject({ sync: { name: 'shop' }, table: { name: 'orders' } });
  });

  test('an ambiguous or unknown name says which tables there are', () => {
    const ambiguous = failure(() => locateTable(syncs, 'users'));
    expect(ambiguous.code).toBe('SPEC_INVALID');
    expect(ambiguous.message).toBe('users names a table of several syncs (shop.users, crm.users): give <sync>.<table>');
    expect(failure(() => locateTable(syncs, 'shop.leads')).message)
      .toBe('no table shop.leads in the specs; the tables are: shop.users, shop.orders, crm.users, crm.leads');
  });
});

describe('wrongState', () => {
  const named: NamedTable = { sync: syncs[0]!, table: syncs[0]!.tables[0]! };
  test('names sync, table and state, and what to do instead', () => {
    const held = wrongState('pause', named, { mode: 'mapped', state: 'held', error: null });
    expect(held.message).toBe('cannot pause shop.users: it is held, not streaming; it is paused already (its changes are held): syncctl resume streams it again');
    expect(held.details).toEqual({ sync: 'shop', table: 'users', state: 'held' });
    expect(wrongState('resume', named, { mode: 'mapped', state: 'paused', error: 'a column is gone' }).message)
      .toBe('cannot resume shop.users: it is paused, not held; it was stopped by an error (a column is gone): syncctl resync (or syncctl apply) copies it again');
    expect(wrongState('pause', named, { mode: 'mapped', state: 'copying', error: null }).message)
      .toContain('its copy is under way or was cut short: syncctl apply (or syncctl resync) finishes it');
  });
});
