/**
 * Can a table's mapping be evaluated on the SOURCE during the initial copy, so that its chunks go
 * from `COPY (SELECT mapped …) TO STDOUT` straight into `COPY target FROM STDIN`?
 *
 * The worker evaluates the mapping in the TARGET over staged source rows; the copy must give
 * exactly what that gives. Source and target may differ in version, locale, settings and in
 * which user objects exist, so an expression qualifies only when its value cannot depend on
 * which server computes it:
 * - everything it calls or names is built into Postgres (oid < 16384) and the same major version
 *   runs on both sides (a built-in's behaviour can change between majors);
 * - no function is volatile, and stable ones only where their result depends on their arguments
 *   and the session settings we copy from the target (TimeZone, DateStyle, …), never on the
 *   server, the session's user or the transaction (now(), current_setting(), current_user);
 * - it reads no other table (a name in a subquery means another table on the target);
 * - collation-dependent work runs under the same database locale on both sides;
 * - its result already has the target column's type (or one an assignment cast reaches without a
 *   typmod to enforce, which we then apply on the source as the target would).
 * A bare column reference is special: its value is copied as is, as the staging path does, so
 * versions and locales do not matter and user types qualify when the target column has the same
 * type by schema and name.
 *
 * What an expression depends on is learned from Postgres itself: a temp view over the source table
 * in a rolled-back transaction, whose stored rule (pg_rewrite.ev_action) names every function,
 * operator, type and collation it uses. pg_depend alone cannot tell: dependencies on pinned
 * built-ins (random(), now()) are not recorded there.
 */
import type { Connection } from '../db/connect.ts';
import type { ResolvedTable } from '../plan/plan-sync.ts';
import { quoteIdent, quoteQualified } from '../sql/quote.ts';
import { postgresMessage } from '../catalog/analyze-mapping.ts';

/** Objects with oids below this are built into Postgres (FirstNormalObjectId). */
const FIRST_NORMAL_OID = 16384;

/**
 * Settings that change how values are printed and parsed (and so what stable built-ins return).
 * The copy's source sessions take the target session's values, so that a computed column is what
 * the target would compute, except where a value would not survive the trip as COPY text: see
 * readValueSettings.
 */
export const VALUE_SETTINGS = ['TimeZone', 'DateStyle', 'IntervalStyle', 'extra_float_digits', 'bytea_output', 'lc_monetary', 'lc_numeric', 'lc_time'] as const;

/**
 * Stable built-ins whose result depends only on their arguments and the settings above (they
 * print values, or do time zone arithmetic). Every other stable function keeps the staging path.
 */
const STABLE_OK = new Set([
  'concat', 'concat_ws', 'format', 'textanycat', 'anytextcat', 'to_char', 'to_json', 'to_jsonb', 'row_to_json', 'array_to_json',
  'json_build_object', 'jsonb_build_object', 'json_build_array', 'jsonb_build_array', 'json_object', 'jsonb_object',
  'date_part', 'extract', 'date_trunc', 'timezone', 'to_timestamp', 'to_date', 'date', 'time', 'timetz', 'timestamp', 'timestamptz',
  'array_out', 'record_out', 'textin', 'textout',
]);
/** Time zone arithmetic and comparisons across timestamp types: stable because of TimeZone alone. */
const STABLE_OK_PATTERN = /^(timestamptz|timestamp|date|timetz)_(pl|mi|cmp|eq|ne|lt|le|gt|ge|larger|smaller|trunc|part|age_never)/;

/** Node types whose value comes from the session, the server or the transaction. */
const UNSAFE_NODES = ['SQLVALUEFUNCTION', 'NEXTVALUEEXPR', 'PARAM', 'CURRENTOFEXPR', 'SUBLINK', 'SUBPLAN'];

export type SessionSettings = readonly (readonly [string, string])[];

export interface DirectCopy {
  readonly direct: true;
  /** Target columns and the SQL that computes each on the source. */
  readonly columns: readonly { readonly target: string; readonly select: string }[];
  /** The worker's row filter, for the source's WHERE. */
  readonly filter?: string;
  readonly reason: string;
}

export type CopyPath = DirectCopy | { readonly direct: false; readonly reason: string };

export interface ValueSettings {
  /** What the copy's source sessions set. */
  readonly apply: SessionSettings;
  /** Target settings the source sessions do not take as they are: computed columns stay staged. */
  readonly adjusted: readonly string[];
}

