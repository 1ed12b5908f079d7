import type { Argv } from 'yargs';
import { SyncctlError } from '../errors.ts';
import { createLogger } from '../observe/logger.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import { runWorker } from '../stream/worker.ts';

export function runCommand(yargs: Argv) {
  return yargs.command(
    'run <specs>',
    'Stream changes from the source slot into the target until stopped (SIGTERM/SIGINT finish the batch and exit 0)',
    (y) => y
      .positional('specs', { type: 'string', demandOption: true, describe: 'a spec file or a directory of *.sync.ts files' })
      .option('sync', { type: 'string', describe: 'run only this sync (by name)' })
      .option('batch-rows', { type: 'number', default: 50_000, describe: 'changes per target transaction at most (at a source commit)' })
      .option('batch-ms', { type: 'number', default: 5, describe: 'while caught up, how long a target transaction may wait for more source transactions' })
      .option('decoding-work-mem', { type: 'number', describe: 'kB (default 8192): logical_decoding_work_mem for the worker\'s walsender (lowered, never raised); a larger source transaction streams while it runs' })
      .check((argv) => {
        const kb = argv['decoding-work-mem'];
        return kb === undefined || (Number.isInteger(kb) && kb >= 64) ? true : `--decoding-work-mem must be a whole number of kB, at least 64 (Postgres's minimum); got ${String(kb)}`;
      })
      .example('$0 run specs/', 'stream every sync in specs/'),
    async (argv) => {
      const logger = createLogger();
      const syncs = (await loadSpecs(argv.specs)).filter((s) => argv.sync === undefined || s.name === argv.sync);
      if (syncs.length === 0) throw new SyncctlError('SPEC_INVALID', `no sync named ${argv.sync} in ${argv.specs}`);
      const controller = new AbortController();
      const stop = (signal: string) => {
        logger.info({ signal }, 'stopping: finishing the current batch');
        controller.abort();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      await Promise.all(syncs.map((sync) => runWorker({
        sync, logger: logger.child({ sync: sync.name }), signal: controller.signal, batchRows: argv['batch-rows'], batchMs: argv['batch-ms'],
        decodingWorkMemKb: argv['decoding-work-mem'],
        reload: async () => (await loadSpecs(argv.specs, process.env, { fresh: true })).find((s) => s.name === sync.name),
      }).catch((error: unknown) => {
        controller.abort();
        throw error;
      })));
      logger.info('stopped');
    },
  );
}
