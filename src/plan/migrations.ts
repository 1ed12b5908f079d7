import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** syncctl's own schema migrations: sql/<id>_<name>.sql, run by postgres-migrations. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../sql/', import.meta.url));

export interface Migration {
  readonly id: number;
  readonly file: string;
  readonly sql: string;
}

export function listMigrations(): readonly Migration[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((f) => /^\d+_.*\.sql$/.test(f))
    .map((file) => ({ id: Number(file.split('_')[0]), file, sql: readFileSync(MIGRATIONS_DIR + file, 'utf8') }))
    .sort((a, b) => a.id - b.id);
}
