/**
 * diffSync / destroySync when one source table feeds two spec tables: the source table is
 * published once, its replica identity changed once and put back once, every change id appears
 * once, and the plan of the applied state is empty. Pure: catalogs are built by hand.
 */
import { describe, expect, test } from 'vitest';
import type { ColumnFacts, PublicationFacts, RegisteredTable, ServerFacts, TableFacts, TriggerFacts } from '../../src/catalog/facts.ts';
import type { SourceCatalog } from '../../src/catalog/observe-source.ts';
import type { TargetCatalog } from '../../src/catalog/observe-target.ts';
import { decideSharedSourceTable, type SourceTableNeeds } from '../../src/plan/decide-source-table.ts';
import { destroySync, diffSync, type SyncState } from '../../src/plan/diff-sync.ts';
import type { LoadedSync, LoadedTable } from '../../src/spec/loaded-sync.ts';

const column = (name: string, attnum: number, notNull = false): ColumnFacts => ({
  name, attnum, type: 'text', typeOid: 25, typeSchema: 'pg_catalog', typeName: 'text', notNull, hasDefault: false, generated: false, identity: false,
});

const server: ServerFacts = {
  versionNum: 180000, version: '18.0', database: 'laas', currentUser: 'syncctl', isSuperuser: true, canReplicate: true,
  canCreateInDatabase: true, walLevel: 'logical', maxReplicationSlots: 10, replicationSlotsUsed: 0, maxWalSenders: 10, walSendersUsed: 0,
};

const users: TableFacts = {
  name: { schema: 'public', name: 'users' }, oid: 1, kind: 'table',
  columns: [column('id', 1, true), column('email', 2, true), column('first_name', 3), column('password_hash', 4), column('is_active', 5), column('notes', 6)],
  replicaIdentity: 'default', replicaIdentityColumns: ['id'], primaryKey: ['id'],
  uniqueIndexes: [
    { name: 'users_pkey', columns: ['id'], primary: true, usableAsIdentity: true },
    { name: 'users_email_key', columns: ['email'], primary: false, usableAsIdentity: true },
  ],
  canSelect: true, canWrite: true, isOwner: true,
};

const mapped = (name: string, to: string, columns: string[], where?: string): LoadedTable => ({
  name, source: users.name, target: { schema: 'organizations', name: to }, mode: 'mapped', key: ['email'],
  columns: columns.map((c) => ({ target: c, expression: c })), ...(where !== undefined ? { where } : {}),
  conflict: { strategy: 'source-wins' }, truncate: 'apply', onError: 'park', replicaIdentity: 'auto',
});

const sync: LoadedSync = {
  file: '/specs/fanout.sync.ts', name: 'fanout', sourceUrl: 'postgres://s/laas', targetUrl: 'postgres://t/orgs', sourceEnv: 'S', targetEnv: 'T',
  tables: [
    mapped('users', 'user', ['email', 'first_name'], 'is_active'),
    mapped('user_auth', 'user_auth', ['email', 'password_hash'], '(is_active AND (password_hash IS NOT NULL))'),
  ],
};

const needs = (over: Partial<SourceTableNeeds>): SourceTableNeeds => ({
  mode: 'mapped', keyColumnsRead: ['email'], columnsRead: [], whereColumnsRead: [], hasWhere: true, whereValidAsRowFilter: true,
  replicaIdentity: 'auto', ...over,
});

function decide(facts: TableFacts) {
  return decideSharedSourceTable(facts, [
    { name: 'users', needs: needs({ columnsRead: ['email', 'first_name'], whereColumnsRead: ['is_active'] }), rowFilter: 'is_active' },
    { name: 'user_auth', needs: needs({ columnsRead: ['email', 'password_hash'], whereColumnsRead: ['is_active', 'password_hash'] }),
      rowFilter: '(is_active AND (password_hash IS NOT NULL))' },
  ]);
}

const trigger = (table: LoadedTable): TriggerFacts => ({
  table: table.target, name: 'syncctl_track', functionName: 'syncctl.track_change',
  args: [sync.name, `${table.target.schema}.${table.target.name}`, ...table.key], enabled: true, shapeMatches: true,
});

function state(facts: TableFacts, applied: { registered: RegisteredTable[]; publication?: PublicationFacts }): SyncState {
  const source: SourceCatalog = {
    server, tables: new Map([['public.users', facts]]),
    publications: applied.publication ? new Map([[applied.publication.name, applied.publication]]) : new Map(),
    slots: applied.registered.length > 0
      ? new Map([['syncctl_fanout', {
        name: 'syncctl_fanout', plugin: 'pgoutput', slotType: 'logical', database: 'laas', active: false, activePid: null,
        walStatus: 'reserved', restartLsn: '0/1', confirmedFlushLsn: '0/1', failover: false,
      }]])
      : new Map(),
  };
  const target: TargetCatalog = {
    server, tables: new Map(), schemaVersion: applied.registered.length > 0 ? 3 : undefined,
    triggers: applied.registered.length > 0 ? new Map(sync.tables.map((t) => [`${t.target.schema}.${t.target.name}`, trigger(t)])) : new Map(),
    subscriptions: new Map(), syncs: applied.registered.length > 0 ? new Map([[sync.name, { specFile: sync.file }]]) : new Map(),
    registeredTables: applied.registered,
  };
  const decisions = decide(facts);
  return {
    sync, source, target, decisions, keys: new Map(sync.tables.map((t) => [t.name, t.key])),
    rowFilters: new Map(sync.tables.map((t) => [t.name, t.where!])),
    migrations: [1, 2, 3].map((id) => ({ id, file: `${id}_x.sql`, sql: '' })),
  };
}

