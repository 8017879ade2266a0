import { type Chain, isLearnerState, type ReplicaState } from '@dstore/hashring';
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
import { backoffDelay, type EndOfTickWriter, flushAtEndOfTick } from '@dstore/protocol/internal';
import type {
  Decision,
  EvictionScope,
  ManyDecider,
  ManyUpdateOptions,
  Mutation,
  StorageEngine,
  UpdateOptions,
  VersionedEntry,
  VersionedValue,
} from './engines/index.js';
import { isExpired, StorageEngineError, writeEndAt } from './engines/index.js';
import type { NodeLease } from './membership.js';
import type { Ownership } from './ownership.js';
import type { PeerLinks } from './peer-links.js';

/** Called once when a forward is answered: `error` undefined when the chain's tail has its writes. */
export type ForwardWaiter = (error: DstoreError | undefined) => void;

/** Bounds of replication (see the storage-node README, "Replication"). */
export interface ReplicationOptions {
  /** Most bytes of keys and values one link holds unacknowledged; past it the head refuses writes (BUSY). */
  readonly queueBytes: number;
  /** Deadline of one REPLICATE, in ms. */
  readonly timeoutMs: number;
  /** The node's protocol limits: a REPLICATE frame stays within `maxFrameBytes` and `maxBatchKeys`. */
  readonly limits?: Partial<ProtocolLimits> | undefined;
  /** The node's lease: REPLICATE is accepted only while it is held. Omitted: not checked. */
  readonly lease?: NodeLease | undefined;
  /**
   * How long a replicated delete's tombstone is kept on a chain member before it is purged, in
   * ms. Default: the larger of 60 s and 10 replication timeouts (see {@link TombstoneReaper}).
   */
  readonly tombstoneTtlMs?: number | undefined;
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
  /** Client writes refused with UNAVAILABLE because their link was re-sending failed forwards. */
  refusedUnavailable: number;
  /** Entries sent again: kept after a failed forward, or re-routed on a new epoch (failover). */
  entriesResent: number;
  /** REPLICATE frames refused because their batch number left a gap in their stream. */
  gapsRefused: number;
  /** Tombstones of replicated deletes purged once their time to live passed. */
  tombstonesPurged: number;
  /** Wipes of every entry: this node became a learner (`syncing`) after being failed or restarted. */
  wipes: number;
  /** Client writes refused with BUSY because their chain is changing members (a promotion or a ring change drains it). */
  refusedPromoting: number;
  /** Client writes of values refused because a member of their chain is out of room (REPLICATED's `full`). */
  refusedFull: number;
  /** Evictions of this node's engine sent down their chains (this node heads their keys). */
  evictionsSent: number;
  /** Forwards refused whole by a member in transition whose waiters waited for the re-send (deferred). */
  batchesDeferred: number;
  /** Sends of a forward put off because the connection to the successor was full (output or requests in flight). */
  sendsWaited: number;
}

/** How often a drain (a RING promoting a learner) checks whether its writes are acknowledged. */
const DRAIN_POLL_MS = 10;
/** Delay before a wipe that failed (a storage error) is tried again; REPLICATE is refused meanwhile. */
const WIPE_RETRY_MS = 1000;

/**
 * While a successor reports a member out of room, how long the head refuses values of the stream
 * before it lets one through to learn whether room was freed (the answer to that probe decides).
 */
const FULL_PROBE_MS = 1000;

/** How soon a stream whose connection was full (output or requests in flight) tries to send again. */
const ROOM_RETRY_MS = 5;

/** Delays between sends of entries kept after failed forwards (the one backoff policy). */
const RESEND_BACKOFF = { initialDelayMs: 50, maxDelayMs: 1000 } as const;

/** Bytes an entry counts for in a frame and in the queue bound beyond its key and value. */
const ENTRY_OVERHEAD = 32;
/** Room kept in a frame for REPLICATE's own fields. */
const FRAME_HEADROOM = 4096;
const NO_VALUE = new Uint8Array(0);
/**
 * The expiry time an eviction is sent with (1 ms after the Unix epoch: long past). An eviction
 * goes down the chain as an expired copy, not as a delete: every member drops the key without a
 * tombstone (a tombstone per eviction, kept a minute, filled a cache of small values: 16 MiB
 * nodes went from 23,780 to 2,066 writes/s with `OUT_OF_MEMORY`), and a learner keeps one (see
 * {@link ReplicationService.replicate}).
 */
const EVICTED_AT = 1;

/**
 * The writes of one tick towards one successor: one REPLICATE frame. Settled once, in link order
 * (see {@link ForwardLink}), so a waiter on a batch knows every earlier batch of the link is
 * settled too, or failed (a deferred batch, settled by the re-send of its entries).
 */
class ForwardBatch {
  readonly entries: ReplicatedEntry[] = [];
  /** Creation order over every link of the node: a drain waits for the batches made before it. */
  readonly seq: number;
  /** When it was made (`performance.now()`): a deferred batch's bound counts from here. */
  readonly madeAt = performance.now();
  bytes = 0;
  /** Answered (undefined) or failed (the error); unset while in flight. */
  outcome: DstoreError | undefined | null = null;
  /** Answered with `full`: a member down the stream is past its client room. */
  full = false;
  settled = false;
  /** Taken off its link on a new epoch (its entries went to their new successors): answers are ignored. */
  rerouted = false;
  /** The connection it was sent on. */
  connection: Connection | undefined;
  /** For a batch of entries sent again after a failed forward: each entry's chain. */
  resentChains: string[] | undefined;
  /**
   * Refused whole by a member in transition (see {@link isTransitionalRefusal}): its waiters wait
   * for the re-send of its entries instead of the indeterminate error (its `outcome` meanwhile,
   * given when the re-send fails or takes too long, see {@link DeferredAnswers}).
   */
  deferred = false;
  /** While {@link deferred}: its entries not yet acknowledged by a re-send. */
  private awaiting = 0;
  private waiters: ForwardWaiter[] = [];

  constructor(seq: number) {
    this.seq = seq;
  }

  /** Calls `waiter` once the batch is settled (at once when it is). */
  whenSettled(waiter: ForwardWaiter): void {
    if (this.settled) waiter(this.outcome ?? undefined);
    else this.waiters.push(waiter);
  }

  /** Settles with `outcome` (a batch taken off its link, once its entries' new forwards settled). */
  settleWith(outcome: DstoreError | undefined): void {
    if (this.settled) return;
    this.outcome = outcome;
    this.settle();
  }

  /** Marks the batch deferred, `failure` its outcome should the re-send of its entries not settle it. */
  defer(failure: DstoreError): void {
    this.deferred = true;
    this.outcome = failure;
    this.awaiting = this.entries.length;
  }

