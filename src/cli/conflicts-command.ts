import type { Argv } from 'yargs';
import type { Decision, ResolveResult, RetryResult } from '../conflicts/retry-parked.ts';
import type { ConflictRow, ConflictStore } from '../conflicts/store.ts';
import { SyncctlError } from '../errors.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { askYes, print, printJson } from './output.ts';

/** `syncctl conflicts list|show|retry|resolve`: what the worker recorded in sync_conflicts, and what a person does about it. */
export function conflictsCommand(yargs: Argv) {
  return yargs.command('conflicts', 'Conflicts and parked changes recorded in the target\'s syncctl.sync_conflicts', (y) => y
    .command('list [specs]', 'List recorded conflicts (pending ones unless --status all)', (c) => filters(c)
      .option('status', { choices: ['pending', 'all'] as const, default: 'pending' as const, describe: 'pending only, or every outcome' })
      .option('limit', { type: 'number', default: 1000, describe: 'at most this many rows' })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON array on stdout' }),
    async (argv) => {
      const syncs = await selectSyncs(argv.specs, argv.sync);
      const rows = await withStores(syncs, (store, names) => store.list({ syncs: names, table: argv.table, kind: argv.kind, status: argv.status, limit: argv.limit }));
      if (argv.json) printJson(rows);
      else print(rows.length === 0 ? 'no conflicts' : formatList(rows));
    })
    .command('show <id>', 'One conflict: the incoming row and the target row now, side by side, differing columns marked', (c) => c
      .positional('id', { type: 'number', demandOption: true, describe: 'the conflict id (see list)' })
      .option('specs', { type: 'string', default: 'specs', describe: 'a spec file or a directory of *.sync.ts files' })
      .option('sync', { type: 'string', describe: 'only this sync (by name)' })
      .option('json', { type: 'boolean', default: false, describe: 'JSON on stdout' }),
    async (argv) => {
      const syncs = await selectSyncs(argv.specs, argv.sync);
      const found = await withStores(syncs, async (store, names, sync) => {
        const row = await store.get(names, argv.id);
        if (row === null) return [];
        const table = sync.tables.find((t) => t.name === row.table);
        return [{ row, now: table ? await store.currentRow(table.target, row.key) : null }];
      });
      const hit = found[0];
      if (hit === undefined) throw new SyncctlError('SPEC_INVALID', `no conflict ${argv.id} in ${syncs.map((s) => s.name).join(', ')}`);
      if (argv.json) printJson({ ...hit.row, targetNow: hit.now });
      else print(formatShow(hit.row, hit.now));
    })
    .command('retry [ids..]', 'Apply parked apply_errors again, oldest first, as the worker would (e.g. once a missing parent row exists)', (c) => filters(c, 'option')
      .positional('ids', { type: 'number', array: true, describe: 'conflict ids; without them, every pending apply_error the filters select' })
      .option('yes', { type: 'boolean', default: false, describe: 'do not ask for confirmation' })
      .option('by', { type: 'string', describe: 'recorded as resolved_by (default: $USER)' }),
    async (argv) => {
      const syncs = await selectSyncs(argv.specs, argv.sync);
      const ids = (argv.ids ?? []).map(Number);
      if (argv.kind !== undefined && argv.kind !== 'apply_error') throw new SyncctlError('SPEC_INVALID', 'retry applies parked apply_errors only (--kind apply_error)');
      const filter = { ...(ids.length > 0 ? { ids } : {}), ...(argv.table !== undefined ? { tables: [argv.table] } : {}) };
      if (ids.length === 0) {
        const count = await withStores(syncs, async (store, names) => [await store.count({ syncs: names, table: argv.table, kind: 'apply_error' })]);
        const total = count.reduce((a, b) => a + b, 0);
        if (total === 0) {
          print('nothing to retry');
          return;
        }
        if (!argv.yes && !(await askYes(`Retry ${total} pending apply_error(s)?`))) {
          throw new SyncctlError('CONFIRMATION_REQUIRED', `${total} pending apply_error(s) selected: pass --yes to retry them without a terminal to confirm on`);
        }
      }
      const by = argv.by ?? process.env['USER'] ?? 'syncctl conflicts retry';
      const results: RetryResult[] = [];
      const { retryConflicts } = await import('../conflicts/retry-parked.ts');
      for (const sync of syncs) results.push(await retryConflicts(sync, filter, by));
      const sum = (k: keyof RetryResult) => results.reduce((a, r) => a + r[k], 0);
      print(`${sum('retried')} applied, ${sum('failed')} still failing (pending, with the new error), ${sum('superseded')} superseded by a later change retried with them` +
        (sum('skipped') > 0 ? `, ${sum('skipped')} not retryable (parked without the change, or the table left the spec)` : ''));
    })
    .command('resolve [ids..]', 'Decide pending conflicts (a manual table\'s): apply the incoming change, keep the target row, or write the row yourself; the changes of that key queued behind it follow', (c) => filters(c, 'option')
      .positional('ids', { type: 'number', array: true, describe: 'conflict ids; without them, every pending conflict the filters select' })
      .option('use', { choices: ['incoming', 'current'] as const, describe: 'incoming: apply the source\'s change; current: keep the target row' })
      .option('set', { type: 'string', array: true, describe: 'col=value: write the incoming row with these target columns set (the value is text, read as the column\'s type)' })
      .option('set-null', { type: 'string', array: true, describe: 'col: write the incoming row with this target column NULL (with or without --set)' })
      .option('yes', { type: 'boolean', default: false, describe: 'do not ask for confirmation' })
      .option('by', { type: 'string', describe: 'recorded as resolved_by (default: $USER)' }),
    async (argv) => {
      const setting = argv.set !== undefined || argv['set-null'] !== undefined;
      if ((argv.use === undefined) === !setting) throw new SyncctlError('SPEC_INVALID', 'resolve needs one decision: --use incoming, --use current, or --set col=value… (--set-null col…)');
      const { parseAssignments } = await import('../conflicts/resolve-set.ts');
      const decision: Decision = setting ? { set: parseAssignments((argv.set ?? []).map(String), (argv['set-null'] ?? []).map(String)) } : argv.use!;
      const described = typeof decision === 'object' ? `--set ${[...decision.set.keys()].join(', ')}` : `--use ${decision}`;
      const syncs = await selectSyncs(argv.specs, argv.sync);
      if (argv.kind === 'apply_error') throw new SyncctlError('SPEC_INVALID', 'parked apply_errors are applied again with conflicts retry, not resolved');
      const given = (argv.ids ?? []).map(Number);
      // Selected by filters: the pending conflicts (not apply_errors) they match, with a count and a confirmation.
      const selected = await withStores(syncs, async (store, names) => (await store.list({ syncs: names, table: argv.table, kind: argv.kind, status: 'pending',
        ...(given.length > 0 ? { ids: given } : {}), limit: 100_000 })).filter((r) => r.kind !== 'apply_error'));
      if (selected.length === 0) {
        print('nothing to resolve');
        return;
      }
      if (given.length === 0 && !argv.yes && !(await askYes(`Resolve ${selected.length} pending conflict(s) with ${described}?`))) {
        throw new SyncctlError('CONFIRMATION_REQUIRED', `${selected.length} pending conflict(s) selected: pass --yes to resolve them without a terminal to confirm on`);
      }
      const by = argv.by ?? process.env['USER'] ?? 'syncctl conflicts resolve';
      const results: ResolveResult[] = [];
      const { resolveConflicts } = await import('../conflicts/retry-parked.ts');
      for (const sync of syncs) {
        const ids = selected.filter((r) => r.sync === sync.name).map((r) => r.id);
        if (ids.length > 0) results.push(await resolveConflicts(sync, ids, decision, by));
      }
      const sum = (k: keyof ResolveResult) => results.reduce((a, r) => a + r[k], 0);
      const how = typeof decision === 'object' ? `the incoming row written with ${[...decision.set.keys()].join(', ')} set`
        : decision === 'incoming' ? 'the incoming change applied' : 'the target row kept';
      print(`${sum('resolved')} resolved (${how}), ${sum('replayed')} queued change(s) behind them applied` + (sum('failed') > 0 ? `, ${sum('failed')} failed and stay pending` : ''));
    })
    .demandCommand(1, 'name a subcommand: list, show, retry or resolve'));
}

