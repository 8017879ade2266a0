/**
 * Replica sets by range: the ranges of the ring with the N distinct members that hold each one
 * (the owner first, then the next distinct members clockwise: the preference list of
 * `HashRing.getN`), and the difference between two rings' replica sets. A replicating cluster
 * derives its chains from these, so every party that builds the same ring agrees on them.
 */

import { type Continuum, DistinctWalker, PointSide } from './continuum.js';

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

/** Most entries of {@link ListInterner}'s dense table (256 KiB): lists of up to 3 of 39 members. */
const DENSE_LISTS = 1 << 16;

/**
 * The distinct owner lists of one ring's walks, numbered: two walks found the same members
 * exactly when they get the same number, so runs of equal lists compare numbers, kept in typed
 * arrays (an array of 20,000 references costs ~40 ns a store: it lives in the large-object space,
 * each store of a young reference recorded), and ranges with equal lists share one id array.
 *
 * A list of `k` owners below `nodes` is the number with digits `owner + 1` in base `nodes + 1`
 * (no digit is 0, so lists of different lengths differ). When every list of up to `n` owners
 * fits {@link DENSE_LISTS}, a table indexed by that number finds a list with one load (a map
 * lookup per walk was a fifth of `chains()`); otherwise a map by a string of the owners.
 */
class ListInterner {
  readonly #ids: readonly string[];
  readonly #base: number;
  /** List number + 1 by list digits (0: not met yet); undefined when the lists do not fit. */
  readonly #dense: Uint32Array | undefined;
  /** List number by owners (one UTF-16 code unit each, three past 0xfffe), when the lists do not fit. */
  readonly #sparse = new Map<string, number>();
  /** Id arrays by list number (0: the empty list). */
  readonly lists: (readonly string[])[] = [[]];

  /** Lists of up to `n` of the members `ids` (owner indices into it). */
  constructor(ids: readonly string[], n: number) {
    this.#ids = ids;
    this.#base = ids.length + 1;
    const size = this.#base ** Math.min(n, ids.length);
    this.#dense = size <= DENSE_LISTS ? new Uint32Array(size) : undefined;
    // The empty list (no member qualifies) is list 0 in both forms.
    if (this.#dense !== undefined) this.#dense[0] = 1;
    this.#sparse.set('', 0);
  }

  /** The number of the list `owners[0 .. count - 1]` (its ids: `lists[number]`). */
  intern(owners: Uint32Array, count: number): number {
    const dense = this.#dense;
    let key: string | undefined;
    if (dense !== undefined) {
      let digits = 0;
      for (let k = 0; k < count; k++) digits = digits * this.#base + owners[k]! + 1;
      const known = dense[digits]!;
      if (known !== 0) return known - 1;
      dense[digits] = this.lists.length + 1;
    } else {
      key = '';
      // Owners past 0xffff (more than 65,536 members) take a second code unit.
      for (let k = 0; k < count; k++) {
        const owner = owners[k]!;
        key +=
          owner < 0xffff
            ? String.fromCharCode(owner)
            : String.fromCharCode(0xffff, owner >>> 16, owner & 0xffff);
      }
      const known = this.#sparse.get(key);
      if (known !== undefined) return known;
      this.#sparse.set(key, this.lists.length);
    }
    const ids = new Array<string>(count);
    for (let k = 0; k < count; k++) ids[k] = this.#ids[owners[k]!]!;
    this.lists.push(ids);
    return this.lists.length - 1;
  }
}

/**
 * The list number of one walk's last result: a walk from the next point usually finds the same
 * members (neighbouring points of one range run), which compares `n` integers instead of interning.
 */
class LastList {
  #owners: Uint32Array;
  #count = -1;
  #list = 0;

  constructor(
    private readonly interner: ListInterner,
    want: number,
  ) {
    this.#owners = new Uint32Array(want);
  }

