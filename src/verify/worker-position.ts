/**
 * "Has the table's applier applied everything the source had when we read it?" A mapped table's
 * applier is the sync's worker; a native table's is the sync's Postgres subscription
 * (subscription-position.ts).
 *
 * The worker writes its position (syncctl.checkpoints.commit_lsn: the end of the last source
 * commit it applied) in the target transaction that holds the rows, and applies source commits in
 * commit order. So once the checkpoint is at or past a source position L, every source
 * transaction that committed before L is in the target.
 *
 * A read of the source sees only transactions whose commit record was written before it, so a
 * position taken after the read bounds them. The checkpoint moves only when a transaction of the
 * sync reaches the worker, so verify writes one itself (sourceBarrier): a transactional logical
 * message, which the worker receives as a transaction of its own (ignoring its content) and
 * checkpoints. Its position is L.
 */
import { createSqlTag, type DatabasePool } from 'slonik';
import { z } from 'zod';
import type { Connection } from '../db/connect.ts';
import { subscriptionName } from '../plan/render-ddl.ts';
import type { LoadedTable } from '../spec/loaded-sync.ts';
import type { QualifiedName } from '../sql/quote.ts';
import { waitForSubscription } from './subscription-position.ts';

const sql = createSqlTag();

/** The prefix of verify's barrier messages; the worker ignores prefixes it does not know. */
export const VERIFY_PREFIX = 'syncctl.verify';

/** Who writes a table's changes into the target. */
export type Applier =
  | { readonly kind: 'worker' }
  | { readonly kind: 'subscription'; readonly subscription: string; readonly table: QualifiedName };

export function applierOf(syncName: string, table: LoadedTable): Applier {
  return table.mode === 'native' ? { kind: 'subscription', subscription: subscriptionName(syncName), table: table.target } : { kind: 'worker' };
}

/**
 * A source position after everything read on `source` so far, that the worker's checkpoint will
 * pass. Without the right to write logical messages, the current WAL position (the checkpoint
 * then passes it only when the sync's next transaction, or a heartbeat, is applied).
 */
export async function sourceBarrier(source: Connection, syncName: string): Promise<string> {
  try {
    return (await source.query<{ lsn: string }>(`SELECT pg_logical_emit_message(true, $1, $2)::text AS lsn`, [VERIFY_PREFIX, syncName])).rows[0]!.lsn;
  } catch {
    return (await source.query<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`)).rows[0]!.lsn;
  }
}

/** `behind`: why the applier is not past the position, for the report. */
export type Applied = { readonly reached: true } | { readonly reached: false; readonly behind: string };

export interface AppliedContext {
  readonly source: Connection;
  readonly target: Connection;
  readonly control: DatabasePool;
  readonly syncName: string;
}

/** Waits until the applier has applied every source transaction committed before `lsn`, for at most `timeoutMs`. */
export async function waitForApplier(ctx: AppliedContext, applier: Applier, lsn: string, timeoutMs: number): Promise<Applied> {
  if (applier.kind === 'subscription') return waitForSubscription(ctx.source, ctx.target, applier, lsn, timeoutMs);
  const applied = await waitForApplied(ctx.control, ctx.syncName, lsn, timeoutMs);
  return applied.reached ? applied : {
    reached: false,
    behind: `the worker is not running or is behind: the sync's checkpoint (${applied.checkpoint ?? 'none'}) did not reach ` +
      `the source position ${lsn} within ${Math.round(timeoutMs / 1000)} s`,
  };
}

const position = z.object({ lsn: z.string(), reached: z.boolean() });

/** Polls the sync's checkpoint until it is at or past `lsn`, for at most `timeoutMs`. */
export async function waitForApplied(
  control: DatabasePool, syncName: string, lsn: string, timeoutMs: number,
): Promise<{ readonly reached: true } | { readonly reached: false; readonly checkpoint: string | null }> {
  const deadline = Date.now() + timeoutMs;
  let pause = 10;
  for (;;) {
    const row = await control.maybeOne(sql.type(position)`SELECT commit_lsn::text AS lsn, commit_lsn >= ${lsn}::pg_lsn AS reached
      FROM syncctl.checkpoints WHERE sync_name = ${syncName}`);
    if (row?.reached) return { reached: true };
    if (Date.now() >= deadline) return { reached: false, checkpoint: row?.lsn ?? null };
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(200, pause * 2);
  }
}
