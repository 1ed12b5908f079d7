/**
 * "Has the worker applied everything the source had when we read it?" The worker writes its
 * position (syncctl.checkpoints.commit_lsn: the end of the last source commit it applied) in the
 * target transaction that holds the rows, and applies source commits in commit order. So once the
 * checkpoint is at or past a source position L, every source transaction that committed before L
 * is in the target.
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

const sql = createSqlTag();

/** The prefix of verify's barrier messages; the worker ignores prefixes it does not know. */
export const VERIFY_PREFIX = 'syncctl.verify';

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

export type Applied = { readonly reached: true } | { readonly reached: false; readonly checkpoint: string | null };

const position = z.object({ lsn: z.string(), reached: z.boolean() });

/** Polls the sync's checkpoint until it is at or past `lsn`, for at most `timeoutMs`. */
export async function waitForApplied(control: DatabasePool, syncName: string, lsn: string, timeoutMs: number): Promise<Applied> {
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