/**
 * The target session's value settings, for the copy's source sessions. Every value travels as
 * COPY text, which must read back exactly: non-ISO date styles print time zone abbreviations
 * (IST is India's or Israel's, depending on the reader's version), extra_float_digits below 1
 * rounds floats, and interval styles other than postgres do not read back under every other
 * style. Those are printed the lossless way instead (as the source would by default) and noted.
 */
export async function readValueSettings(target: Connection): Promise<ValueSettings> {
  const { rows } = await target.query<{ name: string; value: string }>(
    `SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name`, [VALUE_SETTINGS]);
  const adjusted: string[] = [];
  const apply = rows.map((r): readonly [string, string] => {
    const lossless = losslessValue(r.name, r.value);
    if (lossless === r.value) return [r.name, r.value];
    adjusted.push(`${r.name} = ${r.value}`);
    return [r.name, lossless];
  });
  return { apply, adjusted };
}

function losslessValue(name: string, value: string): string {
  if (name === 'DateStyle') return value.replace(/^\s*(SQL|Postgres|German)\b/i, 'ISO');
  if (name === 'IntervalStyle') return 'postgres';
  if (name === 'extra_float_digits') return Number(value) >= 1 ? value : '1';
  return value;
}

/**
 * Transaction-local: the settings last only as long as the copy's read of the snapshot. Each under
 * its own savepoint, so one the source refuses (a time zone or locale it does not have) leaves the
 * others applied; returns the names refused.
 */
