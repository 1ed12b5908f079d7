/**
 * syncctl spec files for the benchmark, written into a temp dir (one directory per sync so that
 * `syncctl run <dir>` runs exactly one). Connection strings come from BENCH_SOURCE_URL and
 * BENCH_TARGET_URL.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const IDENT_SYNC = 'bench_ident';
export const MAPPED_SYNC = 'bench_mapped';
export const WARMUP_SYNC = 'bench_warmup';
export const CONFLICTS_SYNC = 'bench_conflicts';
/** The column (g) adds to pgbench_accounts on both sides for last-write-wins to compare. */
export const LWW_COLUMN = 'updated_at';
export const SOURCE_ENV = 'BENCH_SOURCE_URL';
export const TARGET_ENV = 'BENCH_TARGET_URL';

/** pgbench tables replicated by both contestants (pgbench_history has no key: left out of both). */
export const PGBENCH_TABLES: readonly { name: string; key: string; columns: readonly string[] }[] = [
  { name: 'pgbench_accounts', key: 'aid', columns: ['aid', 'bid', 'abalance', 'filler'] },
  { name: 'pgbench_branches', key: 'bid', columns: ['bid', 'bbalance', 'filler'] },
  { name: 'pgbench_tellers', key: 'tid', columns: ['tid', 'bid', 'tbalance', 'filler'] },
];

/** The differently shaped target of scenario (a) with a mapping. */
export const MAPPED_TARGET_DDL = `CREATE TABLE public.accounts_mapped (
  account_id integer PRIMARY KEY,
  branch_id  integer NOT NULL,
  balance    bigint NOT NULL,
  label      text NOT NULL,
  tier       text NOT NULL
)`;

const MAPPED_COLUMNS: Record<string, string> = {
  account_id: 'aid',
  branch_id: 'bid',
  balance: 'abalance',
  label: `concat('branch ', bid, ' / account ', aid)`,
  tier: `CASE WHEN abalance < 0 THEN 'overdrawn' WHEN abalance = 0 THEN 'empty' WHEN abalance < 1000 THEN 'small' ELSE 'large' END`,
};

function header(name: string): string {
  return `import { defineSync, sql, env } from 'syncctl';\n\nexport default defineSync({\n  name: '${name}',\n` +
    `  source: env('${SOURCE_ENV}'),\n  target: env('${TARGET_ENV}'),\n  tables: {\n`;
}

function columns(map: Record<string, string>): string {
  return Object.entries(map).map(([t, e]) => `        ${t}: sql\`${e}\`,`).join('\n');
}

function table(key: string, from: string, to: string, keyCols: readonly string[], map: Record<string, string>, conflict?: string): string {
  return `    ${key}: {\n      from: '${from}',\n      to: '${to}',\n      key: [${keyCols.map((k) => `'${k}'`).join(', ')}],\n` +
    `      columns: {\n${columns(map)}\n      },\n${conflict === undefined ? '' : `      conflict: ${conflict},\n`}    },\n`;
}

export interface SpecDirs {
  readonly ident: string;
  readonly mapped: string;
  readonly warmup: string;
  /** (g): the identity sync, with pgbench_accounts.updated_at and last-write-wins on it. */
  readonly conflicts: string;
}

export function writeSpecs(root: string): SpecDirs {
  const dirs = {
    ident: path.join(root, 'ident'), mapped: path.join(root, 'mapped'), warmup: path.join(root, 'warmup'), conflicts: path.join(root, 'conflicts'),
  };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });

  let ident = header(IDENT_SYNC);
  for (const t of PGBENCH_TABLES) {
    ident += table(t.name.replace('pgbench_', ''), `public.${t.name}`, `public.${t.name}`, [t.key],
      Object.fromEntries(t.columns.map((c) => [c, c])));
  }
  writeFileSync(path.join(dirs.ident, `${IDENT_SYNC}.sync.ts`), `${ident}  },\n});\n`);

  const mapped = header(MAPPED_SYNC) + table('accounts', 'public.pgbench_accounts', 'public.accounts_mapped', ['account_id'], MAPPED_COLUMNS);
  writeFileSync(path.join(dirs.mapped, `${MAPPED_SYNC}.sync.ts`), `${mapped}  },\n});\n`);

  let conflicts = header(CONFLICTS_SYNC);
  for (const t of PGBENCH_TABLES) {
    const accounts = t.name === 'pgbench_accounts';
    const cols = accounts ? [...t.columns, LWW_COLUMN] : t.columns;
    conflicts += table(t.name.replace('pgbench_', ''), `public.${t.name}`, `public.${t.name}`, [t.key], Object.fromEntries(cols.map((c) => [c, c])),
      accounts ? `{ strategy: 'last-write-wins', column: '${LWW_COLUMN}' }` : undefined);
  }
  writeFileSync(path.join(dirs.conflicts, `${CONFLICTS_SYNC}.sync.ts`), `${conflicts}  },\n});\n`);

  const warmup = header(WARMUP_SYNC) + table('warmup', 'public.bench_warmup', 'public.bench_warmup', ['id'], { id: 'id', v: 'v' });
  writeFileSync(path.join(dirs.warmup, `${WARMUP_SYNC}.sync.ts`), `${warmup}  },\n});\n`);
  return dirs;
}
