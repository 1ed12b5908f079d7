/** The run's log: progress lines on stderr and in bench/out/<time>-<mode>/details.log, where the run's raw files go too. */
import { appendFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { BENCH_DIR, MODE } from './config.ts';
import { now } from './db.ts';

export const started = now();
const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
export const OUT = path.join(BENCH_DIR, 'out', `${stamp}-${MODE}`);
mkdirSync(OUT, { recursive: true });
const DETAILS = path.join(OUT, 'details.log');

export function say(line: string): void {
  // In tenths first, so that 119.96 s reads 02:00.0, not 01:60.0.
  const tenths = Math.round((now() - started) * 10);
  const text = `[${String(Math.floor(tenths / 600)).padStart(2, '0')}:${((tenths % 600) / 10).toFixed(1).padStart(4, '0')}] ${line}`;
  process.stderr.write(`${text}\n`);
  appendFileSync(DETAILS, `${text}\n`);
}