  /**
   * The waiter of a re-send of `count` entries of this deferred batch: settles it once every entry
   * is acknowledged, or with the re-send's failure.
   */
  resentBy(count: number): ForwardWaiter {
    return (error) => {
      if (this.settled) return;
      if (error !== undefined) {
        this.settleWith(error);
        return;
      }
      this.awaiting -= count;
      if (this.awaiting <= 0) this.settleWith(undefined);
    };
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
 * The waiter of the re-send of one unit of kept entries (`start` to `end`), for the deferred
 * batches they came from, each credited with its own entries; undefined when none waits. A unit's
 * entries need not come from one batch: a write relayed twice (a predecessor's original forward
 * and its re-send after a transitional refusal) is kept twice, both copies with the same version,
 * and the two join one unit. Credited all to the first copy's batch, the other batch waited for
 * the bound (half the replication timeout) and the first could settle before the re-send of its
 * other entries was acknowledged.
 */
function resentByUnit(
  origins: readonly (ForwardBatch | undefined)[],
  start: number,
  end: number,
): ForwardWaiter | undefined {
  const waiters: ForwardWaiter[] = [];
  let index = start;
  while (index < end) {
    const origin = origins[index];
    let next = index + 1;
    while (next < end && origins[next] === origin) next++;
    if (origin !== undefined && !origin.settled) waiters.push(origin.resentBy(next - index));
    index = next;
  }
  if (waiters.length === 0) return undefined;
  if (waiters.length === 1) return waiters[0];
  return (error) => {
    for (const waiter of waiters) waiter(error);
  };
}

/**
 * One node's forward queue towards one successor: the batches not yet answered, in order. Every
 * write appended in a tick goes out in one REPLICATE at the tick's end (more only when a frame's
 * limits are reached); answers settle the batches strictly in order, so the answer of batch b
 * releases its waiters only after every earlier batch of the link is settled or has failed (a
 * deferred one, counted in {@link failuresTotal}, settles later). The entries of a
 * batch whose forward fails stay queued (their waiters get the indeterminate error at once, unless
 * a member in transition refused the batch whole: then they wait for the re-send) and go
 * out again, after a backoff delay, on a new connection; on a new epoch every unacknowledged entry
 * is taken off the link ({@link detach}) and re-routed to its key's new successor.
 */
class ForwardLink {
  /** Bytes of keys and values held until answered (kept entries included): the queue bound. */
  bytes = 0;
  private filling: ForwardBatch | undefined;
  /** Batches created and not settled yet, oldest first (sent or about to be). */
  private unsettled: ForwardBatch[] = [];
  /** Batches waiting to be sent (the tick has not ended, or the connection is opening). */
  private toSend: ForwardBatch[] = [];
  /** Entries of failed forwards, oldest first, to send again (their bytes stay in {@link bytes}). */
  private kept: ReplicatedEntry[] = [];
  /** The serving chain ({@link ReplicationService.chainId}) of each entry of {@link kept}. */
  private keptChains: string[] = [];
  /** The deferred batch each entry of {@link kept} came from, whose waiters wait for its re-send. */
  private keptOrigins: (ForwardBatch | undefined)[] = [];
  /**
   * Entries kept or being sent again, by serving chain: new client writes of those chains are
   * refused until their re-send went through. Writes of the link's other chains go on (the
   * failure may lie further down another chain).
   */
  private readonly blocked = new Map<string, number>();
  private scheduled = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** While the connection to the successor was too full to take the next batch: the retry of the send. */
  private roomTimer: NodeJS.Timeout | undefined;
  /** Failed forwards in a row (the backoff's attempt); reset by an answer. */
  private failures = 0;
  /** Failed forwards since the link was made (a write that changes nothing checks it). */
  failuresTotal = 0;
  /** The newest answer said a member down the stream is past its client room (REPLICATED's `full`). */
  private successorFull = false;
  /**
   * The newest failed forward was refused for room by a member down the stream (OUT_OF_SPACE,
   * OUT_OF_MEMORY): the chain is alive, and the writes of its blocked chains that store no value
   * go on (see {@link blockedForRoom}).
   */
  private refusedForRoom = false;
  /** While {@link successorFull}: the batch of the one value let through to probe, if in flight. */
  private valueProbe: ForwardBatch | undefined;
  /** While {@link successorFull}: when the next probe may go (performance.now()). */
  private probeAfter = 0;
  private connection: Connection | undefined;
  /** The connection a PING is checking after a timed-out forward ({@link probe}). */
  private probing: Connection | undefined;
  private connecting = false;
  /**
   * Number of the next batch: from 1 on every new connection and after every re-route (a new
   * epoch), which the receiver accepts as the start of the stream; otherwise consecutive.
   */
  private nextBatch = 1;

  constructor(
    readonly successor: string,
    /** The sender's position in the chains of this stream's entries (0: head). */
    readonly position: number,
    private readonly service: ReplicationService,
  ) {}

  /**
   * Taken off on a new epoch ({@link detach}): what is appended later goes to its key's successor
   * on the new ring. An engine that applies a write after the tick that admitted it (lmdb, in a
   * later transaction) appends its entry to the link chosen then, and a RING may come in between:
   * sent from here, it would go out on the new epoch along the old path, and be sent again after
   * every refusal until the next RING.
   */
  private detached = false;

  /** Appends a write to this tick's batch; returns the batch whose answer covers it. */
  append(entry: ReplicatedEntry): ForwardBatch {
    if (this.detached) return this.service.forwardOnCurrentRing([entry]);
    const size = entrySize(entry);
    this.bytes += size;
    return this.place(entry, size);
  }

  /**
   * Appends the entries of one write of several keys (a transaction on keys of one hash tag) to
   * one batch, never split across two: every member applies a REPLICATE in one step, so no
   * reader of a member sees part of the write. The caller keeps a unit within one frame's limits.
   */
  appendUnit(entries: readonly ReplicatedEntry[]): ForwardBatch {
    if (this.detached) return this.service.forwardOnCurrentRing(entries);
    let size = 0;
    for (const entry of entries) size += entrySize(entry);
    this.bytes += size;
    return this.placeUnit(entries, size);
  }

  private place(entry: ReplicatedEntry, size: number): ForwardBatch {
    const batch = this.batchWithRoom(1, size);
    batch.entries.push(entry);
    batch.bytes += size;
    return batch;
  }

  /** {@link place} for the entries of one unit (see {@link appendUnit}): all in one batch. */
  private placeUnit(entries: readonly ReplicatedEntry[], size: number): ForwardBatch {
    const batch = this.batchWithRoom(entries.length, size);
    for (const entry of entries) batch.entries.push(entry);
    batch.bytes += size;
    return batch;
  }

  /**
   * The batch filling this tick when `count` more entries of `size` bytes fit in it, else a new
   * one (a unit larger than a frame's limits still goes whole into a batch of its own).
   */
  private batchWithRoom(count: number, size: number): ForwardBatch {
    let batch = this.filling;
    if (
      batch !== undefined &&
      batch.entries.length > 0 &&
      (batch.entries.length + count > this.service.maxBatchKeys ||
        batch.bytes + size > this.service.maxBatchBytes)
    ) {
      batch = undefined;
    }
    if (batch === undefined) {
      batch = new ForwardBatch(this.service.nextBatchSeq());
      this.filling = batch;
      this.unsettled.push(batch);
      this.toSend.push(batch);
      this.schedule();
    }
    return batch;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // With the connections' writes of the tick: the frame leaves in this turn of the event loop,
    // flushed before the connections (`first`), so it shares their one write with the answers
    // buffered for the same peer.
    flushAtEndOfTick(this.endOfTick, true);
  }

  private readonly endOfTick: EndOfTickWriter = { flushBuffered: () => this.flush() };

  /**
   * Whether every entry this link held before batch `mark` was made is acknowledged: no batch
   * older than it unsettled, nothing kept from a failed forward, nothing being sent again.
   */
  drainedBefore(mark: number): boolean {
    const oldest = this.unsettled[0];
    return this.kept.length === 0 && this.blocked.size === 0 && (oldest === undefined || oldest.seq >= mark);
  }

  /** The newest batch not settled yet: a write that changed nothing waits for it (it saw its writes). */
  last(): ForwardBatch | undefined {
    return this.unsettled[this.unsettled.length - 1];
  }

  /**
   * Takes every unacknowledged entry off this link (a new epoch: their successor may have
   * changed): the batches not settled, oldest first, each marked so that a late answer is ignored,
   * and the entries kept from failed forwards. The link starts afresh (batch numbers from 1).
   */
  detach(): { batches: ForwardBatch[]; kept: ReplicatedEntry[]; keptOrigins: (ForwardBatch | undefined)[] } {
    this.detached = true;
    // A deferred batch's entries are kept: they are re-routed from there, once.
    const batches = this.unsettled.filter((batch) => !batch.deferred);
    const kept = this.kept;
    const keptOrigins = this.keptOrigins;
    for (const batch of batches) batch.rerouted = true;
    this.unsettled = [];
    this.toSend = [];
    this.kept = [];
    this.keptChains = [];
    this.keptOrigins = [];
    this.blocked.clear();
    this.filling = undefined;
    this.bytes = 0;
    this.failures = 0;
    this.nextBatch = 1;
    // The stream's members may have changed: the next answer tells again.
    this.successorFull = false;
    this.refusedForRoom = false;
    this.valueProbe = undefined;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    return { batches, kept, keptOrigins };
  }

  /**
   * Whether a new client write that stores a value must be refused because a member down this
   * stream is out of room: from its answer on, until a probe finds room. Every
   * {@link FULL_PROBE_MS} one value goes through (see {@link admitted}); the answer to it decides.
   * Free while no member is full: one field check.
   */
  refusesValues(): boolean {
    if (!this.successorFull) return false;
    return this.valueProbe !== undefined || performance.now() < this.probeAfter;
  }

  /** Whether the newest answer said a member down this stream is past its client room (REPLICATED's `full`). */
  get memberFull(): boolean {
    return this.successorFull;
  }

  /** A value was appended in `batch` although a member was full: that batch is the probe. */
  admitted(batch: ForwardBatch): void {
    if (this.successorFull && this.valueProbe === undefined) this.valueProbe = batch;
  }

  /**
   * Whether writes of `key`'s chain wait to be sent again after a failed forward (a new client
   * write of that chain is refused meanwhile). Free while nothing failed: one size check.
   */
  blocks(key: Uint8Array): boolean {
    return this.blocked.size > 0 && this.blocked.has(this.service.chainId(key));
  }

  /**
   * Whether the writes kept from failed forwards wait for room on a member down the stream (its
   * newest failure was a refusal for room, not an unreachable member). A delete of a blocked chain
   * then goes on ahead of them: it is the only way to free that room (refused too, a member that
   * filled past its headroom left every write of its chains refused for good). Ahead of the kept
   * writes is safe: each member applies an entry only if newer, and a replicated delete leaves a
   * tombstone, so a kept older write of the key can never bring it back.
   */
  get blockedForRoom(): boolean {
    return this.refusedForRoom;
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    this.filling = undefined;
    if (this.kept.length > 0 && this.retryTimer === undefined) this.resendKept();
    if (this.toSend.length === 0) return;
    // The peer's current link: it may have changed since the last send (a link the peer opened
    // and offered replaces this node's own, see PeerLinks.adopt); a new connection is a new stream.
    const connection = this.service.peers.current(this.successor);
    if (connection !== undefined) {
      if (connection !== this.connection) {
        this.connection = connection;
        this.nextBatch = 1;
      }
      this.sendAll(connection);
      return;
    }
    this.connection = undefined;
    if (this.connecting) return;
    this.connecting = true;
    this.service.peers.get(this.successor).then(
      (opened) => {
        this.connecting = false;
        if (this.connection !== opened) this.nextBatch = 1;
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

  /**
   * Puts the kept entries into batches of their own, one chain at a time (no waiters: their
   * clients had their answer), so a chain whose member further down still fails does not hold
   * back the re-send of the others. Their bytes are still counted in `bytes`.
   */
  private resendKept(): void {
    const byChain = new Map<string, { entries: ReplicatedEntry[]; origins: (ForwardBatch | undefined)[] }>();
    for (let i = 0; i < this.kept.length; i++) {
      const chain = this.keptChains[i]!;
      let group = byChain.get(chain);
      if (group === undefined) {
        group = { entries: [], origins: [] };
        byChain.set(chain, group);
      }
      group.entries.push(this.kept[i]!);
      group.origins.push(this.keptOrigins[i]);
    }
    this.service.counters.entriesResent += this.kept.length;
    this.kept = [];
    this.keptChains = [];
    this.keptOrigins = [];
    for (const [chain, { entries, origins }] of byChain) {
      this.filling = undefined;
      forEachUnit(entries, (start, end) => {
        let size = 0;
        for (let i = start; i < end; i++) size += entrySize(entries[i]!);
        const batch = this.placeUnit(entries.slice(start, end), size);
        batch.resentChains ??= [];
        for (let i = start; i < end; i++) batch.resentChains.push(chain);
        // The deferred batches these entries came from wait for this one's answer.
        const resent = resentByUnit(origins, start, end);
        if (resent !== undefined) batch.whenSettled(resent);
      });
    }
    this.filling = undefined;
  }

  private sendAll(connection: Connection): void {
    // Whatever is sent is closed: a later write of this tick starts the next batch.
    this.filling = undefined;
    const epoch = this.service.epoch;
    while (this.toSend.length > 0) {
      const batch = this.toSend[0]!;
      const number = this.nextBatch;
      const refusal = connection.requestWith(
        { op: Op.REPLICATE, epoch, batch: number, entries: batch.entries },
        (error, response) =>
          this.answered(
            batch,
            error ?? unexpected(response, number),
            response?.op === Op.REPLICATED && response.full === true,
          ),
        this.service.timeoutMs,
      );
      if (refusal?.code === ErrorCode.BUSY) {
        // The connection's output or its requests in flight are full (every stream towards this
        // peer shares it): this batch and the later ones wait, in order, for it to drain. Failed,
        // they would have blocked their chains and answered their clients indeterminate. The
        // streams' own bounds (`queueBytes`, BUSY to new client writes) bound the wait.
        this.service.counters.sendsWaited++;
        this.waitForRoom();
        return;
      }
      this.toSend.shift();
      this.nextBatch++;
      batch.connection = connection;
      if (refusal !== undefined) this.answered(batch, refusal);
      else {
        this.service.counters.batchesSent++;
        this.service.counters.entriesSent += batch.entries.length;
      }
    }
  }

  /** Sends the waiting batches again shortly (the connection was full): one timer per link at most. */
  private waitForRoom(): void {
    if (this.roomTimer !== undefined) return;
    this.roomTimer = setTimeout(() => {
      this.roomTimer = undefined;
      if (this.toSend.length > 0) this.schedule();
    }, ROOM_RETRY_MS);
    this.roomTimer.unref();
  }

  private answered(batch: ForwardBatch, error: DstoreError | undefined, full = false): void {
    // Re-routed on a new epoch: its entries travel in other batches now.
    if (batch.rerouted || batch.outcome !== null) return;
    if (this.valueProbe === batch) {
      this.valueProbe = undefined;
      this.probeAfter = performance.now() + FULL_PROBE_MS;
    }
    if (error !== undefined) {
      this.service.counters.batchesFailed++;
      this.failuresTotal++;
      // The next batch restarts the stream (number 1): the receiver may not have this one.
      this.nextBatch = 1;
      // A closed link is reopened for the next batch; only the connection the batch went out on,
      // not a newer one. A TIMEOUT is mostly a member further down the chain that stopped
      // answering, not this socket: dropping it would fail every other batch in flight on it
      // (other chains' writes), so it is dropped only if a PING on it times out too.
      if (batch.connection !== undefined && batch.connection === this.connection) {
        // SHUTTING_DOWN: the successor closes this connection gracefully (a request of ours that
        // crossed its end, or one it refused while closing).
        if (error.code === ErrorCode.CONNECTION_CLOSED || error.code === ErrorCode.SHUTTING_DOWN)
          this.dropConnection(batch.connection);
        else if (error.code === ErrorCode.TIMEOUT) this.probe(batch.connection);
      }
      // A member down the stream is out of room (past its headroom): values of the stream are
      // refused until an answer says it has room again, as with REPLICATED's `full`.
      this.refusedForRoom = isRoomRefusal(error);
      if (this.refusedForRoom) {
        if (!this.successorFull) this.probeAfter = performance.now() + FULL_PROBE_MS;
        this.successorFull = true;
      }
      // Refused whole by a member in transition: the re-send will very likely go through, so those
      // waiting for the batch (now or once their engine step is done: lmdb answers after its flush)
      // wait for it, within a bound, rather than get the indeterminate error.
      const deferred = isTransitionalRefusal(error);
      if (deferred) this.service.deferAnswer(batch, indeterminate(error, this.successor));
      const origin = deferred ? batch : undefined;
      // Kept for the re-send (the successor may still be in the chain, or a new one will be).
      const chains = batch.resentChains;
      batch.entries.forEach((entry, i) => {
        const chain = chains?.[i] ?? this.service.chainId(entry.key);
        this.kept.push(entry);
        this.keptChains.push(chain);
        this.keptOrigins.push(origin);
        // A re-sent entry is counted already.
        if (chains === undefined) this.blocked.set(chain, (this.blocked.get(chain) ?? 0) + 1);
      });
      this.failures++;
      this.scheduleRetry();
    } else {
      this.failures = 0;
      this.bytes -= batch.bytes;
      batch.full = full;
      if (full && !this.successorFull) this.probeAfter = performance.now() + FULL_PROBE_MS;
      this.successorFull = full;
      // Re-sent entries through: their chains take writes again once none of theirs is pending.
      for (const chain of batch.resentChains ?? []) {
        const left = (this.blocked.get(chain) ?? 1) - 1;
        if (left > 0) this.blocked.set(chain, left);
        else this.blocked.delete(chain);
      }
    }
    if (!batch.deferred)
      batch.outcome = error === undefined ? undefined : indeterminate(error, this.successor);
    // In link order: a batch settles only once every earlier one has (a deferred one leaves the
    // order: its re-send settles it).
    while (this.unsettled.length > 0 && this.unsettled[0]!.outcome !== null) {
      const next = this.unsettled.shift() as ForwardBatch;
      if (!next.deferred) next.settle();
    }
  }

  private dropConnection(connection: Connection): void {
    this.service.peers.drop(this.successor, connection);
    if (this.connection === connection) this.connection = undefined;
  }

  /**
   * After a forward timed out: PINGs the connection (one probe at a time) and drops it only when
   * the PING is not answered within the replication timeout either (a dead socket, or a paused
   * successor), so the next batch opens a new one.
   */
  private probe(connection: Connection): void {
    if (this.probing === connection) return;
    this.probing = connection;
    const refusal = connection.requestWith(
      { op: Op.PING },
      (error) => {
        if (this.probing === connection) this.probing = undefined;
        if (error !== undefined) this.dropConnection(connection);
      },
      this.service.timeoutMs,
    );
    if (refusal !== undefined) {
      this.probing = undefined;
      this.dropConnection(connection);
    }
  }

  /** Sends the kept entries again after the backoff delay of the failures in a row (one timer). */
  private scheduleRetry(): void {
    if (this.retryTimer !== undefined) return;
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = undefined;
        if (this.kept.length > 0) this.schedule();
      },
      backoffDelay(this.failures, RESEND_BACKOFF),
    );
    this.retryTimer.unref();
  }
}

/**
 * A node of a stream lookup by path (`ReplicationService`'s forward streams, or its predecessors'
 * streams, where it only stands for the stream): the stream of the path so far, and the longer ones.
 */
interface LinkTrieNode {
  link: ForwardLink | undefined;
  readonly next: Map<string, LinkTrieNode>;
}

/**
 * The node of the stream of `path` towards its member at index `receiver` in `trie` (by the
 * sender's position `receiver - 1`, then each member from the receiver on), made on first use.
 */
function streamNode(trie: LinkTrieNode[], path: readonly string[], receiver: number): LinkTrieNode {
  let node: LinkTrieNode | undefined = trie[receiver - 1];
  if (node === undefined) {
    node = { link: undefined, next: new Map() };
    trie[receiver - 1] = node;
  }
  for (let i = receiver; i < path.length; i++) {
    const id = path[i]!;
    let child: LinkTrieNode | undefined = node.next.get(id);
    if (child === undefined) {
      child = { link: undefined, next: new Map() };
      node.next.set(id, child);
    }
    node = child;
  }
  return node;
}

/**
 * The index past the run of entries from `start` that one write made: `writeEndAt` (the same
 * `writeEpoch` and version), cut where an entry's chain (`chainAt(index)`) differs from the
 * first's. A write of several keys has keys of one hash tag, so one chain; two writes that only
 * share a version (two heads' clocks give the first version of a millisecond alike) may have two,
 * and a run is routed whole by its first entry's chain: uncut, the other write's entries went to a
 * member that is not their successor (which could apply them, skipping the members between).
 */
function unitEndAt(
  entries: readonly ReplicatedEntry[],
  start: number,
  chainAt: (index: number) => Chain | undefined,
): number {
  const end = writeEndAt(entries, start);
  if (end === start + 1) return end;
  const first = chainAt(start);
  for (let i = start + 1; i < end; i++) {
    const chain = chainAt(i);
    if (
      chain !== first &&
      (chain === undefined || first === undefined || !samePath(chain.path, first.path, 0))
    )
      return i;
  }
  return end;
}

/** Whether write paths `a` and `b` have the same members from index `from` on. */
function samePath(a: readonly string[], b: readonly string[], from: number): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = from; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Bytes `entry` counts for in a frame and in the queue bound. */
function entrySize(entry: ReplicatedEntry): number {
  return entry.key.byteLength + (entry.value?.byteLength ?? 0) + ENTRY_OVERHEAD;
}

/**
 * Calls `unit(start, end)` for each run of entries one write made (see {@link unitEndAt}; without
 * `chainAt`, entries all of one chain: `writeEndAt` alone).
 */
function forEachUnit(
  entries: readonly ReplicatedEntry[],
  unit: (start: number, end: number) => void,
  chainAt?: (index: number) => Chain | undefined,
): void {
  let start = 0;
  while (start < entries.length) {
    const end = chainAt === undefined ? writeEndAt(entries, start) : unitEndAt(entries, start, chainAt);
    unit(start, end);
    start = end;
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
    `replication to ${successor} failed (${error.code}): ${error.message}${MAY_BE_ON_REPLICAS}`,
    { cause: error, notExecuted: false },
  );
}

const MAY_BE_ON_REPLICAS = '; the write may be on some replicas';

/** The indeterminate error of writes whose chain node `self` left at `epoch` before their tail acknowledged them. */
function leftChainError(self: string, epoch: number): DstoreError {
  return new DstoreError(
    ErrorCode.CONNECTION_CLOSED,
    `${self} left the chain of the write at epoch ${epoch} before its tail acknowledged it${MAY_BE_ON_REPLICAS}`,
    { notExecuted: false },
  );
}

/**
 * Whether a failed forward was refused whole by a member in transition, alive and about to take it:
 * one RING behind or ahead of the sender (STALE_EPOCH, NOT_OWNER, a batch numbered for the other
 * epoch's stream: REPLICATION_GAP), a learner deleting its stale entries or a member without its
 * lease (UNAVAILABLE, also what a member relays for a failure further down), or closing gracefully
 * (SHUTTING_DOWN). Every routine ring change (a node joining, leaving, restarting) makes a few,
 * and the re-send of the entries goes through within the next RING. Not a timeout, a closed
 * connection (a member that may be gone for good) or a refusal for room (held until room is freed).
 */
function isTransitionalRefusal(error: DstoreError): boolean {
  switch (error.code) {
    case ErrorCode.STALE_EPOCH:
    case ErrorCode.NOT_OWNER:
    case ErrorCode.REPLICATION_GAP:
    case ErrorCode.UNAVAILABLE:
    case ErrorCode.SHUTTING_DOWN:
      return true;
    default:
      return false;
  }
}

/**
 * The deferred batches of a node (see {@link isTransitionalRefusal}): each gets its outcome (the
 * indeterminate error) once `boundMs` passed since the batch was made and no re-send settled it,
 * so a client, or a predecessor whose own forward waits (its deadline started when it sent the
 * batch this node made), waits at most that long for a forward that keeps failing. One unref'd
 * timer, armed only while a batch is deferred: failure paths only, never per request.
 */
class DeferredAnswers {
  private queue: { batch: ForwardBatch; failure: DstoreError; dueAt: number }[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly boundMs: number) {}

  add(batch: ForwardBatch, failure: DstoreError): void {
    batch.defer(failure);
    this.queue.push({ batch, failure, dueAt: batch.madeAt + this.boundMs });
    this.arm();
  }

  /** Gives every deferred batch its outcome now (the node stops). */
  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    for (const { batch, failure } of this.queue.splice(0)) batch.settleWith(failure);
  }

  private arm(): void {
    if (this.timer !== undefined) return;
    let first = Number.POSITIVE_INFINITY;
    for (const { batch, dueAt } of this.queue) if (!batch.settled && dueAt < first) first = dueAt;
    if (first === Number.POSITIVE_INFINITY) {
      this.queue = [];
      return;
    }
    this.timer = setTimeout(() => this.expire(), Math.max(0, first - performance.now()));
    this.timer.unref();
  }

  private expire(): void {
    this.timer = undefined;
    const now = performance.now();
    const waiting: typeof this.queue = [];
    for (const entry of this.queue) {
      if (entry.batch.settled) continue;
      if (entry.dueAt <= now) entry.batch.settleWith(entry.failure);
      else waiting.push(entry);
    }
    this.queue = waiting;
    this.arm();
  }
}

/** Whether a failed forward was refused for room by a member down the stream (alive, out of room). */
function isRoomRefusal(error: DstoreError): boolean {
  return error.code === ErrorCode.OUT_OF_SPACE || error.code === ErrorCode.OUT_OF_MEMORY;
}

/**
 * What a member answers its predecessor's REPLICATE when its own forward of it failed (`outcome`,
 * the indeterminate error of {@link indeterminate}). A refusal for room further down keeps its
 * code: the head then knows the chain is alive and out of room (values refused, deletes let
 * through to free it). A closed connection further down is UNAVAILABLE: answered as
 * CONNECTION_CLOSED, the head took it for its own link closing and dropped a healthy connection,
 * failing every other batch in flight on it.
 */
function answerUpChain(outcome: DstoreError): DstoreError {
  const cause = outcome.cause instanceof DstoreError ? outcome.cause : undefined;
  const message = outcome.message.endsWith(MAY_BE_ON_REPLICAS)
    ? outcome.message.slice(0, -MAY_BE_ON_REPLICAS.length)
    : outcome.message;
  if (cause !== undefined && isRoomRefusal(cause)) return new DstoreError(cause.code, message);
  if (outcome.code === ErrorCode.CONNECTION_CLOSED) return new DstoreError(ErrorCode.UNAVAILABLE, message);
  return outcome;
}

/** Copies bytes one by one (entries not all within one buffer). */
const sliceOf = (bytes: Uint8Array): Uint8Array => bytes.slice();

/**
 * A copier of the keys and values of a received REPLICATE: they are views of the one frame
 * body, so the span they cover is copied once (one allocation per frame, rather than two per
 * entry) and each copy is a view of it. Bytes outside that buffer, or a span much larger than
 * the bytes themselves, are copied one by one.
 */
function copierOf(entries: readonly ReplicatedEntry[]): (bytes: Uint8Array) => Uint8Array {
  const first = entries[0]?.key;
  if (first === undefined) return sliceOf;
  const buffer = first.buffer;
  let start = first.byteOffset;
  let end = start;
  let bytes = 0;
  for (let i = 0; i < entries.length; i++) {
    const { key, value } = entries[i]!;
    if (key.buffer !== buffer || (value !== null && value.buffer !== buffer)) return sliceOf;
    start = Math.min(start, key.byteOffset);
    end = Math.max(end, key.byteOffset + key.length);
    bytes += key.length + ENTRY_OVERHEAD;
    if (value !== null) {
      start = Math.min(start, value.byteOffset);
      end = Math.max(end, value.byteOffset + value.length);
      bytes += value.length;
    }
  }
  if (end - start > bytes) return sliceOf;
  const span = new Uint8Array(buffer, start, end - start).slice();
  return (view) =>
    view.buffer === buffer ? new Uint8Array(span.buffer, view.byteOffset - start, view.length) : view.slice();
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
 * The failure of a head's write whose entry was already sent down the chain (its commit failed
 * after the forward left): whatever the engine said, the other members may store it, so the
 * client gets an indeterminate STORAGE_ERROR, never a "not executed" one.
 */
function outcomeUnknown(error: unknown): StorageEngineError {
  const detail = error instanceof Error ? error.message : String(error);
  return new StorageEngineError(
    'ENGINE_IO',
    `the write failed on this node after it was sent to the other members of its chain (${detail}): its outcome is unknown`,
    { cause: error },
  );
}

/** Calls `done` with what `run` resolves to or fails with (thrown or rejected). */
function answerWith<T>(run: () => Promise<T>, done: (error: unknown, result: T | undefined) => void): void {
  let running: Promise<T>;
  try {
    running = run();
  } catch (error) {
    done(error, undefined);
    return;
  }
  running.then(
    (result) => done(undefined, result),
    (error: unknown) => done(error, undefined),
  );
}

const NO_MUTATION: Mutation = { kind: 'none' };

/**
 * The entry a head's decision leaves for its chain (a value, an expiry change with the value, a
 * delete), or undefined when it writes nothing (an expiry change of a missing key included).
 */
function forwardedEntry(
  key: Uint8Array,
  current: VersionedValue | undefined,
  mutation: Mutation,
  writeEpoch: number,
  version: number,
): ReplicatedEntry | undefined {
  switch (mutation.kind) {
    case 'put':
      return { key, value: mutation.value, writeEpoch, version, expireAt: mutation.expireAt };
    case 'expire':
      return current === undefined
        ? undefined
        : { key, value: current.value, writeEpoch, version, expireAt: mutation.expireAt };
    case 'delete':
      return { key, value: null, writeEpoch, version, expireAt: 0 };
    case 'none':
      return undefined;
  }
}

/** {@link PendingWrite}'s `failuresSeen` of a write that changed nothing on a chain with failed writes. */
const RESTS_ON_FAILED_WRITE = -2;

/**
 * A client write admitted at the head, from its engine step to its answer: answered once the
 * forward of its entries is (the tail has them), or at once when it wrote nothing and nothing
 * before it on the link is in flight.
 */
class PendingWrite<T> {
  private batch: ForwardBatch | undefined;
  /**
   * A write that changes nothing rests on every earlier write of the link: it is answered only if
   * none of their forwards failed meanwhile (a failed one may be missing at the tail). -1: it wrote;
   * {@link RESTS_ON_FAILED_WRITE}: its chain had failed writes when it decided (refused).
   */
  private failuresSeen = -1;
  /** An entry went on the link: a failure of the head's own write is then no longer "not executed". */
  private wasSent = false;

  constructor(
    private readonly link: ForwardLink,
    private readonly done: (error: unknown, result: T | undefined) => void,
    private readonly answered: () => void,
  ) {}

  /** Its entries went on the link in `batch`; `stores` a value (the probe of a full member). */
  sent(batch: ForwardBatch, stores: boolean): void {
    this.wasSent = true;
    this.batch = batch;
    if (stores) this.link.admitted(batch);
  }

  /**
   * It wrote nothing: its answer waits for the link's newest batch (it may have seen its writes).
   * When `key`'s chain has writes kept from a failed forward (not at the tail), the answer would
   * rest on them: refused instead (not executed). The admission check saw no such write, but an
   * engine that decides later than it admits (lmdb: in a later transaction) may decide after a
   * forward failed, on a state holding writes the other members may never get.
   */
  restsOnLink(key: Uint8Array): void {
    this.failuresSeen = this.link.blocks(key) ? RESTS_ON_FAILED_WRITE : this.link.failuresTotal;
    this.batch = this.link.last();
  }

  /** The engine applied it: answered once its batch is settled (or at once). */
  applied(result: T): void {
    const settled = (error: DstoreError | undefined): void => {
      this.answered();
      if (
        error === undefined &&
        (this.failuresSeen === RESTS_ON_FAILED_WRITE ||
          (this.failuresSeen >= 0 && this.link.failuresTotal !== this.failuresSeen))
      ) {
        // Nothing was written: not executed, and retryable once the re-send went through.
        this.done(
          new DstoreError(
            ErrorCode.UNAVAILABLE,
            `replication to ${this.link.successor} failed meanwhile: the answer could rest on a write not at the tail; retry`,
          ),
          undefined,
        );
      } else {
        this.done(error, result);
      }
    };
    if (this.batch === undefined) settled(undefined);
    else this.batch.whenSettled(settled);
  }

  /** The engine refused or failed it. */
  failed(error: unknown): void {
    this.answered();
    this.done(this.wasSent ? outcomeUnknown(error) : error, undefined);
  }

  /** It was turned into a write of nothing inside its step (`error` says why): not executed. */
  refused(error: DstoreError): void {
    this.answered();
    this.done(error, undefined);
  }
}

/** Called once a REPLICATE is done: `error` undefined when applied down to the tail, `full` as REPLICATED's. */
export type ReplicateDone = (error: unknown, full?: boolean) => void;

/**
 * Chain replication on a storage node (only with a map whose replication factor is
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
    refusedUnavailable: 0,
    entriesResent: 0,
    gapsRefused: 0,
    tombstonesPurged: 0,
    wipes: 0,
    refusedPromoting: 0,
    refusedFull: 0,
    evictionsSent: 0,
    batchesDeferred: 0,
    sendsWaited: 0,
  };
  /**
   * The engine's {@link EvictionScope} (memory with an eviction policy): with a factor above 1 a
   * value may be evicted only where this node may write its key now as the head of its chain, and
   * each eviction goes down the chain as an expired copy ({@link EVICTED_AT}); the members evict
   * nothing of their own, so every member of a chain holds the same keys.
   */
  readonly evictionScope: EvictionScope;
  /** Most entries in one REPLICATE. */
  readonly maxBatchKeys: number;
  /** Most bytes of keys and values (with {@link ENTRY_OVERHEAD} each) in one REPLICATE. */
  readonly maxBatchBytes: number;
  /** The forward streams, in creation order (for the drain, the re-route and STATS). */
  private links: ForwardLink[] = [];
  /**
   * The same streams for lookup without building a name per write: by sender position, then each
   * member of the rest of the write path in turn (a WeakMap per chain object cost more: thousands
   * of ephemerons for the GC to trace, one per ring point).
   */
  private linkTrie: LinkTrieNode[] = [];
  /**
   * Per connection from a predecessor, the last batch number accepted of each stream, keyed by the
   * stream's node in {@link inboundTrie}.
   */
  private readonly streams = new WeakMap<object, Map<LinkTrieNode, number>>();
  /**
   * The predecessors' streams as this node names them (the sender's position, then the write path
   * from this node on): one object per stream, found without a name per REPLICATE. Never reset:
   * it holds one node per path seen, and batch numbers restart at 1 on every new epoch anyway.
   */
  private readonly inboundTrie: LinkTrieNode[] = [];
  /** The epoch the links were last routed on ({@link reconfigure}). */
  private routedEpoch = -1;
  /** This node's replication state on the ring the links were last routed on; undefined before any. */
  private routedState: ReplicaState | undefined;
  /** The drain the latest RING called for (a learner being promoted), until it completes. */
  private draining: Promise<void> | undefined;
  /** Creation counter of forward batches (see {@link ForwardBatch.seq}). */
  private batchSeq = 0;
  /**
   * Client writes admitted at the head and not answered yet, counted from admission (before the
   * engine ran them: their entry may not be on a link yet) to their answer: those admitted since
   * the latest drain began, and those admitted before it (the drain waits for them).
   */
  private admittedNow = 0;
  private admittedBefore = 0;
  private admitGeneration = 0;
  private isWiping = false;
  private readonly reaper: TombstoneReaper;
  private readonly deferredAnswers: DeferredAnswers;

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
    this.reaper = new TombstoneReaper(
      engine,
      options.tombstoneTtlMs ?? Math.max(60_000, 10 * options.timeoutMs),
      (purged) => {
        this.counters.tombstonesPurged += purged;
      },
    );
    // Half the forward's own deadline, from when the batch was made: a member's deferred answer
    // reaches its predecessor before the predecessor's forward times out.
    this.deferredAnswers = new DeferredAnswers(options.timeoutMs / 2);
    this.evictionScope = {
      get active() {
        return ownership.replicationFactor > 1;
      },
      mayEvict: (key) => this.mayEvict(key),
      evicted: (key, version) => this.evicted(key, version),
    };
  }

