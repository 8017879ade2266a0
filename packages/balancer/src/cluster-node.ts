// The module's `performance`, as the protocol's connections use (the global one is an accessor).
import { performance } from 'node:perf_hooks';
import {
  type Connection,
  type Credentials,
  DstoreError,
  ErrorCode,
  type HelloOkResponse,
  LARGE_REQUEST_BYTES,
  Op,
  PeerLink,
  type Request,
  type RequestOptions,
  type Response,
  type ResponseCallback,
  type TlsClientOptions,
  type WithoutId,
} from '@dstore/protocol';
import { BULK, KeyLanes, type KeySlots, keySlotsOf, type Lane, MAIN } from './key-lanes.js';
import { type ClientShare, LinkShares } from './link-share.js';

/** How the balancer talks to a node: the bounds of its one multiplexed connection. */
export interface NodeLinkOptions {
  /** Deadline of each forwarded request, in ms. */
  readonly requestTimeoutMs: number;
  /**
   * Most requests in flight on the node connection; past it requests fail with BUSY. Client
   * connections share it fairly past half (see {@link LinkShares}).
   */
  readonly maxInFlight: number;
  /** What the balancer proves to nodes: the cluster secret (undefined: nothing). */
  readonly credentials: Credentials | undefined;
  /** Deadline of connecting plus HELLO, in ms. */
  readonly connectTimeoutMs: number;
  /**
   * TLS to the nodes and to other balancers (the balancer's certificate as client certificate,
   * the cluster CA). Undefined: plaintext.
   */
  readonly tls?: TlsClientOptions | undefined;
}

/** A node's storage condition, as its last HEARTBEAT reported it. */
export interface NodeStorage {
  /** '' when the node accepts writes; else why it refuses them (a full disk, a memory cap). */
  readonly degraded: string;
  readonly usedBytes: number;
  readonly availableBytes: number;
}

/** Whether `node`'s last HEARTBEAT said its storage refuses writes (out of space or memory). */
export function storageDegraded(node: ClusterNode | undefined): boolean {
  return node?.storage !== undefined && node.storage.degraded !== '';
}

/**
 * Output bound of a bulk link: room for the bytes in flight of many flooding client connections
 * (each bounded by the balancer's `maxClientBytesInFlight`) before it answers BUSY, and only to them.
 */
const BULK_LINK_OUTPUT_BYTES = 64 * 1024 * 1024;

/** A SET or MSET carrying at least {@link LARGE_REQUEST_BYTES} of values. Counted without allocating. */
function isLargeWrite(message: WithoutId<Request>): boolean {
  if (message.op === Op.SET) return message.value.length >= LARGE_REQUEST_BYTES;
  if (message.op !== Op.MSET) return false;
  let bytes = 0;
  for (const entry of message.entries) {
    bytes += entry.value.length;
    if (bytes >= LARGE_REQUEST_BYTES) return true;
  }
  return false;
}

/**
 * Most bytes (keys and values) of the requests one node holds (see `ClusterNode.held`): as much as
 * its bulk link may buffer; past it a request is refused with BUSY rather than held.
 */
const MAX_HELD_BYTES = BULK_LINK_OUTPUT_BYTES;

/**
 * A copy of `value` owning its bytes: every `Uint8Array` in it copied, their lengths added to
 * `size.bytes`. A held request outlives the tick whose receive buffer its keys and values are
 * views of.
 */
function detached<T>(value: T, size: { bytes: number }): T {
  if (value instanceof Uint8Array) {
    size.bytes += value.length;
    return value.slice() as T;
  }
  if (Array.isArray(value)) return value.map((element: unknown) => detached(element, size)) as T;
  if (value !== null && typeof value === 'object') {
    const copy: Record<string, unknown> = {};
    for (const [name, field] of Object.entries(value)) copy[name] = detached(field, size);
    return copy as T;
  }
  return value;
}

/** A request held by {@link ClusterNode} until its keys' order lets it go (see `ClusterNode.held`). */
interface HeldRequest {
  readonly message: WithoutId<Request>;
  readonly slots: KeySlots;
  readonly callback: ResponseCallback;
  /** Its deadline as given (undefined: the link's request timeout), for the error's words. */
  readonly timeoutMs: number | undefined;
  /** `performance.now()` past which it fails: its deadline counts from its arrival, not its sending. */
  readonly deadline: number;
  /** Bytes of its keys and values (counted against {@link MAX_HELD_BYTES}). */
  readonly bytes: number;
  /** The client connection's share it is counted in (undefined: an internal request). */
  readonly client: ClientShare | undefined;
}

