import type { RangeMove } from '../src/index.js';
import { inRange } from '../src/index.js';

/** Deterministic xorshift32 PRNG so every run checks the same keys. */
export function prng(seed: number): () => number {
  let s = seed | 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_';
const ALPHABET_CODES = Array.from(ALPHABET, (c) => c.charCodeAt(0));

/**
 * `count` pseudo-random 16-character ASCII keys. Built from char codes in one call: appending
 * characters one by one made rope strings, several times slower to build and to hash (a million
 * keys took ~1.5 s), the same keys.
 */
export function randomKeys(count: number, seed = 42): string[] {
  const next = prng(seed);
  const keys = new Array<string>(count);
  const codes = new Array<number>(16);
  for (let i = 0; i < count; i++) {
    let a = next();
    let b = next();
    for (let j = 0; j < 16; j += 2) {
      codes[j] = ALPHABET_CODES[a & 63]!;
      codes[j + 1] = ALPHABET_CODES[b & 63]!;
      a >>>= 4;
      b >>>= 4;
    }
    keys[i] = String.fromCharCode(...codes);
  }
  return keys;
}

/** The move covering `position`, if any (moves are disjoint, sorted by end). */
export function findMove(moves: readonly RangeMove[], position: number): RangeMove | undefined {
  let lo = 0;
  let hi = moves.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (moves[mid]!.end < position) lo = mid + 1;
    else hi = mid;
  }
  const candidate = moves[lo];
  if (candidate && inRange(position, candidate)) return candidate;
  const first = moves[0];
  return first && first.start >= first.end && inRange(position, first) ? first : undefined;
}

/** Keys per owner id. */
export function countOwners(get: (key: string) => string, keys: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const key of keys) {
    const owner = get(key);
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  return counts;
}

/** Most loaded node's count divided by the mean count over `nodeCount` nodes. */
export function maxOverMean(counts: Map<string, number>, nodeCount: number, total: number): number {
  return Math.max(...counts.values()) / (total / nodeCount);
}
