import { murmur3Bytes, RangeIndex } from '@dstore/hashring';
import {
  type Connection,
  type DigestRequest,
  DstoreError,
  type EntryResponse,
  ErrorCode,
  type HashRange,
  type MigratedEntry,
  type MigratePutRequest,
  type MigrateRequest,
  Op,
  type PullRequest,
  type PurgeRequest,
  type Response,
  type RingRequest,
} from '@dstore/protocol';
import type { ScannedEntry, StorageEngine } from './engines/index.js';
import { keyToString } from './engines/keys.js';
import type { Ownership } from './ownership.js';
import { connectPeer, type PeerLinkOptions, type PeerLinks } from './peer-links.js';

/** Bounds of the MIGRATE stream: batch size and batches awaiting the target's acknowledgement. */
export interface MigrationLimits {
  /** A batch is sent once its keys and values reach this many bytes. */
  readonly batchBytes: number;
  /** A batch is sent once it holds this many keys (at most the protocol's maxBatchKeys). */
  readonly batchKeys: number;
  /** Batches in flight at once: the flow control towards the target. */
  readonly maxInFlightBatches: number;
  /** Deadline of one batch, in ms. */
  readonly batchTimeoutMs: number;
  /**
   * Most keys per second one MIGRATE stream sends (0 = unbounded): trades migration time for
   * client latency, since an unbounded stream takes every core it can get.
   */
  readonly maxKeysPerSecond: number;
}

/**
 * Defaults: 64 KiB / 100-key batches, one in flight, 5,000 keys/s per stream (the benchmark's
 * client p99 stayed within 2x of steady state at this rate on 2 cores; see the balancer's BENCHMARKS.md).
 */
export const DEFAULT_MIGRATION_LIMITS: MigrationLimits = {
  batchBytes: 64 * 1024,
  batchKeys: 100,
  maxInFlightBatches: 1,
  batchTimeoutMs: 30_000,
  maxKeysPerSecond: 5000,
};

/** What one MIGRATE sent: the copies its target acknowledged, and their keys' and values' bytes. */
export interface Streamed {
  readonly keys: number;
  readonly bytes: number;
}

/** Counters of the migrations this node took part in (STATS). */
export interface MigrationCounters {
  keysSent: number;
  /** Bytes of the keys and values of {@link keysSent}. */
  bytesSent: number;
  /** Copies stored by MIGRATE_PUT. */
  keysReceived: number;
  /** Copies MIGRATE_PUT skipped: the local entry (value or tombstone) was as new or newer. */
  keysSkipped: number;
  keysPurged: number;
  /** Tombstones deleted by PURGE (their migration is over, no copy can arrive any more). */
  tombstonesPurged: number;
  /** Entries a returning member deleted as stale before their ranges were copied again (PURGE with staleUpTo). */
  staleRemoved: number;
  /** Copies pulled from an old owner before a read-modify-write of a moving key (PULL). */
  keysPulled: number;
}

/** Keys scanned between two yields to the event loop, so client requests keep flowing. */
const SCAN_SLICE = 1000;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * One caller of a shared engine pass (see {@link EngineScans}): the entries whose ring position
 * lies in one of its ranges are handed to `visit` with the range's index in its list.
 */
export interface ScanVisitor {
  /** The caller's ranges, each mapped to its index in the caller's list. */
  readonly ranges: RangeIndex<number>;
  /** Whether tombstones are visited too (default: only values). */
  readonly tombstones: boolean;
  visit(entry: ScannedEntry, range: number): void;
}

/**
 * The engine passes of MIGRATE, PURGE and DIGEST, shared: every caller that asks while no pass
 * has started yet joins the next one, so one pass over the engine serves them all. A returning
 * member's catch-up sends all its DIGEST chunks (and PURGE chunks) at once: one pass answers the
 * lot, where each chunk used to scan the whole engine on its own (the costliest part of "copy only
 * the difference" at 30,000 keys). A caller that arrives while a pass runs joins the one after it:
 * passes never overlap (two would compete for the same cores) and a burst costs at most two.
 * Each key's ring position is computed once per pass whatever the number of callers.
 */
