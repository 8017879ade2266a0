import { type DeadlineSweeper, type Sweepable, sharedSweeper } from '@dstore/protocol/internal';

/** Something that can wait in an {@link OfflineQueue}: it only needs a deadline. */
export interface QueueEntry {
  /** Monotonic time (`performance.now()`, ms) after which the entry expires. */
  readonly deadline: number;
}

/**
 * The bounded FIFO where commands wait while the client is not connected.
 *
 * - Bounded: {@link push} refuses past `maxLength`, so an outage cannot grow memory without
 *   limit (the caller fails the command with BUSY at once).
 * - Deadlines keep running while queued: the queue registers with the protocol's shared sweeper
 *   (one process-wide interval, no timer per command) only while it holds entries, and hands
 *   every expired entry to `onExpire`.
 */
export class OfflineQueue<T extends QueueEntry> implements Sweepable {
  private entries: T[] = [];
  private earliestDeadline = Number.POSITIVE_INFINITY;
  private sweeping = false;

  constructor(
    readonly maxLength: number,
    private readonly onExpire: (entry: T) => void,
    private readonly sweeper: DeadlineSweeper = sharedSweeper,
  ) {}

  /** Entries waiting. */
  get length(): number {
    return this.entries.length;
  }

  /** Appends `entry`; false (and nothing queued) when the queue is full. */
  push(entry: T): boolean {
    if (this.entries.length >= this.maxLength) return false;
    this.entries.push(entry);
    if (entry.deadline < this.earliestDeadline) this.earliestDeadline = entry.deadline;
    if (!this.sweeping) {
      this.sweeping = true;
      this.sweeper.add(this);
    }
    return true;
  }

  /** Removes `entry` (an aborted command); false when it was not queued. */
  remove(entry: T): boolean {
    const index = this.entries.indexOf(entry);
    if (index < 0) return false;
    this.entries.splice(index, 1);
    this.stopSweepingIfEmpty();
    return true;
  }

  /** Empties the queue and returns its entries, oldest first. */
  takeAll(): T[] {
    const taken = this.entries;
    this.entries = [];
    this.earliestDeadline = Number.POSITIVE_INFINITY;
    this.stopSweepingIfEmpty();
    return taken;
  }

  /** Removes and returns, oldest first, the entries whose deadline is at or before `time`. */
  takeDue(time: number): T[] {
    if (time < this.earliestDeadline) return [];
    const due: T[] = [];
    const kept: T[] = [];
    let earliest = Number.POSITIVE_INFINITY;
    for (const entry of this.entries) {
      if (entry.deadline <= time) due.push(entry);
      else {
        kept.push(entry);
        if (entry.deadline < earliest) earliest = entry.deadline;
      }
    }
    this.entries = kept;
    this.earliestDeadline = earliest;
    this.stopSweepingIfEmpty();
    return due;
  }

  /** Called by the sweeper: hands every expired entry to `onExpire`, keeping the others in order. */
  sweep(now: number): void {
    for (const entry of this.takeDue(now)) this.onExpire(entry);
  }

  private stopSweepingIfEmpty(): void {
    if (this.entries.length === 0 && this.sweeping) {
      this.sweeping = false;
      this.sweeper.delete(this);
    }
  }
}