/** `specs` is list's positional, and an option where ids are the positionals. */
function filters<T>(y: Argv<T>, specs: 'positional' | 'option' = 'positional') {
  const where = { type: 'string', default: 'specs', describe: 'a spec file or a directory of *.sync.ts files' } as const;
  return (specs === 'positional' ? y.positional('specs', where) : y.option('specs', where))
    .option('sync', { type: 'string', describe: 'only this sync (by name)' })
    .option('table', { type: 'string', describe: 'only this table (the spec\'s table name)' })
    .option('kind', { type: 'string', describe: 'only this kind (apply_error, insert_exists, update_missing, delete_missing, locally_modified)' });
}

async function selectSyncs(specs: string, name: string | undefined): Promise<LoadedSync[]> {
  const syncs = (await loadSpecs(specs)).filter((s) => name === undefined || s.name === name);
  if (syncs.length === 0) throw new SyncctlError('SPEC_INVALID', `no sync named ${name} in ${specs}`);
  return syncs;
}

/** Runs `work` once per target database, with the names of the syncs that write there. */
async function withStores<R>(syncs: readonly LoadedSync[], work: (store: ConflictStore, names: string[], sync: LoadedSync) => Promise<readonly R[]>): Promise<R[]> {
  const byTarget = new Map<string, LoadedSync[]>();
  for (const s of syncs) byTarget.set(s.targetUrl, [...(byTarget.get(s.targetUrl) ?? []), s]);
  const out: R[] = [];
  const { ConflictStore } = await import('../conflicts/store.ts');
  for (const [url, group] of byTarget) {
    const store = await ConflictStore.open(url);
    try {
      for (const sync of group) out.push(...await work(store, [sync.name], sync));
    } finally {
      await store.close();
    }
  }
  return out.sort((a, b) => idOf(a) - idOf(b));
}

