/**
 * The replication connection: START_REPLICATION on a logical slot with pgoutput, read as a duplex
 * COPY stream (pg-copy-streams' copyBoth, one chunk per CopyData frame, with backpressure).
 * Keepalives are answered here; the position confirmed to the server is only ever what the
 * caller says it has committed in the target.
 */
import { createRequire } from 'node:module';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Duplex } from 'node:stream';
import pg from 'pg';
import { SyncctlError } from '../errors.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import { quoteIdent, quoteLiteral } from '../sql/quote.ts';
import { formatLsn, type Lsn } from './pgoutput-decoder.ts';

const copyBoth = (createRequire(import.meta.url)('pg-copy-streams') as { both(text: string, options: object): Duplex & pg.Submittable }).both;

/** Microseconds between the Unix epoch and Postgres's epoch (2000-01-01). */
const PG_EPOCH_MICROS = 946_684_800_000_000n;
const FEEDBACK_INTERVAL_MS = 5_000;
/** Frames handed out between two turns of the event loop (see messages()). */
const YIELD_EVERY_FRAMES = 256;

/** Put at the head of the read queue by interrupt(). */
const INTERRUPT = Buffer.alloc(0);

export interface XLogData {
  /** Start of this WAL data. */
  readonly walStart: Lsn;
  /** The server's current end of WAL. */
  readonly walEnd: Lsn;
  /** The pgoutput message; undefined for a keepalive (the server has nothing more right now, or asks for feedback). */
  readonly message: Buffer | undefined;
}

export interface ReplicationOptions {
  readonly slot: string;
  readonly publications: readonly string[];
  readonly startLsn: Lsn;
  /** pgoutput protocol version; 1 unless the caller needs more. */
  readonly protoVersion?: number;
  /** Stream in-progress transactions (protocol 2 and later). */
  readonly streaming?: boolean;
  readonly messages?: boolean;
  /**
   * Caps logical_decoding_work_mem (kB) for this connection's walsender, never raising the
   * server's own value. A transaction that outgrows it is streamed while it runs (with
   * `streaming`) instead of being sent whole after its commit: the smaller it is, the less is
   * left to send and stage once the commit arrives.
   */
  readonly decodingWorkMemKb?: number;
}

export class ReplicationStream {
  private readonly client: pg.Client;
  private readonly duplex: Duplex & pg.Submittable;
  private readonly done: Promise<void>;
  private received: Lsn;
  /** Everything up to here is committed in the target: safe to let the server discard. */
  private confirmed: Lsn;
  private timer: NodeJS.Timeout | undefined;
  private failure: Error | undefined;
  /** Set by interrupt(): messages() ends at once, the connection stays open for a last confirm. */
  private interrupted = false;

  private constructor(client: pg.Client, duplex: Duplex & pg.Submittable, start: Lsn) {
    this.client = client;
    this.duplex = duplex;
    this.received = start;
    this.confirmed = start;
    this.done = new Promise<void>((resolve) => {
      duplex.on('error', (error: Error) => { this.failure = error; resolve(); });
      duplex.on('end', () => resolve());
      duplex.on('close', () => resolve());
    });
  }

  static async open(connectionString: string, options: ReplicationOptions): Promise<ReplicationStream> {
    const secret = passwordOf(connectionString);
    const client = new pg.Client({ connectionString, replication: 'database', application_name: `syncctl ${options.slot}` } as pg.ClientConfig);
    client.on('error', () => {});
    try {
      await client.connect();
    } catch (error) {
      throw new SyncctlError('CONNECTION_FAILED', `cannot open a replication connection to ${describeConnection(connectionString)}: ` +
        redactSecrets(error instanceof Error ? error.message : String(error), secret ? [secret] : []));
    }
    if (options.decodingWorkMemKb !== undefined) {
      // A logical walsender also runs plain SQL; the setting is read by its decoder as it goes.
      await client.query(`SELECT set_config('logical_decoding_work_mem', ${quoteLiteral(`${Math.floor(options.decodingWorkMemKb)}kB`)}, false) ` +
        `FROM pg_settings WHERE name = 'logical_decoding_work_mem' AND setting::bigint > ${Math.floor(options.decodingWorkMemKb)}`);
    }
    const pluginOptions = [
      `proto_version ${quoteLiteral(String(options.protoVersion ?? 1))}`,
      `publication_names ${quoteLiteral(options.publications.map(quoteIdent).join(','))}`,
      `messages ${quoteLiteral(options.messages ? 'true' : 'false')}`,
      ...(options.streaming ? [`streaming 'on'`] : []),
    ];
    const duplex = copyBoth(
      `START_REPLICATION SLOT ${quoteIdent(options.slot)} LOGICAL ${formatLsn(options.startLsn)} (${pluginOptions.join(', ')})`,
      { alignOnCopyDataFrame: true, readableObjectMode: true, readableHighWaterMark: 4096 },
    );
    client.query(duplex);
    const stream = new ReplicationStream(client, duplex, options.startLsn);
    // Each periodic status update asks for a reply: the server answers with a keepalive carrying
    // its current position, which the worker may confirm when idle, so an idle or filtered slot
    // advances within seconds instead of waiting for the server's own keepalive (wal_sender_timeout / 2).
    stream.timer = setInterval(() => stream.sendFeedback(true), FEEDBACK_INTERVAL_MS);
    return stream;
  }

