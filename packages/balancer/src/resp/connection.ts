import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
// The module's `performance`, as the protocol's connections use (the global one is an accessor).
import { performance } from 'node:perf_hooks';
import { Op, type Response, type UserGrant } from '@dstore/protocol';
import {
  AnswerSizes,
  type DeadlineSweeper,
  type EndOfTickWriter,
  flushAtEndOfTick,
  OutputBuffer,
  type ServedConnection,
  ServingBytes,
  type Sweepable,
  sharedSweeper,
} from '@dstore/protocol/internal';
import type { Replier } from '../router.js';
import { RespWriter } from './encoder.js';
import { respErrorLine } from './errors.js';
import { KeyOrder, type OrderedCommand } from './key-order.js';
import { LargeAnswerTurns } from './large-answers.js';
import { type RespCommandSink, RespParser, type RespParserLimits, RespProtocolError } from './parser.js';
import { ConnectionTransaction } from './transaction-state.js';

/** Who a RESP connection acts as: a user of the users file, or anyone (no users configured). */
export type RespIdentity = { readonly kind: 'user'; grant: UserGrant } | { readonly kind: 'anonymous' };

/**
 * What a data command answers through: a connection, or one element of a transaction's answer
 * (EXEC answers its commands' answers as one array).
 */
export interface RespReplyTarget {
  /** Who the commands act as (the connection's identity). */
  readonly identity: RespIdentity | undefined;
  /** What the router answers through: it calls `reply`/`replyError` with the command's sequence number as id. */
  readonly routerTarget: Replier;
  /** Starts the answer of command `seq`: the writer takes exactly one reply, then {@link endReply}. */
  beginReply(seq: number): RespWriter;
  /** Ends the answer of `seq` started by {@link beginReply}. */
  endReply(seq: number): void;
  /** Answers `seq` with an error line (`PREFIX message`). */
  replyError(seq: number, line: string): void;
  /**
   * The turns of the answers assembled in parts (a large MGET's); undefined where answers are
   * not written to the client directly (the commands of an EXEC).
   */
  readonly largeAnswers: LargeAnswerTurns | undefined;
}

/** Runs the commands of a {@link RespConnection}; implemented by the RESP front door. */
export interface RespCommandRunner {
  /** Runs `args` (a complete command); answers through `connection.beginReply(seq)`. */
  run(connection: RespConnection, args: Uint8Array[], seq: number): void;
  /**
   * The keys and kind of `args` when its order against the connection's commands in flight must be
   * kept by waiting (see {@link KeyOrder}); undefined when it need not.
   */
  orderOf(connection: RespConnection, args: Uint8Array[]): OrderedCommand | undefined;
}

/** Options of a {@link RespConnection}. */
export interface RespConnectionOptions {
  readonly parser: RespParserLimits;
  /** Most commands read and not answered yet; reading pauses there (back-pressure). */
  readonly maxInFlight: number;
  /**
   * Most bytes of large commands (arguments of `LARGE_REQUEST_BYTES` or more together) read
   * and not answered yet; past it reading pauses until answers bring it to half, as the native
   * port's `maxServingBytes` (the balancer's `--max-client-bytes-in-flight`): a client pipelining
   * big SETs waits in its own socket instead of filling the node links. 0 or absent: no byte bound.
   */
  readonly maxServingBytes?: number;
  /**
   * Most reply bytes buffered for a client that does not read them; past it the client is
   * disconnected (as Redis's client-output-buffer-limit does). Reading pauses at half of it.
   */
  readonly maxOutputBytes: number;
  /** Whether clients must authenticate (users are configured): see `RespParserLimits.preAuth`. */
  readonly authRequired?: () => boolean;
  /**
   * A command that started arriving must be complete within this many ms, else the client gets
   * `-ERR Protocol error: ...` and is closed: the native port's frame deadline (the balancer's
   * `--frame-timeout`), so a client trickling a declared 512 MB bulk or a `*1000000` header cannot
   * hold its slot (arriving bytes count as traffic for the idle timeout). Default 10000.
   */
  readonly frameTimeoutMs?: number;
  /** The sweeper that checks the deadline. Default: the process-wide `sharedSweeper`. */
  readonly sweeper?: DeadlineSweeper;
}

/** Default of {@link RespConnectionOptions.frameTimeoutMs}, the native port's frame deadline. */
const DEFAULT_FRAME_TIMEOUT_MS = 10_000;

