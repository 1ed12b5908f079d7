import type { Argv } from 'yargs';
import { loadSpecs } from '../spec/load-specs.ts';
import { print, printJson } from './output.ts';

export function planCommand(yargs: Argv) {
  return yargs.command(
    'plan <specs>',
    'Show what apply would create, change or drop in both databases',
    (y) => y
      .positional('specs', { type: 'string', demandOption: true, describe: 'a spec file or a directory of *.sync.ts files' })
      .option('sql', { type: 'boolean', default: false, describe: 'print the SQL of every change' })
      .option('json', { type: 'boolean', default: false, describe: 'print the plan as JSON' })
      .option('grants', { type: 'boolean', default: false, describe: 'print the GRANTs each role needs and exit' })
      .option('detailed-exitcode', { type: 'boolean', default: false, describe: 'exit 2 when changes are pending, 0 when in sync' })
      .example('$0 plan specs/', 'what apply would do')
      .example('$0 plan specs/ --sql --detailed-exitcode', 'the SQL too; exit 2 if anything is pending (for CI drift checks)'),
    async (argv) => {
      const syncs = await loadSpecs(argv.specs);
      if (argv.grants) {
        const { renderGrants } = await import('../plan/render-grants.ts');
        print(renderGrants(syncs));
        return;
      }
      const [{ planAll }, { countChanges, renderPlanJson, renderPlanText }] = await Promise.all([
        import('../plan/reconcile.ts'), import('../plan/render-plan.ts')]);
      const plans = await planAll(syncs);
      if (argv.json) printJson(renderPlanJson(plans));
      else print(renderPlanText(plans, { sql: argv.sql }));
      if (argv['detailed-exitcode'] && countChanges(plans).total > 0) process.exitCode = 2;
    },
  );
}
