/**
 * What `syncctl verify` reports, as plain data (the --json output).
 *
 * Glossary
 * - difference: a key whose target row is not the mapped source row, confirmed by a re-check
 *   after the worker applied past the source position it was read at: `missing` (the filtered
 *   source has it, the target not), `extra` (the other way) or `different` (some mapped columns
 *   differ; `columns` names them).
 * - excluded: a difference a conflict rule keeps on purpose (a local change the rule let stand,
 *   a pending manual conflict, a row left as a conflict's rule decided), with the reason.
 * - unconfirmed: a candidate that could not be decided (the worker did not get past the read
 *   position in time, or the source kept changing the key), with the reason.
 * A native table (mirrored by a Postgres subscription) is compared through the identity mapping;
 * --repair does not write it (`notRepaired`).
 * Key values are text, as Postgres prints them.
 */
export type DifferenceKind = 'missing' | 'extra' | 'different';

export interface Difference {
  readonly key: Readonly<Record<string, string | null>>;
  readonly kind: DifferenceKind;
  /** The mapped target columns that differ (empty for missing and extra rows). */
  readonly columns: readonly string[];
}

export interface ReasonedDifference extends Difference {
  readonly reason: string;
}

export interface RepairResult {
  /** Keys the repair re-applied from the source. */
  readonly keys: number;
  /** Whole source rows sent, and target keys sent for deletion. */
  readonly rows: number;
  readonly deletes: number;
  /** Keys equal after the repair, as the re-check found them. */
  readonly repaired: number;
  /** What still differs after it. */
  readonly remaining: readonly Difference[];
  readonly unconfirmed: readonly ReasonedDifference[];
}

export interface TableVerification {
  /** The spec's table name. */
  readonly table: string;
  readonly target: string;
  /** Why the table was not compared (not streaming, no key to compare by); the rest is then empty. */
  readonly skipped?: string;
  /** Where the mapping was evaluated: on the source (direct) or in the target over shipped rows (staged). */
  readonly path?: 'direct' | 'staged';
  readonly pathReason?: string;
  readonly rows: { readonly source: number; readonly target: number };
  /** Mapped columns the target owns (the `fields` rule: written on insert only), which are not compared. */
  readonly targetOwned?: readonly string[];
  /** Keys the first pass found and the re-check looked at again. */
  readonly rechecked: number;
  readonly differences: readonly Difference[];
  readonly excluded: readonly ReasonedDifference[];
  readonly unconfirmed: readonly ReasonedDifference[];
  readonly repair?: RepairResult;
  /** Why --repair left this table's differences as they are (a native table). */
  readonly notRepaired?: string;
}

export interface SyncVerification {
  readonly sync: string;
  readonly tables: readonly TableVerification[];
  /** Set when the sync could not be verified at all (a database unreachable, a plan pending). */
  readonly error?: string;
  /** Nothing differs, nothing is unconfirmed and no table was skipped (after the repair, with --repair). */
  readonly ok: boolean;
}

/** Differences still standing in a table: after the repair when there was one. */
export function standingDifferences(t: TableVerification): readonly Difference[] {
  return t.repair ? t.repair.remaining : t.differences;
}

export function standingUnconfirmed(t: TableVerification): readonly ReasonedDifference[] {
  return t.repair ? [...t.unconfirmed, ...t.repair.unconfirmed] : t.unconfirmed;
}

export function tableOk(t: TableVerification): boolean {
  return t.skipped === undefined && standingDifferences(t).length === 0 && standingUnconfirmed(t).length === 0;
}
