/**
 * Differences a conflict rule keeps on purpose, which are not drift:
 * - a key with an entry in syncctl.local_changes: a local write the rule let stand (target-wins,
 *   last-write-wins that kept the target row, a pending manual conflict) stays recorded there,
 *   and so does one no source change has met yet;
 * - a row exactly as the key's last conflict left it (`kept` or `merged`: target-owned columns
 *   under `fields`, `merge` columns), the conflict's `result` being the target row it wrote.
 * The first reads syncctl tables only (slonik); the second compares with the user's table (pg).
 * A native table has neither: its subscription applies every change as sent (source-wins is the
 * only rule it takes), and no trigger records local writes to it.
 */
import { createSqlTag, type DatabasePool } from 'slonik';
import { z } from 'zod';
import type { Connection } from '../db/connect.ts';
import { quoteIdent, quoteQualified } from '../sql/quote.ts';
import type { Finding } from './recheck.ts';
import type { VerifyShape } from './verify-shape.ts';

const sql = createSqlTag();

const localChange = z.object({ key: z.string(), operation: z.string(), changedAt: z.string(), changedBy: z.string(), pending: z.array(z.number()) });

/** Key (jsonb text) -> why the rule keeps it different. */
export async function keptByRule(
  control: DatabasePool, target: Connection, syncName: string, shape: VerifyShape, findings: readonly Finding[],
): Promise<Map<string, string>> {
  const keys = [...new Set(findings.map((f) => f.kj).filter((kj) => kj !== ''))];
  const reasons = new Map<string, string>();
  if (keys.length === 0 || shape.table.mode === 'native') return reasons;
  const strategy = shape.table.conflict.strategy;
  const local = await control.any(sql.type(localChange)`
    SELECT l.key::text AS key, l.operation, to_char(l.changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "changedAt", l.changed_by AS "changedBy",
           array(SELECT c.id::float8 FROM syncctl.sync_conflicts AS c WHERE c.sync_name = ${syncName} AND c.table_name = ${shape.table.name}
                    AND c.outcome = 'pending' AND c.kind <> 'apply_error' AND c.key = l.key ORDER BY c.id) AS pending
      FROM syncctl.local_changes AS l
     WHERE l.target_table = ${`${shape.table.target.schema}.${shape.table.target.name}`} AND l.key = ANY (${sql.array(keys, 'text')}::jsonb[])`);
  for (const l of local) {
    const conflicts = l.pending.length > 0 ? `, conflict ${l.pending.map((id) => `#${id}`).join(', ')} pending` : '';
    reasons.set(l.key, `${strategy}: a local ${l.operation} (by ${l.changedBy} at ${l.changedAt}) is still recorded${conflicts}`);
  }
  const rest = keys.filter((k) => !reasons.has(k));
  if (rest.length === 0) return reasons;
  const { rows } = await target.query<{ key: string; id: number; kind: string; outcome: string }>(renderAsConflictLeftIt(shape), [syncName, shape.table.name, rest]);
  for (const r of rows) reasons.set(r.key, `${strategy}: the row is as conflict #${r.id} (${r.kind}, ${r.outcome}) left it`);
  return reasons;
}

/**
 * Keys whose last conflict was `kept` or `merged` and whose target row still is that conflict's
 * result on every compared column (or is absent when the result is none). $1 sync, $2 table, $3 keys (jsonb as text[]).
 */
export function renderAsConflictLeftIt(shape: VerifyShape): string {
  const table = quoteQualified(shape.table.target);
  const key = shape.key.map((k) => quoteIdent(k.name));
  const text = (alias: string) => `ROW(${shape.columns.map((c) => `(${alias}.${quoteIdent(c.name)})::text`).join(', ')})`;
  return `SELECT k.key::text AS key, c.id::float8 AS id, c.kind, c.outcome
    FROM unnest($3::text[]::jsonb[]) AS k (key)
    CROSS JOIN LATERAL (SELECT id, kind, outcome, result FROM syncctl.sync_conflicts AS c
                         WHERE c.sync_name = $1 AND c.table_name = $2 AND c.key = k.key AND c.kind <> 'apply_error' ORDER BY c.id DESC LIMIT 1) AS c
    CROSS JOIN LATERAL jsonb_populate_record(NULL::${table}, k.key) AS kk
    LEFT JOIN ${table} AS t ON ${key.map((k) => `t.${k} = kk.${k}`).join(' AND ')}
    LEFT JOIN LATERAL jsonb_populate_record(NULL::${table}, c.result) AS r ON c.result IS NOT NULL
   WHERE c.outcome IN ('kept', 'merged')
     AND CASE WHEN c.result IS NULL THEN t.${key[0]} IS NULL ELSE ${text('t')} IS NOT DISTINCT FROM ${text('r')} END`;
}
