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
