import type { HashRing, ReplicaStates } from '@dstore/hashring';
import { chunkRanges, type HashRange } from '@dstore/protocol';
import type { Logger } from 'pino';
import { activeMember, type ClusterMap, type MapMember, replicaStatesOf } from './cluster-map.js';
import { type ClusterNode, storageDegraded } from './cluster-node.js';
import type { Copied, Migrator } from './migrator.js';

/** What `/ring`, `dstore status` and the metrics show about a returning member's catch-up. */
export interface SyncProgress {
  /** The member catching up (one at a time). */
  readonly node: string;
  /** `syncing` (its ranges are being copied to it) or `promoting` (the drain before it serves). */
  readonly phase: 'syncing' | 'promoting';
  /** Keys copied to it so far by this sync. */
  readonly keysStreamed: number;
  /** Keys per second of this sync so far. */
  readonly keysPerSecond: number;
  /** Bytes of the keys and values copied to it so far by this sync. */
  readonly bytesStreamed: number;
  /** Bytes per second of this sync so far. */
  readonly bytesPerSecond: number;
  /** Ranges of its desired chains not copied yet. */
  readonly rangesLeft: number;
  /** Ranges of its desired chains. */
  readonly rangesTotal: number;
  /**
   * Ranges found equal on it and on their tail (same values: DIGEST), not copied: "only the
   * difference" is copied.
   */
  readonly rangesUnchanged: number;
}

/** What the resynchronisation needs from the membership (the map's writer). */
export interface ResyncHost {
  /** The latest stored map. */
  readonly map: ClusterMap;
  /** The ring of {@link map}. */
  readonly ring: HashRing;
  /** Whether this process writes the map and is not closing: the resync runs only then. */
  readonly writing: boolean;
  node(id: string): ClusterNode | undefined;
  /** Every member with a link. */
  readonly nodes: Iterable<ClusterNode>;
  readonly logger: Logger;
  readonly migrator: Migrator;
  /** A member heard from within this long is back (its heartbeats arrive again). */
  readonly heartbeatTimeoutMs: number;
  /**
   * Stores the member returned by `change` (a new ring epoch) when `change` returns one; resolves
   * whether it was written.
   */
  writeMember(reason: string, change: (map: ClusterMap) => MapMember | undefined): Promise<boolean>;
  /** Called with each completed copy (the metrics' counters). */
  onCopied(copied: Copied): void;
}

/** Pause between rounds of copies that could not all complete (a tail changed, a node is away). */
const ROUND_PAUSE_MS = 200;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * Replication step 4 (see docs/design/replication.md, "Step 4 as built"): a `failed` member that
 * heartbeats again catches up and serves again. Run by the map's writer only, one member at a
 * time (others that return meanwhile stay `failed` until it is done):
 *
 * 1. the member is sent the current ring (where it is `failed`) and must answer it, then one map
 *    write makes it `syncing`: it is a learner at the end of the write path of every chain it
 *    belongs to, so every write from then on reaches it through the forward streams; it keeps
 *    what it held;
 * 2. it drops what its chains no longer hold, and every range of its desired chains whose values
 *    written before the current epoch differ from the range's serving tail's (DIGEST at both, in
 *    rounds: all ranges of a round at once, one engine pass per node) is cleared on it up to that
 *    epoch and copied from the tail (MIGRATE / MIGRATE_PUT, the migrator's retry loop; a range
 *    whose tail changed meanwhile is copied again from the new one: copies apply if newer, so
 *    repeats are harmless): only the difference;
 * 3. one map write makes it `promoting`: heads refuse new writes of its chains and every node
 *    answers that RING only once its writes in flight are acknowledged (the drain);
 * 4. once every node answered, one map write makes it `up`.
 *
 * A member marked `failed` meanwhile abandons its sync; it starts again (compared again) when it
 * returns. A new writer resumes a `syncing` or `promoting` member from its streams.
 */
export class Resync {
  private running: Promise<void> | undefined;
  private progress:
    | {
        node: string;
        phase: 'syncing' | 'promoting';
        keys: number;
        bytes: number;
        rangesUnchanged: number;
        startedAt: number;
        rangesLeft: number;
        rangesTotal: number;
      }
    | undefined;
  /** Keys copied to learners since this balancer started. */
  keysStreamedTotal = 0;
  /** Bytes of the keys and values copied to learners since this balancer started. */
  bytesStreamedTotal = 0;
  private syncing: string | undefined;

