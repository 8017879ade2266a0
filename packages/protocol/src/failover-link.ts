import { EventEmitter } from 'node:events';
import type { Connection, RequestOptions } from './connection.js';
import { DstoreError, ErrorCode } from './errors.js';
import type { Request, Response, WithoutId } from './messages.js';
import { PeerLink, type PeerLinkEvents, type PeerLinkOptions, readyWithin } from './peer-link.js';

/** A peer of a {@link FailoverLink}. */
export interface FailoverServer {
  readonly host: string;
  readonly port: number;
}

/** Options of a {@link FailoverLink}. */
export interface FailoverLinkOptions {
  /** The interchangeable peers, in the order they are tried. At least one. */
  readonly servers: readonly FailoverServer[];
  /** Options of the link to each peer (connect timeout, role, token, connection options). */
  readonly link: Omit<PeerLinkOptions, 'host' | 'port' | 'retryStrategy' | 'backoff'>;
  /**
   * Delay in ms before the next round of attempts after round `round` (1-based) in which no peer
   * answered, or null to stop for good. Peers within one round are tried back to back.
   */
  readonly retryStrategy: (round: number, error: Error) => number | null;
}

/**
 * One live connection to any of several interchangeable peers (balancers of one cluster): what a
 * client and a storage node use to reach "a balancer" when there are several.
 *
 * It holds a {@link PeerLink} per peer but runs one at a time. When the current peer cannot be
 * reached, or its connection drops, the next peer is tried at once (round robin); only once every
 * peer failed in a row does `retryStrategy` pause before the next round. A lost connection counts
 * as its peer's failure, so with one peer this behaves exactly like a lone PeerLink: a drop, then
 * `retryStrategy(1)`, `retryStrategy(2)`… until a connection is ready again.
 *
 * It emits the PeerLink events, for the current peer only: `connect`, `ready`, `error` (only when
 * someone listens), `close`, `reconnecting(delayMs, attempt)` (delay 0 when moving on within a
 * round; `attempt` counts failures since the last `ready`) and `end`.
 */
export class FailoverLink extends EventEmitter<PeerLinkEvents> {
  private readonly links: readonly PeerLink[];
  private index = 0;
  private stopped = true;
  /** Peers that failed since this round began. */
  private failedInRound = 0;
  /** Rounds in which every peer failed, since the last `ready`: retryStrategy's `round`. */
  private failedRounds = 0;
  /** Attempts that failed since the last `ready`. */
  private failedAttempts = 0;
  private lastError: Error | undefined;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: FailoverLinkOptions) {
    super();
    if (options.servers.length === 0) {
      throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'a failover link needs at least one server');
    }
    this.links = options.servers.map((server) => this.createLink(server));
  }

  /** `host:port` of the current peer: the connected one, or the one being tried next. */
  get address(): string {
    return this.current.address;
  }

  /** The live connection when HELLO has succeeded, else undefined. */
  get connection(): Connection | undefined {
    return this.current.connection;
  }

  /** True when requests can be sent. */
  get isReady(): boolean {
    return this.current.isReady;
  }

  /** Resolves once a server's link is ready, or after `timeoutMs`, whichever comes first; never rejects. */
  whenReady(timeoutMs: number): Promise<void> {
    return readyWithin(this, timeoutMs);
  }

  /** Starts connecting, from the first peer, until {@link close}. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.index = 0;
    this.resetFailures();
    this.current.start();
  }

  /** Sends a request on the live connection; fails with UNAVAILABLE at once when none is ready. */
  request(message: WithoutId<Request>, options?: RequestOptions): Promise<Response> {
    return this.current.request(message, options);
  }

  /** Stops trying and closes the live connection gracefully (pending requests get their answers). */
  async close(): Promise<void> {
    const wasRunning = !this.stopped;
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.current.close();
    if (wasRunning) this.emit('end');
  }

  private get current(): PeerLink {
    return this.links[this.index] as PeerLink;
  }

  private createLink(server: FailoverServer): PeerLink {
    const link = new PeerLink({
      ...this.options.link,
      host: server.host,
      port: server.port,
      // One attempt per start: the link ends when it fails or drops, and the failover decides
      // which peer comes next and when.
      retryStrategy: (_attempt, error) => {
        this.lastError = error;
        return null;
      },
    });
    const isCurrent = (): boolean => link === this.current;
    link.on('connect', () => {
      if (isCurrent()) this.emit('connect');
    });
    link.on('ready', (hello) => {
      if (!isCurrent()) return;
      this.resetFailures();
      this.emit('ready', hello);
    });
    link.on('error', (error) => {
      if (isCurrent() && this.listenerCount('error') > 0) this.emit('error', error);
    });
    link.on('close', (error) => {
      if (isCurrent()) this.emit('close', error);
    });
    // Our own close() ends the link too; only an end while running means the peer failed.
    link.on('end', () => {
      if (isCurrent() && !this.stopped) this.onPeerFailed();
    });
    return link;
  }

  private resetFailures(): void {
    this.failedInRound = 0;
    this.failedRounds = 0;
    this.failedAttempts = 0;
    this.lastError = undefined;
  }

  /** The current peer could not be reached or was lost: move on, pausing only after a full round. */
  private onPeerFailed(): void {
    const error =
      this.lastError ?? new DstoreError(ErrorCode.CONNECTION_CLOSED, `${this.address} closed the connection`);
    this.failedAttempts++;
    this.failedInRound++;
    this.index = (this.index + 1) % this.links.length;
    let delayMs = 0;
    if (this.failedInRound >= this.links.length) {
      this.failedInRound = 0;
      this.failedRounds++;
      const delay = this.options.retryStrategy(this.failedRounds, error);
      if (delay === null || delay < 0) {
        this.stopped = true;
        this.emit('end');
        return;
      }
      delayMs = delay;
    }
    this.emit('reconnecting', delayMs, this.failedAttempts);
    // A timer even for 0 ms: the next attempt must not start inside the failed link's own event.
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped) this.current.start();
    }, delayMs);
  }
}
