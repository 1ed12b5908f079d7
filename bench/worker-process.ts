/**
 * The syncctl worker as a child process (`node bin/syncctl run <spec dir>`): its own event loop,
 * its RSS readable from /proc/<pid>/status, its stderr (JSON logs) kept in a log file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { now } from './db.ts';

const SYNCCTL_BIN = fileURLToPath(new URL('../bin/syncctl', import.meta.url));

/** Every child this harness started and has not seen exit: killed on the way out. */
export const liveChildren = new Set<ChildProcess>();

/** Live children by pid with a label for CPU accounting. */
export function childLabels(): Map<number, string> {
  const m = new Map<number, string>();
  for (const c of liveChildren) {
    if (c.pid === undefined) continue;
    const args = c.spawnargs.join(' ');
    m.set(c.pid, args.includes('bin/syncctl') ? 'syncctl-worker' : args.includes('decode-reader') ? 'decode-reader' : c.spawnfile.split('/').pop() ?? 'child');
  }
  return m;
}

export function track(child: ChildProcess): ChildProcess {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  return child;
}

export function killAllChildren(): void {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
}

export class WorkerProcess {
  readonly child: ChildProcess;
  readonly spawnedAt: number;
  /** Wall-clock time of the worker's "streaming" log line. */
  streamingAt: number | undefined;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly tail: string[] = [];

  private constructor(child: ChildProcess, logFile: string) {
    this.child = child;
    this.spawnedAt = now();
    let partial = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      const text = partial + chunk.toString('utf8');
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (this.streamingAt === undefined && line.includes('"msg":"streaming"')) this.streamingAt = now();
        this.tail.push(line);
        if (this.tail.length > 50) this.tail.shift();
      }
      appendFileSync(logFile, text.slice(0, text.length - partial.length));
    });
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  static start(specDir: string, env: Record<string, string>, logFile: string): WorkerProcess {
    // Run as a user runs it: the executable, whose shebang passes its V8 settings to node.
    // Diagnostics only: BENCH_WORKER_ARGS="--batch-ms 5" adds options to every worker.
    const extra = (process.env['BENCH_WORKER_ARGS'] ?? '').split(/\s+/).filter(Boolean);
    const child = track(spawn(SYNCCTL_BIN, ['run', specDir, ...extra], {
      env: {
        ...process.env, ...env, SYNCCTL_LOG_FORMAT: 'json', SYNCCTL_LOG_LEVEL: process.env['BENCH_WORKER_LOG_LEVEL'] ?? 'info',
        // Diagnostics only, e.g. BENCH_WORKER_NODE_OPTIONS="--cpu-prof --cpu-prof-dir=/tmp/prof".
        ...(process.env['BENCH_WORKER_NODE_OPTIONS'] ? { NODE_OPTIONS: process.env['BENCH_WORKER_NODE_OPTIONS'] } : {}),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    }));
    return new WorkerProcess(child, logFile);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Resolves when the worker has logged "streaming"; rejects when it exits first or times out. */
  async waitStreaming(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.streamingAt === undefined) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`syncctl worker exited before streaming (${this.child.exitCode ?? this.child.signalCode}):\n${this.tail.join('\n')}`);
      }
      if (Date.now() > deadline) throw new Error(`syncctl worker not streaming after ${timeoutMs} ms:\n${this.tail.join('\n')}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  assertAlive(): void {
    if (!this.alive) throw new Error(`syncctl worker exited (${this.child.exitCode ?? this.child.signalCode}):\n${this.tail.join('\n')}`);
  }

  /** Peak resident set size so far (VmHWM), in MB. */
  peakRssMb(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const m = /VmHWM:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) / 1024 : Number.NaN;
  }

  /** CPU seconds (user + system) used so far. */
  cpuSeconds(): number {
    const text = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  /** SIGTERM (finish the batch, checkpoint, exit 0); SIGKILL after the timeout. */
  async stop(timeoutMs = 30_000): Promise<void> {
    if (this.alive) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const { code, signal } = await this.exited;
    clearTimeout(timer);
    if (code !== 0) throw new Error(`syncctl worker stopped with ${code ?? signal}:\n${this.tail.join('\n')}`);
  }

  lastLines(): string {
    return this.tail.join('\n');
  }
}
