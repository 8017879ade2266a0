import { HashRing, inRange, type RingAlgorithm } from '@dstore/hashring';
import type { HashRange, RingRequest } from '@dstore/protocol';

/** A range whose owner changed at some epoch and whose migration is not final yet (no PURGE). */
export interface PendingMove extends HashRange {
  readonly from: string;
  readonly to: string;
  readonly epoch: number;
}

/** Maps a key's bytes 1:1 to a string, so keys can sit in a Set. */
export function keyString(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString('latin1');
}

/**
 * A node's view of the ring: which keys it owns at the balancer's current epoch, and the ranges
 * moving to or from it. Inactive (every key accepted) until the first RING arrives, so a node
 * without a balancer, or with an older balancer, serves as before.
 *
 * While a range moves in, every SET/DEL is remembered as "touched": a migrated copy of a touched
 * key is older than what the client wrote, so MIGRATE_PUT skips it. The set lives until the last
 * incoming range is purged; it holds the keys written during a migration, no more.
 */
export class Ownership {
  private current: HashRing | undefined;
  private currentEpoch = -1;
  private generation = -1;
  private pending: PendingMove[] = [];
  private readonly touched = new Set<string>();
  private incoming = 0;

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

  /** Whether ranges are moving to this node (writes are tracked as touched). */
  get migratingIn(): boolean {
    return this.incoming > 0;
  }

  /**
   * Installs the ring of a RING request. An older or equal epoch of the same balancer generation
   * is ignored (RING is resent on every reconnect). Ranges whose owner changes to or from this
   * node become pending.
   */
  apply(request: RingRequest): void {
    if (request.generation === this.generation && request.epoch <= this.currentEpoch) return;
    this.generation = request.generation;
    const next = HashRing.from(request.nodes, {
      algorithm: request.algorithm as RingAlgorithm,
      ...(request.vnodes > 0 ? { vnodes: request.vnodes } : {}),
    });
    const previous = this.current;
    this.current = next;
    this.currentEpoch = request.epoch;
    if (previous === undefined || previous.size === 0 || next.size === 0) return;
    if (previous.algorithm !== next.algorithm || next.algorithm === 'rendezvous') return;
    const self = this.selfId();
    for (const move of previous.diff(next)) {
      if (move.from !== self && move.to !== self) continue;
      this.pending.push({ ...move, epoch: request.epoch });
      if (move.to === self) this.incoming++;
    }
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

  /** Whether ranges are moving to this node in the migration of `epoch` (not purged yet). */
  expectsMigration(epoch: number): boolean {
    const self = this.selfId();
    return this.pending.some((move) => move.to === self && move.epoch === epoch);
  }

  /** Remembers a client write of `key` while ranges move in. */
  noteWrite(key: Uint8Array): void {
    if (this.incoming > 0) this.touched.add(keyString(key));
  }

  /** Whether a client wrote or deleted `key` since the current incoming migrations began. */
  wasTouched(key: Uint8Array): boolean {
    return this.incoming > 0 && this.touched.has(keyString(key));
  }

  /** Ends the migration state of `ranges` (PURGE); returns the ranges this node no longer owns. */
  finish(ranges: readonly HashRange[]): void {
    const done = new Set(ranges.map((range) => `${range.start}:${range.end}`));
    const self = this.selfId();
    this.pending = this.pending.filter((move) => {
      if (!done.has(`${move.start}:${move.end}`)) return true;
      if (move.to === self) this.incoming--;
      return false;
    });
    if (this.incoming <= 0) {
      this.incoming = 0;
      this.touched.clear();
    }
  }

  private isMovingAway(position: number, self: string): boolean {
    for (const move of this.pending) {
      if (move.from === self && inRange(position, move)) return true;
    }
    return false;
  }
}
