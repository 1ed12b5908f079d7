/** `syncctl status` as text for people: a few lines per sync, then one line per table. Pure. */
import { describeLeader } from './assess-status.ts';
import type { StatusReport } from './collect-status.ts';
import type { SyncStatus, TableStatus } from './sync-status.ts';

export function renderStatusText(reports: readonly StatusReport[]): string {
  return reports.map((r) => (r.kind === 'read' ? renderSync(r.status) : `${r.name}: unreadable (the error is on stderr)`)).join('\n\n');
}

export function renderSync(s: SyncStatus): string {
  const lines = [`${s.name}: ${s.health}`];
  if (s.slot !== null) {
    lines.push(field('leader', renderLeader(s)));
    lines.push(field('last commit', s.lastCommit === null ? 'none yet' : `${s.lastCommit.lsn}${s.lastCommit.time !== null ? `, committed ${time(s.lastCommit.time)}` : ' (the initial copy)'}`));
    lines.push(field('slot', renderSlot(s.slot)));
    lines.push(field('lag', s.lagBytes === null ? '-' : bytes(s.lagBytes)));
  }
  if (s.problems.length > 0) lines.push('  degraded:', ...s.problems.map((p) => `    - ${p}`));
  if (s.tables.length > 0) lines.push('', ...renderTables(s.tables).map((l) => `  ${l}`));
  return lines.join('\n');
}

function renderLeader(s: SyncStatus): string {
  const named = s.leader.host !== null || s.leader.pid !== null;
  if (!s.leader.alive) return `none${named ? ` (the checkpoint names ${describeLeader(s.leader)})` : ''}`;
  const who = named ? describeLeader({ ...s.leader, since: s.leader.since === null ? null : time(s.leader.since) }) : 'unnamed (the checkpoint names no leader yet)';
  return `${who}, lock held by target backend ${s.leader.lockBackendPid} (epoch ${s.leader.epoch})`;
}

function renderSlot(slot: NonNullable<SyncStatus['slot']>): string {
  if (!slot.exists) return `${slot.name}: missing`;
  return [
    `${slot.name}: ${slot.active ? 'active' : 'inactive'}`,
    `wal_status ${slot.walStatus ?? '-'}`,
    `retains ${slot.retainedWalBytes === null ? '-' : bytes(slot.retainedWalBytes)}`,
    `safe WAL size ${slot.safeWalSizeBytes === null ? 'unlimited' : bytes(slot.safeWalSizeBytes)}`,
    ...(slot.failover ? [slot.standbySlots === null
      ? 'failover slot (synchronized_standby_slots is not set: a standby may not have what the slot has consumed)'
      : `failover slot, synchronized with standby slot(s) ${slot.standbySlots}`] : []),
  ].join(', ');
}

function renderTables(tables: readonly TableStatus[]): string[] {
  const counted = tables.some((t) => t.counts !== null);
  const head = ['TABLE', 'STATE', 'APPLIED', 'LAST APPLIED (UTC)', 'CONFLICTS', 'PARKED', ...(counted ? ['SOURCE ROWS', 'TARGET ROWS'] : []), 'LAST ERROR'];
  const numeric = new Set(['APPLIED', 'CONFLICTS', 'PARKED', 'SOURCE ROWS', 'TARGET ROWS']);
  const rows = tables.map((t) => [
    t.inSpec ? t.name : `${t.name} (not in spec)`, t.state, String(t.changesApplied), t.lastAppliedAt === null ? '-' : time(t.lastAppliedAt).replace(' UTC', ''),
    String(t.pendingConflicts), String(t.parkedErrors),
    ...(counted ? [count(t.counts?.sourceRows), count(t.counts?.targetRows)] : []),
    oneLine(t.lastError ?? t.counts?.error ?? '-'),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((v, i) => {
    if (i === r.length - 1) return v;
    return numeric.has(head[i]!) ? v.padStart(widths[i]!) : v.padEnd(widths[i]!);
  }).join('  '));
}

function field(label: string, value: string): string {
  return `  ${label.padEnd(12)} ${value}`;
}

/** `2025-06-01 10:00:00 UTC` from the ISO form the queries return. */
function time(iso: string): string {
  return `${iso.slice(0, 19).replace('T', ' ')} UTC`;
}

function count(n: number | null | undefined): string {
  return n === null || n === undefined ? '?' : String(n);
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 100 ? `${flat.slice(0, 99)}…` : flat;
}

export function bytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
