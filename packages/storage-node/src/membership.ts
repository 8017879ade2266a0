import {
  type Credentials,
  DstoreError,
  ErrorCode,
  FailoverLink,
  isRetryable,
  Op,
  type TlsClientOptions,
} from '@dstore/protocol';
import { type BackoffOptions, backoffDelay } from '@dstore/protocol/internal';
import type { Logger } from 'pino';
import type { StorageHealth } from './engines/index.js';

/** A balancer's client address. */
export interface BalancerAddress {
  readonly host: string;
  readonly port: number;
}

/** Options of a {@link Membership}. */
export interface MembershipOptions {
  /**
   * The balancers' client ports, in failover order: the node registers with one at a time and
   * moves to the next when it cannot reach or loses the current one. Give this or `balancer`.
   */
  readonly balancers?: readonly BalancerAddress[];
  /** One balancer's client port: the form from before `balancers`. Give this or `balancers`, not both. */
  readonly balancer?: BalancerAddress;
  readonly nodeId: string;
  /** Address announced in JOIN: where the balancer dials this node. */
  readonly advertiseHost: string;
  readonly port: number;
  readonly weight: number;
  /** What the node proves to balancers: the cluster secret (undefined: nothing). */
  readonly credentials: Credentials | undefined;
  /** TLS to the balancers (this node's certificate as client certificate, the cluster CA). Default: plaintext. */
  readonly tls?: TlsClientOptions | undefined;
  readonly heartbeatIntervalMs: number;
  /**
   * This node's identity (its incarnation), sent in every JOIN so that the balancer's cluster map
   * tells a restarted node from a new one under the same id. Omitted: JOINs carry no identity,
   * like those of a node that predates identities.
   */
  readonly identity?: string | undefined;
  /**
   * The cluster map generation this node's data belongs to, named in every JOIN (undefined while it
   * holds nothing): a balancer on another map refuses it with CLUSTER_MISMATCH. Omitted: not sent.
   */
  readonly dataGeneration?: () => number | undefined;
  /** Current key count, sent in each HEARTBEAT. */
  readonly keyCount: () => number;
  /** The storage condition, sent in each HEARTBEAT (the balancer shows it in `/ring`). Omitted: not sent. */
  readonly storage?: () => StorageHealth;
  /** Where the leases granted in heartbeat answers are recorded (replication). Omitted: ignored. */
  readonly lease?: NodeLease | undefined;
  readonly logger: Logger;
}

/**
 * The lease the cluster map's writer grants this node in heartbeat answers (replication, see
 * docs/design/replication.md, "Fencing and leases"): with a map whose replication factor is above
 * 1 the node serves client requests and accepts REPLICATE only while it holds one. Counted on the
 * node's monotonic clock from when the heartbeat was SENT, so the node's lease always ends before
 * the writer's view of it: no synchronised clocks are needed.
 */
export class NodeLease {
  private until = Number.NEGATIVE_INFINITY;

  /** Records a grant of `leaseMs` for a heartbeat sent at `sentAt` (`performance.now()`). */
  grant(sentAt: number, leaseMs: number): void {
    this.until = Math.max(this.until, sentAt + leaseMs);
  }

  /** Whether the lease is held now: one `performance.now()`. */
  get held(): boolean {
    return performance.now() < this.until;
  }

  /** Why a request is refused without a lease (the UNAVAILABLE message). */
  refusal(): string {
    const ms = performance.now() - this.until;
    return Number.isFinite(ms)
      ? `this node's lease expired ${Math.round(ms)} ms ago (no heartbeat answer from the cluster map's writer granted a new one): it may no longer be in its chains; retry`
      : "this node holds no lease from the cluster map's writer yet (replication): retry";
  }
}

/** Deadline of JOIN / HEARTBEAT / LEAVE requests: short, they are retried or best effort. */
const MEMBERSHIP_REQUEST_TIMEOUT_MS = 2000;

/**
 * Pause before the next round of attempts once every balancer failed in a row (with one balancer:
 * before every reconnect); JOINs refused for the node's identity are retried on the same schedule.
 */
const BALANCER_BACKOFF: BackoffOptions = { initialDelayMs: 100, maxDelayMs: 2000 };

