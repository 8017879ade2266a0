import { ScrambledZipfianGenerator } from './zipfian.js';

/** How keys are picked: every key equally likely, or YCSB's (scrambled) Zipfian with constant 0.99. */
export type KeyDistribution = 'uniform' | 'zipfian';

/** The kinds of operation the workload issues. */
export type BenchOpType = 'get' | 'set';

/** Shape of a YCSB-like read/update mix. */
export interface WorkloadOptions {
  /** Number of distinct keys. */
  readonly keyspace: number;
  /** Fraction of operations that are reads (GET), 0..1; the rest are writes (SET). */
  readonly readRatio: number;
  /** Bytes per written value. */
  readonly valueSize: number;
  /** How keys are picked. */
  readonly distribution: KeyDistribution;
  /** Prefix of every key. Default `bench:`. */
  readonly keyPrefix?: string;
  /** Source of randomness (tests pass a seeded one). Default `Math.random`. */
  readonly random?: () => number;
}

/**
 * A YCSB-like workload: picks the next operation (read or write, by `readRatio`) and key (by
 * `distribution`). Every write sends the same value buffer: servers copy on store, so the bench
 * allocates nothing per write.
 */
export class Workload {
  /** The value every SET writes. */
  readonly value: Uint8Array;
  private readonly random: () => number;
  private readonly pickIndex: () => number;
  private readonly prefix: string;

  constructor(readonly options: WorkloadOptions) {
    if (!Number.isInteger(options.keyspace) || options.keyspace < 1) {
      throw new RangeError(`keyspace must be a positive integer, got ${options.keyspace}`);
    }
    if (!(options.readRatio >= 0 && options.readRatio <= 1)) {
      throw new RangeError(`readRatio must be in [0, 1], got ${options.readRatio}`);
    }
    this.random = options.random ?? Math.random;
    this.prefix = options.keyPrefix ?? 'bench:';
    this.value = new Uint8Array(options.valueSize);
    for (let i = 0; i < this.value.length; i++) this.value[i] = 97 + (i % 26);
    if (options.distribution === 'zipfian') {
      const zipfian = new ScrambledZipfianGenerator(options.keyspace, undefined, this.random);
      this.pickIndex = () => zipfian.next();
    } else {
      this.pickIndex = () => Math.floor(this.random() * options.keyspace);
    }
  }

  /** The next operation's type. */
  nextType(): BenchOpType {
    return this.random() < this.options.readRatio ? 'get' : 'set';
  }

  /** The next operation's key. */
  nextKey(): string {
    return this.keyOf(this.pickIndex());
  }

  /** Key number `index` (0-based). */
  keyOf(index: number): string {
    return `${this.prefix}${index}`;
  }
}
