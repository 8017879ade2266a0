import { EventEmitter } from 'node:events';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import type { AdmissionKind } from './authenticator.js';
import { ErrorCode } from './errors.js';
import type { ClientOutputBudget } from './output-budget.js';
import { PendingSockets } from './pending-sockets.js';
import { TLS_REQUIRED_MESSAGE, TlsGate, type TlsServerOptions } from './tls.js';

/**
 * What a {@link ConnectionServer} needs of the connections it tracks: the native
 * `Connection`, or another protocol's (the balancer's RESP connections).
 */
export interface ServedConnection {
  /** Called once when the connection has closed. */
  once(event: 'close', listener: () => void): unknown;
  /** Closes the connection after `ms` without traffic (0: never). */
  setIdleTimeout(ms: number): void;
  /** Closes gracefully: requests being served are answered first. */
  close(): Promise<void>;
  /** Closes at once. */
  destroy(): void;
  /** Bytes waiting to be written to the peer (see {@link ClientOutputBudget}). */
  readonly bufferedOutputBytes: number;
}

/** Options of a {@link ConnectionServer}: listening, connection caps and deadlines. */
export interface ConnectionServerOptions {
  /** Address to bind. Default '127.0.0.1'. */
  readonly host?: string;
  /** Port to bind; 0 picks a free one (read it from {@link FrameServer.address}). Default 0. */
  readonly port?: number;
  /**
   * Most authenticated client connections; a client that authenticates past it is answered BUSY
   * and closed. Default 1024.
   */
  readonly maxConnections?: number;
  /**
   * Most authenticated peer connections (balancers, nodes): slots of their own, so clients and
   * unauthenticated sockets can never keep a node from its balancer. Default 256.
   */
  readonly maxPeerConnections?: number;
  /**
   * Most connections that have not authenticated yet; a new one past it evicts the oldest that
   * has sent nothing (else the oldest), so idle sockets can never lock legitimate peers out.
   * Default 256.
   */
  readonly maxPendingConnections?: number;
  /** Most not-yet-authenticated connections per source address (same eviction). Default 64. */
  readonly maxPendingPerAddress?: number;
  /**
   * Whether connections start unauthenticated (pending) and must be admitted by the owner's
   * authentication ({@link FrameServer.admit}) within `authTimeoutMs`. Default false: every
   * connection is admitted as a client when accepted (servers without authentication, tests).
   */
  readonly requireAuthentication?: boolean;
  /**
   * A connection must authenticate within this many ms of being accepted (HELLO and AUTH, or a
   * first request where no authentication is configured), or it is closed. Default 5000.
   */
  readonly authTimeoutMs?: number;
  /** Close admitted client connections idle for this many ms; 0 = never. Default 0. */
  readonly clientIdleTimeoutMs?: number;
  /**
   * Serve TLS only: a plaintext connection gets one ERROR `TLS_REQUIRED` and is closed. Default:
   * plaintext.
   */
  readonly tls?: TlsServerOptions | undefined;
  /**
   * The process's bound on bytes waiting to be written to clients, shared by its servers: this
   * server's client connections are counted in it from `listen` to `close`. Default: none.
   */
  readonly outputBudget?: ClientOutputBudget | undefined;
}

/** Events of a {@link ConnectionServer}. */
export interface ConnectionServerEvents<C extends ServedConnection> {
  /** A connection was accepted. */
  connection: [connection: C];
  /** A connection was refused because every kind of slot is full. */
  refused: [remote: string];
  /** A connection that had not authenticated was closed: its deadline passed, or a newer one took its slot. */
  evicted: [remote: string, reason: string];
}

/**
 * The one TCP listener of dstore's servers, whatever protocol their connections speak: it bounds
 * the number of connections (clients, peers and not-yet-authenticated ones, each with slots of
 * their own, evicting silent pending ones first), enforces the authentication and idle deadlines,
 * takes TLS sockets through the {@link TlsGate}, and stops gracefully: stop accepting, let
 * in-flight requests be answered, then close. Subclasses say how a socket becomes a connection
 * and how a refusal is told in their protocol.
 */
