/**
 * Scenario (f), the syncctl side, as its own process: syncctl's slot reader (ReplicationStream +
 * PgoutputDecoder) reads a slot from its confirmed position to an end LSN, decoding every message
 * and confirming nothing (the same stop rule as pg_recvlogical -E: a message starting beyond the
 * end LSN, a message starting at it, or a keepalive reaching it). Prints one JSON line.
 *
 *   BENCH_SOURCE_URL=... node bench/decode-reader.ts <slot> <publication> <end LSN>
 */
import { parseLsn, PgoutputDecoder } from '../src/stream/pgoutput-decoder.ts';
import { ReplicationStream } from '../src/stream/replication-stream.ts';

const [slot, publication, endText] = process.argv.slice(2);
const url = process.env['BENCH_SOURCE_URL'];
if (!slot || !publication || !endText || !url) {
  process.stderr.write('usage: BENCH_SOURCE_URL=... node bench/decode-reader.ts <slot> <publication> <end LSN>\n');
  process.exit(2);
}
const end = parseLsn(endText);

const t0 = performance.now();
const stream = await ReplicationStream.open(url, { slot, publications: [publication], startLsn: 0n, protoVersion: 1, messages: false });
const decoder = new PgoutputDecoder();
let messages = 0;
let changes = 0;
let commits = 0;
// The worker's way of reading: synchronously while frames are buffered, awaiting only when not.
for (;;) {
  const frame = stream.read();
  if (frame === null) {
    if (await stream.readable()) continue;
    break;
  }
  const { walStart, walEnd, message } = frame;
  if (message === undefined) {
    if (walEnd >= end) break;
    continue;
  }
  if (walStart > end) break;
  const m = decoder.decode(message);
  messages++;
  if (m.tag === 'insert' || m.tag === 'update' || m.tag === 'delete') changes++;
  else if (m.tag === 'commit') commits++;
  if (walStart === end) break;
}
const seconds = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage();
process.stdout.write(`${JSON.stringify({ seconds, messages, changes, commits, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);
await Promise.race([stream.close(), new Promise((r) => setTimeout(r, 1000))]);
process.exit(0);
