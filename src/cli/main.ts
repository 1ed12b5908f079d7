/**
 * The command line: flags become options for the library; errors become one clear line per
 * problem and an exit status (0 ok, 1 runtime failure, 2 invalid input or pending changes).
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { exitStatusFor, formatProblem, SyncctlError } from '../errors.ts';
import { redactConnectionStrings } from '../observe/redact.ts';
import { applyCommand } from './apply-command.ts';
import { planCommand } from './plan-command.ts';
import { runCommand } from './run-command.ts';
import { demoCommand } from './demo-command.ts';
import { conflictsCommand } from './conflicts-command.ts';
import { statusCommand } from './status-command.ts';
import { verifyCommand } from './verify-command.ts';
import { tableCommands } from './table-commands.ts';
import { historyCommand } from './history-command.ts';

export async function main(args: string[]): Promise<number> {
  const cli = yargs(args)
    .scriptName('syncctl')
    .usage('$0 <command> [options]\n\nDeclarative sync between PostgreSQL databases over logical replication.')
    .strict()
    .demandCommand(1, 'name a command: demo, plan, apply, destroy, run, status, verify, conflicts, pause, resume, resync or history')
    .epilogue('Exit status: 0 ok, 1 runtime failure, 2 invalid input or pending changes (plan --detailed-exitcode).')
    .example('$0 demo', 'scenario 1 on two embedded PostgreSQL servers, end to end')
    .example('$0 plan specs/ --sql', 'what apply would create, change or drop, with its SQL')
    .example('$0 apply specs/', 'provision both databases and copy the existing rows')
    .example('$0 run specs/', 'stream changes until SIGTERM')
    .example('$0 destroy specs/ --allow-destroy', 'remove what syncctl created; target rows stay')
    .example('$0 conflicts list specs/', 'pending conflicts and parked changes')
    .example('$0 resync specs/ laas_to_orgs.users', 'copy one table again while the others stream')
    .example('$0 verify specs/ --repair', 'prove the target equals the mapped source; re-apply what differs')
    .example('$0 history specs/', 'what ran: applies, copies, resyncs, pauses, worker sessions')
    .help()
    .version(false)
    .fail((message, error) => {
      // yargs reports its own validation failures as YError, and a .check() that returns a
      // message as that message (a string in place of the error).
      const own = (error as unknown) === undefined || typeof (error as unknown) === 'string' || error.name === 'YError';
      throw own ? new UsageError(message ?? String(error)) : error;
    });
  planCommand(cli);
  applyCommand(cli);
  runCommand(cli);
  demoCommand(cli);
  conflictsCommand(cli);
  statusCommand(cli);
  verifyCommand(cli);
  tableCommands(cli);
  historyCommand(cli);
  try {
    await cli.parseAsync();
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`${error.message}\n\nRun syncctl --help for the commands.\n`);
      return 2;
    }
    process.stderr.write(describeError(error));
    return exitStatusFor(error);
  }
}

class UsageError extends Error {}

export function describeError(error: unknown): string {
  if (error instanceof SyncctlError) {
    const lines = [`error: ${error.message}`, ...error.problems.map((p) => `  ${formatProblem(p)}`)];
    return redactConnectionStrings(`${lines.join('\n')}\n`);
  }
  const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
  return redactConnectionStrings(`internal error (a bug in syncctl; please report it): ${text}\n`);
}

process.exitCode = await main(hideBin(process.argv));
