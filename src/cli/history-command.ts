import type { Argv } from 'yargs';
import { SyncctlError } from '../errors.ts';
import type { RunRow } from '../history/read-runs.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { print, printJson } from './output.ts';

const KINDS = ['apply', 'copy', 'resync', 'verify', 'repair', 'pause', 'resume', 'worker'] as const;
const OUTCOMES = ['running', 'ok', 'failed', 'stopped', 'lost'] as const;

/** `syncctl history`: the run history of the syncs (syncctl.runs on each target), newest first. */
export function historyCommand(yargs: Argv) {
  return yargs.command('history [specs]', 'What ran for each sync: applies, copies, resyncs, verifies, repairs, pauses, resumes and worker sessions, newest first',
    (y) => y
      .positional('specs', { type: 'string', default: 'specs', describe: 'a spec file or a directory of *.sync.ts files' })
      .option('sync', { type: 'string', describe: 'only this sync (by name)' })
      .option('table', { type: 'string', describe: 'only runs of this table (the spec\'s table name)' })
      .option('kind', { choices: KINDS, describe: 'only this kind of run' })
      .option('outcome', { choices: OUTCOMES, describe: 'only runs with this outcome' })
      .option('limit', { type: 'number', default: 50, describe: 'at most this many runs (the newest)' })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON array on stdout' })
      .example('$0 history specs/ --kind resync --table users', 'every resync of users, with rows copied and pruned'),
    async (argv) => {
      const syncs = (await loadSpecs(argv.specs)).filter((s) => argv.sync === undefined || s.name === argv.sync);
      if (syncs.length === 0) throw new SyncctlError('SPEC_INVALID', `no sync named ${argv.sync} in ${argv.specs}`);
      const filter = { table: argv.table, kind: argv.kind, outcome: argv.outcome, limit: argv.limit };
      const runs = (await readAll(syncs, filter)).sort((a, b) => b.startedAt.localeCompare(a.startedAt) || b.id - a.id).slice(0, argv.limit);
      if (argv.json) printJson(runs);
      else print(runs.length === 0 ? 'no runs recorded' : formatRuns(runs));
    });
}

/** Each target database once, for the syncs that write there. */
async function readAll(syncs: readonly LoadedSync[], filter: { table?: string; kind?: string; outcome?: string; limit: number }): Promise<RunRow[]> {
  const byTarget = new Map<string, string[]>();
  for (const s of syncs) byTarget.set(s.targetUrl, [...(byTarget.get(s.targetUrl) ?? []), s.name]);
  const out: RunRow[] = [];
  const { RunStore } = await import('../history/read-runs.ts');
  for (const [url, names] of byTarget) {
    const store = await RunStore.open(url);
    try {
      if (await store.exists()) out.push(...await store.list({ syncs: names, ...filter }));
    } finally {
      await store.close();
    }
  }
  return out;
}

function formatRuns(runs: readonly RunRow[]): string {
  const head = ['ID', 'SYNC', 'KIND', 'TABLE', 'STARTED (UTC)', 'DURATION', 'OUTCOME', 'COUNTS', 'DETAIL'];
  const lines = runs.map((r) => [
    String(r.id), r.sync, r.kind, r.table ?? '-', r.startedAt.slice(0, 19).replace('T', ' '), duration(r.durationMs), r.outcome,
    Object.entries(r.counts).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(' ') || '-',
    oneLine(r.detail ?? ''),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [head, ...lines].map((l) => l.map((v, i) => (i === l.length - 1 ? v : v.padEnd(widths[i]!))).join('  ')).join('\n');
}

function duration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 120 ? `${flat.slice(0, 119)}…` : flat;
}
