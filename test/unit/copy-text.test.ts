import { describe, expect, test } from 'vitest';
import { CopyTextBuilder, escape } from '../../src/apply/copy-text.ts';

describe('COPY text rows', () => {
  test('escapes only what COPY text format needs; other bytes pass through as the same slice', () => {
    const plain = Buffer.from('héllo, "world" {1,2}');
    expect(escape(plain)).toBe(plain);
    expect(escape(Buffer.from('a\\b\tc\nd\re')).toString()).toBe('a\\\\b\\tc\\nd\\re');
  });

  test('rows: tabs between values, \\N for NULL, newline at the end', () => {
    const b = new CopyTextBuilder();
    b.addRow([Buffer.from('1'), null, 'x\ty']);
    b.addRow(['', Buffer.from('\\N')]);
    expect(b.rows).toBe(2);
    expect(b.take().toString()).toBe('1\t\\N\tx\\ty\n\t\\\\N\n');
    expect(b.rows).toBe(0);
    expect(b.size).toBe(0);
  });
});
