import { type HashRing, RangeIndex, type RangeMove, type ReplicaStates } from '@dstore/hashring';
import {
  chunkRanges,
  DstoreError,
  ErrorCode,
  type HashRange,
  isRetryable,
  Op,
  type RingRequest,
} from '@dstore/protocol';
import type { Logger } from 'pino';
import type { ClusterNode } from './cluster-node.js';

/** What `/ring`, `dstore status` and the metrics show about key migration. */
export interface MigrationProgress {
  /** A migration is running (ranges are moving). */
  readonly active: boolean;
  /** Epoch of the ring the running (or last) migration moves keys to; -1 before any. */
  readonly epoch: number;
  /** Ranges of the running migration not yet moved. */
  readonly pendingRanges: number;
  /** Ranges of the running (or last) migration. */
  readonly totalRanges: number;
  /** Keys moved by the running (or last) migration. */
  readonly keysMoved: number;
  /** Bytes of keys and values moved is not known to the balancer; keys per second of the running (or last) migration. */
  readonly keysPerSecond: number;
  /** Keys moved by every migration since the balancer started. */
  readonly keysMovedTotal: number;
  /** Ring changes waiting for the running migration to finish. */
  readonly queuedChanges: number;
  /**
   * A stream the nodes refuse for a reason only an operator can fix (the new owner is out of
   * space or memory, a storage error): the migration retries it and does not finish until it
   * moves, and the keys stay readable on the old owner meanwhile. Null when nothing is stalled.
   */
  readonly stalled: StalledStream | null;
}

/** A migration stream that keeps failing with a refusal (see {@link MigrationProgress.stalled}). */
export interface StalledStream {
  /** Old owner (the source of the stream). */
  readonly from: string;
  /** New owner (the target). */
  readonly to: string;
  /** Error code of the last refusal. */
  readonly code: string;
  /** Message of the last refusal. */
  readonly message: string;
  /** Attempts so far. */
  readonly attempts: number;
}

/** What the migrator needs from the membership. */
export interface MigrationHost {
  node(id: string): ClusterNode | undefined;
  readonly nodes: Iterable<ClusterNode>;
  readonly logger: Logger;
  /** Whether the balancer is closing (stop retrying). */
  readonly closed: boolean;
  /** The fall-back index ({@link Migrator.moves}) changed: republish the routing snapshot. */
  fallbackChanged(): void;
  /** Sends `node` the rings it should have now (they carry every member's current address). */
  resendRings(node: ClusterNode): Promise<void>;
}

/** Deadline of one MIGRATE (a whole batch of ranges): generous, it is flow-controlled by the node. */
const MIGRATE_TIMEOUT_MS = 10 * 60_000;
/** Deadline of RING and PURGE. */
const CONTROL_TIMEOUT_MS = 30_000;
/** Longest wait for a ring node's link during an announce. */
const ANNOUNCE_WAIT_MS = 10_000;

