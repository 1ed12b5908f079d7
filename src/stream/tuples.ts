/**
 * pgoutput tuples as the stage takes them: unchanged TOAST values (the stream does not carry them)
 * as null, with their positions, or filled in from a whole old row.
 */
import { UNCHANGED_TOAST, type Tuple } from './pgoutput-decoder.ts';

/** The tuple with unchanged TOAST values as null: the same array when it has none (the usual case). */
export function withoutUnchanged(tuple: Tuple): (Buffer | null)[] {
  if (!tuple.includes(UNCHANGED_TOAST)) return tuple as (Buffer | null)[];
  return tuple.map((v) => (v === UNCHANGED_TOAST ? null : v));
}

/** Unchanged TOAST values come from the old row when it is whole (REPLICA IDENTITY FULL); else their positions are kept. */
export function fillUnchanged(tuple: Tuple, old: Tuple | undefined): { values: (Buffer | null)[]; unchanged: number[] | null } {
  if (!tuple.includes(UNCHANGED_TOAST)) return { values: tuple as (Buffer | null)[], unchanged: null };
  let unchanged: number[] | null = null;
  const values = tuple.map((v, i) => {
    if (v !== UNCHANGED_TOAST) return v;
    const o = old?.[i];
    if (o !== undefined && o !== UNCHANGED_TOAST) return o;
    (unchanged ??= []).push(i + 1);
    return null;
  });
  return { values, unchanged };
}
