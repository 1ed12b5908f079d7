/**
 * Every malformed spec under test/fixtures/specs/invalid/<case>.sync.ts must produce exactly the
 * problem lines of <case>.expected.txt (formatProblem, file named relative to the fixtures
 * directory), and every case directory under invalid-multi/ exactly the lines of its expected.txt.
 * The error code is SPEC_INVALID unless a fixture says `// code: <CODE>`.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { formatProblem, SyncctlError } from '../../src/errors.ts';
import { loadSpecs } from '../../src/spec/load-specs.ts';

const specsDir = fileURLToPath(new URL('../fixtures/specs/', import.meta.url));
const invalidDir = path.join(specsDir, 'invalid');
const multiDir = path.join(specsDir, 'invalid-multi');

/** The environment every fixture loads with; no value may ever show up in a problem. */
const environment = {
  SOURCE_DATABASE_URL: 'postgres://syncctl:s0urce-Pa55word@source.example/crm',
  TARGET_DATABASE_URL: 'postgres://syncctl:t4rget-Pa55word@target.example/legacy',
  EMPTY_DATABASE_URL: '',
};
const secrets = ['s0urce-Pa55word', 't4rget-Pa55word', 'hunter2'];

function expectedCode(sources: readonly string[]): string {
  for (const source of sources) {
    const match = /^\/\/ code: ([A-Z_]+)$/m.exec(source);
    if (match) return match[1]!;
  }
  return 'SPEC_INVALID';
}

function readLines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '');
}

async function problemLines(target: string, base: string): Promise<{ code: string; lines: string[]; error: SyncctlError }> {
  const error = await loadSpecs(target, environment).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  if (!(error instanceof SyncctlError)) throw new Error(`expected ${target} to fail with a SyncctlError, got ${String(error)}`);
  const lines = error.problems.map((problem) => formatProblem(problem).replaceAll(base + path.sep, ''));
  return { code: error.code, lines, error };
}

function expectNoSecrets(error: SyncctlError): void {
  const text = [error.message, JSON.stringify(error.problems), JSON.stringify(error.details), String(error)].join('\n');
  for (const secret of secrets) expect(text).not.toContain(secret);
}

const invalidCases = readdirSync(invalidDir)
  .filter((name) => name.endsWith('.sync.ts'))
  .map((name) => name.slice(0, -'.sync.ts'.length))
  .sort();

const multiCases = readdirSync(multiDir)
  .filter((name) => statSync(path.join(multiDir, name)).isDirectory())
  .sort();

function specFilesBelow(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.sync.ts')).map((name) => path.join(dir, name));
}

describe('invalid spec fixtures', () => {
  test('there are at least 32 single-file cases, each with an expected.txt and no orphan expected.txt', () => {
    expect(invalidCases.length).toBeGreaterThanOrEqual(32);
    const expected = readdirSync(invalidDir).filter((name) => name.endsWith('.expected.txt')).map((name) => name.slice(0, -'.expected.txt'.length)).sort();
    expect(expected).toEqual(invalidCases);
  });

  test.each(invalidCases)('%s', async (name) => {
    const file = path.join(invalidDir, `${name}.sync.ts`);
    const { code, lines, error } = await problemLines(file, invalidDir);
    expect(lines).toEqual(readLines(path.join(invalidDir, `${name}.expected.txt`)));
    expect(code).toBe(expectedCode([readFileSync(file, 'utf8')]));
    expect(error.message).toBe(`${lines.length} problem${lines.length === 1 ? '' : 's'} in spec files`);
    expectNoSecrets(error);
  });
});

describe('invalid multi-file fixtures', () => {
  test('there are cases for duplicate sync names and a target table shared by two syncs', () => {
    expect(multiCases).toEqual(expect.arrayContaining(['duplicate-sync-name', 'shared-target-table']));
  });

  test.each(multiCases)('%s', async (name) => {
    const dir = path.join(multiDir, name);
    const { code, lines, error } = await problemLines(dir, dir);
    expect(lines).toEqual(readLines(path.join(dir, 'expected.txt')));
    expect(code).toBe(expectedCode(specFilesBelow(dir).map((file) => readFileSync(file, 'utf8'))));
    expectNoSecrets(error);
  });
});
