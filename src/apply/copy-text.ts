/**
 * Builds COPY text-format rows from raw column bytes. pgoutput's text values are exactly what the
 * type's output function wrote, which its input function reads back; only COPY's own special
 * characters need escaping.
 *
 * Rows are written straight into large byte blocks (copied, escaped on the way): no Buffer per
 * value, and no slice keeping the replication stream's socket chunks alive while rows wait here.
 */

const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
const RETURN = 0x0d;
const TAB = 0x09;
const BLOCK_BYTES = 256 * 1024;

export class CopyTextBuilder {
  private blocks: Buffer[] = [];
  private block: Buffer = Buffer.allocUnsafe(0);
  private pos = 0;
  private bytes = 0;
  rows = 0;

  get size(): number {
    return this.bytes;
  }

  /**
   * Appends one row: `head`, fields already in COPY text form (ASCII, tab-separated, nothing to
   * escape), then `values`, where null writes SQL NULL.
   */
  addRow(head: string, values: readonly (Buffer | null)[]): void {
    this.ensure(head.length);
    const block = this.block;
    let pos = this.pos;
    for (let i = 0; i < head.length; i++) block[pos++] = head.charCodeAt(i);
    this.bytes += pos - this.pos;
    this.pos = pos;
    for (let i = 0; i < values.length; i++) {
      this.byte(TAB);
      const v = values[i]!;
      if (v === null) {
        this.byte(BACKSLASH);
        this.byte(0x4e /* N */);
      } else {
        this.escaped(v);
      }
    }
    this.byte(NEWLINE);
    this.rows++;
  }

  /** Takes what was built (as one buffer) and starts empty. */
  take(): Buffer {
    return Buffer.concat(this.takeBlocks());
  }

  /** Takes what was built as a list of buffers (no copy) and starts empty. */
  takeBlocks(): Buffer[] {
    if (this.pos > 0) this.blocks.push(this.block.subarray(0, this.pos));
    const out = this.blocks;
    this.blocks = [];
    this.block = Buffer.allocUnsafe(0);
    this.pos = 0;
    this.bytes = 0;
    this.rows = 0;
    return out;
  }

  /** Forgets what was built, keeping the current block for the next rows (nothing taken refers to it). */
  discard(): void {
    this.blocks = [];
    this.pos = 0;
    this.bytes = 0;
    this.rows = 0;
  }

  /** Room for `n` more bytes in the current block. */
  private ensure(n: number): void {
    if (this.pos + n <= this.block.length) return;
    if (this.pos > 0) this.blocks.push(this.block.subarray(0, this.pos));
    this.block = Buffer.allocUnsafe(Math.max(BLOCK_BYTES, n));
    this.pos = 0;
  }

  private byte(b: number): void {
    this.ensure(1);
    this.block[this.pos++] = b;
    this.bytes++;
  }

  private escaped(value: Buffer): void {
    // At most two bytes out per byte in; most values need no escaping and are copied whole.
    const special = firstSpecial(value);
    if (special === -1) {
      this.ensure(value.length);
      value.copy(this.block, this.pos);
      this.pos += value.length;
      this.bytes += value.length;
      return;
    }
    this.ensure(value.length * 2);
    const out = this.block;
    let o = this.pos;
    value.copy(out, o, 0, special);
    o += special;
    for (let i = special; i < value.length; i++) {
      const b = value[i]!;
      if (b === BACKSLASH) { out[o++] = BACKSLASH; out[o++] = BACKSLASH; }
      else if (b === NEWLINE) { out[o++] = BACKSLASH; out[o++] = 0x6e; }
      else if (b === RETURN) { out[o++] = BACKSLASH; out[o++] = 0x72; }
      else if (b === TAB) { out[o++] = BACKSLASH; out[o++] = 0x74; }
      else out[o++] = b;
    }
    this.bytes += o - this.pos;
    this.pos = o;
  }
}

/** Index of the first byte COPY text format must escape, or -1. */
function firstSpecial(value: Buffer): number {
  for (let i = 0; i < value.length; i++) {
    const b = value[i]!;
    if (b === BACKSLASH || b === NEWLINE || b === RETURN || b === TAB) return i;
  }
  return -1;
}
