/**
 * How a source session prints values as text. pgoutput prints every column with its walsender's
 * settings, COPY TO with its session's, and the target reads that text with its own settings: a
 * source database set to DateStyle 'SQL, DMY' would send 2024-06-05 as 05/06/2024, which an MDY
 * target reads as May 6. Postgres's own apply and tablesync workers pin these three on their
 * connection to the publisher (libpqwalreceiver); syncctl pins the same on every source session.
 * - DateStyle ISO: unambiguous dates, numeric UTC offsets instead of zone abbreviations (IST is
 *   India's or Israel's depending on the reader). Only the output format: the field order the
 *   database set for reading dates stays.
 * - IntervalStyle postgres: a sign on every field, read back the same under every style
 *   (sql_standard prints '-1 2:00:00' for -1 day -2 hours).
 * - extra_float_digits 3: floats print in the shortest form that reads back to the same value.
 * money prints through lc_monetary, which is not pinned: see the plan's money check.
 */
import type pg from 'pg';
import { quoteLiteral } from '../sql/quote.ts';

export const PINNED_OUTPUT_SETTINGS: readonly (readonly [string, string])[] = [
  ['DateStyle', 'ISO'],
  ['IntervalStyle', 'postgres'],
  ['extra_float_digits', '3'],
];

/**
 * Session-level, so every later statement and (on a replication connection) the walsender's
 * decoding print this way. A plain query without parameters: a walsender accepts the simple
 * query protocol only.
 */
export async function pinOutputSettings(client: pg.Client): Promise<void> {
  await client.query(`SELECT ${PINNED_OUTPUT_SETTINGS.map(([name, value]) => `set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`).join(', ')}`);
}
