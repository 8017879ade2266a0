const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** Keys and values are bytes; strings are accepted and stored as their UTF-8 encoding. */
export type BinaryLike = Uint8Array | string;

/** The bytes of a key or value: a Uint8Array as is (no copy), a string as UTF-8. */
export function toBytes(input: BinaryLike): Uint8Array {
  if (input instanceof Uint8Array) return input;
  if (typeof input === 'string') return utf8Encoder.encode(input);
  throw new TypeError(`expected a string or Uint8Array, got ${typeof input}`);
}

/** Decodes UTF-8 bytes to a string; invalid sequences become U+FFFD rather than throwing. */
export function bytesToString(bytes: Uint8Array): string {
  return utf8Decoder.decode(bytes);
}

/**
 * Redis's GETRANGE arithmetic over a value of `length` bytes (its `getrangeCommand`, step by step):
 * `start` and `end` both included, negative ones counting from the end (-1: the last byte), then
 * clamped to the value. Returns the `[from, to)` bounds for `slice`; `[0, 0]` for an empty range.
 */
export function byteRange(length: number, start: number, end: number): [number, number] {
  if (start < 0 && end < 0 && start > end) return [0, 0];
  let from = start < 0 ? length + start : start;
  let to = end < 0 ? length + end : end;
  if (from < 0) from = 0;
  if (to < 0) to = 0;
  if (to >= length) to = length - 1;
  if (from > to || length === 0) return [0, 0];
  return [from, to + 1];
}

/** The unit of a BITCOUNT or BITPOS range: whole bytes (Redis's default) or single bits. */
export type BitUnit = 'byte' | 'bit';

/**
 * A BITCOUNT or BITPOS range over `value`: indexes `start`..`end` in `unit`, both included,
 * negative ones from the end, clamped to the value as Redis clamps them; `end` undefined runs to
 * the value's end. Returns the bits `[first, last]` (bit 0 is the high bit of byte 0), or undefined
 * for an empty range.
 */
function bitRange(
  length: number,
  start: number,
  end: number | undefined,
  unit: BitUnit,
): [number, number] | undefined {
  const total = unit === 'bit' ? length * 8 : length;
  let from = start < 0 ? total + start : start;
  let to = end === undefined ? total - 1 : end < 0 ? total + end : end;
  if (from < 0) from = 0;
  if (to < 0) to = 0;
  if (to >= total) to = total - 1;
  if (from > to) return undefined;
  return unit === 'bit' ? [from, to] : [from * 8, to * 8 + 7];
}

/** The bit at `offset` of `value` (bit 0 is the high bit of byte 0, as Redis's GETBIT); 0 past its end. */
export function getBit(value: Uint8Array, offset: number): 0 | 1 {
  const byte = Math.floor(offset / 8);
  if (byte >= value.length) return 0;
  return ((value[byte]! >> (7 - (offset % 8))) & 1) as 0 | 1;
}

/** Set bits in each byte value. */
const POPCOUNT = Uint8Array.from({ length: 256 }, (_, byte) => {
  let count = 0;
  for (let bits = byte; bits !== 0; bits &= bits - 1) count++;
  return count;
});

/**
 * Redis's BITCOUNT: the set bits of `value`, or of the range `start`..`end` (both included, in
 * bytes or bits, negative from the end). As Redis: a range whose negative start lies after its
 * negative end counts 0 before any clamping.
 */
export function bitCount(value: Uint8Array, range?: { start: number; end: number; unit?: BitUnit }): number {
  if (range !== undefined && range.start < 0 && range.end < 0 && range.start > range.end) return 0;
  const bits =
    range === undefined
      ? bitRange(value.length, 0, undefined, 'byte')
      : bitRange(value.length, range.start, range.end, range.unit ?? 'byte');
  if (bits === undefined) return 0;
  const [first, last] = bits;
  let count = 0;
  for (let bit = first; bit <= last; ) {
    if (bit % 8 === 0 && bit + 7 <= last) {
      count += POPCOUNT[value[bit / 8]!]!;
      bit += 8;
    } else {
      count += getBit(value, bit);
      bit++;
    }
  }
  return count;
}

/**
 * Redis's BITPOS: the position of the first bit set to `bit` in `value` (null: no key), or in the
 * range from `start` to `end` (in bytes or bits, negative from the end). As Redis: a missing key is
 * all zeros (0 for a clear bit, -1 for a set one); an empty range is -1; a clear bit not found runs
 * on past the value's end (its length in bits) unless `end` was given (-1), a set bit not found is -1.
 */
export function bitPos(
  value: Uint8Array | null,
  bit: 0 | 1,
  range?: { start: number; end?: number | undefined; unit?: BitUnit },
): number {
  if (value === null) return bit === 1 ? -1 : 0;
  const bits = bitRange(value.length, range?.start ?? 0, range?.end, range?.unit ?? 'byte');
  if (bits === undefined) return -1;
  const [first, last] = bits;
  // Bytes that cannot hold the bit sought are skipped whole.
  const skip = bit === 1 ? 0x00 : 0xff;
  for (let at = first; at <= last; ) {
    if (at % 8 === 0 && at + 7 <= last && value[at / 8] === skip) {
      at += 8;
      continue;
    }
    if (getBit(value, at) === bit) return at;
    at++;
  }
  return bit === 0 && range?.end === undefined ? last + 1 : -1;
}
