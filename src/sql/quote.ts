/**
 * The one place identifiers and literals become SQL text. Values at run time go in as query
 * parameters; these are for DDL, which Postgres does not parameterise.
 */

/** Quotes an identifier always, so names with capitals, spaces, quotes or unicode survive. */
export function quoteIdent(name: string): string {
  if (name.length === 0) throw new Error('empty SQL identifier');
  if (name.includes('\0')) throw new Error('SQL identifier contains a NUL byte');
  return `"${name.replaceAll('"', '""')}"`;
}

/** A schema-qualified name, each part quoted. */
export function quoteQualified(name: QualifiedName): string {
  return `${quoteIdent(name.schema)}.${quoteIdent(name.name)}`;
}

/** A string literal; E'' form is never needed because standard_conforming_strings is on since 9.1. */
export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new Error('SQL literal contains a NUL byte');
  return `'${value.replaceAll("'", "''")}'`;
}

export interface QualifiedName {
  readonly schema: string;
  readonly name: string;
}

/**
 * Parses `schema.table`, `"My Schema"."My ""T"""` or `table` (schema `public`). Dots inside
 * double quotes belong to the name.
 */
export function parseQualifiedName(text: string): QualifiedName | undefined {
  const parts: string[] = [];
  let i = 0;
  while (i <= text.length) {
    if (text[i] === '"') {
      let part = '';
      i++;
      for (;;) {
        if (i >= text.length) return undefined;
        if (text[i] === '"') {
          if (text[i + 1] === '"') { part += '"'; i += 2; continue; }
          i++;
          break;
        }
        part += text[i];
        i++;
      }
      if (part.length === 0) return undefined;
      parts.push(part);
    } else {
      let end = text.indexOf('.', i);
      if (end === -1) end = text.length;
      const part = text.slice(i, end);
      if (part.length === 0 || part.includes('"')) return undefined;
      // Unquoted names fold to lower case as Postgres folds them: ASCII letters only.
      parts.push(part.replace(/[A-Z]/g, (c) => c.toLowerCase()));
      i = end;
    }
    if (i === text.length) break;
    if (text[i] !== '.') return undefined;
    i++;
    if (i === text.length) return undefined;
  }
  if (parts.length === 1) return { schema: 'public', name: parts[0]! };
  if (parts.length === 2) return { schema: parts[0]!, name: parts[1]! };
  return undefined;
}

export function formatQualifiedName(name: QualifiedName): string {
  const plain = (part: string) => (/^[a-z_][a-z0-9_$]*$/.test(part) ? part : quoteIdent(part));
  return `${plain(name.schema)}.${plain(name.name)}`;
}
