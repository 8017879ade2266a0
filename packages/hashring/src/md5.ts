/**
 * MD5 (RFC 1321) in plain TypeScript.
 *
 * Needed only for ketama compatibility, where the algorithm is fixed by
 * libketama/twemproxy. Node's `crypto` would work but costs a native call and
 * object allocations per key; this version reuses buffers and is faster for
 * the short keys a cache sees. Not for security use.
 */

import { encodeToScratch, scratchBuffer } from './utf8.js';

const words = new Int32Array(16);
const state = new Int32Array(4);

// The 64 MD5 steps fully unrolled (generated from RFC 1321's tables, with
// constants as signed 32-bit literals so V8 stays in integer registers).
function compress(): void {
  let a = state[0]!;
  let b = state[1]!;
  let c = state[2]!;
  let d = state[3]!;
  let n = 0;
  const w0 = words[0]!;
  const w1 = words[1]!;
  const w2 = words[2]!;
  const w3 = words[3]!;
  const w4 = words[4]!;
  const w5 = words[5]!;
  const w6 = words[6]!;
  const w7 = words[7]!;
  const w8 = words[8]!;
  const w9 = words[9]!;
  const w10 = words[10]!;
  const w11 = words[11]!;
  const w12 = words[12]!;
  const w13 = words[13]!;
  const w14 = words[14]!;
  const w15 = words[15]!;
  n = (a + ((b & c) | (~b & d)) + w0 + -680876936) | 0;
  a = (((n << 7) | (n >>> 25)) + b) | 0;
  n = (d + ((a & b) | (~a & c)) + w1 + -389564586) | 0;
  d = (((n << 12) | (n >>> 20)) + a) | 0;
  n = (c + ((d & a) | (~d & b)) + w2 + 606105819) | 0;
  c = (((n << 17) | (n >>> 15)) + d) | 0;
  n = (b + ((c & d) | (~c & a)) + w3 + -1044525330) | 0;
  b = (((n << 22) | (n >>> 10)) + c) | 0;
  n = (a + ((b & c) | (~b & d)) + w4 + -176418897) | 0;
  a = (((n << 7) | (n >>> 25)) + b) | 0;
  n = (d + ((a & b) | (~a & c)) + w5 + 1200080426) | 0;
  d = (((n << 12) | (n >>> 20)) + a) | 0;
  n = (c + ((d & a) | (~d & b)) + w6 + -1473231341) | 0;
  c = (((n << 17) | (n >>> 15)) + d) | 0;
  n = (b + ((c & d) | (~c & a)) + w7 + -45705983) | 0;
  b = (((n << 22) | (n >>> 10)) + c) | 0;
  n = (a + ((b & c) | (~b & d)) + w8 + 1770035416) | 0;
  a = (((n << 7) | (n >>> 25)) + b) | 0;
  n = (d + ((a & b) | (~a & c)) + w9 + -1958414417) | 0;
  d = (((n << 12) | (n >>> 20)) + a) | 0;
  n = (c + ((d & a) | (~d & b)) + w10 + -42063) | 0;
  c = (((n << 17) | (n >>> 15)) + d) | 0;
  n = (b + ((c & d) | (~c & a)) + w11 + -1990404162) | 0;
  b = (((n << 22) | (n >>> 10)) + c) | 0;
  n = (a + ((b & c) | (~b & d)) + w12 + 1804603682) | 0;
  a = (((n << 7) | (n >>> 25)) + b) | 0;
  n = (d + ((a & b) | (~a & c)) + w13 + -40341101) | 0;
  d = (((n << 12) | (n >>> 20)) + a) | 0;
  n = (c + ((d & a) | (~d & b)) + w14 + -1502002290) | 0;
  c = (((n << 17) | (n >>> 15)) + d) | 0;
  n = (b + ((c & d) | (~c & a)) + w15 + 1236535329) | 0;
  b = (((n << 22) | (n >>> 10)) + c) | 0;
  n = (a + ((b & d) | (c & ~d)) + w1 + -165796510) | 0;
  a = (((n << 5) | (n >>> 27)) + b) | 0;
  n = (d + ((a & c) | (b & ~c)) + w6 + -1069501632) | 0;
  d = (((n << 9) | (n >>> 23)) + a) | 0;
  n = (c + ((d & b) | (a & ~b)) + w11 + 643717713) | 0;
  c = (((n << 14) | (n >>> 18)) + d) | 0;
  n = (b + ((c & a) | (d & ~a)) + w0 + -373897302) | 0;
  b = (((n << 20) | (n >>> 12)) + c) | 0;
  n = (a + ((b & d) | (c & ~d)) + w5 + -701558691) | 0;
  a = (((n << 5) | (n >>> 27)) + b) | 0;
  n = (d + ((a & c) | (b & ~c)) + w10 + 38016083) | 0;
  d = (((n << 9) | (n >>> 23)) + a) | 0;
  n = (c + ((d & b) | (a & ~b)) + w15 + -660478335) | 0;
  c = (((n << 14) | (n >>> 18)) + d) | 0;
  n = (b + ((c & a) | (d & ~a)) + w4 + -405537848) | 0;
  b = (((n << 20) | (n >>> 12)) + c) | 0;
  n = (a + ((b & d) | (c & ~d)) + w9 + 568446438) | 0;
  a = (((n << 5) | (n >>> 27)) + b) | 0;
  n = (d + ((a & c) | (b & ~c)) + w14 + -1019803690) | 0;
  d = (((n << 9) | (n >>> 23)) + a) | 0;
  n = (c + ((d & b) | (a & ~b)) + w3 + -187363961) | 0;
  c = (((n << 14) | (n >>> 18)) + d) | 0;
  n = (b + ((c & a) | (d & ~a)) + w8 + 1163531501) | 0;
  b = (((n << 20) | (n >>> 12)) + c) | 0;
  n = (a + ((b & d) | (c & ~d)) + w13 + -1444681467) | 0;
  a = (((n << 5) | (n >>> 27)) + b) | 0;
  n = (d + ((a & c) | (b & ~c)) + w2 + -51403784) | 0;
  d = (((n << 9) | (n >>> 23)) + a) | 0;
  n = (c + ((d & b) | (a & ~b)) + w7 + 1735328473) | 0;
  c = (((n << 14) | (n >>> 18)) + d) | 0;
  n = (b + ((c & a) | (d & ~a)) + w12 + -1926607734) | 0;
  b = (((n << 20) | (n >>> 12)) + c) | 0;
  n = (a + (b ^ c ^ d) + w5 + -378558) | 0;
  a = (((n << 4) | (n >>> 28)) + b) | 0;
  n = (d + (a ^ b ^ c) + w8 + -2022574463) | 0;
  d = (((n << 11) | (n >>> 21)) + a) | 0;
  n = (c + (d ^ a ^ b) + w11 + 1839030562) | 0;
  c = (((n << 16) | (n >>> 16)) + d) | 0;
  n = (b + (c ^ d ^ a) + w14 + -35309556) | 0;
  b = (((n << 23) | (n >>> 9)) + c) | 0;
  n = (a + (b ^ c ^ d) + w1 + -1530992060) | 0;
  a = (((n << 4) | (n >>> 28)) + b) | 0;
  n = (d + (a ^ b ^ c) + w4 + 1272893353) | 0;
  d = (((n << 11) | (n >>> 21)) + a) | 0;
  n = (c + (d ^ a ^ b) + w7 + -155497632) | 0;
  c = (((n << 16) | (n >>> 16)) + d) | 0;
  n = (b + (c ^ d ^ a) + w10 + -1094730640) | 0;
  b = (((n << 23) | (n >>> 9)) + c) | 0;
  n = (a + (b ^ c ^ d) + w13 + 681279174) | 0;
  a = (((n << 4) | (n >>> 28)) + b) | 0;
  n = (d + (a ^ b ^ c) + w0 + -358537222) | 0;
  d = (((n << 11) | (n >>> 21)) + a) | 0;
  n = (c + (d ^ a ^ b) + w3 + -722521979) | 0;
  c = (((n << 16) | (n >>> 16)) + d) | 0;
  n = (b + (c ^ d ^ a) + w6 + 76029189) | 0;
  b = (((n << 23) | (n >>> 9)) + c) | 0;
  n = (a + (b ^ c ^ d) + w9 + -640364487) | 0;
  a = (((n << 4) | (n >>> 28)) + b) | 0;
  n = (d + (a ^ b ^ c) + w12 + -421815835) | 0;
  d = (((n << 11) | (n >>> 21)) + a) | 0;
  n = (c + (d ^ a ^ b) + w15 + 530742520) | 0;
  c = (((n << 16) | (n >>> 16)) + d) | 0;
  n = (b + (c ^ d ^ a) + w2 + -995338651) | 0;
  b = (((n << 23) | (n >>> 9)) + c) | 0;
  n = (a + (c ^ (b | ~d)) + w0 + -198630844) | 0;
  a = (((n << 6) | (n >>> 26)) + b) | 0;
  n = (d + (b ^ (a | ~c)) + w7 + 1126891415) | 0;
  d = (((n << 10) | (n >>> 22)) + a) | 0;
  n = (c + (a ^ (d | ~b)) + w14 + -1416354905) | 0;
  c = (((n << 15) | (n >>> 17)) + d) | 0;
  n = (b + (d ^ (c | ~a)) + w5 + -57434055) | 0;
  b = (((n << 21) | (n >>> 11)) + c) | 0;
  n = (a + (c ^ (b | ~d)) + w12 + 1700485571) | 0;
  a = (((n << 6) | (n >>> 26)) + b) | 0;
  n = (d + (b ^ (a | ~c)) + w3 + -1894986606) | 0;
  d = (((n << 10) | (n >>> 22)) + a) | 0;
  n = (c + (a ^ (d | ~b)) + w10 + -1051523) | 0;
  c = (((n << 15) | (n >>> 17)) + d) | 0;
  n = (b + (d ^ (c | ~a)) + w1 + -2054922799) | 0;
  b = (((n << 21) | (n >>> 11)) + c) | 0;
  n = (a + (c ^ (b | ~d)) + w8 + 1873313359) | 0;
  a = (((n << 6) | (n >>> 26)) + b) | 0;
  n = (d + (b ^ (a | ~c)) + w15 + -30611744) | 0;
  d = (((n << 10) | (n >>> 22)) + a) | 0;
  n = (c + (a ^ (d | ~b)) + w6 + -1560198380) | 0;
  c = (((n << 15) | (n >>> 17)) + d) | 0;
  n = (b + (d ^ (c | ~a)) + w13 + 1309151649) | 0;
  b = (((n << 21) | (n >>> 11)) + c) | 0;
  n = (a + (c ^ (b | ~d)) + w4 + -145523070) | 0;
  a = (((n << 6) | (n >>> 26)) + b) | 0;
  n = (d + (b ^ (a | ~c)) + w11 + -1120210379) | 0;
  d = (((n << 10) | (n >>> 22)) + a) | 0;
  n = (c + (a ^ (d | ~b)) + w2 + 718787259) | 0;
  c = (((n << 15) | (n >>> 17)) + d) | 0;
  n = (b + (d ^ (c | ~a)) + w9 + -343485551) | 0;
  b = (((n << 21) | (n >>> 11)) + c) | 0;
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
}

