/**
 * Finds, imports and validates spec files. Every problem of every file is collected and thrown
 * as one SyncctlError, so a person fixes a whole batch at once; each problem names the file (as
 * the person named it: relative when they passed a relative directory) and the path inside it.
 */
import { readdir, stat } from 'node:fs/promises';
import module from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import vm from 'node:vm';
import { SyncctlError, type ErrorCode } from '../errors.ts';
import { formatQualifiedName } from '../sql/quote.ts';
import type { LoadedSync } from './loaded-sync.ts';
import { validateSpec, type KindedProblem, type ProblemKind, type ValidatedSync } from './validate-spec.ts';

export const SPEC_SUFFIX = '.sync.ts';

let resolveHookRegistered = false;

/**
 * This module runs as TypeScript in a checkout (Node strips the types) and as the compiled
 * JavaScript of dist/ in an installed package, where Node refuses to strip types (under
 * node_modules): a spec's `syncctl` must be the same copy, of the same kind, as the one running.
 */
const RUNNING_COMPILED = !import.meta.url.endsWith('.ts');

/**
 * Spec files `import … from 'syncctl'` wherever they sit (also outside this package, where no
 * node_modules would resolve it): map that specifier to this running copy of syncctl.
 *
 * A spec file is an ES module (`export default defineSync(…)`) whatever package it sits in, but
 * Node reads a .ts file as CommonJS in a package.json with "type": "commonjs" (what `npm init`
 * writes). Spec files, and the .ts files they import, are loaded as ES modules there.
 */
export function registerSyncctlResolution(): void {
  if (resolveHookRegistered) return;
  resolveHookRegistered = true;
  const indexUrl = new URL(RUNNING_COMPILED ? '../index.js' : '../index.ts', import.meta.url).href;
  const indexFormat = RUNNING_COMPILED ? 'module' : 'module-typescript';
  const loadedAsModule = new Set<string>();
  module.registerHooks({
    resolve(specifier, context, nextResolve) {
      if (specifier === 'syncctl') return { url: indexUrl, format: indexFormat, shortCircuit: true };
      const resolved = nextResolve(specifier, context);
      if (
        resolved.format === 'commonjs-typescript' &&
        (new URL(resolved.url).pathname.endsWith(SPEC_SUFFIX) || (context.parentURL !== undefined && loadedAsModule.has(context.parentURL)))
      ) {
        loadedAsModule.add(resolved.url);
        return { ...resolved, format: 'module-typescript' };
      }
      return resolved;
    },
  });
}

/** Spec files below `dir`, sorted by relative path; node_modules and dot-directories are skipped. */
async function findSpecFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  async function walk(relative: string): Promise<void> {
    const entries = await readdir(path.join(dir, relative), { withFileTypes: true });
    for (const entry of entries) {
      const child = relative === '' ? entry.name : path.join(relative, entry.name);
      let isDirectory = entry.isDirectory();
      let isFile = entry.isFile();
      if (entry.isSymbolicLink()) {
        const target = await stat(path.join(dir, child)).catch(() => undefined);
        // Symlinked files count; symlinked directories are not followed (no cycles).
        isFile = target?.isFile() ?? false;
        isDirectory = false;
      }
      if (isDirectory) {
        if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
        await walk(child);
      } else if (isFile && entry.name.endsWith(SPEC_SUFFIX)) {
        found.push(child);
      }
    }
  }
  await walk('');
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0]!.trim();
}

function describeThrown(error: unknown): string {
  if (error instanceof Error) {
    const message = firstLine(error.message);
    return message === '' ? error.name : `${error.name}: ${message}`;
  }
  return firstLine(String(error));
}

/**
 * Imports a spec on Node's own loader, which strips types and runs the resolve hook above.
 *
 * Under vitest, this module runs inside Vite's module runner, which rewrites `import()` and
 * resolves with Vite's resolver (no type stripping of files outside the project, no hook). There
 * a function compiled by `vm` with USE_MAIN_CONTEXT_DEFAULT_LOADER hands `import()` back to
 * Node's main loader. That option is still marked experimental and warns once, so a plain
 * `import()` is used everywhere else.
 */
let viaMainLoader: ((specifier: string) => Promise<unknown>) | undefined;
function nativeImport(specifier: string): Promise<unknown> {
  if (process.env['VITEST'] === undefined) return import(specifier);
  viaMainLoader ??= vm.compileFunction('return import(specifier)', ['specifier'], {
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  }) as (specifier: string) => Promise<unknown>;
  return viaMainLoader(specifier);
}

let generation = 0;

/** `fresh`: a new module instance (a query string the module cache has not seen), to read an edited spec again. */
async function importSpec(file: string, fresh: boolean): Promise<{ exports: Record<string, unknown> } | { error: unknown }> {
  try {
    const url = pathToFileURL(file).href + (fresh ? `?syncctl-reload=${++generation}` : '');
    return { exports: (await nativeImport(url)) as Record<string, unknown> };
  } catch (error) {
    return { error };
  }
}

