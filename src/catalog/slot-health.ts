/**
 * Whether a sync's slot can still stream every change since the checkpoint. A slot Postgres
 * invalidated (wal_status 'lost': its WAL went past max_slot_wal_keep_size, or another
 * invalidation) cannot: the changes between its confirmed position and the oldest WAL left are
 * gone, and nothing left says which rows they touched. A slot dropped by hand is the same loss.
 * Only a new slot with a full copy of every table brings the target back.
 */
import type { Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import type { SlotFacts } from './facts.ts';
import { observeSlots } from './observe-source.ts';

/** Why streaming from `slot` would miss changes, or undefined when it can stream. Pure. */
export function slotStreamProblem(name: string, slot: SlotFacts | undefined): string | undefined {
  if (!slot) return `replication slot ${name} does not exist on the source (dropped by hand?): the changes since the checkpoint cannot be streamed`;
  if (slot.walStatus === 'lost') {
    const why = slot.invalidationReason ? `, invalidated: ${slot.invalidationReason}` : '';
    return `replication slot ${name} can no longer stream: the WAL it needs was removed (wal_status lost${why}), ` +
      `so the changes after ${slot.confirmedFlushLsn ?? 'its last confirmed position'} are gone`;
  }
  return undefined;
}

/** Refuses (PLAN_PENDING, with what to do) when the slot cannot stream every change; reads pg_replication_slots. */
export async function checkSlotStreamable(source: Connection, name: string): Promise<void> {
  const slot = (await observeSlots(source, [name])).get(name);
  const problem = slotStreamProblem(name, slot);
  if (problem === undefined) return;
  const apply = slot ? 'syncctl apply --allow-destroy (dropping the lost slot is destructive)' : 'syncctl apply';
  throw new SyncctlError('PLAN_PENDING', `${problem}; nothing was streamed. Run ${apply}: it creates a new slot and copies every ` +
    'table of the sync again, removing from the target the rows the source deleted meanwhile', { details: { slot: name, walStatus: slot?.walStatus ?? null } });
}
