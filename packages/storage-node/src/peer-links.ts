import {
  Connection,
  type Credentials,
  connectSocket,
  DstoreError,
  ErrorCode,
  handshake,
  type ProtocolLimits,
  type Request,
  type TlsClientOptions,
} from '@dstore/protocol';
import { unmappedAddress } from '@dstore/protocol/internal';
import type { Ownership } from './ownership.js';

/** How a node reaches its peers (migration targets, old owners, chain successors). */
export interface PeerLinkOptions {
  /** What the node proves to its peers: the cluster secret (undefined: nothing). */
  readonly credentials: Credentials | undefined;
  /** TLS to the peers (this node's certificate, the cluster CA). Default: plaintext. */
  readonly tls?: TlsClientOptions | undefined;
  /** Default deadline of a request on the link, in ms (a request may set its own). */
  readonly requestTimeoutMs: number;
}

/**
 * How a node serves the requests its peers send on the links it opened (one connection per pair
 * of nodes, used in both directions: a node's REPLICATE to a peer and its REPLICATED answers to
 * that peer leave in one write).
 */
export interface PeerServing {
  /** This node's id, sent in HELLO (`node`) so that the peer may use the connection for its requests. */
  readonly self: () => string;
  /** Serves a request of the peer (the node's request handler). */
  readonly onRequest: (request: Request, connection: Connection) => void;
  /**
   * Why the peer at the other end may not be served, checked before the handshake (TLS verified
   * against the cluster CA; without a cluster secret, protected mode wants loopback), or
   * undefined; the handshake itself proves the cluster secret when there is one. The same bar as
   * for a peer that connects to this node (`Authenticator.peerRefusal`).
   */
  readonly refusal: (connection: Connection) => string | undefined;
  /** The node's protocol limits, enforced on the requests served (as on its server's connections). */
  readonly limits?: Partial<ProtocolLimits> | undefined;
  /** Most bytes waiting to be written on the connection (the node's `maxOutputBytes`). */
  readonly maxOutputBytes?: number | undefined;
}

/** The principal of a peer node whose requests are served on a link this node opened. */
const PEER_NODE = { kind: 'peer', role: 'node' } as const;

/**
 * Opens an authenticated node-to-node connection to `target` at host:port and checks that the
 * peer answering there is `target` (a stale address must never receive another node's keys).
 * With `serving`, the node also serves the peer's requests on it, once the handshake proved who
 * the peer is, and tells the peer so (HELLO's `node`); requests that arrive before the handshake
 * ends wait for it.
 */
export async function connectPeer(
  target: { readonly id: string; readonly host: string; readonly port: number },
  options: PeerLinkOptions,
  serving?: PeerServing,
): Promise<Connection> {
  const socket = await connectSocket({
    host: target.host,
    port: target.port,
    connectTimeoutMs: 5000,
    tls: options.tls,
  });
  // Served once the handshake proved the peer; until then its requests wait here (it may send one
  // as soon as it has answered our AUTH, before our handshake's continuation runs).
  let trusted = false;
  let early: Request[] | undefined = [];
  const serve = (request: Request, from: Connection): void => {
    if (trusted) serving?.onRequest(request, from);
    else if (early !== undefined) early.push(request);
    else from.replyError(request.id, ErrorCode.UNAUTHORIZED, 'this link does not take requests');
  };
  const connection = new Connection(socket, {
    requestTimeoutMs: options.requestTimeoutMs,
    ...(serving === undefined
      ? {}
      : {
          onRequest: serve,
          bothWays: true,
          ...(serving.limits === undefined ? {} : { limits: serving.limits }),
          ...(serving.maxOutputBytes === undefined ? {} : { maxOutputBytes: serving.maxOutputBytes }),
        }),
  });
  const serves = serving !== undefined && serving.refusal(connection) === undefined;
  try {
    const hello = await handshake(connection, 'node', {
      credentials: options.credentials,
      node: serves ? serving.self() : undefined,
    });
    if (hello.serverId !== target.id) {
      throw new DstoreError(
        ErrorCode.UNAVAILABLE,
        `${target.host}:${target.port} answers as ${hello.serverId}, not ${target.id}`,
      );
    }
  } catch (error) {
    connection.destroy();
    throw error;
  }
  if (serving !== undefined) {
    const waiting = early ?? [];
    early = undefined;
    if (serves) {
      connection.principal = PEER_NODE;
      trusted = true;
    }
    for (const request of waiting) {
      try {
        serve(request, connection);
      } catch (error) {
        connection.replyError(request.id, ErrorCode.INTERNAL, (error as Error).message);
      }
    }
  }
  return connection;
}

