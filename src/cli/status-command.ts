import type { Argv } from 'yargs';
import { SyncctlError } from '../errors.ts';
import { DEGRADED_RULES } from '../status/assess-status.ts';
import type { StatusReport } from '../status/collect-status.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import { print, printJson } from './output.ts';

/** `syncctl status`: each sync's leader, lag, slot and tables; the exit status says healthy (0), degraded (1) or unreadable (2). */
export function statusCommand(yargs: Argv) {
  return yargs.command('status [specs]', 'Health of each sync: leader, lag, last commit, slot; per table state, changes applied, conflicts, parked errors',
    (y) => y
      .positional('specs', { type: 'string', default: 'specs', describe: 'a spec file or a directory of *.sync.ts files' })
      .option('sync', { type: 'string', describe: 'only this sync (by name)' })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON array on stdout, one object per sync' })
      .option('counts', { type: 'boolean', default: false, describe: 'also count source rows (after the row filter) and target rows per table (full scans)' })
      .example('$0 status specs/ --counts', 'health, and row counts to compare')
      .epilogue(`Exit status: 0 every sync healthy, 1 a sync degraded, 2 a spec or database could not be read.\n\nDegraded means:\n${
        DEGRADED_RULES.map((r) => `  - ${r}`).join('\n')}\nPending manual conflicts are shown but do not degrade.`),
    async (argv) => {
      const syncs = (await loadSpecs(argv.specs)).filter((s) => argv.sync === undefined || s.name === argv.sync);
      if (syncs.length === 0) throw new SyncctlError('SPEC_INVALID', `no sync named ${argv.sync} in ${argv.specs}`);
      const [{ collectStatus }, { renderStatusText }] = await Promise.all([import('../status/collect-status.ts'), import('../status/render-status.ts')]);
      const reports = await collectStatus(syncs, { counts: argv.counts });
      if (argv.json) printJson(reports.flatMap((r) => (r.kind === 'read' ? [r.status] : [])));
      else print(renderStatusText(reports));
      for (const r of reports) if (r.kind === 'failed') process.stderr.write(`error: ${r.error}\n`);
      process.exitCode = exitStatusOf(reports);
    });
}

function exitStatusOf(reports: readonly StatusReport[]): 0 | 1 | 2 {
  if (reports.some((r) => r.kind === 'failed')) return 2;
  return reports.some((r) => r.kind === 'read' && r.status.health === 'degraded') ? 1 : 0;
}
