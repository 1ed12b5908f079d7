/**
 * What the live databases hold, as plain readonly data. `observe*` functions fill these from the
 * catalogs; `plan` and `status` read them, never the catalogs directly.
 */
import type { QualifiedName } from '../sql/quote.ts';

export interface ServerFacts {
  readonly versionNum: number;
  readonly version: string;
  readonly database: string;
  readonly currentUser: string;
  readonly isSuperuser: boolean;
  /** rolreplication or superuser. */
  readonly canReplicate: boolean;
  /** CREATE on the current database (needed for CREATE PUBLICATION and CREATE SCHEMA). */
  readonly canCreateInDatabase: boolean;
  readonly walLevel: string;
  readonly maxReplicationSlots: number;
  readonly replicationSlotsUsed: number;
  readonly maxWalSenders: number;
  readonly walSendersUsed: number;
}

export interface ColumnFacts {
  readonly name: string;
  readonly attnum: number;
  /** format_type(atttypid, atttypmod): the type as Postgres prints it. */
  readonly type: string;
  readonly typeOid: number;
  readonly typeSchema: string;
  readonly typeName: string;
  readonly notNull: boolean;
  readonly hasDefault: boolean;
  /** A generated column (attgenerated) or an identity column (attidentity). */
  readonly generated: boolean;
  readonly identity: boolean;
}

export interface UniqueIndexFacts {
  readonly name: string;
  readonly columns: readonly string[];
  readonly primary: boolean;
  /** Postgres accepts it for REPLICA IDENTITY USING INDEX: unique, not partial, not deferrable, no expressions, columns NOT NULL. */
  readonly usableAsIdentity: boolean;
  /** A DEFERRABLE constraint's index (absent: not deferrable); ON CONFLICT cannot use it as an arbiter. */
  readonly deferrable?: boolean;
  /** Has a predicate (absent: not partial); it is unique only among the rows the predicate selects. */
  readonly partial?: boolean;
  /** false for an index a failed CREATE INDEX CONCURRENTLY left behind (absent: valid). */
  readonly valid?: boolean;
}

export type ReplicaIdentity = 'default' | 'nothing' | 'full' | 'index';

export interface TableFacts {
  readonly name: QualifiedName;
  readonly oid: number;
  readonly kind: 'table' | 'partitioned' | 'other';
  readonly columns: readonly ColumnFacts[];
  readonly replicaIdentity: ReplicaIdentity;
  readonly replicaIdentityIndex?: string;
  /** Columns the replica identity carries in the old row of an UPDATE or DELETE. */
  readonly replicaIdentityColumns: readonly string[];
  readonly primaryKey: readonly string[];
  readonly uniqueIndexes: readonly UniqueIndexFacts[];
  readonly canSelect: boolean;
  readonly canWrite: boolean;
  readonly isOwner: boolean;
}

export interface PublicationTableFacts {
  readonly table: QualifiedName;
  /** pg_get_expr of the row filter, as Postgres normalised it. */
  readonly rowFilter?: string;
  /** Column list; undefined publishes every column. */
  readonly columns?: readonly string[];
}

export interface PublicationFacts {
  readonly name: string;
  readonly publishesInsert: boolean;
  readonly publishesUpdate: boolean;
  readonly publishesDelete: boolean;
  readonly publishesTruncate: boolean;
  readonly viaRoot: boolean;
  readonly tables: readonly PublicationTableFacts[];
}

export interface SlotFacts {
  readonly name: string;
  readonly plugin: string | null;
  readonly slotType: string;
  readonly database: string | null;
  readonly active: boolean;
  readonly activePid: number | null;
  /** reserved, extended, unreserved or lost (its WAL was removed or it was invalidated: it cannot stream any more). */
  readonly walStatus: string | null;
  /** Why Postgres invalidated the slot (pg_replication_slots.invalidation_reason, PostgreSQL 17 and later). */
  readonly invalidationReason?: string;
  readonly restartLsn: string | null;
  readonly confirmedFlushLsn: string | null;
  /** A failover slot (PostgreSQL 17 and later; false before). */
  readonly failover: boolean;
}

export interface TriggerFacts {
  readonly table: QualifiedName;
  readonly name: string;
  readonly functionName: string;
  readonly args: readonly string[];
  readonly enabled: boolean;
  /** ROW, AFTER, INSERT OR UPDATE OR DELETE, with a WHEN clause. */
  readonly shapeMatches: boolean;
}

export interface SubscriptionFacts {
  readonly name: string;
  readonly enabled: boolean;
  readonly slotName: string | null;
  readonly publications: readonly string[];
  /** Tables the subscription knows (pg_subscription_rel), as `schema.name` keys. */
  readonly tables: readonly string[];
}

export interface RegisteredTable {
  readonly syncName: string;
  readonly tableName: string;
  readonly sourceTable: string;
  readonly targetTable: string;
  readonly mode: 'mapped' | 'native';
  readonly state: string;
  readonly replicaIdentityBefore: string | null;
}

/** A map key for a qualified name. */
export function tableKey(name: QualifiedName): string {
  return `${name.schema}.${name.name}`;
}
