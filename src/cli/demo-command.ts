import type { Argv } from 'yargs';
import { createLogger } from '../observe/logger.ts';
import { print } from './output.ts';

export function demoCommand(yargs: Argv) {
  return yargs.command(
    'demo',
    'Run the scenario-1 sync end to end on two embedded PostgreSQL servers',
    (y) => y
      .option('keep', { type: 'boolean', default: false, describe: 'leave the servers and the worker running and print their connection strings' })
      .example('$0 demo', 'start, copy, stream a few live changes, stop (under 30 s)'),
    async (argv) => {
      const logger = createLogger({ level: process.env['SYNCCTL_LOG_LEVEL'] ?? 'warn' });
      const stopped = new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      const { runDemo } = await import('../demo/run-demo.ts');
      await runDemo({ keep: argv.keep, logger, print, stopped });
    },
  );
}
