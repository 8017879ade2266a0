import { RangeIndex } from '@dstore/hashring';
import {
  Connection,
  connectSocket,
  DstoreError,
  ErrorCode,
  handshake,
  type KeyValue,
  type MigratePutRequest,
  type MigrateRequest,
  Op,
  type PurgeRequest,
  type RingRequest,
} from '@dstore/protocol';
import type { StorageEngine } from './engines/index.js';
import type { Ownership } from './ownership.js';

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

/** Counters of the migrations this node took part in (STATS). */
export interface MigrationCounters {
  keysSent: number;
  keysReceived: number;
  keysSkipped: number;
  keysPurged: number;
}

/** Keys scanned between two yields to the event loop, so client requests keep flowing. */
const SCAN_SLICE = 1000;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Keys (copied) of the engine whose ring position lies in one of `ranges`; one scan for all
 * ranges, yielding every {@link SCAN_SLICE} keys (a scan of a large engine would otherwise stall
 * client traffic for its whole duration).
 */
async function keysIn(
  engine: StorageEngine,
  ranges: readonly { start: number; end: number }[],
  position: (key: Uint8Array) => number,
): Promise<Uint8Array[]> {
  const set = new RangeIndex(ranges);
  const keys: Uint8Array[] = [];
  let scanned = 0;
  // start === end is the whole ring: one pass over every key, filtered here against all ranges.
  for (const key of engine.keysInRange({ start: 0, end: 0 }, () => 0)) {
    if (set.has(position(key))) keys.push(Uint8Array.from(key));
    if (++scanned % SCAN_SLICE === 0) await yieldToEventLoop();
  }
  return keys;
}

/**
 * The storage node's side of key migration: RING (ownership), MIGRATE (stream ranges to their
 * new owner), MIGRATE_PUT (store streamed copies unless touched) and PURGE (drop what moved away).
 */
export class MigrationService {
  /** Counters for STATS. */
  readonly counters: MigrationCounters = { keysSent: 0, keysReceived: 0, keysSkipped: 0, keysPurged: 0 };

  constructor(
    private readonly engine: StorageEngine,
    private readonly ownership: Ownership,
    private readonly options: {
      readonly token: string | undefined;
      readonly limits: MigrationLimits;
    },
  ) {}

  /** RING: adopt the ring (older epochs are ignored). */
  ring(request: RingRequest): void {
    this.ownership.apply(request);
  }

  /**
   * MIGRATE: streams the keys of the ranges to the target in bounded batches, at most
   * `maxInFlightBatches` unacknowledged. Resolves with the keys sent once all are acknowledged.
   */
  async migrate(request: MigrateRequest): Promise<number> {
    const ring = this.ownership.ring;
    if (ring === undefined) {
      throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'MIGRATE before any RING: ownership unknown');
    }
    // Writes issued before the RING that moved these ranges must be visible to the scan.
    await this.engine.flush();
    const keys = await keysIn(this.engine, request.ranges, (key) => ring.position(key));
    const connection = await this.connect(request);
    try {
      return await this.stream(connection, request.epoch, keys);
    } finally {
      connection.destroy();
    }
  }

  /** MIGRATE_PUT: stores each copy unless a client wrote or deleted the key here meanwhile. */
  async migratePut(request: MigratePutRequest): Promise<number> {
    const writes: Promise<void>[] = [];
    for (const entry of request.entries) {
      const owner = this.ownership.refusal(entry.key, false);
      if (owner !== undefined) {
        throw new DstoreError(ErrorCode.NOT_OWNER, `migrated key is owned by ${owner}, not by this node`);
      }
    }
    // A late batch of a finished (purged) or unknown migration must not land: its touched set is
    // gone, so it could overwrite a newer client write.
    if (!this.ownership.expectsMigration(request.epoch)) {
      throw new DstoreError(
        ErrorCode.INVALID_ARGUMENT,
        `no migration into this node is pending at epoch ${request.epoch}`,
      );
    }
    for (const entry of request.entries) {
      if (this.ownership.wasTouched(entry.key)) {
        this.counters.keysSkipped++;
        continue;
      }
      writes.push(this.engine.set(entry.key, entry.value));
    }
    // Issued in one turn: lmdb commits (and fsyncs) them together before acknowledging.
    await Promise.all(writes);
    this.counters.keysReceived += writes.length;
    return writes.length;
  }

  /** PURGE: deletes the keys of the ranges this node does not own, then ends their migration state. */
  async purge(request: PurgeRequest): Promise<number> {
    const ring = this.ownership.ring;
    let deleted = 0;
    if (ring !== undefined && ring.size > 0) {
      const self = this.ownership;
      const keys = await keysIn(this.engine, request.ranges, (key) => ring.position(key));
      for (let start = 0; start < keys.length; start += SCAN_SLICE) {
        const deletions: Promise<boolean>[] = [];
        for (const key of keys.slice(start, start + SCAN_SLICE)) {
          if (self.refusal(key, false) !== undefined) deletions.push(this.engine.delete(key));
        }
        for (const existed of await Promise.all(deletions)) if (existed) deleted++;
      }
    }
    this.ownership.finish(request.ranges);
    this.counters.keysPurged += deleted;
    return deleted;
  }

  private async connect(request: MigrateRequest): Promise<Connection> {
    const socket = await connectSocket({ host: request.host, port: request.port, connectTimeoutMs: 5000 });
    const connection = new Connection(socket, { requestTimeoutMs: this.options.limits.batchTimeoutMs });
    try {
      const hello = await handshake(connection, 'node', { token: this.options.token });
      if (hello.serverId !== request.target) {
        throw new DstoreError(
          ErrorCode.UNAVAILABLE,
          `${request.host}:${request.port} answers as ${hello.serverId}, not ${request.target}`,
        );
      }
    } catch (error) {
      connection.destroy();
      throw error;
    }
    return connection;
  }

  private async stream(connection: Connection, epoch: number, keys: readonly Uint8Array[]): Promise<number> {
    const { batchBytes, batchKeys, maxInFlightBatches, maxKeysPerSecond } = this.options.limits;
    const startedAt = performance.now();
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    let sent = 0;
    let index = 0;
    while (index < keys.length && failure === undefined) {
      // Built and sent in one synchronous stretch: memory-engine values are views valid only
      // until the next write, and the request encodes them before it returns.
      const entries: KeyValue[] = [];
      let bytes = 0;
      while (index < keys.length && entries.length < batchKeys && bytes < batchBytes) {
        const key = keys[index++]!;
        const value = this.engine.get(key);
        // Deleted since the scan (a fall-back DEL): nothing to copy.
        if (value === undefined) continue;
        entries.push({ key, value });
        bytes += key.length + value.length;
      }
      if (entries.length === 0) continue;
      const count = entries.length;
      const batch: Promise<void> = connection
        .request({ op: Op.MIGRATE_PUT, epoch, entries })
        .then(
          () => {
            sent += count;
            this.counters.keysSent += count;
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
    return sent;
  }
}
