/**
 * money travels as text, like every value: printed under the source's lc_monetary (by pgoutput
 * and by the copy's COPY) and read under the target's. Where the two locales differ, currency
 * symbol, separators and fraction digits can differ, and an amount arrives changed or is
 * rejected. Postgres's own apply worker does not pin lc_monetary either.
 *
 * syncctl refuses such a table at plan time rather than pinning the source's lc_monetary to the
 * target's: pinning keeps the stored integer but not its meaning (¥100 under a locale without
 * fraction digits is $1.00 under one with two), and the target's locale may not exist on the
 * source server. Which currency a column holds is for a person to decide. Pure.
 */
import type { MonetaryFacts } from '../catalog/observe-monetary.ts';
import type { Problem } from '../errors.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { formatQualifiedName } from '../sql/quote.ts';
import { publishedColumns } from '../apply/apply-table.ts';
import type { ResolvedTable } from './plan-sync.ts';

export function monetaryProblems(
  sync: LoadedSync, tables: Iterable<ResolvedTable>, source: MonetaryFacts, target: MonetaryFacts,
): Problem[] {
  if (sameLocale(source.lcMonetary, target.lcMonetary)) return [];
  const problems: Problem[] = [];
  for (const resolved of tables) {
    const { table } = resolved;
    const money = source.moneyColumns.get(resolved.sourceFacts.oid) ?? [];
    if (money.length === 0) continue;
    // Every published column is staged with its type, read or not (the target parses its text).
    const published = new Set(publishedColumns(resolved));
    for (const column of money.filter((c) => published.has(c.name))) {
      const readBy = table.columns.filter((c) => resolved.columnsRead.get(c.target)?.includes(column.name)).map((c) => c.target);
      const path = readBy.length > 0 ? `columns.${readBy[0]}` : resolved.whereColumnsRead.includes(column.name) ? 'where' : 'from';
      const what = column.type === 'money' ? 'is money' : `holds money (${column.type})`;
      problems.push({
        file: sync.file, path: `tables.${table.name}.${path}`,
        message: `source column "${column.name}" of ${formatQualifiedName(table.source)} ${what}, which travels as text printed under the ` +
          `source's lc_monetary = '${source.lcMonetary}' and read under the target's lc_monetary = '${target.lcMonetary}': the currency ` +
          `symbol, separators and fraction digits may differ, so amounts would change or be rejected. Set the same lc_monetary on both ` +
          `databases (ALTER DATABASE … SET lc_monetary = …)`,
      });
    }
  }
  return problems;
}

/** Locale names as glibc reads them: case and the codeset's dashes do not matter, POSIX is C. */
function sameLocale(a: string, b: string): boolean {
  const normal = (name: string) => {
    const [locale = '', codeset] = name.toLowerCase().split('.', 2);
    const base = locale === 'posix' ? 'c' : locale;
    return codeset === undefined ? base : `${base}.${codeset.replaceAll('-', '')}`;
  };
  return normal(a) === normal(b);
}
