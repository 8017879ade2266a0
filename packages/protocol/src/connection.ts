import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
// The module's `performance`: the global one is an accessor in Node 20, ~25 ns per request more.
import { performance } from 'node:perf_hooks';
import { type StopWatchingAbort, watchAbort } from './abort-watch.js';
import { AnswerSizes } from './answer-sizes.js';
import type { Principal } from './authenticator.js';
import { hotSize, MessageCodec, writeHot } from './codec.js';
import { type DeadlineSweeper, type Sweepable, sharedSweeper } from './deadline-sweeper.js';
import { DstoreError, ErrorCode, ProtocolError, stacklessError, timeoutError } from './errors.js';
import { FrameDecoder } from './frame-decoder.js';
import type { ProtocolLimits } from './limits.js';
import {
  type ErrorResponse,
  MAX_REQUEST_OP,
  type Message,
  Op,
  type Request,
  type Response,
  type WithoutId,
} from './messages.js';
import { type EndOfTickWriter, flushAtEndOfTick, OutputBuffer } from './output-buffer.js';
import { LARGE_REQUEST_BYTES, ServingBytes } from './serving-bytes.js';
import { isTlsPeerVerified } from './tls.js';

/** Options of a {@link Connection}. Every bound has a default; none is unbounded. */
export interface ConnectionOptions {
  /** Limits enforced on received frames. Defaults: {@link DEFAULT_LIMITS}. */
  readonly limits?: Partial<ProtocolLimits>;
  /** Deadline of an outgoing request, in ms, unless the request sets its own. Default 5000. */
  readonly requestTimeoutMs?: number;
  /** Most outgoing requests awaiting an answer; past it `request()` fails with BUSY. Default 1024. */
  readonly maxInFlight?: number;
  /** Most received requests being served at once; past it the connection stops reading. Default 1024. */
  readonly maxServing?: number;
  /**
   * Most bytes of large received requests (frames of {@link LARGE_REQUEST_BYTES} or more) being
   * served at once; past it the connection stops reading until answers bring it below half, so a
   * peer pipelining big writes waits in its own socket instead of taking a shared resource
   * (the balancer's node links). 0 (default): no byte bound, only `maxServing`.
   */
  readonly maxServingBytes?: number;
  /**
   * Most bytes waiting to be written; past it requests fail with BUSY and a peer that does not read
   * is dropped (both ways, past twice this: our own requests may fill it once). Default 16 MiB.
   */
  readonly maxOutputBytes?: number;
  /** A frame that started arriving must be complete within this many ms (slow senders). Default 10000. */
  readonly frameTimeoutMs?: number;
  /** Close the connection after this many ms without traffic; 0 disables. Default 0. */
  readonly idleTimeoutMs?: number;
  /** Handles each received request; answer it with {@link Connection.reply}. Without it, requests are refused. */
  readonly onRequest?: (request: Request, connection: Connection) => void;
  /** The sweeper that checks deadlines. Default: the process-wide {@link sharedSweeper}. */
  readonly sweeper?: DeadlineSweeper;
  /** Requests travel both ways: never stop reading (see {@link Connection.useBothWays}). Default false. */
  readonly bothWays?: boolean;
  /**
   * Bounds the requests being served by the bytes of their answers too: reading stops while the
   * requests being served, each expected at the size of the recent answers ({@link AnswerSizes}),
   * plus the output waiting reach half of `maxOutputBytes`. For a port facing clients (the
   * balancer's): a client pipelining reads of large values then has as many fetched as its output
   * bound holds, not `maxServing`. Not for node links, whose requests must not wait behind large
   * answers. Default false.
   */
  readonly boundAnswerBytes?: boolean;
}

/** Per-request options. */
export interface RequestOptions {
  /** Deadline in ms for this request. Default: the connection's `requestTimeoutMs`. */
  readonly timeoutMs?: number;
  /** Aborts the wait; the request fails with ABORTED (it may still have been executed). */
  readonly signal?: AbortSignal;
}

/** Events of a {@link Connection}. */
export interface ConnectionEvents {
  /** The socket closed; `error` says why when it was not a clean close. Emitted once. */
  close: [error: Error | undefined];
  /** A received frame was invalid. The connection answered it (or closed, when `fatal`). */
  protocolError: [error: ProtocolError];
  /**
   * Requests passed their deadline with no answer (`count` of them in one sweep): the peer may be
   * slow or gone, which a listener can find out (PeerLink's liveness probe).
   */
  requestTimeout: [count: number];
}

/**
 * Receives the outcome of a request sent with {@link Connection.requestWith}: the answer, or the
 * error (the peer's ERROR as a {@link DstoreError}, TIMEOUT, CONNECTION_CLOSED). Called once.
 */
export type ResponseCallback = (error: DstoreError | undefined, response: Response | undefined) => void;

/**
 * One request awaiting its answer: a promise's settle functions, or (the forwarding hot path)
 * one callback, so no promise is made per request.
 */
