/**
 * `sql` and `env` are the two value kinds a spec holds besides plain data. Both are inert
 * records: `sql` text is only ever evaluated by Postgres, `env` is resolved when specs load.
 */
const SQL_FRAGMENT = Symbol.for('syncctl.sql');
const ENV_REF = Symbol.for('syncctl.env');

export interface SqlFragment {
  readonly kind: 'sql';
  readonly text: string;
  readonly [SQL_FRAGMENT]: true;
}

export interface EnvRef {
  readonly kind: 'env';
  readonly name: string;
  readonly [ENV_REF]: true;
}

/**
 * sql`concat(first_name, ' ', last_name)`: SQL over the source row. Interpolations may only be
 * other sql fragments; a plain value would be string-spliced SQL, which we never do.
 */
export function sql(strings: TemplateStringsArray, ...parts: SqlFragment[]): SqlFragment {
  let text = strings[0] ?? '';
  parts.forEach((part, i) => {
    if (!isSqlFragment(part)) {
      throw new TypeError('sql`...` interpolations must be sql fragments; put values in the SQL text itself');
    }
    text += part.text + (strings[i + 1] ?? '');
  });
  return Object.freeze({ kind: 'sql', text: text.trim(), [SQL_FRAGMENT]: true }) as SqlFragment;
}

/** env('LAAS_DATABASE_URL'): a connection string read from the environment when specs load. */
export function env(name: string): EnvRef {
  return Object.freeze({ kind: 'env', name, [ENV_REF]: true }) as EnvRef;
}

export function isSqlFragment(value: unknown): value is SqlFragment {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[SQL_FRAGMENT] === true;
}

export function isEnvRef(value: unknown): value is EnvRef {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[ENV_REF] === true;
}