  /**
   * Whether this node may evict `key` now: what a client write of it needs at the head (its lease,
   * the head of its chain, no promotion or ring change freezing the chain, no forward of the
   * chain waiting to be sent again), since the eviction is a write of the chain.
   */
  private mayEvict(key: Uint8Array): boolean {
    return this.mayEvictIn(this.ownership.chainOf(key), key);
  }

  /** {@link mayEvict} for `key` of `chain` (its chain, already found). */
  private mayEvictIn(chain: Chain | undefined, key: Uint8Array): boolean {
    const lease = this.options.lease;
    if (lease !== undefined && !lease.held) return false;
    if (chain === undefined || chain.head !== this.ownership.self || this.promotingIn(chain, key))
      return false;
    const link = this.forwardLinkOf(chain);
    return link === undefined || !link.blocks(key);
  }

  /**
   * With an eviction policy, while a member down `link` is past its cap: evicts one value of the
   * size (`total` bytes of key and value) being written whose key this node may evict and whose
   * chain takes the same write path, so that member has room for it, as the write's own eviction
   * makes room here (the writer pays, by its own policy's order). False without an eviction policy
   * or such a key: the write is then refused while the member stays full.
   */
  private roomMadeOn(link: ForwardLink, total: number): boolean {
    const engine = this.engine;
    if (engine.evictFor === undefined) return false;
    return engine.evictFor(total, (key) => {
      const chain = this.ownership.chainOf(key);
      return this.mayEvictIn(chain, key) && this.forwardLinkOf(chain) === link;
    });
  }