export class EngineScans {
  /** The pass callers join now: not started yet. */
  private next: { readonly visitors: ScanVisitor[]; readonly done: Promise<void> } | undefined;
  /** The pass running now, if any: the next one starts after it. */
  private running: Promise<void> = Promise.resolve();
  /** Passes run so far (STATS `migration.scan_passes`: a burst of requests shares passes). */
  passes = 0;

  constructor(
    private readonly engine: StorageEngine,
    private readonly position: (key: Uint8Array) => number,
  ) {}

  /**
   * Visits every entry of `visitor`'s ranges in the next pass; resolves once that pass ended. The
   * caller flushes the engine first if it must see writes issued before it asked: the pass starts
   * after this call.
   */
  scan(visitor: ScanVisitor): Promise<void> {
    const next = this.next;
    if (next !== undefined) {
      next.visitors.push(visitor);
      return next.done;
    }
    const visitors = [visitor];
    // After the running pass, and at least one turn of the event loop later: the requests decoded
    // from the same reads (a burst of chunks) join before the pass starts.
    const done = this.running
      .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
      .then(() => {
        this.next = undefined;
        return this.pass(visitors);
      });
    this.next = { visitors, done };
    this.running = done.catch(() => undefined);
    return done;
  }

  /**
   * The entries (keys and headers) of `ranges` (values only unless `tombstones`), in one pass
   * (shared, see {@link scan}).
   */
  async entriesIn(ranges: readonly HashRange[], tombstones: boolean): Promise<ScannedEntry[]> {
    const entries: ScannedEntry[] = [];
    await this.scan({ ranges: indexRanges(ranges), tombstones, visit: (entry) => entries.push(entry) });
    return entries;
  }

  private async pass(visitors: readonly ScanVisitor[]): Promise<void> {
    this.passes++;
    const tombstones = visitors.some((visitor) => visitor.tombstones);
    let scanned = 0;
    // start === end is the whole ring: one pass over every key, each matched against each
    // caller's ranges (a binary search over their sorted ends).
    for (const entry of this.engine.entriesInRange({ start: 0, end: 0 }, () => 0, { tombstones })) {
      const position = this.position(entry.key);
      for (const visitor of visitors) {
        if (entry.tombstone && !visitor.tombstones) continue;
        const range = visitor.ranges.valueAt(position);
        if (range !== undefined) visitor.visit(entry, range);
      }
      // Yields so that client requests keep flowing during a scan of a large engine.
      if (++scanned % SCAN_SLICE === 0) await yieldToEventLoop();
    }
  }
}

/** Each of `ranges` mapped to its index in the list. */
function indexRanges(ranges: readonly HashRange[]): RangeIndex<number> {
  const order = new Map(ranges.map((range, i) => [range, i]));
  return new RangeIndex(ranges, (range) => order.get(range as HashRange)!);
}

/**
 * DIGEST's per-range value (see the protocol README): the number of values whose writeEpoch is
 * below `below`, then two sums (mod 2^32) of murmur3 of each one's key, seeded with its version's
 * low and high 32 bits, as 12 big-endian bytes per range. Order-free, so one pass over the engine
 * in any order accumulates every range at once.
 */
export class RangeDigests {
  private readonly sums: Uint32Array;

  constructor(
    private readonly count: number,
    private readonly below: number,
  ) {
    this.sums = new Uint32Array(count * 3);
  }

