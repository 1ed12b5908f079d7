/**
 * Turns zod issues into Problems a person can act on: a dotted path inside the spec and an
 * "expected …" message. Messages never echo spec values (a misplaced connection string must not
 * end up in a terminal or a log); they name keys, and the kinds of values found.
 */
import type { z } from 'zod';
import type { Problem } from '../errors.ts';
import { isEnvRef, isSqlFragment } from './sql-fragment.ts';
import { conflictSchema, syncSchema, tableSchema } from './schema.ts';

type Issue = z.core.$ZodIssue;
type Path = readonly PropertyKey[];

export function formatPath(path: Path): string {
  // An empty key (a table or column named '') shows as "" so the path stays readable.
  return path.map((segment) => (segment === '' ? '""' : String(segment))).join('.');
}

export function valueAt(input: unknown, path: Path): unknown {
  let value = input;
  for (const segment of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

/** What a value is, in words, without showing it. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (isSqlFragment(value)) return 'a sql`...` fragment';
  if (isEnvRef(value)) return "env('...')";
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string': return 'a string';
    case 'number': return 'a number';
    case 'boolean': return 'a boolean';
    case 'bigint': return 'a bigint';
    case 'function': return 'a function';
    case 'symbol': return 'a symbol';
    default: return 'an object';
  }
}

export const STRATEGIES: readonly string[] = conflictSchema.options.map((option) => option.shape.strategy.value);

/** What belongs at a path of the spec, in words. */
function describeExpected(path: Path, fallback: string): string {
  const p = path.map(String);
  const last = p[p.length - 1];
  if (p.length === 0) return 'an object: export default defineSync({ name, source, target, tables })';
  if (p.length === 1) {
    if (last === 'name') return 'a sync name such as laas_to_orgs';
    if (last === 'tables') return 'an object of tables such as { users: { from, to, key, columns } }';
  }
  if (p[0] === 'tables') {
    if (p.length === 2) return 'a table such as { from, to, key, columns }';
    if (p.length === 3) {
      switch (last) {
        case 'from': return 'a source table name such as public.users';
        case 'to': return 'a target table name such as public.users';
        case 'key': return "an array of target column names such as ['id']";
        case 'columns': return 'an object of target_column: sql`...`';
        case 'conflict': return "an object such as { strategy: 'source-wins' }";
      }
    }
    if (p.length === 4 && p[2] === 'key') return 'a column name';
    if (p[2] === 'conflict' && p.length === 4) {
      if (last === 'column') return 'the column last-write-wins compares, such as updated_at';
      if (last === 'owners') return "an object of column: 'source' | 'target'";
      if (last === 'columns') return 'an object of column: sql`...` over incoming and current';
    }
  }
  return fallback;
}

function describeZodType(expected: string): string {
  switch (expected) {
    case 'object':
    case 'record':
    case 'map': return 'an object';
    case 'array':
    case 'tuple': return 'an array';
    case 'string': return 'a string';
    case 'number':
    case 'int': return 'a number';
    case 'boolean': return 'a boolean';
    default: return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
  }
}

/** The keys an object at `path` accepts, for "did you mean" hints. */
function knownKeys(input: unknown, path: Path): readonly string[] {
  const p = path.map(String);
  if (p.length === 0) return Object.keys(syncSchema.shape);
  if (p.length === 2 && p[0] === 'tables') return Object.keys(tableSchema.shape);
  if (p.length === 3 && p[0] === 'tables' && p[2] === 'conflict') {
    const strategy = valueAt(input, [...path, 'strategy']);
    const option = conflictSchema.options.find((o) => o.shape.strategy.value === strategy);
    if (option) return Object.keys(option.shape);
  }
  return [];
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(above + 1, row[j - 1]! + 1, diagonal + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

function unknownKeyMessage(key: string, known: readonly string[]): string {
  const base = `unknown key "${key}"`;
  if (known.length === 0) return base;
  if (known.length === 1) return `${base}: expected only ${known[0]!}`;
  const best = known
    .map((candidate) => ({ candidate, distance: editDistance(key, candidate) }))
    .sort((x, y) => x.distance - y.distance)[0]!;
  if (best.distance <= Math.max(1, Math.floor(best.candidate.length / 3))) return `${base}: did you mean "${best.candidate}"?`;
  return `${base}: expected one of ${known.join(', ')}`;
}

const SQL_EXPECTED = 'expected a sql`...` fragment';

function messageFor(issue: Issue, input: unknown, path: Path): string {
  const value = valueAt(input, path);
  switch (issue.code) {
    case 'invalid_type': {
      const expected = describeExpected(path, describeZodType(issue.expected));
      if (value === undefined) return `missing: expected ${expected}`;
      return `expected ${expected}, got ${describeValue(value)}`;
    }
    case 'invalid_value': {
      const values = issue.values.map(String);
      if (value === undefined) return `missing: expected one of ${values.join(', ')}`;
      return values.length === 1 ? `expected ${values[0]}` : `expected one of ${values.join(', ')}`;
    }
    case 'invalid_union': {
      if (issue.discriminator !== undefined) {
        const options = 'options' in issue && issue.options ? issue.options.map(String) : STRATEGIES;
        const message = `expected ${issue.discriminator} to be one of ${options.join(', ')}`;
        return value === undefined ? `missing: ${message}` : message;
      }
      return `expected ${describeExpected(path, 'one of the accepted forms')}`;
    }
    case 'invalid_key': {
      const inner = issue.issues[0];
      return inner ? messageFor(inner, undefined, []) : 'invalid name';
    }
    case 'custom': {
      if (value === undefined && path.length > 0) return `missing: ${issue.message}`;
      if (issue.message === SQL_EXPECTED) {
        if (typeof value === 'string') return `${SQL_EXPECTED}, got a plain string: write sql\`...\` instead of quotes`;
        return `${SQL_EXPECTED}, got ${describeValue(value)}`;
      }
      return issue.message;
    }
    case 'too_small':
    case 'too_big':
    case 'invalid_format':
      // The schema's own messages already read "expected …"; zod's defaults are reworded.
      if (issue.message.startsWith('expected')) return issue.message;
      if (issue.code === 'too_small') return `expected at least ${String(issue.minimum)} ${issue.origin === 'array' ? 'items' : 'characters'}`;
      if (issue.code === 'too_big') return `expected at most ${String(issue.maximum)} ${issue.origin === 'array' ? 'items' : 'characters'}`;
      return `expected ${issue.format}`;
    default:
      return issue.message;
  }
}

/** One Problem per issue; an unrecognized_keys issue gives one Problem per key, with the key in the path. */
export function zodIssuesToProblems(issues: readonly Issue[], input: unknown, file: string): Problem[] {
  const problems: Problem[] = [];
  for (const issue of issues) {
    const path = issue.path;
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(input, path);
      for (const key of issue.keys) {
        problems.push({ file, path: formatPath([...path, key]), message: unknownKeyMessage(key, known) });
      }
      continue;
    }
    problems.push({ file, ...pathProp(path), message: messageFor(issue, input, path) });
  }
  return problems;
}

function pathProp(path: Path): { path?: string } {
  return path.length === 0 ? {} : { path: formatPath(path) };
}
