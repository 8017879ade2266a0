import { ErrorCode, ProtocolError } from './errors.js';
import type { ProtocolLimits } from './limits.js';
import { Op } from './messages.js';

/** Map keys that would reach an object's prototype if a decoder assigned them. */
const FORBIDDEN_MAP_KEYS: readonly Uint8Array[] = ['__proto__', 'constructor', 'prototype'].map((name) =>
  new TextEncoder().encode(name),
);

/** Index of the one element that may be a map: STATS_RESULT's stats, `[68, id, {…}]`. */
const STATS_MAP_INDEX = 2;

/**
 * Most elements any message may have: MIGRATE_PUT's op, id, epoch, count, then four fields per
 * entry (key, value, writeEpoch, seq), the optional count and expiry time of every entry, plus
 * spare trailing fields.
 */
export function maxMessageElements(limits: ProtocolLimits): number {
  return limits.maxBatchKeys * 5 + 16;
}

function malformed(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.MALFORMED_FRAME, message);
}

/**
 * Checks, before any decoder allocates, that a frame body has dstore's flat shape: one array of
 * scalars (nil, bool, int, float, str, bin), except a flat string-keyed map as STATS_RESULT's
 * third element. Every declared length is checked against the bytes actually present, so a small
 * frame declaring a huge container or string is refused without allocating anything.
 *
 * Throws {@link ProtocolError} with MALFORMED_FRAME or BATCH_TOO_LARGE.
 */
export function checkBodyShape(body: Uint8Array, limits: ProtocolLimits): void {
  const scanner = new ShapeScanner(body);
  const count = scanner.readArrayHeader();
  if (count > maxMessageElements(limits)) {
    throw new ProtocolError(ErrorCode.BATCH_TOO_LARGE, `message has ${count} elements`);
  }
  let op = -1;
  for (let index = 0; index < count; index++) {
    if (index === STATS_MAP_INDEX && op === Op.STATS_RESULT && scanner.peekIsMap()) {
      scanner.skipFlatMap(limits.maxMapEntries);
      continue;
    }
    const value = scanner.skipScalar();
    if (index === 0) op = value;
  }
  if (scanner.pos !== body.length)
    throw malformed(`${body.length - scanner.pos} trailing bytes after the message`);
}

/** A cursor over MessagePack bytes that skips values without materialising them. */
class ShapeScanner {
  pos = 0;

  // Plain indexing rather than a DataView: this runs on every frame, and creating a DataView per
  // frame showed up as a large share of the decode cost of small messages.
  constructor(private readonly bytes: Uint8Array) {}

  readArrayHeader(): number {
    const byte = this.u8();
    if (byte >= 0x90 && byte <= 0x9f) return byte & 0x0f;
    if (byte === 0xdc) return this.u16();
    if (byte === 0xdd) return this.u32();
    throw malformed('a message must be a MessagePack array');
  }

  peekIsMap(): boolean {
    const byte = this.bytes[this.pos];
    return byte !== undefined && ((byte >= 0x80 && byte <= 0x8f) || byte === 0xde || byte === 0xdf);
  }

  skipFlatMap(maxEntries: number): void {
    const byte = this.u8();
    const entries = byte === 0xde ? this.u16() : byte === 0xdf ? this.u32() : byte & 0x0f;
    if (entries > maxEntries) throw malformed(`map has ${entries} entries, more than ${maxEntries}`);
    for (let entry = 0; entry < entries; entry++) {
      this.skipMapKey();
      this.skipScalar();
    }
  }

  private skipMapKey(): void {
    const byte = this.u8();
    let length: number;
    if (byte >= 0xa0 && byte <= 0xbf) length = byte & 0x1f;
    else if (byte === 0xd9) length = this.u8();
    else if (byte === 0xda) length = this.u16();
    else if (byte === 0xdb) length = this.u32();
    else throw malformed('map keys must be strings');
    const start = this.take(length);
    const key = this.bytes.subarray(start, start + length);
    if (FORBIDDEN_MAP_KEYS.some((forbidden) => equalBytes(forbidden, key))) {
      throw malformed('forbidden map key');
    }
  }

  /**
   * Skips one scalar and returns its value when it is a small non-negative integer (the op code
   * needs it), otherwise -1. Containers and extension types are refused.
   */
  skipScalar(): number {
    const byte = this.u8();
    if (byte <= 0x7f) return byte;
    if (byte >= 0xe0) return -1;
    if (byte >= 0xa0 && byte <= 0xbf) {
      this.take(byte & 0x1f);
      return -1;
    }
    switch (byte) {
      case 0xc0:
      case 0xc2:
      case 0xc3:
        return -1;
      case 0xcc:
        return this.u8();
      case 0xd0:
        this.take(1);
        return -1;
      case 0xcd:
      case 0xd1:
        this.take(2);
        return -1;
      case 0xca:
      case 0xce:
      case 0xd2:
        this.take(4);
        return -1;
      case 0xcb:
      case 0xcf:
      case 0xd3:
        this.take(8);
        return -1;
      case 0xc4:
      case 0xd9:
        this.take(this.u8());
        return -1;
      case 0xc5:
      case 0xda:
        this.take(this.u16());
        return -1;
      case 0xc6:
      case 0xdb:
        this.take(this.u32());
        return -1;
      default:
        throw malformed(
          `type byte 0x${byte.toString(16)} is not allowed here (nested container or extension)`,
        );
    }
  }

  /** Advances past `length` bytes after checking they exist; returns where they start. */
  private take(length: number): number {
    const start = this.pos;
    if (length > this.bytes.length - start) {
      throw malformed(`declared length ${length} exceeds the ${this.bytes.length - start} bytes left`);
    }
    this.pos = start + length;
    return start;
  }

  private u8(): number {
    const at = this.take(1);
    return this.bytes[at]!;
  }

  private u16(): number {
    const at = this.take(2);
    return (this.bytes[at]! << 8) | this.bytes[at + 1]!;
  }

  private u32(): number {
    const at = this.take(4);
    // Multiplication rather than `<< 24`, which would turn lengths of 2^31 and up negative.
    return (
      this.bytes[at]! * 0x1000000 +
      ((this.bytes[at + 1]! << 16) | (this.bytes[at + 2]! << 8) | this.bytes[at + 3]!)
    );
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
