/**
 * Records a history as it happens, under one monotonic clock, in Jepsen's shape (see history.ts).
 * Recording is synchronous and in one process, so the order of events is the real-time order.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { type EventType, formatHistory, type HistoryEvent, type JsonValue } from './history.js';

/** An invoked operation awaiting its completion: call exactly one of its methods. */
export interface PendingOperation {
  /** Completed: `value` is what a read returned (null: absent), whether a delete removed something. */
  ok(value?: JsonValue): void;
  /** Certainly not applied (a "not executed" error). */
  fail(error?: string): void;
  /** Outcome unknown (timeout, lost connection): the process must not be used again. */
  info(error?: string): void;
}

/** Options of {@link HistoryRecorder}. */
export interface RecorderOptions {
  /** The clock, in ms; default `performance.now` (monotonic, process-wide). */
  readonly clock?: () => number;
}

/** Appends invoke/ok/fail/info events with process ids and clock times. */
export class HistoryRecorder {
  readonly events: HistoryEvent[] = [];
  private readonly clock: () => number;
  private processes = 0;

  constructor(options: RecorderOptions = {}) {
    this.clock = options.clock ?? (() => performance.now());
  }

  /** A process id never used before (a new worker, or a worker after an `info`). */
  newProcess(): number {
    return this.processes++;
  }

  /** Records the invocation of `f` on `key` by `process`; complete it through the result. */
  invoke(process: number, f: string, key: string, value?: JsonValue): PendingOperation {
    this.append('invoke', process, f, key, value);
    let open = true;
    const complete = (type: EventType, value?: JsonValue, error?: string) => {
      if (!open) throw new Error(`operation of process ${process} on ${key} completed twice`);
      open = false;
      this.append(type, process, f, key, value, error);
    };
    return {
      ok: (result) => complete('ok', result),
      fail: (error) => complete('fail', undefined, error),
      info: (error) => complete('info', undefined, error),
    };
  }

  /** Records an injected fault (process `"nemesis"`), so a failure report can be read against it. */
  nemesis(f: string, value?: JsonValue): void {
    this.events.push({
      index: this.events.length,
      type: 'info',
      process: 'nemesis',
      f,
      value,
      time: this.clock(),
    });
  }

  /** The history as JSONL. */
  toJsonl(): string {
    return formatHistory(this.events);
  }

  /** Writes the history to `path` (JSONL), creating its directory. */
  dump(path: string): void {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, this.toJsonl());
  }

  private append(
    type: EventType,
    process: number,
    f: string,
    key: string,
    value: JsonValue | undefined,
    error?: string,
  ): void {
    const event: HistoryEvent = { index: this.events.length, type, process, f, key, time: this.clock() };
    this.events.push({
      ...event,
      ...(value === undefined ? {} : { value }),
      ...(error === undefined ? {} : { error }),
    });
  }
}
