import type { Argv } from 'yargs';
import { exitStatusFor, SyncctlError } from '../errors.ts';
import { createLogger } from '../observe/logger.ts';
import { passwordOf, redactSecrets } from '../observe/redact.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import type { SyncVerification } from '../verify/verification.ts';
import { print, printJson } from './output.ts';

/** `syncctl verify`: each target table against its mapped source; exit 0 only when nothing differs. */
export function verifyCommand(yargs: Argv) {
  return yargs.command('verify [specs]', 'Compare each target table with its mapped source while the worker streams; --repair re-applies the keys that differ',
    (y) => y
      .positional('specs', { type: 'string', default: 'specs', describe: 'a spec file or a directory of *.sync.ts files' })
      .option('sync', { type: 'string', describe: 'only this sync (by name)' })
      .option('table', { type: 'string', array: true, describe: 'only this table of the spec (repeatable)' })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON array on stdout, one object per sync' })
      .option('repair', { type: 'boolean', default: false, describe: 're-apply the differing keys from the source through the stream, then check them again (not native tables: their differences are reported)' })
      .option('timeout', { type: 'number', default: 60, describe: 'seconds to wait for the worker to apply past a source read before a difference is reported unconfirmed' })
      .check((argv) => (argv.timeout >= 0 ? true : `--timeout must be a number of seconds, 0 or more; got ${String(argv.timeout)}`))
      .example('$0 verify specs/', 'every table of every sync')
      .example('$0 verify specs/ --sync laas_to_orgs --table users --repair', 'one table, and fix what differs')
      .epilogue('A key differs only if it still does once the worker has applied past the source position it was read at; keys a conflict ' +
        'rule keeps different (a local change still recorded, a pending manual conflict, a row as its last conflict left it) are listed ' +
        'as kept, not as differences. The worker (for native tables, their subscription) must be running for differences to be confirmed, ' +
        'and the worker for them to be repaired.\n\n' +
        'Exit status: 0 nothing differs, 1 differences (or unconfirmed ones, or a table not compared), 2 a spec or database could not be read.'),
    async (argv) => {
      const named = (await loadSpecs(argv.specs)).filter((s) => argv.sync === undefined || s.name === argv.sync);
      if (named.length === 0) throw new SyncctlError('SPEC_INVALID', `no sync named ${argv.sync} in ${argv.specs}`);
      const syncs = withTables(named, argv.table);
      const logger = createLogger();
      const [{ verifySync }, { renderVerificationText }] = await Promise.all([import('../verify/verify-sync.ts'), import('../verify/render-verification.ts')]);
      const results: SyncVerification[] = [];
      let failure: 0 | 1 | 2 = 0;
      for (const { sync, tables } of syncs) {
        try {
          results.push(await verifySync(sync, { ...(tables ? { tables } : {}), repair: argv.repair, timeoutMs: argv.timeout * 1000, logger: logger.child({ sync: sync.name }) }));
        } catch (error) {
          const message = describeFailure(sync, error);
          results.push({ sync: sync.name, tables: [], error: message, ok: false });
          process.stderr.write(`error: ${message}\n`);
          failure = Math.max(failure, statusOf(error)) as 1 | 2;
        }
      }
      if (argv.json) printJson(results);
      else print(renderVerificationText(results));
      process.exitCode = failure !== 0 ? failure : results.every((r) => r.ok) ? 0 : 1;
    });
}

/** With --table, each sync with the tables it has of those named; a name no sync has is an error. */
function withTables(syncs: readonly LoadedSync[], names: readonly string[] | undefined): { sync: LoadedSync; tables?: string[] }[] {
  if (names === undefined || names.length === 0) return syncs.map((sync) => ({ sync }));
  const unknown = names.filter((n) => !syncs.some((s) => s.tables.some((t) => t.name === n)));
  if (unknown.length > 0) {
    throw new SyncctlError('SPEC_INVALID', `no table ${unknown.join(', ')} in ${syncs.length === 1 ? `sync ${syncs[0]!.name}` : 'these syncs'} ` +
      `(tables: ${[...new Set(syncs.flatMap((s) => s.tables.map((t) => t.name)))].join(', ')})`);
  }
  return syncs.map((sync) => ({ sync, tables: names.filter((n) => sync.tables.some((t) => t.name === n)) })).filter((s) => s.tables.length > 0);
}

/** Bad input and unreachable databases are 2, as for the other commands; anything else that broke a verify is 1. */
function statusOf(error: unknown): 1 | 2 {
  if (error instanceof SyncctlError && error.code === 'CONNECTION_FAILED') return 2;
  return exitStatusFor(error);
}

function describeFailure(sync: LoadedSync, error: unknown): string {
  const secrets = [passwordOf(sync.sourceUrl), passwordOf(sync.targetUrl)].filter((s) => s !== undefined);
  return `sync ${sync.name}: ${redactSecrets(error instanceof Error ? error.message : String(error), secrets)}`;
}
