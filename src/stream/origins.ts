/**
 * Replication origins for the worker's target sessions (syncs in both directions, origin 'none').
 */
import type { Connection } from '../db/connect.ts';
import type { Logger } from '../observe/logger.ts';

/**
 * Under origin 'none' (one of two syncs in opposite directions), tags every write of the worker's
 * target sessions with a replication origin of its own, so that the sync reading this database
 * the other way (origin 'none' too) does not send them back. Names are
 * `syncctl_<target database oid>_<sync>_<n>`: origins are shared by the cluster, and one is active
 * in one session at a time. Each holds one of the server's replication state slots until
 * `syncctl destroy` drops it. Returns false, with a warning, where the role may not (see
 * `plan --grants`): the writes then go untagged.
 */
export async function tagWrites(sessions: readonly Connection[], syncName: string, logger: Logger): Promise<boolean> {
  try {
    for (const [i, session] of sessions.entries()) {
      const name = (await session.query<{ name: string }>(
        `SELECT 'syncctl_' || oid || '_' || $1 || '_' || $2 AS name FROM pg_database WHERE datname = current_database()`, [syncName, i])).rows[0]!.name;
      await session.query(`SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL`, [name]).catch((error: { code?: string }) => {
        // Created meanwhile by another process: it exists, which is all that is needed.
        if (error.code !== '23505') throw error;
      });
      await session.query('SELECT pg_replication_origin_session_setup($1)', [name]);
    }
    return true;
  } catch (error) {
    if ((error as { code?: string }).code !== '42501') throw error;
    logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'the target role may not use replication origins: the worker\'s writes are not tagged, ' +
      'and a sync reading the target back would send them back (see syncctl plan --grants)');
    return false;
  }
}