  /**
   * Counts a completed copy to a learner (a returning member's, or a replicated ring change's) in
   * the totals and the metrics.
   */
  counted(copied: Copied): void {
    this.keysStreamedTotal += copied.keys;
    this.bytesStreamedTotal += copied.bytes;
    this.host.onCopied(copied);
  }

  /** The member whose sync runs now (returned, syncing or promoting), if any. */
  get member(): string | undefined {
    return this.syncing;
  }

  constructor(private readonly host: ResyncHost) {}

  /** The sync running now, or null. */
  snapshot(): SyncProgress | null {
    const p = this.progress;
    if (p === undefined) return null;
    const seconds = (performance.now() - p.startedAt) / 1000;
    return {
      node: p.node,
      phase: p.phase,
      keysStreamed: p.keys,
      keysPerSecond: seconds > 0 ? Math.round(p.keys / seconds) : 0,
      bytesStreamed: p.bytes,
      bytesPerSecond: seconds > 0 ? Math.round(p.bytes / seconds) : 0,
      rangesLeft: p.rangesLeft,
      rangesTotal: p.rangesTotal,
      rangesUnchanged: p.rangesUnchanged,
    };
  }

  /**
   * Called on every tick of the writer's failure detection: starts the sync of a member that
   * needs one (a learner left by a previous writer first, then a `failed` member heard again).
   */
  tick(): void {
    if (this.running !== undefined || !this.host.writing) return;
    const map = this.host.map;
    if (map.replicationFactor <= 1 || map.transition !== null) return;
    const now = performance.now();
    let next: string | undefined;
    for (const ringMember of map.ring.members) {
      const member = activeMember(map, ringMember.id);
      if (member === undefined) continue;
      if (member.replicaState === 'syncing' || member.replicaState === 'promoting') {
        next = member.id;
        break;
      }
      if (member.replicaState !== 'failed' || next !== undefined) continue;
      const node = this.host.node(member.id);
      // Out of room, it would fill up again while it learns: it waits until it has room.
      if (storageDegraded(node)) continue;
      if (node?.registered === true && now - node.lastHeartbeatAt <= this.host.heartbeatTimeoutMs) {
        next = member.id;
      }
    }
    if (next === undefined) return;
    const id = next;
    this.syncing = id;
    this.running = this.sync(id)
      .catch((error: unknown) => {
        this.host.logger.warn({ node: id, err: (error as Error).message }, 'sync interrupted; retried');
      })
      .finally(() => {
        this.running = undefined;
        this.syncing = undefined;
        this.progress = undefined;
      });
  }

  /** Waits for the running sync, if any (balancer shutdown). */
  async stop(): Promise<void> {
    await this.running;
  }

  private stateOf(id: string): string | undefined {
    return activeMember(this.host.map, id)?.replicaState;
  }

  private async sync(id: string): Promise<void> {
    const host = this.host;
    if (this.stateOf(id) === 'failed') {
      // It must hold the ring where it is failed before it becomes a learner: it wipes on the
      // change from failed to syncing, whatever it held (a member that was already syncing when
      // it failed would otherwise keep its partial, stale copy).
      const node = host.node(id);
      if (node === undefined || !(await host.migrator.pushRing(node, host.ring, host.map.ring.epoch))) return;
      const returned = await host.writeMember(`node ${id} returned`, (map) => {
        const member = activeMember(map, id);
        return member?.replicaState === 'failed' ? { ...member, replicaState: 'syncing' } : undefined;
      });
      if (!returned) return;
      host.logger.info({ node: id, epoch: host.map.epoch }, 'node returned: syncing');
    }
    if (this.stateOf(id) === 'syncing') {
      if (!(await this.copyRanges(id))) return;
      const synced = await host.writeMember(`node ${id} synced`, (map) => {
        const member = activeMember(map, id);
        return member?.replicaState === 'syncing' ? { ...member, replicaState: 'promoting' } : undefined;
      });
      if (!synced) return;
      host.logger.info(
        { node: id, epoch: host.map.epoch, keysStreamed: this.progress?.keys ?? 0 },
        'node synced: promoting',
      );
    }
    if (this.stateOf(id) !== 'promoting') return;
    this.track(id, 'promoting');
    // Every node answers a ring promoting it only once drained (a later ring, another failure,
    // with it still promoting is drained again): the latest must be answered by every node.
    if (!(await this.answeredByAll(id, 'promoting'))) return;
    const up = await host.writeMember(`node ${id} up again`, (map) => {
      const member = activeMember(map, id);
      return member?.replicaState === 'promoting' ? { ...member, replicaState: 'up' } : undefined;
    });
    if (up) host.logger.info({ node: id, epoch: host.map.epoch }, 'node up again');
  }

