/** `syncctl verify` for people: per table what was compared and each key that differs. Pure. */
import {
  standingDifferences, standingUnconfirmed, type Difference, type ReasonedDifference, type SyncVerification, type TableVerification,
} from './verification.ts';

/** Keys listed per table and kind of entry; --json lists them all. */
const MAX_LISTED = 200;

export function renderVerificationText(syncs: readonly SyncVerification[]): string {
  const lines: string[] = [];
  for (const s of syncs) {
    lines.push(`sync ${s.sync}`);
    if (s.error !== undefined) lines.push(`  error: ${s.error}`);
    for (const t of s.tables) lines.push(...renderTable(t));
  }
  lines.push(renderTotals(syncs));
  return `${lines.join('\n')}\n`;
}

function renderTable(t: TableVerification): string[] {
  const name = `  ${t.table} -> ${t.target}`;
  if (t.skipped !== undefined) return [`${name}: not compared: ${t.skipped}`];
  const found = t.differences.length === 0 ? 'no differences' : `${t.differences.length} difference(s)`;
  const lines = [`${name} (${t.path === 'direct' ? 'mapped on the source' : 'mapped in the target'}): ` +
    `${t.rows.source} source row(s), ${t.rows.target} target row(s): ${found}`];
  if (t.targetOwned !== undefined) lines.push(`    not compared: ${t.targetOwned.join(', ')} (owned by the target under the fields rule)`);
  lines.push(...listed(t.differences, (d) => `    ${d.kind.padEnd(10)} ${describeDifference(d)}`));
  lines.push(...listed(t.excluded, (d) => `    kept by conflict rule: ${d.kind} ${describeDifference(d)}: ${d.reason}`));
  lines.push(...listed(t.unconfirmed, (d) => `    unconfirmed: ${d.kind} ${describeDifference(d)}: ${d.reason}`));
  if (t.notRepaired !== undefined) lines.push(`    not repaired: ${t.notRepaired}`);
  if (t.repair !== undefined) {
    const r = t.repair;
    lines.push(`    repair: ${r.repaired} of ${r.keys} key(s) repaired (${r.rows} source row(s) re-applied, ${r.deletes} target key(s) deleted)`);
    lines.push(...listed(r.remaining, (d) => `    still ${d.kind.padEnd(10)} ${describeDifference(d)}`));
    lines.push(...listed(r.unconfirmed, (d) => `    unconfirmed after the repair: ${d.kind} ${describeDifference(d)}: ${d.reason}`));
  }
  return lines;
}

function listed<T>(items: readonly T[], line: (item: T) => string): string[] {
  const out = items.slice(0, MAX_LISTED).map(line);
  if (items.length > MAX_LISTED) out.push(`    … and ${items.length - MAX_LISTED} more (--json lists every one)`);
  return out;
}

/** `email=a@example.org (name, updated_at)` */
export function describeDifference(d: Difference | ReasonedDifference): string {
  const key = Object.entries(d.key).map(([column, value]) => `${column}=${value ?? 'NULL'}`).join(', ');
  return d.columns.length > 0 ? `${key} (${d.columns.join(', ')})` : key;
}

function renderTotals(syncs: readonly SyncVerification[]): string {
  const tables = syncs.flatMap((s) => s.tables);
  const compared = tables.filter((t) => t.skipped === undefined);
  const differing = compared.filter((t) => standingDifferences(t).length > 0);
  const keys = compared.reduce((n, t) => n + standingDifferences(t).length, 0);
  const rows = compared.reduce((n, t) => n + Math.max(t.rows.source, t.rows.target), 0);
  const parts = [keys === 0 ? 'no differences' : `${keys} key(s) differ in ${differing.length} table(s)`,
    `${compared.length} table(s) and ${rows} row(s) compared`];
  const repaired = compared.reduce((n, t) => n + (t.repair?.repaired ?? 0), 0);
  if (compared.some((t) => t.repair !== undefined)) parts.push(`${repaired} key(s) repaired`);
  const kept = compared.reduce((n, t) => n + t.excluded.length, 0);
  if (kept > 0) parts.push(`${kept} kept by a conflict rule`);
  const unconfirmed = compared.reduce((n, t) => n + standingUnconfirmed(t).length, 0);
  if (unconfirmed > 0) parts.push(`${unconfirmed} unconfirmed`);
  const skipped = tables.length - compared.length;
  if (skipped > 0) parts.push(`${skipped} table(s) not compared`);
  const failed = syncs.filter((s) => s.error !== undefined).length;
  if (failed > 0) parts.push(`${failed} sync(s) could not be verified`);
  return `verify: ${parts.join('; ')}`;
}