  /**
   * XLogData frames in order, and keepalives (message undefined), which are answered here and
   * passed on so that a caller holding a finished batch can commit it. Ends when the stream closes.
   */
  async *messages(): AsyncGenerator<XLogData> {
    // Iterated by hand: leaving a for-await loop early would destroy the duplex (and with it the
    // last confirm). interrupt() puts a sentinel at the head of the read queue instead.
    const iterator = (this.duplex as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let sinceYield = 0;
    for (;;) {
      if (this.interrupted) return;
      // Frames already buffered are handed out without returning to the event loop: while
      // draining a backlog that would starve every other socket (the target sessions' replies,
      // COPY data going out) for as long as the buffer stays full. Let I/O in now and then.
      if (++sinceYield >= YIELD_EVERY_FRAMES) {
        sinceYield = 0;
        await yieldToEventLoop();
      }
      const next = await iterator.next();
      if (next.done) break;
      const chunk = next.value;
      if (chunk === INTERRUPT) return;
      const kind = chunk[0];
      if (kind === 0x77 /* w */) {
        const walStart = chunk.readBigUInt64BE(1);
        const walEnd = chunk.readBigUInt64BE(9);
        if (walStart > this.received) this.received = walStart;
        yield { walStart, walEnd, message: chunk.subarray(25) };
      } else if (kind === 0x6b /* k */) {
        const walEnd = chunk.readBigUInt64BE(1);
        if (walEnd > this.received) this.received = walEnd;
        if (chunk[17] === 1) this.sendFeedback(false);
        yield { walStart: walEnd, walEnd, message: undefined };
      }
    }
    if (this.failure) throw this.failure;
  }

  /**
   * Ends messages() at once, without waiting for the next frame, and keeps the connection open:
   * the caller can still commit what it holds, confirm() it, then close().
   */
  interrupt(): void {
    if (this.interrupted) return;
    this.interrupted = true;
    if (!this.duplex.readableEnded && !this.duplex.destroyed) this.duplex.unshift(INTERRUPT);
  }

  /**
   * The target transaction holding everything up to `lsn` has committed. Confirm the LSN only
   * after that commit; confirming earlier loses rows on a crash.
   */
  confirm(lsn: Lsn): void {
    if (lsn > this.confirmed) this.confirmed = lsn;
    this.sendFeedback(false);
  }

  /** More frames are already waiting to be read: a commit can wait for the next transaction. */
  hasBuffered(): boolean {
    return this.duplex.readableLength > 0;
  }

  get confirmedLsn(): Lsn {
    return this.confirmed;
  }


  private sendFeedback(requestReply: boolean): void {
    if (this.duplex.writableEnded || this.duplex.destroyed) return;
    const message = Buffer.alloc(34);
    message[0] = 0x72; // r: standby status update
    message.writeBigUInt64BE(this.received, 1); // written
    message.writeBigUInt64BE(this.confirmed, 9); // flushed: the server may discard WAL up to here
    message.writeBigUInt64BE(this.confirmed, 17); // applied
    message.writeBigUInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_MICROS, 25);
    message[33] = requestReply ? 1 : 0;
    this.duplex.write(message);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sendFeedback(false);
    this.duplex.end();
    await Promise.race([this.done, new Promise((r) => setTimeout(r, 2_000).unref())]);
    await this.client.end().catch(() => {});
  }
}
