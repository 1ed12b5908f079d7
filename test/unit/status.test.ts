/** `syncctl status` without a database: the degraded rules, the count queries and the text form. */
import { describe, expect, test } from 'vitest';
import { assessSync, type SyncFacts } from '../../src/status/assess-status.ts';
import { renderSourceCount, renderTargetCount } from '../../src/status/count-rows.ts';
import { bytes, renderSync } from '../../src/status/render-status.ts';
import type { TableStatus } from '../../src/status/sync-status.ts';

const table = (over: Partial<TableStatus> = {}): TableStatus => ({
  name: 'users', source: 'public.users', target: 'public.users', mode: 'mapped', state: 'streaming', inSpec: true, changesApplied: 3,
  lastAppliedAt: '2026-01-02T03:04:05.000000Z', pendingConflicts: 0, parkedErrors: 0, lastError: null, counts: null, ...over,
});

const healthy: SyncFacts = {
  name: 'shop', registered: true,
  leader: { alive: true, host: 'h1', pid: 7, since: '2026-01-01T00:00:00.000000Z', epoch: 2, lockBackendPid: 99 },
  lastCommit: { lsn: '0/16B3748', time: '2026-01-02T03:04:05.000000Z' }, lagBytes: 0,
  slot: { name: 'syncctl_shop', exists: true, active: true, walStatus: 'reserved', retainedWalBytes: 2048, safeWalSizeBytes: null, confirmedFlushLsn: '0/16B3748', failover: false, standbySlots: null },
  tables: [table()],
};

describe('assessSync', () => {
  test('healthy: a leader, a reserved slot, tables streaming; pending manual conflicts and an inactive slot under a live leader do not degrade', () => {
    expect(assessSync(healthy)).toEqual([]);
    expect(assessSync({ ...healthy, slot: { ...healthy.slot!, active: false, walStatus: 'extended' }, tables: [table({ pendingConflicts: 4 })] })).toEqual([]);
  });

  test('each degraded rule, one sentence each', () => {
    expect(assessSync({ ...healthy, registered: false })).toEqual(['sync shop is not registered on the target: run syncctl apply']);
    expect(assessSync({ ...healthy, slot: { ...healthy.slot!, walStatus: 'unreserved' } })).toEqual(['replication slot syncctl_shop has wal_status unreserved']);
    expect(assessSync({ ...healthy, slot: { ...healthy.slot!, walStatus: 'lost' } })).toEqual(['replication slot syncctl_shop has wal_status lost']);
    expect(assessSync({ ...healthy, leader: { ...healthy.leader, alive: false, lockBackendPid: null }, slot: { ...healthy.slot!, active: false } })).toEqual([
      'no leader: no syncctl run holds the sync\'s lock on the target (the checkpoint names h1 pid 7 since 2026-01-01T00:00:00.000000Z), and the slot is inactive']);
    expect(assessSync({ ...healthy, tables: [table({ state: 'paused', lastError: 'boom' }), table({ name: 'b', parkedErrors: 2 }), table({ name: 'c', state: 'unregistered' })] }))
      .toEqual(['table users is paused: boom', 'table b has 2 parked apply error(s) pending', 'table c is not registered on the target: run syncctl apply']);
  });

  test('a sync without mapped tables has no slot and needs no leader', () => {
    expect(assessSync({ ...healthy, slot: null, leader: { ...healthy.leader, alive: false }, tables: [table({ mode: 'native' })] })).toEqual([]);
  });
});

test('count queries: the publication\'s rendering of the table and its row filter', () => {
  expect(renderSourceCount({ source: { schema: 'CRM', name: 'Members' }, where: 'is_active AND email IS NOT NULL' }))
    .toBe('SELECT count(*)::float8 AS n FROM "CRM"."Members" WHERE (is_active AND email IS NOT NULL)');
  expect(renderSourceCount({ source: { schema: 'public', name: 'users' } })).toBe('SELECT count(*)::float8 AS n FROM "public"."users"');
  expect(renderTargetCount({ target: { schema: 'orgs', name: 'user' } })).toBe('SELECT count(*)::float8 AS n FROM "orgs"."user"');
});

test('text form', () => {
  expect(bytes(0)).toBe('0 B');
  expect(bytes(1536)).toBe('1.5 kB');
  expect(bytes(3 * 1024 ** 3)).toBe('3.0 GB');
  const text = renderSync({ ...healthy, health: 'healthy', problems: [], tables: [table({ counts: { sourceRows: 10, targetRows: 9, error: null } })] });
  expect(text).toBe([
    'shop: healthy',
    '  leader       h1 pid 7 since 2026-01-01 00:00:00 UTC, lock held by target backend 99 (epoch 2)',
    '  last commit  0/16B3748, committed 2026-01-02 03:04:05 UTC',
    '  slot         syncctl_shop: active, wal_status reserved, retains 2.0 kB, safe WAL size unlimited',
    '  lag          0 B',
    '',
    '  TABLE  STATE      APPLIED  LAST APPLIED (UTC)   CONFLICTS  PARKED  SOURCE ROWS  TARGET ROWS  LAST ERROR',
    '  users  streaming        3  2026-01-02 03:04:05          0       0           10            9  -',
  ].join('\n'));
});
