/**
 * The server side of RESP: splits a client's byte stream into commands (arrays of bulk strings,
 * or inline lines as redis-benchmark's PING_INLINE and telnet users send them), under Redis's
 * protocol limits and under dstore's own size limits.
 *
 * Hostile input costs what it actually sent and no more: lengths are parsed digit by digit as
 * bytes arrive (never buffered as lines), a bulk split across chunks is assembled in a buffer that
 * grows geometrically with what arrived (never pre-allocated at its declared size), and an
 * argument or command over dstore's limits is skipped, not stored, and answered with an error.
 */

/** Redis's `*` count limit for a client request (networking.c: 1024*1024). */
export const MAX_MULTIBULK_COUNT = 1024 * 1024;
/** Redis's default `proto-max-bulk-len` (512 MB): a longer declared bulk is a protocol error. */
export const PROTO_MAX_BULK_BYTES = 512 * 1024 * 1024;
/** What a peer speaking dstore's native protocol to the RESP port is told. */
const NATIVE_PROTOCOL_MESSAGE =
  "this is the RESP port; the bytes look like dstore's native protocol (dstore clients and nodes connect to the balancer's client port, --port)";

/** Redis's PROTO_INLINE_MAX_SIZE (64 KiB): the longest inline command line. */
export const MAX_INLINE_BYTES = 64 * 1024;

/** Limits of one {@link RespParser}. */
export interface RespParserLimits {
  /**
   * Longest argument stored (the longest key or value dstore accepts); a longer bulk, up to
   * {@link PROTO_MAX_BULK_BYTES}, is read past without being kept and its command refused.
   */
  readonly maxArgBytes: number;
  /** Most bytes of arguments in one command; past it the command is skipped and refused. */
  readonly maxCommandBytes: number;
  /** Most arguments kept for one command (a longer array is skipped and refused). */
  readonly maxArgs: number;
  /**
   * Whether the command about to be read comes from a client that still has to authenticate
   * (asked once per command): such a command may have at most {@link PRE_AUTH_MAX_ARGS} elements
   * of at most {@link PRE_AUTH_MAX_BULK_BYTES} bytes each, as Redis's limits before AUTH; past
   * them the stream is a protocol error and the connection closes, so a client that has proved
   * nothing cannot make the server hold a megabyte per connection. Default: never.
   */
  readonly preAuth?: () => boolean;
}

/** Most elements of a command before authentication (Redis: 10). */
export const PRE_AUTH_MAX_ARGS = 10;
/** Longest bulk of a command before authentication (Redis: 16 KiB). */
export const PRE_AUTH_MAX_BULK_BYTES = 16 * 1024;

/** A byte stream that is not RESP: answered `-ERR Protocol error: <message>`, then closed. */
export class RespProtocolError extends Error {
  constructor(message: string) {
    super(`Protocol error: ${message}`);
    this.name = 'RespProtocolError';
  }
}

/** Receives what the parser finds, in stream order. */
export interface RespCommandSink {
  /** A complete command: its arguments (views of received chunks, or copies when split). */
  command(args: Uint8Array[]): void;
  /** A complete command that exceeded a dstore limit and was skipped: answer `-ERR <message>`. */
  refused(message: string): void;
}

const CR = 13;
const LF = 10;
const DIGIT_0 = 48;
const DIGIT_9 = 57;
const MINUS = 45;
const STAR = 42;
const DOLLAR = 36;
/** Longest decimal length accepted (19 digits fit a safe 64-bit count, as string2ll does). */
const MAX_LENGTH_DIGITS = 19;
/** Commands with at most this many arguments get their argument array allocated at its size. */
const PREALLOCATED_ARGS = 16;

/** Where the parser is in the grammar. */
enum State {
  /** Before a command: `*` starts a multibulk, anything else an inline line. */
  Start,
  /** Digits of the `*` count. */
  Count,
  /** The `\n` after the count's `\r`. */
  CountLf,
  /** Expecting the `$` of the next argument. */
  Dollar,
  /** Digits of a `$` length. */
  BulkLength,
  /** The `\n` after a bulk length's `\r`. */
  BulkLengthLf,
  /** The bulk's bytes. */
  Bulk,
  /** The `\r` after a bulk. */
  BulkCr,
  /** The `\n` after a bulk. */
  BulkLf,
  /** An inline command line, up to `\n`. */
  Inline,
}