/**
 * Refused JOINs that retrying alone does not fix, with what the operator has to do. They are
 * retried anyway: a restarted memory node may race its own previous incarnation, which the
 * balancer lets go once its heartbeats stop.
 */
const JOIN_REFUSAL_ADVICE: ReadonlyMap<string, string> = new Map([
  [
    ErrorCode.IDENTITY_CONFLICT,
    'another live node holds this node id: start this node with its own --id, or stop the other one',
  ],
  [
    ErrorCode.MEMBER_REMOVED,
    'this node was removed from the cluster: it can join again only as a new member, with a fresh data dir (a memory node: restart it)',
  ],
  [
    ErrorCode.CLUSTER_MISMATCH,
    "this node holds data of another cluster than the balancer's map: start the balancer with the map this node belongs to (its --data-dir, or --etcd and --etcd-prefix); or start this node on a fresh data dir (a memory node: restart it) to join that cluster empty",
  ],
  [
    ErrorCode.OUT_OF_SPACE,
    "this node could not hold its share of the cluster's data: start it with a larger --max-memory (memory engine) or --map-size / on a larger disk (lmdb), or free space in the cluster",
  ],
]);

/**
 * What a JOIN says the node's storage can still take: undefined (not checked) for an engine that
 * evicts, which makes room for what it is given (a cache), or when the node reports no storage.
 */
function roomToReport(storage: StorageHealth | undefined): number | undefined {
  return storage === undefined || storage.evictionPolicy !== 'noeviction'
    ? undefined
    : storage.availableBytes;
}

/**
 * A member stopped while its link to the balancers is down waits this long after the link was lost
 * for a balancer to come back (a balancer restart, a move to the next one) before it leaves
 * without a hand-off: a memory node leaving without one takes its copies with it.
 */
const LEAVE_RECONNECT_GRACE_MS = 5000;

/** A repeated identity refusal is logged at error level on this attempt and every so many after. */
const REFUSAL_ERROR_LOG_EVERY = 20;

/**
 * A storage node's registration with its balancers: one link with role 'node' at a time (see
 * {@link BalancerLink}: on failure it moves to the next balancer) that JOINs (with the node's
 * identity) on every `ready`, so a restarted or newly reached balancer learns about the node,
 * sends a HEARTBEAT with the key count every interval from one unref'd timer to the connected
 * balancer, and LEAVEs it on shutdown. A JOIN refused for the identity (IDENTITY_CONFLICT,
 * MEMBER_REMOVED) is logged at error level with what to do and sent again on the same link after
 * a backoff delay; any other failed JOIN drops the link, whose reconnect (to the next balancer
 * when there are several) JOINs again.
 */