function codeFor(problems: readonly KindedProblem[]): ErrorCode {
  const kinds = new Set<ProblemKind>(problems.map((p) => p.kind));
  if (kinds.size === 1 && kinds.has('env')) return 'ENV_MISSING';
  if (kinds.size === 1 && kinds.has('load')) return 'SPEC_LOAD_FAILED';
  return 'SPEC_INVALID';
}

/** Rules across files: sync names are unique; a target table belongs to one table entry of one sync. */
function crossFileProblems(syncs: readonly ValidatedSync[]): Map<ValidatedSync, KindedProblem[]> {
  const result = new Map<ValidatedSync, KindedProblem[]>();
  const add = (sync: ValidatedSync, path: string, message: string) => {
    const list = result.get(sync) ?? [];
    list.push({ kind: 'invalid', file: sync.displayFile, path, message });
    result.set(sync, list);
  };
  const byName = new Map<string, ValidatedSync>();
  const byTarget = new Map<string, { sync: ValidatedSync; table: string }>();
  for (const sync of syncs) {
    const first = byName.get(sync.name);
    if (first) add(sync, 'name', `sync name "${sync.name}" is already used by ${first.displayFile}`);
    else byName.set(sync.name, sync);
    for (const table of sync.tables) {
      const id = `${sync.targetEnv}\0${table.target.schema}\0${table.target.name}`;
      const owner = byTarget.get(id);
      if (!owner) {
        byTarget.set(id, { sync, table: table.name });
      } else if (owner.sync !== sync) {
        // Repeats inside one sync are reported by that file's own checks.
        add(
          sync,
          `tables.${table.name}.to`,
          `target table ${formatQualifiedName(table.target)} in ${sync.targetEnv} is already the target of tables.${owner.table} in sync "${owner.sync.name}" (${owner.sync.displayFile})`,
        );
      }
    }
  }
  return result;
}

/**
 * Loads every `*.sync.ts` below `target` (a directory) or the one file `target` names.
 * Throws one SyncctlError carrying every problem found: ENV_MISSING when the only problems are
 * unset environment variables, SPEC_LOAD_FAILED when the only problems are files that would not
 * import, SPEC_INVALID otherwise.
 */
export async function loadSpecs(target: string, environment: NodeJS.ProcessEnv = process.env, options: { fresh?: boolean } = {}): Promise<LoadedSync[]> {
  const info = await stat(target).catch(() => undefined);
  if (!info) {
    throw new SyncctlError('SPEC_INVALID', `no spec files: ${target} does not exist`, {
      problems: [{ file: target, message: 'no such file or directory' }],
    });
  }
  let files: { absolute: string; display: string }[];
  if (info.isDirectory()) {
    files = (await findSpecFiles(target)).map((relative) => ({ absolute: path.resolve(target, relative), display: path.join(target, relative) }));
    if (files.length === 0) {
      throw new SyncctlError('SPEC_INVALID', `no spec files found in ${target}`, {
        problems: [{ file: target, message: `expected at least one *${SPEC_SUFFIX} file in this directory` }],
      });
    }
  } else {
    files = [{ absolute: path.resolve(target), display: target }];
  }

  registerSyncctlResolution();
  const perFile: { problems: KindedProblem[]; validated?: ValidatedSync; loaded?: LoadedSync }[] = [];
  for (const file of files) {
    const imported = await importSpec(file.absolute, options.fresh ?? false);
    if ('error' in imported) {
      perFile.push({ problems: [{ kind: 'load', file: file.display, message: `failed to load: ${describeThrown(imported.error)}` }] });
      continue;
    }
    if (!('default' in imported.exports) || imported.exports['default'] === undefined) {
      perFile.push({ problems: [{ kind: 'invalid', file: file.display, message: 'expected `export default defineSync({...})`' }] });
      continue;
    }
    perFile.push(validateSpec(file.absolute, file.display, imported.exports['default'], environment));
  }

  const validated = perFile.flatMap((r) => (r.validated ? [r.validated] : []));
  const cross = crossFileProblems(validated);
  const problems: KindedProblem[] = [];
  for (const result of perFile) {
    problems.push(...result.problems);
    if (result.validated) problems.push(...(cross.get(result.validated) ?? []));
  }
  if (problems.length > 0) {
    const count = `${problems.length} problem${problems.length === 1 ? '' : 's'}`;
    throw new SyncctlError(codeFor(problems), `${count} in spec files`, {
      problems: problems.map(({ kind: _kind, ...problem }) => problem),
    });
  }
  return perFile.map((r) => r.loaded!);
}
