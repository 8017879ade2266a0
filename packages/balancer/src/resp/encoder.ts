import type { OutputBuffer } from '@dstore/protocol/internal';

/** The RESP version a connection speaks: 2 until the client sends `HELLO 3`. */
export type RespVersion = 2 | 3;

const CRLF_BYTES = 2;
const OK = Buffer.from('+OK\r\n', 'latin1');
const NULL_BULK = Buffer.from('$-1\r\n', 'latin1');
const NULL_ARRAY = Buffer.from('*-1\r\n', 'latin1');
const NULL_RESP3 = Buffer.from('_\r\n', 'latin1');
const ZERO = Buffer.from(':0\r\n', 'latin1');
const ONE = Buffer.from(':1\r\n', 'latin1');

/** Decimal digits of a non-negative safe integer. */
function digitCount(value: number): number {
  let digits = 1;
  while (value >= 10) {
    value = Math.floor(value / 10);
    digits++;
  }
  return digits;
}

/** A line of a simple string or error: CR and LF would end it early, so they become spaces. */
function oneLine(text: string): string {
  return /[\r\n]/.test(text) ? text.replace(/[\r\n]+/g, ' ') : text;
}

/**
 * Writes RESP replies into an {@link OutputBuffer} (the same write-coalescing buffer as native
 * frames: what a tick writes leaves in one `socket.write()`). Encodes RESP2 or RESP3 by
 * {@link version}; headers are written digit by digit into the buffer, the common replies are
 * preencoded, so a reply costs no allocation.
 */
export class RespWriter {
  /** The version replies are encoded in; HELLO switches it. */
  version: RespVersion = 2;

  constructor(private readonly out: OutputBuffer) {}

  /** `+OK`. */
  ok(): void {
    this.out.append(OK);
  }

  /** A simple string (`+text`); `text` must be latin1. */
  simple(text: string): void {
    this.out.appendLatin1(`+${oneLine(text)}\r\n`);
  }

  /** An error reply: `line` is `PREFIX message` (`ERR ...`, `NOAUTH ...`). */
  error(line: string): void {
    const bytes = Buffer.from(`-${oneLine(line)}\r\n`, 'utf8');
    this.out.append(bytes);
  }

  /** An integer (`:n`); a bigint for the 64-bit results of INCR and the like. */
  integer(value: number | bigint): void {
    if (value === 0) this.out.append(ZERO);
    else if (value === 1) this.out.append(ONE);
    else this.out.appendLatin1(`:${value}\r\n`);
  }

  /** A bulk string of `bytes`, or the null of this version for null. */
  bulk(bytes: Uint8Array | null): void {
    if (bytes === null) {
      this.nil();
      return;
    }
    const at = this.header(36 /* $ */, bytes.length, bytes.length + CRLF_BYTES);
    const slab = this.out.bytes;
    slab.set(bytes, at);
    slab[at + bytes.length] = 13;
    slab[at + bytes.length + 1] = 10;
  }

  /** A bulk string of `text` (UTF-8). */
  bulkText(text: string): void {
    this.bulk(Buffer.from(text, 'utf8'));
  }

  /** Null: `$-1` in RESP2, `_` in RESP3. */
  nil(): void {
    this.out.append(this.version === 3 ? NULL_RESP3 : NULL_BULK);
  }

  /** A null array (EXEC of a transaction whose WATCHed key changed): `*-1` in RESP2, `_` in RESP3. */
  nullArray(): void {
    this.out.append(this.version === 3 ? NULL_RESP3 : NULL_ARRAY);
  }

  /** The header of an array of `count` elements (written next). */
  array(count: number): void {
    this.header(42 /* * */, count, 0);
  }

  /** The header of a map of `count` pairs: `%` in RESP3, a flat array in RESP2. */
  map(count: number): void {
    if (this.version === 3) this.header(37 /* % */, count, 0);
    else this.header(42 /* * */, count * 2, 0);
  }

  /** Raw, already-encoded RESP bytes (replies completed out of order, then released in order). */
  raw(bytes: Uint8Array): void {
    this.out.append(bytes);
  }

  /**
   * Writes `<marker><count>\r\n` and reserves `extra` bytes after it; returns where they start.
   * One reservation for header and payload, so a bulk is a single copy into the buffer.
   */
  private header(marker: number, count: number, extra: number): number {
    const digits = digitCount(count);
    const at = this.out.reserve(1 + digits + CRLF_BYTES + extra);
    const slab = this.out.bytes;
    slab[at] = marker;
    let value = count;
    for (let index = at + digits; index > at; index--) {
      slab[index] = 48 + (value % 10);
      value = Math.floor(value / 10);
    }
    slab[at + digits + 1] = 13;
    slab[at + digits + 2] = 10;
    return at + digits + CRLF_BYTES + 1;
  }
}