export class Membership {
  private readonly link: FailoverLink;
  private readonly balancers: readonly BalancerAddress[];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private joined = false;
  /** A JOIN went out: this node may be a member, so a LEAVE must reach a balancer. */
  private joinSent = false;
  /** A graceful leave is under way. */
  private leaving = false;
  /** A heartbeat was refused (not a member) and said so; cleared by the next one answered. */
  private heartbeatRefused = false;
  private stopped = false;
  private heartbeatInFlight = false;
  /** When a ready link to a balancer was lost (`performance.now()`); undefined while ready or never. */
  private linkLostAt: number | undefined;
  /** Why the last connection attempt to a balancer failed; cleared once a link is ready. */
  private lastLinkError: Error | undefined;
  /** Consecutive JOINs refused for this node's identity; reset by a JOIN that succeeds. */
  private identityRefusals = 0;
  private lastRefusalCode: string | undefined;
  /** Pending retry of a refused JOIN: while set, it alone sends the next JOIN. */
  private joinRetryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: MembershipOptions) {
    this.balancers = membershipBalancers(options);
    // One balancer at a time, the next one at once when it fails, a backoff after a full round.
    this.link = new FailoverLink({
      servers: this.balancers,
      link: {
        role: 'node',
        credentials: options.credentials,
        tls: options.tls,
        connectTimeoutMs: 2000,
        connection: { requestTimeoutMs: MEMBERSHIP_REQUEST_TIMEOUT_MS },
      },
      retryStrategy: (round) => backoffDelay(round, BALANCER_BACKOFF),
    });
    this.link.on('ready', () => this.onLinkReady());
    this.link.on('close', (error) => this.onLinkDown(error));
    this.link.on('reconnecting', (delayMs, attempt) => {
      // Every attempt at debug; a warning now and then so a long outage stays visible without
      // flooding. `balancer` is the one tried next (delay 0: the next one of the round). The
      // reason goes with it: a refused secret or the wrong port must not look like a slow start.
      const level = attempt === 1 || attempt % 20 === 0 ? 'warn' : 'debug';
      const failure = this.lastLinkError;
      this.options.logger[level](
        {
          balancer: this.link.address,
          delayMs,
          attempt,
          ...(failure === undefined ? {} : { err: failure.message, code: (failure as DstoreError).code }),
        },
        'reconnecting to balancer',
      );
    });
    this.link.on('error', (error) => {
      this.lastLinkError = error;
      this.options.logger.debug({ balancer: this.link.address, err: error.message }, 'balancer link error');
    });
  }

  /** True once the balancer answered the last JOIN (and the link has not dropped since). */
  get isJoined(): boolean {
    return this.joined;
  }

  /** `host:port` of the current balancer: the one registered with, or the one being tried. */
  get balancer(): string {
    return this.link.address;
  }

  /** Starts connecting and heartbeating. */
  start(): void {
    this.options.logger.info(
      { balancer: this.link.address, balancers: this.balancers.map(addressOf) },
      'joining balancer',
    );
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
    this.cancelJoinRetry();
    // A node that never sent a JOIN is no member: nothing to hand off.
    if (!this.joinSent) {
      this.stopHeartbeats();
      return;
    }
    this.leaving = true;
    const deadline = Date.now() + timeoutMs;
    // Once a LEAVE went out, the cluster map may say "leaving": the node must stay until a balancer
    // confirms the hand-off. Before that, no balancer reachable means nothing started: go now.
    let sent = false;
    for (;;) {
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) {
        this.options.logger.warn(
          { timeoutMs },
          'LEAVE not answered in time; leaving without a confirmed hand-off',
        );
        break;
      }
      if (!this.link.isReady) {
        if (!sent) {
          // A link lost moments ago is most likely a balancer restarting or the move to the next
          // one: wait for it a little rather than leave without a hand-off.
          const graceMs = Math.min(remainingMs, this.reconnectGraceLeftMs());
          if (graceMs > 0) {
            this.options.logger.info(
              { waitMs: Math.round(graceMs) },
              'balancer link down: waiting for a balancer to hand off the keys',
            );
            await this.link.whenReady(graceMs);
            if (this.link.isReady) continue;
          }
          this.options.logger.warn(
            "no balancer reachable: leaving without a hand-off (a memory node's keys go with it; an lmdb node keeps them on disk)",
          );
          break;
        }
        await this.link.whenReady(remainingMs);
        continue;
      }
      try {
        sent = true;
        // With the identity: the balancer refuses the LEAVE of another incarnation under this id.
        const { nodeId, identity } = this.options;
        await this.link.request(
          identity === undefined ? { op: Op.LEAVE, nodeId } : { op: Op.LEAVE, nodeId, identity },
          { timeoutMs: remainingMs },
        );
        this.options.logger.info({ balancer: this.link.address }, 'left balancer');
        break;
      } catch (error) {
        const code = error instanceof DstoreError ? error.code : undefined;
        // LEAVE is idempotent (a repeated one changes nothing): any transient failure is worth
        // another try within the leave timeout.
        if (!isRetryable(error)) {
          this.options.logger.warn(
            { balancer: this.link.address, err: (error as Error).message, code },
            'LEAVE failed; the balancer will notice the missing heartbeats',
          );
          break;
        }
        // The balancer went away mid hand-off (a restart, a coordinator change): the transition
        // is in the cluster map and resumes, and it needs this node to stream its keys. Stay up
        // and ask again once a balancer is reachable; LEAVE is idempotent.
        this.options.logger.warn(
          { balancer: this.link.address, code },
          'LEAVE interrupted; sending it again once a balancer is reachable',
        );
        await new Promise((resolve) => setTimeout(resolve, Math.min(200, remainingMs)));
      }
    }
    this.stopHeartbeats();
    this.joined = false;
  }

  /** Stops for good: no more heartbeats or reconnects; closes the link. */
  async close(): Promise<void> {
    this.stopped = true;
    this.stopHeartbeats();
    this.cancelJoinRetry();
    await this.link.close();
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private cancelJoinRetry(): void {
    if (this.joinRetryTimer) clearTimeout(this.joinRetryTimer);
    this.joinRetryTimer = undefined;
  }

  /** How much of the wait for a lost link to come back is left (0: none was lost recently). */
  private reconnectGraceLeftMs(): number {
    if (this.linkLostAt === undefined) return 0;
    return Math.max(0, this.linkLostAt + LEAVE_RECONNECT_GRACE_MS - performance.now());
  }

  private onLinkReady(): void {
    this.lastLinkError = undefined;
    this.linkLostAt = undefined;
    // Leaving: never JOIN again (that could make the node a member anew); leave() resends LEAVE.
    if (this.leaving) return;
    // After an identity refusal the retry timer sends the next JOIN: a reconnect in between
    // must not make the node JOIN sooner than the backoff allows.
    if (this.joinRetryTimer === undefined) void this.join();
  }

  private async join(): Promise<void> {
    const { nodeId, advertiseHost, port, weight, identity } = this.options;
    const generation = this.options.dataGeneration?.();
    try {
      this.joinSent = true;
      await this.link.request({
        op: Op.JOIN,
        nodeId,
        host: advertiseHost,
        port,
        weight,
        identity,
        generation,
        availableBytes: roomToReport(this.options.storage?.()),
      });
      this.joined = true;
      // At once, not one interval later: a replicating node serves nothing before its first lease.
      this.heartbeat();
      this.identityRefusals = 0;
      this.lastRefusalCode = undefined;
      this.options.logger.info(
        { balancer: this.link.address, nodeId, identity, host: advertiseHost, port, weight },
        'joined balancer',
      );
    } catch (error) {
      const advice = error instanceof DstoreError ? JOIN_REFUSAL_ADVICE.get(error.code) : undefined;
      if (advice !== undefined) {
        this.retryRefusedJoin(error as DstoreError, advice);
        return;
      }
      // The balancer refused or did not answer: drop the link so the reconnect path retries JOIN.
      this.options.logger.warn(
        { balancer: this.link.address, err: (error as Error).message, code: (error as DstoreError).code },
        'JOIN failed; retrying',
      );
      if (!this.stopped) this.link.connection?.destroy(error as Error);
    }
  }

  /**
   * The balancer refused this node's identity: says at error level what to do, and JOINs again on
   * the same link after the next backoff delay (the refusal did not close the link).
   */
  private retryRefusedJoin(refusal: DstoreError, advice: string): void {
    this.identityRefusals++;
    const delayMs = backoffDelay(this.identityRefusals, BALANCER_BACKOFF);
    // Error level on the first refusal, when the reason changes, and now and then after: a
    // refusal that lasts stays visible without an error line every couple of seconds.
    const newReason = refusal.code !== this.lastRefusalCode;
    this.lastRefusalCode = refusal.code;
    const periodic = this.identityRefusals % REFUSAL_ERROR_LOG_EVERY === 0;
    const level = newReason || periodic ? 'error' : 'debug';
    const { nodeId, identity } = this.options;
    this.options.logger[level](
      {
        balancer: this.link.address,
        nodeId,
        identity,
        code: refusal.code,
        err: refusal.message,
        attempt: this.identityRefusals,
        delayMs,
      },
      `JOIN refused (${refusal.code}): ${advice}; retrying`,
    );
    if (this.stopped) return;
    this.cancelJoinRetry();
    this.joinRetryTimer = setTimeout(() => {
      this.joinRetryTimer = undefined;
      // Link down: the next 'ready' JOINs. Joined meanwhile: nothing left to do.
      if (!this.stopped && !this.joined && this.link.isReady) void this.join();
    }, delayMs);
    this.joinRetryTimer.unref();
  }

  private heartbeat(): void {
    // One heartbeat at a time: a slow balancer must not pile them up.
    if (!this.joined || this.heartbeatInFlight || !this.link.isReady) return;
    let keyCount: number;
    let storage: StorageHealth | undefined;
    try {
      keyCount = this.options.keyCount();
      storage = this.options.storage?.();
    } catch (error) {
      this.options.logger.warn({ err: (error as Error).message }, 'cannot count keys for the heartbeat');
      return;
    }
    const nodeId = this.options.nodeId;
    this.heartbeatInFlight = true;
    // The lease counts from the send: the writer's clock started no earlier than this.
    const sentAt = performance.now();
    this.link
      .request(
        storage === undefined
          ? { op: Op.HEARTBEAT, nodeId, keyCount }
          : {
              op: Op.HEARTBEAT,
              nodeId,
              keyCount,
              degraded: storage.degraded,
              usedBytes: storage.usedBytes,
              availableBytes: storage.availableBytes,
            },
      )
      .then(
        (answer) => {
          this.heartbeatRefused = false;
          if (answer.op === Op.OK && answer.lease !== undefined) this.granted(sentAt, answer.lease);
        },
        (error: unknown) => this.heartbeatFailed(error),
      )
      .finally(() => {
        this.heartbeatInFlight = false;
      });
  }

  /**
   * A lost or late heartbeat is routine (a balancer restarting: debug); a refusal (the balancer
   * does not count this node as a member) is what an operator must see, once until one succeeds.
   */
  private heartbeatFailed(error: unknown): void {
    const message = (error as Error).message;
    const refused =
      error instanceof DstoreError &&
      (error.code === ErrorCode.INVALID_ARGUMENT || error.code === ErrorCode.NO_PERMISSION);
    if (!refused) {
      this.options.logger.debug({ err: message }, 'heartbeat failed');
      return;
    }
    if (this.heartbeatRefused) return;
    this.heartbeatRefused = true;
    this.options.logger.warn(
      { balancer: this.link.address, code: (error as DstoreError).code, err: message },
      'heartbeat refused: the balancer does not count this node as a member; restart it to join again',
    );
  }

  private granted(sentAt: number, leaseMs: number): void {
    const lease = this.options.lease;
    if (lease === undefined) return;
    lease.grant(sentAt, leaseMs);
    // A heartbeat every interval must renew the lease before it runs out, with a margin for one
    // late or lost heartbeat: the interval must stay below half the lease. The node learns the
    // lease only now, so it warns (once) rather than refusing to start.
    if (!this.warnedInterval && this.options.heartbeatIntervalMs >= leaseMs / 2) {
      this.warnedInterval = true;
      this.options.logger.warn(
        { heartbeatIntervalMs: this.options.heartbeatIntervalMs, leaseMs },
        'the heartbeat interval is not below half the lease the balancer grants: the node may lose its lease between heartbeats and refuse requests (lower --heartbeat-interval or raise the balancer --lease)',
      );
    }
  }

  private warnedInterval = false;

  private onLinkDown(error: Error | undefined): void {
    if (this.stopped) return;
    // A JOIN went out (`joined` implies it), so this link had been ready: its loss starts the grace,
    // and the failed attempts to connect that follow do not renew it.
    if (this.linkLostAt === undefined && this.joinSent) this.linkLostAt = performance.now();
    if (this.joined) {
      this.options.logger.warn(
        { balancer: this.link.address, err: error?.message },
        this.balancers.length > 1
          ? 'lost the balancer; joining the next one'
          : 'lost the balancer; will re-join when it is back',
      );
    }
    this.joined = false;
  }
}

/** The balancers a {@link Membership} registers with, from `balancers` or the older `balancer`. */
function membershipBalancers(options: MembershipOptions): readonly BalancerAddress[] {
  const { balancers, balancer } = options;
  if (balancers !== undefined && balancer !== undefined) {
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'membership: give balancers or balancer, not both');
  }
  const list = balancers ?? (balancer === undefined ? [] : [balancer]);
  if (list.length === 0) {
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'membership: no balancer to register with');
  }
  return list;
}

function addressOf(balancer: BalancerAddress): string {
  return `${balancer.host}:${balancer.port}`;
}
