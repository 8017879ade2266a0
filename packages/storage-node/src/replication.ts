import {
  type Connection,
  DEFAULT_LIMITS,
  DstoreError,
  ErrorCode,
  Op,
  type ProtocolLimits,
  type ReplicatedEntry,
  type ReplicateRequest,
  type Response,
} from '@dstore/protocol';
import type {
  Decision,
  StorageEngine,
  UpdateOptions,
  VersionedEntry,
  VersionedValue,
} from './engines/index.js';
import type { Ownership } from './ownership.js';
import type { PeerLinks } from './peer-links.js';

/** Called once when a forward is answered: `error` undefined when the chain's tail has its writes. */
export type ForwardWaiter = (error: DstoreError | undefined) => void;

/** Bounds of replication (see the storage-node README, "Replication (experimental)"). */
export interface ReplicationOptions {
  /** Most bytes of keys and values one link holds unacknowledged; past it the head refuses writes (BUSY). */
  readonly queueBytes: number;
  /** Deadline of one REPLICATE, in ms. */
  readonly timeoutMs: number;
  /** The node's protocol limits: a REPLICATE frame stays within `maxFrameBytes` and `maxBatchKeys`. */
  readonly limits?: Partial<ProtocolLimits> | undefined;
}

/** Counters of replication (STATS `replication.*`). */
export interface ReplicationCounters {
  /** REPLICATE frames sent to successors. */
  batchesSent: number;
  /** Entries sent in them. */
  entriesSent: number;
  /** REPLICATE frames whose forward failed or timed out (their writes are indeterminate). */
  batchesFailed: number;
  /** Entries received from a predecessor and stored (newer than the local entry). */
  entriesApplied: number;
  /** Entries received and skipped (the local entry was as new: a batch sent again). */
  entriesSkipped: number;
  /** Client writes refused with BUSY because their link held `queueBytes` already. */
  refusedBusy: number;
}

/** Bytes an entry counts for in a frame and in the queue bound beyond its key and value. */
const ENTRY_OVERHEAD = 32;
/** Room kept in a frame for REPLICATE's own fields. */
const FRAME_HEADROOM = 4096;
const NO_VALUE = new Uint8Array(0);

/**
 * The writes of one tick towards one successor: one REPLICATE frame. Settled once, in link order
 * (see {@link ForwardLink}), so a waiter on a batch knows every earlier batch of the link is
 * settled too.
 */
class ForwardBatch {
  readonly entries: ReplicatedEntry[] = [];
  bytes = 0;
  /** Answered (undefined) or failed (the error); unset while in flight. */
  outcome: DstoreError | undefined | null = null;
  settled = false;
  private waiters: ForwardWaiter[] = [];

  /** Calls `waiter` once the batch is settled (at once when it is). */
  whenSettled(waiter: ForwardWaiter): void {
    if (this.settled) waiter(this.outcome ?? undefined);
    else this.waiters.push(waiter);
  }

  settle(): void {
    this.settled = true;
    const waiters = this.waiters;
    this.waiters = [];
    const error = this.outcome ?? undefined;
    for (const waiter of waiters) waiter(error);
  }
}

/**
 * One node's forward queue towards one successor: the batches not yet answered, in order. Every
 * write appended in a tick goes out in one REPLICATE on `setImmediate` (more only when a frame's
 * limits are reached); answers settle the batches strictly in order, so the answer of batch b
 * releases its waiters only after every earlier batch of the link is settled.
 */
class ForwardLink {
  /** Bytes of keys and values held until answered: the queue bound. */
  bytes = 0;
  private filling: ForwardBatch | undefined;
  /** Batches created and not settled yet, oldest first (sent or about to be). */
  private readonly unsettled: ForwardBatch[] = [];
  /** Batches waiting to be sent (the tick has not ended, or the connection is opening). */
  private readonly toSend: ForwardBatch[] = [];
  private scheduled = false;
  private connection: Connection | undefined;
  private connecting = false;
  private nextBatch = 1;

  constructor(
    readonly successor: string,
    /** The sender's position in the chains of this stream's entries (0: head). */
    readonly position: number,
    private readonly service: ReplicationService,
  ) {}