/**
 * One long-lived connection per peer node, by id: opened on first use at the address the latest
 * RING gives, or the one the peer opened to this node and offered (HELLO's `node`, {@link adopt}),
 * dropped when it closes or fails to open (the next use opens another). Shared by the PULLs of a
 * migration and the REPLICATE forwards of replication, and used in both directions: this node's
 * requests to the peer and the peer's requests to this node travel on the same connection, so a
 * REPLICATE and the REPLICATED answers to the same peer leave in one write, and the peer gets one
 * wake-up for both. When both nodes opened one at once, the connection the node with the smaller
 * id opened is kept on both sides (the other stays open, unused by new requests, until it closes).
 */
export class PeerLinks {
  private readonly links = new Map<string, Promise<Connection>>();
  /** The connection each link of {@link links} opened (or adopted), once it did. */
  private readonly opened = new Map<string, Connection>();
  /** The links the peer opened (adopted): a newer one from the same peer replaces them. */
  private readonly adopted = new WeakSet<Promise<Connection>>();
  private closed = false;

  constructor(
    private readonly ownership: Ownership,
    private readonly options: PeerLinkOptions,
    /** How the node serves its peers' requests on the links it opens; omitted: it does not. */
    private readonly serving?: PeerServing,
  ) {}

  /** The link to node `id`; rejects with UNAVAILABLE when its address is unknown or it cannot be reached. */
  get(id: string): Promise<Connection> {
    const existing = this.links.get(id);
    if (existing !== undefined) return existing;
    const address = this.ownership.addressOf(id);
    if (address === undefined || this.closed) {
      return Promise.reject(new DstoreError(ErrorCode.UNAVAILABLE, `no address known for ${id}`));
    }
    const link = connectPeer({ id, host: address.host, port: address.port }, this.options, this.serving);
    this.links.set(id, link);
    link.then(
      (connection) => {
        if (this.links.get(id) === link) this.opened.set(id, connection);
        connection.once('close', () => this.forget(id, link));
      },
      () => this.forget(id, link),
    );
    return link;
  }

  /**
   * The open connection of the link to `id`, if there is one now (no wait, no connect): a stream
   * of forwards checks it before each send, so it moves to a link adopted meanwhile.
   */
  current(id: string): Connection | undefined {
    const connection = this.opened.get(id);
    return connection?.isOpen === true ? connection : undefined;
  }

  /**
   * A peer node `id` that connected to this node and proved it is a node (the caller checked its
   * principal) offers its connection for this node's requests too (HELLO's `node`). Taken unless
   * this node has its own link to `id` and the smaller id is this node's (both sides then keep
   * the connection the smaller id opened, whichever order the HELLOs crossed in); a link `id`
   * offered before is replaced (the peer opens a new one only once it gave up the old one).
   * Only from the host the ring gives for `id`: a process holding the cluster secret that is not
   * `id` (a leaked secret) must not receive `id`'s forwards and answer them in its place, so a
   * claim from another address, or for a member whose ring host is a name rather than an address,
   * is not taken (the two nodes then keep a connection each way).
   */
  adopt(id: string, connection: Connection): void {
    if (this.closed || !connection.isOpen || id === this.ownership.self) return;
    const address = this.ownership.addressOf(id);
    if (address === undefined || !sameAddress(address.host, connection.socket.remoteAddress)) return;
    const existing = this.links.get(id);
    if (existing !== undefined && !this.adopted.has(existing) && this.ownership.self < id) return;
    connection.useBothWays();
    const link = Promise.resolve(connection);
    this.adopted.add(link);
    this.links.set(id, link);
    this.opened.set(id, connection);
    connection.once('close', () => this.forget(id, link));
  }

  /** Peer requests being served on the links (a stopping node waits for them, as for its server's). */
  get servingRequests(): number {
    let serving = 0;
    for (const connection of this.opened.values()) serving += connection.serving;
    return serving;
  }

  private forget(id: string, link: Promise<Connection>): void {
    if (this.links.get(id) !== link) return;
    this.links.delete(id);
    this.opened.delete(id);
  }

  /**
   * Forgets the link to `id` (it failed): the next {@link get} opens another. With `only`, only
   * when the current link is that connection (a failure seen on an older connection must not close
   * its replacement).
   */
  drop(id: string, only?: Connection): void {
    const link = this.links.get(id);
    if (link === undefined) return;
    if (only !== undefined && this.opened.get(id) !== only) return;
    this.opened.delete(id);
    this.links.delete(id);
    link.then(
      (connection) => connection.destroy(),
      () => undefined,
    );
  }

  /** Closes every link (node shutdown); later {@link get}s are refused. */
  close(): void {
    this.closed = true;
    for (const id of [...this.links.keys()]) this.drop(id);
  }
}

/** Whether `remote` (a socket's peer address) is the IP address `host`; an IPv4-mapped IPv6 address counts as its IPv4 one. */
function sameAddress(host: string, remote: string | undefined): boolean {
  if (remote === undefined) return false;
  return unmappedAddress(remote) === host || remote === host;
}
