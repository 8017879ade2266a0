import type { StorageEngine } from './engines/index.js';

/** Pace of the background reclaiming of expired values. */
export interface ExpirySweepOptions {
  /** Interval between two sweeps, in ms. */
  readonly intervalMs: number;
  /** Entries one sweep examines at most: the bound of the work per tick. */
  readonly entriesPerSweep: number;
}

/**
 * Defaults: 1,000 entries every 100 ms, so a node examines 10,000 entries per second: an expired
 * key that is never read again is reclaimed within (keys / 10,000) seconds, and one sweep costs
 * well under a millisecond on the memory engine (a few typed-array reads per entry).
 */
export const DEFAULT_EXPIRY_SWEEP: ExpirySweepOptions = { intervalMs: 100, entriesPerSweep: 1000 };

/**
 * Reclaims expired values in the background, a bounded slice at a time (see
 * `StorageEngine.sweepExpired`): never a pass over the whole store, so requests are never stalled,
 * and one sweep at a time (a slow lmdb commit delays the next tick instead of piling up).
 */
export class ExpirySweeper {
  /** Values reclaimed by the sweep since start (STATS `expired.swept`). */
  swept = 0;
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly engine: StorageEngine,
    private readonly options: ExpirySweepOptions = DEFAULT_EXPIRY_SWEEP,
  ) {}

  /** Starts the periodic sweep (idempotent). */
  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.options.intervalMs);
    this.timer.unref();
  }

  /** Stops it; a sweep in progress finishes on its own. */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    if (this.running) return;
    this.running = true;
    this.engine.sweepExpired(this.options.entriesPerSweep).then(
      (reclaimed) => {
        this.swept += reclaimed;
        this.running = false;
      },
      () => {
        // A closed engine or a failed commit: the next tick tries again (the engine reports
        // storage failures in its health).
        this.running = false;
      },
    );
  }
}