  /** Appends a write to this tick's batch; returns the batch whose answer covers it. */
  append(entry: ReplicatedEntry): ForwardBatch {
    const size = entry.key.byteLength + (entry.value?.byteLength ?? 0) + ENTRY_OVERHEAD;
    let batch = this.filling;
    if (
      batch !== undefined &&
      (batch.entries.length >= this.service.maxBatchKeys || batch.bytes + size > this.service.maxBatchBytes)
    ) {
      batch = undefined;
    }
    if (batch === undefined) {
      batch = new ForwardBatch();
      this.filling = batch;
      this.unsettled.push(batch);
      this.toSend.push(batch);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    }
    batch.entries.push(entry);
    batch.bytes += size;
    this.bytes += size;
    return batch;
  }

  /** The newest batch not settled yet: a write that changed nothing waits for it (it saw its writes). */
  last(): ForwardBatch | undefined {
    return this.unsettled[this.unsettled.length - 1];
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    this.filling = undefined;
    const connection = this.connection;
    if (connection?.isOpen === true) {
      this.sendAll(connection);
      return;
    }
    this.connection = undefined;
    if (this.connecting) return;
    this.connecting = true;
    this.service.peers.get(this.successor).then(
      (opened) => {
        this.connecting = false;
        this.connection = opened;
        this.sendAll(opened);
      },
      (error: unknown) => {
        this.connecting = false;
        const failure =
          error instanceof DstoreError
            ? error
            : new DstoreError(
                ErrorCode.CONNECTION_CLOSED,
                `cannot reach ${this.successor}: ${String(error)}`,
              );
        for (const batch of this.toSend.splice(0)) this.answered(batch, failure);
      },
    );
  };

  private sendAll(connection: Connection): void {
    // Whatever is sent is closed: a later write of this tick starts the next batch.
    this.filling = undefined;
    const epoch = this.service.epoch;
    for (const batch of this.toSend.splice(0)) {
      const number = this.nextBatch++;
      const refusal = connection.requestWith(
        { op: Op.REPLICATE, epoch, batch: number, entries: batch.entries },
        (error, response) => this.answered(batch, error ?? unexpected(response, number)),
        this.service.timeoutMs,
      );
      if (refusal !== undefined) this.answered(batch, refusal);
      else {
        this.service.counters.batchesSent++;
        this.service.counters.entriesSent += batch.entries.length;
      }
    }
  }

  private answered(batch: ForwardBatch, error: DstoreError | undefined): void {
    if (error !== undefined) {
      this.service.counters.batchesFailed++;
      // A link that failed is reopened for the next batch (a TIMEOUT may hide a dead socket).
      if (this.connection !== undefined) {
        this.service.peers.drop(this.successor);
        this.connection = undefined;
      }
    }
    batch.outcome = error === undefined ? undefined : indeterminate(error, this.successor);
    this.bytes -= batch.bytes;
    // In link order: a batch settles only once every earlier one has.
    while (this.unsettled.length > 0 && this.unsettled[0]!.outcome !== null) {
      (this.unsettled.shift() as ForwardBatch).settle();
    }
  }
}

/** A REPLICATED answer with the right batch, or the error of anything else. */
function unexpected(response: Response | undefined, batch: number): DstoreError | undefined {
  if (response?.op === Op.REPLICATED && response.batch === batch) return undefined;
  return new DstoreError(ErrorCode.INTERNAL, `REPLICATE ${batch} answered with op ${response?.op}`);
}

/**
 * The failure a parked write gets: its head executed it, so whatever the forward's failure, the
 * outcome is indeterminate (the write may be on some members), never "not executed".
 */
function indeterminate(error: DstoreError, successor: string): DstoreError {
  if (error.code === ErrorCode.TIMEOUT || error.code === ErrorCode.CONNECTION_CLOSED) {
    return new DstoreError(error.code, `replication to ${successor} failed: ${error.message}`, {
      cause: error,
      notExecuted: false,
    });
  }
  return new DstoreError(
    ErrorCode.CONNECTION_CLOSED,
    `replication to ${successor} failed (${error.code}): ${error.message}; the write may be on some replicas`,
    { cause: error, notExecuted: false },
  );
}

/** Calls `done` once every batch of `batches` is settled, with the first failure if any. */
function whenAll(batches: readonly ForwardBatch[], done: ForwardWaiter): void {
  let left = batches.length;
  if (left === 0) {
    done(undefined);
    return;
  }
  let failure: DstoreError | undefined;
  const one = (error: DstoreError | undefined): void => {
    failure ??= error;
    if (--left === 0) done(failure);
  };
  for (const batch of batches) batch.whenSettled(one);
}