export interface PendingRequest {
  readonly id: number;
  readonly resolve: ((response: Response) => void) | undefined;
  readonly reject: ((error: Error) => void) | undefined;
  readonly callback: ResponseCallback | undefined;
  readonly deadline: number;
  readonly timeoutMs: number;
  /** Ends this request's watch of its AbortSignal (see {@link watchAbort}); undefined without one. */
  readonly stopAbortWatch: StopWatchingAbort | undefined;
}

/**
 * The requests awaiting answers, by id: a table indexed by the id's low bits, at most half full
 * (doubled when it would be more). Ids are allocated so that each lands on a free slot, so a lookup
 * is one index and one comparison. A Map keyed by id rehashes whenever its size swings (it shrinks
 * below a quarter full), which requests in flight on a busy link make it do all the time.
 * Exported for its tests only (not from the package's entry points).
 */
export class PendingTable {
  private slots: (PendingRequest | undefined)[] = new Array<PendingRequest | undefined>(64).fill(undefined);
  private mask = 63;
  /** Requests held. */
  size = 0;

  /** Whether a new request may take `id` (its slot is free). */
  isFree(id: number): boolean {
    return this.slots[id & this.mask] === undefined;
  }

  /** The request with `id`, if it is pending. */
  get(id: number): PendingRequest | undefined {
    const entry = this.slots[id & this.mask];
    return entry !== undefined && entry.id === id ? entry : undefined;
  }

  /** Holds `entry`, whose id {@link isFree} accepted. */
  set(entry: PendingRequest): void {
    this.slots[entry.id & this.mask] = entry;
    if (++this.size * 2 > this.slots.length) this.grow();
  }

  /** Removes `entry` (held). */
  delete(entry: PendingRequest): void {
    this.slots[entry.id & this.mask] = undefined;
    this.size--;
  }

  /** Every request held, in no particular order (a copy: the caller may delete as it goes). */
  entries(): PendingRequest[] {
    const entries: PendingRequest[] = [];
    for (const entry of this.slots) if (entry !== undefined) entries.push(entry);
    return entries;
  }

  clear(): void {
    this.slots.fill(undefined);
    this.size = 0;
  }

  /** Doubles the table; ids on distinct slots stay on distinct slots (one more bit of the id). */
  private grow(): void {
    const old = this.slots;
    this.slots = new Array<PendingRequest | undefined>(old.length * 2).fill(undefined);
    this.mask = this.slots.length - 1;
    for (const entry of old) if (entry !== undefined) this.slots[entry.id & this.mask] = entry;
  }
}

/** How long a closed-by-us socket waits for the peer to close its side before being destroyed. */
const END_GRACE_MS = 2000;

const DEFAULTS = {
  requestTimeoutMs: 5000,
  maxInFlight: 1024,
  maxServing: 1024,
  maxServingBytes: 0,
  maxOutputBytes: 16 * 1024 * 1024,
  frameTimeoutMs: 10_000,
  idleTimeoutMs: 0,
};

/**
 * A socket speaking dstore frames, in either direction: the one implementation of framing,
 * request-id multiplexing, deadlines, backpressure and write coalescing that the client, the
 * balancer and the storage nodes all use.
 *
 * - Outgoing requests get an id; answers are matched by id, in any order.
 * - Frames written in one tick leave in one `socket.write()` (flushed on `setImmediate`); the
 *   answers a received chunk's requests got synchronously leave in one write as the chunk ends.
 * - Deadlines are checked by one shared sweep, never a timer per request.
 * - When `write()` reports a full socket, frames wait for `drain`; a serving connection stops
 *   reading meanwhile, so a peer that sends without reading slows itself down.
 * - When the socket closes, every pending request fails with CONNECTION_CLOSED.
 */
export class Connection extends EventEmitter<ConnectionEvents> implements Sweepable {
  /** The codec, exposing the limits this connection enforces. */
  readonly codec: MessageCodec;
  /** Who the peer authenticated as; set by the server's Authenticator, undefined until then. */
  principal: Principal | undefined = undefined;
  /**
   * Kept by the owner of a served connection, never read here: the balancer counts in it, by
   * node, the requests of this client connection it has in flight to its nodes (each client
   * connection's fair share of a node link's `maxInFlight`). Here so that the count is one field
   * away from the connection on the hot path, not a map lookup.
   */
  readonly linkShare: number[] = [];