/** Bytes of a value split across chunks, grown geometrically up to its known final size. */
class Assembly {
  private bytes = new Uint8Array(0);
  private filled = 0;

  get length(): number {
    return this.filled;
  }

  /** Appends `part`; `finalSize` caps the growth (the buffer never exceeds it). */
  append(part: Uint8Array, finalSize: number): void {
    const needed = this.filled + part.length;
    if (needed > this.bytes.length) {
      const grown = new Uint8Array(Math.min(finalSize, Math.max(needed, this.bytes.length * 2, 256)));
      grown.set(this.bytes.subarray(0, this.filled));
      this.bytes = grown;
    }
    this.bytes.set(part, this.filled);
    this.filled = needed;
  }

  /** The assembled bytes; the assembly starts over empty. */
  take(): Uint8Array {
    const out = this.bytes.subarray(0, this.filled);
    this.bytes = new Uint8Array(0);
    this.filled = 0;
    return out;
  }
}

/**
 * An incremental RESP request parser. Feed it chunks with {@link push}; it calls the sink for
 * each command, in order, and throws {@link RespProtocolError} when the stream is not RESP (the
 * connection must then answer it and close: nothing after it can be trusted).
 */
export class RespParser {
  private state = State.Start;
  /** Declared element count of the current multibulk, and how many were read. */
  private count = 0;
  private read = 0;
  /** The number being parsed (a count or a length), its digit count and sign. */
  private number = 0;
  private digits = 0;
  private negative = false;
  /** Declared length of the current bulk, and how many of its bytes are still to come. */
  private bulkLength = 0;
  private bulkRemaining = 0;
  /** True when the current bulk is read past rather than kept. */
  private skippingBulk = false;
  private args: Uint8Array[] = [];
  /** Arguments stored in {@link args} so far (it may be preallocated to the command's count). */
  private filled = 0;
  private commandBytes = 0;
  /** Why the current command is refused once complete (it went over a dstore limit). */
  private refusal: string | undefined;
  /** The current command comes from a client not yet authenticated (see {@link RespParserLimits.preAuth}). */
  private preAuth = false;
  private readonly partial = new Assembly();
  private failed = false;

  constructor(
    private readonly limits: RespParserLimits,
    private readonly sink: RespCommandSink,
  ) {}

  /** True while part of a command has arrived and the rest has not. */
  get hasPartialCommand(): boolean {
    return this.state !== State.Start;
  }

  /** Feeds received bytes. Throws {@link RespProtocolError}; after that the parser ignores input. */
  push(chunk: Uint8Array): void {
    if (this.failed) return;
    try {
      this.parse(chunk);
    } catch (error) {
      this.failed = true;
      this.args = [];
      this.partial.take();
      throw error;
    }
  }

  private parse(received: Uint8Array): void {
    // A Buffer's subarray builds a Buffer (a species constructor call), measurably slower than a
    // plain view, and every argument is a subarray: view the chunk once as a plain Uint8Array, so
    // arguments are all plain views (one shape for the handlers, as the frame decoder does).
    const chunk =
      received.constructor === Uint8Array
        ? received
        : new Uint8Array(received.buffer, received.byteOffset, received.byteLength);
    let at = 0;
    const end = chunk.length;
    while (at < end) {
      switch (this.state) {
        case State.Start:
          if (chunk[at] === STAR) {
            this.beginNumber(State.Count);
            at++;
          } else if (chunk[at] === 0) {
            // No command starts with NUL; a native frame does (its length's high byte): a dstore
            // client or node pointed at this port would otherwise wait for an inline line's end.
            throw new RespProtocolError(NATIVE_PROTOCOL_MESSAGE);
          } else this.state = State.Inline;
          break;
        case State.Count:
        case State.BulkLength:
          at = this.parseDigits(chunk, at, end);
          break;
        case State.CountLf:
          this.expectLf(chunk[at++]!, 'invalid multibulk length');
          this.startMultibulk();
          break;
        case State.Dollar:
          if (chunk[at] !== DOLLAR) {
            throw new RespProtocolError(`expected '$', got '${String.fromCharCode(chunk[at]!)}'`);
          }
          this.beginNumber(State.BulkLength);
          at++;
          break;
        case State.BulkLengthLf:
          this.expectLf(chunk[at++]!, 'invalid bulk length');
          this.startBulk();
          break;
        case State.Bulk:
          at = this.readBulk(chunk, at, end);
          break;
        case State.BulkCr:
          if (chunk[at++] !== CR) throw new RespProtocolError('expected CRLF after a bulk string');
          this.state = State.BulkLf;
          break;
        case State.BulkLf:
          if (chunk[at++] !== LF) throw new RespProtocolError('expected CRLF after a bulk string');
          this.endArgument();
          break;
        case State.Inline:
          at = this.readInline(chunk, at, end);
          break;
      }
    }
  }

