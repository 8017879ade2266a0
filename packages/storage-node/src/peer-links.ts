import {
  Connection,
  type Credentials,
  connectSocket,
  DstoreError,
  ErrorCode,
  handshake,
  type TlsClientOptions,
} from '@dstore/protocol';
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
 * Opens an authenticated node-to-node connection to `target` at host:port and checks that the
 * peer answering there is `target` (a stale address must never receive another node's keys).
 */
export async function connectPeer(
  target: { readonly id: string; readonly host: string; readonly port: number },
  options: PeerLinkOptions,
): Promise<Connection> {
  const socket = await connectSocket({
    host: target.host,
    port: target.port,
    connectTimeoutMs: 5000,
    tls: options.tls,
  });
  const connection = new Connection(socket, { requestTimeoutMs: options.requestTimeoutMs });
  try {
    const hello = await handshake(connection, 'node', { credentials: options.credentials });
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
  return connection;
}

/**
 * One long-lived connection per peer node, by id, at the address the latest RING gives: opened on
 * first use, dropped when it closes or fails to open (the next use opens another). Shared by the
 * PULLs of a migration and the REPLICATE forwards of replication, so a node keeps one link per peer.
 */
export class PeerLinks {
  private readonly links = new Map<string, Promise<Connection>>();
  /** The connection each link of {@link links} opened, once it did. */
  private readonly opened = new Map<string, Connection>();
  private closed = false;

  constructor(
    private readonly ownership: Ownership,
    private readonly options: PeerLinkOptions,
  ) {}

  /** The link to node `id`; rejects with UNAVAILABLE when its address is unknown or it cannot be reached. */
  get(id: string): Promise<Connection> {
    const existing = this.links.get(id);
    if (existing !== undefined) return existing;
    const address = this.ownership.addressOf(id);
    if (address === undefined || this.closed) {
      return Promise.reject(new DstoreError(ErrorCode.UNAVAILABLE, `no address known for ${id}`));
    }
    const link = connectPeer({ id, host: address.host, port: address.port }, this.options);
    this.links.set(id, link);
    link.then(
      (connection) => {
        if (this.links.get(id) === link) this.opened.set(id, connection);
        connection.once('close', () => {
          if (this.links.get(id) === link) {
            this.links.delete(id);
            this.opened.delete(id);
          }
        });
      },
      () => {
        if (this.links.get(id) === link) this.links.delete(id);
      },
    );
    return link;
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