const registered = (name: string, before: string | null): RegisteredTable => ({
  syncName: 'fanout', tableName: name, sourceTable: '"public"."users"', targetTable: `"organizations"."${name === 'users' ? 'user' : name}"`,
  mode: 'mapped', state: 'streaming', replicaIdentityBefore: before,
});

/** users with its identity as apply leaves it: USING INDEX users_email_key. */
const widened: TableFacts = { ...users, replicaIdentity: 'index', replicaIdentityIndex: 'users_email_key', replicaIdentityColumns: ['email'] };

describe('one source table, two spec tables', () => {
  test('the first plan publishes the source table once, changes its identity once, and lists every id once', () => {
    const changes = diffSync(state(users, { registered: [] }));
    const ids = changes.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.filter((id) => id.startsWith('replica-identity:'))).toEqual(['replica-identity:public.users']);
    const published = changes.filter((c) => c.id.startsWith('publication-table:'));
    expect(published.map((c) => c.statements.map((s) => s.sql))).toEqual([[
      'ALTER PUBLICATION "syncctl_fanout" ADD TABLE "public"."users" ("email", "first_name", "password_hash", "is_active")',
    ]]);
    // Each table's filter runs in the worker (it reads columns outside the identity), each reason named.
    expect(published[0]!.reason).toContain('tables.users: the row filter is evaluated by the worker: it reads is_active, outside the replica identity');
    expect(published[0]!.reason).toContain('tables.user_auth: the row filter is evaluated by the worker: it reads is_active, password_hash, outside');
    expect(published[0]!.reason).toContain('column list: only the columns the mapping, key and filter of tables.users, tables.user_auth read');
    // Both registrations remember the identity from before the change.
    const registrations = changes.filter((c) => c.id.startsWith('sync-table:'));
    expect(registrations.map((c) => c.statements[0]!.params)).toEqual([
      ['fanout', 'users', '"public"."users"', '"organizations"."user"', 'mapped', 'default'],
      ['fanout', 'user_auth', '"public"."users"', '"organizations"."user_auth"', 'mapped', 'default'],
    ]);
  });

  test('the applied state plans no changes', () => {
    const publication: PublicationFacts = {
      name: 'syncctl_fanout', publishesInsert: true, publishesUpdate: true, publishesDelete: true, publishesTruncate: true, viaRoot: true,
      tables: [{ table: users.name, columns: ['email', 'first_name', 'password_hash', 'is_active'] }],
    };
    expect(diffSync(state(widened, { registered: [registered('user_auth', 'default'), registered('users', 'default')], publication }))).toEqual([]);
  });

  test('a table added to a source table syncctl widened already records the identity from before syncctl', () => {
    // users alone needed the email index; user_auth also keys on id, so the identity widens again.
    const both: TableFacts = { ...widened, uniqueIndexes: [...widened.uniqueIndexes, { name: 'users_id_email', columns: ['id', 'email'], primary: false, usableAsIdentity: true }] };
    const s = state(both, { registered: [registered('users', 'default')] });
    const decisions = decideSharedSourceTable(both, [
      { name: 'users', needs: needs({ columnsRead: ['email'], hasWhere: false }) },
      { name: 'user_auth', needs: needs({ keyColumnsRead: ['id', 'email'], columnsRead: ['id', 'email'], hasWhere: false }) },
    ]);
    const changes = diffSync({ ...s, decisions });
    const registration = changes.find((c) => c.id === 'sync-table:fanout:user_auth')!;
    expect(registration.statements[0]!.params![5]).toBe('default');
    expect(changes.filter((c) => c.id.startsWith('replica-identity:')).map((c) => c.subject))
      .toEqual(['replica identity of public.users: index:users_email_key -> index:users_id_email']);
  });

  test('destroy puts the identity back once', () => {
    const s = state(widened, { registered: [registered('user_auth', 'default'), registered('users', 'default')] });
    const restores = destroySync(s).filter((c) => c.id.startsWith('replica-identity:'));
    expect(restores.map((c) => c.statements.map((st) => st.sql))).toEqual([['ALTER TABLE "public"."users" REPLICA IDENTITY DEFAULT']]);
  });

  test('removing both tables from the spec puts the identity back once', () => {
    const s = state(widened, { registered: [registered('user_auth', 'default'), registered('users', 'default')] });
    const changes = diffSync({ ...s, sync: { ...sync, tables: [] }, decisions: new Map() });
    expect(changes.filter((c) => c.id.startsWith('replica-identity:')).map((c) => c.statements[0]!.sql))
      .toEqual(['ALTER TABLE "public"."users" REPLICA IDENTITY DEFAULT']);
  });
});
