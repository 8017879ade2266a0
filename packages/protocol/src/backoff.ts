/** How reconnect delays grow. */
export interface BackoffOptions {
  /** First delay in ms. Default 50. */
  readonly initialDelayMs?: number;
  /** Largest delay in ms. Default 2000. */
  readonly maxDelayMs?: number;
  /** Growth factor per attempt. Default 2. */
  readonly multiplier?: number;
  /** Fraction of random jitter added, 0..1, so many peers do not reconnect in lockstep. Default 0.2. */
  readonly jitter?: number;
}

/**
 * The delay before reconnect attempt `attempt` (1-based): exponential, capped, with jitter.
 * The one backoff policy of dstore; every package reconnects through it.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const initial = options.initialDelayMs ?? 50;
  const max = options.maxDelayMs ?? 2000;
  const multiplier = options.multiplier ?? 2;
  const jitter = options.jitter ?? 0.2;
  const base = Math.min(max, initial * multiplier ** Math.max(0, attempt - 1));
  return Math.round(base * (1 + jitter * Math.random()));
}