  /**
   * Resolves true once every member that is not `failed` answered the RING of the latest ring
   * epoch while `id` is in `state` there (sent again until it is: a RING a node has is answered
   * without change, after the drain it calls for); false when `id` left `state` or this process
   * stopped writing. Not the membership's announce: that one also ends at a RING's deadline, and
   * a learner must not be fed or promoted by a node that never got its ring.
   */
  private async answeredByAll(id: string, state: 'syncing' | 'promoting'): Promise<boolean> {
    const host = this.host;
    for (let attempt = 1; ; attempt++) {
      if (this.stateOf(id) !== state || !host.writing) return false;
      const map = host.map;
      const ring = host.ring;
      const epoch = map.ring.epoch;
      const answers = await Promise.all(
        [...host.nodes].map((node) =>
          // A failed member serves nothing and is in no write path; a static member without an
          // identity gets no RING at all (it does not replicate).
          activeMember(map, node.id)?.replicaState === 'failed' || !node.verifyIdentity
            ? true
            : host.migrator.pushRing(node, ring, epoch),
        ),
      );
      if (answers.every(Boolean) && host.map.ring.epoch === epoch) return true;
      await sleep(Math.min(1000, ROUND_PAUSE_MS * attempt));
    }
  }

  private track(id: string, phase: 'syncing' | 'promoting'): void {
    if (this.progress?.node === id) this.progress.phase = phase;
    else {
      this.progress = {
        node: id,
        phase,
        keys: 0,
        bytes: 0,
        rangesUnchanged: 0,
        startedAt: performance.now(),
        rangesLeft: 0,
        rangesTotal: 0,
      };
    }
  }

  /**
   * Copies every range of `id`'s desired chains from its serving tail; true once all are copied,
   * false when the sync is abandoned (the member is no longer syncing, or this process stopped
   * writing the map).
   */
  private async copyRanges(id: string): Promise<boolean> {
    const host = this.host;
    this.track(id, 'syncing');
    // The ring with the member syncing must be answered by every node first: the tails then
    // forward every new write to it.
    if (!(await this.answeredByAll(id, 'syncing'))) return false;
    // Ranges by desired chain (merged by desired members only: the partition does not change
    // with the states of members that are not dead).
    const pending: HashRange[] = host.ring
      .chains(host.map.replicationFactor, replicaStatesOf(host.map))
      .filter((range) => range.desired.includes(id))
      .map((range) => ({ start: range.start, end: range.end }));
    const progress = this.progress!;
    progress.rangesTotal = pending.length;
    progress.rangesLeft = pending.length;
    let cleared = false;
    while (pending.length > 0 || !cleared) {
      if (this.stateOf(id) !== 'syncing' || !host.writing) return false;
      const learner = host.node(id);
      if (learner === undefined) return false;
      // It also drops what its chains no longer hold (ranges that moved while it was away: PURGE
      // of the whole ring), sent with the first round's DIGESTs so that it serves both from one
      // pass over its engine. They touch different keys: a learner is in the write path of every
      // range compared and copied here, and such a PURGE keeps what its path holds.
      const clearing: Promise<boolean> = cleared
        ? Promise.resolve(true)
        : host.migrator.purgeReturning(learner, host.map.ring.epoch);
      const [purged, done] = await Promise.all([
        clearing,
        pending.length > 0 ? this.copyDifferences(id, pending) : new Set<HashRange>(),
      ]);
      cleared = purged;
      if (done.size === 0) await sleep(ROUND_PAUSE_MS);
      else pending.splice(0, pending.length, ...pending.filter((range) => !done.has(range)));
    }
    return true;
  }

