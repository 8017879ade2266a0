import type { Unknown } from './model.js';

/**
 * One operation of one partition (one key), ready for the search: an invocation and its
 * completion, as positions in the history's event order. The history's order is the real-time
 * order (the recorder appends events as they happen, under one clock), so positions decide what
 * precedes what; times are only shown in reports.
 */
export interface Operation<Input, Output> {
  /** The client process that ran it (Jepsen's `process`). */
  readonly process: number | string;
  readonly input: Input;
  /** What it answered; {@link Unknown} when the outcome was never seen (`info`). */
  readonly output: Output | Unknown;
  /** Position of the invocation in the history. */
  readonly call: number;
  /** Position of the completion; `Infinity` when the outcome is unknown (it may take effect at any later time). */
  readonly ret: number;
  /** The `index` of the invoke event (for reports). */
  readonly index: number;
  /** Clock time of the invocation (for reports). */
  readonly callTime: number;
  /** Clock time of the completion; undefined when the outcome is unknown (for reports). */
  readonly returnTime: number | undefined;
}
