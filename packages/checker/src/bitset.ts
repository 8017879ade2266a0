/**
 * The set of operations already linearized, with an incrementally maintained hash (Zobrist: one
 * random 32-bit word per operation, XORed in and out), so the memoisation cache's key costs O(1)
 * per step instead of a pass over the words.
 */
export class LinearizedSet {
  private readonly words: Uint32Array;
  private readonly salts: Uint32Array;
  /** The hash of the current members. */
  hash = 0;

  constructor(readonly size: number) {
    this.words = new Uint32Array(Math.ceil(size / 32));
    this.salts = new Uint32Array(size);
    // A fixed xorshift sequence: hashes are deterministic across runs (reproducible searches).
    let x = 0x2545f491;
    for (let i = 0; i < size; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.salts[i] = x >>> 0;
    }
  }

  add(member: number): void {
    this.words[member >>> 5]! |= 1 << (member & 31);
    this.hash = (this.hash ^ this.salts[member]!) >>> 0;
  }

  remove(member: number): void {
    this.words[member >>> 5]! &= ~(1 << (member & 31));
    this.hash = (this.hash ^ this.salts[member]!) >>> 0;
  }

  /** A copy of the members, for the cache. */
  snapshot(): Uint32Array {
    return this.words.slice();
  }

  /** Whether the members are exactly those of `snapshot`. */
  equals(snapshot: Uint32Array): boolean {
    for (let i = 0; i < snapshot.length; i++) if (snapshot[i] !== this.words[i]) return false;
    return true;
  }
}
