import { describe, expect, test } from 'vitest';
import { CopyTextBuilder } from '../../src/apply/copy-text.ts';

describe('COPY text rows', () => {
  test('escapes only what COPY text format needs; other bytes pass through unchanged', () => {
    const b = new CopyTextBuilder();
    b.addRow('1', [Buffer.from('héllo, "world" {1,2}'), Buffer.from('a\\b\tc\nd\re')]);
    expect(b.take().toString()).toBe('1\théllo, "world" {1,2}\ta\\\\b\\tc\\nd\\re\n');
  });

  test('rows: the head as given, then tabs between values, \\N for NULL, newline at the end', () => {
    const b = new CopyTextBuilder();
    b.addRow('1\tW\t{2,3}', [Buffer.from('1'), null, Buffer.from('x\ty')]);
    b.addRow('2\tD\t\\N', [Buffer.from(''), Buffer.from('\\N')]);
    expect(b.rows).toBe(2);
    expect(b.size).toBe(Buffer.byteLength('1\tW\t{2,3}\t1\t\\N\tx\\ty\n2\tD\t\\N\t\t\\\\N\n'));
    expect(b.take().toString()).toBe('1\tW\t{2,3}\t1\t\\N\tx\\ty\n2\tD\t\\N\t\t\\\\N\n');
    expect(b.rows).toBe(0);
    expect(b.size).toBe(0);
  });

  test('rows larger than a block, and many rows, come back whole and in order', () => {
    const b = new CopyTextBuilder();
    const big = Buffer.alloc(300 * 1024, 0x61);
    b.addRow('1', [big]);
    for (let i = 2; i <= 5000; i++) b.addRow(String(i), [Buffer.from(`v${i}`)]);
    const lines = b.take().toString().split('\n');
    expect(lines[0]).toBe(`1\t${big.toString()}`);
    expect(lines[4999]).toBe('5000\tv5000');
    expect(lines.length).toBe(5001);
  });

  test('discard() forgets the rows built; the next ones start clean', () => {
    const b = new CopyTextBuilder();
    b.addRow('1', [Buffer.from('old')]);
    b.discard();
    expect(b.rows).toBe(0);
    expect(b.size).toBe(0);
    b.addRow('2', [Buffer.from('new')]);
    expect(b.take().toString()).toBe('2\tnew\n');
  });

  test('addStagedRow: the sequence number as digits, op, positions or \\N, then the values', () => {
    const b = new CopyTextBuilder();
    for (const seq of [0, 7, 10, 99, 100, 123_456_789, 2 ** 53 - 1]) b.addStagedRow(seq, 'W', null, [Buffer.from('x'), null]);
    b.addStagedRow(5, 'K', '{2,3}', [Buffer.from('a\tb')]);
    expect(b.take().toString()).toBe([0, 7, 10, 99, 100, 123_456_789, 2 ** 53 - 1].map((n) => `${n}\tW\t\\N\tx\t\\N\n`).join('') + '5\tK\t{2,3}\ta\\tb\n');
  });

  test('addStagedRow across block boundaries: rows come back whole and in order', () => {
    const b = new CopyTextBuilder();
    const value = Buffer.alloc(1000, 0x61);
    for (let i = 1; i <= 2000; i++) b.addStagedRow(i, 'W', null, [value]);
    const lines = b.take().toString().split('\n');
    expect(lines.length).toBe(2001);
    expect(lines[1999]).toBe(`2000\tW\t\\N\t${value.toString()}`);
    expect(lines.slice(0, 2000).every((line, i) => line.startsWith(`${i + 1}\tW\t`))).toBe(true);
  });

  test('recycle(): blocks given back are written again, whole; the rows in them are right', () => {
    const b = new CopyTextBuilder();
    const value = Buffer.alloc(100 * 1024, 0x62);
    for (let i = 1; i <= 5; i++) b.addStagedRow(i, 'W', null, [value]);
    const first = b.takeBlocks();
    const memory = new Set(first.map((block) => block.buffer));
    b.recycle(first);
    b.recycle(first); // given back twice: still used once
    for (let i = 6; i <= 10; i++) b.addStagedRow(i, 'D', null, [value]);
    const second = b.takeBlocks();
    expect(second.some((block) => memory.has(block.buffer))).toBe(true);
    const lines = Buffer.concat(second).toString().split('\n');
    expect(lines.slice(0, 5).map((line) => line.slice(0, line.indexOf('\t', 3)))).toEqual(['6\tD', '7\tD', '8\tD', '9\tD', '10\tD']);
    expect(lines.slice(0, 5).every((line) => line.endsWith(value.toString()))).toBe(true);
    // A block with other bytes around it (not one of this builder's) is not taken.
    b.recycle([Buffer.alloc(64)]);
  });
});
