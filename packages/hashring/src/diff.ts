/**
 * Range-level difference between two continua over the same hash function.
 *
 * Every distinct point in either ring is a boundary; between consecutive
 * boundaries both rings have a constant owner, so comparing owners per
 * elementary segment (then merging neighbours) is exact, in O(points).
 */

import type { Continuum } from './continuum.js';
import type { RangeMove } from './types.js';

/**
 * True iff `position` falls in `(start, end]`, wrapping when `start >= end`
 * (`start === end` covers the whole ring).
 */
export function inRange(position: number, move: Pick<RangeMove, 'start' | 'end'>): boolean {
  const { start, end } = move;
  if (start < end) return position > start && position <= end;
  return position > start || position <= end;
}

/**
 * Fraction of the 2^32 keyspace that `(start, end]` covers, wrapping when `start > end`
 * (`start === end` is the whole ring: 1).
 */
export function rangeShare(range: Pick<RangeMove, 'start' | 'end'>): number {
  const length = range.end > range.start ? range.end - range.start : range.end - range.start + 2 ** 32;
  return length / 2 ** 32;
}

/** Sorted distinct union of two sorted point arrays. */
function unionPoints(a: Uint32Array, b: Uint32Array): Uint32Array {
  const out = new Uint32Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let n = 0;
  while (i < a.length || j < b.length) {
    const va = i < a.length ? a[i]! : Number.POSITIVE_INFINITY;
    const vb = j < b.length ? b[j]! : Number.POSITIVE_INFINITY;
    const v = Math.min(va, vb);
    if (n === 0 || out[n - 1] !== v) out[n++] = v;
    if (va === v) i++;
    if (vb === v) j++;
  }
  return out.subarray(0, n);
}

/** Advances a cursor to the first point >= `value`, as ring lookups do. */
class OwnerCursor {
  private i = 0;
  constructor(
    private readonly c: Continuum,
    private readonly ids: readonly string[],
  ) {}

  ownerAt(value: number): string {
    const { points, owners } = this.c;
    while (this.i < points.length && points[this.i]! < value) this.i++;
    const at = this.i === points.length ? 0 : this.i;
    return this.ids[owners[at]!]!;
  }
}

function mergeAdjacent(moves: RangeMove[]): RangeMove[] {
  const merged: RangeMove[] = [];
  for (const m of moves) {
    const last = merged[merged.length - 1];
    if (last && last.end === m.start && last.from === m.from && last.to === m.to) {
      merged[merged.length - 1] = { start: last.start, end: m.end, from: m.from, to: m.to };
    } else {
      merged.push(m);
    }
  }
  // The segment ending at the first boundary wraps from the last one.
  const first = merged[0];
  const last = merged[merged.length - 1];
  if (merged.length > 1 && first && last && last.end === first.start) {
    if (last.from === first.from && last.to === first.to) {
      merged[0] = { start: last.start, end: first.end, from: first.from, to: first.to };
      merged.pop();
    }
  }
  return merged;
}

/**
 * Ranges whose owner differs between `a` and `b`, ascending by `end`
 * (a wrapping range comes first).
 */
export function diffContinua(
  a: Continuum,
  aIds: readonly string[],
  b: Continuum,
  bIds: readonly string[],
): RangeMove[] {
  const bounds = unionPoints(a.points, b.points);
  const ca = new OwnerCursor(a, aIds);
  const cb = new OwnerCursor(b, bIds);
  const moves: RangeMove[] = [];
  for (let k = 0; k < bounds.length; k++) {
    const end = bounds[k]!;
    const from = ca.ownerAt(end);
    const to = cb.ownerAt(end);
    if (from === to) continue;
    const start = k === 0 ? bounds[bounds.length - 1]! : bounds[k - 1]!;
    moves.push({ start, end, from, to });
  }
  return mergeAdjacent(moves);
}
