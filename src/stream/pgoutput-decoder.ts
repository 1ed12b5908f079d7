/**
 * A pgoutput decoder (protocol versions 1 to 4) that keeps column values as raw byte slices of
 * the message: no type parsing in JS, so every value reaches the target exactly as the source's
 * output function wrote it, and no per-value allocation besides the slice.
 *
 * Replaces pg-logical-replication's parser, which runs every value through pg-types (timestamps
 * become Date and lose microseconds) and cannot read streamed in-progress transactions.
 * Message formats: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 */

export type Lsn = bigint;

/** A column value: null, unchanged TOAST (not sent), or the text (or binary) bytes. */
export type TupleValue = null | typeof UNCHANGED_TOAST | Buffer;
export const UNCHANGED_TOAST = Symbol('unchanged-toast');
export type Tuple = TupleValue[];

export interface RelationColumn {
  readonly name: string;
  readonly typeOid: number;
  readonly typeMod: number;
  /** Part of the replica identity key. */
  readonly isKey: boolean;
}

export interface RelationMessage {
  readonly tag: 'relation';
  readonly xid: number | undefined;
  readonly relationId: number;
  readonly schema: string;
  readonly name: string;
  /** d default, n nothing, f full, i index. */
  readonly replicaIdentity: string;
  readonly columns: readonly RelationColumn[];
}

export type PgoutputMessage =
  | { readonly tag: 'begin'; readonly finalLsn: Lsn; readonly commitTime: bigint; readonly xid: number }
  | { readonly tag: 'commit'; readonly flags: number; readonly commitLsn: Lsn; readonly endLsn: Lsn; readonly commitTime: bigint }
  | { readonly tag: 'origin'; readonly lsn: Lsn; readonly name: string }
  | RelationMessage
  | { readonly tag: 'type'; readonly xid: number | undefined; readonly typeOid: number; readonly schema: string; readonly name: string }
  | { readonly tag: 'insert'; readonly xid: number | undefined; readonly relationId: number; readonly newTuple: Tuple }
  | {
    readonly tag: 'update'; readonly xid: number | undefined; readonly relationId: number;
    /** Present when the key changed (K: key columns only) or with REPLICA IDENTITY FULL (O: whole row). */
    readonly oldTuple: Tuple | undefined; readonly oldKind: 'K' | 'O' | undefined; readonly newTuple: Tuple;
  }
  | { readonly tag: 'delete'; readonly xid: number | undefined; readonly relationId: number; readonly oldTuple: Tuple; readonly oldKind: 'K' | 'O' }
  | { readonly tag: 'truncate'; readonly xid: number | undefined; readonly cascade: boolean; readonly restartIdentity: boolean; readonly relationIds: readonly number[] }
  | { readonly tag: 'message'; readonly xid: number | undefined; readonly transactional: boolean; readonly lsn: Lsn; readonly prefix: string; readonly content: Buffer }
  | { readonly tag: 'stream-start'; readonly xid: number; readonly first: boolean }
  | { readonly tag: 'stream-stop' }
  | { readonly tag: 'stream-commit'; readonly xid: number; readonly flags: number; readonly commitLsn: Lsn; readonly endLsn: Lsn; readonly commitTime: bigint }
  | { readonly tag: 'stream-abort'; readonly xid: number; readonly subXid: number };

export class PgoutputDecoder {
  /** Inside a stream-start … stream-stop block, data messages carry a leading xid. */
  private streaming = false;
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;

