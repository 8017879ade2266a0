/**
 * UTF-8 encoding into a shared scratch buffer.
 *
 * Hashing a key must not allocate: lookups are the hot path of every request.
 * JavaScript is single-threaded and the hash functions never call back into
 * user code, so one module-level buffer can be safely reused.
 */

const encoder = new TextEncoder();
let scratch = new Uint8Array(256);

/** A byte view valid only until the next call into this module. */
export interface ScratchBytes {
  /** Backing buffer; only the first `length` bytes are meaningful. */
  readonly bytes: Uint8Array;
  /** Number of meaningful bytes. */
  readonly length: number;
}

function ensureCapacity(size: number): Uint8Array {
  if (scratch.length < size) {
    scratch = new Uint8Array(Math.max(size, scratch.length * 2));
  }
  return scratch;
}

/**
 * Encode `str` as UTF-8 into the shared scratch buffer and return the number
 * of bytes written. ASCII strings (the common case for keys) are copied with
 * a plain loop, which avoids TextEncoder's call overhead. Lone surrogates
 * become U+FFFD exactly as `TextEncoder` encodes them.
 *
 * @returns byte length; read bytes via {@link scratchBuffer}
 */
export function encodeToScratch(str: string): number {
  const len = str.length;
  let buf = ensureCapacity(len);
  for (let i = 0; i < len; i++) {
    const c = str.charCodeAt(i);
    if (c >= 0x80) {
      // Worst case is 3 bytes per UTF-16 code unit.
      buf = ensureCapacity(len * 3);
      return encoder.encodeInto(str, buf).written;
    }
    buf[i] = c;
  }
  return len;
}

/** The shared buffer last written by {@link encodeToScratch}. */
export function scratchBuffer(): Uint8Array {
  return scratch;
}

/** Encode `str` as UTF-8 into a fresh array (not for hot paths). */
export function utf8Bytes(str: string): Uint8Array {
  return encoder.encode(str);
}
