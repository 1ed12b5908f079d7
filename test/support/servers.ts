/**
 * Connection facts of the two Postgres servers that `global-setup.ts` starts once per test run.
 * Test files read them with `getServers()`; most use `test-databases.ts` instead.
 */
import { inject } from 'vitest';

export interface ServerInfo {
  host: string;
  port: number;
  user: string;
  password: string;
  major: number;
}

export interface PgServers {
  source: ServerInfo;
  target: ServerInfo;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgServers: PgServers;
  }
}

export function getServers(): PgServers {
  const servers = inject('pgServers');
  if (!servers) throw new Error('pgServers not provided: run the tests through vitest with test/support/global-setup.ts');
  return servers;
}

/** `postgres://user:password@host:port/database` for one of the servers. */
export function serverUrl(server: ServerInfo, database = 'postgres'): string {
  return `postgres://${encodeURIComponent(server.user)}:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${encodeURIComponent(database)}`;
}
