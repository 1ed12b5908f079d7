/**
 * A table's copy is split into ctid block ranges of the source table's file, planned once and
 * kept in syncctl.snapshot_chunks so that a copy cut short resumes at its first unfinished chunk.
 *
 * Ranges mean something only within one file: VACUUM FULL, CLUSTER, pg_repack (and TRUNCATE, or
 * an ALTER TABLE that rewrites) give the table a new file (pg_relation_filenode) with the rows in
 * other places, so rows would move into ranges already copied and be missed. The plan records the
 * file; a resumed copy that finds another one, or a chunk read from another one, starts the table
 * over (see restartCopy).
 */
import { connect, type Connection } from '../db/connect.ts';
import type { ResolvedTable } from '../plan/plan-sync.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { quoteLiteral, quoteQualified } from '../sql/quote.ts';

/** Chunks copied at once, each on its own source and target session. */
export const PARALLEL = 2;
/** At most 8 kB × 16384 = 128 MB of heap per chunk, at least 8 MB (smaller chunks only add round trips). */
const MAX_CHUNK_BLOCKS = 16_384;
const MIN_CHUNK_BLOCKS = 1_024;

export interface Chunk {
  readonly index: number;
  readonly lower: number | null;
  readonly upper: number | null;
  readonly done: boolean;
  /** The source file the range belongs to (pg_relation_filenode; 0 for a partitioned table, which has none). */
  readonly filenode: string;
}

/**
 * Blocks per chunk: enough chunks that every parallel copier gets two (a table of a few thousand
 * blocks is otherwise one chunk copied by one connection). SYNCCTL_COPY_CHUNK_BLOCKS overrides it (tests).
 */
function chunkBlocks(blocks: number): number {
  const configured = Number(process.env['SYNCCTL_COPY_CHUNK_BLOCKS']);
  if (Number.isInteger(configured) && configured > 0) return configured;
  return Math.min(MAX_CHUNK_BLOCKS, Math.max(MIN_CHUNK_BLOCKS, Math.ceil(blocks / (2 * PARALLEL))));
}

/** The source table's current file, as the chunks' ranges refer to it. */
export async function sourceFilenode(source: Connection, resolved: ResolvedTable): Promise<string> {
  const { rows } = await source.query<{ filenode: string }>(
    `SELECT coalesce(pg_relation_filenode($1::regclass), 0)::text AS filenode`, [quoteQualified(resolved.table.source)]);
  return rows[0]!.filenode;
}

/**
 * The table's chunks: those planned earlier when they still refer to the table's current file
 * (`rewritten: false`), else none (`rewritten: true`: the caller starts the table over and plans again).
 */
export async function existingChunks(
  sync: LoadedSync, resolved: ResolvedTable, target: Connection,
): Promise<{ chunks: Chunk[]; rewritten: boolean }> {
  const existing = await target.query<{ chunk: number; lower_bound: string | null; upper_bound: string | null; done: boolean; filenode: string | null }>(
    `SELECT chunk, lower_bound, upper_bound, done_at IS NOT NULL AS done, source_filenode::text AS filenode FROM syncctl.snapshot_chunks
      WHERE sync_name = $1 AND table_name = $2 AND chunk >= 0 ORDER BY chunk`, [sync.name, resolved.table.name]);
  if (existing.rows.length === 0) return { chunks: [], rewritten: false };
  const source = await connect('source', sync.sourceUrl, 'syncctl copy');
  let current: string;
  try {
    current = await sourceFilenode(source, resolved);
  } finally {
    await source.close();
  }
  if (existing.rows.some((r) => r.filenode !== current)) return { chunks: [], rewritten: true };
  return {
    rewritten: false,
    chunks: existing.rows.map((r) => ({
      index: r.chunk, lower: r.lower_bound === null ? null : Number(r.lower_bound), upper: r.upper_bound === null ? null : Number(r.upper_bound),
      done: r.done, filenode: current,
    })),
  };
}

/** Splits the table as the snapshot sees it into block ranges of its current file, and records them. */
export async function planChunks(sync: LoadedSync, resolved: ResolvedTable, snapshotName: string, target: Connection): Promise<Chunk[]> {
  const { table } = resolved;
  const source = await connect('source', sync.sourceUrl, 'syncctl copy');
  let blocks = 0;
  let filenode: string;
  try {
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await source.query(`SET TRANSACTION SNAPSHOT ${quoteLiteral(snapshotName)}`);
    // The lock keeps the file from changing between reading its size and its name.
    await source.query(`LOCK TABLE ${quoteQualified(table.source)} IN ACCESS SHARE MODE`);
    // Partitioned tables have no blocks of their own: one chunk reads every partition.
    const r = await source.query<{ blocks: string }>(
      `SELECT CASE WHEN c.relkind = 'r' THEN pg_relation_size(c.oid) / current_setting('block_size')::int ELSE 0 END AS blocks
         FROM pg_class c WHERE c.oid = $1::regclass`, [quoteQualified(table.source)]);
    blocks = Number(r.rows[0]?.blocks ?? 0);
    filenode = await sourceFilenode(source, resolved);
    await source.query('COMMIT');
  } finally {
    await source.close();
  }
  const chunks: Chunk[] = [];
  const size = chunkBlocks(blocks);
  if (blocks <= size) chunks.push({ index: 0, lower: null, upper: null, done: false, filenode });
  else {
    for (let start = 0, i = 0; start < blocks; start += size, i++) {
      // The last chunk is open-ended: the table may grow while it is copied.
      const upper = start + size >= blocks ? null : start + size;
      chunks.push({ index: i, lower: start === 0 ? null : start, upper, done: false, filenode });
    }
  }
  for (const c of chunks) {
    await target.query(
      `INSERT INTO syncctl.snapshot_chunks (sync_name, table_name, chunk, lower_bound, upper_bound, source_filenode) VALUES ($1, $2, $3, $4, $5, $6::oid)
       ON CONFLICT DO NOTHING`, [sync.name, table.name, c.index, c.lower === null ? null : String(c.lower), c.upper === null ? null : String(c.upper), filenode]);
  }
  return chunks;
}
