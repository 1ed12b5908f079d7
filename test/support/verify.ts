/** `syncctl verify --json` as the verify tests run it, and ways to read its report. */
import { expect } from 'vitest';
import type { Difference, SyncVerification, TableVerification } from '../../src/verify/verification.ts';
import { runSyncctl, type CliResult } from './cli.ts';

/** Runs verify on one spec dir holding one sync; exit 0 (equal) and 1 (differences) are results, anything else a failure. */
export async function runVerify(dir: string, env: Record<string, string>, args: readonly string[] = []): Promise<{ result: CliResult; sync: SyncVerification }> {
  const result = await runSyncctl(['verify', dir, '--json', ...args], env, { timeoutMs: 120_000 });
  if (result.status !== 0 && result.status !== 1) throw new Error(`verify exited ${result.status}\n${result.stdout}\n${result.stderr}`);
  const all = JSON.parse(result.stdout) as SyncVerification[];
  expect(all).toHaveLength(1);
  return { result, sync: all[0]! };
}

export const tableReport = (s: SyncVerification, name: string): TableVerification => s.tables.find((t) => t.table === name)!;

/** Differences in key order, for comparisons that do not depend on the order verify found them in. */
export const sortedDifferences = (ds: readonly Difference[]): Difference[] => [...ds].sort((a, b) => JSON.stringify(a.key).localeCompare(JSON.stringify(b.key)));
