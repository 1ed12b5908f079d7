/**
 * One table of `syncctl verify`: the path (where the mapping is evaluated), the first pass, the
 * re-check of its candidates, and the differences a conflict rule keeps set apart. A native table
 * is compared through its identity mapping (native-mirror.ts).
 */
import { postgresMessage } from '../catalog/analyze-mapping.ts';
import type { Logger } from '../observe/logger.ts';
import type { ResolvedTable } from '../plan/plan-sync.ts';
import { decideCopyPath, type CopyPath, type ValueSettings } from '../snapshot/source-evaluation.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { keptByRule } from './kept-by-rule.ts';
import { nativeIdentity } from './native-mirror.ts';
import { recheck, type Finding, type RecheckContext } from './recheck.ts';
import { scanTable } from './scan-table.ts';
import type { Difference, TableVerification } from './verification.ts';
import { buildVerifyShape, type VerifyShape } from './verify-shape.ts';
import { sourceBarrier } from './worker-position.ts';

export interface VerifySession extends RecheckContext {
  readonly sync: LoadedSync;
  readonly settings: ValueSettings;
  /** Both servers' hash functions give the same values (the same byte order): the direct path can compare hashes. */
  readonly sameHashes: boolean;
  readonly logger?: Logger;
}

/** A verified table, with what a repair needs: the confirmed differences that are not kept by a rule. */
export interface CheckedTable {
  readonly report: TableVerification;
  readonly shape?: VerifyShape;
  readonly drift: readonly Finding[];
  /** Set when the table's applier did not get past a read position in time. */
  readonly workerBehind?: string;
}

export async function verifyTable(session: VerifySession, planned: ResolvedTable): Promise<CheckedTable> {
  const resolved = planned.table.mode === 'native' ? nativeIdentity(planned) : planned;
  const { table } = resolved;
  const path = await copyPath(session, resolved);
  const shape = buildVerifyShape(resolved, path);
  if ('unverifiable' in shape) return { report: skippedTable(table.name, table.target, shape.unverifiable), drift: [] };
  const started = Date.now();
  const scan = await scanTable(session.source, session.target, shape);
  const scanned = Date.now();
  let confirmed: readonly Finding[] = [];
  let unconfirmed: readonly (Finding & { reason: string })[] = [];
  let workerBehind: string | undefined;
  if (scan.candidates.size > 0) {
    const result = await recheck(session, shape, scan.candidates, await sourceBarrier(session.source, session.sync.name));
    ({ confirmed, unconfirmed, workerBehind } = result);
  }
  // A row a rule keeps is not drift, whether or not the re-check could confirm it.
  const kept = await keptByRule(session.control, session.target, session.sync.name, shape, [...confirmed, ...unconfirmed]);
  // A native subscription applies every TRUNCATE it is sent.
  if (table.truncate === 'ignore' && table.mode === 'mapped') {
    for (const f of [...confirmed, ...unconfirmed]) {
      if (f.kind === 'extra' && !kept.has(f.kj)) kept.set(f.kj, `truncate: 'ignore' keeps the target's rows when the source table is truncated`);
    }
  }
  const drift = confirmed.filter((f) => !kept.has(f.kj));
  session.logger?.info({ table: table.name, path: shape.source.kind, rows: scan.sourceRows, candidates: scan.candidates.size, differences: drift.length,
    ms: Date.now() - started, scanMs: scanned - started }, 'verified');
  return {
    shape, drift, ...(workerBehind !== undefined ? { workerBehind } : {}),
    report: {
      table: table.name, target: `${table.target.schema}.${table.target.name}`, path: shape.source.kind, pathReason: shape.source.reason,
      rows: { source: scan.sourceRows, target: scan.targetRows }, ...(shape.targetOwned.length > 0 ? { targetOwned: shape.targetOwned } : {}),
      rechecked: scan.candidates.size,
      differences: drift.map((f) => difference(shape, f)),
      excluded: [...confirmed, ...unconfirmed].filter((f) => kept.has(f.kj)).map((f) => ({ ...difference(shape, f), reason: kept.get(f.kj)! })),
      unconfirmed: unconfirmed.filter((f) => !kept.has(f.kj)).map((f) => ({ ...difference(shape, f), reason: f.reason })),
    },
  };
}

/**
 * As the initial copy decides it; a source that cannot be probed keeps the staged path. A native
 * table's identity mapping is probed as a mapped table's would be: bare columns and their types.
 */
async function copyPath(session: VerifySession, resolved: ResolvedTable): Promise<CopyPath> {
  if (!session.sameHashes) return { direct: false, reason: 'the two servers hash values differently (another byte order): rows are compared in the target' };
  try {
    return await decideCopyPath(session.source, session.target, { ...resolved, table: { ...resolved.table, mode: 'mapped' } }, session.settings);
  } catch (error) {
    await session.source.query('ROLLBACK').catch(() => {});
    return { direct: false, reason: `the source could not be probed: ${postgresMessage(error)}` };
  }
}

export function difference(shape: VerifyShape, f: Finding): Difference {
  return { key: Object.fromEntries(shape.key.map((k, i) => [k.name, f.kv[i] ?? null])), kind: f.kind, columns: f.columns };
}

export function skippedTable(table: string, target: { schema: string; name: string }, reason: string): TableVerification {
  return { table, target: `${target.schema}.${target.name}`, skipped: reason, rows: { source: 0, target: 0 }, rechecked: 0, differences: [], excluded: [], unconfirmed: [] };
}

