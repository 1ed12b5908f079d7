/**
 * CPU accounting per process over a measured window, to see which process bounds a scenario.
 *
 * While a window is open, a sampler reads /proc/<pid>/stat (utime + stime) of every process of
 * both Postgres servers, of the harness's children (syncctl worker, pgbench, pg_recvlogical, the
 * decode reader) and of the harness itself every 250 ms, and pg_stat_activity of both servers
 * every 50 ms (labels: backend type + application_name; and what the replication processes are
 * waiting on). A process that exits inside the window counts up to its last sample. Machine-wide
 * figures come from /proc/stat: busy cores, cores used by processes outside this benchmark, and
 * steal (CPU the hypervisor gave to other guests).
 */
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { BENCH_APP, type Db } from './db.ts';

const CLOCK_TICKS = 100;
const WAIT_SAMPLE_MS = 50;
const PROC_SAMPLE_EVERY = 5; // × 50 ms

interface ProcStat {
  readonly ppid: number;
  readonly ticks: number;
  readonly comm: string;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = text.lastIndexOf(')');
    const comm = text.slice(text.indexOf('(') + 1, close);
    const fields = text.slice(close + 2).split(' ');
    // fields[0] = state (field 3); ppid = field 4; utime = field 14; stime = field 15
    return { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]), comm };
  } catch {
    return undefined;
  }
}

function allStats(): Map<number, ProcStat> {
  const m = new Map<number, ProcStat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st) m.set(Number(name), st);
  }
  return m;
}

export function postmasterPid(dataDir: string): number {
  return Number(readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[0]);
}

/**
 * Machine-wide CPU ticks from /proc/stat: busy (user, nice, system, irq, softirq), steal (time
 * the hypervisor gave this VM's CPUs to someone else) and the total.
 */
