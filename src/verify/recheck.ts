/**
 * The re-check: a candidate counts as a difference only once the table's applier (the worker, or
 * a native table's subscription: worker-position.ts) has applied past the source position it was
 * read at, and the source did not change the key meanwhile.
 *
 * Each round: wait until the applier passes L (a barrier written after the last source read),
 * read the target rows of the candidates, then their source rows, then write the next barrier.
 * The target rows hold the source as it was at some point between the previous source read and
 * this one (everything before L is applied, and nothing after this read can be). So when a key's
 * source rows are the very same row versions at both reads (same place, same xmin: no write in
 * between), the target must equal them; if it does not, that is a difference. A key the source
 * changed goes round again; one that still changes after MAX_ROUNDS is reported unconfirmed.
 *
 * An extra row (no source row at either read) must be seen twice: a row inserted and deleted
 * between two reads leaves no version to compare, and the target may hold it for a moment. Its
 * version is that of every source row of the key, the ones the filters drop too (read after the
 * compared rows, before the barrier): a row that left a filter, came back into it and left again
 * between two reads has no compared row at either, and the target may hold it as it was while in.
 */
import type { DatabasePool } from 'slonik';
import type { Connection } from '../db/connect.ts';
import { rawVersionsByKey, sourceRowsByKey, targetRowsByKey, versionOf, type ComparedRow, type KeyValues } from './read-rows.ts';
import { groupByKey, type Candidate } from './scan-table.ts';
import type { DifferenceKind } from './verification.ts';
import type { VerifyShape } from './verify-shape.ts';
import { applierOf, sourceBarrier, waitForApplier } from './worker-position.ts';

const MAX_ROUNDS = 8;

export interface Finding {
  readonly k: string;
  readonly kv: KeyValues;
  /** The key as jsonb text. */
  readonly kj: string;
  readonly kind: DifferenceKind;
  readonly columns: readonly string[];
}

export interface RecheckContext {
  readonly source: Connection;
  readonly target: Connection;
  readonly control: DatabasePool;
  readonly syncName: string;
  /** How long to wait for the applier in one round. */
  readonly timeoutMs: number;
}

export interface RecheckResult {
  readonly confirmed: readonly Finding[];
  readonly unconfirmed: readonly (Finding & { readonly reason: string })[];
  /** Set when the applier did not get past a read position in time. */
  readonly workerBehind?: string;
}

/** `readAt`: a barrier written after the source reads the candidates' versions come from. */
export async function recheck(ctx: RecheckContext, shape: VerifyShape, candidates: ReadonlyMap<string, Candidate>, readAt: string): Promise<RecheckResult> {
  const confirmed: Finding[] = [];
  const unconfirmed: (Finding & { reason: string })[] = [];
  const seenExtra = new Set<string>();
  let pending = new Map([...candidates].map(([k, c]) => [k, { ...c, last: undefined as Finding | undefined }]));
  const applier = applierOf(ctx.syncName, shape.table);
  let lsn = readAt;
  for (let round = 1; pending.size > 0 && round <= MAX_ROUNDS; round++) {
    const applied = await waitForApplier(ctx, applier, lsn, ctx.timeoutMs);
    if (!applied.reached) {
      const workerBehind = applied.behind;
      // What each key looks like now, for the report; one that agrees now is no difference.
      const { target, source } = await readBoth(ctx, shape, [...pending.values()].map((c) => c.kv));
      for (const [k, c] of pending) {
        const finding = compareRows(shape, k, c.kv, source.get(k) ?? [], target.get(k));
        if (finding !== undefined) unconfirmed.push({ ...finding, reason: workerBehind });
      }
      return { confirmed, unconfirmed, workerBehind };
    }
    const { target, source } = await readBoth(ctx, shape, [...pending.values()].map((c) => c.kv));
    const findings = new Map([...pending].map(([k, c]) => [k, compareRows(shape, k, c.kv, source.get(k) ?? [], target.get(k))]));
    // Read after the compared source rows and before the barrier: see the file's comment.
    const extras = [...findings].filter(([, f]) => f?.kind === 'extra').map(([k]) => pending.get(k)!.kv);
    const raw = extras.length > 0 ? await rawVersionsByKey(ctx.source, shape, extras) : undefined;
    lsn = await sourceBarrier(ctx.source, ctx.syncName);
    const next: typeof pending = new Map();
    for (const [k, c] of pending) {
      const finding = findings.get(k);
      if (finding === undefined) continue;
      const version = finding.kind === 'extra' && raw !== undefined ? (raw.get(k) ?? '') : versionOf(source.get(k) ?? []);
      if (version === c.sourceVersion && (finding.kind !== 'extra' || seenExtra.has(k))) {
        confirmed.push(finding);
        continue;
      }
      if (version === c.sourceVersion) seenExtra.add(k);
      else seenExtra.delete(k);
      next.set(k, { kv: c.kv, sourceVersion: version, last: finding });
    }
    pending = next;
  }
  for (const c of pending.values()) {
    unconfirmed.push({ ...c.last!, reason: `the source changed this key in each of ${MAX_ROUNDS} re-checks; run verify again` });
  }
  return { confirmed, unconfirmed };
}

/** The target rows of some keys, then their source rows (in that order: see the file's comment). */
async function readBoth(ctx: RecheckContext, shape: VerifyShape, keys: readonly KeyValues[]) {
  const target = new Map((await targetRowsByKey(ctx.target, shape, keys)).map((r) => [r.k, r]));
  const source = groupByKey(await sourceRowsByKey(ctx.source, ctx.target, shape, keys));
  return { target, source };
}

/**
 * The difference between a key's mapped source rows and its target row, or undefined when they
 * agree. Several source rows with one target key (the spec maps them together) never agree.
 */
export function compareRows(
  shape: VerifyShape, k: string, kv: KeyValues, source: readonly ComparedRow[], target: ComparedRow | undefined,
): Finding | undefined {
  const kj = target?.kj ?? source[0]?.kj ?? '';
  if (source.length === 0) return target === undefined ? undefined : { k, kv, kj, kind: 'extra', columns: [] };
  if (target === undefined) return { k, kv, kj, kind: 'missing', columns: [] };
  const differing = new Set<string>();
  for (const row of source) {
    shape.columns.forEach((c, i) => {
      if (row.vals[i] !== target.vals[i]) differing.add(c.name);
    });
  }
  if (differing.size === 0 && source.length === 1) return undefined;
  return { k, kv, kj, kind: 'different', columns: shape.columns.map((c) => c.name).filter((n) => differing.has(n)) };
}