  /**
   * The engine evicts `key` (a view) at `version` (see {@link mayEvict}): an expired copy of it
   * ({@link EVICTED_AT}) goes down its chain, in the link's order with the chain's writes, and
   * every member drops the key. No client waits for it; a failed forward is kept and sent again
   * like any other.
   */
  private evicted(key: Uint8Array, version: number): void {
    const link = this.forwardLinkOf(this.ownership.chainOf(key));
    if (link === undefined) return;
    this.counters.evictionsSent++;
    link.append({
      key: Uint8Array.prototype.slice.call(key),
      value: NO_VALUE,
      writeEpoch: this.ownership.writeEpoch,
      version,
      expireAt: EVICTED_AT,
    });
  }

  /**
   * Sends the entries `entries[start .. end - 1]` of one write on towards their key's successor on
   * the current ring (the link of this node's position in the key's write path): the batch that
   * covers them; undefined when this node is the key's last member now (acknowledged here), null
   * when it left the key's write path. What {@link reconfigure} does with every entry it takes off
   * the old epoch's links, and a link taken off does with an entry appended later.
   */
  private routeOnCurrentRing(
    entries: readonly ReplicatedEntry[],
    start: number,
    end: number,
  ): ForwardBatch | null | undefined {
    const chain = this.ownership.chainOf(entries[start]!.key);
    const at = chain === undefined ? -1 : chain.path.indexOf(this.ownership.self);
    if (chain === undefined || at < 0) return null;
    if (at + 1 >= chain.path.length) return undefined;
    this.counters.entriesResent += end - start;
    const link = this.linkOf(chain, at);
    return end - start === 1 ? link.append(entries[start]!) : link.appendUnit(entries.slice(start, end));
  }

