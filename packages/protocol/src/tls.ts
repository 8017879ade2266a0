import { readFile } from 'node:fs/promises';
import { isIP, type Socket } from 'node:net';
import {
  type ConnectionOptions,
  createServer as createTlsServer,
  TLSSocket,
  type Server as TlsServer,
  connect as tlsConnect,
} from 'node:tls';
import { DstoreError, ErrorCode } from './errors.js';
import { type PendingSocket, PendingSockets } from './pending-sockets.js';

/** PEM text or bytes, or several of them (a chain, several CAs), as `node:tls` takes them. */
export type PemInput = string | Buffer | (string | Buffer)[];

/**
 * TLS of a listening port ({@link FrameServer}, the admin HTTPS server). The server always asks
 * the peer for a certificate but never requires one: clients without a certificate connect, and
 * whether a peer presented one signed by `ca` is told by {@link Connection.tlsPeerVerified}.
 */
export interface TlsServerOptions {
  /** This process's certificate (PEM), with its chain. */
  readonly cert: PemInput;
  /** The private key of `cert` (PEM). */
  readonly key: PemInput;
  /** CA certificates that client certificates are verified against. Default: none (no peer verifies). */
  readonly ca?: PemInput;
  /**
   * Longest time from accepting a socket to a completed TLS handshake (the first byte included),
   * in ms: a socket that says nothing, or stalls in the handshake, is closed. Default 10000.
   */
  readonly handshakeTimeoutMs?: number;
}

/** TLS of an outgoing connection: the fields and defaults of `tls.connect` (and ioredis's `tls`). */
export interface TlsClientOptions {
  /** CA certificates the server is verified against. Default: Node's bundled public CAs. */
  readonly ca?: PemInput;
  /** Client certificate (PEM) for servers that check one (mutual TLS between peers). Default: none. */
  readonly cert?: PemInput;
  /** The private key of `cert`. */
  readonly key?: PemInput;
  /** Server name for SNI and certificate verification. Default: the host when it is a name (not an IP). */
  readonly servername?: string;
  /** Refuse a server whose certificate does not verify. Default true; false only for tests. */
  readonly rejectUnauthorized?: boolean;
}

/**
 * TLS of a cluster peer (a balancer or a storage node): one certificate serves its own port and is
 * its client certificate when it dials other peers, which it verifies against `ca`.
 */
export type PeerTlsOptions = TlsServerOptions;

/** The options a peer dials other peers with: its own certificate as client certificate, its CA. */
export function peerClientTls(tls: PeerTlsOptions): TlsClientOptions {
  return tls.ca === undefined
    ? { cert: tls.cert, key: tls.key }
    : { ca: tls.ca, cert: tls.cert, key: tls.key };
}

/** First byte of a TLS record carrying a handshake message: how every ClientHello starts. */
export const TLS_HANDSHAKE_RECORD = 0x16;

/** The message a plaintext connection to a TLS port gets (ERROR `TLS_REQUIRED`, id 0) before it is closed. */
export const TLS_REQUIRED_MESSAGE = 'this port requires TLS: connect with dstores:// or --tls-ca';

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** File paths of a certificate, its key and a CA bundle, as the CLIs' `--tls-*` flags give them. */
export interface TlsFiles {
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly ca?: string | undefined;
}

/** The PEM contents of {@link TlsFiles}: a field is present exactly when its path was given. */
export interface TlsMaterial {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
}

/**
 * Reads the files of `--tls-cert`, `--tls-key` and `--tls-ca` (the one reader every CLI uses).
 * Undefined when no path is given; INVALID_ARGUMENT when a file cannot be read or only one of
 * cert and key is given.
 */
