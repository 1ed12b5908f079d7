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
/** Digits of the largest integer a double holds exactly (2^53). */
const DIGITS_MAX = 16;
/**
 * Blocks given back by recycle(), shared by every builder and kept for the life of the process:
 * rows are written into them before new memory is taken. At most SPARE_BLOCKS (8 MB: a table's
 * rows being built and its COPY in flight, twice); the rest are left to the garbage collector.
 */
const spare: Buffer[] = [];
const SPARE_BLOCKS = 32;

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
    this.ascii(head);
    this.values(values);
  }

  /**
   * Appends one staged change: `seq` (an integer ≥ 0), `op` and `positions` (ASCII, nothing
   * to escape; null writes SQL NULL) as its first three fields, then `values` as in addRow().
   *
   * The number is written as digits straight into the block, never made a string: a string made
   * from a number (`${seq}`) goes into V8's number-to-string cache, which lives in the old
   * generation, so each such string survives the scavenges for as long as the cache holds it (up
   * to thousands of entries). V8 grows the young generation by what survives its scavenges, so one
   * such string per staged row of a large transaction grows it to its largest size, and the
   * process's resident memory with it.
   */
  addStagedRow(seq: number, op: string, positions: string | null, values: readonly (Buffer | null)[]): void {
    this.ensure(DIGITS_MAX);
    let digits = 1;
    for (let rest = seq; rest >= 10; rest = Math.floor(rest / 10)) digits++;
    const block = this.block;
    const start = this.pos;
    let at = start + digits;
    for (let rest = seq; at > start; rest = Math.floor(rest / 10)) block[--at] = 0x30 + (rest % 10);
    this.pos = start + digits;
    this.bytes += digits;
    this.byte(TAB);
    this.ascii(op);
    this.byte(TAB);
    if (positions === null) {
      this.byte(BACKSLASH);
      this.byte(0x4e /* N */);
    } else {
      this.ascii(positions);
    }
    this.values(values);
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

  /** ASCII text that needs no escaping, as it is. */
  private ascii(text: string): void {
    this.ensure(text.length);
    const block = this.block;
    let pos = this.pos;
    for (let i = 0; i < text.length; i++) block[pos++] = text.charCodeAt(i);
    this.bytes += pos - this.pos;
    this.pos = pos;
  }

  /** A tab and each value (null: SQL NULL), then the end of the row. */
  private values(values: readonly (Buffer | null)[]): void {
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

  /**
   * Gives back blocks from takeBlocks() once nothing reads them any more (the COPY that sent them
   * has completed): later rows are written into them, so a block given back must not be read or
   * given back again.
   *
   * Without this, every block is new memory that outlives several scavenges while its rows are
   * built and sent, so it is freed only by a full collection: in between, blocks already sent pile
   * up outside the heap, and their growth is what triggers those full collections.
   */
  recycle(blocks: readonly Buffer[]): void {
    for (const block of blocks) {
      if (spare.length >= SPARE_BLOCKS) return;
      const whole = block.buffer;
      if (block.byteOffset !== 0 || whole.byteLength !== BLOCK_BYTES || spare.some((s) => s.buffer === whole)) continue;
      spare.push(Buffer.from(whole, 0, BLOCK_BYTES));
    }
  }

  /** Room for `n` more bytes in the current block. */
  private ensure(n: number): void {
    if (this.pos + n <= this.block.length) return;
    if (this.pos > 0) this.blocks.push(this.block.subarray(0, this.pos));
    this.block = n <= BLOCK_BYTES && spare.length > 0 ? spare.pop()! : Buffer.allocUnsafe(Math.max(BLOCK_BYTES, n));
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
