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