/** Where a node lives and how much of the ring it gets. */
export interface NodeAddress {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
}

/**
 * One storage node as the balancer sees it: its address, its one persistent multiplexed link
 * (a {@link PeerLink} that reconnects with backoff), and the health facts the monitor reads.
 * `up` is a plain field written only by the health monitor, so the hot path reads one boolean.
 */
export class ClusterNode implements NodeAddress {
  /** Whether requests for this node's keys are forwarded (else they fail fast with UNAVAILABLE). */
  up = false;
  /** Keys the node reported in its last HEARTBEAT (0 before any). */
  keyCount = 0;
  /** Storage condition from its last HEARTBEAT; undefined before one, or from a node that does not report it. */
  storage: NodeStorage | undefined;
  /** `performance.now()` of the last JOIN or HEARTBEAT; only meaningful when `registered`. */
  lastHeartbeatAt = 0;
  /** A graceful leave is under way: out of the ring, still serving its keys until they moved. */
  leaving = false;
  /** The peer at the address answered HELLO with another id: never forward to it. */
  identityMismatch: string | undefined;
  /**
   * `performance.now()` when the main link last became ready: a link that came up after the
   * node's last HEARTBEAT may be to a new process at the same address, so it proves nothing about
   * the one that heartbeated (see `Membership`'s identity check).
   */
  linkReadyAt = 0;
  readonly link: PeerLink;
  /**
   * A second link for large writes (a SET or MSET of {@link LARGE_REQUEST_BYTES} or more): a
   * client flooding big values fills this link's buffers and the node's socket, not the one the
   * small requests of every other client share, so theirs do not queue behind megabytes.
   */
  readonly bulkLink: PeerLink;
  /** The bulk link's peer answered HELLO with this node's id (large writes never go elsewhere). */
  private bulkVerified = false;
  /** Longest wait for a graceful close: every pending request has met its deadline by then. */
  private readonly closeGraceMs: number;
  /** Each key's requests in flight on the two links: a key's next request follows them. */
  private readonly lanes = new KeyLanes();
  /**
   * Each client connection's share of the node's in-flight slots (see {@link LinkShares}). A
   * client request is counted from its acceptance here to its settling, held ones included: the
   * held queue has the same `maxInFlight` bound and would otherwise be one more pool a single
   * client could fill for everyone.
   */
  readonly shares: LinkShares;
  /**
   * Requests held because their keys were in flight on both links (rare: a multi-key request),
   * and every keyed request after them, in arrival order; sent as answers drain the links. At most
   * `maxInFlight` of them and {@link MAX_HELD_BYTES} (past either: BUSY, not executed); each one
   * sent with the time its deadline has left, or failed unsent (TIMEOUT, not executed) when none.
   * No timer: each request settling on the links (answered or past its own deadline) sends or
   * fails the held ones, so a held request overstays its deadline only while a request before it
   * on its keys is still in flight, itself bounded by its deadline.
   */
  private held: HeldRequest[] = [];
  /** Bytes of {@link held}'s requests. */
  private heldBytes = 0;
  private readonly requestTimeoutMs: number;
  private readonly maxHeld: number;

  constructor(
    readonly id: string,
    readonly host: string,
    readonly port: number,
    readonly weight: number,
    /** True when the node JOINed: it must then keep heartbeating to count as up. */
    public registered: boolean,
    /** False for static nodes listed as bare `host:port`: their id is ours, not theirs. */
    readonly verifyIdentity: boolean,
    options: NodeLinkOptions,
  ) {
    this.closeGraceMs = options.requestTimeoutMs + 100;
    this.requestTimeoutMs = options.requestTimeoutMs;
    this.maxHeld = options.maxInFlight;
    this.shares = new LinkShares(id, options.maxInFlight);
    const link = (maxOutputBytes: number | undefined): PeerLink =>
      new PeerLink({
        host,
        port,
        role: 'balancer',
        connectTimeoutMs: options.connectTimeoutMs,
        tls: options.tls,
        backoff: { initialDelayMs: 50, maxDelayMs: 1000 },
        credentials: options.credentials,
        connection: {
          requestTimeoutMs: options.requestTimeoutMs,
          maxInFlight: options.maxInFlight,
          ...(maxOutputBytes === undefined ? {} : { maxOutputBytes }),
        },
      });
    this.link = link(undefined);
    this.bulkLink = link(BULK_LINK_OUTPUT_BYTES);
    this.link.on('ready', (hello) => this.checkIdentity(hello));
    this.bulkLink.on('ready', (hello) => {
      this.bulkVerified = !this.verifyIdentity || hello.serverId === this.id;
    });
  }