export async function applyValueSettings(source: Connection, settings: SessionSettings): Promise<string[]> {
  if (settings.length === 0) return [];
  // The usual case in one statement; one by one only when the source refuses something.
  await source.query('SAVEPOINT syncctl_setting');
  try {
    await source.query(`SELECT ${settings.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, true)`).join(', ')}`,
      settings.flatMap(([name, value]) => [name, value]));
    await source.query('RELEASE SAVEPOINT syncctl_setting');
    return [];
  } catch {
    await source.query('ROLLBACK TO SAVEPOINT syncctl_setting');
    await source.query('RELEASE SAVEPOINT syncctl_setting');
  }
  const refused: string[] = [];
  for (const [name, value] of settings) {
    await source.query('SAVEPOINT syncctl_setting');
    try {
      await source.query(`SELECT set_config($1, $2, true)`, [name, value]);
      await source.query('RELEASE SAVEPOINT syncctl_setting');
    } catch {
      await source.query('ROLLBACK TO SAVEPOINT syncctl_setting');
      await source.query('RELEASE SAVEPOINT syncctl_setting');
      refused.push(name);
    }
  }
  return refused;
}

interface ServerFacts {
  readonly major: number;
  /** Database locale and encoding: what collation-dependent and byte-level built-ins depend on. */
  readonly locale: string;
}

async function serverFacts(db: Connection): Promise<ServerFacts> {
  const { rows } = await db.query<{ major: number; locale: string }>(`
    SELECT current_setting('server_version_num')::int / 10000 AS major,
           concat_ws('/', current_setting('server_encoding'), d.datcollate, d.datctype,
             to_jsonb(d) ->> 'datlocprovider', to_jsonb(d) ->> 'daticulocale', to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticurules') AS locale
      FROM pg_database d WHERE d.datname = current_database()`);
  return rows[0]!;
}

interface Probed {
  readonly typeOid: number;
  readonly typmod: number;
  readonly typeSchema: string;
  readonly typeName: string;
  /** format_type without typmod, for a cast to the plain type. */
  readonly plainType: string;
  readonly bareColumn: boolean;
  readonly functions: readonly { oid: number; name: string; volatile: string }[];
  readonly operatorFunctions: readonly { oid: number; name: string; volatile: string }[];
  readonly types: readonly number[];
  readonly collations: readonly number[];
  readonly relations: readonly number[];
  readonly unsafeNode?: string;
}

const numbers = (text: string, fields: RegExp) => [...text.matchAll(fields)].map((m) => Number(m[1]));
const lists = (text: string, fields: RegExp) => [...text.matchAll(fields)].flatMap((m) => m[1]!.trim().split(/\s+/).map(Number));

/** Parses and types `expression` over the source table in a view and reads what it uses from its stored rule. */
async function probe(source: Connection, table: string, expression: string): Promise<Probed> {
  await source.query(`CREATE TEMP VIEW syncctl_copy_probe AS SELECT (${expression}) AS v FROM ${table}`);
  try {
    const { rows } = await source.query<{ rule: string; view: number; type_oid: number; typmod: number; type_schema: string; type_name: string; plain: string }>(`
      SELECT r.ev_action::text AS rule, r.ev_class::int AS view, a.atttypid::int AS type_oid, a.atttypmod AS typmod, n.nspname AS type_schema, t.typname AS type_name,
             format_type(a.atttypid, NULL) AS plain
        FROM pg_rewrite r JOIN pg_attribute a ON a.attrelid = r.ev_class AND a.attnum = 1
        JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
       WHERE r.ev_class = 'pg_temp.syncctl_copy_probe'::regclass`);
    const r = rows[0]!;
    const rule = r.rule;
    const funcOids = numbers(rule, /:(?:funcid|aggfnoid|winfnoid|opfuncid) (\d+)/g).filter((o) => o !== 0);
    const opOids = [...numbers(rule, /:opno (\d+)/g), ...lists(rule, /:opnos \(o ([\d ]+)\)/g)];
    const functions = funcOids.length === 0 ? [] : (await source.query<{ oid: number; name: string; volatile: string }>(
      `SELECT oid::int, proname AS name, provolatile AS volatile FROM pg_proc WHERE oid = ANY($1::oid[])`, [funcOids])).rows;
    const operatorFunctions = opOids.length === 0 ? [] : (await source.query<{ oid: number; name: string; volatile: string }>(
      `SELECT o.oid::int, p.proname AS name, p.provolatile AS volatile FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode::oid
        WHERE o.oid = ANY($1::oid[])`, [opOids])).rows;
    const unsafeNode = UNSAFE_NODES.find((node) => rule.includes(`{${node} `) || rule.includes(`{${node}}`));
    return {
      typeOid: r.type_oid, typmod: r.typmod, typeSchema: r.type_schema, typeName: r.type_name, plainType: r.plain,
      // The view's only output column is a plain Var: a column copied as is.
      bareColumn: /:targetList \(\{TARGETENTRY :expr \{VAR /.test(rule),
      functions, operatorFunctions,
      types: numbers(rule, /:(?:vartype|consttype|resulttype|funcresulttype|opresulttype|casetype|coalescetype|minmaxtype|array_typeid|element_typeid|row_typeid|typeId) (\d+)/g),
      collations: [...numbers(rule, /:\w*collid (\d+)/g), ...lists(rule, /:\w*collids \(o ([\d ]+)\)/g)].filter((c) => c !== 0),
      // Older majors' rules name the view itself (their OLD and NEW entries).
      relations: numbers(rule, /:relid (\d+)/g).filter((oid) => oid !== r.view),
      ...(unsafeNode ? { unsafeNode } : {}),
    };
  } finally {
    await source.query('DROP VIEW pg_temp.syncctl_copy_probe');
  }
}

/** Built-in collations whose behaviour does not depend on the database: "C" and "POSIX". */
const FIXED_COLLATIONS = new Set([950, 951]);
const DEFAULT_COLLATION = 100;
const BOOL_OID = 16;
/** regclass, regtype, …: their input and output look names up in the catalog of the server that runs them. */
const CATALOG_TYPES = new Set([24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191]);

/**
 * Decides the copy path of one table. `source` and `target` are plain sessions (no snapshot
 * needed: only catalogs are read); nothing is left behind on the source.
 */
export async function decideCopyPath(source: Connection, target: Connection, resolved: ResolvedTable, settings: ValueSettings): Promise<CopyPath> {
  const { table, decision } = resolved;
  const staged = (reason: string): CopyPath => ({ direct: false, reason });
  if (table.mode !== 'mapped') return staged('not a mapped table');
  // A filter the worker evaluates in the target (one the publication cannot carry) must pass the
  // same test as the mapping; then the source applies it in the copy's WHERE.
  const workerFilter = decision.filterAt === 'worker' ? table.where : undefined;
  let filter: string | undefined;
  const targetColumns = new Map(resolved.targetFacts.columns.map((c) => [c.name, c]));
  // NULL keys never collide in a unique index: COPY would keep rows that the staging path's
  // DISTINCT ON key folds into one. A NOT NULL key makes COPY fail instead, and fall back.
  const nullableKey = resolved.key.find((k) => !targetColumns.get(k)?.notNull);
  if (nullableKey !== undefined) return staged(`key column "${nullableKey}" of the target is nullable`);

  const [sourceServer, targetServer] = await Promise.all([serverFacts(source), serverFacts(target)]);
  const targetTypes = new Map((await target.query<{ name: string; oid: number; typmod: number; schema: string; type: string }>(`
    SELECT a.attname AS name, a.atttypid::int AS oid, a.atttypmod AS typmod, n.nspname AS schema, t.typname AS type
      FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, [quoteQualified(table.target)])).rows
    .map((r) => [r.name, { oid: r.oid, typmod: r.typmod, schema: r.schema, name: r.type }]));
  const columns: { target: string; select: string }[] = [];
  await source.query('BEGIN');
  try {
    // The copy sessions take these. Without the target's formats the source cannot print values as
    // the target reads them; without its lc_* settings only the locale-aware formatting differs.
    const refused = await applyValueSettings(source, settings.apply);
    const refusedFormats = refused.filter((name) => !name.startsWith('lc_'));
    if (refusedFormats.length > 0) return staged(`the source refuses the target's ${refusedFormats.join(', ')}`);
    const notAsTarget = refused.length > 0 ? `the source refuses the target's ${refused.join(', ')}`
      : settings.adjusted.length > 0 ? `the copy cannot print values as the target does (${settings.adjusted.join(', ')})` : undefined;
    const relid = (await source.query<{ oid: number }>(`SELECT $1::regclass::oid::int AS oid`, [quoteQualified(table.source)])).rows[0]!.oid;
    for (const mapping of table.columns) {
      const at = `column "${mapping.target}"`;
      let p: Probed;
      await source.query('SAVEPOINT syncctl_copy_probe');
      try {
        p = await probe(source, quoteQualified(table.source), mapping.expression);
        await source.query('RELEASE SAVEPOINT syncctl_copy_probe');
      } catch (error) {
        await source.query('ROLLBACK TO SAVEPOINT syncctl_copy_probe');
        return staged(`${at}: cannot be probed on the source: ${postgresMessage(error)}`);
      }
      const want = targetTypes.get(mapping.target);
      if (!want) return staged(`${at}: target column not found`);
      if (p.bareColumn && p.typeOid >= FIRST_NORMAL_OID) {
        // A user type copied as is: its text is read by the target's type of the same name, as staging does.
        if (p.typeSchema !== want.schema || p.typeName !== want.name) return staged(`${at}: source type ${p.typeSchema}.${p.typeName} is not the target column's type`);
        if (resolved.stagingTypes.get(resolved.columnsRead.get(mapping.target)?.[0] ?? '') === 'text') return staged(`${at}: staged as text`);
        if (want.typmod !== -1 && want.typmod !== p.typmod) return staged(`${at}: type modifiers differ`);
        columns.push({ target: mapping.target, select: `(${mapping.expression})` });
        continue;
      }
      if (!p.bareColumn) {
        const unsafe = sameEverywhere(p, relid, sourceServer, targetServer) ?? notAsTarget;
        if (unsafe !== undefined) return staged(`${at}: ${unsafe}`);
      }
      if (want.oid >= FIRST_NORMAL_OID) return staged(`${at}: the target column's type is not built in`);
      if (p.typeOid === want.oid) {
        // A typmod only the target has (varchar(10) <- text) would be enforced by the type's input
        // function, which is not quite what an assignment cast does.
        if (want.typmod !== -1 && want.typmod !== p.typmod) return staged(`${at}: the target column's type modifier differs`);
        columns.push({ target: mapping.target, select: `(${mapping.expression})` });
        continue;
      }
      // Another built-in type: the assignment cast the target would apply, applied on the source.
      const cast = want.typmod === -1 ? await assignmentCast(source, p.typeOid, want.oid) : undefined;
      if (!cast) return staged(`${at}: no plain assignment cast from ${p.plainType} to the target column's type`);
      columns.push({ target: mapping.target, select: `CAST((${mapping.expression}) AS ${cast.plainTarget})` });
    }
    if (workerFilter !== undefined) {
      let p: Probed;
      await source.query('SAVEPOINT syncctl_copy_probe');
      try {
        p = await probe(source, quoteQualified(table.source), workerFilter);
        await source.query('RELEASE SAVEPOINT syncctl_copy_probe');
      } catch (error) {
        await source.query('ROLLBACK TO SAVEPOINT syncctl_copy_probe');
        return staged(`the row filter cannot be probed on the source: ${postgresMessage(error)}`);
      }
      const unsafe = p.bareColumn ? undefined : sameEverywhere(p, relid, sourceServer, targetServer) ?? notAsTarget;
      if (unsafe !== undefined) return staged(`the row filter ${unsafe}`);
      if (p.typeOid !== BOOL_OID) return staged('the row filter is not boolean');
      // The worker keeps a row only when the filter is true (NULL counts as false).
      filter = `coalesce((${workerFilter}), false)`;
    }
  } finally {
    await source.query('ROLLBACK');
  }
  return {
    direct: true, columns, ...(filter !== undefined ? { filter } : {}),
    reason: `every column${filter !== undefined ? ' and the row filter' : ''} is computed on the source exactly as the target would compute it`,
  };
}

