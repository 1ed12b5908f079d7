/**
 * Validation of one spec file's default export: the zod schema, then the rules that span fields
 * (keys must be mapped, native tables are plain mirrors, …), then env() resolution. Rules across
 * files live in load-specs.ts.
 */
import type { Problem } from '../errors.ts';
import { formatQualifiedName, parseQualifiedName, type QualifiedName } from '../sql/quote.ts';
import type { LoadedSync, LoadedTable } from './loaded-sync.ts';
import { MAX_IDENTIFIER_BYTES, syncSchema, type SyncSpec, type TableSpec } from './schema.ts';
import { isEnvRef, type EnvRef } from './sql-fragment.ts';
import { zodIssuesToProblems } from './zod-problems.ts';

/** Which error code a problem stands for; the loader picks the error's code from these. */
export type ProblemKind = 'invalid' | 'load' | 'env';

export interface KindedProblem extends Problem {
  readonly kind: ProblemKind;
}

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** What cross-file rules need from a file whose schema validated (even when env() did not resolve). */
export interface ValidatedSync {
  readonly file: string;
  readonly displayFile: string;
  readonly name: string;
  readonly sourceEnv: string;
  readonly targetEnv: string;
  /** Tables whose from/to parsed, in spec order. */
  readonly tables: readonly { readonly name: string; readonly source: QualifiedName; readonly target: QualifiedName }[];
}

export interface SpecResult {
  readonly problems: KindedProblem[];
  readonly validated?: ValidatedSync;
  /** Present when the file has no problem of its own. */
  readonly loaded?: LoadedSync;
}

function invalid(file: string, path: string | undefined, message: string): KindedProblem {
  return path === undefined ? { kind: 'invalid', file, message } : { kind: 'invalid', file, path, message };
}

/**
 * Resolves env('X') at `path` when the value is an env reference. Never puts the value in a
 * message, and never echoes an invalid name either (it might be a connection string).
 */
function resolveEnv(
  raw: unknown,
  path: 'source' | 'target',
  displayFile: string,
  environment: NodeJS.ProcessEnv,
  problems: KindedProblem[],
): string | undefined {
  if (!isEnvRef(raw)) return undefined;
  const ref: EnvRef = raw;
  if (typeof ref.name !== 'string' || !ENV_NAME.test(ref.name)) {
    problems.push(invalid(displayFile, path, "expected env('NAME') with a variable name of letters, digits and underscores, not starting with a digit"));
    return undefined;
  }
  const value = environment[ref.name];
  if (value === undefined) {
    problems.push({ kind: 'env', file: displayFile, path, message: `environment variable ${ref.name} is not set` });
    return undefined;
  }
  if (value === '') {
    problems.push({ kind: 'env', file: displayFile, path, message: `environment variable ${ref.name} is empty` });
    return undefined;
  }
  return value;
}

function parseTableName(text: string, path: string, displayFile: string, problems: KindedProblem[]): QualifiedName | undefined {
  const parsed = parseQualifiedName(text);
  if (!parsed) {
    problems.push(invalid(displayFile, path, 'expected schema.table, e.g. public.users or "My Schema"."My Table" (double-quote names with dots, quotes, spaces or capitals)'));
    return undefined;
  }
  for (const part of [parsed.schema, parsed.name]) {
    if (part.length === 0) {
      problems.push(invalid(displayFile, path, 'expected schema.table with non-empty names'));
      return undefined;
    }
    if (part.includes('\0')) {
      problems.push(invalid(displayFile, path, 'a name cannot contain a NUL byte'));
      return undefined;
    }
    if (Buffer.byteLength(part) > MAX_IDENTIFIER_BYTES) {
      problems.push(invalid(displayFile, path, `expected at most ${MAX_IDENTIFIER_BYTES} bytes per name (Postgres's identifier limit)`));
      return undefined;
    }
  }
  return parsed;
}

function sameName(a: QualifiedName, b: QualifiedName): boolean {
  return a.schema === b.schema && a.name === b.name;
}