/**
 * Chain replication on a storage node (experimental; only with a map whose replication factor is
 * above 1): the forward queues towards this node's successors, the head's write path (execute,
 * forward the resulting entry, answer once the forward is answered) and the middle and tail's
 * REPLICATE (apply if newer, forward, answer once the own forward is answered). See
 * docs/design/replication.md, step 2.
 */
export class ReplicationService {
  /** Counters for STATS. */
  readonly counters: ReplicationCounters = {
    batchesSent: 0,
    entriesSent: 0,
    batchesFailed: 0,
    entriesApplied: 0,
    entriesSkipped: 0,
    refusedBusy: 0,
  };
  /** Most entries in one REPLICATE. */
  readonly maxBatchKeys: number;
  /** Most bytes of keys and values (with {@link ENTRY_OVERHEAD} each) in one REPLICATE. */
  readonly maxBatchBytes: number;
  private readonly links = new Map<string, ForwardLink>();

  constructor(
    private readonly engine: StorageEngine,
    private readonly ownership: Ownership,
    /** The node's peer links (shared with PULL). */
    readonly peers: PeerLinks,
    private readonly options: ReplicationOptions,
  ) {
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.maxBatchKeys = limits.maxBatchKeys;
    this.maxBatchBytes = limits.maxFrameBytes - FRAME_HEADROOM;
  }

  /** Deadline of one REPLICATE, in ms. */
  get timeoutMs(): number {
    return this.options.timeoutMs;
  }

  /** The epoch forwards are sent on: this node's. */
  get epoch(): number {
    return this.ownership.epoch;
  }

  /** Bytes held unacknowledged over every link (STATS). */
  get queuedBytes(): number {
    let bytes = 0;
    for (const link of this.links.values()) bytes += link.bytes;
    return bytes;
  }

  /**
   * This node's successor in `key`'s serving chain, or undefined when it is the tail (or not in
   * the chain, or no map with a factor above 1 arrived).
   */
  successorOf(key: Uint8Array): string | undefined {
    const chain = this.ownership.chainOf(key);
    if (chain === undefined) return undefined;
    const serving = chain.serving;
    const at = serving.indexOf(this.ownership.self);
    return at < 0 || at + 1 >= serving.length ? undefined : serving[at + 1];
  }

  /**
   * The forward stream towards `successor` for the entries of chains where this node is at
   * `position`. One stream per (successor, position), not per successor: an answer waits for the
   * successor's own forwards, so a batch mixing the entries of a head (whose successor forwards
   * them) with those of a middle (whose successor is their tail) would make answers wait on each
   * other around the ring and deadlock. Separated, a stream's answer depends only on streams of
   * later positions, which end at the tail.
   */
  private linkTo(successor: string, position: number): ForwardLink {
    const name = `${position} ${successor}`;
    let link = this.links.get(name);
    if (link === undefined) {
      link = new ForwardLink(successor, position, this);
      this.links.set(name, link);
    }
    return link;
  }

