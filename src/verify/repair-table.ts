/** `--repair` of one table: the differing keys sent through the stream (send-repair.ts), a 'repair' run, and the keys checked again. */
import { finishRun, messageOf, startRun } from '../history/record-run.ts';
import { recheck, type Finding } from './recheck.ts';
import { sendRepair } from './send-repair.ts';
import type { RepairResult } from './verification.ts';
import type { VerifyShape } from './verify-shape.ts';
import { difference, type VerifySession } from './verify-table.ts';
import { sourceBarrier } from './worker-position.ts';

export async function repairTable(session: VerifySession, shape: VerifyShape, drift: readonly Finding[]): Promise<RepairResult> {
  const { target, sync } = session;
  const run = await startRun(target, { sync: sync.name, kind: 'repair', table: shape.table.name, counts: { keys: drift.length } });
  try {
    const sent = await sendRepair(sync, target, session.settings, shape, drift);
    // The barrier follows the repair's commit: once the worker is past it, the repair is applied.
    const after = await recheck(session, shape, sent.keys, await sourceBarrier(session.source, sync.name));
    const result: RepairResult = {
      keys: drift.length, rows: sent.rows, deletes: sent.deletes, repaired: drift.length - after.confirmed.length - after.unconfirmed.length,
      remaining: after.confirmed.map((f) => difference(shape, f)),
      unconfirmed: after.unconfirmed.map((f) => ({ ...difference(shape, f), reason: f.reason })),
    };
    await finishRun(target, run, {
      outcome: after.workerBehind === undefined ? 'ok' : 'failed',
      counts: { keys: result.keys, rows: result.rows, deletes: result.deletes, repaired: result.repaired, remaining: result.remaining.length, unconfirmed: result.unconfirmed.length },
      detail: after.workerBehind ?? `${result.repaired} of ${result.keys} key(s) repaired`,
    });
    session.logger?.info({ table: shape.table.name, keys: result.keys, repaired: result.repaired }, 'repaired');
    return result;
  } catch (error) {
    await finishRun(target, run, { outcome: 'failed', detail: messageOf(error) }).catch(() => {});
    throw error;
  }
}