  /** Adds a value of range `range` (ignored when written at or after `below`, or a tombstone). */
  add(entry: ScannedEntry, range: number): void {
    if (entry.tombstone || entry.writeEpoch >= this.below) return;
    const low = entry.version >>> 0;
    const high = Math.floor(entry.version / 0x1_0000_0000) >>> 0;
    const at = range * 3;
    const sums = this.sums;
    // Uint32Array stores wrap mod 2^32.
    sums[at] = sums[at]! + 1;
    sums[at + 1] = sums[at + 1]! + murmur3Bytes(entry.key, entry.key.length, low);
    sums[at + 2] = sums[at + 2]! + murmur3Bytes(entry.key, entry.key.length, high ^ 0x9e37_79b9);
  }

  /** The 12-byte digest of each range, in order. */
  values(): Uint8Array[] {
    const values: Uint8Array[] = [];
    for (let range = 0; range < this.count; range++) {
      const bytes = new Uint8Array(12);
      const view = new DataView(bytes.buffer);
      for (let i = 0; i < 3; i++) view.setUint32(i * 4, this.sums[range * 3 + i]!);
      values.push(bytes);
    }
    return values;
  }
}

/**
 * The storage node's side of key migration: RING (ownership), MIGRATE (stream ranges to their
 * new owner, each copy with its version), MIGRATE_PUT (store the copies that are newer than the
 * local entry) and PURGE (drop what moved away, end the tombstones of what moved in).
 */
export class MigrationService {
  /** Counters for STATS. */
  readonly counters: MigrationCounters = {
    keysSent: 0,
    bytesSent: 0,
    keysReceived: 0,
    keysSkipped: 0,
    keysPurged: 0,
    tombstonesPurged: 0,
    staleRemoved: 0,
    keysPulled: 0,
  };
  /** PULLs in flight by key (latin1): later requests of the key wait for them, in order. */
  private readonly pulls = new Map<string, Promise<void>>();
  /** The engine passes of MIGRATE, PURGE and DIGEST (shared by the requests that arrive together). */
  readonly scans: EngineScans;

  constructor(
    private readonly engine: StorageEngine,
    private readonly ownership: Ownership,
    private readonly options: {
      /** How the node reaches its peers (the cluster secret, TLS): MIGRATE's stream connects with it. */
      readonly peer: PeerLinkOptions;
      /** The node's long-lived peer links: PULLs go to old owners over them. */
      readonly links: PeerLinks;
      readonly limits: MigrationLimits;
      /**
       * The refusal of copies while the node wipes its entries before it catches up as a learner
       * (replication: `ReplicationService.wipeRefusal`), undefined otherwise. Omitted: never.
       */
      readonly wipeRefusal?: () => DstoreError | undefined;
    },
  ) {
    // Every caller checks that the node has a ring before it scans: positions need its algorithm.
    this.scans = new EngineScans(engine, (key) => ownership.ring?.position(key) ?? 0);
  }

  /** RING: adopt the ring (older epochs are ignored). */
  ring(request: RingRequest): void {
    this.ownership.apply(request);
  }

