import {
  type Chain,
  type HashRing,
  inRange,
  RangeIndex,
  type ReplicaState,
  type ReplicaStates,
  ringOfSpec,
} from '@dstore/hashring';
import type { HashRange, RingRequest } from '@dstore/protocol';

/** A range whose owner changed at some epoch and whose migration is not final yet (no PURGE). */
export interface PendingMove extends HashRange {
  readonly from: string;
  readonly to: string;
  readonly epoch: number;
}

/** Largest writeEpoch an entry header holds (uint32). */
const MAX_WRITE_EPOCH = 0xffff_ffff;

/**
 * A node's view of the ring: which keys it owns at the balancer's current epoch, and the ranges
 * moving to or from it. Inactive (every key accepted) until the first RING arrives, so a node
 * without a balancer, or with an older balancer, serves as before.
 *
 * Every client write is stored with {@link Ownership.writeEpoch}, and a DEL of a key in a range
 * moving in leaves a tombstone ({@link Ownership.isMovingIn}); MIGRATE_PUT keeps a copy only when
 * it is newer than the local entry. Both are stored with the data, so a node that restarts in the
 * middle of a migration still knows what its clients wrote (nothing is tracked in memory here).
 */
export class Ownership {
  private current: HashRing | undefined;
  /** Member addresses of the latest RING: where a MIGRATE may send keys. */
  private addresses = new Map<string, { readonly host: string; readonly port: number }>();
  /** Replication factor and members' replication states of the latest RING (1 and all up without). */
  private factor = 1;
  private states = new Map<string, ReplicaState>();
  /**
   * The chains of the latest ring by continuum point (`HashRing.pointIndex`), filled as keys are
   * looked up, so a key's chain costs one ring lookup and one array index rather than a walk of
   * the ring and a new chain per call (several per replicated write: at the head, at each
   * receiver, on a re-route). Dropped on every RING (a new ring, factor or replication state);
   * holds only the points whose keys this node was asked about.
   */
  private chainCache: (Chain | undefined)[] | undefined;
  /**
   * Replication step 5: the switching ring (with its factor and states) whose changing chains
   * stay frozen while RINGs arrive `holding` (the next ring, installed on some nodes only), and
   * their chains by that ring's points (filled as keys are looked up); `'all'` when the first
   * holding RING found no switching ring here (this process started meanwhile: it cannot know
   * which chains changed, so every write waits for the ring without the flag). Undefined otherwise.
   */
  private held:
    | { readonly ring: HashRing; readonly factor: number; readonly states: ReplicaStates }
    | 'all'
    | undefined;
  private heldChains: (Chain | undefined)[] | undefined;
  private currentEpoch = -1;
  private generation = -1;
  private pending: PendingMove[] = [];
  /**
   * The pending moves towards this node with their old owner, for the per-DEL check and a direct
   * client's fall-back; undefined when there are none.
   */
  private incoming: RangeIndex<string> | undefined;
  private currentWriteEpoch = 0;
  /** Highest epoch whose ranges a PURGE ended here; -1 before any (not kept across restarts). */
  private purged = -1;

  constructor(private readonly selfId: () => string) {}

  /** The ring of the latest RING, if any. */
  get ring(): HashRing | undefined {
    return this.current;
  }

  /** Epoch of the latest RING; -1 before any. */
  get epoch(): number {
    return this.currentEpoch;
  }

  /** Ranges moving to or from this node that have not been purged yet. */
  get pendingMoves(): readonly PendingMove[] {
    return this.pending;
  }

  /** Whether ranges are moving to this node (a DEL of their keys leaves a tombstone). */
  get migratingIn(): boolean {
    return this.incoming !== undefined;
  }

  /**
   * The writeEpoch stored with a client write accepted now: the epoch of the latest RING, 0
   * before any, held at 2^32-1 beyond (an entry header keeps a uint32; 4 billion map changes).
   *
   * Why it orders writes: within one ring epoch only one node accepts writes for a key, and a new
   * owner learns the new ring (a higher epoch) before it receives writes for its new ranges while
   * the old owner refuses them from then on. So every write the old owner made to a moving key has
   * a smaller writeEpoch than every write its new owner accepts, and a migrated copy whose
   * writeEpoch is not greater than the local entry's is never newer than it.
   */
  get writeEpoch(): number {
    return this.currentWriteEpoch;
  }