  /**
   * A client write at the head: `decide` runs in one engine step (`StorageEngine.update`) as with
   * factor 1; the entry it leaves (a value, an expiry change with the value, or a delete) is
   * appended to the link towards the key's successor, and `done` is called once that link's forward is
   * answered (the tail has it) or failed. A decision that writes nothing waits for the link's
   * newest batch (it may have seen its writes). `key` and any value `decide` puts must be copies
   * the caller will not reuse: they are sent on a later tick. Refused with BUSY, before anything
   * runs, when the link holds its byte bound already.
   */
  write<T>(
    key: Uint8Array,
    options: UpdateOptions,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
    done: (error: unknown, result: T | undefined) => void,
  ): void {
    const successor = this.successorOf(key);
    if (successor === undefined) {
      // The chain has one serving member (this node): nothing to forward.
      let updated: Promise<T>;
      try {
        updated = this.engine.update(key, options, decide);
      } catch (error) {
        done(error, undefined);
        return;
      }
      updated.then(
        (result) => done(undefined, result),
        (error: unknown) => done(error, undefined),
      );
      return;
    }
    // The fence let this write in: this node is the head (position 0) of the key's chain.
    const link = this.linkTo(successor, 0);
    if (link.bytes >= this.options.queueBytes) {
      this.counters.refusedBusy++;
      done(
        new DstoreError(
          ErrorCode.BUSY,
          `replication to ${successor} holds ${link.bytes} bytes unacknowledged (limit ${this.options.queueBytes}): retry later`,
        ),
        undefined,
      );
      return;
    }
    const writeEpoch = options.writeEpoch;
    let batch: ForwardBatch | undefined;
    const recorded = (current: VersionedValue | undefined, now: number, version: number): Decision<T> => {
      const decision = decide(current, now, version);
      const mutation = decision.mutation;
      switch (mutation.kind) {
        case 'put':
          batch = link.append({
            key,
            value: mutation.value,
            writeEpoch,
            version,
            expireAt: mutation.expireAt,
          });
          break;
        case 'expire':
          batch =
            current === undefined
              ? link.last()
              : link.append({ key, value: current.value, writeEpoch, version, expireAt: mutation.expireAt });
          break;
        case 'delete':
          batch = link.append({ key, value: null, writeEpoch, version, expireAt: 0 });
          break;
        case 'none':
          batch = link.last();
          break;
      }
      return decision;
    };
    let updated: Promise<T>;
    try {
      updated = this.engine.update(key, options, recorded);
    } catch (error) {
      done(error, undefined);
      return;
    }
    updated.then(
      (result) => {
        if (batch === undefined) done(undefined, result);
        else batch.whenSettled((error) => done(error, result));
      },
      (error: unknown) => done(error, undefined),
    );
  }

  /**
   * REPLICATE from a predecessor: refused whole (STALE_EPOCH, NOT_OWNER) unless it was sent on this
   * node's epoch and this node follows someone in every entry's chain; else every entry is applied
   * if newer (one atomic engine write, in arrival order), forwarded to this node's successor in its
   * chain, and `done` is called once the apply is acknowledged (lmdb: flushed) and every forward is
   * answered: the tail answers after its apply alone.
   */
  replicate(request: ReplicateRequest, done: (error: unknown) => void): void {
    if (request.epoch !== this.ownership.epoch) {
      done(
        new DstoreError(
          ErrorCode.STALE_EPOCH,
          `REPLICATE sent on epoch ${request.epoch}, this node is at epoch ${this.ownership.epoch}`,
        ),
      );
      return;
    }
    const self = this.ownership.self;
    const entries = request.entries;
    const successors = new Array<string | undefined>(entries.length);
    const positions = new Array<number>(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const chain = this.ownership.chainOf(entries[i]!.key);
      const at = chain === undefined ? -1 : chain.serving.indexOf(self);
      if (chain === undefined || at <= 0) {
        done(
          new DstoreError(
            ErrorCode.NOT_OWNER,
            `REPLICATE of a key whose chain (${chain?.serving.join(', ') ?? 'none'}) has no predecessor of ${self}`,
          ),
        );
        return;
      }
      successors[i] = chain.serving[at + 1];
      positions[i] = at;
    }
    // Copied once: the engine stores them after this tick (lmdb) and the forward sends them later.
    const copies = new Array<VersionedEntry>(entries.length);
    const forwards: ForwardBatch[] = [];
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      const key = entry.key.slice();
      const value = entry.value === null ? null : entry.value.slice();
      copies[i] = {
        key,
        value: value ?? NO_VALUE,
        writeEpoch: entry.writeEpoch,
        version: entry.version,
        expireAt: entry.expireAt,
        deleted: value === null,
      };
      const successor = successors[i];
      if (successor === undefined) continue;
      const batch = this.linkTo(successor, positions[i]!).append({
        key,
        value,
        writeEpoch: entry.writeEpoch,
        version: entry.version,
        expireAt: entry.expireAt,
      });
      if (forwards[forwards.length - 1] !== batch && !forwards.includes(batch)) forwards.push(batch);
    }
    let applied: Promise<number>;
    try {
      applied = this.engine.applyIfNewer(copies);
    } catch (error) {
      done(error);
      return;
    }
    applied.then(
      (stored) => {
        this.counters.entriesApplied += stored;
        this.counters.entriesSkipped += entries.length - stored;
        whenAll(forwards, done);
      },
      (error: unknown) => done(error),
    );
  }
}
