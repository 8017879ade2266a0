/** Something with deadlines to check, such as a connection's pending requests. */
export interface Sweepable {
  /** Called about every `resolutionMs` with the monotonic time in ms (`performance.now()`). */
  sweep(now: number): void;
}

/**
 * One interval timer for every deadline in the process. Requests never get a timer each (a
 * timer per request costs an allocation plus a heap insert and removal on the hot path); instead
 * each owner registers once and checks its own deadlines when swept. A deadline therefore fires
 * between 0 and `resolutionMs` late.
 */
export class DeadlineSweeper {
  private readonly sources = new Set<Sweepable>();
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly resolutionMs: number) {}

  /** Starts sweeping `source`. The timer is unref'd: it never keeps a process alive. */
  add(source: Sweepable): void {
    this.sources.add(source);
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.sweepAll(), this.resolutionMs);
      this.timer.unref();
    }
  }

  /** Stops sweeping `source`; the timer stops when nothing is left. */
  delete(source: Sweepable): void {
    this.sources.delete(source);
    if (this.sources.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Number of registered sources (for tests and stats). */
  get size(): number {
    return this.sources.size;
  }

  private sweepAll(): void {
    const now = performance.now();
    for (const source of this.sources) source.sweep(now);
  }
}

/** The process-wide sweeper every connection and queue of dstore uses (10 ms resolution). */
export const sharedSweeper = new DeadlineSweeper(10);