  /**
   * The forward of the entries of one write appended to a link taken off on a new epoch (see
   * `ForwardLink.detached`), routed as {@link reconfigure} routes what the link held: a batch
   * settled at once when this node is the key's last member now, or failed with the
   * indeterminate error when it left the key's write path.
   */
  forwardOnCurrentRing(entries: readonly ReplicatedEntry[]): ForwardBatch {
    const routed = this.routeOnCurrentRing(entries, 0, entries.length);
    if (routed !== null && routed !== undefined) return routed;
    const batch = new ForwardBatch(this.nextBatchSeq());
    batch.settleWith(routed === null ? leftChainError(this.ownership.self, this.ownership.epoch) : undefined);
    return batch;
  }

  /** The next forward batch's creation number. */
  nextBatchSeq(): number {
    return this.batchSeq++;
  }

  /**
   * While this node deletes every entry it holds (it became a learner), the refusal of REPLICATE
   * and MIGRATE_PUT: UNAVAILABLE (retryable: the sender keeps and re-sends); undefined otherwise.
   */
  wipeRefusal(): DstoreError | undefined {
    if (!this.isWiping) return undefined;
    return new DstoreError(
      ErrorCode.UNAVAILABLE,
      'this node is deleting its stale entries before it catches up (learner): retry',
    );
  }

