import { type DstoreError, Op, PeerLink } from '@dstore/protocol';
import type { Logger } from 'pino';

/** Options of a {@link Membership}. */
export interface MembershipOptions {
  /** The balancer's client port. */
  readonly balancer: { readonly host: string; readonly port: number };
  readonly nodeId: string;
  /** Address announced in JOIN: where the balancer dials this node. */
  readonly advertiseHost: string;
  readonly port: number;
  readonly weight: number;
  readonly token: string | undefined;
  readonly heartbeatIntervalMs: number;
  /** Current key count, sent in each HEARTBEAT. */
  readonly keyCount: () => number;
  readonly logger: Logger;
}

/** Deadline of JOIN / HEARTBEAT / LEAVE requests: short, they are retried or best effort. */
const MEMBERSHIP_REQUEST_TIMEOUT_MS = 2000;

/**
 * A storage node's registration with its balancer: a {@link PeerLink} with role 'node' that
 * JOINs on every `ready` (so a restarted balancer learns about the node again), sends a
 * HEARTBEAT with the key count every interval from one unref'd timer, and LEAVEs on shutdown.
 */
export class Membership {
  private readonly link: PeerLink;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private joined = false;
  private stopped = false;
  private heartbeatInFlight = false;

  constructor(private readonly options: MembershipOptions) {
    this.link = new PeerLink({
      host: options.balancer.host,
      port: options.balancer.port,
      role: 'node',
      token: options.token,
      connectTimeoutMs: 2000,
      backoff: { initialDelayMs: 100, maxDelayMs: 2000 },
      connection: { requestTimeoutMs: MEMBERSHIP_REQUEST_TIMEOUT_MS },
    });
    this.link.on('ready', () => void this.join());
    this.link.on('close', (error) => this.onLinkDown(error));
    this.link.on('reconnecting', (delayMs, attempt) => {
      // Every attempt at debug; a warning now and then so a long outage stays visible without flooding.
      const level = attempt === 1 || attempt % 20 === 0 ? 'warn' : 'debug';
      this.options.logger[level](
        { balancer: this.link.address, delayMs, attempt },
        'reconnecting to balancer',
      );
    });
    this.link.on('error', (error) =>
      this.options.logger.debug({ balancer: this.link.address, err: error.message }, 'balancer link error'),
    );
  }

  /** True once the balancer answered the last JOIN (and the link has not dropped since). */
  get isJoined(): boolean {
    return this.joined;
  }

  /** Starts connecting and heartbeating. */
  start(): void {
    this.options.logger.info({ balancer: this.link.address }, 'joining balancer');
    this.link.start();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.options.heartbeatIntervalMs);
    this.heartbeatTimer.unref();
  }

  /**
   * Sends LEAVE if the balancer is reachable and waits for its answer, which comes once this
   * node's ranges moved to their new owners; heartbeats go on meanwhile so the node stays "up"
   * for the fall-back reads it serves. Never throws.
   */
  async leave(timeoutMs = 60_000): Promise<void> {
    if (!this.link.isReady) {
      this.stopHeartbeats();
      return;
    }
    try {
      await this.link.request({ op: Op.LEAVE, nodeId: this.options.nodeId }, { timeoutMs });
      this.options.logger.info({ balancer: this.link.address }, 'left balancer');
    } catch (error) {
      this.options.logger.warn(
        { balancer: this.link.address, err: (error as Error).message },
        'LEAVE failed; the balancer will notice the missing heartbeats',
      );
    }
    this.stopHeartbeats();
    this.joined = false;
  }

  /** Stops for good: no more heartbeats or reconnects; closes the link. */
  async close(): Promise<void> {
    this.stopped = true;
    this.stopHeartbeats();
    await this.link.close();
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private async join(): Promise<void> {
    const { nodeId, advertiseHost, port, weight } = this.options;
    try {
      await this.link.request({ op: Op.JOIN, nodeId, host: advertiseHost, port, weight });
      this.joined = true;
      this.options.logger.info(
        { balancer: this.link.address, nodeId, host: advertiseHost, port, weight },
        'joined balancer',
      );
    } catch (error) {
      // The balancer refused or did not answer: drop the link so the reconnect path retries JOIN.
      this.options.logger.warn(
        { balancer: this.link.address, err: (error as Error).message, code: (error as DstoreError).code },
        'JOIN failed; retrying',
      );
      if (!this.stopped) this.link.connection?.destroy(error as Error);
    }
  }

  private heartbeat(): void {
    // One heartbeat at a time: a slow balancer must not pile them up.
    if (!this.joined || this.heartbeatInFlight || !this.link.isReady) return;
    let keyCount: number;
    try {
      keyCount = this.options.keyCount();
    } catch (error) {
      this.options.logger.warn({ err: (error as Error).message }, 'cannot count keys for the heartbeat');
      return;
    }
    this.heartbeatInFlight = true;
    this.link
      .request({ op: Op.HEARTBEAT, nodeId: this.options.nodeId, keyCount })
      .catch((error: unknown) =>
        this.options.logger.debug({ err: (error as Error).message }, 'heartbeat failed'),
      )
      .finally(() => {
        this.heartbeatInFlight = false;
      });
  }

  private onLinkDown(error: Error | undefined): void {
    if (this.stopped) return;
    if (this.joined) {
      this.options.logger.warn(
        { balancer: this.link.address, err: error?.message },
        'lost the balancer; will re-join when it is back',
      );
    }
    this.joined = false;
  }
}