  /** `host:port`, as dialed. */
  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Requests awaiting the node's answer. */
  get inFlight(): number {
    return this.link.connection?.inFlight ?? 0;
  }

  /** The live connection, when the link is ready. */
  get connection(): Connection | undefined {
    return this.link.connection;
  }

  /**
   * Sends a request to the node, large writes on the bulk link (while it is up), a key's request
   * after that key's requests in flight (see {@link KeyLanes}); fails with UNAVAILABLE at once
   * when the link is down. `options.signal` is for internal requests that name no key (control
   * requests). `client`: the share of the client connection the request is for (see
   * {@link LinkShares}: BUSY past it); undefined for the balancer's own requests.
   */
  forward(message: WithoutId<Request>, options?: RequestOptions, client?: ClientShare): Promise<Response> {
    const slots = keySlotsOf(message);
    if (slots === undefined && client === undefined)
      return this.linkOf(this.preferredLane(message)).request(message, options);
    return new Promise((resolve, reject) => {
      const refusal = this.forwardKeyed(
        message,
        slots,
        (error, response) => (error === undefined ? resolve(response as Response) : reject(error)),
        options?.timeoutMs,
        client,
      );
      if (refusal !== undefined) reject(refusal);
    });
  }

  /**
   * {@link forward} without a promise (the router's hot path): returns the refusal when the
   * request cannot be sent (link down: UNAVAILABLE, like `forward`; BUSY, the client's share
   * included; too large), otherwise calls `callback` once with the node's answer or the error.
   */
  forwardWith(
    message: WithoutId<Request>,
    callback: ResponseCallback,
    client: ClientShare | undefined,
  ): DstoreError | undefined {
    return this.forwardKeyed(message, keySlotsOf(message), callback, undefined, client);
  }

  /**
   * Counts the request in `client`'s share (refusing it past the share), then sends it now on
   * the lane its keys need, or holds it (see {@link held}). The count is given back when
   * `callback` runs, or at once when the request is refused here.
   */
  private forwardKeyed(
    message: WithoutId<Request>,
    slots: KeySlots,
    callback: ResponseCallback,
    timeoutMs: number | undefined,
    client: ClientShare | undefined,
  ): DstoreError | undefined {
    if (client !== undefined) {
      const refusal = this.shares.acquire(client);
      if (refusal !== undefined) return refusal;
    }
    const lane =
      slots !== undefined && this.held.length > 0
        ? undefined
        : this.lanes.laneFor(slots, this.preferredLane(message));
    if (lane === undefined) {
      const refusal = this.hold(message, slots, callback, timeoutMs, client);
      if (refusal !== undefined && client !== undefined) this.shares.release(client);
      return refusal;
    }
    return this.send(lane, message, slots, callback, timeoutMs, client);
  }

  /** Holds a request until its keys' order lets it go; refuses it (BUSY) past the held bounds. */
  private hold(
    message: WithoutId<Request>,
    slots: KeySlots,
    callback: ResponseCallback,
    timeoutMs: number | undefined,
    client: ClientShare | undefined,
  ): DstoreError | undefined {
    if (this.held.length >= this.maxHeld) {
      return new DstoreError(
        ErrorCode.BUSY,
        `${this.id}: ${this.held.length} requests already waiting for earlier ones on its keys to be answered`,
      );
    }
    // Its keys and values are views of a receive buffer, valid for this tick only.
    const size = { bytes: 0 };
    const copy = detached(message, size);
    if (this.heldBytes + size.bytes > MAX_HELD_BYTES) {
      return new DstoreError(
        ErrorCode.BUSY,
        `${this.id}: ${this.heldBytes} bytes of requests already waiting for earlier ones on its keys to be answered`,
      );
    }
    const deadline = performance.now() + (timeoutMs ?? this.requestTimeoutMs);
    this.held.push({ message: copy, slots, callback, timeoutMs, deadline, bytes: size.bytes, client });
    this.heldBytes += size.bytes;
    return undefined;
  }