/**
 * What waits in a connection's queue while dispatching is held: a command, the message of a
 * command refused for its size, or the protocol error that ends the stream.
 */
type DeferredItem = Uint8Array[] | string | { readonly protocolError: string };

/**
 * The answers completed ahead of their turn, by sequence number: a ring indexed by the low bits of
 * the number, grown (never shrunk) when a number is a ring's length or more ahead of the oldest
 * one held. A Map keyed by sequence number rehashes whenever its size swings (it shrinks below a
 * quarter full), which pipelined answers spread over several nodes make it do all the time.
 */
export class EarlyAnswers {
  private slots: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(16).fill(undefined);
  /** The sequence number of each slot's answer (meaningful only where the slot holds one). */
  private seqs: number[] = new Array<number>(16).fill(0);
  private count = 0;
  private held = 0;

  /** Answers held. */
  get size(): number {
    return this.count;
  }

  /** Bytes of the answers held: they count against the connection's output bound. */
  get bytes(): number {
    return this.held;
  }

  /** Holds `bytes`, the answer of `seq`; `head` is the next answer to write (`head < seq`). */
  set(seq: number, bytes: Uint8Array, head: number): void {
    while (seq - head >= this.slots.length) this.grow();
    const slot = seq & (this.slots.length - 1);
    const previous = this.slots[slot];
    if (previous === undefined) this.count++;
    else this.held -= previous.length;
    this.held += bytes.length;
    this.slots[slot] = bytes;
    this.seqs[slot] = seq;
  }

  /** Removes and returns the answer of `seq`, if held. */
  take(seq: number): Uint8Array | undefined {
    const slot = seq & (this.slots.length - 1);
    const bytes = this.slots[slot];
    if (bytes === undefined || this.seqs[slot] !== seq) return undefined;
    this.slots[slot] = undefined;
    this.count--;
    this.held -= bytes.length;
    return bytes;
  }

  /** Whether the answer of `seq` is held. */
  has(seq: number): boolean {
    const slot = seq & (this.slots.length - 1);
    return this.slots[slot] !== undefined && this.seqs[slot] === seq;
  }

  /** Drops every answer. */
  clear(): void {
    this.slots.fill(undefined);
    this.count = 0;
    this.held = 0;
  }

  /**
   * Doubles the ring, keeping every answer: all lie within one old ring's length from the head
   * (each was, when set, and the head only moves past answers taken), so none collide.
   */
  private grow(): void {
    const old = this.slots;
    const oldSeqs = this.seqs;
    const length = old.length * 2;
    this.slots = new Array<Uint8Array | undefined>(length).fill(undefined);
    this.seqs = new Array<number>(length).fill(0);
    for (let index = 0; index < old.length; index++) {
      const bytes = old[index];
      if (bytes === undefined) continue;
      const seq = oldSeqs[index]!;
      this.slots[seq & (length - 1)] = bytes;
      this.seqs[seq & (length - 1)] = seq;
    }
  }
}

/** How long a connection closed by us waits for the client to close its side before destroying it. */
const END_GRACE_MS = 2000;

/**
 * One client on the RESP port: parses its commands, hands them to the runner in order, and writes
 * the answers in command order even when they complete out of order (pipelined commands on
 * different nodes). An answer that completes ahead of its turn is encoded into a side buffer and
 * released when its turn comes; in-order answers go straight to the output buffer, flushed once
 * per tick. At most `maxInFlight` commands (and `maxServingBytes` of large ones) wait for answers:
 * past that, reading stops until they drain, so a pipelining client is slowed down rather than
 * buffered without bound.
 */
