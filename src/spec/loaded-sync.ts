import type { QualifiedName } from '../sql/quote.ts';
import type { ConflictRule } from './schema.ts';

/** A validated spec with env() resolved and names parsed: what the rest of syncctl consumes. */
export interface LoadedSync {
  /** Absolute path of the spec file. */
  readonly file: string;
  readonly name: string;
  /** Connection strings, resolved from the environment. Never log these: they carry passwords. */
  readonly sourceUrl: string;
  readonly targetUrl: string;
  /** The environment variable names, which may be shown. */
  readonly sourceEnv: string;
  readonly targetEnv: string;
  readonly tables: readonly LoadedTable[];
  /** `none`: only changes made on the source itself travel (see the spec's `origin`); absent: every change. */
  readonly origin?: 'any' | 'none';
  /** The slot is a failover slot (PostgreSQL 17 and later); absent: it is not. */
  readonly failover?: boolean;
}

export interface LoadedTable {
  /** The key of the table inside `tables` of the spec. */
  readonly name: string;
  readonly source: QualifiedName;
  readonly target: QualifiedName;
  readonly mode: 'mapped' | 'native';
  /** Target key columns. Empty for a native table that gives none (the target's primary key is used). */
  readonly key: readonly string[];
  /** Target column <- SQL over the source row, in spec order. Empty for native tables. */
  readonly columns: readonly ColumnMapping[];
  /** Row filter SQL over the source row. */
  readonly where?: string;
  readonly conflict: ConflictRule;
  readonly truncate: 'apply' | 'ignore';
  readonly onError: 'park' | 'stop';
  readonly replicaIdentity: 'auto' | 'full';
}

export interface ColumnMapping {
  readonly target: string;
  readonly expression: string;
}