export abstract class ConnectionServer<C extends ServedConnection> extends EventEmitter<
  ConnectionServerEvents<C>
> {
  private readonly server: Server;
  private readonly connections = new Set<C>();
  /** Connections not yet admitted, oldest first, with when they were accepted and from where. */
  private readonly pending = new PendingSockets<
    C,
    { readonly since: number; readonly address: string; readonly socket: Socket }
  >();
  private readonly admitted = { client: new Set<C>(), peer: new Set<C>() };
  private readonly limits: {
    readonly client: number;
    readonly peer: number;
    readonly pending: number;
    readonly pendingPerAddress: number;
    readonly authTimeoutMs: number;
  };
  private deadlineTimer: NodeJS.Timeout | undefined;
  private readonly tlsGate: TlsGate | undefined;

  constructor(private readonly options: ConnectionServerOptions) {
    super();
    this.limits = {
      client: options.maxConnections ?? 1024,
      peer: options.maxPeerConnections ?? 256,
      pending: options.maxPendingConnections ?? 256,
      pendingPerAddress: options.maxPendingPerAddress ?? 64,
      authTimeoutMs: options.authTimeoutMs ?? 5000,
    };
    // With TLS, sockets reach accept() once secure; a socket in its handshake has not
    // authenticated either, so at most the pending cap of them wait for that.
    this.tlsGate =
      options.tls === undefined
        ? undefined
        : new TlsGate(
            options.tls,
            { pending: this.limits.pending, pendingPerAddress: this.limits.pendingPerAddress },
            (socket) => this.accept(socket),
            (socket) => this.refuse(socket, ErrorCode.TLS_REQUIRED, TLS_REQUIRED_MESSAGE),
          );
    const gate = this.tlsGate;
    // Half-open: a peer that sends its last requests and shuts its side still gets its answers.
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) =>
      gate === undefined ? this.accept(socket) : gate.admit(socket),
    );
  }

  /** Binds and resolves with the bound address. */
  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => {
        this.server.off('error', reject);
        // After binding, the only server errors are failed accepts (EMFILE and the like): Node
        // keeps accepting, so they must not crash the process as an unhandled 'error' event.
        this.server.on('error', () => undefined);
        this.options.outputBudget?.watch(this);
        if (this.options.requireAuthentication === true) {
          // One sweep per server for the authentication deadlines, never a timer per connection.
          const period = Math.max(50, Math.min(1000, this.limits.authTimeoutMs / 4));
          this.deadlineTimer = setInterval(() => this.expirePending(), period);
          this.deadlineTimer.unref();
        }
        resolve(this.address);
      });
    });
  }

  /** The bound address (after {@link listen}). */
  get address(): AddressInfo {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('server is not listening');
    return address;
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** The admitted client connections (not peers, not those still authenticating). */
  get clientConnections(): ReadonlySet<C> {
    return this.admitted.client;
  }

  /** Every open connection (for broadcasting or stats). */
  get openConnections(): ReadonlySet<C> {
    return this.connections;
  }

  /**
   * Stops accepting, closes every connection gracefully (requests being served are answered
   * first), and destroys what is still open after `graceMs`.
   */
  async close(graceMs = 5000): Promise<void> {
    if (this.deadlineTimer !== undefined) clearInterval(this.deadlineTimer);
    this.options.outputBudget?.unwatch(this);
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.tlsGate?.destroyPending();
    const timer = setTimeout(() => {
      for (const connection of this.connections) connection.destroy();
    }, graceMs);
    await Promise.all([...this.connections].map((connection) => this.shutDown(connection)));
    clearTimeout(timer);
    await stopped;
  }

  /** Closes `connection` gracefully because the server goes down (a protocol may tell the peer so). */
  protected shutDown(connection: C): Promise<void> {
    return connection.close();
  }

  /** Open connections by kind: admitted clients and peers, and those not authenticated yet. */
  get connectionCounts(): { readonly client: number; readonly peer: number; readonly pending: number } {
    return { client: this.admitted.client.size, peer: this.admitted.peer.size, pending: this.pending.size };
  }

  /**
   * Gives an authenticated connection a slot of `kind`, ending its authentication deadline.
   * False when that kind is full (the caller answers BUSY and closes it). Idempotent.
   */
  admit(connection: C, kind: AdmissionKind): boolean {
    if (this.admitted[kind].has(connection)) return true;
    if (!this.connections.has(connection) || this.admitted[kind].size >= this.limits[kind]) return false;
    this.pending.delete(connection);
    this.admitted[kind].add(connection);
    const idleMs = this.options.clientIdleTimeoutMs ?? 0;
    if (kind === 'client' && idleMs > 0) connection.setIdleTimeout(idleMs);
    return true;
  }

  private accept(socket: Socket): void {
    const { client, peer, pending } = this.limits;
    if (this.connections.size >= client + peer + pending) {
      this.refuse(socket, ErrorCode.BUSY, `too many connections (limit ${client + peer + pending})`);
      this.emit('refused', `${socket.remoteAddress}:${socket.remotePort}`);
      return;
    }
    const address = socket.remoteAddress ?? '';
    if (this.options.requireAuthentication !== true) {
      if (this.admitted.client.size >= client) {
        this.refuse(socket, ErrorCode.BUSY, `too many connections (limit ${client})`);
        this.emit('refused', `${socket.remoteAddress}:${socket.remotePort}`);
        return;
      }
      const connection = this.track(socket, address);
      this.admit(connection, 'client');
      this.emit('connection', connection);
      return;
    }
    if (this.pending.size >= pending) this.evictOldest(undefined);
    if (this.pending.countFrom(address) >= this.limits.pendingPerAddress) this.evictOldest(address);
    const connection = this.track(socket, address);
    this.emit('connection', connection);
  }

  /** Wraps an accepted socket in this server's connection (called once per accepted socket). */
  protected abstract wrap(socket: Socket): C;

  /** Tells a not-yet-authenticated connection why it is being closed, in its protocol. */
  protected abstract tellEvicted(connection: C, reason: string): void;

  /**
   * Answers a socket that gets no connection (every slot full, plaintext on a TLS port) with one
   * error in this server's protocol, and closes it within a second.
   */
  protected abstract refuse(socket: Socket, code: ErrorCode, message: string): void;

  /** Wraps an accepted socket, pending until admitted, and forgets it when it closes. */
  private track(socket: Socket, address: string): C {
    const connection = this.wrap(socket);
    this.connections.add(connection);
    this.pending.add(connection, { since: performance.now(), address, socket });
    connection.once('close', () => {
      this.connections.delete(connection);
      this.pending.delete(connection);
      this.admitted.client.delete(connection);
      this.admitted.peer.delete(connection);
    });
    return connection;
  }

  /**
   * Closes an unauthenticated connection (from `address`, when given) to make room: the oldest
   * that has sent nothing at all, else the oldest. A client in the middle of its handshake has
   * sent its HELLO, so a stream of silent sockets cannot push it out before it finishes.
   */
  private evictOldest(address: string | undefined): void {
    const victim = this.pending.toEvict(address);
    if (victim === undefined) return;
    this.dropPending(
      victim.key,
      victim.silent
        ? 'too many unauthenticated connections: the oldest idle one is closed'
        : 'too many unauthenticated connections: the oldest is closed',
    );
  }

  private expirePending(): void {
    const cutoff = performance.now() - this.limits.authTimeoutMs;
    for (const [connection, entry] of this.pending) {
      // Oldest first: the first one inside the deadline ends the sweep.
      if (entry.since > cutoff) return;
      this.dropPending(connection, `did not authenticate within ${this.limits.authTimeoutMs} ms`);
    }
  }

  private dropPending(connection: C, reason: string): void {
    const entry = this.pending.delete(connection);
    this.tellEvicted(connection, reason);
    void connection.close();
    // A peer that does not read cannot hold the socket open: the close is bounded.
    setTimeout(() => connection.destroy(), 1000).unref();
    this.emit('evicted', entry?.address ?? '', reason);
  }
}
