/**
 * Wing & Gong's linearizability search with Lowe's memoisation, as porcupine's `checkSingle`:
 *
 * Invocations and completions form one doubly linked list in history order. The search walks it,
 * trying to linearize (take next) each operation whose invocation comes before the first
 * completion still in the list: an operation may take effect only between its invocation and its
 * completion, so once a completion is reached without its operation linearized, the choice made
 * last was wrong and is undone (backtracking). A linearized operation is unlinked (call and
 * completion), which makes the list the set of operations still to place. A (set of linearized
 * operations, model state) pair already explored is never explored again: two paths reaching the
 * same pair have the same future (Lowe's cache), which keeps the search polynomial on histories
 * with little concurrency.
 */
import { LinearizedSet } from './bitset.js';
import type { Model } from './model.js';
import type { Operation } from './operation.js';

/** The outcome of a check: `unknown` when the budget ran out first (never a pass). */
export type Verdict = 'ok' | 'illegal' | 'unknown';

/** Limits of one search; reaching either yields `unknown`. */
export interface SearchBudget {
  /** `performance.now()` after which the search gives up. */
  readonly deadline: number;
  /** Most search steps (calls tried plus backtracks). */
  readonly maxSteps: number;
}

/** The result of searching one partition. */
export interface SearchResult<State> {
  readonly verdict: Verdict;
  readonly steps: number;
  /**
   * The longest linearizable prefix found (operation indices, in linearization order) and the
   * state after it. When the verdict is `ok` it is a full linearization.
   */
  readonly longestPrefix: readonly number[];
  readonly stateAfterPrefix: State;
}

interface ListNode {
  /** The operation (index into the operations array). */
  readonly op: number;
  readonly isCall: boolean;
  /** A call's completion node (a completion's is unused). */
  match: ListNode | null;
  prev: ListNode | null;
  next: ListNode | null;
}

/** Builds the list: events ordered by position; at equal positions (two infinities) calls first. */
function buildList<Input, Output>(operations: readonly Operation<Input, Output>[]): ListNode {
  const events: { position: number; node: ListNode }[] = [];
  operations.forEach((operation, op) => {
    const ret: ListNode = { op, isCall: false, match: null, prev: null, next: null };
    const call: ListNode = { op, isCall: true, match: ret, prev: null, next: null };
    events.push({ position: operation.call, node: call }, { position: operation.ret, node: ret });
  });
  events.sort((a, b) => a.position - b.position || Number(b.node.isCall) - Number(a.node.isCall));
  const head: ListNode = { op: -1, isCall: false, match: null, prev: null, next: null };
  let last = head;
  for (const { node } of events) {
    last.next = node;
    node.prev = last;
    last = node;
  }
  return head;
}

/** Unlinks a call and its completion (the operation is linearized). */
function lift(call: ListNode): void {
  call.prev!.next = call.next;
  if (call.next) call.next.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

/** Relinks what {@link lift} unlinked; undos happen in reverse order, so the neighbours are right. */
function unlift(call: ListNode): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  if (call.next) call.next.prev = call;
}

/** What the cache needs of a model: state equality and a hash consistent with it. */
type StateIdentity<State> = Pick<Model<State, never, never>, 'equal' | 'hash'>;

/** The memoisation cache: (linearized set, state) pairs already explored. */
class ExploredCache<State> {
  private readonly buckets = new Map<number, { linearized: Uint32Array; state: State }[]>();

  constructor(private readonly model: StateIdentity<State>) {}

  /** Records the pair; false when it was already there. */
  addIfNew(linearized: LinearizedSet, state: State): boolean {
    const key = (linearized.hash ^ Math.imul(this.model.hash(state), 0x85ebca6b)) >>> 0;
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = [];
      this.buckets.set(key, bucket);
    }
    for (const seen of bucket) {
      if (linearized.equals(seen.linearized) && this.model.equal(seen.state, state)) return false;
    }
    bucket.push({ linearized: linearized.snapshot(), state });
    return true;
  }
}

/** How often (in steps) the clock is read: reading it every step would dominate small searches. */
const CLOCK_EVERY = 1024;

/** Searches for a linearization of `operations` (one partition) under `model`. */
export function searchLinearization<State, Input, Output>(
  model: Model<State, Input, Output>,
  operations: readonly Operation<Input, Output>[],
  budget: SearchBudget,
): SearchResult<State> {
  const head = buildList(operations);
  const linearized = new LinearizedSet(operations.length);
  const cache = new ExploredCache<State>(model);
  const calls: { node: ListNode; before: State }[] = [];
  let state = model.init();
  let longestPrefix: number[] = [];
  let stateAfterPrefix = state;
  let steps = 0;
  let entry = head.next;
  const result = (verdict: Verdict): SearchResult<State> => ({
    verdict,
    steps,
    longestPrefix,
    stateAfterPrefix,
  });

  while (head.next !== null) {
    steps++;
    if (steps > budget.maxSteps || (steps % CLOCK_EVERY === 0 && performance.now() > budget.deadline)) {
      return result('unknown');
    }
    // The first completion of the list is always reached before its end (see the module comment).
    const node = entry!;
    if (node.isCall) {
      const operation = operations[node.op]!;
      const [allowed, next] = model.step(state, operation.input, operation.output);
      if (allowed) {
        linearized.add(node.op);
        if (cache.addIfNew(linearized, next)) {
          calls.push({ node, before: state });
          state = next;
          lift(node);
          if (calls.length > longestPrefix.length) {
            longestPrefix = calls.map((call) => call.node.op);
            stateAfterPrefix = state;
          }
          entry = head.next;
          continue;
        }
        linearized.remove(node.op);
      }
      entry = node.next;
    } else {
      // A completion whose operation is not linearized: undo the last choice and try the next one.
      const last = calls.pop();
      if (last === undefined) return result('illegal');
      state = last.before;
      linearized.remove(last.node.op);
      unlift(last.node);
      entry = last.node.next;
    }
  }
  return result('ok');
}