  /**
   * Defers the answer of `batch`, refused whole by a member in transition: those waiting for it
   * wait for the re-send of its entries, and get `failure` if it fails or takes past the bound.
   */
  deferAnswer(batch: ForwardBatch, failure: DstoreError): void {
    this.counters.batchesDeferred++;
    this.deferredAnswers.add(batch, failure);
  }

  /** Stops the tombstone reaper's timer and answers the deferred batches (node shutdown). */
  close(): void {
    this.reaper.stop();
    this.deferredAnswers.close();
  }

  /**
   * After a RING: on a new epoch, every entry not acknowledged yet (in flight, waiting, or kept
   * after a failed forward) is taken off its link and appended to the link towards its key's
   * successor on the new ring (the CR invariant after a failover: the new successor may miss
   * exactly those). Versions make the re-send idempotent. A batch taken off settles once the
   * batches its entries went to settle (its clients are answered when the new tail has them);
   * an entry whose key has no successor now is acknowledged here (this node is its tail), unless
   * this node left the key's write path (then its waiters get the indeterminate error). That
   * relies on every predecessor holding what this node holds: true while a chain keeps its order,
   * and a chain whose order changes (a weight change) is `changing`, drained at the switch.
   *
   * Learners (replication step 4): when this node becomes `syncing` and was not at its previous
   * ring (it was `failed`, or this process is new), its unacknowledged entries are dropped (their
   * waiters get the indeterminate error: those writes may be on some replicas only). What it holds
   * stays for the map's writer to compare, range by range, with each range's tail (DIGEST): the
   * ranges that differ are deleted here up to an epoch (PURGE with `staleUpTo`) and copied again,
   * so a key deleted while it was away does not come back. A member `entering` a ring (step 5)
   * first deletes every entry it holds (see {@link wiping}): it holds nothing of its new chains.
   * When a chain's path holds a `promoting` learner, returns a promise that resolves once this
   * node is drained (see {@link drain}): the RING is answered only then. Undefined otherwise.
   */
  reconfigure(): Promise<void> | undefined {
    const epoch = this.ownership.epoch;
    if (epoch === this.routedEpoch) return this.draining;
    this.routedEpoch = epoch;
    if (this.ownership.replicationFactor <= 1 && this.links.length === 0) return undefined;
    const detached = this.links.map((link) => link.detach());
    this.links = [];
    this.linkTrie = [];
    const self = this.ownership.self;
    const states = this.ownership.replicaStates;
    const state = states.get(self) ?? 'up';
    // A returning member (`syncing`) and a member entering the ring (`entering`, replication
    // step 5) hold nothing current of the chains they learn: whatever they hold is stale.
    const returned = (state === 'syncing' || state === 'entering') && this.routedState !== state;
    this.routedState = state;
    if (returned && state === 'entering') this.wipe();
    let left: DstoreError | undefined;
    const chainOfEntry =
      (entries: readonly ReplicatedEntry[]) =>
      (index: number): Chain | undefined =>
        this.ownership.chainOf(entries[index]!.key);
    // One write's entries (one unit, all of one position: one chain) are routed together.
    const route = (
      entries: readonly ReplicatedEntry[],
      start: number,
      end: number,
    ): ForwardBatch | null | undefined =>
      // A returning node's entries predate its failure: never forwarded again.
      returned ? null : this.routeOnCurrentRing(entries, start, end);
    const leftChain = (): DstoreError => (left ??= leftChainError(self, epoch));
    for (const { batches, kept, keptOrigins } of detached) {
      forEachUnit(
        kept,
        (start, end) => {
          const routed = route(kept, start, end);
          // A deferred batch's waiters follow its entries to their new successors.
          const resent = resentByUnit(keptOrigins, start, end);
          if (resent === undefined) return;
          if (routed === null) resent(leftChain());
          else if (routed === undefined) resent(undefined);
          else routed.whenSettled(resent);
        },
        chainOfEntry(kept),
      );
      for (const batch of batches) {
        const next: ForwardBatch[] = [];
        let outside = false;
        forEachUnit(
          batch.entries,
          (start, end) => {
            const routed = route(batch.entries, start, end);
            if (routed === null) outside = true;
            else if (routed !== undefined && next[next.length - 1] !== routed && !next.includes(routed))
              next.push(routed);
          },
          chainOfEntry(batch.entries),
        );
        const failure = outside ? leftChain() : undefined;
        whenAll(next, (error) => batch.settleWith(failure ?? error));
      }
    }
    let promoting = this.ownership.switching;
    for (const memberState of states.values()) if (memberState === 'promoting') promoting = true;
    this.draining = promoting ? this.drain() : undefined;
    return this.draining;
  }

  /**
   * Resolves once every write this node admitted before now (including one whose engine update
   * has not appended its entry to a link yet) is answered, and every entry its links held before
   * now is acknowledged (nothing kept from a failed forward, nothing being sent again). With new
   * writes of a promoting learner's chains refused from this epoch on, that learner then holds
   * every write of those chains that any member holds, whatever position it takes when `up`.
   * Polls (only while a drain runs: a learner's promotion), never per request.
   */
  private drain(): Promise<void> {
    this.admittedBefore += this.admittedNow;
    this.admittedNow = 0;
    this.admitGeneration++;
    const mark = this.batchSeq;
    return new Promise((resolve) => {
      const check = (): void => {
        let drained = this.admittedBefore === 0;
        if (drained) {
          for (const link of this.links) {
            if (!link.drainedBefore(mark)) {
              drained = false;
              break;
            }
          }
        }
        if (drained) resolve();
        else setTimeout(check, DRAIN_POLL_MS).unref();
      };
      check();
    });
  }

  /**
   * The refusal of a value whose chain has a member out of room (not executed): the head's own
   * engine's code, as if it were full itself, since it keeps the chain's data alike.
   */
  private outOfRoom(successor: string): DstoreError {
    const code = this.engine.kind === 'memory' ? ErrorCode.OUT_OF_MEMORY : ErrorCode.OUT_OF_SPACE;
    return new DstoreError(
      code,
      `a member of this key's chain (from ${successor} down to the tail) is out of room: new values are refused until it has room again; reads, deletes and expiry changes go on`,
    );
  }

  /** A client write admitted at `generation` is answered: it no longer holds a drain. */
  private writeAnswered(generation: number): void {
    if (generation === this.admitGeneration) this.admittedNow--;
    else this.admittedBefore--;
  }

  /** Deletes every entry (values and tombstones), retried after a storage error; see {@link wiping}. */
  private wipe(): void {
    this.isWiping = true;
    this.counters.wipes++;
    const attempt = (): void => {
      let cleared: Promise<number>;
      try {
        cleared = this.engine.clear();
      } catch (error) {
        cleared = Promise.reject(error);
      }
      cleared.then(
        () => {
          this.isWiping = false;
        },
        () => {
          setTimeout(attempt, WIPE_RETRY_MS).unref();
        },
      );
    };
    attempt();
  }

  /** Deadline of one REPLICATE, in ms. */
  get timeoutMs(): number {
    return this.options.timeoutMs;
  }

  /** The epoch forwards are sent on: this node's. */
  get epoch(): number {
    return this.ownership.epoch;
  }

  /** The write path of `key` as one string (members joined by spaces): a stream's unit of blocking. */
  chainId(key: Uint8Array): string {
    return this.ownership.chainOf(key)?.path.join(' ') ?? '';
  }

  /** Bytes held unacknowledged over every link (STATS). */
  get queuedBytes(): number {
    let bytes = 0;
    for (const link of this.links) bytes += link.bytes;
    return bytes;
  }

  /**
   * The link towards this node's successor in `chain`'s write path (the serving members, then the
   * learners), or undefined when this node is the path's last member (or not in it).
   */
  private forwardLinkOf(chain: Chain | undefined): ForwardLink | undefined {
    if (chain === undefined) return undefined;
    const at = chain.path.indexOf(this.ownership.self);
    return at < 0 || at + 1 >= chain.path.length ? undefined : this.linkOf(chain, at);
  }

  /**
   * Whether the head of `chain` (the chain of `key`) refuses new writes: a learner of it is being
   * promoted (the drain), or a ring change freezes it (`Ownership.freezes`).
   */
  private promotingIn(chain: Chain, key: Uint8Array): boolean {
    // A ring change (step 5): its changing chains drain before the next ring serves, and stay
    // frozen until every node has the next ring.
    if (this.ownership.freezes(key, chain)) return true;
    const path = chain.path;
    if (path === chain.serving) return false;
    const states = this.ownership.replicaStates;
    for (let i = chain.serving.length; i < path.length; i++) {
      if (states.get(path[i]!) === 'promoting') return true;
    }
    return false;
  }