function byteAt(bytes: Uint8Array, length: number, i: number): number {
  if (i < length) return bytes[i]!;
  return i === length ? 0x80 : 0;
}

/** Runs MD5 over `bytes[0..length)`, leaving the digest in `state`. */
function run(bytes: Uint8Array, length: number): void {
  state[0] = 0x67452301;
  state[1] = 0xefcdab89 | 0;
  state[2] = 0x98badcfe | 0;
  state[3] = 0x10325476;
  // Padding: 0x80, zeros, then the 64-bit bit length, to a multiple of 64.
  const blocks = ((length + 8) >>> 6) + 1;
  for (let blk = 0; blk < blocks; blk++) {
    const base = blk << 6;
    const fullBlock = base + 64 <= length;
    for (let w = 0; w < 16; w++) {
      const p = base + (w << 2);
      words[w] = fullBlock
        ? bytes[p]! | (bytes[p + 1]! << 8) | (bytes[p + 2]! << 16) | (bytes[p + 3]! << 24)
        : byteAt(bytes, length, p) |
          (byteAt(bytes, length, p + 1) << 8) |
          (byteAt(bytes, length, p + 2) << 16) |
          (byteAt(bytes, length, p + 3) << 24);
    }
    if (blk === blocks - 1) {
      words[14] = length << 3;
      words[15] = Math.floor(length / 0x20000000);
    }
    compress();
  }
}

