/**
 * The replication connection: START_REPLICATION on a logical slot with pgoutput, its COPY both
 * stream read frame by frame from the socket as the caller asks for frames (copy-both.ts): what
 * is received but not yet read is bounded by the socket's buffer, not by a count of frames, and
 * TCP holds the walsender back beyond it. Keepalives are answered here; the position confirmed
 * to the server is only ever what the caller says it has committed in the target.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import pg from 'pg';
import { checkSlotStreamable } from '../catalog/slot-health.ts';
import { connect } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { pinOutputSettings } from '../db/output-settings.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import { quoteIdent, quoteLiteral } from '../sql/quote.ts';
import { CopyBoth } from './copy-both.ts';
import { formatLsn, type Lsn } from './pgoutput-decoder.ts';

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
  /** pgoutput's `origin` (PostgreSQL 16 and later): `none` sends only changes made on the server itself. */
  readonly origin?: 'none';
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
  private readonly copy: CopyBoth;
  private received: Lsn;
  /** Everything up to here is committed in the target: safe to let the server discard. */
  private confirmed: Lsn;
  private timer: NodeJS.Timeout | undefined;
  /** Set by interrupt(): reading ends at once, the connection stays open for a last confirm. */
  private interrupted = false;
  /** Frames handed out since the event loop last had a turn. */
  private sinceYield = 0;

  private constructor(client: pg.Client, copy: CopyBoth, start: Lsn) {
    this.client = client;
    this.copy = copy;
    this.received = start;
    this.confirmed = start;
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
      ...(options.origin ? [`origin ${quoteLiteral(options.origin)}`] : []),
    ];
    const copy = new CopyBoth(`START_REPLICATION SLOT ${quoteIdent(options.slot)} LOGICAL ${formatLsn(options.startLsn)} (${pluginOptions.join(', ')})`);
    client.query(copy);
    const stream = new ReplicationStream(client, copy, options.startLsn);
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
   * hands out hundreds of thousands of frames a second. The message is a view of the socket chunk
   * it arrived in: keeping it (or a slice of it) keeps that chunk.
   */
  read(): XLogData | null {
    for (;;) {
      // Frames already buffered are handed out without returning to the event loop: while
      // draining a backlog that would starve every other socket (the target sessions' replies,
      // COPY data going out) for as long as the buffer stays full. Let I/O in now and then.
      if (this.interrupted || this.sinceYield >= YIELD_EVERY_FRAMES) return null;
      if (!this.copy.next()) return null;
      this.sinceYield++;
      const { frame, start, end } = this.copy;
      const kind = frame[start];
      if (kind === 0x77 /* w */) {
        // A logical walsender sends one position as both, and 0 in every message but the last of
        // a write (most changes): no BigInt is made for those.
        const walStart = lsnAt(frame, start + 1);
        const walEnd = frame.readUInt32BE(start + 9) === frame.readUInt32BE(start + 1) && frame.readUInt32BE(start + 13) === frame.readUInt32BE(start + 5)
          ? walStart : lsnAt(frame, start + 9);
        if (walStart > this.received) this.received = walStart;
        return { walStart, walEnd, message: frame.subarray(start + 25, end) };
      }
      if (kind === 0x6b /* k */) {
        const walEnd = frame.readBigUInt64BE(start + 1);
        if (walEnd > this.received) this.received = walEnd;
        if (frame[start + 17] === 1) this.sendFeedback(false);
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
    if (!this.copy.buffered() && !this.copy.finished) await this.copy.waitForData();
    this.sinceYield = 0;
    if (this.interrupted) return false;
    if (this.copy.failure) throw this.copy.failure;
    return !this.copy.finished;
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
    this.copy.stopWaiting();
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
    return this.copy.buffered();
  }

  get confirmedLsn(): Lsn {
    return this.confirmed;
  }


  private sendFeedback(requestReply: boolean): void {
    const message = Buffer.alloc(34);
    message[0] = 0x72; // r: standby status update
    message.writeBigUInt64BE(this.received, 1); // written
    message.writeBigUInt64BE(this.confirmed, 9); // flushed: the server may discard WAL up to here
    message.writeBigUInt64BE(this.confirmed, 17); // applied
    message.writeBigUInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_MICROS, 25);
    message[33] = requestReply ? 1 : 0;
    this.copy.write(message);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sendFeedback(false);
    await this.copy.stop(2_000);
    await this.client.end().catch(() => {});
  }
}

/** The 64-bit LSN at `at`; 0 without allocating. */
function lsnAt(buffer: Buffer, at: number): Lsn {
  return buffer.readUInt32BE(at) === 0 && buffer.readUInt32BE(at + 4) === 0 ? 0n : buffer.readBigUInt64BE(at);
}
