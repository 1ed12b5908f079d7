/** The two places text becomes SQL: sql`` fragments in specs, and identifier/literal quoting. */
import { describe, expect, test } from 'vitest';
import { env, sql } from '../../src/index.ts';
import { isEnvRef, isSqlFragment, type SqlFragment } from '../../src/spec/sql-fragment.ts';
import { formatQualifiedName, parseQualifiedName, quoteIdent, quoteLiteral, quoteQualified } from '../../src/sql/quote.ts';

describe('sql``', () => {
  test('keeps the text as written, trimmed', () => {
    expect(sql`  concat(first_name, ' ', last_name)\n `.text).toBe("concat(first_name, ' ', last_name)");
    expect(sql`"imageUrl"`.text).toBe('"imageUrl"');
    expect(sql``.text).toBe('');
  });

  test('interpolates other fragments, in place, at any position', () => {
    const active = sql`status = 'ACTIVE'`;
    expect(sql`${active}`.text).toBe("status = 'ACTIVE'");
    expect(sql`CASE WHEN ${active} THEN 1 ELSE 0 END`.text).toBe("CASE WHEN status = 'ACTIVE' THEN 1 ELSE 0 END");
    expect(sql`${sql`a`} AND ${sql`b`}`.text).toBe('a AND b');
    expect(sql`x = ${sql`${sql`nested`}`}`.text).toBe('x = nested');
  });

  test('refuses plain values: no string splicing into SQL', () => {
    const splice = (value: unknown) => sql`name = ${value as SqlFragment}`;
    for (const value of ["'; DROP TABLE users; --", 42, null, undefined, { kind: 'sql', text: 'forged' }, env('X')]) {
      expect(() => splice(value)).toThrow(TypeError);
    }
    expect(() => splice('x')).toThrow('sql`...` interpolations must be sql fragments; put values in the SQL text itself');
  });

  test('fragments are frozen and recognisable; look-alikes are not', () => {
    const fragment = sql`id`;
    expect(Object.isFrozen(fragment)).toBe(true);
    expect(isSqlFragment(fragment)).toBe(true);
    expect(isSqlFragment({ kind: 'sql', text: 'id' })).toBe(false);
    expect(isSqlFragment('id')).toBe(false);
    expect(isSqlFragment(null)).toBe(false);
    expect(isSqlFragment(env('X'))).toBe(false);
  });

  test('env() records a name and nothing else', () => {
    const ref = env('LAAS_DATABASE_URL');
    expect(ref).toMatchObject({ kind: 'env', name: 'LAAS_DATABASE_URL' });
    expect(Object.isFrozen(ref)).toBe(true);
    expect(isEnvRef(ref)).toBe(true);
    expect(isEnvRef({ kind: 'env', name: 'X' })).toBe(false);
    expect(isEnvRef(sql`x`)).toBe(false);
  });
});

describe('parseQualifiedName', () => {
  test.each([
    ['users', { schema: 'public', name: 'users' }],
    ['public.users', { schema: 'public', name: 'users' }],
    ['Organizations.User', { schema: 'organizations', name: 'user' }],
    ['"Organizations"."User"', { schema: 'Organizations', name: 'User' }],
    ['"My Schema"."My ""T"""', { schema: 'My Schema', name: 'My "T"' }],
    ['"Weird Schema"."Ünïcode ""T"""', { schema: 'Weird Schema', name: 'Ünïcode "T"' }],
    ['"a.b".c', { schema: 'a.b', name: 'c' }],
    ['a."b.c"', { schema: 'a', name: 'b.c' }],
    ['"x.y"', { schema: 'public', name: 'x.y' }],
    ['sales."Accounts"', { schema: 'sales', name: 'Accounts' }],
    ['s.t$1', { schema: 's', name: 't$1' }],
    ['"""quoted"""', { schema: 'public', name: '"quoted"' }],
  ])('%s', (text, expected) => {
    expect(parseQualifiedName(text)).toEqual(expected);
  });

  test.each([
    [''],
    ['.'],
    ['a.'],
    ['.a'],
    ['a..b'],
    ['a.b.c'],
    ['db.public.users'],
    ['"unterminated'],
    ['"a"b'],
    ['a"b'],
    ['"a".'],
    ['"a""'],
  ])('%s is not a table name', (text) => {
    expect(parseQualifiedName(text)).toBeUndefined();
  });
});

describe('quoteIdent', () => {
  test('always quotes, doubling embedded quotes', () => {
    expect(quoteIdent('users')).toBe('"users"');
    expect(quoteIdent('User')).toBe('"User"');
    expect(quoteIdent('My "T"')).toBe('"My ""T"""');
    expect(quoteIdent('"')).toBe('""""');
    expect(quoteIdent('a.b')).toBe('"a.b"');
    expect(quoteIdent('Ünïcode')).toBe('"Ünïcode"');
    expect(quoteIdent("o'neil")).toBe(`"o'neil"`);
    expect(quoteIdent('select')).toBe('"select"');
  });

  test('rejects what no identifier can be', () => {
    expect(() => quoteIdent('')).toThrow('empty SQL identifier');
    expect(() => quoteIdent('a\0b')).toThrow('NUL');
  });

  test('round-trips through parseQualifiedName', () => {
    for (const name of [{ schema: 'My Schema', name: 'My "T"' }, { schema: 'a.b', name: 'Ünïcode' }, { schema: 'public', name: 'users' }]) {
      expect(parseQualifiedName(quoteQualified(name))).toEqual(name);
    }
    expect(quoteQualified({ schema: 'Weird Schema', name: 'Ünïcode "T"' })).toBe('"Weird Schema"."Ünïcode ""T"""');
  });
});

describe('quoteLiteral', () => {
  test('doubles single quotes and nothing else', () => {
    expect(quoteLiteral('')).toBe("''");
    expect(quoteLiteral("O'Reilly")).toBe("'O''Reilly'");
    expect(quoteLiteral("''")).toBe("''''''");
    // standard_conforming_strings: a backslash is an ordinary character.
    expect(quoteLiteral('C:\\temp\\')).toBe("'C:\\temp\\'");
    expect(quoteLiteral('line\nbreak')).toBe("'line\nbreak'");
    expect(quoteLiteral('"double"')).toBe(`'"double"'`);
    expect(quoteLiteral('ünï')).toBe("'ünï'");
  });

  test('rejects NUL, which Postgres text cannot hold', () => {
    expect(() => quoteLiteral('a\0')).toThrow('NUL');
  });
});

describe('formatQualifiedName', () => {
  test('shows plain names plainly and quotes the rest', () => {
    expect(formatQualifiedName({ schema: 'public', name: 'users' })).toBe('public.users');
    expect(formatQualifiedName({ schema: 'CRM', name: 'Members.v2' })).toBe('"CRM"."Members.v2"');
    expect(formatQualifiedName({ schema: 'weird schema', name: 'x' })).toBe('"weird schema".x');
    expect(formatQualifiedName({ schema: 's', name: '1abc' })).toBe('s."1abc"');
  });
});
