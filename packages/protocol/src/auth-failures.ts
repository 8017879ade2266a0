import { unmappedAddress } from './auth.js';

/**
 * Default failed client authentications from one address before it is locked out: 0, no lockout.
 * A lockout refuses everyone at the address, the right password included, so one client left
 * with a stale password (it reconnects, failing each time) would lock every client of its host,
 * or behind its NAT, out of the cluster. Set a limit where clients do not share addresses.
 */
export const DEFAULT_AUTH_FAILURE_LIMIT = 0;
/** Default window (ms) the failures are counted in, and length of a lockout. */
export const DEFAULT_AUTH_FAILURE_WINDOW_MS = 60_000;
/**
 * Failed client authentications from one address within the window after which it is paced
 * (see {@link AuthFailureBudgetOptions.paceMs}): a client retrying a stale password a few times
 * never is, a guesser is after ten guesses.
 */
export const AUTH_PACE_AFTER_FAILURES = 10;
/** Default pace (ms) of a paced address: one authentication attempt per second. */
export const DEFAULT_AUTH_PACE_MS = 1000;
/** Default most addresses remembered at once (a few dozen bytes each). */
export const DEFAULT_AUTH_FAILURE_ADDRESSES = 10_000;

/** Options of an {@link AuthFailureBudget}. */
export interface AuthFailureBudgetOptions {
  /** Failed authentications from one address within `windowMs` that lock it out; 0 (the default): never. */
  readonly limit?: number;
  /** Window (ms) failures are counted in; a lockout lasts as long. Default 60000. */
  readonly windowMs?: number;
  /**
   * Once an address has {@link AUTH_PACE_AFTER_FAILURES} failures within `windowMs`, it may try
   * once per `paceMs` until its window passes; sooner attempts are refused at once, without
   * checking a password (whichever it is: a refusal must not tell a right guess from a wrong one).
   * Unlike a lockout, a good client that shares the address with a failing one gets its turn.
   * 0: no pacing. Default 1000.
   */
  readonly paceMs?: number;
  /** Most addresses tracked at once (memory bound). Default 10000. */
  readonly maxAddresses?: number;
  /**
   * Told when an address is locked out: at most once per address per window, so a guessing
   * flood gives one log line, not one per guess. Default: nothing.
   */
  readonly onLockout?: (address: string, failures: number, windowMs: number) => void;
}

interface AddressFailures {
  /** When the counting window of this address began (`performance.now()`). */
  since: number;
  failures: number;
  /** Until when the address is locked out; 0 when it is not. */
  lockedUntil: number;
  /** When the address last got to try while paced (`performance.now()`); -Infinity: never. */
  lastPacedTry: number;
}

/**
 * A per-source-address budget of failed client authentications, shared by every port of a server
 * (the native handshake and RESP's AUTH / HELLO AUTH), so that online password guessing is bounded
 * and, on RESP, does not make the server pay a scrypt per guess: after `limit` failures from one
 * address within `windowMs`, every further attempt from it is refused at once, with no password
 * check, for `windowMs`. A correct password is refused too during the lockout (otherwise the
 * lockout would tell the attacker when a guess is right). Before that, and whether or not a limit
 * is set, an address with {@link AUTH_PACE_AFTER_FAILURES} failures in its window is paced: one
 * attempt per `paceMs` (on by default: it bounds guessing to about one guess per second per
 * address without locking anyone out). Loopback is an address like any other.
 * Peers (the cluster secret) are not counted: a misconfigured node retrying forever would lock
 * out the good nodes of its host.
 *
 * Memory is bounded: at most `maxAddresses` entries; a full table first drops entries whose
 * window and lockout are over, then the oldest one.
 */
export class AuthFailureBudget {
  /** Failed client authentications counted (wrong password or unknown user), since start. */
  failures = 0;
  /** Attempts refused at once because their address was locked out, since start. */
  refusals = 0;
  /** Attempts refused at once because their address was paced and tried too soon, since start. */
  paced = 0;
  /** Lockouts begun, since start. */
  lockouts = 0;

