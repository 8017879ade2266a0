/** YCSB's default Zipfian constant (the skew: 0 is uniform, larger is more skewed). */
export const YCSB_ZIPFIAN_CONSTANT = 0.99;

/**
 * Item numbers in [0, items) drawn from a Zipfian distribution, the algorithm of YCSB's
 * `ZipfianGenerator` (Gray et al., "Quickly Generating Billion-Record Synthetic Databases"):
 * item 0 is the most popular, item 1 the next, and so on. Construction is O(items) (it sums the
 * zeta series once); each draw is O(1).
 */
export class ZipfianGenerator {
  private readonly alpha: number;
  private readonly zetaN: number;
  private readonly eta: number;
  private readonly halfPowTheta: number;

  constructor(
    readonly items: number,
    readonly theta: number = YCSB_ZIPFIAN_CONSTANT,
    private readonly random: () => number = Math.random,
  ) {
    if (!Number.isInteger(items) || items < 1)
      throw new RangeError(`items must be a positive integer, got ${items}`);
    if (!(theta > 0 && theta < 1)) throw new RangeError(`theta must be in (0, 1), got ${theta}`);
    this.alpha = 1 / (1 - theta);
    this.zetaN = zeta(items, theta);
    const zeta2 = zeta(2, theta);
    this.eta = (1 - (2 / items) ** (1 - theta)) / (1 - zeta2 / this.zetaN);
    this.halfPowTheta = 1 + 0.5 ** theta;
  }

  /** The next item number, in [0, items). */
  next(): number {
    const u = this.random();
    const uz = u * this.zetaN;
    if (uz < 1) return 0;
    if (uz < this.halfPowTheta) return Math.min(1, this.items - 1);
    const item = Math.floor(this.items * (this.eta * u - this.eta + 1) ** this.alpha);
    return Math.min(item, this.items - 1);
  }
}

/**
 * Zipfian popularity with the popular items spread over the key space, as YCSB's
 * `ScrambledZipfianGenerator` does (its `requestdistribution=zipfian`): the rank drawn by
 * {@link ZipfianGenerator} is hashed, so "hot" keys are not simply the lowest-numbered ones.
 */
export class ScrambledZipfianGenerator {
  private readonly zipfian: ZipfianGenerator;

  constructor(
    readonly items: number,
    theta: number = YCSB_ZIPFIAN_CONSTANT,
    random: () => number = Math.random,
  ) {
    this.zipfian = new ZipfianGenerator(items, theta, random);
  }

  /** The next item number, in [0, items). */
  next(): number {
    // The offset keeps rank 0 from hashing to item 0 (the finalizer maps 0 to 0).
    return mix32(this.zipfian.next() + 0x9e37_79b9) % this.items;
  }
}

/** Sum of 1/i^theta for i in 1..n. */
function zeta(n: number, theta: number): number {
  let sum = 0;
  for (let i = 1; i <= n; i++) sum += 1 / i ** theta;
  return sum;
}

/** MurmurHash3's 32-bit finalizer: a fast, well-mixed integer hash (YCSB uses FNV-64; 32 bits suffice here). */
function mix32(value: number): number {
  let h = value >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85eb_ca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2_ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
