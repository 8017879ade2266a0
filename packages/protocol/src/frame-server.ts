import { EventEmitter } from 'node:events';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import type { AdmissionKind } from './authenticator.js';
import { Connection, type ConnectionOptions } from './connection.js';
import { ErrorCode } from './errors.js';
import { Op, type Request } from './messages.js';
import { TLS_REQUIRED_MESSAGE, TlsGate, type TlsServerOptions } from './tls.js';

/** Options of a {@link FrameServer}. */
export interface FrameServerOptions {
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
  /** Options of every accepted {@link Connection}. `onRequest` is set by the server. */
  readonly connection?: Omit<ConnectionOptions, 'onRequest'>;
  /**
   * Serve TLS only: a plaintext connection gets one ERROR `TLS_REQUIRED` and is closed. Default:
   * plaintext.
   */
  readonly tls?: TlsServerOptions | undefined;
  /** Handles each request of each connection. */
  readonly onRequest: (request: Request, connection: Connection) => void;
}

/** Events of a {@link FrameServer}. */
export interface FrameServerEvents {
  /** A connection was accepted. */
  connection: [connection: Connection];
  /** A connection was refused because every kind of slot is full. */
  refused: [remote: string];
  /** A connection that had not authenticated was closed: its deadline passed, or a newer one took its slot. */
  evicted: [remote: string, reason: string];
}

/**
 * A TCP server whose every connection is a {@link Connection}: the one listener used by storage
 * nodes and the balancer. It bounds the number of connections and stops gracefully: stop
 * accepting, let in-flight requests be answered, then close.
 */
export class FrameServer extends EventEmitter<FrameServerEvents> {
  private readonly server: Server;
  private readonly connections = new Set<Connection>();
  /** Connections not yet admitted, oldest first, with when they were accepted and from where. */
  private readonly pending = new Map<
    Connection,
    { readonly since: number; readonly address: string; readonly socket: Socket }
  >();
  private readonly pendingPerAddress = new Map<string, number>();
  private readonly admitted = { client: new Set<Connection>(), peer: new Set<Connection>() };
  private readonly limits: {
    readonly client: number;
    readonly peer: number;
    readonly pending: number;
    readonly pendingPerAddress: number;
    readonly authTimeoutMs: number;
  };
  private deadlineTimer: NodeJS.Timeout | undefined;
  private readonly tlsGate: TlsGate | undefined;

  constructor(private readonly options: FrameServerOptions) {
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
            this.limits.pending,
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

  /** Every open connection (for broadcasting or stats). */
  get openConnections(): ReadonlySet<Connection> {
    return this.connections;
  }

  /**
   * Stops accepting, closes every connection gracefully (requests being served are answered
   * first), and destroys what is still open after `graceMs`.
   */
  async close(graceMs = 5000): Promise<void> {
    if (this.deadlineTimer !== undefined) clearInterval(this.deadlineTimer);
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.tlsGate?.destroyPending();
    const timer = setTimeout(() => {
      for (const connection of this.connections) connection.destroy();
    }, graceMs);
    await Promise.all([...this.connections].map((connection) => connection.close()));
    clearTimeout(timer);
    await stopped;
  }

  /** Open connections by kind: admitted clients and peers, and those not authenticated yet. */
  get connectionCounts(): { readonly client: number; readonly peer: number; readonly pending: number } {
    return { client: this.admitted.client.size, peer: this.admitted.peer.size, pending: this.pending.size };
  }

  /**
   * Gives an authenticated connection a slot of `kind`, ending its authentication deadline.
   * False when that kind is full (the caller answers BUSY and closes it). Idempotent.
   */
  admit(connection: Connection, kind: AdmissionKind): boolean {
    if (this.admitted[kind].has(connection)) return true;
    if (!this.connections.has(connection) || this.admitted[kind].size >= this.limits[kind]) return false;
    this.forgetPending(connection);
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
    if ((this.pendingPerAddress.get(address) ?? 0) >= this.limits.pendingPerAddress)
      this.evictOldest(address);
    const connection = this.track(socket, address);
    this.emit('connection', connection);
  }

  /** Wraps an accepted socket, pending until admitted, and forgets it when it closes. */
  private track(socket: Socket, address: string): Connection {
    const connection = new Connection(socket, {
      ...this.options.connection,
      onRequest: this.options.onRequest,
    });
    this.connections.add(connection);
    this.pending.set(connection, { since: performance.now(), address, socket });
    this.pendingPerAddress.set(address, (this.pendingPerAddress.get(address) ?? 0) + 1);
    connection.once('close', () => {
      this.connections.delete(connection);
      this.forgetPending(connection);
      this.admitted.client.delete(connection);
      this.admitted.peer.delete(connection);
    });
    return connection;
  }

  private forgetPending(connection: Connection): void {
    const entry = this.pending.get(connection);
    if (entry === undefined) return;
    this.pending.delete(connection);
    const count = (this.pendingPerAddress.get(entry.address) ?? 1) - 1;
    if (count > 0) this.pendingPerAddress.set(entry.address, count);
    else this.pendingPerAddress.delete(entry.address);
  }

  /**
   * Closes an unauthenticated connection (from `address`, when given) to make room: the oldest
   * that has sent nothing at all, else the oldest. A client in the middle of its handshake has
   * sent its HELLO, so a stream of silent sockets cannot push it out before it finishes.
   */
  private evictOldest(address: string | undefined): void {
    let oldest: Connection | undefined;
    for (const [connection, entry] of this.pending) {
      if (address !== undefined && entry.address !== address) continue;
      if (entry.socket.bytesRead === 0) {
        this.dropPending(connection, 'too many unauthenticated connections: the oldest idle one is closed');
        return;
      }
      oldest ??= connection;
    }
    if (oldest !== undefined)
      this.dropPending(oldest, 'too many unauthenticated connections: the oldest is closed');
  }

  private expirePending(): void {
    const cutoff = performance.now() - this.limits.authTimeoutMs;
    for (const [connection, entry] of this.pending) {
      // Oldest first: the first one inside the deadline ends the sweep.
      if (entry.since > cutoff) return;
      this.dropPending(connection, `did not authenticate within ${this.limits.authTimeoutMs} ms`);
    }
  }

  private dropPending(connection: Connection, reason: string): void {
    const entry = this.pending.get(connection);
    this.forgetPending(connection);
    connection.send({ op: Op.ERROR, id: 0, code: ErrorCode.UNAUTHORIZED, message: reason });
    void connection.close();
    // A peer that does not read cannot hold the socket open: the close is bounded.
    setTimeout(() => connection.destroy(), 1000).unref();
    this.emit('evicted', entry?.address ?? '', reason);
  }

  /** Sends one connection-level ERROR (id 0) and closes, never waiting more than a second. */
  private refuse(socket: Socket, code: ErrorCode, message: string): void {
    socket.on('error', () => undefined);
    const connection = new Connection(socket);
    connection.send({ op: Op.ERROR, id: 0, code, message });
    void connection.close();
    // Read on (a sniffed socket is paused) so the peer's own close is seen and ends it early.
    socket.resume();
    setTimeout(() => connection.destroy(), 1000).unref();
  }
}