export async function readTlsFiles(files: TlsFiles): Promise<TlsMaterial | undefined> {
  if (files.cert === undefined && files.key === undefined && files.ca === undefined) return undefined;
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, '--tls-cert and --tls-key go together: give both');
  }
  const material: TlsMaterial = {};
  for (const name of ['cert', 'key', 'ca'] as const) {
    const path = files[name];
    if (path === undefined) continue;
    try {
      material[name] = await readFile(path);
    } catch (error) {
      throw new DstoreError(
        ErrorCode.INVALID_ARGUMENT,
        `cannot read --tls-${name} ${path}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }
  return material;
}

/**
 * The TLS of a peer's CLI: undefined without `--tls-*` flags; INVALID_ARGUMENT when they do not
 * name a certificate and key (a peer serves TLS with them, so a CA alone is not enough).
 */
export async function readPeerTlsFiles(files: TlsFiles): Promise<PeerTlsOptions | undefined> {
  const material = await readTlsFiles(files);
  if (material === undefined) return undefined;
  const { cert, key, ca } = material;
  if (cert === undefined || key === undefined) {
    throw new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      '--tls-ca needs --tls-cert and --tls-key: a peer serves TLS with its own certificate',
    );
  }
  return ca === undefined ? { cert, key } : { cert, key, ca };
}

/** OpenSSL's errors for a peer whose answer is no TLS record (a plaintext server's bytes). */
const PLAINTEXT_PEER_CODES: ReadonlySet<string> = new Set([
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'ERR_SSL_RECORD_LAYER_FAILURE',
]);

/**
 * Opens a TLS connection and resolves once the handshake is done (the server verified unless
 * `rejectUnauthorized` is false). Fails with UNAVAILABLE naming the TLS cause (for example a
 * certificate that does not verify) and with TIMEOUT when connect plus handshake take longer
 * than `timeoutMs`. Used by `connectSocket`, never directly.
 */
export function connectTls(
  address: { readonly host: string; readonly port: number },
  options: TlsClientOptions,
  timeoutMs: number,
): Promise<TLSSocket> {
  const { host, port } = address;
  return new Promise<TLSSocket>((resolve, reject) => {
    // Node takes the SNI name from a host name itself; an IP address is no SNI name.
    const servername = options.servername ?? (isIP(host) === 0 ? host : undefined);
    const connectOptions: ConnectionOptions & { allowHalfOpen: boolean } = {
      host,
      port,
      // Half-open as plaintext sockets: Node's tls.connect honours it, its types omit it.
      allowHalfOpen: true,
      ...(options.ca === undefined ? {} : { ca: options.ca }),
      ...(options.cert === undefined ? {} : { cert: options.cert }),
      ...(options.key === undefined ? {} : { key: options.key }),
      ...(servername === undefined ? {} : { servername }),
      rejectUnauthorized: options.rejectUnauthorized ?? true,
    };
    const socket = tlsConnect(connectOptions);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new DstoreError(
          ErrorCode.TIMEOUT,
          `TLS connect to ${host}:${port} timed out after ${timeoutMs} ms (TCP connect and handshake)`,
        ),
      );
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error: Error & { code?: string }) => {
      clearTimeout(timer);
      socket.destroy();
      const code = error.code === undefined ? '' : ` (${error.code})`;
      // What a plaintext server's first bytes look like to a TLS client: say so, not only OpenSSL's words.
      const plaintext = PLAINTEXT_PEER_CODES.has(error.code ?? '')
        ? ': the peer did not answer in TLS (is this a plaintext port? connect without TLS, dstore:// instead of dstores://, or start that server with --tls-cert)'
        : '';
      reject(
        new DstoreError(
          ErrorCode.UNAVAILABLE,
          `TLS connection to ${host}:${port} failed${plaintext}: ${error.message.trim()}${code}`,
          {
            cause: error,
          },
        ),
      );
    });
  });
}

/** Whether the peer of `socket` presented a certificate that verified against the server's CA. */
export function isTlsPeerVerified(socket: Socket): boolean {
  if (!(socket instanceof TLSSocket) || !socket.authorized) return false;
  // A resumed TLS 1.3 session reports `authorized` although no certificate was presented, in it
  // or in the session it resumes (a ticket from any certificate-less connection would do): the
  // certificate itself must be there.
  const certificate = socket.getPeerCertificate();
  return certificate !== null && Object.keys(certificate).length > 0;
}

/** How many sockets a {@link TlsGate} holds before they are secure: in all, and from one address. */
export interface TlsGateLimits {
  readonly pending: number;
  readonly pendingPerAddress: number;
}

/**
 * The TLS door of a {@link FrameServer}: looks at the first byte of each accepted socket and
 * either runs the TLS handshake (a ClientHello) or hands the socket back as plaintext (anything
 * else), so the server can tell a plaintext client why it is refused instead of leaving it
 * waiting. A socket is bounded by `handshakeTimeoutMs` from accept to secure, once for the first
 * byte and once for the handshake. At most `limits.pending` sockets are between the two at once,
 * `limits.pendingPerAddress` from one address; a new socket past either evicts the oldest one
 * (silent ones before those in their handshake), as the server does with connections that have
 * not authenticated, so that sockets opened and left silent cannot keep clients and nodes out.
 */
export class TlsGate {
  private readonly server: TlsServer;
  private readonly timeoutMs: number;
  /** Accepted sockets not yet secure, oldest first, by `address:port` (the TLS socket has the same remote). */
  private readonly pending = new PendingSockets<string, PendingSocket>();

  constructor(
    options: TlsServerOptions,
    private readonly limits: TlsGateLimits,
    private readonly onSecure: (socket: TLSSocket) => void,
    private readonly onPlaintext: (socket: Socket) => void,
  ) {
    this.timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    // Never listens: sockets are handed to it once their first byte says TLS. It asks for a
    // client certificate without requiring one, so `authorized` tells verified peers apart.
    this.server = createTlsServer({
      cert: options.cert,
      key: options.key,
      ...(options.ca === undefined ? {} : { ca: options.ca }),
      requestCert: true,
      rejectUnauthorized: false,
      handshakeTimeout: this.timeoutMs,
      allowHalfOpen: true,
    });
    this.server.on('secureConnection', (socket) => {
      this.pending.delete(remoteOf(socket));
      this.onSecure(socket);
    });
    // A failed handshake (bad certificate, timeout, garbage) destroys the socket: nothing to tell.
    this.server.on('tlsClientError', (_error, socket) => socket.destroy());
  }

  /** Sockets accepted and not yet secure. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Takes a freshly accepted socket through the sniff and the handshake. */
  admit(socket: Socket): void {
    const address = socket.remoteAddress ?? '';
    if (this.pending.size >= this.limits.pending) this.evictOldest(undefined);
    if (this.pending.countFrom(address) >= this.limits.pendingPerAddress) this.evictOldest(address);
    const remote = remoteOf(socket);
    const gated: PendingSocket = { socket, address };
    this.pending.add(remote, gated);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      if (this.pending.get(remote) === gated) this.pending.delete(remote);
    });
    const timer = setTimeout(() => socket.destroy(), this.timeoutMs);
    timer.unref();
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer);
      socket.pause();
      if (chunk[0] === TLS_HANDSHAKE_RECORD) {
        // Put the ClientHello back: the TLS socket reads it first.
        socket.unshift(chunk);
        this.server.emit('connection', socket);
        return;
      }
      // What a plaintext client sent is dropped unread: the refusal is all it gets.
      this.pending.delete(remote);
      this.onPlaintext(socket);
    });
  }

  /** Destroys every socket still in the sniff or the handshake. */
  destroyPending(): void {
    for (const [, { socket }] of this.pending) socket.destroy();
    this.pending.clear();
  }

  /** Makes room for a new socket (see {@link PendingSockets.toEvict}): destroys the one it names. */
  private evictOldest(address: string | undefined): void {
    const victim = this.pending.toEvict(address);
    if (victim === undefined) return;
    this.pending.delete(victim.key)?.socket.destroy();
  }
}

function remoteOf(socket: Socket): string {
  return `${socket.remoteAddress}:${socket.remotePort}`;
}
