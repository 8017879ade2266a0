/**
 * Replica sets by range: the ranges of the ring with the N distinct members that hold each one
 * (the owner first, then the next distinct members clockwise: the preference list of
 * `HashRing.getN`), and the difference between two rings' replica sets. A replicating cluster
 * derives its chains from these, so every party that builds the same ring agrees on them.
 */

import { type Continuum, distinctFromIndex, type PointSide } from './continuum.js';

/** A ring range `(start, end]` (wrapping when `start >= end`) and the members that hold it. */
export interface ReplicaRange {
  /** Exclusive lower bound (unsigned 32-bit). */
  readonly start: number;
  /** Inclusive upper bound (unsigned 32-bit). */
  readonly end: number;
  /** Distinct member ids, the owner first, then clockwise; `min(n, members)` of them. */
  readonly replicas: readonly string[];
}

/** A range whose replica set differs between two rings. */
export interface ReplicaSetChange {
  /** Exclusive lower bound (unsigned 32-bit). */
  readonly start: number;
  /** Inclusive upper bound (unsigned 32-bit). */
  readonly end: number;
  /** Replica set on the old ring. */
  readonly before: readonly string[];
  /** Replica set on the new ring. */
  readonly after: readonly string[];
}

function sameMembers(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Joins neighbours with the same replicas (`same` compares two entries' members), including the
 * last range with the first across the wrap. Ranges arrive ascending by `end`.
 */
function mergeNeighbours<T extends { readonly start: number; readonly end: number }>(
  ranges: T[],
  same: (a: T, b: T) => boolean,
): T[] {
  const merged: T[] = [];
  for (const range of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && last.end === range.start && same(last, range)) {
      merged[merged.length - 1] = { ...range, start: last.start };
    } else {
      merged.push(range);
    }
  }
  const first = merged[0];
  const last = merged[merged.length - 1];
  if (merged.length > 1 && first !== undefined && last !== undefined && last.end === first.start) {
    if (same(last, first)) {
      merged[0] = { ...first, start: last.start };
      merged.pop();
    }
  }
  return merged;
}

/**
 * Every range of the continuum with its `n` replicas, ascending by `end` (a range that wraps past
 * 2^32 - 1 comes first), neighbours with the same replicas merged. A continuum whose points are all
 * equal yields one range covering the whole ring (`start === end`). Owners for which `skip` is true
 * hold no replicas: the next distinct members clockwise take their place; points on side
 * `exclude` are passed over (see `distinctFromIndex`).
 */
export function replicaRangesOf(
  c: Continuum,
  ids: readonly string[],
  n: number,
  skip?: (owner: number) => boolean,
  exclude?: PointSide,
): ReplicaRange[] {
  const { points } = c;
  const ranges: ReplicaRange[] = [];
  let previous = points[points.length - 1]!;
  for (let i = 0; i < points.length; i++) {
    const end = points[i]!;
    // Of equal points only the first owns anything (the lookup rule of `locate`).
    if (i > 0 && end === points[i - 1]) continue;
    const replicas = distinctFromIndex(c, i, n, ids.length, skip, exclude).map((owner) => ids[owner]!);
    ranges.push({ start: previous, end, replicas });
    previous = end;
  }
  return mergeNeighbours(ranges, (a, b) => sameMembers(a.replicas, b.replicas));
}

/** Walks a sorted replica-range list by ascending positions, as lookups do. */
class ReplicaCursor {
  private i = 0;
  constructor(private readonly ranges: readonly ReplicaRange[]) {}

  /** Replicas of the range holding `position`; positions must be asked in ascending order. */
  replicasAt(position: number): readonly string[] {
    const ranges = this.ranges;
    while (this.i < ranges.length && ranges[this.i]!.end < position) this.i++;
    // Past the last end: the range that wraps, which is the first one.
    return ranges[this.i === ranges.length ? 0 : this.i]!.replicas;
  }
}

/**
 * Every range of either list with the replicas of both (`before`, `after`), ascending by `end`,
 * neighbours with the same pair merged: the partition of a ring change, whose previous and next
 * chains are both constant on each range.
 */
export function overlayReplicaRanges(
  before: readonly ReplicaRange[],
  after: readonly ReplicaRange[],
): ReplicaSetChange[] {
  const bounds = [...new Set([...before.map((r) => r.end), ...after.map((r) => r.end)])].sort(
    (a, b) => a - b,
  );
  const old = new ReplicaCursor(before);
  const next = new ReplicaCursor(after);
  const ranges: ReplicaSetChange[] = [];
  for (let k = 0; k < bounds.length; k++) {
    const end = bounds[k]!;
    const start = bounds.length === 1 ? end : k === 0 ? bounds[bounds.length - 1]! : bounds[k - 1]!;
    ranges.push({ start, end, before: old.replicasAt(end), after: next.replicasAt(end) });
  }
  return mergeNeighbours(ranges, (a, b) => sameMembers(a.before, b.before) && sameMembers(a.after, b.after));
}

/**
 * Ranges whose replica set differs between two lists from {@link replicaRangesOf} (order matters:
 * a member moving from first to second replica is a change, the owner changed), ascending by `end`,
 * neighbours with the same change merged.
 */
export function diffReplicaRanges(
  before: readonly ReplicaRange[],
  after: readonly ReplicaRange[],
): ReplicaSetChange[] {
  // The overlay merged only equal neighbours: what is left after the filter needs no second merge.
  return overlayReplicaRanges(before, after).filter((range) => !sameMembers(range.before, range.after));
}

/**
 * A member's replication state in a cluster map (see the replication design):
 * - `up`: holds every committed write of its ranges; serves in its chains at its ring position;
 * - `syncing`: catching up (a learner): in desired chains and at the end of write paths (it
 *   receives every write of its chains), not in serving ones;
 * - `promoting`: synced, about to serve: as `syncing`, and the heads of its chains refuse new
 *   writes until every write in flight reached it (the drain before it becomes `up`);
 * - `failed`: stopped answering: in desired chains (its copies are missing), not in serving ones;
 * - `dead`: declared gone for good: skipped, the next member clockwise takes its place.
 *
 * A ring change with a factor above 1 (replication step 5) is routed on the **union** of the
 * previous and the next ring, its changing members marked (they appear only in such a ring):
 * - `entering`: in the next ring only: skipped in the previous chains (what serves), a learner
 *   of the next chains it belongs to (at the end of their write paths);
 * - `exiting`: in the previous ring only: serves its previous chains until the switch, skipped
 *   in the next chains (whose new members are learners meanwhile);
 * - `dropped`: in the previous ring only and serving nothing (declared dead, or failed while it
 *   left): counted in its previous chains as a missing member, never a source.
 */
export type ReplicaState =
  | 'up'
  | 'syncing'
  | 'promoting'
  | 'failed'
  | 'dead'
  | 'entering'
  | 'exiting'
  | 'dropped';

/** Whether a member in `state` is a learner: in write paths after the serving members, serving nothing. */
export function isLearnerState(state: ReplicaState | undefined): boolean {
  return state === 'syncing' || state === 'promoting' || state === 'entering';
}

/** Whether a member in `state` is in the previous ring only of a ring change (`exiting`, `dropped`). */
export function isExitingState(state: ReplicaState | undefined): boolean {
  return state === 'exiting' || state === 'dropped';
}

/** Whether `states` mark a ring change (an `entering`, `exiting` or `dropped` member). */
export function isRingChange(states: ReplicaStates | undefined): boolean {
  if (states === undefined) return false;
  for (const state of states.values()) {
    if (state === 'entering' || state === 'exiting' || state === 'dropped') return true;
  }
  return false;
}

/** Members' replication states by id; a member absent from the map is `up`. */
export type ReplicaStates = ReadonlyMap<string, ReplicaState>;

/** The replica chain of a key or range, derived from the ring, the factor and members' states. */
export interface Chain {
  /** The first `n` distinct members clockwise that are not `dead`, in ring order. */
  readonly desired: readonly string[];
  /** {@link desired} restricted to `up` members, same order: the members that serve. */
  readonly serving: readonly string[];
  /**
   * The write path: {@link serving}, then the learners ({@link desired}'s `syncing` and
   * `promoting` members, ring order). Writes enter at its first member and are acknowledged once
   * its last one applied them; reads stay at {@link tail}. Equal to `serving` (the same array)
   * when no member of the chain is a learner.
   */
  readonly path: readonly string[];
  /** First serving member (where writes enter), or undefined when none serves. */
  readonly head: string | undefined;
  /** Last serving member (where reads are answered), or undefined when none serves. */
  readonly tail: string | undefined;
  /**
   * Fewer members serve than the chain can have: min(`n`, the ring's members that are not
   * `dead`), which is {@link desired}'s length. A ring shorter than `n` (a cluster of 2 with
   * factor 3) keeps one copy per member and is not under-replicated for it: it cannot do better
   * until a member joins. Always false for `n = 1`: a single copy has no replica to restore (its
   * range is unavailable while its owner is down, which is not under-replication).
   */
  readonly underReplicated: boolean;
  /**
   * During a ring change (see {@link ReplicaState}): the chain differs between the previous ring
   * ({@link desired}) and the next, in its members or in their order (a weight change can reorder
   * a chain). Its heads refuse writes while the change switches (the drain before the next ring
   * is installed). False otherwise.
   */
  readonly changing: boolean;
}

/** A ring range `(start, end]` (wrapping when `start >= end`) and its chain. */
export interface ChainRange extends Chain {
  /** Exclusive lower bound (unsigned 32-bit). */
  readonly start: number;
  /** Inclusive upper bound (unsigned 32-bit). */
  readonly end: number;
}

/** Whether a member in `state` serves the chains it is in (an exiting member serves until the switch). */
function serves(state: ReplicaState | undefined): boolean {
  return state === undefined || state === 'up' || state === 'exiting';
}

/**
 * The chain whose desired members are `desired` (dead members already skipped). During a ring
 * change (see {@link ReplicaState}) `desired` is the range's chain on the previous ring and
 * `next` its chain on the next one: the members of `next` not in `desired` (not `failed`) are
 * learners appended to the write path, and the chain is {@link Chain.changing}.
 */
export function chainOfDesired(
  desired: readonly string[],
  n: number,
  states: ReplicaStates | undefined,
  next?: readonly string[],
): Chain {
  const serving = states === undefined ? desired : desired.filter((id) => serves(states.get(id)));
  let path = serving;
  let changing = false;
  if (states !== undefined) {
    const learners =
      serving.length < desired.length ? desired.filter((id) => isLearnerState(states.get(id))) : [];
    if (next !== undefined) {
      for (const id of next) {
        if (desired.includes(id) || learners.includes(id)) continue;
        changing = true;
        if (states.get(id) !== 'failed') learners.push(id);
      }
      // The same members in another order change too (a weight change can move a member's point
      // past another's): the chain must drain before its next order serves, since a member that
      // becomes the tail acknowledges what it holds unacknowledged, which its new predecessors
      // may lack (the chain replication invariant holds only while the order is kept).
      if (!changing) changing = desired.length !== next.length || desired.some((id, i) => next[i] !== id);
    }
    if (learners.length > 0) path = [...serving, ...learners];
  }
  return {
    desired,
    serving,
    path,
    head: serving[0],
    tail: serving[serving.length - 1],
    // desired holds min(n, members not dead) ids (the walk stops when the ring has no more).
    underReplicated: n > 1 && serving.length < desired.length,
    changing,
  };
}