  private beginNumber(next: State.Count | State.BulkLength): void {
    this.state = next;
    this.number = 0;
    this.digits = 0;
    this.negative = false;
  }

  /** Digits (and a leading `-`) of a count or length, up to its `\r`. */
  private parseDigits(chunk: Uint8Array, at: number, end: number): number {
    const what = this.state === State.Count ? 'invalid multibulk length' : 'invalid bulk length';
    while (at < end) {
      const byte = chunk[at++]!;
      if (byte >= DIGIT_0 && byte <= DIGIT_9) {
        if (++this.digits > MAX_LENGTH_DIGITS) throw new RespProtocolError(what);
        this.number = this.number * 10 + (byte - DIGIT_0);
      } else if (byte === MINUS && this.digits === 0 && !this.negative) {
        this.negative = true;
      } else if (byte === CR && this.digits > 0) {
        this.state = this.state === State.Count ? State.CountLf : State.BulkLengthLf;
        return at;
      } else throw new RespProtocolError(what);
    }
    return at;
  }

  private expectLf(byte: number, what: string): void {
    if (byte !== LF) throw new RespProtocolError(what);
  }

  /** After `*<count>\r\n`: Redis ignores empty and negative counts, refuses huge ones. */
  private startMultibulk(): void {
    if (this.negative || this.number === 0) {
      this.state = State.Start;
      return;
    }
    if (this.number > MAX_MULTIBULK_COUNT) throw new RespProtocolError('invalid multibulk length');
    this.preAuth = this.limits.preAuth?.() === true;
    if (this.preAuth && this.number > PRE_AUTH_MAX_ARGS) {
      throw new RespProtocolError('unauthenticated multibulk length');
    }
    this.count = this.number;
    this.read = 0;
    this.commandBytes = 0;
    // Sized to the command when it is small (every hot command): an empty array would grow to a
    // 17-slot backing store at its first push. Larger ones grow with what actually arrives, so a
    // declared count costs nothing before its arguments do.
    if (this.count <= PREALLOCATED_ARGS) this.args = new Array<Uint8Array>(this.count);
    this.filled = 0;
    this.refusal =
      this.count > this.limits.maxArgs
        ? `too many arguments in one command (${this.count}, limit ${this.limits.maxArgs})`
        : undefined;
    this.state = State.Dollar;
  }

  /** After `$<length>\r\n`: keep the bulk, or read past it when it breaks a dstore limit. */
  private startBulk(): void {
    if (this.negative || this.number > PROTO_MAX_BULK_BYTES)
      throw new RespProtocolError('invalid bulk length');
    if (this.preAuth && this.number > PRE_AUTH_MAX_BULK_BYTES) {
      throw new RespProtocolError('unauthenticated bulk length');
    }
    this.bulkLength = this.number;
    this.bulkRemaining = this.number;
    this.commandBytes += this.number;
    if (this.refusal === undefined && this.number > this.limits.maxArgBytes) {
      this.refusal = `argument of ${this.number} bytes is over the limit of ${this.limits.maxArgBytes} bytes`;
    } else if (this.refusal === undefined && this.commandBytes > this.limits.maxCommandBytes) {
      this.refusal = `command of more than ${this.limits.maxCommandBytes} bytes`;
    }
    this.skippingBulk = this.refusal !== undefined;
    if (this.skippingBulk) this.args = [];
    this.state = this.number === 0 ? State.BulkCr : State.Bulk;
    if (this.number === 0 && !this.skippingBulk) this.args[this.filled++] = new Uint8Array(0);
  }