  /** The number of the list `owners[0 .. count - 1]`. */
  number(owners: Uint32Array, count: number): number {
    let same = count === this.#count;
    for (let k = 0; same && k < count; k++) same = owners[k] === this.#owners[k];
    if (same) return this.#list;
    // A loop, not `set(subarray)`: a view allocated per new list was a sixth of `chains()`.
    for (let k = 0; k < count; k++) this.#owners[k] = owners[k]!;
    this.#count = count;
    this.#list = this.interner.intern(owners, count);
    return this.#list;
  }
}

/** One walk of {@link walkRanges}: whom it skips and which points it passes over. */
export interface RangeWalk {
  /** `skip[owner] === 1`: the member holds no replica in this walk; undefined: none skipped. */
  readonly skip?: Uint8Array | undefined;
  /** Points on this side are not there for this walk (see `DistinctWalker.walk`). */
  readonly exclude?: PointSide | undefined;
}

/**
 * The merged ranges of {@link walkRanges}: range `k < count` is `(starts[k], ends[k]]` with the
 * lists numbered `firsts[k]` and `seconds[k]` (ids: `lists[number]`; equal numbers, equal lists).
 */
export interface WalkRuns {
  readonly count: number;
  readonly starts: Uint32Array;
  readonly ends: Uint32Array;
  readonly firsts: Uint32Array;
  readonly seconds: Uint32Array;
  readonly lists: readonly (readonly string[])[];
}

/**
 * Every range of the continuum with the lists of up to `n` distinct members that one or two walks
 * (`first`, `second`) find from its point: ascending by `end` (a range that wraps past 2^32 - 1
 * comes first), neighbours with the same lists merged (including the last range with the first
 * across the wrap). A continuum whose points are all equal yields one range covering the whole
 * ring (`start === end`). The second list is the first when there is no second walk.
 *
 * The walks run from every point (a few steps each) and neighbours are merged on interned lists
 * in typed arrays: the caller builds one object per merged range. No callback runs per point or
 * range (a new function per call deoptimised the loops of the next call).
 */
export function walkRanges(
  c: Continuum,
  ids: readonly string[],
  n: number,
  first: RangeWalk,
  second?: RangeWalk,
): WalkRuns {
  const { points } = c;
  const nodeCount = ids.length;
  const walker = new DistinctWalker(c, nodeCount);
  const interner = new ListInterner(ids, n);
  // A walk can find no more members than it does not skip: it stops there instead of going on
  // until every owner was met.
  const firstWant = Math.min(n, unskipped(first.skip, nodeCount));
  const secondWant = second === undefined ? 0 : Math.min(n, unskipped(second.skip, nodeCount));
  const firstList = new LastList(interner, firstWant);
  const secondList = second === undefined ? undefined : new LastList(interner, secondWant);
  // Merged runs, as parallel arrays (at most one run per point).
  const starts = new Uint32Array(points.length);
  const ends = new Uint32Array(points.length);
  const firsts = new Uint32Array(points.length);
  const seconds = new Uint32Array(points.length);
  let count = 0;
  let previous = points[points.length - 1]!;
  for (let i = 0; i < points.length; i++) {
    const end = points[i]!;
    // Of equal points only the first owns anything (the lookup rule of `locate`).
    if (i > 0 && end === points[i - 1]) continue;
    const a = firstList.number(walker.picked, walker.walk(i, firstWant, first.skip, first.exclude));
    const b =
      secondList === undefined
        ? a
        : secondList.number(walker.picked, walker.walk(i, secondWant, second?.skip, second?.exclude));
    if (count > 0 && firsts[count - 1] === a && seconds[count - 1] === b) {
      ends[count - 1] = end;
    } else {
      starts[count] = previous;
      ends[count] = end;
      firsts[count] = a;
      seconds[count] = b;
      count++;
    }
    previous = end;
  }
  if (count > 1 && firsts[count - 1] === firsts[0] && seconds[count - 1] === seconds[0]) {
    starts[0] = starts[count - 1]!;
    count--;
  }
  return { count, starts, ends, firsts, seconds, lists: interner.lists };
}

function unskipped(mask: Uint8Array | undefined, nodeCount: number): number {
  if (mask === undefined) return nodeCount;
  let count = 0;
  for (let owner = 0; owner < nodeCount; owner++) if (mask[owner] !== 1) count++;
  return count;
}

/**
 * Every range of the continuum with its `n` replicas (see {@link walkRanges}), ranges with equal
 * replicas sharing one array.
 */
export function replicaRangesOf(c: Continuum, ids: readonly string[], n: number): ReplicaRange[] {
  const { count, starts, ends, firsts, lists } = walkRanges(c, ids, n, {});
  const ranges: ReplicaRange[] = [];
  for (let k = 0; k < count; k++)
    ranges.push({ start: starts[k]!, end: ends[k]!, replicas: lists[firsts[k]!]! });
  return ranges;
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
 * neighbours with the same pair merged: the partition on which two rings' replica sets are both
 * constant. (The two rings of a ring change share one continuum, the union ring: `walkRanges`
 * walks both from each point instead.)
 */
function overlayReplicaRanges(
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

/**
 * The ring whose chains a walk derives: the ring itself, or, on the union ring of a ring change,
 * the previous or the next ring (see {@link ReplicaState}).
 */
export type WalkedRing = 'ring' | 'previous' | 'next';

/**
 * Whether a member in `state` holds no replica in the chains of `ring` (the next distinct members
 * clockwise take its place): a `dead` one; an `entering` one on the previous ring; an `exiting`
 * or `dropped` one on the next ring.
 */
export function skippedOn(state: ReplicaState | undefined, ring: WalkedRing): boolean {
  if (state === 'dead') return true;
  if (ring === 'previous') return state === 'entering';
  return ring === 'next' && isExitingState(state);
}

/**
 * {@link skippedOn} for every member (index into `ids`) as a mask for {@link walkRanges}, looked
 * up once instead of per walk; undefined when no member is skipped.
 */
function skipMask(
  ids: readonly string[],
  states: ReplicaStates | undefined,
  ring: WalkedRing,
): Uint8Array | undefined {
  if (states === undefined || states.size === 0) return undefined;
  let mask: Uint8Array | undefined;
  for (let owner = 0; owner < ids.length; owner++) {
    if (!skippedOn(states.get(ids[owner]!), ring)) continue;
    mask ??= new Uint8Array(ids.length);
    mask[owner] = 1;
  }
  return mask;
}

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

/** The chains {@link chainRangesOf} derived for one desired list. */
interface DerivedChains {
  /** The next ring's list (number) of the first range with this desired list, and its chain. */
  readonly next: number;
  readonly chain: Chain;
  /** Chains with other next lists, by list number. */
  others: Map<number, Chain> | undefined;
}

/** The states of a ring change whose members are all `up` (only weights change). */
export const NO_STATES: ReplicaStates = new Map();

/**
 * Every range of the continuum with its chain for factor `n` (what `HashRing.chains` returns):
 * on a plain ring the chain of the range's replicas with `dead` members skipped; during a ring
 * change (`ringChange`: the union ring) the chain of the previous ring's list and the next ring's,
 * neighbours with the same lists merged. Each distinct list (pair) gets its chain derived once, and
 * ranges with the same chain share its arrays.
 */
export function chainRangesOf(
  c: Continuum,
  ids: readonly string[],
  n: number,
  states: ReplicaStates | undefined,
  ringChange: boolean,
): ChainRange[] {
  const runs = ringChange
    ? walkRanges(
        c,
        ids,
        n,
        { skip: skipMask(ids, states, 'previous'), exclude: PointSide.NEXT },
        { skip: skipMask(ids, states, 'next'), exclude: PointSide.PREVIOUS },
      )
    : walkRanges(c, ids, n, { skip: skipMask(ids, states, 'ring') });
  const { count, starts, ends, firsts, seconds, lists } = runs;
  // Chains by desired list number, then by the next ring's list number (the desired one on a
  // plain ring): a desired list mostly meets one next list, so a map only for the others.
  const derived = new Array<DerivedChains | undefined>(lists.length);
  const ranges: ChainRange[] = [];
  for (let k = 0; k < count; k++) {
    const desired = firsts[k]!;
    const next = seconds[k]!;
    let known = derived[desired];
    if (known === undefined) {
      known = { next, chain: chainOfLists(lists, desired, next, n, states, ringChange), others: undefined };
      derived[desired] = known;
    }
    let chain = known.chain;
    if (known.next !== next) {
      known.others ??= new Map();
      const other = known.others.get(next);
      if (other === undefined) {
        chain = chainOfLists(lists, desired, next, n, states, ringChange);
        known.others.set(next, chain);
      } else {
        chain = other;
      }
    }
    ranges.push({
      start: starts[k]!,
      end: ends[k]!,
      desired: chain.desired,
      serving: chain.serving,
      path: chain.path,
      head: chain.head,
      tail: chain.tail,
      underReplicated: chain.underReplicated,
      changing: chain.changing,
    });
  }
  return ranges;
}

/** The chain of desired list `desired` (and, during a ring change, next ring's list `next`). */
function chainOfLists(
  lists: readonly (readonly string[])[],
  desired: number,
  next: number,
  n: number,
  states: ReplicaStates | undefined,
  ringChange: boolean,
): Chain {
  return ringChange
    ? chainOfDesired(lists[desired]!, n, states ?? NO_STATES, lists[next]!)
    : chainOfDesired(lists[desired]!, n, states);
}