  /**
   * The forward stream of the entries of `chain`, where this node is at `position` (not the last):
   * one stream per (position, rest of the write path after this node), the receiver telling it
   * by the same two ({@link streamNode}). Not one per successor: an answer waits for the successor's own
   * forwards, so a batch mixing the entries of a head (whose successor forwards them) with those
   * of a middle (whose successor is their tail) would make answers wait on each other around the
   * ring and deadlock; separated, a stream's answer depends only on streams of later positions,
   * which end at the tail. And per rest of the path, not per successor: a stream's batches settle
   * in order, so a member further down that stops answering (until its failover) would hold back
   * the writes of every chain sharing the stream; separated, only those of the chains it is in.
   * Found through {@link linkTrie}: no allocation once the stream exists.
   */
  private linkOf(chain: Chain, position: number): ForwardLink {
    const path = chain.path;
    const node = streamNode(this.linkTrie, path, position + 1);
    let link = node.link;
    if (link === undefined) {
      link = new ForwardLink(path[position + 1]!, position, this);
      node.link = link;
      this.links.push(link);
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
   * runs, when the link holds its byte bound already, and with UNAVAILABLE while a learner of the
   * key's chain is being promoted or a ring change freezes the chain (retryable, not executed).
   */
  write<T>(
    key: Uint8Array,
    options: UpdateOptions,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
    done: (error: unknown, result: T | undefined) => void,
  ): void {
    const chain = this.ownership.chainOf(key);
    if (chain !== undefined && this.promotingIn(chain, key)) {
      done(this.promotingRefusal(), undefined);
      return;
    }
    const link = this.forwardLinkOf(chain);
    if (link === undefined) {
      // The chain has one serving member (this node): nothing to forward.
      if (this.engine.updateNow !== undefined) {
        let result: T;
        try {
          result = this.engine.updateNow(key, options, decide);
        } catch (error) {
          done(error, undefined);
          return;
        }
        done(undefined, result);
        return;
      }
      answerWith(() => this.engine.update(key, options, decide), done);
      return;
    }
    // The fence let this write in: this node is the head (position 0) of the key's chain.
    const refusal = this.admissionRefusal(link, key, options.valueBytes);
    if (refusal !== undefined) {
      done(refusal, undefined);
      return;
    }
    const pending = this.admit(link, done);
    const writeEpoch = options.writeEpoch;
    // The entry the engine's step leaves goes on the link: at once inside the step where the
    // engine applies it later (lmdb: the forward runs alongside the head's commit), and only
    // after the step where it applies in the step (memory): a write the engine then refuses
    // (past its cap) must not reach the other members while its client is told not executed.
    let decidedMutation: Mutation | undefined;
    let decidedCurrent: VersionedValue | undefined;
    let decidedVersion = 0;
    const forward = (current: VersionedValue | undefined, mutation: Mutation, version: number): void => {
      const entry = forwardedEntry(key, current, mutation, writeEpoch, version);
      if (entry === undefined) pending.restsOnLink(key);
      else pending.sent(link.append(entry), mutation.kind === 'put');
    };
    const engine = this.engine;
    const appliedInStep = engine.updateNow !== undefined;
    const recorded = (current: VersionedValue | undefined, now: number, version: number): Decision<T> => {
      const decision = decide(current, now, version);
      if (appliedInStep) {
        decidedMutation = decision.mutation;
        decidedCurrent = current;
        decidedVersion = version;
      } else forward(current, decision.mutation, version);
      return decision;
    };
    if (engine.updateNow !== undefined) {
      // Applied and acknowledged now (memory): no promise and no microtask per parked write.
      let result: T;
      try {
        result = engine.updateNow(key, options, recorded);
      } catch (error) {
        pending.failed(error);
        return;
      }
      if (decidedMutation !== undefined) forward(decidedCurrent, decidedMutation, decidedVersion);
      pending.applied(result);
      return;
    }
    let updated: Promise<T>;
    try {
      updated = engine.update(key, options, recorded);
    } catch (error) {
      pending.failed(error);
      return;
    }
    updated.then(
      (result) => pending.applied(result),
      (error: unknown) => pending.failed(error),
    );
  }

  /**
   * {@link write} of a decision over several keys of one position (a transaction on keys of one
   * hash tag, so one chain): `decide` runs in one engine step (`StorageEngine.updateMany`) and
   * the entries it leaves go down the chain as one unit, in one REPLICATE (see
   * {@link ForwardLink.appendUnit}), so every member applies them together. A decision whose
   * entries together pass one frame's limits is replaced by one that writes nothing, inside the
   * step, and refused (FRAME_TOO_LARGE, not executed). Same admission and answers as `write`.
   */
  writeMany<T>(
    keys: readonly Uint8Array[],
    options: ManyUpdateOptions,
    decide: ManyDecider<T>,
    done: (error: unknown, result: T | undefined) => void,
  ): void {
    const key = keys[0]!;
    const chain = this.ownership.chainOf(key);
    if (chain !== undefined && this.promotingIn(chain, key)) {
      done(this.promotingRefusal(), undefined);
      return;
    }
    const engine = this.engine;
    const link = this.forwardLinkOf(chain);
    if (link === undefined) {
      // One serving member (this node): nothing to forward.
      answerWith(() => engine.updateMany(keys, options, decide), done);
      return;
    }
    let valueBytes: number | undefined;
    for (const bytes of options.valueBytes) if (bytes !== undefined) valueBytes = (valueBytes ?? 0) + bytes;
    const refusal = this.admissionRefusal(link, key, valueBytes);
    if (refusal !== undefined) {
      done(refusal, undefined);
      return;
    }
    const pending = this.admit(link, done);
    const writeEpoch = options.writeEpoch;
    let unit: ReplicatedEntry[] | undefined;
    let oversized: DstoreError | undefined;
    let stores = false;
    const recorded: ManyDecider<T> = (current, now, version) => {
      const decision = decide(current, now, version);
      const entries: ReplicatedEntry[] = [];
      let bytes = 0;
      for (let i = 0; i < keys.length; i++) {
        const mutation = decision.mutations[i]!;
        const entry = forwardedEntry(keys[i]!, current[i], mutation, writeEpoch, version);
        if (entry === undefined) continue;
        if (mutation.kind === 'put') stores = true;
        entries.push(entry);
        bytes += entrySize(entry);
      }
      if (entries.length > this.maxBatchKeys || bytes > this.maxBatchBytes) {
        // One unit travels in one frame: past it nothing is written anywhere.
        oversized = new DstoreError(
          ErrorCode.FRAME_TOO_LARGE,
          `the transaction's writes take ${bytes} bytes in ${entries.length} entries together, past one replication frame (${this.maxBatchBytes} bytes, ${this.maxBatchKeys} entries): not executed`,
        );
        return { mutations: keys.map(() => NO_MUTATION), result: decision.result };
      }
      unit = entries;
      // lmdb: sent alongside the head's commit (memory: after its step, as `write` does).
      if (engine.updateManyNow === undefined) forwardUnit();
      return decision;
    };
    const forwardUnit = (): void => {
      if (unit === undefined || unit.length === 0) pending.restsOnLink(key);
      else pending.sent(unit.length === 1 ? link.append(unit[0]!) : link.appendUnit(unit), stores);
    };
    const applied = (result: T): void => {
      if (oversized !== undefined) pending.refused(oversized);
      else pending.applied(result);
    };
    if (engine.updateManyNow !== undefined) {
      let result: T;
      try {
        result = engine.updateManyNow(keys, options, recorded);
      } catch (error) {
        pending.failed(error);
        return;
      }
      if (oversized === undefined) {
        // A value one of its later puts evicted (an eviction policy) went down the chain as an
        // eviction during the step: its put must not follow, or the members would keep what the
        // head no longer has.
        unit = unit?.filter((entry) => entry.value === null || engine.header(entry.key)?.tombstone === false);
        forwardUnit();
      }
      applied(result);
      return;
    }
    let updated: Promise<T>;
    try {
      updated = engine.updateMany(keys, options, recorded);
    } catch (error) {
      pending.failed(error);
      return;
    }
    updated.then(applied, (error: unknown) => pending.failed(error));
  }

  /**
   * Whether a write of `count` entries holding `bytes` of keys and values goes down a chain as one
   * unit (one REPLICATE frame): what {@link writeMany} refuses past.
   */
  fitsOneFrame(count: number, bytes: number): boolean {
    return count <= this.maxBatchKeys && bytes + count * ENTRY_OVERHEAD <= this.maxBatchBytes;
  }

  /** The refusal of a write whose chain is changing members (not executed, retryable). */
  private promotingRefusal(): DstoreError {
    this.counters.refusedPromoting++;
    // BUSY, as every refusal while the map changes (Redis's TRYAGAIN on the RESP port): the chain
    // is alive and takes writes again within a ring change, not a member down (CLUSTERDOWN).
    return new DstoreError(
      ErrorCode.BUSY,
      "this key's chain is changing members (a replica is promoted, or the ring changes): retry",
    );
  }

  /**
   * Why a client write of `key` towards `link` is refused before it runs (not executed), or
   * undefined: the link holds its byte bound (BUSY), a member down the stream is out of room and
   * the write stores `valueBytes` (undefined: no value), or the chain's writes wait to be sent
   * again after a failed forward (UNAVAILABLE).
   */
  private admissionRefusal(
    link: ForwardLink,
    key: Uint8Array,
    valueBytes: number | undefined,
  ): DstoreError | undefined {
    const successor = link.successor;
    if (link.bytes >= this.options.queueBytes) {
      this.counters.refusedBusy++;
      return new DstoreError(
        ErrorCode.BUSY,
        `replication to ${successor} holds ${link.bytes} bytes unacknowledged (limit ${this.options.queueBytes}): retry later`,
      );
    }
    if (
      valueBytes !== undefined &&
      link.memberFull &&
      !this.roomMadeOn(link, key.byteLength + valueBytes) &&
      link.refusesValues()
    ) {
      this.counters.refusedFull++;
      return this.outOfRoom(successor);
    }
    if (link.blocks(key)) {
      if (link.blockedForRoom) {
        // Kept for room down the chain: a delete or an expiry change goes on (it frees room, or
        // keeps what is there), a value is refused as when the member says it is full.
        if (valueBytes === undefined) return undefined;
        this.counters.refusedFull++;
        return this.outOfRoom(successor);
      }
      // Writes of a failed forward wait to be sent again (the successor is unreachable, or a
      // failover is under way): a new write is refused before it runs, so the client retries it.
      this.counters.refusedUnavailable++;
      return new DstoreError(
        ErrorCode.UNAVAILABLE,
        `replication to ${successor} failed and is being retried (a failover may be under way): retry`,
      );
    }
    return undefined;
  }

  /**
   * Admits a client write towards `link` (counted until answered, so a drain that begins
   * meanwhile waits for it) and returns what follows it to its answer ({@link PendingWrite}).
   */
  private admit<T>(
    link: ForwardLink,
    done: (error: unknown, result: T | undefined) => void,
  ): PendingWrite<T> {
    const generation = this.admitGeneration;
    this.admittedNow++;
    return new PendingWrite(link, done, () => this.writeAnswered(generation));
  }

  /**
   * REPLICATE from a predecessor: refused whole (STALE_EPOCH, NOT_OWNER) unless it was sent on this
   * node's epoch and this node follows someone in every entry's chain; else every entry is applied
   * if newer (one atomic engine write, in arrival order), forwarded to this node's successor in its
   * chain, and `done` is called once the apply is acknowledged (lmdb: flushed) and every forward is
   * answered: the tail answers after its apply alone.
   */
  replicate(request: ReplicateRequest, stream: object, done: ReplicateDone): void {
    const self = this.ownership.self;
    const lease = this.options.lease;
    // A learner serves nothing: every predecessor in its path checked its own lease, and the
    // epoch fence below still holds it to its map.
    if (lease !== undefined && !lease.held && !isLearnerState(this.ownership.replicaStates.get(self))) {
      done(new DstoreError(ErrorCode.UNAVAILABLE, lease.refusal()));
      return;
    }
    const wiping = this.wipeRefusal();
    if (wiping !== undefined) {
      done(wiping);
      return;
    }
    if (request.epoch !== this.ownership.epoch) {
      done(
        new DstoreError(
          ErrorCode.STALE_EPOCH,
          `REPLICATE sent on epoch ${request.epoch}, this node is at epoch ${this.ownership.epoch}`,
        ),
      );
      return;
    }
    const entries = request.entries;
    const chains = new Array<Chain>(entries.length);
    const positions = new Array<number>(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const chain = this.ownership.chainOf(entries[i]!.key);
      const at = chain === undefined ? -1 : chain.path.indexOf(self);
      if (chain === undefined || at <= 0) {
        done(
          new DstoreError(
            ErrorCode.NOT_OWNER,
            `REPLICATE of a key whose write path (${chain?.path.join(', ') ?? 'none'}) has no predecessor of ${self}`,
          ),
        );
        return;
      }
      // One REPLICATE is one stream of its sender: every entry has this node at the same position
      // and the same members after it. One that does not was routed on another ring (or with
      // another write's entries): taken, it would skip the members between its sender and here.
      if (i > 0 && (at !== positions[0] || !samePath(chain.path, chains[0]!.path, at))) {
        done(
          new DstoreError(
            ErrorCode.NOT_OWNER,
            `REPLICATE mixes write paths (${chains[0]!.path.join(', ')}) and (${chain.path.join(', ')}): not one stream of its sender`,
          ),
        );
        return;
      }
      chains[i] = chain;
      positions[i] = at;
    }
    if (entries.length > 0) {
      // One stream per (connection, sender's link): its batches are consecutive, or restart at 1.
      const inbound = streamNode(this.inboundTrie, chains[0]!.path, positions[0]!);
      let last = this.streams.get(stream);
      if (last === undefined) {
        last = new Map();
        this.streams.set(stream, last);
      }
      const previous = last.get(inbound) ?? 0;
      if (request.batch !== 1 && request.batch !== previous + 1) {
        this.counters.gapsRefused++;
        done(
          new DstoreError(
            ErrorCode.REPLICATION_GAP,
            `REPLICATE batch ${request.batch} after batch ${previous} of its stream: a batch is missing; send again from batch 1 on a new connection`,
          ),
        );
        return;
      }
      last.set(inbound, request.batch);
    }
    // Copied once: the engine stores them after this tick (lmdb) and the forward sends them later.
    const copy = copierOf(entries);
    const chainAt = (index: number): Chain | undefined => chains[index];
    const copies = new Array<VersionedEntry>(entries.length);
    const forwards: ForwardBatch[] = [];
    const addForward = (batch: ForwardBatch): void => {
      if (forwards[forwards.length - 1] !== batch && !forwards.includes(batch)) forwards.push(batch);
    };
    // The write of several keys being gathered for its forward, and the index past its last entry.
    let unit: ReplicatedEntry[] | undefined;
    let unitEnd = 0;
    // A learner takes copies of its ranges from the tail meanwhile: an expired copy (an eviction)
    // leaves it a tombstone, or an older copy of the key read before it could store it again.
    const learner = isLearnerState(this.ownership.replicaStates.get(self));
    const now = learner ? Date.now() : 0;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      const key = copy(entry.key);
      const value = entry.value === null ? null : copy(entry.value);
      // A delete leaves a tombstone with its version: a re-sent older write of the key (after a
      // failover) must never bring it back, not even for a moment on the tail.
      const gone = value === null || (learner && entry.expireAt !== 0 && isExpired(entry.expireAt, now));
      copies[i] = {
        key,
        value: value ?? NO_VALUE,
        writeEpoch: entry.writeEpoch,
        version: entry.version,
        expireAt: entry.expireAt,
        deleted: gone,
        tombstone: gone,
      };
      // A key of its own: the reaper keeps it for minutes, which must not hold the whole frame.
      if (gone) this.reaper.add(key.slice(), entry.writeEpoch, entry.version);
      const chain = chains[i]!;
      const at = positions[i]!;
      if (at + 1 >= chain.path.length) continue;
      const forwarded = {
        key,
        value,
        writeEpoch: entry.writeEpoch,
        version: entry.version,
        expireAt: entry.expireAt,
      };
      if (unit !== undefined && unitEnd > i) {
        // An entry of a write of several keys: forwarded with the others, in one batch.
        unit.push(forwarded);
        if (unitEnd === i + 1) addForward(this.linkOf(chain, at).appendUnit(unit));
        continue;
      }
      unitEnd = unitEndAt(entries, i, chainAt);
      if (unitEnd > i + 1) {
        unit = [forwarded];
        continue;
      }
      addForward(this.linkOf(chain, at).append(forwarded));
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
        whenAll(forwards, (error) => {
          if (error !== undefined) done(answerUpChain(error));
          // Told up the chain: this member or one further down is out of room.
          else done(undefined, this.engine.pastClientRoom() || forwards.some((batch) => batch.full));
        });
      },
      (error: unknown) => done(error),
    );
  }
}

