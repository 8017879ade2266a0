import { FRAME_HEADER_BYTES } from './frame-decoder.js';

const SLAB_BYTES = 64 * 1024;

/**
 * Collects the frames written during one tick so they leave in a single `socket.write()`.
 * Frames are appended into a slab; `take()` hands the socket a view of the bytes since the last
 * take and never writes over them again, so a new slab is allocated only every ~64 KiB of
 * output rather than once per flush.
 */
export class OutputBuffer {
  private slab = Buffer.allocUnsafe(SLAB_BYTES);
  private start = 0;
  private end = 0;

  /** Bytes appended and not yet taken. */
  get length(): number {
    return this.end - this.start;
  }

  /** Appends one frame: the 4-byte big-endian length, then `body` (copied). */
  appendFrame(body: Uint8Array): void {
    const needed = FRAME_HEADER_BYTES + body.length;
    if (this.end + needed > this.slab.length) this.moveToNewSlab(needed);
    this.slab.writeUInt32BE(body.length, this.end);
    this.slab.set(body, this.end + FRAME_HEADER_BYTES);
    this.end += needed;
  }

  /**
   * Appends the header of a frame of `bodyBytes` and reserves its body, which the caller writes
   * into {@link bytes} from the returned offset before anything else is appended (no copy: the
   * codec's hand writer encodes straight into the slab).
   */
  reserveFrame(bodyBytes: number): number {
    const needed = FRAME_HEADER_BYTES + bodyBytes;
    if (this.end + needed > this.slab.length) this.moveToNewSlab(needed);
    this.slab.writeUInt32BE(bodyBytes, this.end);
    const at = this.end + FRAME_HEADER_BYTES;
    this.end += needed;
    return at;
  }

  /**
   * Reserves `byteCount` bytes with no frame header (protocols with their own framing, such as
   * RESP); the caller fills {@link bytes} from the returned offset before appending anything else.
   */
  reserve(byteCount: number): number {
    if (this.end + byteCount > this.slab.length) this.moveToNewSlab(byteCount);
    const at = this.end;
    this.end += byteCount;
    return at;
  }

  /** Appends `body` (copied) with no frame header. */
  append(body: Uint8Array): void {
    // Reserve first: it may move to a new slab, and `this.slab` must be read after that.
    const at = this.reserve(body.length);
    this.slab.set(body, at);
  }

  /** Appends `text` as latin1 (one byte per character) with no frame header. */
  appendLatin1(text: string): void {
    const at = this.reserve(text.length);
    this.slab.write(text, at, 'latin1');
  }

  /** The slab {@link reserveFrame}'s offsets point into (replaced when it fills up). */
  get bytes(): Uint8Array {
    return this.slab;
  }

  /** Returns the pending bytes; the caller owns them from now on. */
  take(): Buffer {
    const pending = this.slab.subarray(this.start, this.end);
    this.start = this.end;
    return pending;
  }

  /**
   * {@link take} as a plain `Uint8Array` view, for bytes that are copied elsewhere rather than
   * written to a socket: a Buffer's subarray goes through a species constructor, measurably
   * slower than a plain view.
   */
  takeView(): Uint8Array {
    const pending = new Uint8Array(
      this.slab.buffer,
      this.slab.byteOffset + this.start,
      this.end - this.start,
    );
    this.start = this.end;
    return pending;
  }

  private moveToNewSlab(needed: number): void {
    const pending = this.end - this.start;
    // Grow geometrically: sizing the slab to just fit would re-copy everything pending for every
    // later frame of a large burst (quadratic; 16k tiny error replies took seconds).
    const next = Buffer.allocUnsafe(Math.max(SLAB_BYTES, 2 * (pending + needed)));
    this.slab.copy(next, 0, this.start, this.end);
    this.slab = next;
    this.start = 0;
    this.end = pending;
  }
}

/** A connection whose buffered output goes to its socket at the end of the tick. */
export interface EndOfTickWriter {
  /** Writes what was buffered during the tick (one `socket.write()`). */
  flushBuffered(): void;
}

