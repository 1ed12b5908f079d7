/** preflight() on hand-made catalogs: every rule, including servers that cannot be started here (PostgreSQL 14). */
import { describe, expect, test } from 'vitest';
import type { ServerFacts, TableFacts } from '../../src/catalog/facts.ts';
import type { SourceCatalog } from '../../src/catalog/observe-source.ts';
import type { TargetCatalog } from '../../src/catalog/observe-target.ts';
import { preflight } from '../../src/plan/preflight.ts';
import type { LoadedSync, LoadedTable } from '../../src/spec/loaded-sync.ts';

const FILE = '/specs/shop.sync.ts';

const table: LoadedTable = {
  name: 'orders',
  source: { schema: 'public', name: 'orders' },
  target: { schema: 'Shop Data', name: 'Orders' },
  mode: 'mapped',
  key: ['id'],
  columns: [{ target: 'id', expression: 'id' }],
  conflict: { strategy: 'source-wins' },
  truncate: 'apply',
  onError: 'park',
  replicaIdentity: 'auto',
};

const sync: LoadedSync = {
  file: FILE, name: 'shop', sourceUrl: 'postgres://u:p@src/db', targetUrl: 'postgres://u:p@dst/db', sourceEnv: 'SRC', targetEnv: 'DST',
  tables: [table],
};

function server(overrides: Partial<ServerFacts> = {}): ServerFacts {
  return {
    versionNum: 170004, version: '17.4', database: 'db', currentUser: 'syncer', isSuperuser: false, canReplicate: true,
    canCreateInDatabase: true, walLevel: 'logical', maxReplicationSlots: 10, replicationSlotsUsed: 2, maxWalSenders: 10,
    walSendersUsed: 1, ...overrides,
  };
}

function tableFacts(name: { schema: string; name: string }, overrides: Partial<TableFacts> = {}): TableFacts {
  return {
    name, oid: 16400, kind: 'table', columns: [], replicaIdentity: 'default', replicaIdentityColumns: ['id'], primaryKey: ['id'],
    uniqueIndexes: [], canSelect: true, canWrite: true, isOwner: true, ...overrides,
  };
}

function catalogs(options: {
  source?: Partial<ServerFacts>; target?: Partial<ServerFacts>;
  sourceTable?: Partial<TableFacts> | null; targetTable?: Partial<TableFacts> | null;
} = {}): { source: SourceCatalog; target: TargetCatalog } {
  const sourceTable = options.sourceTable === null ? undefined : tableFacts(table.source, options.sourceTable);
  const targetTable = options.targetTable === null ? undefined : tableFacts(table.target, options.targetTable);
  return {
    source: {
      server: server(options.source), tables: new Map([['public.orders', sourceTable]]), publications: new Map(), slots: new Map(),
    },
    target: {
      server: server(options.target), tables: new Map([['Shop Data.Orders', targetTable]]), schemaVersion: undefined,
      triggers: new Map(), subscriptions: new Map(), syncs: new Map(), registeredTables: [],
    },
  };
}

function check(options: Parameters<typeof catalogs>[0] = {}, slotsToCreate = 1) {
  const { source, target } = catalogs(options);
  return preflight(sync, source, target, { slotsToCreate });
}