  private readBulk(chunk: Uint8Array, at: number, end: number): number {
    const available = Math.min(end - at, this.bulkRemaining);
    if (!this.skippingBulk) {
      if (available === this.bulkLength) {
        // Whole within this chunk: a view, no copy (the common case).
        this.args[this.filled++] = chunk.subarray(at, at + available);
      } else {
        this.partial.append(chunk.subarray(at, at + available), this.bulkLength);
        if (this.partial.length === this.bulkLength) this.args[this.filled++] = this.partial.take();
      }
    }
    this.bulkRemaining -= available;
    if (this.bulkRemaining === 0) this.state = State.BulkCr;
    return at + available;
  }

  private endArgument(): void {
    if (++this.read < this.count) {
      this.state = State.Dollar;
      return;
    }
    this.state = State.Start;
    const args = this.args;
    this.args = [];
    if (this.refusal === undefined) this.sink.command(args);
    else this.sink.refused(this.refusal);
  }

  /** An inline line: up to `\n`, at most {@link MAX_INLINE_BYTES}, split as Redis splits it. */
  private readInline(chunk: Uint8Array, at: number, end: number): number {
    const newline = chunk.indexOf(LF, at);
    const stop = newline < 0 ? end : newline;
    if (this.partial.length + (stop - at) > MAX_INLINE_BYTES) {
      throw new RespProtocolError('too big inline request');
    }
    if (newline < 0) {
      this.partial.append(chunk.subarray(at, end), MAX_INLINE_BYTES);
      return end;
    }
    let line: Uint8Array;
    if (this.partial.length === 0) line = chunk.subarray(at, newline);
    else {
      this.partial.append(chunk.subarray(at, newline), MAX_INLINE_BYTES);
      line = this.partial.take();
    }
    this.state = State.Start;
    const args = splitInline(line);
    if (args.length > 0) this.sink.command(args);
    return newline + 1;
  }
}

const QUOTE = 34;
const APOSTROPHE = 39;
const BACKSLASH = 92;
const ESCAPES: Readonly<Record<string, number>> = { n: 10, r: 13, t: 9, b: 8, a: 7 };

function isSpace(byte: number): boolean {
  return byte === 32 || byte === 9 || byte === CR || byte === LF || byte === 11 || byte === 12;
}

function hexValue(byte: number | undefined): number {
  if (byte === undefined) return -1;
  if (byte >= DIGIT_0 && byte <= DIGIT_9) return byte - DIGIT_0;
  const lower = byte | 0x20;
  return lower >= 97 && lower <= 102 ? lower - 87 : -1;
}

/**
 * Splits an inline line into arguments the way Redis's sdssplitargs does: whitespace separates,
 * "double quotes" take \n \r \t \b \a \\ \" and \xHH escapes, 'single quotes' only \'; a closing
 * quote must be followed by a space or the end. Unbalanced quotes are a protocol error.
 */
export function splitInline(line: Uint8Array): Uint8Array[] {
  const args: Uint8Array[] = [];
  let at = 0;
  while (at < line.length) {
    while (at < line.length && isSpace(line[at]!)) at++;
    if (at >= line.length) break;
    const quote = line[at];
    if (quote !== QUOTE && quote !== APOSTROPHE) {
      const start = at;
      while (at < line.length && !isSpace(line[at]!)) at++;
      args.push(line.subarray(start, at));
      continue;
    }
    const out: number[] = [];
    at++;
    let closed = false;
    while (at < line.length) {
      const byte = line[at]!;
      if (byte === quote) {
        closed = true;
        at++;
        break;
      }
      if (byte === BACKSLASH && at + 1 < line.length) {
        const next = line[at + 1]!;
        if (quote === QUOTE && next === 120 && hexValue(line[at + 2]) >= 0 && hexValue(line[at + 3]) >= 0) {
          out.push(hexValue(line[at + 2]) * 16 + hexValue(line[at + 3]));
          at += 4;
          continue;
        }
        if (quote === QUOTE || next === APOSTROPHE) {
          out.push(quote === QUOTE ? (ESCAPES[String.fromCharCode(next)] ?? next) : next);
          at += 2;
          continue;
        }
      }
      out.push(byte);
      at++;
    }
    if (!closed || (at < line.length && !isSpace(line[at]!))) {
      throw new RespProtocolError('unbalanced quotes in request');
    }
    args.push(Uint8Array.from(out));
  }
  return args;
}
