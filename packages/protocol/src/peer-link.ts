import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { type Credentials, newNonce, proveIdentity, SaltedKeyCache, sameBytes } from './auth.js';
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
import { connectTls, type TlsClientOptions } from './tls.js';

/** Options of {@link connectSocket}. */
export interface ConnectSocketOptions {
  readonly host: string;
  readonly port: number;
  /** Give up connecting (TLS handshake included) after this many ms. Default 5000. */
  readonly connectTimeoutMs?: number;
  /** Connect with TLS, verifying the server as these options say. Default: plaintext. */
  readonly tls?: TlsClientOptions | undefined;
}

/**
 * Opens a TCP socket, or a TLS one when `tls` is given, failing with UNAVAILABLE on refusal or a
 * failed TLS handshake (the TLS cause in the message) and TIMEOUT past `connectTimeoutMs`.
 */
export function connectSocket(options: ConnectSocketOptions): Promise<Socket> {
  const timeoutMs = options.connectTimeoutMs ?? 5000;
  if (options.tls !== undefined) return connectTls(options, options.tls, timeoutMs);
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

/** Options of {@link handshake}. */
export interface HandshakeOptions {
  /** What to prove: the cluster secret (peers) or a user's password. Default: nothing (anonymous). */
  readonly credentials?: Credentials | undefined;
  /** Deadline of each step, in ms. Default: the connection's request timeout. */
  readonly timeoutMs?: number;
  /** Keeps the derived password key across reconnects (scrypt is paid once per server salt). */
  readonly cache?: SaltedKeyCache;
  /**
   * A storage node's own id, sent in HELLO (role `node`): the server may then send its requests
   * to this node on this connection (HELLO's `node`). Default: not sent.
   */
  readonly node?: string | undefined;
}

/**
 * Says HELLO on a fresh connection and, when the server sends a challenge, authenticates (AUTH)
 * and checks the server's signature: after it resolves, both ends know who the other is. Rejects
 * with VERSION_MISMATCH, or UNAUTHORIZED when either side fails to prove itself. A peer with a
 * cluster secret, or a client with a user and password, refuses a server that does not ask for
 * it (it could be anyone).
 */
export async function handshake(
  connection: Connection,
  role: PeerRole,
  options: HandshakeOptions = {},
): Promise<HelloOkResponse> {
  const { credentials } = options;
  const requestOptions = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
  const clientNonce = credentials === undefined ? undefined : newNonce();
  const answer = await connection.request(
    {
      op: Op.HELLO,
      version: PROTOCOL_VERSION,
      role,
      user: credentials?.kind === 'user' ? credentials.user : undefined,
      nonce: clientNonce,
      node: options.node,
    },
    requestOptions,
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
  const challenge = answer.challenge;
  if (challenge === undefined) {
    if (credentials?.kind === 'peer') {
      throw new DstoreError(
        ErrorCode.UNAUTHORIZED,
        `${answer.serverId} does not authenticate its peers (no cluster secret): refusing to talk to it`,
      );
    }
    // A client with a password expects the server to prove it holds the user's credential (the
    // signature below); a server that asks for nothing could be anyone at that address (a stale
    // node address, a squatted port) collecting the client's requests: the same downgrade as a
    // cheaper kdf, refused the same way.
    if (credentials?.kind === 'user') {
      throw new DstoreError(
        ErrorCode.UNAUTHORIZED,
        `${answer.serverId} did not ask for a password (it has no users, or it is not the server meant): ` +
          'refusing to send it requests; connect without a user and password to use a server without users',
      );
    }
    return answer;
  }
  if (credentials === undefined || clientNonce === undefined) {
    throw new DstoreError(ErrorCode.UNAUTHORIZED, 'the server asks for credentials and none are configured');
  }
  const { proof, expectedSignature } = await proveIdentity(
    credentials,
    role,
    clientNonce,
    challenge,
    options.cache,
  );
  const accepted = await connection.request({ op: Op.AUTH, proof }, requestOptions);
  if (accepted.op !== Op.AUTH_OK) {
    throw new DstoreError(ErrorCode.MALFORMED_FRAME, `expected AUTH_OK, got op ${accepted.op}`);
  }
  if (!sameBytes(accepted.signature, expectedSignature)) {
    throw new DstoreError(
      ErrorCode.UNAUTHORIZED,
      `${answer.serverId} could not prove it holds the ${credentials.kind === 'peer' ? 'cluster secret' : 'credentials'}`,
    );
  }
  return answer;
}

/** Options of a {@link PeerLink}. */
export interface PeerLinkOptions extends ConnectSocketOptions {
  /** Options of each {@link Connection} the link opens. */
  readonly connection?: ConnectionOptions;
  /** Role announced in HELLO. Default 'client'. */
  readonly role?: PeerRole;
  /** What the link proves in HELLO/AUTH (cluster secret or user password). Default: nothing. */
  readonly credentials?: Credentials | undefined;
  /** Reconnect delays. Ignored when `retryStrategy` is given. */
  readonly backoff?: BackoffOptions;
  /**
   * Delay in ms before reconnect attempt `attempt` (1-based), or null to stop reconnecting.
   * Default: {@link backoffDelay} with `backoff`, forever.
   */
  readonly retryStrategy?: (attempt: number, error: Error) => number | null;
  /**
   * Liveness probe: when a request on the link passes its deadline unanswered, the link PINGs the
   * peer with this deadline (one probe at a time); a peer that does not answer it is taken as
   * hung (SIGSTOPped, its host gone, a black-holed route: TCP alone would not say so for many
   * minutes), and the connection is closed (`close`, then a reconnect, or the next server of a
   * FailoverLink); its pending requests fail with CONNECTION_CLOSED. A PING is answered by the
   * peer itself, so a peer that is only slow to serve requests passes. Default: no probe.
   */
  readonly probeTimeoutMs?: number | undefined;
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
  /** The connection whose close during the handshake was reported as an error (not again by its handshake). */
  private reportedClose: Connection | undefined;
  private lastHello: HelloOkResponse | undefined;
  private readonly saltedKeys = new SaltedKeyCache();
  /** The connection a liveness probe is running on (see {@link PeerLinkOptions.probeTimeoutMs}). */
  private probing: Connection | undefined;

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
        credentials: this.options.credentials,
        timeoutMs: this.options.connectTimeoutMs ?? 5000,
        cache: this.saltedKeys,
      });
      if (this.stopped || this.current !== connection) return;
      this.attempt = 0;
      this.ready = true;
      this.lastHello = hello;
      const probeTimeoutMs = this.options.probeTimeoutMs;
      if (probeTimeoutMs !== undefined) {
        const ready = connection;
        ready.on('requestTimeout', () => this.probe(ready, probeTimeoutMs));
      }
      this.emit('ready', hello);
    } catch (error) {
      if (connection === undefined || this.reportedClose !== connection) this.emitError(error as Error);
      if (connection) connection.destroy(error as Error);
      else this.scheduleReconnect(error as Error);
    }
  }

  /**
   * A request timed out on `connection`: PING the peer, and close the connection as hung when the
   * PING times out too (any answer, an ERROR included, proves the peer is there).
   */
  private probe(connection: Connection, timeoutMs: number): void {
    if (this.probing === connection || this.current !== connection || !connection.isOpen) return;
    this.probing = connection;
    connection.request({ op: Op.PING }, { timeoutMs }).then(
      () => this.probeEnded(connection, undefined, timeoutMs),
      (error: unknown) => this.probeEnded(connection, error, timeoutMs),
    );
  }

  private probeEnded(connection: Connection, error: unknown, timeoutMs: number): void {
    if (this.probing === connection) this.probing = undefined;
    const unanswered = error instanceof DstoreError && error.code === ErrorCode.TIMEOUT;
    if (!unanswered || this.current !== connection) return;
    connection.destroy(
      new DstoreError(
        ErrorCode.CONNECTION_CLOSED,
        `${this.address} did not answer a PING within ${timeoutMs} ms after a request timed out: closed as unresponsive`,
      ),
    );
  }

  private onConnectionClosed(connection: Connection, error: Error | undefined): void {
    if (this.current !== connection) return;
    const duringHandshake = !this.ready;
    this.current = undefined;
    this.ready = false;
    const reason =
      error ?? new DstoreError(ErrorCode.CONNECTION_CLOSED, `${this.address} closed the connection`);
    this.emit('close', error);
    // Closed before the HELLO answer (another protocol on the port, a refusal): say why before
    // 'reconnecting' or 'end', whose listeners read the last error; the handshake's own failure,
    // which settles later, is then not said again.
    if (duringHandshake && error !== undefined && !this.stopped) {
      this.reportedClose = connection;
      this.emitError(error);
    }
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
