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
});
