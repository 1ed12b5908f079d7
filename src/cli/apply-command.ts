import type { Argv } from 'yargs';
import type { Change } from '../plan/change.ts';
import type { SyncPlan } from '../plan/plan-sync.ts';
import { loadSpecs } from '../spec/load-specs.ts';
import { askYes, print, printJson } from './output.ts';
import { copyProgressReporter } from './copy-progress.ts';

const SIGN = { create: '+', update: '~', delete: '-' } as const;

export function applyCommand(yargs: Argv) {
  return yargs
    .command(
      'apply <specs>',
      'Create or change publications, slots, replica identity, the syncctl schema, triggers and subscriptions to match the specs',
      (y) => options(y)
        .example('$0 apply specs/', 'provision; asks before anything destructive')
        .example('$0 apply specs/ --allow-destroy', 'also drop what the specs no longer name'),
      async (argv) => run('apply', argv),
    )
    .command(
      'destroy <specs>',
      'Remove what syncctl created for the specs (slot, publications, triggers, subscription); target data stays',
      (y) => options(y).example('$0 destroy specs/ --allow-destroy', 'tear down without asking'),
      async (argv) => run('destroy', argv),
    );
}

function options(y: Argv) {
  return y
    .positional('specs', { type: 'string', demandOption: true, describe: 'a spec file or a directory of *.sync.ts files' })
    .option('allow-destroy', { type: 'boolean', default: false, describe: 'run destructive changes without asking' })
    .option('sql', { type: 'boolean', default: false, describe: 'print the SQL of every change' })
    .option('json', { type: 'boolean', default: false, describe: 'print the plan and what was applied as JSON' });
}

async function run(mode: 'apply' | 'destroy', argv: { specs?: string; 'allow-destroy': boolean; sql: boolean; json: boolean }): Promise<void> {
  const syncs = await loadSpecs(argv.specs!);
  const [{ applyAll, destroyAll }, { countChanges, renderPlanJson, renderPlanText }] = await Promise.all([
    import('../plan/reconcile.ts'), import('../plan/render-plan.ts')]);
  const applied: Change[] = [];
  const options = {
    allowDestroy: argv['allow-destroy'],
    onPlan: (plans: readonly SyncPlan[]) => {
      if (!argv.json) print(renderPlanText(plans, { sql: argv.sql }));
    },
    confirm: (plans: readonly SyncPlan[]) =>
      askYes(`${countChanges(plans).delete} change(s) are destructive. Apply them?`),
    onCopyProgress: copyProgressReporter(),
    onChange: (change: Change) => {
      applied.push(change);
      if (!argv.json) print(`${SIGN[change.action]} ${change.side} ${change.subject}: done`);
    },
  };
  const plans = mode === 'apply' ? await applyAll(syncs, options) : await destroyAll(syncs, options);
  // Warnings (a slot left on an unreachable source) also go to stderr, where they are seen.
  for (const warning of plans.flatMap((p) => p.warnings)) process.stderr.write(`warning: ${warning}\n`);
  if (argv.json) {
    printJson({ ...(renderPlanJson(plans) as object), applied: applied.map((c) => c.id) });
  } else {
    print(applied.length === 0 ? `No changes. Nothing to ${mode}.` : `${mode === 'apply' ? 'Apply' : 'Destroy'} complete: ${applied.length} change(s).`);
  }
}
