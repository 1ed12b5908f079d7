/** Plans as a person reads them (Terraform-style) and as scripts read them (JSON). Pure. */
import type { Change, Statement } from './change.ts';
import type { SyncPlan } from './plan-sync.ts';
import { quoteLiteral } from '../sql/quote.ts';

const SIGN: Record<Change['action'], string> = { create: '+', update: '~', delete: '-' };

export function renderPlanText(plans: readonly SyncPlan[], options: { sql?: boolean } = {}): string {
  const lines: string[] = [];
  for (const plan of plans) {
    lines.push(`sync ${plan.sync.name} (${plan.sync.file})`);
    for (const warning of plan.warnings) lines.push(`  ! ${warning}`);
    if (plan.changes.length === 0) lines.push('  no changes');
    for (const change of plan.changes) {
      lines.push(`  ${SIGN[change.action]} ${change.side} ${change.subject}${change.destructive ? '  [destructive]' : ''}`);
      lines.push(`      id: ${change.id}`);
      if (change.reason) lines.push(`      why: ${change.reason}`);
      if (options.sql) {
        for (const statement of change.statements) {
          for (const line of displayStatement(statement).split('\n')) lines.push(`      | ${line}`);
        }
      }
    }
    for (const note of plan.notes) lines.push(`  note: ${note}`);
    lines.push('');
  }
  const counts = countChanges(plans);
  lines.push(counts.total === 0
    ? 'No changes. The databases match the specs.'
    : `Plan: ${counts.create} to create, ${counts.update} to change, ${counts.delete} to destroy.`);
  return lines.join('\n');
}

export function renderPlanJson(plans: readonly SyncPlan[]): unknown {
  return {
    syncs: plans.map((plan) => ({
      name: plan.sync.name,
      file: plan.sync.file,
      warnings: plan.warnings,
      notes: plan.notes,
      changes: plan.changes.map((c) => ({
        id: c.id, action: c.action, side: c.side, subject: c.subject, destructive: c.destructive,
        ...(c.reason ? { reason: c.reason } : {}),
        sql: c.statements.map(displayStatement),
      })),
    })),
    summary: countChanges(plans),
  };
}

export function countChanges(plans: readonly SyncPlan[]) {
  const all = plans.flatMap((p) => p.changes);
  return {
    create: all.filter((c) => c.action === 'create').length,
    update: all.filter((c) => c.action === 'update').length,
    delete: all.filter((c) => c.action === 'delete').length,
    total: all.length,
  };
}

/** The statement as shown: secrets replaced, parameters inlined as literals. */
export function displayStatement(statement: Statement): string {
  const text = statement.display ?? statement.sql;
  if (!statement.params) return text;
  return text.replace(/\$(\d+)/g, (_, n: string) => {
    const value = statement.params![Number(n) - 1];
    return value === null || value === undefined ? 'NULL' : quoteLiteral(value);
  });
}