  /**
   * Sends on `lane`, counting the request's keys there until it settles; gives `client`'s count
   * back when it settles, or at once when refused (then `callback` is never called).
   */
  private send(
    lane: Lane,
    message: WithoutId<Request>,
    slots: KeySlots,
    callback: ResponseCallback,
    timeoutMs: number | undefined,
    client: ClientShare | undefined,
  ): DstoreError | undefined {
    const link = this.linkOf(lane);
    const connection = link.connection;
    if (connection === undefined) {
      if (client !== undefined) this.shares.release(client);
      return new DstoreError(ErrorCode.UNAVAILABLE, `${link.address} is not connected`);
    }
    if (slots === undefined && client === undefined)
      return connection.requestWith(message, callback, timeoutMs);
    this.lanes.sent(slots, lane);
    // One callback for the lanes and the share: no second closure on the hot path.
    const refusal = connection.requestWith(
      message,
      (error, response) => {
        this.lanes.settled(slots, lane);
        // Before the client's callback: its answer may let it send more at once.
        if (client !== undefined) this.shares.release(client);
        if (this.held.length > 0) this.sendHeld();
        callback(error, response);
      },
      timeoutMs,
    );
    if (refusal !== undefined) {
      this.lanes.settled(slots, lane);
      if (client !== undefined) this.shares.release(client);
    }
    return refusal;
  }

  /**
   * Sends the held requests, oldest first, until one must still wait; each with the time left to
   * its deadline, and one with none left fails unsent (TIMEOUT, not executed: never on the wire,
   * so it cannot run after the client was told it failed).
   */
  private sendHeld(): void {
    let now = -1;
    while (this.held.length > 0) {
      const next = this.held[0]!;
      if (now < 0) now = performance.now();
      const leftMs = Math.floor(next.deadline - now);
      if (leftMs <= 0) {
        this.unhold();
        if (next.client !== undefined) this.shares.release(next.client);
        next.callback(
          new DstoreError(
            ErrorCode.TIMEOUT,
            `no response within ${next.timeoutMs ?? this.requestTimeoutMs} ms: the request waited for earlier ones on its keys to ${this.id} and was not sent`,
            { notExecuted: true },
          ),
          undefined,
        );
        continue;
      }
      const lane = this.lanes.laneFor(next.slots, this.preferredLane(next.message));
      if (lane === undefined) return;
      this.unhold();
      // `send` gives the client's count back itself when it refuses.
      const refusal = this.send(lane, next.message, next.slots, next.callback, leftMs, next.client);
      if (refusal !== undefined) next.callback(refusal, undefined);
    }
  }

  /** Takes the oldest held request off the queue. */
  private unhold(): void {
    const first = this.held.shift();
    if (first !== undefined) this.heldBytes -= first.bytes;
  }

  /** The bulk link for a large write while it is up and verified, else the main one. */
  private preferredLane(message: WithoutId<Request>): Lane {
    return this.bulkVerified && this.bulkLink.isReady && isLargeWrite(message) ? BULK : MAIN;
  }

  private linkOf(lane: Lane): PeerLink {
    return lane === BULK ? this.bulkLink : this.link;
  }

  /** Starts connecting (and reconnecting with backoff). */
  start(): void {
    this.link.start();
    this.bulkLink.start();
  }

  /**
   * Stops reconnecting; requests in flight get their answers (or their deadline) first. A node
   * that never finishes its side (a stalled process) is cut after `graceMs`, so shutdown and
   * re-registration are bounded.
   */
  async close(graceMs = this.closeGraceMs): Promise<void> {
    const connections = [this.link.connection, this.bulkLink.connection];
    const timer = setTimeout(() => {
      for (const connection of connections) connection?.destroy();
    }, graceMs);
    timer.unref();
    try {
      await Promise.all([this.link.close(), this.bulkLink.close()]);
    } finally {
      clearTimeout(timer);
      this.shares.close();
    }
  }

  private checkIdentity(hello: HelloOkResponse): void {
    this.linkReadyAt = performance.now();
    this.identityMismatch = this.verifyIdentity && hello.serverId !== this.id ? hello.serverId : undefined;
  }
}
