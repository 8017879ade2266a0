/**
 * Range membership over the 32-bit ring: which of a set of disjoint `(start, end]` ranges
 * (wrapping when `start >= end`) holds a position, in O(log n).
 */

/** A hash range `(start, end]` of the 32-bit ring, wrapping when `start >= end`. */
export interface HashRangeLike {
  readonly start: number;
  readonly end: number;
}

/**
 * An immutable index of disjoint ranges, each with a value (for example the old owner of a
 * moving range). Wrapping ranges are split into `(start, 2^32-1]` and `[0, end]`, kept sorted by
 * end; a lookup is one binary search, so a scan of every key against hundreds of ranges, or a
 * router's per-request check during a migration, costs ~10 comparisons.
 */
export class RangeIndex<T = true> {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private readonly rangeValues: T[] = [];

  /** Builds the index; `valueFor` gives each range's value (default `true`). */
  constructor(ranges: Iterable<HashRangeLike>, valueFor?: (range: HashRangeLike) => T) {
    const pieces: [number, number, T][] = [];
    for (const range of ranges) {
      const value = valueFor === undefined ? (true as T) : valueFor(range);
      const { start, end } = range;
      if (start < end) pieces.push([start, end, value]);
      else {
        // (start, 2^32-1] and [0, end], the latter written as (-1, end] so `> start` holds for 0.
        pieces.push([start, 0xffff_ffff, value]);
        pieces.push([-1, end, value]);
      }
    }
    pieces.sort((a, b) => a[1] - b[1]);
    for (const [start, end, value] of pieces) {
      this.starts.push(start);
      this.ends.push(end);
      this.rangeValues.push(value);
    }
  }

  /** Number of (non-wrapping) pieces indexed. */
  get size(): number {
    return this.ends.length;
  }

  /** The value of the range holding `position`, or undefined when none does. */
  valueAt(position: number): T | undefined {
    const ends = this.ends;
    let low = 0;
    let high = ends.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (ends[mid]! < position) low = mid + 1;
      else high = mid;
    }
    // Ranges are disjoint, so only the first range ending at or after `position` can hold it.
    return low < ends.length && position > this.starts[low]! ? this.rangeValues[low] : undefined;
  }

  /** The distinct values of the indexed ranges (for example every old owner of the moving ranges). */
  distinctValues(): T[] {
    return [...new Set(this.rangeValues)];
  }

  /** Whether a range holds `position`. */
  has(position: number): boolean {
    return this.valueAt(position) !== undefined;
  }
}