  /**
   * Installs the ring of a RING request. An older or equal epoch of the same balancer generation
   * is ignored (RING is resent on every reconnect). Ranges whose owner changes to or from this
   * node become pending.
   */
  apply(request: RingRequest): void {
    if (request.generation === this.generation && request.epoch <= this.currentEpoch) {
      // The same ring again, resent because a member came back at a new address: only the
      // addresses (and the members' replication states) can differ (members and weights are
      // fixed by the epoch).
      if (request.epoch === this.currentEpoch) {
        const known = this.addresses;
        this.learnAddresses(request);
        this.keepSourceAddresses(known);
      }
      return;
    }
    this.generation = request.generation;
    const next = ringOfSpec(request);
    const previous = this.current;
    // The chains a holding RING keeps frozen are those that changed on the switching ring this
    // one follows (or that a previous holding ring kept frozen: several follow one another when a
    // member fails meanwhile); all of them when this node never saw that switching ring.
    const held =
      request.holding !== true
        ? undefined
        : this.isSwitching && previous !== undefined
          ? { ring: previous, factor: this.factor, states: this.states }
          : (this.held ?? 'all');
    if (held !== this.held) this.heldChains = undefined;
    this.held = held;
    this.current = next;
    const known = this.addresses;
    this.learnAddresses(request);
    this.currentEpoch = request.epoch;
    this.currentWriteEpoch = Math.min(Math.max(request.epoch, 0), MAX_WRITE_EPOCH);
    // Replication moves ranges through chains (learners, the switch), never by owner: no pending
    // moves, so no fall-back reads, PULLs or migration tombstones.
    if (this.factor > 1) return;
    if (previous === undefined || previous.size === 0 || next.size === 0) return;
    if (
      previous.algorithm !== next.algorithm ||
      previous.hashTag !== next.hashTag ||
      next.algorithm === 'rendezvous'
    )
      return;
    const self = this.selfId();
    for (const move of previous.diff(next)) {
      if (move.from !== self && move.to !== self) continue;
      this.pending.push({ ...move, epoch: request.epoch });
    }
    this.indexIncoming();
    this.keepSourceAddresses(known);
  }

  /**
   * Keeps the address of every old owner of a range moving here that the new ring no longer
   * lists (a node leaving gracefully streams its keys away from outside the ring): PULLs (before a
   * read-modify-write or a DEL of a key the stream has not brought yet) go to it until PURGE.
   */
  private keepSourceAddresses(
    known: ReadonlyMap<string, { readonly host: string; readonly port: number }>,
  ): void {
    const self = this.selfId();
    for (const move of this.pending) {
      if (move.to !== self || this.addresses.has(move.from)) continue;
      const address = known.get(move.from);
      if (address !== undefined) this.addresses.set(move.from, address);
    }
  }

  private learnAddresses(request: RingRequest): void {
    const addresses = new Map<string, { readonly host: string; readonly port: number }>();
    const states = new Map<string, ReplicaState>();
    for (const node of request.nodes) {
      if (node.host !== undefined && node.port !== undefined) {
        addresses.set(node.id, { host: node.host, port: node.port });
      }
      if (node.replicaState !== undefined) states.set(node.id, node.replicaState);
    }
    this.addresses = addresses;
    this.states = states;
    this.factor = request.replicationFactor ?? 1;
    this.isSwitching = request.switching === true;
    this.chainCache = undefined;
  }

  private isSwitching = false;

  /**
   * Replication step 5: the latest RING switches a ring change (its `entering` / `exiting`
   * members): the heads of its changing chains (`Chain.changing`) refuse client writes until the
   * next ring is installed, and the RING is answered once drained.
   */
  get switching(): boolean {
    return this.isSwitching;
  }

  /**
   * Whether a client write of `key`, whose chain on the latest ring is `chain`, must be refused
   * because a ring change freezes it: the latest RING switches and the chain is changing, or the
   * latest RING is the next ring `holding` and the key's chain changed on the switching ring.
   * A frozen write is refused `UNAVAILABLE` (not executed) by the head.
   */
  freezes(key: Uint8Array, chain: Chain): boolean {
    if (this.isSwitching) return chain.changing;
    const held = this.held;
    if (held === undefined) return false;
    if (held === 'all') return true;
    const position = held.ring.position(key);
    const point = held.ring.pointIndex(position);
    if (point < 0) return held.ring.chainAtPosition(position, held.factor, held.states).changing;
    let cache = this.heldChains;
    if (cache === undefined) {
      cache = new Array<Chain | undefined>(held.ring.pointCount);
      this.heldChains = cache;
    }
    let heldChain = cache[point];
    if (heldChain === undefined) {
      heldChain = held.ring.chainAtPosition(position, held.factor, held.states);
      cache[point] = heldChain;
    }
    return heldChain.changing;
  }

  /** The replication factor of the latest RING; 1 before any, or from a balancer that predates it. */
  get replicationFactor(): number {
    return this.factor;
  }

  /** Each ring member's replication state as the latest RING gives it (absent: `up`). */
  get replicaStates(): ReadonlyMap<string, ReplicaState> {
    return this.states;
  }

  /**
   * The chain of `key` on the latest ring (see `HashRing.chainOf`): the same chain the balancer
   * and direct clients derive from the same map. Undefined before the first RING. With factor 1
   * its head and tail are the key's owner, which is what this node routes by today.
   */
  chainOf(key: Uint8Array): Chain | undefined {
    const ring = this.current;
    if (ring === undefined || ring.size === 0) return undefined;
    const position = ring.position(key);
    const point = ring.pointIndex(position);
    // A rendezvous ring has no points: its chains are computed per call.
    if (point < 0) return ring.chainAtPosition(position, this.factor, this.states);
    let cache = this.chainCache;
    if (cache === undefined) {
      cache = new Array<Chain | undefined>(ring.pointCount);
      this.chainCache = cache;
    }
    let chain = cache[point];
    if (chain === undefined) {
      chain = ring.chainAtPosition(position, this.factor, this.states);
      cache[point] = chain;
    }
    return chain;
  }

