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
import { checkSlotStreamable } from '../catalog/slot-health.ts';
import { connect } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { pinOutputSettings } from '../db/output-settings.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import { quoteIdent, quoteLiteral } from '../sql/quote.ts';
import { formatLsn, type Lsn } from './pgoutput-decoder.ts';

const copyBoth = (createRequire(import.meta.url)('pg-copy-streams') as { both(text: string, options: object): Duplex & pg.Submittable }).both;

/** Microseconds between the Unix epoch and Postgres's epoch (2000-01-01). */
const PG_EPOCH_MICROS = 946_684_800_000_000n;
const FEEDBACK_INTERVAL_MS = 5_000;
/** Frames handed out between two turns of the event loop (see read()). */
const YIELD_EVERY_FRAMES = 256;

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
  /** Set by interrupt(): reading ends at once, the connection stays open for a last confirm. */
  private interrupted = false;
  /** The duplex ended, closed or failed. */
  private ended = false;
  /** Frames handed out since the event loop last had a turn. */
  private sinceYield = 0;
  /** Ends the wait in readable(). */
  private wake: (() => void) | undefined;

  private constructor(client: pg.Client, duplex: Duplex & pg.Submittable, start: Lsn) {
    this.client = client;
    this.duplex = duplex;
    this.received = start;
    this.confirmed = start;
    this.done = new Promise<void>((resolve) => {
      const finish = (error?: Error) => {
        if (error) this.failure ??= error;
        this.ended = true;
        this.wake?.();
        resolve();
      };
      duplex.on('error', finish);
      duplex.on('end', () => finish());
      duplex.on('close', () => finish());
    });
  }

  static async open(connectionString: string, options: ReplicationOptions): Promise<ReplicationStream> {
    // A lost or missing slot cannot say what it missed: refuse before reading anything from it.
    const source = await connect('source', connectionString, `syncctl ${options.slot}`);
    try {
      await checkSlotStreamable(source, options.slot);
    } finally {
      await source.close();
    }
    const secret = passwordOf(connectionString);
    const client = new pg.Client({ connectionString, replication: 'database', application_name: `syncctl ${options.slot}` } as pg.ClientConfig);
    client.on('error', () => {});
    try {
      await client.connect();
    } catch (error) {
      throw new SyncctlError('CONNECTION_FAILED', `cannot open a replication connection to ${describeConnection(connectionString)}: ` +
        redactSecrets(error instanceof Error ? error.message : String(error), secret ? [secret] : []));
    }
    try {
      // pgoutput prints every column with this walsender's settings: pinned as the target reads them.
      await pinOutputSettings(client);
      if (options.decodingWorkMemKb !== undefined) {
        // A logical walsender also runs plain SQL; the setting is read by its decoder as it goes.
        await client.query(`SELECT set_config('logical_decoding_work_mem', ${quoteLiteral(`${Math.floor(options.decodingWorkMemKb)}kB`)}, false) ` +
          `FROM pg_settings WHERE name = 'logical_decoding_work_mem' AND setting::bigint > ${Math.floor(options.decodingWorkMemKb)}`);
      }
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
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
   * The next frame already received: XLogData in order, and keepalives (message undefined), which
   * are answered here and passed on so that a caller holding a finished batch can commit it.
   * Null when nothing is buffered, when it is time to let the event loop in, or after interrupt():
   * then `await readable()`. Read synchronously, without a promise per frame: a backlog drain
   * hands out hundreds of thousands of frames a second.
   */
  read(): XLogData | null {
    for (;;) {
      // Frames already buffered are handed out without returning to the event loop: while
      // draining a backlog that would starve every other socket (the target sessions' replies,
      // COPY data going out) for as long as the buffer stays full. Let I/O in now and then.
      if (this.interrupted || this.sinceYield >= YIELD_EVERY_FRAMES) return null;
      const chunk = this.duplex.read() as Buffer | null;
      if (chunk === null) return null;
      this.sinceYield++;
      const kind = chunk[0];
      if (kind === 0x77 /* w */) {
        const walStart = chunk.readBigUInt64BE(1);
        const walEnd = chunk.readBigUInt64BE(9);
        if (walStart > this.received) this.received = walStart;
        return { walStart, walEnd, message: chunk.subarray(25) };
      }
      if (kind === 0x6b /* k */) {
        const walEnd = chunk.readBigUInt64BE(1);
        if (walEnd > this.received) this.received = walEnd;
        if (chunk[17] === 1) this.sendFeedback(false);
        return { walStart: walEnd, walEnd, message: undefined };
      }
    }
  }

  /**
   * Waits until read() may have a frame again. False once the stream has ended and everything
   * received was read, or after interrupt(); throws what ended it if it failed.
   */
  async readable(): Promise<boolean> {
    if (this.interrupted) return false;
    if (this.sinceYield >= YIELD_EVERY_FRAMES) {
      this.sinceYield = 0;
      await yieldToEventLoop();
      return !this.interrupted;
    }
    if (this.duplex.readableLength === 0 && !this.ended) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.duplex.off('readable', wake);
          this.wake = undefined;
          resolve();
        };
        this.wake = wake;
        this.duplex.on('readable', wake);
      });
    }
    this.sinceYield = 0;
    if (this.interrupted) return false;
    if (!this.ended) return true;
    if (this.failure) throw this.failure;
    return this.duplex.readableLength > 0 && !this.duplex.destroyed;
  }

  /** XLogData frames and keepalives in order (see read()), as an async iterator; ends when the stream does. */
  async *messages(): AsyncGenerator<XLogData> {
    for (;;) {
      const frame = this.read();
      if (frame !== null) yield frame;
      else if (!(await this.readable())) return;
    }
  }

  /**
   * Ends reading at once (read() returns null, readable() false), without waiting for the next
   * frame, and keeps the connection open: the caller can still commit what it holds, confirm()
   * it, then close().
   */
  interrupt(): void {
    this.interrupted = true;
    this.wake?.();
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