/**
 * Purges the tombstones replicated deletes leave on chain members once they can no longer matter:
 * a re-send of an older write of the key can only come from a predecessor's unacknowledged
 * entries, which are acknowledged, re-routed (a new epoch) or retried within the failure timeout
 * plus a few replication timeouts. So each tombstone lives `ttlMs` (default the larger of 60 s and
 * 10 replication timeouts), checked by one unref'd timer, never per request; a tombstone replaced
 * meanwhile (a newer write or delete of the key) is left alone. The list is in memory: a node that
 * restarts keeps the tombstones it had (invisible to clients, counted in STATS) until a later
 * delete of the same key is purged.
 */
class TombstoneReaper {
  private queue: { key: Uint8Array; writeEpoch: number; version: number; dueAt: number }[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly engine: StorageEngine,
    private readonly ttlMs: number,
    private readonly purged: (count: number) => void,
  ) {}

  add(key: Uint8Array, writeEpoch: number, version: number): void {
    this.queue.push({ key, writeEpoch, version, dueAt: performance.now() + this.ttlMs });
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.reap(), Math.max(100, Math.min(5000, Math.floor(this.ttlMs / 4))));
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private reap(): void {
    const now = performance.now();
    const byEpoch = new Map<number, Uint8Array[]>();
    while (this.head < this.queue.length && this.queue[this.head]!.dueAt <= now) {
      const due = this.queue[this.head++]!;
      let header: ReturnType<StorageEngine['header']>;
      try {
        header = this.engine.header(due.key);
      } catch {
        continue;
      }
      // Only the tombstone this delete left: a newer entry of the key is not ours to remove.
      if (header?.tombstone !== true || header.version !== due.version) continue;
      const keys = byEpoch.get(due.writeEpoch) ?? [];
      keys.push(due.key);
      byEpoch.set(due.writeEpoch, keys);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.stop();
    }
    for (const [writeEpoch, keys] of byEpoch) {
      this.engine.removeTombstones(keys, writeEpoch).then(this.purged, () => undefined);
    }
  }
}