/**
 * Fast path for the common key shape: an ASCII string that fits one 64-byte
 * block with its padding. Loads the block straight from `charCodeAt`, skipping
 * the UTF-8 copy. Returns false (nothing hashed) otherwise.
 */
function runAsciiSingleBlock(str: string): boolean {
  const length = str.length;
  if (length > 55) return false;
  words.fill(0);
  let seen = 0;
  for (let i = 0; i < length; i++) {
    const c = str.charCodeAt(i);
    seen |= c;
    words[i >> 2] = words[i >> 2]! | (c << ((i & 3) << 3));
  }
  if (seen >= 0x80) return false;
  words[length >> 2] = words[length >> 2]! | (0x80 << ((length & 3) << 3));
  words[14] = length << 3;
  state[0] = 0x67452301;
  state[1] = 0xefcdab89 | 0;
  state[2] = 0x98badcfe | 0;
  state[3] = 0x10325476;
  compress();
  return true;
}

function runString(str: string): void {
  if (runAsciiSingleBlock(str)) return;
  // Encode first: it may grow (replace) the scratch buffer.
  const length = encodeToScratch(str);
  run(scratchBuffer(), length);
}

/**
 * MD5 digest of `bytes`.
 *
 * @returns a new 16-byte digest
 */
export function md5(bytes: Uint8Array): Uint8Array {
  run(bytes, bytes.length);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = (state[i >> 2]! >>> ((i & 3) << 3)) & 0xff;
  return out;
}

/**
 * The four 32-bit little-endian words of MD5(`str` as UTF-8), written into
 * `out` (ketama takes one point from each word).
 */
export function md5WordsString(str: string, out: Uint32Array): void {
  runString(str);
  out[0] = state[0]!;
  out[1] = state[1]!;
  out[2] = state[2]!;
  out[3] = state[3]!;
}

/**
 * First 4 bytes of MD5(`key`) read little-endian: libketama's key hash
 * (`ketama_hash` with alignment 0).
 *
 * @returns unsigned 32-bit hash
 */
export function md5Hash32(key: string | Uint8Array): number {
  if (typeof key === 'string') {
    runString(key);
  } else {
    run(key, key.length);
  }
  return state[0]! >>> 0;
}
