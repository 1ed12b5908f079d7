/**
 * START_REPLICATION's COPY both mode on a pg connection, read frame by frame straight from the
 * connection's socket, only as fast as the caller takes frames.
 *
 * Bytes in flight: nothing is read from the socket until every frame of the chunk in hand has
 * been taken, so this process holds at most the socket's own buffer (its highWaterMark, 64 kB by
 * default, plus one read), the chunk being taken apart, and one frame that straddles two chunks
 * (assembled in a buffer of its own size). Past that, TCP holds the walsender back. Frames are
 * views of the chunk: a caller that keeps a frame, or a slice of one, keeps that chunk alive.
 *
 * Protocol: the server answers START_REPLICATION with CopyBothResponse, then CopyData frames;
 * NoticeResponse, ParameterStatus and NotificationResponse may come between and are skipped.
 * Any other message (CopyDone, ErrorResponse, …) ends the copy: from that message on, the
 * socket goes back to pg, which parses it and reports to this query (handleError,
 * handleReadyForQuery), as it does for every query.
 */
import type { Socket } from 'node:net';
import type pg from 'pg';

const COPY_DATA = 0x64; // d
const COPY_BOTH_RESPONSE = 0x57; // W
const NOTICE_RESPONSE = 0x4e; // N
const PARAMETER_STATUS = 0x53; // S
const NOTIFICATION_RESPONSE = 0x41; // A
const COPY_DONE = Buffer.from([0x63, 0, 0, 0, 4]);
const EMPTY = Buffer.alloc(0);

/** What this needs of pg's Connection (not in its typings). */
interface Connection {
  readonly stream: Socket;
  query(text: string): void;
}

export class CopyBoth implements pg.Submittable {
  private readonly text: string;
  private socket: Socket | undefined;
  /** pg's own 'data' listener: set aside while the copy reads the socket, put back after. */
  private pgData: ((chunk: Buffer) => void) | undefined;
  /** The socket chunk being taken apart, and how far. */
  private chunk: Buffer = EMPTY;
  private pos = 0;
  /** A message header (code, length) split between two chunks, and how much of it arrived. */
  private readonly head = Buffer.alloc(5);
  private headFill = 0;
  /** A message body split between chunks: its code, its bytes, how many arrived. */
  private bodyCode = 0;
  private body: Buffer | undefined;
  private bodyFill = 0;
  /** CopyBothResponse arrived: writes go out as they come (before, they wait). */
  private started = false;
  private readonly early: Buffer[] = [];
  /** CopyDone was sent: nothing may be written after it. */
  private ending = false;
  /** The socket went back to pg (the copy ended, or is ending). */
  private detached = false;
  private finishedFlag = false;
  private failureValue: Error | undefined;
  /** Called on anything a waiting reader may care about: new data, the end, a failure. */
  private wake: (() => void) | undefined;
  private readonly onReadable = () => this.notify();
  private readonly onClose = () => this.finish(new Error('the replication connection closed'));

  constructor(text: string) {
    this.text = text;
  }

  /** The copy is over: pg has the connection back (the query ended or failed), or the socket closed. */
  get finished(): boolean {
    return this.finishedFlag;
  }

  /** What ended the copy, if it failed. */
  get failure(): Error | undefined {
    return this.failureValue;
  }

  /** Called by pg when the query's turn comes: take the socket over, then send the query. */
  submit(connection: pg.Connection): void {
    const conn = connection as unknown as Connection;
    const socket = conn.stream;
    const listeners = socket.listeners('data') as ((chunk: Buffer) => void)[];
    if (listeners.length !== 1) throw new Error(`copy both: expected pg's one 'data' listener on the socket, found ${listeners.length}`);
    this.socket = socket;
    this.pgData = listeners[0]!;
    socket.removeListener('data', this.pgData);
    socket.pause();
    socket.on('readable', this.onReadable);
    socket.once('close', this.onClose);
    conn.query(this.text);
  }

  /**
   * The payload of the frame next() found: `frame` from `start` to `end`. `frame` is the socket
   * chunk it came in, or a buffer of its own when it straddled chunks; either way its bytes never
   * change, so views of them stay valid.
   */
  frame: Buffer = EMPTY;
  start = 0;
  end = 0;