  readonly limit: number;
  readonly windowMs: number;
  readonly paceMs: number;
  private readonly maxAddresses: number;
  private readonly addresses = new Map<string, AddressFailures>();

  constructor(private readonly options: AuthFailureBudgetOptions = {}) {
    this.limit = options.limit ?? DEFAULT_AUTH_FAILURE_LIMIT;
    this.windowMs = options.windowMs ?? DEFAULT_AUTH_FAILURE_WINDOW_MS;
    this.paceMs = options.paceMs ?? DEFAULT_AUTH_PACE_MS;
    this.maxAddresses = options.maxAddresses ?? DEFAULT_AUTH_FAILURE_ADDRESSES;
  }

  /** Addresses tracked now (for tests and the memory bound). */
  get size(): number {
    return this.addresses.size;
  }

  /**
   * The refusal of an authentication attempt from `address` (as `socket.remoteAddress` gives it)
   * while it is locked out, or paced and trying too soon, counted; undefined when it may try (a
   * paced address's try is noted). Ask once per attempt, before any password work.
   */
  refusal(address: string | undefined): string | undefined {
    const key = addressKey(address);
    const entry = this.addresses.get(key);
    if (entry === undefined) return undefined;
    const now = performance.now();
    if (entry.lockedUntil !== 0) {
      if (now >= entry.lockedUntil) {
        this.addresses.delete(key);
        return undefined;
      }
      this.refusals++;
      const seconds = Math.ceil((entry.lockedUntil - now) / 1000);
      return `too many failed authentications from this address: try again in ${seconds} s`;
    }
    if (this.paceMs === 0 || entry.failures < AUTH_PACE_AFTER_FAILURES) return undefined;
    if (now - entry.since >= this.windowMs) {
      this.addresses.delete(key);
      return undefined;
    }
    const wait = entry.lastPacedTry + this.paceMs - now;
    if (wait <= 0) {
      entry.lastPacedTry = now;
      return undefined;
    }
    this.paced++;
    return `too many failed authentications from this address: one attempt per ${this.paceMs} ms, try again in ${Math.ceil(wait)} ms`;
  }

  /** Counts one failed authentication from `address`; locks it out when the budget is spent. */
  failed(address: string | undefined): void {
    this.failures++;
    if (this.limit === 0 && this.paceMs === 0) return;
    const key = addressKey(address);
    const now = performance.now();
    let entry = this.addresses.get(key);
    if (entry !== undefined && entry.lockedUntil === 0 && now - entry.since >= this.windowMs) {
      this.addresses.delete(key);
      entry = undefined;
    }
    if (entry === undefined) {
      this.makeRoom(now);
      entry = { since: now, failures: 0, lockedUntil: 0, lastPacedTry: Number.NEGATIVE_INFINITY };
      this.addresses.set(key, entry);
    }
    entry.failures++;
    if (this.limit > 0 && entry.lockedUntil === 0 && entry.failures >= this.limit) {
      entry.lockedUntil = now + this.windowMs;
      this.lockouts++;
      this.options.onLockout?.(key, entry.failures, this.windowMs);
    }
  }

  /** Keeps the table under its cap: drops finished entries, then the oldest. */
  private makeRoom(now: number): void {
    if (this.addresses.size < this.maxAddresses) return;
    for (const [key, entry] of this.addresses) {
      const over = entry.lockedUntil === 0 ? now - entry.since >= this.windowMs : now >= entry.lockedUntil;
      if (over) this.addresses.delete(key);
    }
    if (this.addresses.size < this.maxAddresses) return;
    const oldest = this.addresses.keys().next();
    if (oldest.done !== true) this.addresses.delete(oldest.value);
  }
}

/** The table's key of a remote address: IPv4-mapped IPv6 as IPv4, so one host is one entry (also the unit {@link PasswordChecks} takes turns by). */
export function addressKey(address: string | undefined): string {
  return address === undefined ? 'unknown' : unmappedAddress(address);
}