  decode(message: Buffer): PgoutputMessage {
    this.buf = message;
    this.pos = 1;
    const tag = message[0];
    switch (tag) {
      case 0x42: /* B */ return { tag: 'begin', finalLsn: this.int64(), commitTime: this.int64(), xid: this.int32() };
      case 0x43: /* C */ {
        const flags = this.int8();
        return { tag: 'commit', flags, commitLsn: this.int64(), endLsn: this.int64(), commitTime: this.int64() };
      }
      case 0x4f: /* O */ return { tag: 'origin', lsn: this.int64(), name: this.string() };
      case 0x52: /* R */ {
        const xid = this.streamXid();
        const relationId = this.int32();
        const schema = this.string();
        const name = this.string();
        const replicaIdentity = String.fromCharCode(this.int8());
        const count = this.int16();
        const columns: RelationColumn[] = [];
        for (let i = 0; i < count; i++) {
          const flags = this.int8();
          columns.push({ isKey: (flags & 1) === 1, name: this.string(), typeOid: this.int32(), typeMod: this.int32() });
        }
        return { tag: 'relation', xid, relationId, schema, name, replicaIdentity, columns };
      }
      case 0x59: /* Y */ return { tag: 'type', xid: this.streamXid(), typeOid: this.int32(), schema: this.string(), name: this.string() };
      case 0x49: /* I */ {
        const xid = this.streamXid();
        const relationId = this.int32();
        this.expect(0x4e);
        return { tag: 'insert', xid, relationId, newTuple: this.tuple() };
      }
      case 0x55: /* U */ {
        const xid = this.streamXid();
        const relationId = this.int32();
        let kind = this.int8();
        let oldTuple: Tuple | undefined;
        let oldKind: 'K' | 'O' | undefined;
        if (kind === 0x4b || kind === 0x4f) {
          oldKind = kind === 0x4b ? 'K' : 'O';
          oldTuple = this.tuple();
          kind = this.int8();
        }
        if (kind !== 0x4e) throw new Error(`pgoutput: expected N in update, got ${kind}`);
        return { tag: 'update', xid, relationId, oldTuple, oldKind, newTuple: this.tuple() };
      }
      case 0x44: /* D */ {
        const xid = this.streamXid();
        const relationId = this.int32();
        const kind = this.int8();
        return { tag: 'delete', xid, relationId, oldKind: kind === 0x4b ? 'K' : 'O', oldTuple: this.tuple() };
      }
      case 0x54: /* T */ {
        const xid = this.streamXid();
        const count = this.int32();
        const options = this.int8();
        const relationIds: number[] = [];
        for (let i = 0; i < count; i++) relationIds.push(this.int32());
        return { tag: 'truncate', xid, cascade: (options & 1) === 1, restartIdentity: (options & 2) === 2, relationIds };
      }
      case 0x4d: /* M */ {
        const xid = this.streamXid();
        const transactional = this.int8() === 1;
        const lsn = this.int64();
        const prefix = this.string();
        const length = this.int32();
        const content = this.buf.subarray(this.pos, this.pos + length);
        this.pos += length;
        return { tag: 'message', xid, transactional, lsn, prefix, content };
      }
      case 0x53: /* S */ {
        this.streaming = true;
        return { tag: 'stream-start', xid: this.int32(), first: this.int8() === 1 };
      }
      case 0x45: /* E */ {
        this.streaming = false;
        return { tag: 'stream-stop' };
      }
      case 0x63: /* c */ {
        const xid = this.int32();
        const flags = this.int8();
        return { tag: 'stream-commit', xid, flags, commitLsn: this.int64(), endLsn: this.int64(), commitTime: this.int64() };
      }
      case 0x41: /* A */ return { tag: 'stream-abort', xid: this.int32(), subXid: this.int32() };
      default:
        throw new Error(`pgoutput: unknown message type ${String.fromCharCode(tag ?? 0)} (0x${(tag ?? 0).toString(16)})`);
    }
  }

  private streamXid(): number | undefined {
    return this.streaming ? this.int32() : undefined;
  }

  private tuple(): Tuple {
    const count = this.int16();
    const values: Tuple = new Array(count);
    const buf = this.buf;
    for (let i = 0; i < count; i++) {
      const kind = buf[this.pos++];
      if (kind === 0x6e /* n */) values[i] = null;
      else if (kind === 0x75 /* u */) values[i] = UNCHANGED_TOAST;
      else {
        // 't' text or 'b' binary: a length and the bytes.
        const length = buf.readInt32BE(this.pos);
        this.pos += 4;
        values[i] = buf.subarray(this.pos, this.pos + length);
        this.pos += length;
      }
    }
    return values;
  }

  private expect(byte: number): void {
    const got = this.int8();
    if (got !== byte) throw new Error(`pgoutput: expected ${String.fromCharCode(byte)}, got ${String.fromCharCode(got)}`);
  }

  private int8(): number {
    return this.buf[this.pos++]!;
  }
  private int16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  private int32(): number {
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  private int64(): bigint {
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  private string(): string {
    const end = this.buf.indexOf(0, this.pos);
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

const LSN_HALF = /^[0-9A-Fa-f]{1,8}$/;

export function parseLsn(text: string): Lsn {
  const [hi, lo, more] = text.split('/');
  if (hi === undefined || lo === undefined || more !== undefined || !LSN_HALF.test(hi) || !LSN_HALF.test(lo)) throw new Error(`not an LSN: ${text}`);
  // Each half fits a number: parsed as one, not by BigInt's slower string parser.
  return (BigInt(Number.parseInt(hi, 16)) << 32n) | BigInt(Number.parseInt(lo, 16));
}
