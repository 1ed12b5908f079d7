/**
 * Client tools the benchmark drives: pgbench (load) and pg_recvlogical (decode-only reference).
 * They are not in the embedded Postgres packages; Debian's PostgreSQL 15 client tools work
 * against every newer server. Missing tools are installed with apt-get, saying so.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export interface Tools {
  readonly pgbench: string;
  readonly pgRecvlogical: string;
  readonly version: string;
}

const CANDIDATE_DIRS = [
  process.env['BENCH_PGBIN'],
  '/usr/lib/postgresql/15/bin',
  '/usr/lib/postgresql/16/bin',
  '/usr/lib/postgresql/17/bin',
  '/usr/lib/postgresql/18/bin',
].filter((d): d is string => d !== undefined && d !== '');

function findDir(): string | undefined {
  return CANDIDATE_DIRS.find((d) => existsSync(path.join(d, 'pgbench')) && existsSync(path.join(d, 'pg_recvlogical')));
}

export function ensureTools(say: (line: string) => void): Tools {
  let dir = findDir();
  if (!dir) {
    say('pgbench / pg_recvlogical not found in ' + CANDIDATE_DIRS.join(', '));
    say('installing Debian package postgresql-15 (client tools pgbench and pg_recvlogical) with apt-get ...');
    try {
      execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
      execFileSync('apt-get', ['install', '-y', '-qq', 'postgresql-15'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    } catch (error) {
      throw new Error('could not install postgresql-15 with apt-get (needs root and network). Install it by hand, ' +
        'or point BENCH_PGBIN at a directory holding pgbench and pg_recvlogical', { cause: error });
    }
    dir = findDir();
    if (!dir) throw new Error('postgresql-15 installed but pgbench / pg_recvlogical still not found under /usr/lib/postgresql/15/bin');
  }
  const pgbench = path.join(dir, 'pgbench');
  const version = execFileSync(pgbench, ['--version'], { encoding: 'utf8' }).trim();
  return { pgbench, pgRecvlogical: path.join(dir, 'pg_recvlogical'), version };
}