function idOf(value: unknown): number {
  return typeof value === 'object' && value !== null && 'id' in value ? Number((value as { id: unknown }).id) : 0;
}

function formatList(rows: readonly ConflictRow[]): string {
  const lines = rows.map((r) => [String(r.id), r.sync, r.table, r.kind, r.outcome, JSON.stringify(r.key), r.createdAt.slice(0, 19).replace('T', ' '),
    (r.reason ?? '').slice(0, 80)]);
  const head = ['ID', 'SYNC', 'TABLE', 'KIND', 'OUTCOME', 'KEY', 'CREATED (UTC)', 'REASON'];
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [head, ...lines].map((l) => l.map((v, i) => (i === l.length - 1 ? v : v.padEnd(widths[i]!))).join('  ')).join('\n');
}

function formatShow(row: ConflictRow, now: Record<string, unknown> | null): string {
  const incoming = row.incoming ?? {};
  const current = now ?? {};
  const columns = [...new Set([...Object.keys(incoming), ...Object.keys(current)])];
  const show = (v: unknown) => (v === undefined ? '' : JSON.stringify(v));
  const widths = [Math.max(6, ...columns.map((c) => c.length)), Math.max(8, ...columns.map((c) => show(incoming[c]).length))];
  const lines = columns.map((c) => {
    const differs = c in incoming && c in current && JSON.stringify(incoming[c]) !== JSON.stringify(current[c]);
    return `${differs ? '*' : ' '} ${c.padEnd(widths[0]!)}  ${show(incoming[c]).padEnd(widths[1]!)}  ${show(current[c])}`;
  });
  return [
    `conflict ${row.id}: ${row.sync}.${row.table} ${row.kind}, ${row.outcome}${row.resolvedBy ? ` by ${row.resolvedBy} at ${row.resolvedAt}` : ''}`,
    `key ${JSON.stringify(row.key)}; rule ${row.strategy}; source LSN ${row.sourceLsn ?? '-'}, committed ${row.sourceCommitTime ?? '-'}`,
    ...(row.reason ? [`reason: ${row.reason}${row.sqlstate ? ` (SQLSTATE ${row.sqlstate})` : ''}`] : []),
    ...(row.kind === 'apply_error' ? [row.retryable ? `retry: syncctl conflicts retry ${row.id} --specs <specs>` : 'not retryable: parked without the change'] : []),
    '',
    `  ${'column'.padEnd(widths[0]!)}  ${'incoming'.padEnd(widths[1]!)}  target now${now === null ? ' (no row with this key)' : ''}`,
    ...lines,
    '',
    '(* the incoming value differs from the target\'s)',
  ].join('\n');
}