export class RespConnection
  extends EventEmitter<{ close: [] }>
  implements ServedConnection, RespCommandSink, RespReplyTarget, Sweepable
{
  /** This connection's id (CLIENT ID, HELLO's `id`). */
  readonly id: number;
  /** The name set by CLIENT SETNAME or HELLO SETNAME. */
  name: Uint8Array | undefined;
  /** Who the connection acts as; undefined until authenticated (or admitted anonymously). */
  identity: RespIdentity | undefined;
  /** AUTHs refused on this connection (it is closed after a few: see `resp/auth.ts`). */
  authFailures = 0;
  /** MULTI's queued commands and WATCH's keys (see `transaction.ts`). */
  readonly transaction = new ConnectionTransaction();
  /** The writer of in-order answers; its `version` is the connection's RESP version. */
  private readonly writer: RespWriter;
  private readonly output = new OutputBuffer();
  /** Answers that completed ahead of their turn are encoded here, then held by sequence number. */
  private readonly sideOutput = new OutputBuffer();
  private readonly sideWriter = new RespWriter(this.sideOutput);
  private readonly early = new EarlyAnswers();
  /** One large answer assembled at a time, while the client reads its answers (see {@link LargeAnswerTurns}). */
  readonly largeAnswers = new LargeAnswerTurns(
    () => this.bufferedOutputBytes < this.options.maxOutputBytes / 2,
  );
  /** The expected size of this connection's next answers (see {@link answersOverHalf}). */
  private readonly answerSizes = new AnswerSizes();
  /** Where the in-order answer being written began in {@link output}. */
  private replyStart = 0;
  private readonly parser: RespParser;
  /** Sequence number of the next command read, and of the next answer to write. */
  private nextSeq = 0;
  private headSeq = 0;
  /** Commands parsed while dispatching was held (reading paused, or an AUTH being checked). */
  private deferred: DeferredItem[] = [];
  private readingPaused = false;
  /** Each key's commands in flight, so that one of another kind waits for them (see {@link KeyOrder}). */
  private readonly keyOrder = new KeyOrder();
  /** The next command waits for commands of its keys in flight ({@link keyOrder}): dispatch stops. */
  private orderBlocked = false;
  /** Bytes of the large commands in flight, by sequence number, against `options.maxServingBytes`. */
  private readonly servingBytes: ServingBytes;
  /**
   * When the command partly received started arriving (`performance.now()`), -1 when none is;
   * checked by the shared sweeper (no timer per command) while {@link swept}.
   */
  private partialSince = -1;
  /** Commands completed so far (refused ones too): tells whether a chunk completed one. */
  private commandsReceived = 0;
  private readonly frameTimeoutMs: number;
  private readonly sweeper: DeadlineSweeper;
  /** Registered with the sweeper: only while a command is partly received. */
  private swept = false;
  /** Dispatching waits while an AUTH or HELLO AUTH is being verified: later commands need its outcome. */
  private held = false;
  /** The client shut its side: once the commands it sent are dispatched, the connection closes. */
  private inputEnded = false;
  private flushScheduled = false;
  private closing = false;
  private closed = false;
  private closeTimer: NodeJS.Timeout | undefined;
  /** What the router answers through: it calls `reply`/`replyError` with the command's sequence number as id. */
  readonly routerTarget: Replier;

  constructor(
    readonly socket: Socket,
    id: number,
    private readonly runner: RespCommandRunner,
    private readonly options: RespConnectionOptions,
  ) {
    super();
    this.id = id;
    this.writer = new RespWriter(this.output);
    this.servingBytes = new ServingBytes(options.maxServingBytes ?? 0);
    this.frameTimeoutMs = options.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS;
    this.sweeper = options.sweeper ?? sharedSweeper;
    // Before authentication (users configured, no identity yet, no AUTH being checked) commands
    // are held to Redis's pre-AUTH limits; an AUTH pipelined before them lifts the limits, as
    // Redis, which runs the AUTH before it reads on.
    const required = options.authRequired;
    this.parser = new RespParser(
      required === undefined
        ? options.parser
        : { ...options.parser, preAuth: () => this.identity === undefined && !this.held && required() },
      this,
    );
    this.routerTarget = {
      reply: (response) => this.replyResponse(response),
      replyError: (seq, code, message) => this.replyError(seq, respErrorLine(code, message)),
      // This connection's share of the node links, whichever replier its commands answer through.
      linkShare: [],
    };
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('timeout', () => this.destroy());
    socket.on('error', () => this.finish());
    socket.on('close', () => this.finish());
    // A client that shut its side sends nothing more; what it sent is still answered, including
    // commands waiting for the in-flight bound.
    socket.on('end', () => {
      this.inputEnded = true;
      this.closeWhenDispatched();
    });
  }

  /** The RESP version answers are encoded in (2 until HELLO 3). */
  get version(): 2 | 3 {
    return this.writer.version;
  }

  set version(version: 2 | 3) {
    this.writer.version = version;
    this.sideWriter.version = version;
  }

  /** Commands read and not answered yet. */
  get inFlight(): number {
    return this.nextSeq - this.headSeq;
  }

  /** Bytes of answers waiting to be written, here and in the socket. */
  get bufferedOutputBytes(): number {
    return this.output.length + this.socket.writableLength;
  }

  /** Closes after `ms` without traffic (0: never). */
  setIdleTimeout(ms: number): void {
    this.socket.setTimeout(ms);
  }

  /**
   * Starts the answer of command `seq`: the returned writer takes exactly one reply, then
   * {@link endReply}. In-order answers are written in place, early ones aside.
   */
  beginReply(seq: number): RespWriter {
    if (seq !== this.headSeq) return this.sideWriter;
    this.replyStart = this.output.length;
    return this.writer;
  }

  /** Ends the answer of `seq` started by {@link beginReply}; releases the answers it was holding up. */
  endReply(seq: number): void {
    this.servingBytes.answered(seq);
    const released = this.keyOrder.answered(seq);
    if (this.closed) {
      // Answers arriving after the client left are dropped (the side buffer is not kept either).
      if (seq !== this.headSeq) this.sideOutput.takeView();
      return;
    }
    if (seq !== this.headSeq) {
      const answer = this.sideOutput.takeView();
      this.answerSizes.note(answer.length);
      this.early.set(seq, answer, this.headSeq);
      // Answers held behind a slow one count as output: past half the bound, reading stops until
      // they leave; past the bound the client is dropped, as when it leaves written answers
      // unread (an attacker's MGETs of large values behind one slow command held them all).
      if (this.early.bytes + this.bufferedOutputBytes > this.options.maxOutputBytes) {
        this.destroy();
        return;
      }
      if (!this.readingPaused && this.answersOverHalf()) this.applyBackPressure();
    } else {
      this.answerSizes.note(this.output.length - this.replyStart);
      this.headSeq++;
      while (this.early.size > 0) {
        const next = this.early.take(this.headSeq);
        if (next === undefined) break;
        this.writer.raw(next);
        this.headSeq++;
      }
      this.scheduleFlush();
    }
    if (released && this.orderBlocked) {
      // The command waiting for this one's keys may go now (or waits for the next answer).
      this.orderBlocked = false;
      // The started command's deadline restarts: the client could not send while we did not read.
      if (this.partialSince >= 0) this.partialSince = performance.now();
      this.dispatchDeferred();
    }
  }

  /** Answers `seq` with an error line (`PREFIX message`). */
  replyError(seq: number, line: string): void {
    this.beginReply(seq).error(line);
    this.endReply(seq);
  }

  /** Answers `seq` with `+OK`. */
  replyOk(seq: number): void {
    this.beginReply(seq).ok();
    this.endReply(seq);
  }

  /** Holds the commands after the current one until {@link release} (an AUTH being verified). */
  hold(): void {
    this.held = true;
    // Reading stops too: a client must not queue commands without bound behind a slow AUTH.
    this.socket.pause();
  }

  /** Resumes dispatching after {@link hold}. */
  release(): void {
    this.held = false;
    // The started command's deadline restarts: the client could not send while we held reading.
    if (this.partialSince >= 0) this.partialSince = performance.now();
    this.dispatchDeferred();
  }

  /** A command parsed from the stream. */
  command(args: Uint8Array[]): void {
    this.commandsReceived++;
    if (this.closing) return;
    if (this.readingPaused || this.held || this.orderBlocked || this.deferred.length > 0)
      this.deferred.push(args);
    else if (!this.runInOrder(args)) this.deferred.push(args);
  }

  /**
   * Runs `args` unless it must wait for commands of its keys in flight (see {@link KeyOrder}):
   * then dispatch stops, and reading with it, until one of them is answered; false.
   */
  private runInOrder(args: Uint8Array[]): boolean {
    const order = this.runner.orderOf(this, args);
    if (order !== undefined && this.keyOrder.mustWait(order)) {
      this.orderBlocked = true;
      this.socket.pause();
      return false;
    }
    this.runCommand(args, order);
    return true;
  }

  /**
   * Runs one command in its turn. A handler that throws (a bug) must not take the process down
   * from inside a socket event: its command is answered with the error instead.
   */
  private runCommand(args: Uint8Array[], order: OrderedCommand | undefined): void {
    const seq = this.nextSeq++;
    // Counted before it runs: an answer given synchronously uncounts it at once.
    if (order !== undefined) this.keyOrder.start(seq, order);
    // Counted before it runs: an answer given synchronously (a refusal) uncounts it at once.
    if (this.servingBytes.bounded) this.countLarge(seq, args);
    try {
      this.runner.run(this, args, seq);
    } catch (error) {
      if (seq >= this.headSeq && !this.early.has(seq)) {
        this.replyError(seq, `ERR INTERNAL: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    if (
      (this.inFlight >= this.options.maxInFlight ||
        this.servingBytes.shouldPause ||
        this.answersOverHalf()) &&
      !this.readingPaused
    ) {
      // A bound is reached: what the current chunk still holds waits in `deferred`.
      this.readingPaused = true;
      this.socket.pause();
    }
  }

  /**
   * Whether the answers this connection holds (written and unread, held aside for their turn, a
   * large one being assembled) and those its commands in flight are expected to bring (the recent
   * answer size each) reach half the output bound: then no more commands are sent. Without the
   * expected part, a client pipelining reads of large values had 1024 of them fetched at once,
   * far past the output bound, and a client reading them a little slower was then dropped.
   */
  private answersOverHalf(): boolean {
    const held = this.early.bytes + this.largeAnswers.bytes + this.bufferedOutputBytes;
    return this.answerSizes.over(this.inFlight, held, this.options.maxOutputBytes / 2);
  }

  /**
   * Counts command `seq` against `maxServingBytes` when its arguments make it large (the rule is
   * {@link ServingBytes.add}'s); its bytes no longer count once answered ({@link endReply}: its
   * arguments are no longer held).
   */
  private countLarge(seq: number, args: Uint8Array[]): void {
    let bytes = 0;
    for (const arg of args) bytes += arg.length;
    this.servingBytes.add(seq, bytes);
  }

  /** A command skipped for going over a limit: its turn gets `-ERR message`. */
  refused(message: string): void {
    this.commandsReceived++;
    if (this.closing) return;
    if (this.readingPaused || this.held || this.orderBlocked || this.deferred.length > 0)
      this.deferred.push(message);
    else this.replyError(this.nextSeq++, `ERR ${message}`);
  }

  /** Closes gracefully: reads nothing more, writes every answer owed, then ends the socket. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.once('close', () => resolve()));
    if (!this.closing) {
      this.closing = true;
      this.deferred = [];
      this.socket.pause();
      this.endWhenAnswered();
    }
    return done;
  }

  /** Closes at once. */
  destroy(): void {
    if (this.closed) return;
    this.socket.destroy();
    this.finish();
  }

  private receive(chunk: Buffer): void {
    if (this.closing || this.closed) return;
    const commandsBefore = this.commandsReceived;
    try {
      this.parser.push(chunk);
    } catch (error) {
      if (!(error instanceof RespProtocolError)) throw error;
      this.protocolError(error.message);
      return;
    }
    if (!this.parser.hasPartialCommand) this.partialSince = -1;
    else if (this.partialSince < 0 || this.commandsReceived !== commandsBefore) {
      // The command left partly received began in this chunk when the chunk completed another:
      // its deadline counts from now (timed from the first partial command of a burst, a client
      // pipelining large commands in time was dropped after the frame timeout).
      this.partialSince = performance.now();
      if (!this.swept) {
        this.swept = true;
        this.sweeper.add(this);
      }
    }
  }

  /**
   * The shared sweeper's check: a command started more than `frameTimeoutMs` ago and still not
   * complete fails the stream. Not while reading is paused or held: the stall is then ours.
   */
  sweep(now: number): void {
    if (
      this.partialSince >= 0 &&
      !this.readingPaused &&
      !this.held &&
      !this.closing &&
      now - this.partialSince > this.frameTimeoutMs
    ) {
      this.partialSince = -1;
      this.protocolError(new RespProtocolError(`command incomplete after ${this.frameTimeoutMs} ms`).message);
    }
    if (this.partialSince < 0 || this.closing) this.unwatch();
  }

  private unwatch(): void {
    if (!this.swept) return;
    this.swept = false;
    this.sweeper.delete(this);
  }

  /** Answers a protocol error in its turn, after the commands before it, then ends (as Redis). */
  private protocolError(message: string): void {
    this.socket.pause();
    if (this.readingPaused || this.held || this.orderBlocked || this.deferred.length > 0) {
      this.deferred.push({ protocolError: message });
    } else this.failStream(message);
  }

  /** Answers the protocol error in its turn and closes: nothing after it can be trusted. */
  private failStream(message: string): void {
    this.replyError(this.nextSeq++, `ERR ${message}`);
    void this.close();
  }

  private dispatchDeferred(): void {
    const queue = this.deferred;
    let next = 0;
    // An index rather than shift(): thousands of deferred commands must not cost O(n^2).
    while (
      next < queue.length &&
      !this.readingPaused &&
      !this.held &&
      !this.orderBlocked &&
      !this.closing &&
      this.deferred === queue
    ) {
      const item = queue[next++]!;
      if (typeof item === 'string') this.replyError(this.nextSeq++, `ERR ${item}`);
      else if (Array.isArray(item)) {
        // Still waiting for its keys' commands in flight: it stays first.
        if (!this.runInOrder(item)) next--;
      } else this.failStream(item.protocolError);
    }
    if (this.deferred === queue) this.deferred = next === queue.length ? [] : queue.slice(next);
    if (!this.closing && !this.readingPaused && !this.orderBlocked) this.socket.resume();
    this.closeWhenDispatched();
  }

  /** After the client's end of input, closes (gracefully) once every command it sent is dispatched. */
  private closeWhenDispatched(): void {
    if (this.inputEnded && this.deferred.length === 0 && !this.held) void this.close();
  }

  /**
   * Queues the flush that writes this tick's answers at its end. The output bounds (pause, cut off)
   * are checked there, once per tick rather than once per answer: they concern what the client
   * leaves unread across ticks, and within one tick answers are bounded by `maxInFlight`.
   */
  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      flushAtEndOfTick(this.endOfTick);
    }
  }

  /**
   * Pauses reading while too many commands (or bytes of large ones) wait or too many answer bytes
   * are unread; resumes once the commands waiting are down to half of either bound.
   */
  private applyBackPressure(): void {
    const over =
      this.inFlight >= this.options.maxInFlight || this.servingBytes.shouldPause || this.answersOverHalf();
    if (over && !this.readingPaused) {
      this.readingPaused = true;
      this.socket.pause();
    } else if (
      !over &&
      this.readingPaused &&
      this.inFlight <= this.options.maxInFlight / 2 &&
      this.servingBytes.mayResume &&
      !this.socket.writableNeedDrain
    ) {
      this.readingPaused = false;
      // The started command's deadline restarts: the client could not send while we did not read.
      if (this.partialSince >= 0) this.partialSince = performance.now();
      this.dispatchDeferred();
    }
    // The client read some answers: a large one waiting for room may be assembled.
    this.largeAnswers.grant();
  }

  /** The end-of-tick flush, made once so queueing it allocates nothing. */
  private readonly endOfTick: EndOfTickWriter = { flushBuffered: () => this.flush() };

  private flush(): void {
    this.flushScheduled = false;
    if (this.closed || this.output.length === 0 || this.socket.writableEnded) return;
    if (this.bufferedOutputBytes > this.options.maxOutputBytes) {
      // It sends but does not read: drop it rather than buffer its answers without bound.
      this.destroy();
      return;
    }
    this.socket.write(this.output.take());
    this.applyBackPressure();
    if (this.closing) this.endWhenAnswered();
  }

  private onDrain(): void {
    this.applyBackPressure();
  }

  private endWhenAnswered(): void {
    if (this.closed || this.inFlight > 0 || this.socket.writableEnded) return;
    if (this.output.length > 0) this.socket.write(this.output.take());
    this.socket.end();
    this.closeTimer = setTimeout(() => this.destroy(), END_GRACE_MS);
    this.closeTimer.unref();
  }

  /** Encodes a routed answer (a node's VALUE, OK, COUNT or VALUES) in the command's turn. */
  private replyResponse(response: Response): void {
    const seq = response.id;
    writeResponse(this.beginReply(seq), response);
    this.endReply(seq);
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.closing = true;
    this.deferred = [];
    this.early.clear();
    this.servingBytes.clear();
    this.largeAnswers.close();
    this.unwatch();
    if (this.closeTimer !== undefined) clearTimeout(this.closeTimer);
    if (!this.socket.destroyed) this.socket.destroy();
    this.emit('close');
  }
}

/** Writes a routed answer (a node's VALUE, OK, COUNT, INTEGER or VALUES) as Redis answers it. */
export function writeResponse(writer: RespWriter, response: Response): void {
  switch (response.op) {
    case Op.VALUE:
      writer.bulk(response.value);
      break;
    case Op.OK:
      writer.ok();
      break;
    case Op.COUNT:
      writer.integer(response.count);
      break;
    case Op.INTEGER:
      writer.integer(response.value);
      break;
    case Op.VALUES:
      writer.array(response.values.length);
      for (const value of response.values) writer.bulk(value);
      break;
    default:
      writer.error(`ERR unexpected answer (op ${response.op}) from a node`);
  }
}