  /** The address the latest RING gives for member `id`, or undefined (not a member, or no address). */
  addressOf(id: string): { readonly host: string; readonly port: number } | undefined {
    return this.addresses.get(id);
  }

  /**
   * The owner to name in NOT_OWNER when this node must refuse `key`, or undefined when it may
   * serve it: it owns the key, no RING arrived yet, or `fallback` is set and the key's range is
   * moving away from here (the copy is kept until PURGE).
   */
  refusal(key: Uint8Array, fallback: boolean): string | undefined {
    const ring = this.current;
    if (ring === undefined || ring.size === 0) return undefined;
    const position = ring.position(key);
    const owner = ring.getByPosition(position);
    const self = this.selfId();
    if (owner === self) return undefined;
    if (fallback && this.isMovingAway(position, self)) return undefined;
    return owner;
  }

  /** This node's id. */
  get self(): string {
    return this.selfId();
  }

  /**
   * With a replication factor above 1 (the one branch the factor-1 path pays), the member to name
   * in NOT_OWNER / MOVED when this node must refuse a client request of `key`, or undefined when
   * it may serve it: a write is served by the head of the key's serving chain, a read by its tail
   * (the other members may hold writes the tail has not acknowledged). Otherwise as {@link refusal}.
   */
  routeRefusal(key: Uint8Array, fallback: boolean, write: boolean): string | undefined {
    if (this.factor === 1) return this.refusal(key, fallback);
    const chain = this.chainOf(key);
    if (chain === undefined) return undefined;
    const serving = write ? chain.head : chain.tail;
    return serving === this.selfId() ? undefined : (serving ?? chain.desired[0]);
  }

  /**
   * The member a request of `key` should have been sent to on the latest ring: with factor 1 its
   * owner, above it the head (a write) or tail (a read) of its serving chain. Undefined before any RING.
   */
  routeOf(key: Uint8Array, write: boolean): string | undefined {
    const ring = this.current;
    if (ring === undefined || ring.size === 0) return undefined;
    if (this.factor === 1) return ring.get(key);
    const chain = this.chainOf(key)!;
    return (write ? chain.head : chain.tail) ?? chain.desired[0];
  }

  /** Whether ranges are moving to this node in the migration of `epoch` (not purged yet). */
  expectsMigration(epoch: number): boolean {
    const self = this.selfId();
    return this.pending.some((move) => move.to === self && move.epoch === epoch);
  }

  /**
   * Whether `key` lies in a range moving to this node that is not purged yet: a client delete of
   * it must leave a tombstone, or a copy of the old owner's value could bring it back. One binary
   * search while ranges move in; nothing (not even the hash) otherwise.
   */
  isMovingIn(key: Uint8Array): boolean {
    const incoming = this.incoming;
    const ring = this.current;
    return incoming !== undefined && ring !== undefined && incoming.has(ring.position(key));
  }

  /**
   * The old owner of `key` when its range is moving to this node and not purged yet, else
   * undefined: where a direct client reads a key this node does not have yet (ASK).
   */
  sourceOf(key: Uint8Array): string | undefined {
    const incoming = this.incoming;
    const ring = this.current;
    return incoming === undefined || ring === undefined ? undefined : incoming.valueAt(ring.position(key));
  }

  /**
   * Highest ring epoch whose moving ranges were purged here: a SCAN that began while that epoch's
   * keys streamed may have counted on copies this node no longer has.
   */
  get purgedEpoch(): number {
    return this.purged;
  }

  /**
   * Which keys a SCAN page may return from this node: the keys it owns, and with `moving` also its
   * copies of ranges moving away (kept until PURGE), so that a key streaming elsewhere is found on
   * one side or the other. Every key before the first RING.
   */
  scanFilter(moving: boolean): (key: Uint8Array) => boolean {
    const ring = this.current;
    if (ring === undefined || ring.size === 0) return () => true;
    const self = this.selfId();
    return (key) => {
      const position = ring.position(key);
      return ring.getByPosition(position) === self || (moving && this.isMovingAway(position, self));
    };
  }

  /** Ends the migration state of `ranges` (PURGE of the migration of `epoch`). */
  finish(ranges: readonly HashRange[], epoch: number): void {
    this.purged = Math.max(this.purged, epoch);
    const done = new Set(ranges.map((range) => `${range.start}:${range.end}`));
    this.pending = this.pending.filter((move) => !done.has(`${move.start}:${move.end}`));
    this.indexIncoming();
  }

  private indexIncoming(): void {
    const self = this.selfId();
    const incoming = this.pending.filter((move) => move.to === self);
    this.incoming =
      incoming.length === 0 ? undefined : new RangeIndex(incoming, (range) => (range as PendingMove).from);
  }

  private isMovingAway(position: number, self: string): boolean {
    for (const move of this.pending) {
      if (move.from === self && inRange(position, move)) return true;
    }
    return false;
  }
}
