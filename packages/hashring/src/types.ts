/** A member of a ring, as stored (immutable). */
export interface RingNode {
  /** Unique, non-empty node id; also the name hashed to place the node. */
  readonly id: string;
  /** Relative capacity; positive and finite. */
  readonly weight: number;
  /**
   * Only on the union ring of a replicated ring change that changes this member's weight (see
   * `HashRing.chainOf`): its weight on the previous ring, `weight` being its weight on the next
   * one. Absent when the weight does not change.
   */
  readonly previousWeight?: number;
}

/** A node as accepted by constructors and `add`. */
export interface RingNodeInput {
  /** Unique, non-empty node id. */
  id: string;
  /** Relative capacity; positive and finite. Defaults to 1. */
  weight?: number;
  /**
   * The union ring of a replicated ring change that changes this member's weight: its weight on
   * the previous ring (positive and finite; `weight` is the next ring's). The member's points that
   * only one of the two weights gives belong to that ring alone (see `HashRing.chainOf`).
   * Omitted, or equal to `weight`: no weight change. `vnode` only (`UNSUPPORTED_OPERATION` otherwise).
   */
  previousWeight?: number | undefined;
}

/**
 * Placement algorithm.
 * - `vnode` (default): MurmurHash3 ring with `vnodes` points per unit weight.
 * - `ketama`: byte-for-byte compatible with libketama/twemproxy (MD5, 160 points per server).
 * - `rendezvous`: highest-random-weight hashing; perfect balance, O(nodes) lookups.
 */
export type RingAlgorithm = 'vnode' | 'ketama' | 'rendezvous';

/** Options for building a ring. */
export interface RingOptions {
  /** Placement algorithm. Default `'vnode'`. */
  algorithm?: RingAlgorithm;
  /**
   * Virtual nodes per unit of weight, `vnode` algorithm only (ignored by the
   * others). Default {@link DEFAULT_VNODES}.
   */
  vnodes?: number;
  /**
   * Places keys by a part of them: two characters, the opening then the closing one (`'{}'` is
   * Redis Cluster's and twemproxy's usual tag). A key with an opening character followed later by
   * a closing one, with at least one character between, is placed by the characters between the
   * first opening one and the first closing one after it, so `{user:7}:name` and `{user:7}:cart`
   * share one position, owner and replica chain; any other key by all of it. Printable ASCII
   * only. Default: none (every key placed by all of it).
   */
  hashTag?: string | undefined;
}

/**
 * A hash range whose owner changes between two rings.
 *
 * It covers positions `p` with `start < p <= end` (start exclusive, end
 * inclusive). When `start >= end` the range wraps past 2^32-1 to 0 and covers
 * `p > start || p <= end`; `start === end` therefore means the whole ring.
 */
export interface RangeMove {
  /** Exclusive lower bound (unsigned 32-bit). */
  readonly start: number;
  /** Inclusive upper bound (unsigned 32-bit). */
  readonly end: number;
  /** Owner in the old ring. */
  readonly from: string;
  /** Owner in the new ring. */
  readonly to: string;
}

/** Default virtual nodes per unit weight for the `vnode` algorithm. */
export const DEFAULT_VNODES = 4096;
