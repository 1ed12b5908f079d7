/** The pgoutput decoder on hand-built protocol messages (formats from the Postgres docs). */
import { describe, expect, test } from 'vitest';
import { formatLsn, parseLsn, PgoutputDecoder, UNCHANGED_TOAST } from '../../src/stream/pgoutput-decoder.ts';

class Message {
  private parts: Buffer[] = [];
  byte(c: string | number) { this.parts.push(Buffer.from([typeof c === 'string' ? c.charCodeAt(0) : c])); return this; }
  int16(v: number) { const b = Buffer.alloc(2); b.writeInt16BE(v); this.parts.push(b); return this; }
  int32(v: number) { const b = Buffer.alloc(4); b.writeUInt32BE(v); this.parts.push(b); return this; }
  int64(v: bigint) { const b = Buffer.alloc(8); b.writeBigUInt64BE(v); this.parts.push(b); return this; }
  str(s: string) { this.parts.push(Buffer.from(s), Buffer.from([0])); return this; }
  text(s: string) { const v = Buffer.from(s); return this.byte('t').int32(v.length).raw(v); }
  raw(b: Buffer) { this.parts.push(b); return this; }
  build() { return Buffer.concat(this.parts); }
}

describe('pgoutput decoder', () => {
  test('begin and commit', () => {
    const d = new PgoutputDecoder();
    expect(d.decode(new Message().byte('B').int64(0x1_0000_0010n).int64(42n).int32(777).build()))
      .toEqual({ tag: 'begin', finalLsn: 0x1_0000_0010n, commitTime: 42n, xid: 777 });
    expect(d.decode(new Message().byte('C').byte(0).int64(10n).int64(20n).int64(30n).build()))
      .toEqual({ tag: 'commit', flags: 0, commitLsn: 10n, endLsn: 20n, commitTime: 30n });
  });

  test('relation with key flags, names with unicode', () => {
    const d = new PgoutputDecoder();
    const m = d.decode(new Message().byte('R').int32(16400).str('Wëird "S"').str('t').byte('f').int16(2)
      .byte(1).str('id').int32(20).int32(-1 >>> 0)
      .byte(0).str('näme').int32(25).int32(-1 >>> 0).build());
    expect(m).toMatchObject({
      tag: 'relation', relationId: 16400, schema: 'Wëird "S"', name: 't', replicaIdentity: 'f',
      columns: [{ name: 'id', typeOid: 20, isKey: true }, { name: 'näme', typeOid: 25, isKey: false }],
    });
  });

  test('insert keeps raw bytes; null and unchanged TOAST are distinct', () => {
    const d = new PgoutputDecoder();
    const m = d.decode(new Message().byte('I').int32(5).byte('N').int16(3).text('a\tb\\').byte('n').byte('u').build());
    expect(m.tag).toBe('insert');
    if (m.tag !== 'insert') return;
    expect(m.newTuple[0]).toEqual(Buffer.from('a\tb\\'));
    expect(m.newTuple[1]).toBeNull();
    expect(m.newTuple[2]).toBe(UNCHANGED_TOAST);
  });

  test('update with old key, update without, delete with full old row', () => {
    const d = new PgoutputDecoder();
    const withKey = d.decode(new Message().byte('U').int32(5).byte('K').int16(1).text('1').byte('N').int16(1).text('2').build());
    expect(withKey).toMatchObject({ tag: 'update', oldKind: 'K', oldTuple: [Buffer.from('1')], newTuple: [Buffer.from('2')] });
    const plain = d.decode(new Message().byte('U').int32(5).byte('N').int16(1).text('3').build());
    expect(plain).toMatchObject({ tag: 'update', oldKind: undefined, oldTuple: undefined, newTuple: [Buffer.from('3')] });
    const del = d.decode(new Message().byte('D').int32(5).byte('O').int16(2).text('4').byte('n').build());
    expect(del).toMatchObject({ tag: 'delete', oldKind: 'O', oldTuple: [Buffer.from('4'), null] });
  });

  test('truncate with options', () => {
    const d = new PgoutputDecoder();
    expect(d.decode(new Message().byte('T').int32(2).byte(3).int32(7).int32(8).build()))
      .toEqual({ tag: 'truncate', xid: undefined, cascade: true, restartIdentity: true, relationIds: [7, 8] });
  });

  test('streamed blocks carry an xid before data messages', () => {
    const d = new PgoutputDecoder();
    expect(d.decode(new Message().byte('S').int32(900).byte(1).build())).toEqual({ tag: 'stream-start', xid: 900, first: true });
    expect(d.decode(new Message().byte('I').int32(900).int32(5).byte('N').int16(1).text('x').build())).toMatchObject({ xid: 900, relationId: 5 });
    expect(d.decode(new Message().byte('E').build())).toEqual({ tag: 'stream-stop' });
    expect(d.decode(new Message().byte('I').int32(5).byte('N').int16(1).text('y').build())).toMatchObject({ xid: undefined, relationId: 5 });
    expect(d.decode(new Message().byte('A').int32(900).int32(901).build())).toEqual({ tag: 'stream-abort', xid: 900, subXid: 901 });
  });

  test('logical message', () => {
    const d = new PgoutputDecoder();
    expect(d.decode(new Message().byte('M').byte(0).int64(99n).str('syncctl').int32(2).raw(Buffer.from('hi')).build()))
      .toEqual({ tag: 'message', xid: undefined, transactional: false, lsn: 99n, prefix: 'syncctl', content: Buffer.from('hi') });
  });

  test('unknown message types are errors, not silence', () => {
    expect(() => new PgoutputDecoder().decode(Buffer.from('Z'))).toThrow(/unknown message type Z/);
  });

  test('LSN text round trip', () => {
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
    expect(parseLsn('0/10')).toBe(16n);
    expect(formatLsn(0x1_0000_0000n)).toBe('1/0');
    expect(parseLsn('FFFFFFFF/FFFFFFFF')).toBe(0xffff_ffff_ffff_ffffn);
    for (const bad of ['', '0', '0/', '/1', '0/1/2', 'G/1', '1/123456789', '-1/0', '0x1/0']) expect(() => parseLsn(bad), bad).toThrow(/not an LSN/);
  });
});
