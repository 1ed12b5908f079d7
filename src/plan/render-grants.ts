/**
 * `plan --grants`: what each role needs, as SQL an administrator can run. Nothing needs superuser
 * except where Postgres itself does: CREATE SUBSCRIPTION (native tables) needs superuser on 15 and
 * pg_create_subscription from 16; adding a table to a publication or changing its replica
 * identity needs ownership of the table.
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
    lines.push('');
  }
  return lines.join('\n');
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
