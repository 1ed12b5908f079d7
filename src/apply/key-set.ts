/**
 * A set of row keys kept as 52-bit hashes in an open-addressing table of doubles: about 16 bytes a
 * key instead of a string per key (a 1,000,000-row streamed transaction would hold ~100 MB of
 * strings). A hash collision reads as a repeated key, which only costs the careful apply path;
 * with 52 bits that is about one in 10^4 for a million keys.
 */
export class KeySet {
  private table = new Float64Array(1024);
  private count = 0;

  get size(): number {
    return this.count;
  }

  /**
   * Adds the key made of `values` at `positions` (all of them when not given; null parts count);
   * false when it was there already.
   */
  add(values: readonly (Buffer | null | undefined)[], positions?: readonly number[]): boolean {
    let h1 = 0x811c9dc5;
    let h2 = 0x01000193;
    const count = positions === undefined ? values.length : positions.length;
    for (let k = 0; k < count; k++) {
      const part = values[positions === undefined ? k : positions[k]!];
      if (part === null || part === undefined) {
        h1 = Math.imul(h1 ^ 0xff, 0x01000193);
        h2 = Math.imul(h2 ^ 0xfe, 0x5bd1e995);
        continue;
      }
      for (let i = 0; i < part.length; i++) {
        const b = part[i]!;
        h1 = Math.imul(h1 ^ b, 0x01000193);
        h2 = Math.imul(h2 ^ b, 0x5bd1e995);
      }
      // A separator, so that ('ab', 'c') and ('a', 'bc') differ.
      h1 = Math.imul(h1 ^ 0x1f, 0x01000193);
      h2 = Math.imul(h2 ^ 0x1f, 0x5bd1e995);
    }
    // 32 bits of h1 and 20 of h2, plus one so that 0 marks an empty slot.
    const hash = (h1 >>> 0) * 0x100000 + ((h2 >>> 12) & 0xfffff) + 1;
    if ((this.count + 1) * 2 > this.table.length) this.grow();
    return this.insert(this.table, hash);
  }

  clear(): void {
    if (this.count === 0) return;
    // Cleared after every slice: a table still at its first size is reused, not reallocated.
    if (this.table.length === 1024) this.table.fill(0);
    else {
      release(this.table);
      this.table = new Float64Array(1024);
    }
    this.count = 0;
  }

  private insert(table: Float64Array, hash: number): boolean {
    const mask = table.length - 1;
    for (let i = hash % table.length & mask; ; i = (i + 1) & mask) {
      const slot = table[i]!;
      if (slot === 0) {
        table[i] = hash;
        this.count++;
        return true;
      }
      if (slot === hash) return false;
    }
  }

  private grow(): void {
    const old = this.table;
    this.table = new Float64Array(old.length * 2);
    this.count = 0;
    // Indexed, not for…of: an iterator over a million slots allocates a result object per slot.
    for (let i = 0; i < old.length; i++) {
      const hash = old[i]!;
      if (hash !== 0) this.insert(this.table, hash);
    }
    release(old);
  }
}

/**
 * Frees a table's memory now. Dropped, it would wait for a full garbage collection (a large table
 * has long been in the old generation), so the table a set outgrows would stay next to the one
 * twice its size that replaces it.
 */
function release(table: Float64Array): void {
  // ArrayBuffer.prototype.transfer is ES2024 (every Node syncctl runs on has it; its TypeScript lib is ES2023).
  (table.buffer as ArrayBuffer & { transfer(length: number): ArrayBuffer }).transfer(0);
}
