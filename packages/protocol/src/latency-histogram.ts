// The module's `performance`: the global one is an accessor in Node 20, ~25 ns per request more.
import { performance } from 'node:perf_hooks';

/** Sub-buckets per power of two: values are kept to within 1/64 (about 1.6%). */
const SUB_BUCKET_BITS = 6;
const SUB_BUCKETS = 1 << SUB_BUCKET_BITS;
/** Powers of two covered above the linear range: up to 2^(6+30) microseconds, far past any deadline. */
const MAGNITUDES = 30;

/**
 * A fixed-size log-linear latency histogram (HDR-style, about 1.6% precision), in microseconds.
 * Recording is a few integer operations and never allocates, so it can sit on the hot path of
 * every request; percentiles are read on demand (STATS, benchmark reports). The one histogram
 * of dstore: nodes, the balancer and the client's bench all use it.
 */
export class LatencyHistogram {
  private readonly counts = new Float64Array(SUB_BUCKETS * (MAGNITUDES + 1));
  private total = 0;
  private sum = 0;
  private max = 0;

  /** Number of recorded values. */
  get count(): number {
    return this.total;
  }

  /** Records one latency in microseconds (negative values count as 0). */
  record(micros: number): void {
    const value = micros > 0 ? Math.floor(micros) : 0;
    this.counts[bucketOf(value)]!++;
    this.total++;
    this.sum += value;
    if (value > this.max) this.max = value;
  }

  /** Records the time since `startMs` (a `performance.now()` reading). */
  recordSince(startMs: number): void {
    this.record((performance.now() - startMs) * 1000);
  }

  /** The latency under which a fraction `quantile` (0..1) of values fall, in microseconds. */
  percentile(quantile: number): number {
    if (this.total === 0) return 0;
    const rank = Math.max(1, Math.ceil(quantile * this.total));
    let seen = 0;
    for (let bucket = 0; bucket < this.counts.length; bucket++) {
      seen += this.counts[bucket]!;
      if (seen >= rank) return Math.min(this.max, upperBoundOf(bucket));
    }
    return this.max;
  }

  /** Mean in microseconds. */
  mean(): number {
    return this.total === 0 ? 0 : this.sum / this.total;
  }

  /** Largest recorded value in microseconds. */
  maximum(): number {
    return this.max;
  }

  /** Adds another histogram's counts into this one. */
  merge(other: LatencyHistogram): void {
    for (let bucket = 0; bucket < this.counts.length; bucket++) this.counts[bucket]! += other.counts[bucket]!;
    this.total += other.total;
    this.sum += other.sum;
    if (other.max > this.max) this.max = other.max;
  }

  /** Forgets everything recorded. */
  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.sum = 0;
    this.max = 0;
  }

  /** p50/p99/p999/mean/max/count, the summary every dstore report prints. */
  summary(): LatencySummary {
    return {
      count: this.total,
      meanUs: this.mean(),
      p50Us: this.percentile(0.5),
      p99Us: this.percentile(0.99),
      p999Us: this.percentile(0.999),
      maxUs: this.max,
    };
  }
}

/** Percentiles of a {@link LatencyHistogram}, in microseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly meanUs: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly p999Us: number;
  readonly maxUs: number;
}

function bucketOf(value: number): number {
  if (value < SUB_BUCKETS) return value;
  const magnitude = Math.min(MAGNITUDES, Math.floor(Math.log2(value)) - SUB_BUCKET_BITS + 1);
  const sub = Math.min(SUB_BUCKETS - 1, Math.floor(value / 2 ** magnitude) - SUB_BUCKETS / 2);
  return magnitude * SUB_BUCKETS + SUB_BUCKETS / 2 + sub;
}

function upperBoundOf(bucket: number): number {
  if (bucket < SUB_BUCKETS) return bucket;
  const magnitude = Math.floor((bucket - SUB_BUCKETS / 2) / SUB_BUCKETS);
  const sub = bucket - magnitude * SUB_BUCKETS - SUB_BUCKETS / 2;
  return (sub + SUB_BUCKETS / 2 + 1) * 2 ** magnitude - 1;
}
