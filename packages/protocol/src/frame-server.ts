import { EventEmitter } from 'node:events';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
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
  /** Most open connections; the excess get one BUSY error frame and are closed. Default 1024. */
  readonly maxConnections?: number;
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
  /** A connection was refused because the server is at `maxConnections`. */
  refused: [remote: string];
}

/**
 * A TCP server whose every connection is a {@link Connection}: the one listener used by storage
 * nodes and the balancer. It bounds the number of connections and stops gracefully: stop
 * accepting, let in-flight requests be answered, then close.
 */
export class FrameServer extends EventEmitter<FrameServerEvents> {
  private readonly server: Server;
  private readonly connections = new Set<Connection>();
  private readonly maxConnections: number;
  private readonly tlsGate: TlsGate | undefined;

  constructor(private readonly options: FrameServerOptions) {
    super();
    this.maxConnections = options.maxConnections ?? 1024;
    // With TLS, sockets reach accept() once secure; at most maxConnections wait for that.
    this.tlsGate =
      options.tls === undefined
        ? undefined
        : new TlsGate(
            options.tls,
            this.maxConnections,
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
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.tlsGate?.destroyPending();
    const timer = setTimeout(() => {
      for (const connection of this.connections) connection.destroy();
    }, graceMs);
    await Promise.all([...this.connections].map((connection) => connection.close()));
    clearTimeout(timer);
    await stopped;
  }

  private accept(socket: Socket): void {
    if (this.connections.size >= this.maxConnections) {
      this.refuse(socket, ErrorCode.BUSY, `too many connections (limit ${this.maxConnections})`);
      this.emit('refused', `${socket.remoteAddress}:${socket.remotePort}`);
      return;
    }
    const connection = new Connection(socket, {
      ...this.options.connection,
      onRequest: this.options.onRequest,
    });
    this.connections.add(connection);
    connection.once('close', () => this.connections.delete(connection));
    this.emit('connection', connection);
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