  /**
   * One round of the catch-up: copies to `id` those of `pending` whose values written before the
   * current epoch differ from their serving tail's, and resolves with the ranges done (equal, or
   * copied). DIGEST at `id` for every pending range and at each tail for its own, all at once (each
   * node answers from one pass over its engine); then, for the ranges that differ, `id` first
   * deletes its entries written before that epoch (one PURGE with `staleUpTo`, again one pass: its
   * stale copies, so a key deleted while it was away does not come back; writes forwarded to it
   * since it became a learner carry a later epoch and stay), then each tail copies its ranges
   * (MIGRATE, the migrator's retry loop). Ranges whose digests match are left as they are: "only
   * the difference". A range whose digest, purge or copy failed (a node failed, a tail changed) is
   * left pending for the next round.
   */
  private async copyDifferences(id: string, pending: readonly HashRange[]): Promise<Set<HashRange>> {
    const host = this.host;
    const migrator = host.migrator;
    const progress = this.progress!;
    const done = new Set<HashRange>();
    const map = host.map;
    const epoch = map.ring.epoch;
    const learner = host.node(id);
    if (learner === undefined) return done;
    // The ranges by their serving tail on the current map: one DIGEST pass and one MIGRATE per tail.
    const states = replicaStatesOf(map);
    const bySource = new Map<string, HashRange[]>();
    for (const range of pending) {
      const tail = tailOf(host.ring, map.replicationFactor, states, range);
      if (tail === undefined) continue;
      const list = bySource.get(tail) ?? [];
      list.push(range);
      bySource.set(tail, list);
    }
    const sources = [...bySource].flatMap(([tail, ranges]) => {
      const node = host.node(tail);
      return node === undefined ? [] : [{ tail, node, ranges }];
    });
    const compared = sources.flatMap((source) => source.ranges);
    const [own, ...theirs] = await Promise.all([
      migrator.digests(learner, compared, epoch),
      ...sources.map((source) => migrator.digests(source.node, source.ranges, epoch)),
    ]);
    if (own === undefined) return done;
    const ownOf = new Map(compared.map((range, i) => [range, own[i]!]));
    const copies: { tail: string; ranges: HashRange[] }[] = [];
    for (const [i, source] of sources.entries()) {
      const digests = theirs[i];
      if (digests === undefined) continue;
      const differing: HashRange[] = [];
      for (const [j, range] of source.ranges.entries()) {
        if (Buffer.compare(ownOf.get(range)!, digests[j]!) === 0) done.add(range);
        else differing.push(range);
      }
      const unchanged = source.ranges.length - differing.length;
      progress.rangesUnchanged += unchanged;
      progress.rangesLeft -= unchanged;
      if (differing.length > 0) copies.push({ tail: source.tail, ranges: differing });
    }
    if (copies.length === 0) return done;
    const stale = copies.flatMap((copy) => copy.ranges);
    if (!(await migrator.purgeReturning(learner, epoch, stale))) return done;
    await Promise.all(
      copies.map(async ({ tail, ranges }) => {
        for (const chunk of chunkRanges(ranges)) {
          const sent = await migrator.migrateWithRetries(chunk, () => this.planCopy(id, tail, chunk));
          if (sent === undefined) return;
          progress.keys += sent.keys;
          progress.bytes += sent.bytes;
          this.counted(sent);
          for (const range of chunk) done.add(range);
          progress.rangesLeft -= chunk.length;
        }
      }),
    );
    return done;
  }

  /**
   * The next attempt of a copy of `ranges` from `tail` to `id`, or undefined to stop it: the
   * member is no longer syncing, or a range's serving tail is no longer `tail` (the caller copies
   * it again from the new one).
   */
  private planCopy(
    id: string,
    tail: string,
    ranges: readonly HashRange[],
  ): { from: ClusterNode; to: ClusterNode; epoch: number } | undefined {
    const host = this.host;
    const map = host.map;
    if (!host.writing || this.stateOf(id) !== 'syncing') return undefined;
    const states = replicaStatesOf(map);
    for (const range of ranges) {
      if (tailOf(host.ring, map.replicationFactor, states, range) !== tail) return undefined;
    }
    const from = host.node(tail);
    const to = host.node(id);
    if (from === undefined || to === undefined) return undefined;
    return { from, to, epoch: map.ring.epoch };
  }
}

/** The serving tail of a range of the ring's desired-chain partition, if any member serves it. */
function tailOf(ring: HashRing, factor: number, states: ReplicaStates, range: HashRange): string | undefined {
  // Ranges are (start, end]: the end lies in the range, so its chain is the range's.
  return ring.chainAtPosition(range.end, factor, states).tail;
}
