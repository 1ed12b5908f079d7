/**
 * Builds COPY text-format rows from raw column bytes. pgoutput's text values are exactly what the
 * type's output function wrote, which its input function reads back; only COPY's own special
 * characters need escaping. Values without them are passed through as the same slice.
 */

const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
const RETURN = 0x0d;
const TAB = 0x09;
const TAB_BUF = Buffer.from('\t');
const NEWLINE_BUF = Buffer.from('\n');
const NULL_BUF = Buffer.from('\\N');

export class CopyTextBuilder {
  private parts: Buffer[] = [];
  private bytes = 0;
  rows = 0;

  get size(): number {
    return this.bytes;
  }

  /** Appends one row; `values[i]` null writes SQL NULL. */
  addRow(values: readonly (Buffer | string | null)[]): void {
    for (let i = 0; i < values.length; i++) {
      if (i > 0) this.push(TAB_BUF);
      const v = values[i]!;
      if (v === null) this.push(NULL_BUF);
      else this.push(escape(typeof v === 'string' ? Buffer.from(v) : v));
    }
    this.push(NEWLINE_BUF);
    this.rows++;
  }

  /** Takes what was built and starts empty. */
  take(): Buffer {
    const out = Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    this.rows = 0;
    return out;
  }

  private push(buf: Buffer): void {
    this.parts.push(buf);
    this.bytes += buf.length;
  }
}

export function escape(value: Buffer): Buffer {
  let special = -1;
  for (let i = 0; i < value.length; i++) {
    const b = value[i]!;
    if (b === BACKSLASH || b === NEWLINE || b === RETURN || b === TAB) {
      special = i;
      break;
    }
  }
  if (special === -1) return value;
  const out = Buffer.allocUnsafe(value.length * 2);
  value.copy(out, 0, 0, special);
  let o = special;
  for (let i = special; i < value.length; i++) {
    const b = value[i]!;
    if (b === BACKSLASH) { out[o++] = BACKSLASH; out[o++] = BACKSLASH; }
    else if (b === NEWLINE) { out[o++] = BACKSLASH; out[o++] = 0x6e; }
    else if (b === RETURN) { out[o++] = BACKSLASH; out[o++] = 0x72; }
    else if (b === TAB) { out[o++] = BACKSLASH; out[o++] = 0x74; }
    else out[o++] = b;
  }
  return out.subarray(0, o);
}