/**
 * Most rounds of {@link EndOfTickQueue.flushAll} for writers queued by other writers' flushes;
 * any left after them wait for the next immediate (a writer that keeps queueing itself cannot
 * hold the event loop).
 */
const MAX_FLUSH_ROUNDS = 4;

/**
 * Writers to flush at the end of the tick, all on one `setImmediate`: one immediate per tick
 * rather than one per connection (each costs an object and a microtask checkpoint, and at one
 * request in flight per connection that is one per request). The process uses one queue
 * ({@link flushAtEndOfTick}).
 *
 * A writer queued while the queue flushes (a replication stream's flush writes its frame into a
 * connection, which queues that connection) is flushed in the same pass, not on the next
 * immediate: the frame leaves in this turn of the event loop instead of the next one.
 *
 * Writers that write frames into connections (replication streams: {@link add}'s `first`) are
 * flushed before the connections of each round, so their frames join what the connection
 * buffered during the tick (answers to the same peer) in the connection's one write, rather than
 * a second write after the connection flushed its answers.
 */
export class EndOfTickQueue {
  private queued: EndOfTickWriter[] = [];
  /** Writers flushed before {@link queued} in each round (they write into connections). */
  private queuedFirst: EndOfTickWriter[] = [];
  /** The lists flushed last time, reused for the next tick's writers (no array per tick). */
  private spare: EndOfTickWriter[] = [];
  private spareFirst: EndOfTickWriter[] = [];
  private scheduled = false;
  private flushing = false;
  private readonly run = (): void => this.flushAll();

  /**
   * Queues `writer` for this tick's end; with `first`, before the writers queued without it (a
   * writer that writes into connections). The caller queues a writer at most once per tick.
   */
  add(writer: EndOfTickWriter, first = false): void {
    if (first) this.queuedFirst.push(writer);
    else this.queued.push(writer);
    if (!this.scheduled && !this.flushing) {
      this.scheduled = true;
      setImmediate(this.run);
    }
  }

  /**
   * Flushes every queued writer, the `first` ones first, in order, then those they queued
   * meanwhile (up to {@link MAX_FLUSH_ROUNDS} rounds); any left wait for the next immediate.
   */
  flushAll(): void {
    this.scheduled = false;
    this.flushing = true;
    try {
      for (let round = 0; round < MAX_FLUSH_ROUNDS && this.pending; round++) {
        if (this.queuedFirst.length > 0) this.flushRound(true);
        if (this.queued.length > 0) this.flushRound(false);
      }
    } finally {
      this.flushing = false;
      if (this.pending && !this.scheduled) {
        this.scheduled = true;
        setImmediate(this.run);
      }
    }
  }

  private get pending(): boolean {
    return this.queued.length > 0 || this.queuedFirst.length > 0;
  }

  private flushRound(first: boolean): void {
    const writers = first ? this.queuedFirst : this.queued;
    if (first) this.queuedFirst = this.spareFirst;
    else this.queued = this.spare;
    let next = 0;
    try {
      while (next < writers.length) writers[next++]!.flushBuffered();
    } finally {
      // A throwing flush (a bug) must not strand the writers after it: they go out next time.
      const rest = first ? this.queuedFirst : this.queued;
      for (let index = next; index < writers.length; index++) rest.push(writers[index]!);
      writers.length = 0;
      if (first) this.spareFirst = writers;
      else this.spare = writers;
    }
  }
}

const processQueue = new EndOfTickQueue();

/**
 * Calls `writer.flushBuffered()` once at the end of this tick, together with every other writer
 * queued in the tick (see {@link EndOfTickQueue}); with `first`, before the writers queued
 * without it (a writer whose flush writes frames into connections). The caller keeps its own
 * "scheduled" flag, cleared when `flushBuffered` runs, so it queues itself at most once per tick.
 */
export function flushAtEndOfTick(writer: EndOfTickWriter, first = false): void {
  processQueue.add(writer, first);
}
