import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { type BackoffOptions, backoffDelay } from './backoff.js';
import { Connection, type ConnectionOptions, type RequestOptions } from './connection.js';
import { DstoreError, ErrorCode } from './errors.js';
import {
  type HelloOkResponse,
  Op,
  type PeerRole,
  PROTOCOL_VERSION,
  type Request,
  type Response,
  type WithoutId,
} from './messages.js';

/** Options of {@link connectSocket}. */
export interface ConnectSocketOptions {
  readonly host: string;
  readonly port: number;
  /** Give up connecting after this many ms. Default 5000. */
  readonly connectTimeoutMs?: number;
}

/** Opens a TCP socket, failing with UNAVAILABLE on refusal and TIMEOUT past `connectTimeoutMs`. */
export function connectSocket(options: ConnectSocketOptions): Promise<Socket> {
  const timeoutMs = options.connectTimeoutMs ?? 5000;
  return new Promise<Socket>((resolve, reject) => {
    const socket = netConnect({ host: options.host, port: options.port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new DstoreError(
          ErrorCode.TIMEOUT,
          `connect to ${options.host}:${options.port} timed out after ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(
        new DstoreError(
          ErrorCode.UNAVAILABLE,
          `cannot connect to ${options.host}:${options.port}: ${error.message}`,
          {
            cause: error,
          },
        ),
      );
    });
  });
}

/**
 * Sends HELLO on a fresh connection and checks the answer: the same protocol version, and the
 * token accepted. Rejects with VERSION_MISMATCH or UNAUTHORIZED otherwise.
 */
export async function handshake(
  connection: Connection,
  role: PeerRole,
  options: { token?: string | undefined; timeoutMs?: number } = {},
): Promise<HelloOkResponse> {
  const answer = await connection.request(
    { op: Op.HELLO, version: PROTOCOL_VERSION, role, token: options.token },
    options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs },
  );
  if (answer.op !== Op.HELLO_OK) {
    throw new DstoreError(ErrorCode.MALFORMED_FRAME, `expected HELLO_OK, got op ${answer.op}`);
  }
  if (answer.version !== PROTOCOL_VERSION) {
    throw new DstoreError(
      ErrorCode.VERSION_MISMATCH,
      `peer speaks version ${answer.version}, we speak ${PROTOCOL_VERSION}`,
    );
  }
  return answer;
}

/**
 * The server side of HELLO: the answer to send, given the server's token (if it requires one).
 * Marks the connection authenticated on success.
 */
export function answerHello(
  connection: Connection,
  hello: Extract<Request, { op: typeof Op.HELLO }>,
  server: { role: PeerRole; serverId: string; token?: string | undefined },
): Response {
  if (hello.version !== PROTOCOL_VERSION) {
    return {
      op: Op.ERROR,
      id: hello.id,
      code: ErrorCode.VERSION_MISMATCH,
      message: `this peer speaks protocol version ${PROTOCOL_VERSION}, not ${hello.version}`,
    };
  }
  if (server.token !== undefined && server.token !== '' && hello.token !== server.token) {
    return { op: Op.ERROR, id: hello.id, code: ErrorCode.UNAUTHORIZED, message: 'invalid token' };
  }
  connection.authenticated = true;
  return {
    op: Op.HELLO_OK,
    id: hello.id,
    version: PROTOCOL_VERSION,
    role: server.role,
    serverId: server.serverId,
  };
}

/** Options of a {@link PeerLink}. */
export interface PeerLinkOptions extends ConnectSocketOptions {
  /** Options of each {@link Connection} the link opens. */
  readonly connection?: ConnectionOptions;
  /** Role announced in HELLO. Default 'client'. */
  readonly role?: PeerRole;
  /** Token sent in HELLO. */
  readonly token?: string;
  /** Reconnect delays. Ignored when `retryStrategy` is given. */
  readonly backoff?: BackoffOptions;
  /**
   * Delay in ms before reconnect attempt `attempt` (1-based), or null to stop reconnecting.
   * Default: {@link backoffDelay} with `backoff`, forever.
   */
  readonly retryStrategy?: (attempt: number, error: Error) => number | null;
}

/** Events of a {@link PeerLink}. */
export interface PeerLinkEvents {
  /** The TCP connection is established (HELLO not yet answered). */
  connect: [];
  /** HELLO succeeded: requests can flow. */
  ready: [hello: HelloOkResponse];
  /** A connection attempt or an established connection failed. Listening is optional. */
  error: [error: Error];
  /** The link is down (it was up, or an attempt failed). */
  close: [error: Error | undefined];
  /** A reconnect is scheduled in `delayMs`. */
  reconnecting: [delayMs: number, attempt: number];
  /** The link stopped for good (closed by the owner or the retry strategy gave up). */
  end: [];
}

/**
 * A connection to one peer that keeps itself up: connects, says HELLO, and reconnects with
 * backoff when the connection drops. Requests made while the link is down fail at once with
 * UNAVAILABLE: the link never queues (queueing, when wanted, is the caller's policy).
 *
 * The `error` event is emitted only when someone listens, so an unobserved link never crashes
 * the process and never stops reconnecting.
 */
export class PeerLink extends EventEmitter<PeerLinkEvents> {
  private current: Connection | undefined;
  private ready = false;
  private stopped = true;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private lastHello: HelloOkResponse | undefined;

  constructor(readonly options: PeerLinkOptions) {
    super();
  }

  /** `host:port` of the peer. */
  get address(): string {
    return `${this.options.host}:${this.options.port}`;
  }

  /** The live connection when HELLO has succeeded, else undefined. */
  get connection(): Connection | undefined {
    return this.ready ? this.current : undefined;
  }

  /** True when requests can be sent. */
  get isReady(): boolean {
    return this.ready;
  }

  /** Resolves once the link is ready, or after `timeoutMs`, whichever comes first; never rejects. */
  whenReady(timeoutMs: number): Promise<void> {
    return readyWithin(this, timeoutMs);
  }

  /** The peer's answer to the last successful HELLO. */
  get peerHello(): HelloOkResponse | undefined {
    return this.lastHello;
  }

  /** Starts connecting (and reconnecting) until {@link close}. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    void this.connectOnce();
  }

  /** Sends a request on the live connection; fails with UNAVAILABLE at once when the link is down. */
  request(message: WithoutId<Request>, options?: RequestOptions): Promise<Response> {
    const connection = this.connection;
    if (!connection) {
      return Promise.reject(new DstoreError(ErrorCode.UNAVAILABLE, `${this.address} is not connected`));
    }
    return connection.request(message, options);
  }

  /** Stops reconnecting and closes the connection gracefully (pending requests get their answers). */
  async close(): Promise<void> {
    const wasStopped = this.stopped;
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const connection = this.current;
    // Mid-handshake there is nothing to let finish: a graceful close would wait for the HELLO
    // answer, up to the connect timeout.
    if (connection && !this.ready) connection.destroy();
    else if (connection) await connection.close();
    if (!wasStopped) this.emit('end');
  }

  private async connectOnce(): Promise<void> {
    let connection: Connection | undefined;
    try {
      const socket = await connectSocket(this.options);
      if (this.stopped) {
        socket.destroy();
        return;
      }
      connection = new Connection(socket, this.options.connection);
      this.current = connection;
      connection.once('close', (error) => this.onConnectionClosed(connection!, error));
      this.emit('connect');
      const hello = await handshake(connection, this.options.role ?? 'client', {
        token: this.options.token,
        timeoutMs: this.options.connectTimeoutMs ?? 5000,
      });
      if (this.stopped || this.current !== connection) return;
      this.attempt = 0;
      this.ready = true;
      this.lastHello = hello;
      this.emit('ready', hello);
    } catch (error) {
      this.emitError(error as Error);
      if (connection) connection.destroy(error as Error);
      else this.scheduleReconnect(error as Error);
    }
  }

  private onConnectionClosed(connection: Connection, error: Error | undefined): void {
    if (this.current !== connection) return;
    this.current = undefined;
    this.ready = false;
    const reason =
      error ?? new DstoreError(ErrorCode.CONNECTION_CLOSED, `${this.address} closed the connection`);
    this.emit('close', error);
    if (!this.stopped) this.scheduleReconnect(reason);
  }

  private scheduleReconnect(error: Error): void {
    if (this.stopped) return;
    this.attempt++;
    const delay = this.options.retryStrategy
      ? this.options.retryStrategy(this.attempt, error)
      : backoffDelay(this.attempt, this.options.backoff);
    if (delay === null || delay < 0) {
      this.stopped = true;
      this.emit('end');
      return;
    }
    this.emit('reconnecting', delay, this.attempt);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped) void this.connectOnce();
    }, delay);
  }

  private emitError(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }
}

/**
 * Resolves once `link` is ready (its `ready` event), or after `timeoutMs`: the one bounded wait for
 * a link, shared by {@link PeerLink} and FailoverLink. The timer is unref'd: waiting alone never
 * keeps a process alive.
 */
export function readyWithin(
  link: { readonly isReady: boolean } & Pick<EventEmitter<PeerLinkEvents>, 'on' | 'off'>,
  timeoutMs: number,
): Promise<void> {
  if (link.isReady) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      link.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    timer.unref();
    link.on('ready', done);
  });
}
