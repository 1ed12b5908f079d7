/**
 * The worker's walsender decodes with a lowered logical_decoding_work_mem (`decodingWorkMemKb`),
 * so a large source transaction is streamed in blocks while it runs, not sent whole after its
 * commit. The database keeps the server default (64 MB): a 3,000-row open transaction (about
 * 300 kB) streams only through the lowered cap. (That the cap never raises a lower setting is
 * covered by stream-streamed, whose database runs at 64 kB under the worker's default cap.)
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import pg from 'pg';
import { ReplicationStream } from '../../src/stream/replication-stream.ts';
import { expectStatus, runSyncctl } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('decoding_work_mem');
let writer: pg.Client;

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE probe (id int PRIMARY KEY, note text NOT NULL);
    CREATE TABLE marker (id serial PRIMARY KEY);
    CREATE PUBLICATION probe_pub FOR TABLE probe, marker`);
  writer = new pg.Client({ connectionString: dbs().sourceUrl });
  await writer.connect();
});

afterAll(async () => {
  await writer?.end();
});

/** Opens a slot and a stream, writes 3,000 rows in an open transaction, and reports whether a Stream Start arrived before the commit. */
async function streamsWhileOpen(slot: string, decodingWorkMemKb: number | undefined): Promise<boolean> {
  const { rows } = await dbs().source.query<{ lsn: string }>(`SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  const [hi, lo] = rows[0]!.lsn.split('/').map((h) => BigInt(`0x${h}`));
  const stream = await ReplicationStream.open(dbs().sourceUrl, {
    slot, publications: ['probe_pub'], startLsn: (hi! << 32n) | lo!, protoVersion: 2, streaming: true,
    ...(decodingWorkMemKb === undefined ? {} : { decodingWorkMemKb }),
  });
  try {
    await writer.query('BEGIN');
    await writer.query(`INSERT INTO probe SELECT g, repeat('x', 40) FROM generate_series(1, 3000) g`);
    // A marker committed after the open transaction's changes: once it arrives, everything the
    // walsender was going to send before the big commit has been sent.
    await dbs().source.query('INSERT INTO marker DEFAULT VALUES');
    let streamed = false;
    for await (const data of stream.messages()) {
      const type = data.message?.[0];
      if (type === 0x53 /* S: Stream Start */) streamed = true;
      if (type === 0x43 /* C: Commit, of the marker's transaction */) break;
    }
    return streamed;
  } finally {
    await writer.query('ROLLBACK');
    await stream.close();
    await dbs().source.query('SELECT pg_drop_replication_slot($1)', [slot]);
  }
}

test('a transaction larger than the lowered cap is streamed while it runs; under the server default it is not', async () => {
  expect(await streamsWhileOpen('probe_default', undefined)).toBe(false);
  expect(await streamsWhileOpen('probe_lowered', 64)).toBe(true);
});

test('syncctl run refuses a cap below Postgres\'s minimum before connecting anywhere', async () => {
  const result = expectStatus(await runSyncctl(['run', 'no-such-dir', '--decoding-work-mem', '10'], {}), 2);
  expect(result.stderr).toContain('--decoding-work-mem must be a whole number of kB, at least 64');
});