/**
 * Why the value of a probed (non-bare) expression could differ between source and target, or
 * undefined when it cannot.
 */
function sameEverywhere(p: Probed, relid: number, sourceServer: ServerFacts, targetServer: ServerFacts): string | undefined {
  if (sourceServer.major !== targetServer.major) return `is not copied as is, and source and target run different major versions (${sourceServer.major}, ${targetServer.major})`;
  if (p.unsafeNode) return `uses ${p.unsafeNode.toLowerCase()}, whose value depends on the server or session`;
  if (p.relations.some((r) => r !== relid)) return 'reads another relation';
  for (const f of [...p.functions, ...p.operatorFunctions]) {
    if (f.oid >= FIRST_NORMAL_OID) return `calls ${f.name}(), which is not built in`;
    if (f.volatile === 'v') return `calls ${f.name}(), which is volatile`;
    if (f.volatile === 's' && !STABLE_OK.has(f.name) && !STABLE_OK_PATTERN.test(f.name)) {
      return `calls ${f.name}(), which is stable and may depend on the server or session`;
    }
  }
  const userType = p.types.find((t) => t >= FIRST_NORMAL_OID);
  const catalogType = p.types.find((t) => CATALOG_TYPES.has(t));
  if (catalogType !== undefined) return `converts to or from an object name (type oid ${catalogType}), which each server resolves in its own catalog`;
  if (userType !== undefined) return `uses a type that is not built in (oid ${userType})`;
  const collation = p.collations.find((c) => c !== DEFAULT_COLLATION && !FIXED_COLLATIONS.has(c));
  if (collation !== undefined) return `uses collation oid ${collation}`;
  if (p.collations.includes(DEFAULT_COLLATION) && sourceServer.locale !== targetServer.locale) {
    return `depends on the database locale, which differs (${sourceServer.locale} vs ${targetServer.locale})`;
  }
  if (p.typeOid >= FIRST_NORMAL_OID) return 'has a type that is not built in';
  return undefined;
}