  /**
   * MIGRATE: streams the keys of the ranges to the target in bounded batches, at most
   * `maxInFlightBatches` unacknowledged. Resolves with the keys sent once all are acknowledged.
   */
  async migrate(request: MigrateRequest): Promise<Streamed> {
    const ring = this.ownership.ring;
    if (ring === undefined) {
      throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'MIGRATE before any RING: ownership unknown');
    }
    // The target must be a member of the ring this node was given, at the address the ring holds:
    // a MIGRATE can never make this node send its keys anywhere else.
    const address = this.ownership.addressOf(request.target);
    if (address === undefined || address.host !== request.host || address.port !== request.port) {
      throw new DstoreError(
        ErrorCode.NO_PERMISSION,
        `MIGRATE target ${request.target} at ${request.host}:${request.port} is not a member of this ` +
          "node's ring at that address",
      );
    }
    // Writes issued before the RING that moved these ranges must be visible to the scan.
    await this.engine.flush();
    const entries = await this.scans.entriesIn(request.ranges, false);
    const keys = entries.map((entry) => entry.key);
    const connection = await connectPeer(
      { id: request.target, host: request.host, port: request.port },
      { ...this.options.peer, requestTimeoutMs: this.options.limits.batchTimeoutMs },
    );
    try {
      return await this.stream(connection, request.epoch, keys);
    } finally {
      connection.destroy();
    }
  }

  /**
   * MIGRATE_PUT: stores each copy that is newer than the local entry: when there is none, or the
   * copy's writeEpoch is greater than the entry's (a value or a tombstone). Every client write
   * this node accepted during the migration has a writeEpoch >= the migration's epoch, and every
   * copy is older than that (see {@link Ownership.writeEpoch}), so a copy never overwrites an
   * acknowledged write nor resurrects a delete, even after this node restarted: the versions are
   * stored with the data.
   */
  async migratePut(request: MigratePutRequest): Promise<number> {
    if (this.ownership.replicationFactor > 1 && this.isLearnerCopy(request)) return this.learnerPut(request);
    for (const entry of request.entries) {
      const owner = this.ownership.refusal(entry.key, false);
      if (owner !== undefined) {
        throw new DstoreError(ErrorCode.NOT_OWNER, `migrated key is owned by ${owner}, not by this node`);
      }
    }
    // A late batch of a finished (purged) or unknown migration must not land: PURGE ended the
    // tombstones of its ranges, so it could resurrect a delete.
    if (!this.ownership.expectsMigration(request.epoch)) {
      throw new DstoreError(
        ErrorCode.INVALID_ARGUMENT,
        `no migration into this node is pending at epoch ${request.epoch}`,
      );
    }
    // A copy is older than the migration moving it, so its writeEpoch is below the request's
    // epoch; one that is not comes from another cluster map generation (epochs restart with a new
    // map) and is capped, so it cannot beat a write made here during this migration.
    const ceiling = Math.max(0, Math.min(request.epoch - 1, 0xffff_ffff));
    const entries = request.entries.some((entry) => entry.writeEpoch > ceiling)
      ? request.entries.map((entry) =>
          entry.writeEpoch > ceiling ? { ...entry, writeEpoch: ceiling } : entry,
        )
      : request.entries;
    // One atomic write for the batch (lmdb: one transaction, fsync'ed before the answer), each
    // copy compared with the entry as it is when the write applies.
    const stored = await this.engine.applyIfNewer(entries);
    this.counters.keysReceived += stored;
    this.counters.keysSkipped += entries.length - stored;
    return stored;
  }

  /** Whether a MIGRATE_PUT is a copy for a learner: this node is a learner of its first key's chain. */
  private isLearnerCopy(request: MigratePutRequest): boolean {
    const first = request.entries[0];
    return first !== undefined && this.learns(first.key);
  }

  /** Whether this node is a learner of `key`'s chain: in its write path after the serving members. */
  private learns(key: Uint8Array): boolean {
    const chain = this.ownership.chainOf(key);
    return chain !== undefined && chain.path.indexOf(this.ownership.self) >= chain.serving.length;
  }

  /**
   * MIGRATE_PUT to a learner (replication step 4): the serving tail's copies of a range whose write
   * path ends at this node. Accepted only at this node's epoch (a stream of an older epoch may come
   * from a tail that has changed since: the balancer streams the range again from the current one)
   * and once the wipe is done, for keys whose path holds this node as a learner. Applied by
   * `(writeEpoch, version)` as sent, not capped: the feed brings every write made since the
   * learner entered the path through the forward streams, so a copy never beats a forwarded write
   * or its tombstone, and a copy keeps the exact version every serving member holds.
   */
  private async learnerPut(request: MigratePutRequest): Promise<number> {
    const wiping = this.options.wipeRefusal?.();
    if (wiping !== undefined) throw wiping;
    if (request.epoch !== this.ownership.epoch) {
      throw new DstoreError(
        ErrorCode.STALE_EPOCH,
        `learner copy sent on epoch ${request.epoch}, this node is at epoch ${this.ownership.epoch}`,
      );
    }
    for (const entry of request.entries) {
      if (!this.learns(entry.key)) {
        const path = this.ownership.chainOf(entry.key)?.path.join(', ') ?? 'none';
        throw new DstoreError(
          ErrorCode.NOT_OWNER,
          `copied key's chain (${path}) does not hold ${this.ownership.self} as a learner`,
        );
      }
    }
    const stored = await this.engine.applyIfNewer(request.entries);
    this.counters.keysReceived += stored;
    this.counters.keysSkipped += request.entries.length - stored;
    return stored;
  }

  /**
   * PURGE: deletes the entries (values and tombstones) of the ranges this node does not own, and
   * the tombstones of those it owns (ranges that moved in: their migration is over, no copy can
   * arrive any more), after ending the ranges' migration state. With replication: the entries of
   * the ranges whose write path on the current ring no longer holds this node (it left their
   * chains in a ring change); the tombstones of the keys it keeps stay.
   */
  async purge(request: PurgeRequest): Promise<number> {
    if (request.staleUpTo !== undefined) return this.purgeStale(request.ranges, request.staleUpTo);
    // First, so that a late MIGRATE_PUT of this migration is refused from now on: it could
    // otherwise land on a key whose tombstone is being removed below.
    this.ownership.finish(request.ranges, request.epoch);
    // A DEL decided before `finish` may still be queued (lmdb commits per batch): wait for it, so
    // the scan below sees its tombstone and ends it, instead of leaving it behind for good.
    await this.engine.flush();
    const ring = this.ownership.ring;
    let deleted = 0;
    let tombstones = 0;
    if (ring !== undefined && ring.size > 0) {
      const replicated = this.ownership.replicationFactor > 1;
      const entries = await this.scans.entriesIn(request.ranges, true);
      for (let start = 0; start < entries.length; start += SCAN_SLICE) {
        const deletions: Promise<boolean>[] = [];
        const ended: Uint8Array[] = [];
        for (const entry of entries.slice(start, start + SCAN_SLICE)) {
          if (!this.holds(entry.key)) deletions.push(this.engine.delete(entry.key));
          // Replicated tombstones stay until the tombstone reaper's bound (a re-send may follow).
          else if (entry.tombstone && !replicated) ended.push(entry.key);
        }
        // Only tombstones of this migration or older: a client write since the scan replaced
        // the tombstone by a value (kept), and a newer tombstone belongs to a later migration.
        const [existed, removed] = await Promise.all([
          Promise.all(deletions),
          ended.length > 0 ? this.engine.removeTombstones(ended, request.epoch) : 0,
        ]);
        for (const value of existed) if (value) deleted++;
        tombstones += removed;
      }
    }
    this.counters.keysPurged += deleted;
    this.counters.tombstonesPurged += tombstones;
    return deleted;
  }

  /**
   * PURGE with `staleUpTo` (replication: a returning member's catch-up): deletes every entry,
   * value or tombstone, of `ranges` whose writeEpoch is at most `staleUpTo`, checked again as each
   * is deleted (a write forwarded since the scan stays). Resolves to the values deleted.
   */
  private async purgeStale(ranges: readonly HashRange[], staleUpTo: number): Promise<number> {
    await this.engine.flush();
    const ring = this.ownership.ring;
    if (ring === undefined || ring.size === 0) return 0;
    // An entry's writeEpoch is a uint32.
    const upTo = Math.min(staleUpTo, 0xffff_ffff);
    const entries = await this.scans.entriesIn(ranges, true);
    let removed = 0;
    for (let start = 0; start < entries.length; start += SCAN_SLICE) {
      const stale = entries
        .slice(start, start + SCAN_SLICE)
        .filter((entry) => entry.writeEpoch <= upTo)
        .map((entry) => entry.key);
      if (stale.length > 0) removed += await this.engine.removeUpTo(stale, upTo);
    }
    this.counters.staleRemoved += removed;
    return removed;
  }

  /**
   * DIGEST (replication: a returning member's catch-up): per range, the number of values whose
   * writeEpoch is below `below` and two sums of a hash of each one's key and version (see the
   * protocol README), as 12 bytes. Two members whose digests of a range are equal hold the same
   * values there (but for a 2^-64 chance), so the range need not be copied.
   */
  async digest(request: DigestRequest): Promise<Uint8Array[]> {
    await this.engine.flush();
    const ring = this.ownership.ring;
    const digests = new RangeDigests(request.ranges.length, request.below);
    if (ring !== undefined && ring.size > 0) {
      // Values only: a tombstone is no value (the protocol README's DIGEST).
      await this.scans.scan({
        ranges: indexRanges(request.ranges),
        tombstones: false,
        visit: (entry, range) => digests.add(entry, range),
      });
    }
    return digests.values();
  }

  /**
   * Whether this node keeps `key` after a PURGE: it owns it (factor 1), or, with replication, its
   * write path on the current ring holds this node (a member that left the key's chain drops it,
   * tombstone included: replication step 5's purge).
   */
  private holds(key: Uint8Array): boolean {
    const ownership = this.ownership;
    if (ownership.replicationFactor <= 1) return ownership.refusal(key, false) === undefined;
    return ownership.chainOf(key)?.path.includes(ownership.self) === true;
  }

  /**
   * Makes this node's entry for `key` authoritative before a data-model operation runs on it.
   * While the key's range moves here and this node has no entry for it (no value, tombstone or
   * expired value: the stream has not brought it yet), the old owner still holds the current copy:
   * it is pulled (PULL) and stored like a MIGRATE_PUT copy, older than any write accepted here.
   * Otherwise the local entry already is the newest (a copy, a write made here, a delete's
   * tombstone). Rejects with UNAVAILABLE (not executed) when the old owner cannot be asked.
   * Undefined when there is nothing to wait for: the caller then executes at once, so a request
   * decoded after it (a pipeline) cannot run first.
   */
  bringIn(key: Uint8Array): Promise<void> | undefined {
    const name = keyToString(key);
    const pending = this.pulls.get(name);
    // A request behind a pull of its key runs after it, in arrival order (a pipeline's order).
    if (pending !== undefined) return pending;
    const source = this.ownership.sourceOf(key);
    if (source === undefined || this.engine.header(key) !== undefined) return undefined;
    const pull = this.pull(key, source).finally(() => {
      if (this.pulls.get(name) === pull) this.pulls.delete(name);
    });
    this.pulls.set(name, pull);
    return pull;
  }

  /**
   * The PULL of `key` in flight, if any: a plain GET/SET/DEL/MGET/MSET of the key arriving now
   * must run after it, or it would overtake a read-modify-write sent before it. Undefined (and
   * no work) when nothing is being pulled.
   */
  pullOf(key: Uint8Array): Promise<void> | undefined {
    return this.pulls.size === 0 ? undefined : this.pulls.get(keyToString(key));
  }

  private async pull(key: Uint8Array, source: string): Promise<void> {
    let response: Response;
    try {
      const link = await this.options.links.get(source);
      response = await link.request({ op: Op.PULL, key }, { timeoutMs: this.options.limits.batchTimeoutMs });
    } catch (error) {
      // The old owner purged already: the migration is over and the stream brought everything.
      if (error instanceof DstoreError && error.code === ErrorCode.NOT_OWNER) return;
      this.options.links.drop(source);
      const reason = error instanceof Error ? error.message : String(error);
      throw new DstoreError(
        ErrorCode.UNAVAILABLE,
        `the key's range is moving here from ${source}, which could not be asked for its copy: ${reason}`,
        { cause: error, notExecuted: true },
      );
    }
    if (response.op !== Op.ENTRY) {
      throw new DstoreError(ErrorCode.INTERNAL, `${source} answered PULL with op ${response.op}`);
    }
    const entry = response.entry;
    if (entry === null) return;
    // As for MIGRATE_PUT: a copy is older than any write accepted here at the current epoch.
    const ceiling = Math.max(0, this.ownership.writeEpoch - 1);
    const writeEpoch = Math.min(entry.writeEpoch, ceiling);
    this.counters.keysPulled += await this.engine.applyIfNewer([{ ...entry, key, writeEpoch }]);
  }

  /**
   * PULL (old owner side): this node's copy of a key it owns or that is moving away from it. With
   * replication, any member of the key's write path (serving members and learners) answers with
   * its replica's copy (a peer comparing replicas; clients read at the tail only).
   */
  pulled(request: PullRequest): EntryResponse {
    const ownership = this.ownership;
    const owner =
      ownership.replicationFactor > 1
        ? ownership.chainOf(request.key)?.path.includes(ownership.self) === true
          ? undefined
          : ownership.routeOf(request.key, false)
        : ownership.refusal(request.key, true);
    if (owner !== undefined) {
      throw new DstoreError(ErrorCode.NOT_OWNER, `key is owned by ${owner}, not by this node`);
    }
    const entry = this.engine.getEntry(request.key);
    return {
      op: Op.ENTRY,
      id: request.id,
      entry:
        entry === undefined
          ? null
          : {
              value: entry.value,
              writeEpoch: entry.writeEpoch,
              version: entry.version,
              expireAt: entry.expireAt,
            },
    };
  }

  private async stream(
    connection: Connection,
    epoch: number,
    keys: readonly Uint8Array[],
  ): Promise<Streamed> {
    const { batchBytes, batchKeys, maxInFlightBatches, maxKeysPerSecond } = this.options.limits;
    const startedAt = performance.now();
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    let sent = 0;
    let sentBytes = 0;
    let index = 0;
    while (index < keys.length && failure === undefined) {
      // Built and sent in one synchronous stretch: memory-engine values are views valid only
      // until the next write, and the request encodes them before it returns.
      const entries: MigratedEntry[] = [];
      let bytes = 0;
      while (index < keys.length && entries.length < batchKeys && bytes < batchBytes) {
        const key = keys[index++]!;
        // Value and version read together: the copy keeps the writeEpoch it has here.
        const entry = this.engine.getEntry(key);
        // Deleted since the scan (a fall-back DEL): nothing to copy.
        if (entry === undefined) continue;
        entries.push({
          key,
          value: entry.value,
          writeEpoch: entry.writeEpoch,
          version: entry.version,
          expireAt: entry.expireAt,
        });
        bytes += key.length + entry.value.length;
      }
      if (entries.length === 0) continue;
      const count = entries.length;
      const copiedBytes = bytes;
      const batch: Promise<void> = connection
        .request({ op: Op.MIGRATE_PUT, epoch, entries })
        .then(
          () => {
            sent += count;
            sentBytes += copiedBytes;
            this.counters.keysSent += count;
            this.counters.bytesSent += copiedBytes;
          },
          (error: unknown) => {
            failure ??= error;
          },
        )
        .finally(() => inFlight.delete(batch));
      inFlight.add(batch);
      if (inFlight.size >= maxInFlightBatches) await Promise.race(inFlight);
      if (maxKeysPerSecond > 0) {
        // Pace: the keys issued so far may not be ahead of the allowed rate.
        const aheadMs = (index / maxKeysPerSecond) * 1000 - (performance.now() - startedAt);
        if (aheadMs > 1) await new Promise((resolve) => setTimeout(resolve, aheadMs));
      }
    }
    await Promise.all(inFlight);
    if (failure !== undefined) throw failure;
    return { keys: sent, bytes: sentBytes };
  }
}