  private readonly options: typeof DEFAULTS;
  private readonly onRequest: ConnectionOptions['onRequest'];
  private readonly sweeper: DeadlineSweeper;
  private readonly decoder: FrameDecoder;
  private readonly output = new OutputBuffer();
  private readonly pending = new PendingTable();
  private nextId = 1;
  private earliestDeadline = Number.POSITIVE_INFINITY;
  private partialFrameSince = -1;
  /** Frames completed so far (wraps harmlessly): tells whether a chunk completed one. */
  private framesReceived = 0;
  private servingCount = 0;
  /** The expected size of the answers being served (with `boundAnswerBytes` only). */
  private readonly answerSizes: AnswerSizes | undefined;
  /** Bytes of the large requests being served, by request id, against `maxServingBytes`. */
  private readonly servingBytes: ServingBytes;
  private readingPaused = false;
  /** Set by {@link useBothWays}: reading is never paused. */
  private bothWays: boolean;
  /**
   * Frames already read (views of received chunks) that arrived while reading was paused: a
   * chunk can hold thousands of small requests, and serving them all at once would defeat the
   * pause. Bounded by the chunks read before the pause took effect.
   */
  private deferred: Uint8Array[] = [];
  private drainingDeferred = false;
  private flushScheduled = false;
  /**
   * Set while a received chunk is being served: answers written meanwhile leave in one write when
   * the chunk is done ({@link receiveChunk}) instead of on the end-of-tick immediate, which costs
   * a callback into JS, a microtask checkpoint and the queue's bookkeeping per read.
   */
  private inChunk = false;
  private socketFull = false;
  private isClosed = false;
  /** Closing because the server goes down: the peer is told (see {@link shutDown}). */
  private goodbye = false;
  private closing = false;
  /** Set once the incoming byte stream is untrustworthy: nothing more is read from it. */
  private streamFailed = false;
  /** A connection-level ERROR (id 0) the peer sent, such as BUSY when it refused us. */
  private peerError: DstoreError | undefined;
  private closeTimer: NodeJS.Timeout | undefined;
  private lateResponseCount = 0;
  /**
   * Whether this connection is registered with the sweeper. It is only while it has something to
   * watch (requests awaiting answers, a frame partly received): an idle registered connection
   * keeps the process waking up every sweep (a node with one idle connection burnt ~15 ms of CPU
   * per second on the 10 ms sweep), so the sweep that finds nothing to watch unregisters it.
   */
  private swept = false;