describe('preflight', () => {
  test('servers that can host the sync: no problems', () => {
    expect(check()).toEqual([]);
  });

  test('PostgreSQL older than 15 on either side is unsupported, and says so', () => {
    expect(check({ source: { versionNum: 140011, version: '14.11' }, target: { versionNum: 130015, version: '13.15' } })).toEqual([
      { file: FILE, path: 'source', message: 'the source runs PostgreSQL 14.11; syncctl supports PostgreSQL 15 and newer (publication row filters and column lists came in 15)' },
      { file: FILE, path: 'target', message: 'the target runs PostgreSQL 13.15; syncctl supports PostgreSQL 15 and newer' },
    ]);
    expect(check({ source: { versionNum: 150000, version: '15.0' } })).toEqual([]);
  });

  test('wal_level other than logical', () => {
    expect(check({ source: { walLevel: 'replica' } })).toEqual([{
      file: FILE, path: 'source',
      message: 'wal_level is replica on the source; logical replication needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart the server)',
    }]);
  });

  test('replication slots exhausted: counts what the plan creates', () => {
    expect(check({ source: { maxReplicationSlots: 3, replicationSlotsUsed: 2 } }, 2)).toEqual([{
      file: FILE, path: 'source',
      message: 'replication slots are exhausted on the source: max_replication_slots = 3, 2 in use, syncctl needs 2 more (raise max_replication_slots and restart, or drop unused slots)',
    }]);
    expect(check({ source: { maxReplicationSlots: 3, replicationSlotsUsed: 2 } }, 1)).toEqual([]);
    // Nothing to create (the slot exists): a full server is fine.
    expect(check({ source: { maxReplicationSlots: 2, replicationSlotsUsed: 2, maxWalSenders: 1, walSendersUsed: 1 } }, 0)).toEqual([]);
  });

  test('WAL senders exhausted', () => {
    expect(check({ source: { maxWalSenders: 4, walSendersUsed: 4 } })).toEqual([{
      file: FILE, path: 'source',
      message: 'WAL senders are exhausted on the source: max_wal_senders = 4, 4 in use, syncctl needs 1 (raise max_wal_senders and restart)',
    }]);
  });

  test('a source role without REPLICATION', () => {
    expect(check({ source: { canReplicate: false, currentUser: 'Reader "R"' } })).toEqual([{
      file: FILE, path: 'source', message: 'role Reader "R" lacks the REPLICATION attribute on the source: ALTER ROLE "Reader ""R""" WITH REPLICATION',
    }]);
  });

  test('source table missing, not a table, not readable', () => {
    expect(check({ sourceTable: null })).toEqual([{ file: FILE, path: 'tables.orders.from', message: 'source table public.orders does not exist' }]);
    expect(check({ sourceTable: { kind: 'other' } })).toEqual([{
      file: FILE, path: 'tables.orders.from', message: 'public.orders is not a table (views and foreign tables cannot be published)',
    }]);
    expect(check({ sourceTable: { canSelect: false } })).toEqual([{
      file: FILE, path: 'tables.orders.from', message: 'role syncer cannot read public.orders on the source: GRANT SELECT ON "public"."orders" TO "syncer"',
    }]);
  });

  test('target table missing, not a table, not writable', () => {
    expect(check({ targetTable: null })).toEqual([{
      file: FILE, path: 'tables.orders.to',
      message: 'target table "Shop Data"."Orders" does not exist: create it on the target first (syncctl never creates or drops target tables)',
    }]);
    expect(check({ targetTable: { kind: 'other' } })).toEqual([{ file: FILE, path: 'tables.orders.to', message: '"Shop Data"."Orders" on the target is not a table' }]);
    expect(check({ targetTable: { canWrite: false } })).toEqual([{
      file: FILE, path: 'tables.orders.to',
      message: 'role syncer cannot write "Shop Data"."Orders" on the target: GRANT SELECT, INSERT, UPDATE, DELETE ON "Shop Data"."Orders" TO "syncer"',
    }]);
  });

  test('every problem at once, in a stable order', () => {
    const problems = check({
      source: { versionNum: 140000, version: '14.0', walLevel: 'minimal', canReplicate: false, maxReplicationSlots: 0, replicationSlotsUsed: 0, maxWalSenders: 0 },
      sourceTable: null, targetTable: null,
    });
    expect(problems.map((p) => `${p.path}: ${p.message.split(' ').slice(0, 4).join(' ')}`)).toEqual([
      'source: the source runs PostgreSQL',
      'source: wal_level is minimal on',
      'source: replication slots are exhausted',
      'source: WAL senders are exhausted',
      'source: role syncer lacks the',
      'tables.orders.from: source table public.orders does',
      'tables.orders.to: target table "Shop Data"."Orders"',
    ]);
  });
});
