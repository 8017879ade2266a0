/**
 * MurmurHash3 x86_32 (Austin Appleby, public domain), operating on bytes.
 *
 * Chosen over xxHash32 because its reference vectors are ubiquitous, it needs
 * only 32-bit multiplies (`Math.imul`), and it is fast on short keys.
 */

import { encodeToScratch, scratchBuffer } from './utf8.js';

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** Final avalanche mix of MurmurHash3; a bijection on 32-bit integers. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function mixK(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

/**
 * MurmurHash3 x86_32 of `bytes[0..length)`.
 *
 * @param bytes - input bytes
 * @param length - number of bytes to hash (defaults to the whole array)
 * @param seed - 32-bit seed
 * @returns unsigned 32-bit hash
 */
export function murmur3Bytes(bytes: Uint8Array, length: number = bytes.length, seed = 0): number {
  let h = seed | 0;
  const blocks = length & ~3;
  for (let i = 0; i < blocks; i += 4) {
    const k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    h ^= mixK(k);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail !== 0) {
    let k = bytes[blocks]!;
    if (tail > 1) k |= bytes[blocks + 1]! << 8;
    if (tail > 2) k |= bytes[blocks + 2]! << 16;
    h ^= mixK(k);
  }
  return fmix32(h ^ length);
}

/**
 * MurmurHash3 x86_32 of the UTF-8 bytes of `str`, without allocating.
 *
 * @param str - input string (hashed exactly as its UTF-8 encoding)
 * @param seed - 32-bit seed
 * @returns unsigned 32-bit hash
 */
export function murmur3String(str: string, seed = 0): number {
  // Hash optimistically as ASCII (UTF-16 code units equal UTF-8 bytes), which
  // skips copying into a byte buffer; `seen` ORs every code unit so one check
  // at the end tells whether that assumption held.
  const length = str.length;
  let h = seed | 0;
  let seen = 0;
  const blocks = length & ~3;
  for (let i = 0; i < blocks; i += 4) {
    const c0 = str.charCodeAt(i);
    const c1 = str.charCodeAt(i + 1);
    const c2 = str.charCodeAt(i + 2);
    const c3 = str.charCodeAt(i + 3);
    seen |= c0 | c1 | c2 | c3;
    h ^= mixK(c0 | (c1 << 8) | (c2 << 16) | (c3 << 24));
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail !== 0) {
    let k = str.charCodeAt(blocks);
    seen |= k;
    if (tail > 1) {
      const c = str.charCodeAt(blocks + 1);
      seen |= c;
      k |= c << 8;
    }
    if (tail > 2) {
      const c = str.charCodeAt(blocks + 2);
      seen |= c;
      k |= c << 16;
    }
    h ^= mixK(k);
  }
  if (seen < 0x80) return fmix32(h ^ length);
  const byteLength = encodeToScratch(str);
  return murmur3Bytes(scratchBuffer(), byteLength, seed);
}

/**
 * MurmurHash3 x86_32 of a single 32-bit little-endian word; equivalent to
 * hashing its 4 bytes, but without touching memory.
 */
export function murmur3Word(word: number, seed: number): number {
  let h = seed ^ mixK(word);
  h = (h << 13) | (h >>> 19);
  h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  return fmix32(h ^ 4);
}
