import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Argv } from 'yargs';
import { SyncctlError } from '../errors.ts';
import { SyncEvents } from '../observe/events.ts';
import { createLogger } from '../observe/logger.ts';
import type { SyncMetrics } from '../observe/metrics.ts';
import type { runMonitor } from '../observe/monitor.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import { runAsLeader } from '../stream/leader.ts';
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
      .option('metrics-address', { type: 'string', describe: 'serve /metrics, /healthz and /readyz on host:port (e.g. 127.0.0.1:9187); also writes a heartbeat on the source' })
      .option('heartbeat-interval', { type: 'number', default: 5, describe: 'seconds between heartbeats and samples of the slot and tables, with --metrics-address (0: sample without heartbeats)' })
      .check((argv) => {
        const beat = argv['heartbeat-interval'];
        if (!(beat >= 0)) return `--heartbeat-interval must be a number of seconds, 0 or more; got ${String(beat)}`;
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
      // Metrics and the monitor (prom-client, slonik) are loaded only when asked for: a worker
      // restarting behind a backlog starts streaming that much sooner.
      let metrics: SyncMetrics | undefined;
      let monitorWith: typeof runMonitor | undefined;
      let server: Server | undefined;
      if (argv['metrics-address'] !== undefined) {
        const [{ SyncMetrics }, { parseListenAddress, serveMetrics }, { runMonitor }] = await Promise.all([
          import('../observe/metrics.ts'), import('../observe/metrics-server.ts'), import('../observe/monitor.ts')]);
        metrics = new SyncMetrics(packageVersion());
        monitorWith = runMonitor;
        const address = parseListenAddress(argv['metrics-address']);
        server = await serveMetrics(metrics, address);
        logger.info({ address: `${address.host}:${address.port}` }, 'serving /metrics, /healthz and /readyz');
      }
      const beatMs = argv['heartbeat-interval'] * 1000;
      try {
        await Promise.all(syncs.map((sync) => {
          const log = logger.child({ sync: sync.name });
          const events = new SyncEvents(sync.name);
          metrics?.observe(events);
          // One leader per sync across processes; this one applies only while it leads.
          return runAsLeader({
            sync, logger: log, signal: controller.signal, events,
            lead: async (epoch, lost) => {
              const stopMonitor = new AbortController();
              const monitor = monitorWith
                ? monitorWith({ sync, events, logger: log, intervalMs: beatMs || 5_000, heartbeat: beatMs > 0 }, AbortSignal.any([lost, stopMonitor.signal]))
                : undefined;
              try {
                await runWorker({
                  sync, logger: log, signal: lost, batchRows: argv['batch-rows'], batchMs: argv['batch-ms'],
                  decodingWorkMemKb: argv['decoding-work-mem'], events, leaderEpoch: epoch,
                  reload: async () => (await loadSpecs(argv.specs, process.env, { fresh: true })).find((s) => s.name === sync.name),
                });
              } finally {
                stopMonitor.abort();
                await monitor;
              }
            },
          }).catch((error: unknown) => {
            controller.abort();
            throw error;
          });
        }));
      } finally {
        await new Promise((resolve) => server ? server.close(resolve) : resolve(undefined));
      }
      logger.info('stopped');
    },
  );
}

/** syncctl's version, from its package.json (next to src/ and dist/ alike). */
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
