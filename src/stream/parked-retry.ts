/**
 * The worker's side of retrying parked changes: every RETRY_EVERY_MS at most, while the sync has
 * pending apply errors, those a foreign key refused are applied again inside the batch being
 * committed (after its own changes: the parent may be among them), or in a transaction of their
 * own when the stream is idle. A parent that arrives through another sync is seen the same way.
 */
import type pg from 'pg';
import { parkedGeneration } from '../apply/parked.ts';
import { retryParked, type RetryTable } from '../conflicts/retry-parked.ts';
import type { Logger } from '../observe/logger.ts';

const RETRY_EVERY_MS = 5_000;
/** With nothing a foreign key refused pending (as of the last look, and nothing parked since), look again this seldom. */
const LOOK_AGAIN_MS = 60_000;
/** SQLSTATE foreign_key_violation. */
const FOREIGN_KEY_VIOLATION = '23503';

export class ParkedRetry {
  private last = 0;
  /** The last retry found changes a foreign key refused; the park generation it saw. */
  private found = true;
  private generation = -1;
  private readonly syncName: string;
  private readonly parked: ReadonlySet<string>;
  private readonly logger: Logger;

  /** `parked`: the sync's tables with pending apply errors (parked.ts), kept up to date by its writers. */
  constructor(syncName: string, parked: ReadonlySet<string>, logger: Logger) {
    this.syncName = syncName;
    this.parked = parked;
    this.logger = logger;
  }

  /** Time for a retry: some table has pending apply errors and the last retry is old enough. */
  due(): boolean {
    if (this.parked.size === 0) return false;
    const elapsed = Date.now() - this.last;
    const fresh = this.found || parkedGeneration(this.syncName) !== this.generation;
    return elapsed >= (fresh ? RETRY_EVERY_MS : LOOK_AGAIN_MS);
  }

  /** A retry is on its way (into the batch being committed): the next one waits its turn from now. */
  claim(): void {
    this.last = Date.now();
  }

  /**
   * Retries, in the open transaction on `client`, the pending foreign-key errors of `tables` (the
   * streaming ones, their source columns as published now). Pending changes someone else holds
   * (`syncctl conflicts resolve|retry` running) are left for next time.
   */
  async run(client: pg.Client, tables: readonly RetryTable[]): Promise<void> {
    this.last = Date.now();
    this.generation = parkedGeneration(this.syncName);
    const shapes = new Map<string, RetryTable>(tables.filter((t) => this.parked.has(t.resolved.table.name)).map((t) => [t.resolved.table.name, t]));
    if (shapes.size === 0) {
      this.found = false;
      return;
    }
    const result = await retryParked(client, this.syncName, shapes, { sqlstate: FOREIGN_KEY_VIOLATION }, { by: 'syncctl run', skipLocked: true });
    this.found = result.retried + result.failed + result.superseded > 0;
    if (result.retried + result.superseded > 0) this.logger.info({ ...result }, 'parked changes a foreign key refused, applied again');
  }
}