function codeOf(error: unknown): string {
  return error instanceof DstoreError ? error.code : ErrorCode.INTERNAL;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** What RING, MAP and MAP_PUSH carry of the map's replication: nodes and clients derive chains from it. */
export interface MapReplication {
  readonly factor: number;
  readonly states: ReplicaStates;
  /** A replicated ring change switches (RING's `switching`: its changing chains drain). */
  readonly switching?: boolean | undefined;
  /** A replicated ring change installs its next ring (RING's `holding`: changed chains stay frozen). */
  readonly holding?: boolean | undefined;
}

/**
 * The RING message of a ring at an epoch, with each member's address from `addresses` (the
 * cluster map's): a node streams migrated keys only to a ring member at the address the ring
 * gives, never to one a request names. With `replication`, the map's factor and each member's
 * replication state too.
 */
export function ringMessage(
  ring: HashRing,
  epoch: number,
  generation: number,
  addresses: ReadonlyMap<string, { readonly host: string; readonly port: number }>,
  replication?: MapReplication,
): Omit<RingRequest, 'id'> {
  return {
    op: Op.RING,
    epoch,
    generation,
    algorithm: ring.algorithm,
    vnodes: ring.vnodes,
    ...(ring.hashTag === undefined ? {} : { hashTag: ring.hashTag }),
    nodes: ring.nodes().map((node) => {
      const address = addresses.get(node.id);
      const replicaState = replication?.states.get(node.id) ?? 'up';
      // A weight change's union ring (replication only) carries each changing member's previous weight.
      const member =
        replication === undefined
          ? { id: node.id, weight: node.weight }
          : node.previousWeight === undefined
            ? { id: node.id, weight: node.weight, replicaState }
            : { id: node.id, weight: node.weight, replicaState, previousWeight: node.previousWeight };
      return address === undefined ? member : { ...member, host: address.host, port: address.port };
    }),
    ...(replication === undefined ? {} : { replicationFactor: replication.factor }),
    ...(replication?.switching === true ? { switching: true } : {}),
    ...(replication?.holding === true ? { holding: true } : {}),
  };
}

/** What one MIGRATE copied: the keys its target acknowledged and their keys' and values' bytes. */
export interface Copied {
  readonly keys: number;
  readonly bytes: number;
}

/** One (old owner, new owner) pair of a migration and its ranges. */
export interface MoveGroup {
  readonly from: string;
  readonly to: string;
  readonly ranges: HashRange[];
}

/**
 * Moves keys when the ring changes: pushes RING to every node, asks each old owner to stream the
 * moving ranges to their new owner (MIGRATE), and once every range moved, stops the fall-back
 * reads and PURGEs. One migration at a time; the membership queues ring changes meanwhile.
 */
export class Migrator {
  /** Fall-back index of the running migration, only once every node has the new ring. */
  get moves(): RangeIndex<string> | undefined {
    return this.fallback;
  }

  private fallback: RangeIndex<string> | undefined;

  private setFallback(moves: RangeIndex<string> | undefined): void {
    this.fallback = moves;
    this.host.fallbackChanged();
  }
  private progress = {
    active: false,
    epoch: -1,
    pendingRanges: 0,
    totalRanges: 0,
    keysMoved: 0,
    keysMovedTotal: 0,
    startedAt: 0,
    finishedAt: 0,
    stalled: null as StalledStream | null,
  };
  queuedChanges = 0;
  /** The cluster map's generation, sent in every RING (see {@link RingRequest.generation}). */
  generation = 0;
  private currentReplication: MapReplication | undefined;
  /** Announces waiting on a member's answer, released when the member is marked failed. */
  private readonly failedWaiters = new Map<string, (() => void)[]>();

  /** The cluster map's replication factor and members' states, sent in every RING. */
  get replication(): MapReplication | undefined {
    return this.currentReplication;
  }

  set replication(replication: MapReplication | undefined) {
    this.currentReplication = replication;
    for (const [id, waiters] of this.failedWaiters) {
      const state = replication?.states.get(id);
      if (state !== 'failed' && state !== 'dropped' && state !== 'dead') continue;
      this.failedWaiters.delete(id);
      for (const release of waiters) release();
    }
  }

  /**
   * Resolves `failed` once member `id` is marked failed (never, unless it is); `cancel` drops the
   * waiter when the wait ended another way.
   */
  private whenFailed(id: string): { failed: Promise<void>; cancel: () => void } {
    let release: () => void = () => undefined;
    const failed = new Promise<void>((resolve) => {
      release = resolve;
    });
    const waiters = this.failedWaiters.get(id) ?? [];
    waiters.push(release);
    this.failedWaiters.set(id, waiters);
    const cancel = (): void => {
      const list = this.failedWaiters.get(id);
      if (list === undefined) return;
      const at = list.indexOf(release);
      if (at >= 0) list.splice(at, 1);
      if (list.length === 0) this.failedWaiters.delete(id);
    };
    return { failed, cancel };
  }

  constructor(private readonly host: MigrationHost) {}

  /** Progress snapshot for `/ring`, status and metrics. */
  snapshot(): MigrationProgress {
    const p = this.progress;
    const end = p.active ? performance.now() : p.finishedAt;
    const seconds = (end - p.startedAt) / 1000;
    return {
      active: p.active,
      epoch: p.epoch,
      pendingRanges: p.pendingRanges,
      totalRanges: p.totalRanges,
      keysMoved: p.keysMoved,
      keysPerSecond: seconds > 0 ? Math.round(p.keysMoved / seconds) : 0,
      keysMovedTotal: p.keysMovedTotal,
      queuedChanges: this.queuedChanges,
      stalled: p.stalled,
    };
  }

  /** Sends a RING to one node; resolves true once it answered, false when it did not (only logged). */
  async pushRing(node: ClusterNode, ring: HashRing, epoch: number): Promise<boolean> {
    if (!node.verifyIdentity || ring.size === 0) return false;
    try {
      const addresses = new Map([...this.host.nodes].map((member) => [member.id, member]));
      await node.forward(ringMessage(ring, epoch, this.generation, addresses, this.replication), {
        timeoutMs: CONTROL_TIMEOUT_MS,
      });
      return true;
    } catch (error) {
      this.host.logger.debug({ node: node.id, err: (error as Error).message }, 'RING not accepted');
      return false;
    }
  }

  /**
   * {@link pushRing}, but resolves true as soon as the member is marked failed (or dropped by a
   * ring change): nothing waits for a member that serves nothing (a paused one would hold the
   * caller for the RING's deadline).
   */
  async pushRingUnlessFailed(node: ClusterNode, ring: HashRing, epoch: number): Promise<boolean> {
    const { failed, cancel } = this.whenFailed(node.id);
    try {
      return await Promise.race([this.pushRing(node, ring, epoch), failed.then(() => true)]);
    } finally {
      cancel();
    }
  }

  /**
   * Pushes the new ring to every node and resolves once each answered (or failed). A node whose
   * link is not up yet (one that just joined) is waited for, bounded: a new owner must know the
   * ranges it gains before the balancer forwards writes to it, or it could not tell a client's
   * write from an older migrated copy.
   */
  async announce(ring: HashRing, epoch: number, waitForLinks: boolean): Promise<void> {
    await Promise.all(
      [...this.host.nodes].map(async (node) => {
        // A failed member (replication) serves nothing and may be paused: it gets the ring, but
        // routing must not wait for its answer (a SIGSTOPped node would hold it for the deadline).
        // Nor a dropped or dead one (a ring change's member that serves nothing).
        const state = this.replication?.states.get(node.id);
        if (state === 'failed' || state === 'dropped' || state === 'dead') {
          void this.pushRing(node, ring, epoch);
          return;
        }
        if (waitForLinks && !node.link.isReady && ring.has(node.id))
          await node.link.whenReady(ANNOUNCE_WAIT_MS);
        const answered = this.pushRing(node, ring, epoch);
        if (this.replication === undefined || this.replication.factor <= 1) return answered;
        // A member that stops answering is marked failed after the failure timeout: the announce
        // stops waiting for it then, not at the control deadline.
        const { failed, cancel } = this.whenFailed(node.id);
        await Promise.race([answered, failed]);
        cancel();
      }),
    );
  }

  /**
   * Streams the ranges that move from `previous` to `next` (already announced), skipping the
   * streams listed in `done` (a resumed transition). `onStreamDone` is awaited after each stream
   * (the membership records it in the map) before it counts as done. Resolves with every stream
   * of the transition and whether it moved all its keys; the fall-back index stays set until
   * {@link stopFallback}.
   */
  async stream(
    previous: HashRing,
    next: HashRing,
    epoch: number,
    done: ReadonlySet<string>,
    onStreamDone: (stream: string, keys: number) => Promise<void>,
  ): Promise<{ group: MoveGroup; moved: boolean }[]> {
    const moves = previous.size > 0 && next.size > 0 ? previous.diff(next) : [];
    const groups = groupMoves(moves);
    const p = this.progress;
    p.active = moves.length > 0;
    p.epoch = epoch;
    p.totalRanges = moves.length;
    p.pendingRanges = groups
      .filter((group) => !done.has(streamName(group)))
      .reduce((sum, group) => sum + group.ranges.length, 0);
    p.keysMoved = 0;
    p.stalled = null;
    p.startedAt = performance.now();
    if (moves.length === 0) {
      p.finishedAt = p.startedAt;
      return [];
    }
    this.setFallback(new RangeIndex(moves, (move) => (move as RangeMove).from));
    this.host.logger.info({ epoch, ranges: moves.length, resumed: done.size > 0 }, 'migration started');
    return Promise.all(
      groups.map(async (group) => {
        if (done.has(streamName(group))) return { group, moved: true };
        const keys = await this.moveGroup(group, epoch);
        if (keys === undefined) return { group, moved: false };
        await onStreamDone(streamName(group), keys);
        return { group, moved: true };
      }),
    );
  }

  /**
   * A follower balancer routes during another balancer's streams: the fall-back index of the
   * change from `previous` to `next`, without streaming anything itself.
   */
  followStreams(previous: HashRing, next: HashRing, epoch: number): void {
    const moves = previous.size > 0 && next.size > 0 ? previous.diff(next) : [];
    const p = this.progress;
    p.active = moves.length > 0;
    p.epoch = epoch;
    p.totalRanges = moves.length;
    p.pendingRanges = moves.length;
    p.keysMoved = 0;
    p.startedAt = performance.now();
    this.setFallback(
      moves.length > 0 ? new RangeIndex(moves, (move) => (move as RangeMove).from) : undefined,
    );
  }

  /** Stops the fall-back reads: called before PURGE, after which a fall-back would find nothing. */
  stopFallback(): void {
    if (this.fallback === undefined && !this.progress.active) return;
    this.setFallback(undefined);
    this.progress.active = false;
    this.progress.finishedAt = performance.now();
    this.host.logger.info(
      {
        epoch: this.progress.epoch,
        keysMoved: this.progress.keysMoved,
        keysPerSecond: this.snapshot().keysPerSecond,
      },
      'migration streams finished',
    );
  }

  /**
   * Sends PURGE for `groups` to both sides of each, retrying transient failures until it is
   * answered, the node left the registry, was marked `failed` (replication: out of every chain,
   * it serves nothing until it is synced again) or the balancer closes: a node that never gets its
   * PURGE would keep stale copies that a later move back could resurrect.
   */
  async purge(groups: readonly MoveGroup[], epoch: number): Promise<void> {
    const targets: { id: string; ranges: HashRange[] }[] = [];
    for (const group of groups) {
      targets.push({ id: group.from, ranges: group.ranges }, { id: group.to, ranges: group.ranges });
    }
    await Promise.all(targets.map((target) => this.purgeNode(target.id, target.ranges, epoch)));
  }

  /**
   * PURGE of `ranges` on each target (a replicated ring change: the chains each member left);
   * resolves once every target answered, left the registry or was marked failed.
   */
  async purgeRanges(
    targets: readonly { id: string; ranges: readonly HashRange[] }[],
    epoch: number,
  ): Promise<void> {
    await Promise.all(targets.map((target) => this.purgeNode(target.id, target.ranges, epoch)));
  }

  /**
   * Streams one group; the keys moved, or undefined when a node left the ring (or the balancer
   * closes) before every range moved. Any other failure is retried: a refusal (the new owner out
   * of space, say) stalls the migration, loudly, rather than finishing it with keys the new ring
   * sends nobody to.
   */
  private async moveGroup(group: MoveGroup, epoch: number): Promise<number | undefined> {
    const logger = this.host.logger;
    let moved = 0;
    for (const ranges of chunkRanges(group.ranges)) {
      const copied = await this.migrateWithRetries(ranges, () => {
        const from = this.host.node(group.from);
        const to = this.host.node(group.to);
        if (from === undefined || to === undefined || this.host.closed) {
          logger.warn({ epoch, from: group.from, to: group.to }, 'migration skipped: a node left the ring');
          return undefined;
        }
        // Replication: a failed member serves nothing until it is synced again (its chains' other
        // members hold its keys); a stream from or to it would hold the transition forever.
        const states = this.replication?.states;
        if (states?.get(group.from) === 'failed' || states?.get(group.to) === 'failed') {
          logger.warn({ epoch, from: group.from, to: group.to }, 'migration skipped: a node failed');
          return undefined;
        }
        return { from, to, epoch };
      });
      if (copied === undefined) return undefined;
      moved += copied.keys;
      this.progress.keysMoved += copied.keys;
      this.progress.keysMovedTotal += copied.keys;
      this.progress.pendingRanges -= ranges.length;
    }
    return moved;
  }

  /**
   * One MIGRATE of `ranges` (at most one chunk, see `chunkRanges`), retried until it is answered:
   * before each attempt `plan` names the source, the target and the epoch (it may change between
   * attempts: a learner's copy restarts from a new tail after a failover), or returns undefined to
   * give up. Resolves with the keys the source sent (and their bytes), or undefined when given
   * up. Also the loop of a learner's copies (see `resync.ts`).
   */
  async migrateWithRetries(
    ranges: HashRange[],
    plan: () => { from: ClusterNode; to: ClusterNode; epoch: number } | undefined,
  ): Promise<Copied | undefined> {
    let previous: Pick<MoveGroup, 'from' | 'to'> | undefined;
    for (let attempt = 1; ; attempt++) {
      const planned = plan();
      if (planned === undefined) {
        // Given up (a node left the ring, or a learner out of room was taken out): not stalled.
        if (previous !== undefined) this.clearStall(previous, 'given up');
        return undefined;
      }
      const { from, to, epoch } = planned;
      const group = { from: from.id, to: to.id };
      previous = group;
      try {
        const answer = await from.forward(
          { op: Op.MIGRATE, epoch, target: to.id, host: to.host, port: to.port, ranges },
          { timeoutMs: MIGRATE_TIMEOUT_MS },
        );
        this.clearStall(group);
        // A node from before MIGRATE's answer carried bytes reports keys only.
        return answer.op === Op.COUNT
          ? { keys: answer.count, bytes: answer.bytes ?? 0 }
          : { keys: 0, bytes: 0 };
      } catch (error) {
        await this.afterFailedMigrate(group, epoch, error, attempt, from);
      }
    }
  }

  /** Logs a failed MIGRATE, records a stall when it is a refusal, and waits before the next try. */
  private async afterFailedMigrate(
    group: Pick<MoveGroup, 'from' | 'to'>,
    epoch: number,
    error: unknown,
    attempt: number,
    from: ClusterNode,
  ): Promise<void> {
    const logger = this.host.logger;
    const code = codeOf(error);
    const loud = attempt === 1 || attempt % 20 === 0;
    if (code === ErrorCode.NO_PERMISSION) {
      // The old owner's ring holds another address for the new owner (it restarted on a new
      // port): it streams only to the address its ring gives, so give it the current ring.
      logger.info(
        { epoch, from: group.from, to: group.to },
        'MIGRATE target unknown to the source; resending the ring',
      );
      await this.host.resendRings(from);
    } else if (isRetryable(error)) {
      // A crashed or busy node keeps its keys unavailable until it returns with its data: retry.
      logger[loud ? 'warn' : 'debug'](
        { epoch, from: group.from, to: group.to, code, attempt },
        'MIGRATE failed; retrying',
      );
    } else {
      const message = error instanceof Error ? error.message : String(error);
      this.progress.stalled = { from: group.from, to: group.to, code, message, attempts: attempt };
      if (loud) {
        logger.error(
          { epoch, from: group.from, to: group.to, code, err: message, attempt },
          'migration stalled: the nodes refuse a stream; it is retried until it moves (free space on the new owner, or give it a larger --map-size / --max-memory)',
        );
      }
    }
    await sleep(retryDelayMs(attempt));
  }

  private clearStall(group: Pick<MoveGroup, 'from' | 'to'>, how: 'moved' | 'given up' = 'moved'): void {
    const stalled = this.progress.stalled;
    if (stalled === null || stalled.from !== group.from || stalled.to !== group.to) return;
    this.progress.stalled = null;
    this.host.logger.info({ from: group.from, to: group.to }, `stalled migration stream ${how}`);
  }

  /**
   * Replication, a returning member's catch-up: `node`'s DIGEST of each of `ranges` (its values
   * written before `epoch`), in order; undefined when it could not answer (the caller tries again
   * in its next round). The chunks (at most MAX_RANGES_PER_MESSAGE ranges each) are sent at once:
   * the node answers them all from one pass over its engine.
   */
  async digests(
    node: ClusterNode,
    ranges: readonly HashRange[],
    epoch: number,
  ): Promise<Uint8Array[] | undefined> {
    try {
      const chunks = chunkRanges(ranges);
      const answers = await Promise.all(
        chunks.map((chunk) =>
          node.forward({ op: Op.DIGEST, below: epoch, ranges: chunk }, { timeoutMs: MIGRATE_TIMEOUT_MS }),
        ),
      );
      const digests: Uint8Array[] = [];
      for (const [i, answer] of answers.entries()) {
        // One value per range, or the answer compares nothing.
        if (answer?.op !== Op.VALUES || answer.values.length !== chunks[i]!.length) return undefined;
        for (const value of answer.values) {
          if (value === null) return undefined;
          digests.push(value);
        }
      }
      return digests;
    } catch (error) {
      this.host.logger.debug({ node: node.id, err: (error as Error).message }, 'DIGEST failed');
      return undefined;
    }
  }

  /**
   * Replication, a returning member's catch-up: `node` deletes its entries of `ranges` written
   * before `epoch` (PURGE with `staleUpTo`), before the ranges are copied to it again; or, without
   * `ranges`, every entry its write path no longer holds (PURGE of the whole ring: ranges it left
   * while it was away). False when it could not (the caller tries again in its next round). The
   * chunks are sent at once: the node serves them from one pass over its engine.
   */
  async purgeReturning(node: ClusterNode, epoch: number, ranges?: readonly HashRange[]): Promise<boolean> {
    try {
      const requests =
        ranges === undefined
          ? [{ op: Op.PURGE, epoch, ranges: [{ start: 0, end: 0 }] } as const]
          : chunkRanges(ranges).map(
              (chunk) => ({ op: Op.PURGE, epoch, ranges: chunk, staleUpTo: epoch - 1 }) as const,
            );
      await Promise.all(requests.map((request) => node.forward(request, { timeoutMs: MIGRATE_TIMEOUT_MS })));
      return true;
    } catch (error) {
      this.host.logger.debug(
        { node: node.id, err: (error as Error).message },
        'PURGE of a returning member failed',
      );
      return false;
    }
  }

  private async purgeNode(id: string, ranges: readonly HashRange[], epoch: number): Promise<void> {
    for (const chunk of chunkRanges(ranges)) {
      for (let attempt = 1; ; attempt++) {
        const node = this.host.node(id);
        if (node === undefined || this.host.closed) return;
        // A failed member would hold the transition (and with it the failover's ring) forever.
        if (this.replication?.states.get(id) === 'failed') return;
        try {
          await node.forward({ op: Op.PURGE, epoch, ranges: chunk }, { timeoutMs: CONTROL_TIMEOUT_MS });
          break;
        } catch (error) {
          const code = codeOf(error);
          // MIGRATE and PURGE are idempotent: any transient failure is worth another try.
          if (!isRetryable(error)) {
            this.host.logger.warn({ epoch, node: id, code, err: (error as Error).message }, 'PURGE refused');
            break;
          }
          const level = attempt === 1 || attempt % 20 === 0 ? 'warn' : 'debug';
          this.host.logger[level]({ epoch, node: id, code, attempt }, 'PURGE failed; retrying');
          await sleep(retryDelayMs(attempt));
        }
      }
    }
  }
}

/** Backoff between attempts of MIGRATE and PURGE: 100 ms doubling to 2 s. */
function retryDelayMs(attempt: number): number {
  return Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
}

/** The name of a stream in the map's `transition.done`: `from>to`. */
export function streamName(group: Pick<MoveGroup, 'from' | 'to'>): string {
  return `${group.from}>${group.to}`;
}

/** Groups the moves of a ring change by (old owner, new owner): one stream each. */
export function groupMoves(moves: readonly RangeMove[]): MoveGroup[] {
  const groups = new Map<string, MoveGroup>();
  for (const { start, end, from, to } of moves) {
    const name = `${from}\u0000${to}`;
    let group = groups.get(name);
    if (group === undefined) {
      group = { from, to, ranges: [] };
      groups.set(name, group);
    }
    group.ranges.push({ start, end });
  }
  return [...groups.values()];
}
