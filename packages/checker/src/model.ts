/**
 * What the checker needs to know about the object a history operates on: a sequential
 * specification. The checker itself knows nothing of registers; it asks the model whether an
 * operation with its observed output may run in a given state, and what state it leaves.
 */

/** The output of an operation whose outcome is unknown (`info`): it matches any output. */
export const UNKNOWN: unique symbol = Symbol('unknown outcome');

/** The type of {@link UNKNOWN}. */
export type Unknown = typeof UNKNOWN;

/** The result of one sequential step: whether it was allowed, and the state after it. */
export type StepResult<State> = readonly [allowed: boolean, next: State];

/**
 * A sequential specification. States must be immutable values: the checker keeps the states it
 * has seen (memoisation) and returns to earlier ones when it backtracks.
 */
export interface Model<State, Input, Output> {
  /** The state before any operation. */
  init(): State;
  /**
   * Runs `input` in `state`. Allowed when the sequential object, in `state`, could have answered
   * `output`; `output` is {@link UNKNOWN} for an operation whose outcome was never seen (it matches
   * any answer, and the operation may or may not have taken effect).
   */
  step(state: State, input: Input, output: Output | Unknown): StepResult<State>;
  /** Whether two states are the same (for the memoisation cache). */
  equal(a: State, b: State): boolean;
  /** A 32-bit hash consistent with {@link Model.equal}. */
  hash(state: State): number;
  /** One operation as text, for failure reports (`read -> "a"`, `write "b"`). */
  describeOperation(input: Input, output: Output | Unknown): string;
  /** One state as text, for failure reports. */
  describeState(state: State): string;
}

/** FNV-1a over a string's UTF-16 code units: a cheap, deterministic state hash. */
export function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