function checkTable(
  tableName: string,
  table: TableSpec,
  raw: Record<string, unknown>,
  displayFile: string,
  problems: KindedProblem[],
): { source?: QualifiedName; target?: QualifiedName } {
  const at = (...segments: (string | number)[]) => ['tables', tableName, ...segments].join('.');
  const source = parseTableName(table.from, at('from'), displayFile, problems);
  const target = parseTableName(table.to, at('to'), displayFile, problems);

  for (const [column, fragment] of Object.entries(table.columns ?? {})) {
    if (fragment.text === '') problems.push(invalid(displayFile, at('columns', column), 'expected a non-empty SQL expression'));
  }
  if (table.where !== undefined && table.where.text === '') {
    problems.push(invalid(displayFile, at('where'), 'expected a non-empty SQL expression (or leave where out)'));
  }

  if (table.mode === 'native') {
    if (raw['columns'] !== undefined) {
      problems.push(invalid(displayFile, at('columns'), "native tables are plain mirrors: remove columns or use mode: 'mapped'"));
    }
    if (table.conflict.strategy !== 'source-wins') {
      problems.push(invalid(displayFile, at('conflict', 'strategy'), "native subscriptions cannot resolve conflicts: expected source-wins (the default) or use mode: 'mapped'"));
    }
    if (source && target && !sameName(source, target)) {
      problems.push(invalid(displayFile, at('to'), `native subscriptions write to the table of the same name: expected ${formatQualifiedName(source)} or use mode: 'mapped'`));
    }
    return { ...(source ? { source } : {}), ...(target ? { target } : {}) };
  }

  // mapped
  const mapped = new Set(Object.keys(table.columns ?? {}));
  if (table.columns === undefined) {
    problems.push(invalid(displayFile, at('columns'), 'missing: expected an object of target_column: sql`...` (mapped tables need columns)'));
  } else if (mapped.size === 0) {
    problems.push(invalid(displayFile, at('columns'), 'expected at least one column'));
  }
  if (table.key === undefined) {
    problems.push(invalid(displayFile, at('key'), "missing: expected an array of target column names such as ['id'] (mapped tables need a key)"));
  } else {
    const seen = new Set<string>();
    table.key.forEach((column, index) => {
      if (seen.has(column)) problems.push(invalid(displayFile, at('key', index), `key column "${column}" is listed twice`));
      else if (mapped.size > 0 && !mapped.has(column)) problems.push(invalid(displayFile, at('key', index), `key column "${column}" is not mapped in columns`));
      seen.add(column);
    });
  }
  if (mapped.size > 0) {
    const conflict = table.conflict;
    if (conflict.strategy === 'last-write-wins' && !mapped.has(conflict.column)) {
      problems.push(invalid(displayFile, at('conflict', 'column'), `last-write-wins column "${conflict.column}" is not mapped in columns`));
    }
    if (conflict.strategy === 'fields') {
      for (const column of Object.keys(conflict.owners)) {
        if (!mapped.has(column)) problems.push(invalid(displayFile, at('conflict', 'owners', column), `column "${column}" is not mapped in columns`));
      }
    }
    if (conflict.strategy === 'merge') {
      const keys = new Set(table.key ?? []);
      for (const [column, fragment] of Object.entries(conflict.columns)) {
        if (!mapped.has(column)) problems.push(invalid(displayFile, at('conflict', 'columns', column), `column "${column}" is not mapped in columns`));
        else if (keys.has(column)) problems.push(invalid(displayFile, at('conflict', 'columns', column), `column "${column}" is a key column: the key identifies the row on both sides and is never merged`));
        else if (fragment.text === '') problems.push(invalid(displayFile, at('conflict', 'columns', column), 'expected a non-empty SQL expression'));
      }
      const otherwise = conflict.otherwise;
      if (otherwise?.strategy === 'last-write-wins' && !mapped.has(otherwise.column)) {
        problems.push(invalid(displayFile, at('conflict', 'otherwise', 'column'), `last-write-wins column "${otherwise.column}" is not mapped in columns`));
      }
      if (otherwise?.strategy === 'fields') {
        for (const column of Object.keys(otherwise.owners)) {
          if (!mapped.has(column)) problems.push(invalid(displayFile, at('conflict', 'otherwise', 'owners', column), `column "${column}" is not mapped in columns`));
        }
      }
    }
  }
  return { ...(source ? { source } : {}), ...(target ? { target } : {}) };
}

/**
 * Several mapped tables may read one source table (one decoded change feeds each of them; plan
 * publishes the table once for all). A native table may not share its source table: its
 * subscription mirrors the table whole, through a publication and replica identity of its own
 * that mapped readers could not shape.
 */