export function systemTicks(): { busy: number; steal: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  const v = (i: number) => f[i] ?? 0;
  return { busy: v(0) + v(1) + v(2) + v(5) + v(6), steal: v(7), total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
}

export interface Tracked {
  /** Each server: its label ('src' / 'tgt'), postmaster pid and a dedicated connection for the sampler. */
  readonly servers: readonly { readonly label: string; readonly postmaster: number; readonly db: Db }[];
  /** The harness's live children by label (worker child, pgbench, …). */
  readonly extra: () => ReadonlyMap<number, string>;
}

interface Activity {
  readonly pid: number;
  readonly backend_type: string;
  readonly application_name: string;
  readonly what: string;
}

// A process starting or exiting can show NULL backend_type and application_name.
const ACTIVITY_SQL = `SELECT pid, coalesce(backend_type, '') AS backend_type, coalesce(application_name, '') AS application_name,
    CASE WHEN wait_event IS NOT NULL THEN wait_event_type || ':' || wait_event
         WHEN state = 'active' OR state IS NULL THEN 'CPU' ELSE state END AS what
  FROM pg_stat_activity WHERE pid <> pg_backend_pid()`;

function labelOf(a: Activity): string {
  if (a.backend_type === 'client backend') return a.application_name === '' ? 'backend' : `backend(${a.application_name})`;
  if (a.backend_type === 'walsender') return `walsender(${/^pg_\d+_sync_/.test(a.application_name) ? 'native tablesync' : a.application_name})`;
  return a.backend_type;
}

/** Replication processes whose waits are worth reporting (not the harness's own sessions). */
function isReplication(a: Activity): boolean {
  if (a.application_name === BENCH_APP) return false;
  if (a.backend_type === 'walsender' || a.application_name.startsWith('syncctl')) return true;
  return a.backend_type.startsWith('logical replication') && a.backend_type.endsWith('worker');
}

export interface CpuResult {
  readonly seconds: number;
  /** Cores per label, busiest first. */
  readonly cores: [string, number][];
  readonly machine: string;
  readonly outside: number;
  readonly steal: number;
  readonly waits: string[];
}

export class CpuWindow {
  private readonly tracked: Tracked;
  private startAt = 0;
  private startSystem = { busy: 0, steal: 0, total: 0 };
  private startAll = new Map<number, ProcStat>();
  /** Our processes: pid -> ticks at the window start (0 when started inside it), last seen ticks, label. */
  private readonly ours = new Map<number, { first: number; last: number; label: string }>();
  private readonly labels = new Map<number, string>();
  private readonly waitCounts = new Map<string, Map<string, number>>();
  private sampling = false;
  private sampler: Promise<void> | undefined;

  constructor(tracked: Tracked) {
    this.tracked = tracked;
  }

  async begin(): Promise<void> {
    this.startAll = allStats();
    this.startSystem = systemTicks();
    this.startAt = performance.now() / 1000;
    await this.sampleActivity(false);
    this.sampleProcs(this.startAll, true);
    this.sampling = true;
    this.sampler = this.loop();
  }

  private async loop(): Promise<void> {
    for (let i = 1; this.sampling; i++) {
      await new Promise((r) => setTimeout(r, WAIT_SAMPLE_MS));
      if (!this.sampling) break;
      await this.sampleActivity(true);
      if (i % PROC_SAMPLE_EVERY === 0) this.sampleProcs(allStats(), false);
    }
  }

  private async sampleActivity(countWaits: boolean): Promise<void> {
    for (const server of this.tracked.servers) {
      const rows = await server.db.rows<Activity>(ACTIVITY_SQL).catch(() => [] as Activity[]);
      for (const a of rows) {
        const label = `${server.label}.${labelOf(a)}`;
        this.labels.set(a.pid, label);
        if (!countWaits || !isReplication(a)) continue;
        const m = this.waitCounts.get(label) ?? new Map<string, number>();
        m.set(a.what, (m.get(a.what) ?? 0) + 1);
        this.waitCounts.set(label, m);
      }
    }
    for (const [pid, label] of this.tracked.extra()) this.labels.set(pid, label);
  }

  private sampleProcs(stats: Map<number, ProcStat>, atStart: boolean): void {
    const postmasters = new Map(this.tracked.servers.map((s) => [s.postmaster, s.label]));
    for (const [pid, st] of stats) {
      const server = postmasters.get(st.ppid);
      let label = this.labels.get(pid);
      if (postmasters.has(pid)) label = `${postmasters.get(pid)}.postmaster`;
      else if (pid === process.pid) label = 'harness';
      else if (server !== undefined) label ??= `${server}.${st.comm.replace(/^postgres: ?/, '') || 'process'}`;
      else if (!this.tracked.extra().has(pid)) continue;
      label ??= this.tracked.extra().get(pid) ?? st.comm;
      const known = this.ours.get(pid);
      if (known) {
        known.last = st.ticks;
        known.label = label;
      } else {
        this.ours.set(pid, { first: atStart ? st.ticks : 0, last: st.ticks, label });
      }
    }
  }

  async end(): Promise<CpuResult> {
    this.sampling = false;
    await this.sampler;
    await this.sampleActivity(false);
    const endAll = allStats();
    this.sampleProcs(endAll, false);
    const endSystem = systemTicks();
    const seconds = performance.now() / 1000 - this.startAt;

    const byLabel = new Map<string, number>();
    for (const p of this.ours.values()) {
      const d = p.last - p.first;
      if (d > 0) byLabel.set(p.label, (byLabel.get(p.label) ?? 0) + d / CLOCK_TICKS / seconds);
    }
    const ours = [...byLabel.values()].reduce((a, b) => a + b, 0);
    const cores = [...byLabel.entries()].filter(([, c]) => c >= 0.02).sort((a, b) => b[1] - a[1]);

    const ncpu = os.cpus().length;
    const totalTicks = endSystem.total - this.startSystem.total;
    const busyCores = totalTicks > 0 ? ((endSystem.busy - this.startSystem.busy) / totalTicks) * ncpu : Number.NaN;
    const steal = totalTicks > 0 ? ((endSystem.steal - this.startSystem.steal) / totalTicks) * ncpu : Number.NaN;
    const outside = Math.max(0, busyCores - ours);
    const byComm = new Map<string, number>();
    for (const [pid, st] of endAll) {
      if (this.ours.has(pid)) continue;
      const d = st.ticks - (this.startAll.get(pid)?.ticks ?? 0);
      if (d > 0) byComm.set(st.comm, (byComm.get(st.comm) ?? 0) + d / CLOCK_TICKS / seconds);
    }
    const top = [...byComm.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).filter(([, c]) => c >= 0.05)
      .map(([n, c]) => `${n} ${c.toFixed(2)}`).join(', ');
    const machine = `machine busy ${busyCores.toFixed(2)} cores, of which outside this benchmark ${outside.toFixed(2)}${top ? ` (${top})` : ''}; ` +
      `stolen by the hypervisor ${steal.toFixed(2)}`;
    return { seconds, cores, machine, outside, steal, waits: this.waitSummary() };
  }

  /** Share of samples per state for each replication process: "tgt.backend(syncctl run): CPU 40%, IO:WalSync 30%, …". */
  private waitSummary(): string[] {
    const out: string[] = [];
    for (const [who, m] of this.waitCounts) {
      const total = [...m.values()].reduce((a, b) => a + b, 0);
      const parts = [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([w, n]) => `${w} ${Math.round((100 * n) / total)}%`);
      out.push(`${who}: ${parts.join(', ')} (n=${total})`);
    }
    return out;
  }
}

export function formatCores(cores: readonly [string, number][], limit = 6): string {
  return cores.slice(0, limit).map(([l, c]) => `${l}=${c.toFixed(2)}`).join(' ');
}
