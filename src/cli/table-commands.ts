import type { Argv } from 'yargs';
import { connect, type Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { locateTable, requester, type NamedTable } from '../lifecycle/table-state.ts';
import { createLogger } from '../observe/logger.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import { copyProgressReporter } from './copy-progress.ts';
import { print, printJson } from './output.ts';

const TABLE = { type: 'string', demandOption: true, describe: '<sync>.<table> (the spec\'s names), or the table alone when one sync has it' } as const;

/** `syncctl pause | resume | resync`: one table's lifecycle, while `syncctl run` streams the others. */
export function tableCommands(yargs: Argv) {
  return yargs
    .command('pause <specs> <table>', 'Hold a streaming table\'s changes (durably, in order) while the other tables stream on', (y) => common(y)
      .example('$0 pause specs/ laas_to_orgs.users', 'the worker holds users\' changes from its next commit on'),
    async (argv) => {
      const named = await locate(argv.specs, argv.table);
      const { pauseTable } = await import('../lifecycle/pause-table.ts');
      const result = await onTarget(named, (target) => pauseTable(target, named, requester(argv.by)));
      if (argv.json) printJson({ ...result, state: 'held' });
      else print(`paused ${result.sync}.${result.table}: its changes are held until syncctl resume (run ${result.runId})`);
    })
    .command('resume <specs> <table>', 'Stream a paused (held) table again: the worker replays its held changes in order, then streams it', (y) => common(y)
      .option('wait', { type: 'boolean', default: true, describe: 'wait until the worker has replayed the held changes (--no-wait: return at once)' })
      .option('timeout', { type: 'number', default: 300, describe: 'seconds to wait for the replay' })
      .example('$0 resume specs/ laas_to_orgs.users', 'returns once the held changes are applied'),
    async (argv) => {
      const named = await locate(argv.specs, argv.table);
      const { resumeTable, waitForReplay } = await import('../lifecycle/resume-table.ts');
      const result = await onTarget(named, (target) => resumeTable(target, named, requester(argv.by)));
      const name = `${result.sync}.${result.table}`;
      if (!argv.wait || result.heldChanges === 0) {
        if (argv.json) printJson({ ...result, state: 'streaming', replay: argv.wait ? 'none held' : 'not waited for' });
        else print(`resumed ${name}: ${result.heldChanges} held change(s) ${result.heldChanges === 0 ? 'to replay' : 'are replayed by the worker'} (run ${result.runId})`);
        return;
      }
      const outcome = await waitForReplay(named.sync.targetUrl, named, {
        timeoutMs: argv.timeout * 1000,
        onWaiting: (n) => { if (!argv.json) process.stderr.write(`waiting for the worker to replay ${n} held change(s) of ${name}…\n`); },
      });
      if (outcome.kind === 'timeout') {
        throw new SyncctlError('APPLY_FAILED', `${name} is resumed (state streaming), but the worker has not replayed its held changes within ` +
          `${argv.timeout} s (${outcome.heldChanges} left): it goes on with them; see syncctl status`, { details: { sync: result.sync, table: result.table } });
      }
      if (outcome.kind === 'state-changed') {
        throw new SyncctlError('APPLY_FAILED', `${name} was resumed, but its state changed to ${outcome.state} before the worker replayed its held changes ` +
          '(a pause or resync meanwhile); see syncctl status', { details: { sync: result.sync, table: result.table, state: outcome.state } });
      }
      if (argv.json) printJson({ ...result, state: 'streaming', replay: outcome });
      else if (outcome.kind === 'no-worker') {
        print(`resumed ${name}; no syncctl run leads ${result.sync}: its ${outcome.heldChanges} held change(s) are replayed when the worker starts (run ${result.runId})`);
      } else {
        print(`resumed ${name}: the worker replayed ${result.heldChanges} held change(s) in ${(outcome.waitedMs / 1000).toFixed(1)} s (run ${result.runId})`);
      }
    })
    .command('resync <specs> <table>', 'Copy one table again from scratch under a new snapshot, remove the rows the source no longer has, and hand it back to the stream', (y) => common(y)
      .example('$0 resync specs/ laas_to_orgs.users', 'while syncctl run streams; the worker holds the table\'s changes during the copy'),
    async (argv) => {
      const named = await locate(argv.specs, argv.table);
      const { resyncTable } = await import('../lifecycle/resync-table.ts');
      const result = await resyncTable(named, { by: requester(argv.by), onProgress: copyProgressReporter(), logger: createLogger() });
      if (argv.json) printJson({ ...result, state: 'streaming' });
      else print(`resynced ${result.sync}.${result.table}: ${result.rows} row(s) copied, ${result.pruned} pruned; it streams again (run ${result.runId})`);
    });
}

function common(y: Argv) {
  return y
    .positional('specs', { type: 'string', demandOption: true, describe: 'a spec file or a directory of *.sync.ts files' })
    .positional('table', TABLE)
    .option('by', { type: 'string', describe: 'who asks, for the run history (default: $USER)' })
    .option('json', { type: 'boolean', default: false, describe: 'the result as JSON on stdout' });
}

async function locate(specs: string | undefined, table: string | undefined): Promise<NamedTable> {
  return locateTable(await loadSpecs(specs!), table!);
}

async function onTarget<T>(named: NamedTable, work: (target: Connection) => Promise<T>): Promise<T> {
  const target = await connect('target', named.sync.targetUrl, 'syncctl');
  try {
    return await work(target);
  } finally {
    await target.close();
  }
}
