import pg from 'pg';
import { SyncctlError } from '../errors.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import { pinOutputSettings } from './output-settings.ts';

export type Side = 'source' | 'target';

/** A connected client that knows which side it is and which secret its errors must not show. */
export interface Connection {
  readonly side: Side;
  readonly client: pg.Client;
  /** `user@host:port/db`, safe to print. */
  readonly description: string;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>>;
  close(): Promise<void>;
}

export async function connect(side: Side, connectionString: string, applicationName = 'syncctl'): Promise<Connection> {
  const secret = passwordOf(connectionString);
  const description = describeConnection(connectionString);
  let client: pg.Client;
  try {
    // A malformed URL throws here, synchronously ("Invalid URL").
    client = new pg.Client({ connectionString, application_name: applicationName });
  } catch (error) {
    throw new SyncctlError('CONNECTION_FAILED', `the ${side} connection string ${description} is not valid: ${scrub(error, secret)}`, {
      details: { side, database: description },
    });
  }
  // An idle client whose server goes away emits 'error'; without a listener Node would crash.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (error) {
    throw new SyncctlError('CONNECTION_FAILED', `cannot connect to the ${side} database ${description}: ${scrub(error, secret)}`, {
      details: { side, database: description },
    });
  }
  // Source text reaches the target (the copy's COPY, row filters deparsed and sent back): it must
  // not depend on the source database's own DateStyle, IntervalStyle or extra_float_digits.
  if (side === 'source') {
    try {
      await pinOutputSettings(client);
    } catch (error) {
      await client.end().catch(() => {});
      throw withoutSecret(error, secret);
    }
  }
  return {
    side,
    client,
    description,
    async query(text, values) {
      try {
        // Extended protocol always: it runs exactly one statement, so spec SQL spliced into DDL
        // (a row filter, a mapping in a view) cannot smuggle in a second one after a semicolon.
        const config = { text, values: values as unknown[] | undefined, queryMode: 'extended' } as pg.QueryConfig;
        return await client.query(config);
      } catch (error) {
        throw withoutSecret(error, secret);
      }
    },
    async close() {
      await client.end().catch(() => {});
    },
  };
}

function scrub(error: unknown, secret: string | undefined): string {
  const message = error instanceof Error ? error.message : String(error);
  return redactSecrets(message, secret ? [secret] : []);
}

/** Postgres errors keep their fields (code, position) but lose any secret in their message. */
function withoutSecret(error: unknown, secret: string | undefined): unknown {
  if (error instanceof Error) error.message = scrub(error, secret);
  return error;
}
