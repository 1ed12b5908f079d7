/**
 * Initial-copy progress: a one-line bar on a terminal (rows, rows/s, ETA by chunks done), JSON
 * lines on stderr otherwise.
 */
import type { CopyProgress } from '../snapshot/initial-copy.ts';

export function copyProgressReporter(stream: NodeJS.WriteStream = process.stderr): (p: CopyProgress) => void {
  return (p) => {
    const seconds = Math.max((Date.now() - p.startedAt) / 1000, 0.001);
    const rate = Math.round(p.rows / seconds);
    const eta = p.chunksDone > 0 ? Math.round((seconds / p.chunksDone) * (p.chunks - p.chunksDone)) : undefined;
    if (stream.isTTY) {
      const width = 24;
      const filled = Math.round((p.chunksDone / Math.max(p.chunks, 1)) * width);
      stream.write(`\r${p.table.padEnd(20)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.rows} rows  ${rate} rows/s` +
        `  ETA ${eta ?? '?'} s   ${p.chunksDone === p.chunks ? '\n' : ''}`);
    } else {
      stream.write(`${JSON.stringify({ level: 30, time: new Date().toISOString(), msg: 'copy progress', table: p.table, rows: p.rows,
        rowsPerSecond: rate, chunksDone: p.chunksDone, chunks: p.chunks, etaSeconds: eta ?? null })}\n`);
    }
  };
}