function sharedSourceProblem(
  source: QualifiedName, mode: 'mapped' | 'native', readers: readonly { name: string; mode: 'mapped' | 'native' }[],
): string | undefined {
  const native = readers.find((r) => r.mode === 'native');
  if (native) {
    return `source table ${formatQualifiedName(source)} is already mirrored by tables.${native.name} (mode: 'native'): ` +
      `a native subscription mirrors its source table alone; use mode: 'mapped' for both to feed several target tables from it`;
  }
  const first = readers[0];
  if (first && mode === 'native') {
    return `source table ${formatQualifiedName(source)} is already read by tables.${first.name}: ` +
      `a native subscription mirrors its source table alone; use mode: 'mapped' to feed several target tables from it`;
  }
  return undefined;
}

export function validateSpec(file: string, displayFile: string, exported: unknown, environment: NodeJS.ProcessEnv): SpecResult {
  const problems: KindedProblem[] = [];
  const parsed = syncSchema.safeParse(exported);
  if (!parsed.success) {
    for (const problem of zodIssuesToProblems(parsed.error.issues, exported, displayFile)) problems.push({ kind: 'invalid', ...problem });
  }
  const raw = (typeof exported === 'object' && exported !== null ? exported : {}) as Record<string, unknown>;
  const sourceUrl = resolveEnv(raw['source'], 'source', displayFile, environment, problems);
  const targetUrl = resolveEnv(raw['target'], 'target', displayFile, environment, problems);
  if (!parsed.success) return { problems };

  const spec: SyncSpec = parsed.data;
  const rawTables = raw['tables'] as Record<string, Record<string, unknown>>;
  const sourceEnv = (raw['source'] as EnvRef).name;
  const targetEnv = (raw['target'] as EnvRef).name;
  // An invalid name may be a pasted connection string: it must not reach any message below.
  const envNamesValid = ENV_NAME.test(sourceEnv) && ENV_NAME.test(targetEnv);
  const tables: { name: string; source: QualifiedName; target: QualifiedName }[] = [];
  const loadedTables: LoadedTable[] = [];
  const bySource = new Map<string, { name: string; mode: 'mapped' | 'native' }[]>();
  const byTarget = new Map<string, string>();

  for (const [tableName, table] of Object.entries(spec.tables)) {
    const { source, target } = checkTable(tableName, table, rawTables[tableName] ?? {}, displayFile, problems);
    if (source) {
      const id = `${source.schema}\0${source.name}`;
      const readers = bySource.get(id) ?? [];
      const problem = sharedSourceProblem(source, table.mode, readers);
      if (problem !== undefined) problems.push(invalid(displayFile, `tables.${tableName}.from`, problem));
      else bySource.set(id, [...readers, { name: tableName, mode: table.mode }]);
    }
    if (target) {
      const id = `${target.schema}\0${target.name}`;
      const first = byTarget.get(id);
      if (first !== undefined) {
        problems.push(invalid(displayFile, `tables.${tableName}.to`, `target table ${formatQualifiedName(target)} is already the target of tables.${first}`));
      } else byTarget.set(id, tableName);
    }
    if (source && target && envNamesValid && sourceEnv === targetEnv && sameName(source, target)) {
      problems.push(invalid(displayFile, `tables.${tableName}.to`, `target table ${formatQualifiedName(target)} is the source table itself (source and target both use ${sourceEnv})`));
    }
    if (!source || !target) continue;
    tables.push({ name: tableName, source, target });
    loadedTables.push({
      name: tableName,
      source,
      target,
      mode: table.mode,
      key: [...(table.key ?? [])],
      columns: Object.entries(table.columns ?? {}).map(([column, fragment]) => ({ target: column, expression: fragment.text })),
      ...(table.where !== undefined ? { where: table.where.text } : {}),
      conflict: table.conflict,
      truncate: table.truncate,
      onError: table.onError,
      replicaIdentity: table.replicaIdentity,
    });
  }

  if (!envNamesValid) return { problems };
  const validated: ValidatedSync = { file, displayFile, name: spec.name, sourceEnv, targetEnv, tables };
  if (problems.length > 0 || sourceUrl === undefined || targetUrl === undefined) return { problems, validated };
  return {
    problems,
    validated,
    loaded: { file, name: spec.name, sourceUrl, targetUrl, sourceEnv, targetEnv, tables: loadedTables, ...(spec.origin !== undefined ? { origin: spec.origin } : {}),
      ...(spec.failover ? { failover: true } : {}) },
  };
}
