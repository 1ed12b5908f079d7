/**
 * `plan --grants`: what each role needs, as SQL an administrator can run. Nothing needs superuser
 * except where Postgres itself does: CREATE SUBSCRIPTION (native tables) needs superuser on 15 and
 * pg_create_subscription from 16; adding a table to a publication or changing its replica
 * identity needs ownership of the table. The replication origin functions (a sync with origin
 * 'none' tags its writes with one) are executable by superusers only until granted; the
 * signatures are the same on PostgreSQL 15 to 18. pg_logical_emit_message is executable by PUBLIC.
 */
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { quoteIdent, quoteQualified } from '../sql/quote.ts';

export function renderGrants(syncs: readonly LoadedSync[]): string {
  const lines: string[] = [];
  for (const sync of syncs) {
    const sourceRole = quoteIdent(roleOf(sync.sourceUrl));
    const targetRole = quoteIdent(roleOf(sync.targetUrl));
    const sourceDb = quoteIdent(databaseOf(sync.sourceUrl));
    const targetDb = quoteIdent(databaseOf(sync.targetUrl));
    lines.push(`-- sync ${sync.name}: on the source (${sync.sourceEnv})`);
    lines.push(`ALTER ROLE ${sourceRole} WITH REPLICATION;  -- read the replication slot`);
    lines.push(`GRANT CREATE ON DATABASE ${sourceDb} TO ${sourceRole};  -- CREATE PUBLICATION`);
    // A source table feeding several target tables is named once.
    const sources = [...new Set(sync.tables.map((t) => quoteQualified(t.source)))];
    for (const table of sources) {
      lines.push(`GRANT SELECT ON ${table} TO ${sourceRole};`);
    }
    lines.push(`-- Postgres requires ownership of a table to add it to a publication or change its replica identity:`);
    for (const table of sources) {
      lines.push(`--   ALTER TABLE ${table} OWNER TO ${sourceRole};  (or run apply as the owner)`);
    }
    lines.push(`-- pg_logical_emit_message (run's heartbeats, verify's barrier, verify --repair's rows) is executable by every role;`);
    lines.push(`-- only where EXECUTE was revoked from PUBLIC does it need, as on PostgreSQL 15-16 and 17+ respectively:`);
    lines.push(`--   GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO ${sourceRole};`);
    lines.push(`--   GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text, boolean) TO ${sourceRole};`);
    lines.push('');
    lines.push(`-- sync ${sync.name}: on the target (${sync.targetEnv})`);
    lines.push(`GRANT CREATE ON DATABASE ${targetDb} TO ${targetRole};  -- the syncctl schema`);
    for (const schema of new Set(sync.tables.map((t) => t.target.schema))) {
      lines.push(`GRANT USAGE ON SCHEMA ${quoteIdent(schema)} TO ${targetRole};`);
    }
    for (const table of sync.tables) {
      lines.push(`GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER ON ${quoteQualified(table.target)} TO ${targetRole};`);
    }
    if (sync.tables.some((t) => t.mode === 'native')) {
      lines.push(`GRANT pg_create_subscription TO ${targetRole};  -- PostgreSQL 16+; on 15 CREATE SUBSCRIPTION needs superuser`);
    }
    if (sync.origin === 'none') lines.push(...originGrants(targetRole));
    lines.push('');
  }
  return lines.join('\n');
}

/**
 * origin 'none' (both directions): the worker tags its writes with replication origins, so that
 * the sync reading this database the other way leaves them out and nothing echoes. Without these
 * the worker warns and writes untagged.
 */
function originGrants(role: string): string[] {
  const grant = (signature: string, why: string) => `GRANT EXECUTE ON FUNCTION ${signature} TO ${role};  -- ${why}`;
  return [
    `-- origin 'none': the worker tags its writes with replication origins (syncctl_<database oid>_<sync>_<n>), so that the sync`,
    `-- reading this database the other way does not send them back; Postgres lets only superusers use origins unless granted:`,
    grant('pg_replication_origin_oid(text)', 'is the session\'s origin there'),
    grant('pg_replication_origin_create(text)', 'one per worker session, the first time'),
    grant('pg_replication_origin_session_setup(text)', 'the session\'s writes carry it'),
    grant('pg_replication_origin_session_reset()', 'and stop carrying it'),
    grant('pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)', 'each commit records the source LSN and commit time'),
    grant('pg_replication_origin_drop(text)', 'syncctl destroy drops the origins'),
  ];
}

function roleOf(url: string): string {
  try {
    return decodeURIComponent(new URL(url).username) || 'postgres';
  } catch {
    return /\buser\s*=\s*(\S+)/.exec(url)?.[1] ?? 'postgres';
  }
}

function databaseOf(url: string): string {
  try {
    return decodeURIComponent(new URL(url).pathname.slice(1)) || roleOf(url);
  } catch {
    return /\bdbname\s*=\s*(\S+)/.exec(url)?.[1] ?? roleOf(url);
  }
}
