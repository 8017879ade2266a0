import { createHmac, randomBytes } from 'node:crypto';
import { type StoredCredential, sameBytes, verifyPassword } from './auth.js';
import { addressKey } from './auth-failures.js';
import { DstoreError, ErrorCode } from './errors.js';

/** Default scrypt derivations run at once: one core's worth (each ~40 ms of a core and 16 MiB). */
export const DEFAULT_PASSWORD_CHECKS_AT_ONCE = 1;
/** Default most password checks waiting for their turn; past it a check is refused with BUSY. */
export const DEFAULT_PASSWORD_CHECKS_WAITING = 1024;

/** Options of {@link PasswordChecks}. */
export interface PasswordChecksOptions {
  /** Most scrypt derivations running at once. Default {@link DEFAULT_PASSWORD_CHECKS_AT_ONCE}. */
  readonly atOnce?: number;
  /** Most checks waiting for their turn. Default {@link DEFAULT_PASSWORD_CHECKS_WAITING}. */
  readonly maxWaiting?: number;
}

/** One derivation to run: a credential and a password, and everyone waiting for its outcome. */
interface Check {
  readonly credential: StoredCredential;
  readonly password: string;
  /** HMAC of the password under the process's key: names the check for others asking the same. */
  readonly digest: Buffer;
  readonly waiters: ((verified: boolean) => void)[];
}

/**
 * Checks passwords that clients send in clear (RESP's `AUTH user password`) against stored
 * credentials, so that clients who have proved nothing cannot take the server's CPU. Each check
 * is a scrypt (by design ~40 ms of a core): run in libuv's pool as they came, a flood of wrong
 * AUTHs from one address took every thread of the pool and both cores of a small server, and a
 * good client's AUTH waited behind all of them. Here:
 *
 * - at most `atOnce` derivations run at once; the others wait, **in turns by source address**
 *   (one check of each waiting address, then the next round), so one address with hundreds of
 *   guesses queued delays another address's check by one derivation per waiting address;
 * - a check asking what a waiting or running one asks (same credential, same password: a client's
 *   connections reconnecting together, or a guess sent many times) waits for that one's outcome;
 * - the password a credential last verified is remembered, as an HMAC under a key made at
 *   start, so a client reconnecting with it costs one HMAC, not a scrypt. Only a right password is
 *   remembered; a wrong one always takes a turn. (Redis keeps its passwords as SHA-256 in memory;
 *   this keeps one keyed hash per user, dropped with the credential when the users file reloads.)
 *
 * Waiting checks are bounded (`maxWaiting`): past it `verify` rejects with BUSY at once.
 */
export class PasswordChecks {
  /** scrypt derivations run, since start. */
  derivations = 0;
  /** Checks answered from the remembered password (no derivation), since start. */
  remembered = 0;
  /** Checks refused with BUSY because `maxWaiting` checks were waiting, since start. */
  refused = 0;
  /** Most derivations that ran at once, since start. */
  peakRunning = 0;

  private readonly atOnce: number;
  private readonly maxWaiting: number;
  private readonly key = randomBytes(32);
  private readonly verified = new WeakMap<StoredCredential, Buffer>();
  /** Checks waiting or running, by credential then digest (hex), so that the same ask is shared. */
  private readonly pending = new WeakMap<StoredCredential, Map<string, Check>>();
  /** Waiting checks per source address, each address's in order. */
  private readonly byAddress = new Map<string, Check[]>();
  /** The addresses with waiting checks, in the order their turns come. */
  private turns: string[] = [];
  private running = 0;
  private waitingCount = 0;

  constructor(options: PasswordChecksOptions = {}) {
    this.atOnce = options.atOnce ?? DEFAULT_PASSWORD_CHECKS_AT_ONCE;
    this.maxWaiting = options.maxWaiting ?? DEFAULT_PASSWORD_CHECKS_WAITING;
  }

  /** Checks waiting for their turn now. */
  get waiting(): number {
    return this.waitingCount;
  }

  /**
   * Whether `password` is the one `credential` was made from (a wrong password, a decoy
   * credential or a derivation that failed: false). `address` is the client's
   * (`socket.remoteAddress`): checks take turns by it. Rejects with BUSY (not counted as a
   * failure) when `maxWaiting` checks are waiting already.
   */
  verify(credential: StoredCredential, password: string, address: string | undefined): Promise<boolean> {
    const digest = createHmac('sha256', this.key).update(password.normalize('NFKC')).digest();
    const known = this.verified.get(credential);
    if (known !== undefined && sameBytes(known, digest)) {
      this.remembered++;
      return Promise.resolve(true);
    }
    const name = digest.toString('hex');
    const asked = this.pending.get(credential)?.get(name);
    if (asked !== undefined) return new Promise((resolve) => asked.waiters.push(resolve));
    if (this.running >= this.atOnce && this.waitingCount >= this.maxWaiting) {
      this.refused++;
      return Promise.reject(
        new DstoreError(
          ErrorCode.BUSY,
          `${this.waitingCount} password checks are waiting already: try again later`,
        ),
      );
    }
    return new Promise((resolve) => {
      const check: Check = { credential, password, digest, waiters: [resolve] };
      let byDigest = this.pending.get(credential);
      if (byDigest === undefined) {
        byDigest = new Map();
        this.pending.set(credential, byDigest);
      }
      byDigest.set(name, check);
      if (this.running < this.atOnce) this.run(check);
      else this.wait(check, addressKey(address));
    });
  }

  private wait(check: Check, address: string): void {
    const queue = this.byAddress.get(address);
    if (queue === undefined) {
      this.byAddress.set(address, [check]);
      this.turns.push(address);
    } else queue.push(check);
    this.waitingCount++;
  }

  /** The next waiting check: the first address's oldest; that address goes to the back if it has more. */
  private next(): Check | undefined {
    const address = this.turns.shift();
    if (address === undefined) return undefined;
    const queue = this.byAddress.get(address)!;
    const check = queue.shift()!;
    if (queue.length === 0) this.byAddress.delete(address);
    else this.turns.push(address);
    this.waitingCount--;
    return check;
  }

  private run(check: Check): void {
    this.running++;
    this.derivations++;
    if (this.running > this.peakRunning) this.peakRunning = this.running;
    verifyPassword(check.credential, check.password)
      .catch(() => false)
      .then((verified) => {
        this.running--;
        if (verified) this.verified.set(check.credential, check.digest);
        this.pending.get(check.credential)?.delete(check.digest.toString('hex'));
        for (const waiter of check.waiters) waiter(verified);
        const following = this.next();
        if (following !== undefined) this.run(following);
      });
  }
}