  constructor(
    readonly socket: Socket,
    options: ConnectionOptions = {},
  ) {
    super();
    this.options = {
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      maxInFlight: options.maxInFlight ?? DEFAULTS.maxInFlight,
      maxServing: options.maxServing ?? DEFAULTS.maxServing,
      maxServingBytes: options.maxServingBytes ?? DEFAULTS.maxServingBytes,
      maxOutputBytes: options.maxOutputBytes ?? DEFAULTS.maxOutputBytes,
      frameTimeoutMs: options.frameTimeoutMs ?? DEFAULTS.frameTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
    };
    this.servingBytes = new ServingBytes(this.options.maxServingBytes);
    this.answerSizes = options.boundAnswerBytes === true ? new AnswerSizes() : undefined;
    this.onRequest = options.onRequest;
    this.bothWays = options.bothWays ?? false;
    this.sweeper = options.sweeper ?? sharedSweeper;
    this.codec = new MessageCodec(options.limits);
    this.decoder = new FrameDecoder(this.codec.limits.maxFrameBytes, (body) => this.receiveFrame(body));
    socket.setNoDelay(true);
    // The listener is always there; the timeout itself is armed only when non-zero.
    socket.on('timeout', () =>
      this.destroy(new DstoreError(ErrorCode.TIMEOUT, `idle for ${this.options.idleTimeoutMs} ms`)),
    );
    if (this.options.idleTimeoutMs > 0) socket.setTimeout(this.options.idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.receiveChunk(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', (error) => this.finish(error));
    socket.on('close', () => this.finish(undefined));
    // A half-closed peer will send nothing more: our requests can no longer be answered, but the
    // requests it sent are still answered before we close.
    socket.on('end', () => {
      this.failPending(this.closedError(undefined));
      void this.close();
    });
    this.watch();
  }

  /**
   * True when the connection is TLS and the peer's certificate verified against the CA: on a
   * server, a peer that presented a certificate signed by the cluster's CA (mutual TLS); on a
   * client, the server's certificate. False on plaintext and for clients without a certificate.
   */
  get tlsPeerVerified(): boolean {
    return isTlsPeerVerified(this.socket);
  }

  /** Outgoing requests awaiting an answer. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Received requests not answered yet. */
  get serving(): number {
    return this.servingCount;
  }

  /** Whether the peer has authenticated (has a {@link principal}). */
  get authenticated(): boolean {
    return this.principal !== undefined;
  }

  /**
   * Marks a connection on which both ends send requests (a link between two storage nodes): from
   * now on it never stops reading, neither when it serves `maxServing` requests nor when its
   * socket is full. Reading is what brings the answers to our own requests: were both ends to stop
   * reading while each waits for its peer to read (full sockets both ways), or while each serves
   * requests that wait for answers queued behind them, neither would ever move again. What bounds
   * the requests it serves instead is the peer's own in-flight bound (`maxInFlight` per
   * connection), and the output stays bounded by `maxOutputBytes` (requests refused with BUSY,
   * and a peer that reads no answers dropped past twice it). Resumes reading if it was paused.
   */
  useBothWays(): void {
    this.bothWays = true;
    if (this.readingPaused) this.resumeReading();
  }

  /** Whether requests travel both ways on this connection ({@link useBothWays}). */
  get isBothWays(): boolean {
    return this.bothWays;
  }

  /**
   * Closes the connection after `ms` without traffic (0: never); replaces the constructor's
   * `idleTimeoutMs`. Servers set it once a connection is admitted as a client.
   */
  setIdleTimeout(ms: number): void {
    this.options.idleTimeoutMs = ms;
    this.socket.setTimeout(ms);
  }

  /** Bytes waiting to be written, in this connection and in the socket. */
  get bufferedOutputBytes(): number {
    return this.output.length + this.socket.writableLength;
  }

  /** Answers that arrived after their request had timed out or been aborted. */
  get lateResponses(): number {
    return this.lateResponseCount;
  }

  /** False once the connection is closing or closed. */
  get isOpen(): boolean {
    return !this.isClosed && !this.closing;
  }

  /**
   * Sends a request and resolves with its answer. An ERROR answer rejects with a
   * {@link DstoreError} carrying the peer's code; so do TIMEOUT, BUSY, ABORTED and
   * CONNECTION_CLOSED. Never hangs: every request ends by its deadline at the latest.
   */
  request(message: WithoutId<Request>, options: RequestOptions = {}): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      const refusal = this.refusalFor();
      if (refusal) {
        reject(refusal);
        return;
      }
      const { signal } = options;
      if (signal?.aborted) {
        reject(abortError(signal));
        return;
      }
      const id = this.allocateId();
      const size = this.hotFrameSize(message, id);
      let body: Uint8Array | undefined;
      if (size < 0) {
        try {
          body = this.encodeWithinLimit(message, id);
        } catch (error) {
          reject(error);
          return;
        }
      }
      const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs;
      const deadline = performance.now() + timeoutMs;
      const stopAbortWatch = signal ? watchAbort(signal, () => this.abortRequest(id, signal)) : undefined;
      this.pending.set({ id, resolve, reject, callback: undefined, deadline, timeoutMs, stopAbortWatch });
      if (deadline < this.earliestDeadline) this.earliestDeadline = deadline;
      if (!this.swept) this.watch();
      if (body === undefined) this.writeHotFrame(message, id, size, false);
      else this.writeBody(body, false);
    });
  }

  /**
   * {@link request} without a promise, for forwarding hot paths: returns the refusal when the
   * request cannot be sent (closed, BUSY, too large; `callback` is then never called), otherwise
   * sends it and calls `callback` exactly once with its answer or error, the same outcomes and
   * deadline as `request` (`timeoutMs`, default the connection's `requestTimeoutMs`).
   */
  requestWith(
    message: WithoutId<Request>,
    callback: ResponseCallback,
    timeoutMs = this.options.requestTimeoutMs,
  ): DstoreError | undefined {
    const refusal = this.refusalFor();
    if (refusal) return refusal;
    const id = this.allocateId();
    const size = this.hotFrameSize(message, id);
    let body: Uint8Array | undefined;
    if (size < 0) {
      try {
        body = this.encodeWithinLimit(message, id);
      } catch (error) {
        return error instanceof DstoreError ? error : new DstoreError(ErrorCode.INTERNAL, String(error));
      }
    }
    const deadline = performance.now() + timeoutMs;
    this.pending.set({
      id,
      resolve: undefined,
      reject: undefined,
      callback,
      deadline,
      timeoutMs,
      stopAbortWatch: undefined,
    });
    if (deadline < this.earliestDeadline) this.earliestDeadline = deadline;
    if (!this.swept) this.watch();
    if (body === undefined) this.writeHotFrame(message, id, size, false);
    else this.writeBody(body, false);
    return undefined;
  }

  /** Answers a received request (the response carries the request's id). */
  reply(response: Response): void {
    if (this.servingCount > 0) this.servingCount--;
    const bytesAllowReading = this.servingBytes.answered(response.id);
    if (this.isClosed) return;
    if (this.readingPaused && this.servingCount <= this.options.maxServing >> 1 && bytesAllowReading)
      this.maybeResumeReading();
    const size = this.hotFrameSize(response, response.id);
    if (size >= 0) {
      this.answerSizes?.note(size);
      this.writeHotFrame(response, response.id, size, true);
      if (this.closing) this.endWhenIdle();
      return;
    }
    let body: Uint8Array;
    try {
      // An MGET answer whose values alone pass the frame limit is refused before it is encoded:
      // encoding it first copied megabytes for nothing, for every half a reader then asks for.
      const valueBytes = valuesBytesOf(response);
      if (valueBytes > this.codec.limits.maxFrameBytes) throw this.frameTooLarge(response, valueBytes);
      body = this.encodeWithinLimit(response);
      this.answerSizes?.note(body.length);
    } catch (error) {
      // Too big for one frame (say, an MGET of many large values): the peer would have to drop the
      // connection on it, so tell this one request instead.
      const refusal =
        error instanceof DstoreError ? error : new DstoreError(ErrorCode.INTERNAL, String(error));
      body = this.codec.encode({
        op: Op.ERROR,
        id: response.id,
        code: refusal.code,
        message: refusal.message,
      });
    }
    this.writeBody(body, true);
    if (this.closing) this.endWhenIdle();
  }

  /** Answers request `id` with an ERROR frame. */
  replyError(id: number, code: ErrorCode | (string & {}), message: string): void {
    const response: ErrorResponse = { op: Op.ERROR, id, code, message };
    this.reply(response);
  }

  /** Sends a message without tracking an answer (a frame the peer does not reply to). */
  send(message: Message): void {
    if (!this.isClosed) this.writeBody(this.encodeWithinLimit(message), message.op > MAX_REQUEST_OP);
  }

  /**
   * Closes gracefully: stops reading, lets requests being served be answered and outgoing
   * requests get their answers (or reach their deadlines), writes what is buffered, then ends the
   * socket. Resolves once closed.
   */
  close(): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.once('close', () => resolve()));
    if (!this.closing) {
      // Reading goes on: answers to our pending requests are still wanted, and requests the peer
      // sends meanwhile are refused with SHUTTING_DOWN rather than left unanswered.
      this.closing = true;
      this.endWhenIdle();
    }
    return closed;
  }

  /**
   * {@link close} of a server going down: once every request it read is answered, a serving side
   * tells the peer `SHUTTING_DOWN` with id 0 before it ends the socket, so the peer's requests
   * still unanswered (sent across the end, never read) fail as not executed rather than with
   * CONNECTION_CLOSED, whose outcome is unknown (a balancer's graceful restart made clients treat
   * ~30 requests it never ran as maybe applied). A close for any other reason (a refused
   * authentication) says nothing more than it did.
   */
  shutDown(): Promise<void> {
    this.goodbye = true;
    return this.close();
  }

  /** Closes at once; pending requests fail with CONNECTION_CLOSED (or `error`'s code). */
  destroy(error?: Error): void {
    if (this.isClosed) return;
    this.socket.destroy();
    this.finish(error);
  }

  /**
   * Called by the sweeper: fails expired requests and drops senders of never-finished frames;
   * stops being swept once there is neither (see {@link watch}).
   */
  sweep(now: number): void {
    if (now >= this.earliestDeadline) this.expireRequests(now);
    // While we are not reading, a stalled frame is our doing, not the sender's.
    if (
      this.partialFrameSince >= 0 &&
      !this.readingPaused &&
      now - this.partialFrameSince > this.options.frameTimeoutMs
    ) {
      this.failStream(
        new ProtocolError(
          ErrorCode.FRAME_TIMEOUT,
          `frame incomplete after ${this.options.frameTimeoutMs} ms`,
          {
            fatal: true,
          },
        ),
      );
    }
    if (this.pending.size === 0 && this.partialFrameSince < 0) {
      this.swept = false;
      this.sweeper.delete(this);
    }
  }

  /** Registers with the sweeper (a request now awaits an answer, or a frame started arriving). */
  private watch(): void {
    if (this.swept || this.isClosed) return;
    this.swept = true;
    this.sweeper.add(this);
  }

  /**
   * During a graceful close, ends the socket once nothing is owed in either direction; after
   * {@link shutDown}, a serving side first says SHUTTING_DOWN with id 0 (every request it read is
   * answered by then, so one the peer sent across our end was not executed).
   */
  private endWhenIdle(): void {
    if (!this.closing || this.isClosed || this.servingCount > 0 || this.pending.size > 0) return;
    if (this.goodbye && this.onRequest && !this.socket.writableEnded) {
      const goodbye: ErrorResponse = {
        op: Op.ERROR,
        id: 0,
        code: ErrorCode.SHUTTING_DOWN,
        message: 'the server is shutting down: requests it did not answer were not executed',
      };
      this.writeBody(this.codec.encode(goodbye), true);
    }
    this.endSocket();
  }

  /**
   * Hands every buffered frame to the socket (even past a full socket: it queues them), ends our
   * side, and destroys the socket if the peer has not closed its side soon after, so a peer that
   * never reads or never closes cannot keep the connection alive.
   */
  private endSocket(reason?: Error): void {
    if (this.socket.writableEnded) return;
    if (this.output.length > 0) this.socket.write(this.output.take());
    this.socket.end();
    this.closeTimer = setTimeout(() => this.destroy(reason), END_GRACE_MS);
    this.closeTimer.unref();
  }

  private refusalFor(): DstoreError | undefined {
    if (this.isClosed || this.closing)
      return stacklessError(ErrorCode.CONNECTION_CLOSED, 'connection is closed');
    if (this.pending.size >= this.options.maxInFlight) {
      return stacklessError(ErrorCode.BUSY, `${this.pending.size} requests in flight on this connection`);
    }
    if (this.bufferedOutputBytes >= this.options.maxOutputBytes) {
      return stacklessError(ErrorCode.BUSY, `${this.bufferedOutputBytes} bytes waiting to be written`);
    }
    return undefined;
  }

  private allocateId(): number {
    // Ids wrap at 2^32; skip 0 (reserved for errors about unreadable frames) and ids in use.
    let id = this.nextId;
    while (id === 0 || !this.pending.isFree(id)) id = (id + 1) >>> 0;
    this.nextId = (id + 1) >>> 0;
    return id;
  }

  /**
   * Encodes a message (a request under `id` when given), refusing one the peer would have to
   * drop the connection for.
   */
  private encodeWithinLimit(message: Message): Uint8Array;
  private encodeWithinLimit(message: WithoutId<Request>, id: number): Uint8Array;
  private encodeWithinLimit(message: Message | WithoutId<Request>, id?: number): Uint8Array {
    const body =
      id === undefined
        ? this.codec.encode(message as Message)
        : this.codec.encodeRequest(message as WithoutId<Request>, id);
    if (body.length > this.codec.limits.maxFrameBytes) throw this.frameTooLarge(message, body.length, id);
    return body;
  }

  /** The refusal of a message of `bytes` bytes or more, over the frame limit (a request's when `id` is given). */
  private frameTooLarge(message: Message | WithoutId<Request>, bytes: number, id?: number): DstoreError {
    // The common way to get here is an MGET whose values together pass the limit: say what to do.
    const hint =
      message.op === Op.VALUES
        ? ': an MGET answer this large cannot be sent; ask for fewer keys per MGET (or raise maxFrameBytes on both sides)'
        : '';
    // Stackless: a reader of large values in halves meets this for every half too large.
    return stacklessError(
      ErrorCode.FRAME_TOO_LARGE,
      `message encodes to ${bytes} bytes or more, over the ${this.codec.limits.maxFrameBytes}-byte frame limit${hint}`,
      // A request refused here never left: not executed.
      id === undefined ? undefined : { notExecuted: true },
    );
  }

  /**
   * The body size of a message the codec's hand writer encodes straight into the output buffer
   * (a hot op within the frame limit), or -1: encode it with {@link encodeWithinLimit}.
   */
  private hotFrameSize(message: Message | WithoutId<Request>, id: number): number {
    const size = hotSize(message, id);
    return size > this.codec.limits.maxFrameBytes ? -1 : size;
  }

  /** {@link writeBody} for a message {@link hotFrameSize} accepted: no intermediate copy. */
  private writeHotFrame(
    message: Message | WithoutId<Request>,
    id: number,
    size: number,
    isResponse: boolean,
  ): void {
    if (this.socket.writableEnded) return;
    const at = this.output.reserveFrame(size);
    writeHot(this.output.bytes, at, message, id);
    this.scheduleFlush(isResponse);
  }

  private writeBody(body: Uint8Array, isResponse: boolean): void {
    if (this.socket.writableEnded) return;
    this.output.appendFrame(body);
    this.scheduleFlush(isResponse);
  }

  private scheduleFlush(isResponse: boolean): void {
    // Inside a chunk, the flush at its end writes this frame (see {@link receiveChunk}).
    if (!this.flushScheduled && !this.inChunk) {
      this.flushScheduled = true;
      flushAtEndOfTick(this.endOfTick);
    }
    if (isResponse && this.bufferedOutputBytes > this.notReadingBytes) {
      // The peer sends requests but does not read answers: drop it rather than buffer without bound.
      this.destroy(new DstoreError(ErrorCode.BUSY, 'peer is not reading its responses'));
    }
  }

  /**
   * Output past which a peer counts as not reading its answers. Both ways, our own requests share
   * the output: they are refused past `maxOutputBytes` (see {@link refusalFor}), so they can fill
   * up to that (and one frame) on their own, and only output beyond it is answers the peer leaves
   * unread. Counted alone, a node whose forwards filled the link dropped it at its next answer,
   * failing every stream between the two nodes.
   */
  private get notReadingBytes(): number {
    return this.bothWays ? 2 * this.options.maxOutputBytes : this.options.maxOutputBytes;
  }

  /** Writes the tick's frames at its end ({@link flushAtEndOfTick}); made once, so queueing allocates nothing. */
  private readonly endOfTick: EndOfTickWriter = {
    flushBuffered: () => {
      this.flushScheduled = false;
      this.flush();
    },
  };

  private flush(): void {
    if (this.isClosed || this.socketFull || this.output.length === 0 || this.socket.writableEnded) return;
    if (!this.socket.write(this.output.take())) {
      this.socketFull = true;
      if (this.onRequest && !this.readingPaused) this.pauseReading();
    } else if (this.readingPaused) {
      // The socket took everything without filling up, so no `drain` will come to resume us.
      this.maybeResumeReading();
    }
  }

  private onDrain(): void {
    this.socketFull = false;
    this.flush();
    if (this.readingPaused) this.maybeResumeReading();
  }

  /** Output above this makes a serving connection stop reading until it drains. */
  private get outputHighWater(): number {
    return this.options.maxOutputBytes >> 1;
  }

  /** With `boundAnswerBytes`: whether the answers being served and the output waiting reach half the output bound. */
  private answersOverHalf(): boolean {
    return this.answerSizes?.over(this.servingCount, this.bufferedOutputBytes, this.outputHighWater) === true;
  }

  private maybeResumeReading(): void {
    if (
      this.socketFull ||
      this.servingCount >= this.options.maxServing ||
      this.servingBytes.shouldPause ||
      this.bufferedOutputBytes >= this.outputHighWater ||
      this.answersOverHalf()
    ) {
      return;
    }
    this.resumeReading();
  }

  private pauseReading(): void {
    // Both ways, reading also brings the answers our requests wait for (see useBothWays).
    if (this.bothWays) return;
    this.readingPaused = true;
    this.socket.pause();
  }

  private resumeReading(): void {
    this.readingPaused = false;
    // The frame deadline restarts: the sender could not send while we were not reading.
    if (this.partialFrameSince >= 0) this.partialFrameSince = performance.now();
    this.serveDeferred();
    if (!this.readingPaused && !this.isClosed && !this.streamFailed) this.socket.resume();
  }

  private serveDeferred(): void {
    if (this.drainingDeferred) return;
    this.drainingDeferred = true;
    const queue = this.deferred;
    let next = 0;
    try {
      // An index rather than shift(): thousands of deferred frames must not cost O(n^2).
      while (next < queue.length && !this.readingPaused && this.deferred === queue) {
        this.handleFrame(queue[next++]!);
      }
    } finally {
      if (this.deferred === queue) this.deferred = next === queue.length ? [] : queue.slice(next);
      this.drainingDeferred = false;
    }
  }

  private receiveChunk(chunk: Buffer): void {
    if (this.isClosed || this.streamFailed) return;
    this.inChunk = true;
    const framesBefore = this.framesReceived;
    try {
      this.decoder.push(chunk);
    } catch (error) {
      this.inChunk = false;
      if (error instanceof ProtocolError) this.failStream(error);
      else this.destroy(error as Error);
      return;
    }
    this.inChunk = false;
    // The answers served synchronously from this chunk (a read of many requests) leave now, in
    // one write: the socket has nothing more to give us this turn (a later chunk of the same
    // turn, a large burst, gets its own write), so this is the write the end of the tick would
    // have made. Not on a connection used both ways (a link between nodes): its answers are
    // asynchronous and the requests to the same peer leave at the end of the tick, in one write
    // with whatever it buffered (flushing here would split that write in two).
    if (this.output.length > 0) {
      if (!this.bothWays) this.flush();
      else if (!this.flushScheduled) {
        this.flushScheduled = true;
        flushAtEndOfTick(this.endOfTick);
      }
    }
    if (!this.decoder.hasPartialFrame) this.partialFrameSince = -1;
    else if (this.partialFrameSince < 0 || this.framesReceived !== framesBefore) {
      // The frame left partly received began in this chunk when the chunk completed another:
      // its deadline counts from now. A peer sending frames back to back (a busy link) rarely
      // ends a chunk on a frame's end, and timed from the first partial frame of the burst it
      // was dropped after the frame timeout while every frame came in time.
      this.partialFrameSince = performance.now();
      if (!this.swept) this.watch();
    }
  }

  private receiveFrame(body: Uint8Array): void {
    this.framesReceived++;
    if (this.isClosed || this.streamFailed) return;
    if (this.readingPaused || this.deferred.length > 0) {
      this.deferred.push(body);
      return;
    }
    this.handleFrame(body);
  }

  private handleFrame(body: Uint8Array): void {
    if (this.isClosed || this.streamFailed) return;
    let message: Message;
    try {
      message = this.codec.decode(body);
    } catch (error) {
      this.rejectFrame(error as ProtocolError);
      return;
    }
    if (message.op > MAX_REQUEST_OP) this.settle(message as Response);
    else if (this.closing) this.refuseWhileClosing(message as Request);
    else {
      // Counted before it is served, so that its answer finds it even when given synchronously.
      if (this.servingBytes.add((message as Request).id, body.length) && !this.readingPaused) {
        this.pauseReading();
      }
      this.serve(message as Request);
    }
  }

  private refuseWhileClosing(request: Request): void {
    this.servingCount++;
    this.replyError(request.id, ErrorCode.SHUTTING_DOWN, 'connection is closing');
  }

  private rejectFrame(error: ProtocolError): void {
    this.emit('protocolError', error);
    // A serving side answers the bad request and carries on: framing is intact. A requesting side
    // cannot tell which request the garbage answered, so it must drop the connection.
    if (this.onRequest && !error.fatal) {
      this.servingCount++;
      this.replyError(error.requestId, error.code, error.message);
    } else {
      this.failStream(error);
    }
  }

  private serve(request: Request): void {
    if (!this.onRequest) {
      this.rejectFrame(
        new ProtocolError(ErrorCode.MALFORMED_FRAME, 'this peer does not accept requests', { fatal: true }),
      );
      return;
    }
    this.servingCount++;
    if ((this.servingCount >= this.options.maxServing || this.answersOverHalf()) && !this.readingPaused)
      this.pauseReading();
    try {
      this.onRequest(request, this);
    } catch (error) {
      this.replyError(request.id, ErrorCode.INTERNAL, (error as Error).message);
    }
    if (!this.readingPaused && !this.isClosed && this.bufferedOutputBytes >= this.outputHighWater) {
      this.pauseReading();
    }
  }

  private settle(response: Response): void {
    const entry = this.pending.get(response.id);
    if (!entry) {
      // Id 0 is never a request's: it is the peer speaking about the connection (e.g. BUSY when
      // it refuses us). Remember it as the reason for the close that follows.
      if (response.id === 0 && response.op === Op.ERROR) {
        this.peerError = stacklessError(response.code, response.message);
      } else {
        this.lateResponseCount++;
      }
      return;
    }
    this.pending.delete(entry);
    entry.stopAbortWatch?.();
    if (response.op === Op.ERROR) failRequest(entry, stacklessError(response.code, response.message));
    else if (entry.callback) callBack(entry.callback, undefined, response);
    else entry.resolve!(response);
    if (this.closing) this.endWhenIdle();
  }

  private abortRequest(id: number, signal: AbortSignal): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(entry);
    failRequest(entry, abortError(signal));
    if (this.closing) this.endWhenIdle();
  }

  private expireRequests(now: number): void {
    let earliest = Number.POSITIVE_INFINITY;
    let expired = 0;
    for (const entry of this.pending.entries()) {
      if (entry.deadline <= now) {
        this.pending.delete(entry);
        entry.stopAbortWatch?.();
        failRequest(entry, timeoutError(entry.timeoutMs));
        expired++;
      } else if (entry.deadline < earliest) {
        earliest = entry.deadline;
      }
    }
    this.earliestDeadline = earliest;
    if (expired > 0) this.emit('requestTimeout', expired);
    if (this.closing) this.endWhenIdle();
  }

  /** The byte stream cannot be trusted any more: say why once, then close. */
  private failStream(error: ProtocolError): void {
    if (this.isClosed || this.streamFailed) return;
    this.streamFailed = true;
    this.emit('protocolError', error);
    this.decoder.reset();
    this.deferred = [];
    this.partialFrameSince = -1;
    if (this.onRequest) {
      if (error.foreignAnswer !== undefined) {
        this.output.append(error.foreignAnswer);
      } else {
        const response: ErrorResponse = {
          op: Op.ERROR,
          id: error.requestId,
          code: error.code,
          message: error.message,
        };
        this.writeBody(this.codec.encode(response), true);
      }
      this.closing = true;
      this.socket.pause();
      this.endSocket(error);
    } else {
      this.destroy(error);
    }
  }

  private finish(error: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.swept = false;
    this.sweeper.delete(this);
    this.decoder.reset();
    this.deferred = [];
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.failPending(this.closedError(error));
    if (!this.socket.destroyed) this.socket.destroy();
    this.emit('close', error ?? this.peerError);
  }

  /**
   * What pending requests fail with when the connection goes away: CONNECTION_CLOSED (the request
   * may have run), unless the peer said before closing that it refused us with a not-executed
   * code such as BUSY, which is then passed on so callers know a retry is safe.
   */
  private closedError(error: Error | undefined): DstoreError {
    if (!error && this.peerError?.notExecuted) return this.peerError;
    const reason = error ?? this.peerError;
    if (reason instanceof DstoreError && reason.code === ErrorCode.CONNECTION_CLOSED) return reason;
    return new DstoreError(
      ErrorCode.CONNECTION_CLOSED,
      reason ? `connection closed: ${reason.message}` : 'connection closed',
      { cause: reason },
    );
  }

  private failPending(failure: DstoreError): void {
    if (this.pending.size === 0) return;
    const pending = this.pending.entries();
    this.pending.clear();
    this.earliestDeadline = Number.POSITIVE_INFINITY;
    for (const entry of pending) {
      entry.stopAbortWatch?.();
      failRequest(entry, failure);
    }
  }
}

/** Ends a pending request with `error`: rejects its promise or calls its callback. */
function failRequest(entry: PendingRequest, error: DstoreError): void {
  if (entry.callback) callBack(entry.callback, error, undefined);
  else entry.reject!(error);
}

/**
 * Calls a request's callback. It runs inside our frame handling (or the sweep): an exception of
 * its own must not break this connection, so it is rethrown on its own, like an unhandled
 * rejection of a promise caller would surface.
 */
function callBack(
  callback: ResponseCallback,
  error: DstoreError | undefined,
  response: Response | undefined,
): void {
  try {
    callback(error, response);
  } catch (thrown) {
    queueMicrotask(() => {
      throw thrown;
    });
  }
}

function abortError(signal: AbortSignal): DstoreError {
  return new DstoreError(ErrorCode.ABORTED, 'request aborted', { cause: signal.reason });
}

/** The bytes of an MGET answer's values (0 for any other message): a lower bound of its frame's size. */
function valuesBytesOf(message: Response): number {
  if (message.op !== Op.VALUES) return 0;
  let bytes = 0;
  for (const value of message.values) if (value !== null) bytes += value.length;
  return bytes;
}
