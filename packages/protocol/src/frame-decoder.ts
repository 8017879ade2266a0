import { ErrorCode, ProtocolError } from './errors.js';

/** Bytes in the length prefix of every frame. */
export const FRAME_HEADER_BYTES = 4;

/**
 * Splits a byte stream into frame bodies: a 4-byte unsigned big-endian length, then that many
 * bytes. Handles partial frames, many frames per chunk and frames split at any byte. A declared
 * length over `maxFrameBytes` is refused as soon as the 4 header bytes are in, before any of the
 * body is buffered, and bytes are only ever held as they arrive (never pre-allocated at the
 * declared size), so a slow sender costs only what it actually sent.
 *
 * Bodies handed to `onFrame` are plain `Uint8Array` views of the received chunks (never Buffers):
 * no copy when a frame arrives whole within one chunk.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  /** Total bytes (header + body) of the frame being assembled, or -1 while its header is incomplete. */
  private expected = -1;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly onFrame: (body: Uint8Array) => void,
  ) {}

  /** True while part of a frame has arrived and the rest has not. */
  get hasPartialFrame(): boolean {
    return this.buffered > 0;
  }

  /** Bytes held for the frame being assembled. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Feeds received bytes. Calls `onFrame` for every complete frame, in order. Throws a fatal
   * {@link ProtocolError} (FRAME_TOO_LARGE) when a header declares more than the limit; the
   * stream cannot be resynchronised after that and the caller must close the connection.
   */
  push(chunk: Uint8Array): void {
    try {
      this.pushUnchecked(chunk);
    } catch (error) {
      // Nothing after a bad header can be trusted; keep none of it (and hold no memory for it).
      this.reset();
      throw error;
    }
  }

  /** Drops any partial frame (used when the connection is closing). */
  reset(): void {
    this.chunks = [];
    this.buffered = 0;
    this.expected = -1;
  }

  private pushUnchecked(received: Uint8Array): void {
    if (received.length === 0) return;
    // Slicing a Buffer builds a Buffer (a species constructor call), measurably slower than a
    // plain view, and the codec slices out every key and value: so view each chunk once as a
    // plain Uint8Array. Bodies, keys and values handed out are plain Uint8Array views.
    const chunk =
      received.constructor === Uint8Array
        ? received
        : new Uint8Array(received.buffer, received.byteOffset, received.byteLength);
    if (this.buffered === 0) {
      this.parse(chunk);
      return;
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.expected < 0) {
      if (this.buffered < FRAME_HEADER_BYTES) return;
      const merged = this.merge();
      this.chunks = [merged];
      this.expected = FRAME_HEADER_BYTES + this.readLength(merged, 0);
    }
    if (this.buffered < this.expected) return;
    this.parse(this.merge());
  }

  private parse(bytes: Uint8Array): void {
    this.reset();
    let offset = 0;
    while (bytes.length - offset >= FRAME_HEADER_BYTES) {
      const length = this.readLength(bytes, offset);
      const end = offset + FRAME_HEADER_BYTES + length;
      if (end > bytes.length) break;
      const body = bytes.subarray(offset + FRAME_HEADER_BYTES, end);
      offset = end;
      this.onFrame(body);
    }
    if (offset < bytes.length) this.keep(bytes.subarray(offset));
  }

  private keep(rest: Uint8Array): void {
    this.chunks = [rest];
    this.buffered = rest.length;
    this.expected = rest.length >= FRAME_HEADER_BYTES ? FRAME_HEADER_BYTES + this.readLength(rest, 0) : -1;
  }

  private readLength(bytes: Uint8Array, offset: number): number {
    // Unsigned: `<<` would turn lengths of 2^31 and up negative.
    const length =
      (bytes[offset]! * 0x1000000 +
        ((bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!)) >>>
      0;
    if (length > this.maxFrameBytes) throw foreignProtocolError(length) ?? this.tooLarge(length);
    return length;
  }

  private tooLarge(length: number): ProtocolError {
    return new ProtocolError(
      ErrorCode.FRAME_TOO_LARGE,
      `frame declares ${length} bytes, limit ${this.maxFrameBytes}`,
      {
        fatal: true,
      },
    );
  }

  private merge(): Uint8Array {
    if (this.chunks.length === 1) return this.chunks[0]!;
    const merged = new Uint8Array(this.buffered);
    let offset = 0;
    for (const chunk of this.chunks) {
      merged.set(chunk, offset);
      offset += chunk.length;
    }
    return merged;
  }
}

/**
 * Another protocol on the other end: its first four bytes read as an absurd frame length. HTTP is
 * the one people hit (a client pointed at the admin port, curl pointed at the client port); saying
 * so beats "frame declares 1213486160 bytes". VERSION_MISMATCH: the peer speaks another protocol,
 * so nothing was executed and trying again cannot help.
 */
const FOREIGN_PREFIXES: ReadonlyMap<number, string> = new Map([
  // A server's answer: the peer is an HTTP server.
  [
    0x48545450,
    'the peer answered "HTTP": this looks like an HTTP server, not a dstore one (is this the admin port?)',
  ],
  // A Redis server's error line: it read our frames as an inline command.
  [
    0x2d455252,
    'the peer answered "-ERR": this looks like a Redis server (RESP), not a dstore one (is this a Redis port, or the balancer\'s --resp-port?)',
  ],
  // A request: the peer is an HTTP client.
  ...['GET ', 'POST', 'PUT ', 'HEAD', 'DELE', 'OPTI', 'PATC'].map(
    (method) =>
      [
        asciiWord(method),
        `the peer sent "${method.trim()}": this looks like an HTTP request, not dstore frames (HTTP goes to the admin port)`,
      ] as const,
  ),
]);

function asciiWord(text: string): number {
  return (
    ((text.charCodeAt(0) << 24) |
      (text.charCodeAt(1) << 16) |
      (text.charCodeAt(2) << 8) |
      text.charCodeAt(3)) >>>
    0
  );
}

function foreignProtocolError(length: number): ProtocolError | undefined {
  if (isRespCommand(length)) {
    return new ProtocolError(ErrorCode.VERSION_MISMATCH, RESP_CLIENT_MESSAGE, {
      fatal: true,
      foreignAnswer: RESP_CLIENT_ANSWER,
    });
  }
  const message = FOREIGN_PREFIXES.get(length);
  return message === undefined
    ? undefined
    : new ProtocolError(ErrorCode.VERSION_MISMATCH, message, { fatal: true });
}

/**
 * A Redis client's command: an array header (`*` and its element count) is how every Redis client
 * and redis-cli send commands, and people point them at the native port (7379 looks like Redis's
 * 6379). Answered in RESP, the one error such a client can print, instead of an ERROR frame it
 * reports as `Protocol error, got "\x00" as reply type byte`.
 */
function isRespCommand(length: number): boolean {
  const second = (length >>> 16) & 0xff;
  return length >>> 24 === 0x2a && second >= 0x30 && second <= 0x39;
}

const RESP_CLIENT_MESSAGE =
  'the peer sent "*": this looks like a Redis (RESP) client, not dstore frames (Redis clients connect to a balancer\'s --resp-port)';

/** The RESP error line a Redis client gets before the connection closes. */
const RESP_CLIENT_ANSWER = new TextEncoder().encode(
  "-ERR this port speaks dstore's native protocol, not RESP: connect Redis clients to a balancer's RESP port (dstore-balancer --resp-port)\r\n",
);
