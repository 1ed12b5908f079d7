/**
 * plan / apply / destroy over a set of spec files: the library the CLI calls. Each sync gets its
 * own source and target connections; apply holds the sync's advisory lock on the target from
 * observing until the last change, so a concurrent apply waits and then finds nothing to do.
 */
import { connect, type Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { applyChange, withApplyLock } from './apply-plan.ts';
import type { Change } from './change.ts';
import type { CopyProgress } from '../snapshot/initial-copy.ts';
import { planDestroy, planSync, type SyncPlan } from './plan-sync.ts';
import { ApplyHistory } from '../history/record-apply.ts';

export interface ApplyOptions {
  /** Destructive changes run only with this, or when `confirm` says yes. */
  readonly allowDestroy?: boolean;
  /** Shown the plan when it has destructive changes and allowDestroy is off; true goes on. */
  readonly confirm?: (plans: readonly SyncPlan[]) => Promise<boolean>;
  /** Shown the plan before anything runs. */
  readonly onPlan?: (plans: readonly SyncPlan[]) => void;
  readonly onChange?: (change: Change) => void;
  readonly onCopyProgress?: (progress: CopyProgress) => void;
}

export async function planAll(syncs: readonly LoadedSync[]): Promise<SyncPlan[]> {
  const plans: SyncPlan[] = [];
  for (const sync of syncs) {
    plans.push(await withConnections(sync, (db) => planSync(sync, db)));
  }
  return plans;
}

export async function applyAll(syncs: readonly LoadedSync[], options: ApplyOptions = {}): Promise<SyncPlan[]> {
  return runLocked(syncs, (sync, db) => planSync(sync, db), options);
}

export async function destroyAll(syncs: readonly LoadedSync[], options: ApplyOptions = {}): Promise<SyncPlan[]> {
  const opened: Opened[] = [];
  try {
    for (const sync of [...syncs].sort((a, b) => a.name.localeCompare(b.name))) {
      const target = await connect('target', sync.targetUrl);
      // An unreachable source must not keep syncctl from cleaning the target; plan says what is left behind.
      const source = await connect('source', sync.sourceUrl).catch(() => undefined);
      opened.push({ sync, target, source });
    }
    return await lockedApply(opened, (sync, target, source) => planDestroy(sync, target, source), options);
  } finally {
    await closeAll(opened);
  }
}

interface Opened {
  readonly sync: LoadedSync;
  readonly target: Connection;
  readonly source: Connection | undefined;
}

async function runLocked(
  syncs: readonly LoadedSync[],
  makePlan: (sync: LoadedSync, db: { source: Connection; target: Connection }) => Promise<SyncPlan>,
  options: ApplyOptions,
): Promise<SyncPlan[]> {
  const opened: Opened[] = [];
  try {
    for (const sync of [...syncs].sort((a, b) => a.name.localeCompare(b.name))) {
      const target = await connect('target', sync.targetUrl);
      const source = await connect('source', sync.sourceUrl).catch(async (error: unknown) => {
        await target.close();
        throw error;
      });
      opened.push({ sync, target, source });
    }
    return await lockedApply(opened, (sync, target, source) => makePlan(sync, { source: source!, target }), options, true);
  } finally {
    await closeAll(opened);
  }
}

/** Takes every sync's lock (in name order, so two applies cannot deadlock), plans, confirms, applies. */
async function lockedApply(
  opened: readonly Opened[],
  makePlan: (sync: LoadedSync, target: Connection, source: Connection | undefined) => Promise<SyncPlan>,
  options: ApplyOptions,
  recordRuns = false,
): Promise<SyncPlan[]> {
  const step = async (i: number, plans: SyncPlan[]): Promise<SyncPlan[]> => {
    if (i === opened.length) {
      await confirmAndApply(plans, opened, options, recordRuns);
      return plans;
    }
    const { sync, target, source } = opened[i]!;
    return withApplyLock(target, sync.name, async () => step(i + 1, [...plans, await makePlan(sync, target, source)]));
  };
  return step(0, []);
}

async function confirmAndApply(plans: readonly SyncPlan[], opened: readonly Opened[], options: ApplyOptions, recordRuns: boolean): Promise<void> {
  options.onPlan?.(plans);
  const destructive = plans.flatMap((p) => p.changes).filter((c) => c.destructive);
  if (destructive.length > 0 && !options.allowDestroy) {
    const yes = options.confirm ? await options.confirm(plans) : false;
    if (!yes) {
      throw new SyncctlError('DESTROY_REFUSED',
        `the plan has ${destructive.length} destructive change(s) (${destructive.map((c) => c.id).join(', ')}); ` +
        'nothing was applied. Re-run with --allow-destroy to apply them', { details: { changes: destructive.map((c) => c.id) } });
    }
  }
  for (const plan of plans) {
    const conns = opened.find((o) => o.sync === plan.sync)!;
    // Run history (syncctl.runs): one 'apply' run per sync, one 'copy' run per table copied.
    const history = recordRuns ? new ApplyHistory(conns.target, plan.sync.name) : undefined;
    const hooks = history ? { ...options, onCopyProgress: (p: CopyProgress) => { history.copyProgress(p); options.onCopyProgress?.(p); } } : options;
    try {
      for (const change of plan.changes) {
        if (change.side === 'source' && !conns.source) continue;
        await history?.beforeChange(change);
        await applyChange(change, { source: conns.source!, target: conns.target }, plan, hooks);
        await history?.afterChange(change);
      }
    } catch (error) {
      await history?.finish(error);
      throw error;
    }
    await history?.finish();
  }
}

async function withConnections<T>(sync: LoadedSync, fn: (db: { source: Connection; target: Connection }) => Promise<T>): Promise<T> {
  const source = await connect('source', sync.sourceUrl);
  try {
    const target = await connect('target', sync.targetUrl);
    try {
      return await fn({ source, target });
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

async function closeAll(opened: readonly Opened[]): Promise<void> {
  await Promise.all(opened.flatMap((o) => [o.target.close(), o.source?.close()]));
}
