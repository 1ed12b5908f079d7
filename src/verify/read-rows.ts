/**
 * Reading a table's rows for some keys, on both sides, as `syncctl verify` compares them: the
 * target's as they are, the source's mapped (on the source, or staged and mapped in the target).
 */
import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { Connection } from '../db/connect.ts';
import {
  directRowSource, mappedRowSource, renderCopyIntoStaged, renderCreateStaged, renderDropStaged, renderInsertStaged, renderMapStaged,
  renderRawVersionsByKey, renderRowsByKey, renderShipAll, renderShipByKey, targetRowSource,
} from './render-verify-sql.ts';
import type { VerifyShape } from './verify-shape.ts';

/** One row as compared: its key, every compared column as text, and for a source row its place and version. */
export interface ComparedRow {
  /** The key as one text (ROW(key…)::text): what both sides are matched by. */
  readonly k: string;
  readonly kv: readonly (string | null)[];
  /** The key as jsonb text, as syncctl.local_changes and sync_conflicts hold it. */
  readonly kj: string;
  readonly vals: readonly (string | null)[];
  /** Source rows: the relation, ctid and xmin, as text. */
  readonly rel?: string;
  readonly tid?: string;
  readonly xmin?: string;
}

/** A key's values as text, one per key column. */
export type KeyValues = readonly (string | null)[];

/** Per key column, the keys' values: the parameters of renderRowsByKey. */
export function keyParameters(shape: VerifyShape, keys: readonly KeyValues[]): (string | null)[][] {
  return shape.key.map((_, i) => keys.map((k) => k[i] ?? null));
}

export async function targetRowsByKey(target: Connection, shape: VerifyShape, keys: readonly KeyValues[]): Promise<ComparedRow[]> {
  if (keys.length === 0) return [];
  return (await target.query<ComparedRow>(renderRowsByKey(shape, targetRowSource(shape)), keyParameters(shape, keys))).rows;
}

/**
 * The mapped source rows of some keys (a key may have several source rows, or none). On the
 * staged path they are shipped into the target and mapped there: by key when the key is a copy of
 * source columns, else the whole table (only the target can tell which rows map to a key).
 */
export async function sourceRowsByKey(source: Connection, target: Connection, shape: VerifyShape, keys: readonly KeyValues[]): Promise<ComparedRow[]> {
  if (keys.length === 0) return [];
  if (shape.source.kind === 'direct') {
    return (await source.query<ComparedRow>(renderRowsByKey(shape, directRowSource(shape)), keyParameters(shape, keys))).rows;
  }
  const staged = shape.source;
  return withStagedRows(target, shape, async () => {
    if (staged.keySources !== undefined) await shipByKey(source, target, shape, keys);
    else await shipAll(source, target, shape);
    await target.query(renderMapStaged(shape));
    return (await target.query<ComparedRow>(renderRowsByKey(shape, mappedRowSource(shape)), keyParameters(shape, keys))).rows;
  });
}

/** Runs `work` with the staging tables created empty, and drops them after. */
export async function withStagedRows<T>(target: Connection, shape: VerifyShape, work: () => Promise<T>): Promise<T> {
  await target.query(renderDropStaged());
  await target.query(renderCreateStaged(shape));
  try {
    return await work();
  } finally {
    await target.query(renderDropStaged()).catch(() => {});
  }
}

/** Every row the publication's filter passes, COPYed from the source into the staging table. */
export async function shipAll(source: Connection, target: Connection, shape: VerifyShape): Promise<void> {
  const out = source.client.query(copyTo(`COPY (${renderShipAll(shape)}) TO STDOUT`));
  const sink = target.client.query(copyFrom(renderCopyIntoStaged(shape)));
  await pipeline(out, sink);
}

async function shipByKey(source: Connection, target: Connection, shape: VerifyShape, keys: readonly KeyValues[]): Promise<void> {
  const { rows } = await source.query<{ r: string }>(renderShipByKey(shape), keyParameters(shape, keys));
  if (rows.length > 0) await target.query(renderInsertStaged(shape), [`[${rows.map((r) => r.r).join(',')}]`]);
}

/**
 * Per key, the versions of all its source rows, those the filters drop too (renderRawVersionsByKey);
 * undefined when the table has no filter or the rows cannot be found by key.
 */
export async function rawVersionsByKey(source: Connection, shape: VerifyShape, keys: readonly KeyValues[]): Promise<Map<string, string> | undefined> {
  const sql = renderRawVersionsByKey(shape);
  if (sql === undefined) return undefined;
  const byKey = new Map<string, { rel: string; tid: string; xmin: string }[]>();
  if (keys.length > 0) {
    for (const r of (await source.query<{ k: string; rel: string; tid: string; xmin: string }>(sql, keyParameters(shape, keys))).rows) {
      byKey.set(r.k, [...(byKey.get(r.k) ?? []), r]);
    }
  }
  return new Map([...byKey].map(([k, rows]) => [k, versionOf(rows)]));
}

/** Which source row versions a key had when read: '' when it had none. Equal texts mean no source write touched the key in between. */
export function versionOf(rows: readonly Pick<ComparedRow, 'rel' | 'tid' | 'xmin'>[]): string {
  return rows.map((r) => `${r.rel}:${r.tid}:${r.xmin}`).sort().join(' ');
}
