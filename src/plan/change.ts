/**
 * The plan is data: a list of changes, each with a stable id, the side it runs on and the SQL it
 * runs. `plan` prints them, `apply` runs exactly them.
 */
import type { Side } from '../db/connect.ts';

export interface Statement {
  readonly sql: string;
  /** Values for $1, $2 … in `sql`. */
  readonly params?: readonly (string | null)[];
  /** What to show instead of `sql` when it carries a secret (a subscription's connection string). */
  readonly display?: string;
}

export type ChangeAction = 'create' | 'update' | 'delete';

export interface Change {
  /** Stable across runs, e.g. `publication-table:laas_to_orgs:public.users`. */
  readonly id: string;
  readonly sync: string;
  readonly action: ChangeAction;
  readonly side: Side;
  /** What the change is about, e.g. `publication syncctl_laas_to_orgs`. */
  readonly subject: string;
  /** Why syncctl makes it, where that is not obvious (replica identity, filters). */
  readonly reason?: string;
  readonly statements: readonly Statement[];
  /** Loses something (a slot's position, a table's membership): needs --allow-destroy or a yes. */
  readonly destructive: boolean;
  /**
   * Runs inside one transaction. CREATE/DROP SUBSCRIPTION and REFRESH PUBLICATION cannot, so
   * those changes run statement by statement.
   */
  readonly transactional: boolean;
  /**
   * `migrate`: the statements are syncctl's migrations, run through postgres-migrations.
   * `initial-copy`: create the slot with an exported snapshot and copy `copyTables` under it.
   * `table-copy`: copy `copyTables` under a temporary slot's snapshot (tables added to a sync, resumed copies).
   */
  /** replication-command: the statements run on a replication connection to the source. */
  readonly runner?: 'migrate' | 'initial-copy' | 'table-copy' | 'replication-command';
  /**
   * The worker can stream correctly while this change is pending (a column list to narrow, a
   * tracking trigger, a table still to copy, which the worker waits for); it warns instead of
   * refusing to start.
   */
  readonly streamSafe?: boolean;
  /** Spec table names the copy runners copy. */
  readonly copyTables?: readonly string[];
}