/**
 * An implicit or assignment cast between built-in types that is binary or a built-in immutable
 * function, or the conversion to text/varchar Postgres does through the type's output function.
 * Evaluated on the source (CAST), it gives what the target's assignment would.
 */
async function assignmentCast(db: Connection, from: number, to: number): Promise<{ plainTarget: string } | undefined> {
  if (from >= FIRST_NORMAL_OID || to >= FIRST_NORMAL_OID) return undefined;
  const { rows } = await db.query<{ ok: boolean; plain: string }>(`
    SELECT format_type($2::oid, NULL) AS plain,
           EXISTS (SELECT 1 FROM pg_cast c LEFT JOIN pg_proc p ON p.oid = c.castfunc
                    WHERE c.castsource = $1::oid AND c.casttarget = $2::oid AND c.castcontext IN ('i', 'a')
                      AND (c.castmethod = 'b' OR (c.castmethod = 'f' AND p.oid < ${FIRST_NORMAL_OID} AND p.provolatile = 'i')))
           OR ($2::oid IN ('text'::regtype, 'varchar'::regtype)
               AND NOT EXISTS (SELECT 1 FROM pg_cast c WHERE c.castsource = $1::oid AND c.casttarget = $2::oid)) AS ok`, [from, to]);
  return rows[0]?.ok ? { plainTarget: rows[0].plain } : undefined;
}

/** For logs and tests: the SELECT list of a direct copy. */
export function directSelectList(path: DirectCopy): string {
  return path.columns.map((c) => `${c.select} AS ${quoteIdent(c.target)}`).join(', ');
}