  /**
   * Finds the next CopyData frame already received (see frame, start, end): false when none is
   * complete yet, or the copy ended. Nothing is allocated for a frame that lies within a chunk.
   */
  next(): boolean {
    if (this.detached) return false;
    for (;;) {
      let chunk = this.chunk;
      let pos = this.pos;
      if (pos === chunk.length) {
        const more = this.socket!.read() as Buffer | null;
        if (more === null) {
          this.chunk = EMPTY;
          this.pos = 0;
          return false;
        }
        this.chunk = chunk = more;
        this.pos = pos = 0;
      }
      if (this.body !== undefined) {
        // The rest of a message begun in an earlier chunk.
        const body = this.body;
        const n = Math.min(chunk.length - pos, body.length - this.bodyFill);
        chunk.copy(body, this.bodyFill, pos, pos + n);
        this.bodyFill += n;
        this.pos = pos + n;
        if (this.bodyFill < body.length) continue;
        this.body = undefined;
        if (this.bodyCode === COPY_DATA) return this.found(body, 0, body.length);
        this.control(this.bodyCode);
        continue;
      }
      if (this.headFill === 0 && chunk.length - pos >= 5) {
        const code = chunk[pos]!;
        const length = chunk.readUInt32BE(pos + 1) - 4;
        if (!inCopy(code)) {
          this.detach(chunk.subarray(pos));
          return false;
        }
        if (chunk.length - pos - 5 >= length) {
          this.pos = pos + 5 + length;
          if (code === COPY_DATA) return this.found(chunk, pos + 5, pos + 5 + length);
          this.control(code);
          continue;
        }
        this.begin(code, length);
        this.pos = pos + 5;
        continue;
      }
      // A header split between chunks.
      const n = Math.min(5 - this.headFill, chunk.length - pos);
      chunk.copy(this.head, this.headFill, pos, pos + n);
      this.headFill += n;
      this.pos = pos + n;
      if (this.headFill < 5) continue;
      this.headFill = 0;
      const code = this.head[0]!;
      const length = this.head.readUInt32BE(1) - 4;
      if (!inCopy(code)) {
        this.detach(Buffer.concat([this.head, chunk.subarray(this.pos)]));
        return false;
      }
      if (length > 0) this.begin(code, length);
      else if (code === COPY_DATA) return this.found(EMPTY, 0, 0);
      else this.control(code);
    }
  }

  private found(frame: Buffer, start: number, end: number): true {
    this.frame = frame;
    this.start = start;
    this.end = end;
    return true;
  }

  /** Bytes are waiting to be taken apart: next() may return a frame without waiting. */
  buffered(): boolean {
    if (this.detached) return false;
    if (this.socket!.readableLength > 0) return true;
    if (this.body !== undefined || this.headFill > 0) return false;
    const left = this.chunk.length - this.pos;
    return left >= 5 && left - 5 >= this.chunk.readUInt32BE(this.pos + 1) - 4;
  }

  /** Resolves on the next event that may change what next() returns (data, the end, a failure), or on stopWaiting(). */
  waitForData(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = () => {
        this.wake = undefined;
        resolve();
      };
    });
  }

  /** Sends one CopyData frame (a standby status update). Ignored once the copy is ending or over. */
  write(payload: Buffer): void {
    if (this.ending || this.detached || this.finishedFlag || this.socket === undefined || this.socket.destroyed) return;
    const frame = Buffer.allocUnsafe(5 + payload.length);
    frame[0] = COPY_DATA;
    frame.writeUInt32BE(payload.length + 4, 1);
    payload.copy(frame, 5);
    if (this.started) this.socket.write(frame);
    else this.early.push(frame);
  }

  /**
   * Ends the copy from this side (CopyDone) and waits, at most `timeoutMs`, until the server has
   * ended it too and pg has the connection back; what the server still sends meanwhile is dropped.
   */
  async stop(timeoutMs: number): Promise<void> {
    if (this.socket === undefined || this.finishedFlag || this.ending) return;
    this.ending = true;
    if (!this.detached && !this.socket.destroyed) {
      for (const frame of this.early.splice(0)) this.socket.write(frame);
      this.socket.write(COPY_DONE);
    }
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      this.notify();
    }, timeoutMs).unref();
    try {
      while (!this.finishedFlag && !late) {
        while (this.next());
        if (!this.finishedFlag) await this.waitForData();
      }
    } finally {
      clearTimeout(timer);
    }
  }

  // pg calls these on the active query. A replication connection answers START_REPLICATION with
  // the copy, then (after CopyDone) CommandComplete and ReadyForQuery, or with an ErrorResponse.
  handleError(error: Error): void {
    this.finish(error);
  }

  handleReadyForQuery(): void {
    this.finish(undefined);
  }

  handleCommandComplete(): void {}
  handleCopyData(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(): void {}

  private finish(error: Error | undefined): void {
    if (error !== undefined && !this.finishedFlag) this.failureValue ??= error;
    this.finishedFlag = true;
    this.socket?.removeListener('close', this.onClose);
    this.notify();
  }

  /** Ends the wait of waitForData() now. */
  stopWaiting(): void {
    this.notify();
  }

  private notify(): void {
    this.wake?.();
  }

  /** A message body longer than what is left of the chunk: assembled in a buffer of its own. */
  private begin(code: number, length: number): void {
    this.bodyCode = code;
    this.body = Buffer.allocUnsafe(length);
    this.bodyFill = 0;
  }

  /** A message of the copy other than CopyData. */
  private control(code: number): void {
    if (code !== COPY_BOTH_RESPONSE || this.started) return;
    this.started = true;
    for (const frame of this.early.splice(0)) this.socket!.write(frame);
  }

  /** The copy ends here: pg parses `unread` (from the message that ended it on) and the rest of the socket. */
  private detach(unread: Buffer): void {
    this.detached = true;
    this.chunk = EMPTY;
    this.pos = 0;
    const socket = this.socket!;
    socket.removeListener('readable', this.onReadable);
    socket.on('data', this.pgData!);
    this.pgData!(unread);
    process.nextTick(() => socket.resume());
    this.notify();
  }
}

/** Messages that may come while the copy runs; any other one ends it. */
function inCopy(code: number): boolean {
  return code === COPY_DATA || code === COPY_BOTH_RESPONSE || code === NOTICE_RESPONSE || code === PARAMETER_STATUS || code === NOTIFICATION_RESPONSE;
}
