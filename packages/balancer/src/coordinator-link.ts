import {
  type Credentials,
  DstoreError,
  ErrorCode,
  type HeartbeatRequest,
  type JoinRequest,
  type LeaveRequest,
  PeerLink,
  type Response,
  type TlsClientOptions,
  type WithoutId,
} from '@dstore/protocol';

/** How a balancer names itself as a candidate for the map's writer: `<id>@<host>:<port>`. */
export function candidateName(id: string, host: string, port: number): string {
  return `${id}@${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The client address in a candidate name, or undefined when it carries none. */
export function candidateAddress(name: string): { host: string; port: number } | undefined {
  const at = name.lastIndexOf('@');
  const colon = name.lastIndexOf(':');
  if (at < 0 || colon <= at) return undefined;
  let host = name.slice(at + 1, colon);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(name.slice(colon + 1));
  if (host === '' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host, port };
}

/** Options of a {@link CoordinatorLink}. */
export interface CoordinatorLinkOptions {
  /** The coordinator's candidate name as the map store last observed it. */
  readonly coordinator: () => string | undefined;
  /** This balancer's own candidate name (never forward to ourselves). */
  readonly self: () => string | undefined;
  /** What this balancer proves to the coordinator: the cluster secret (undefined: nothing). */
  readonly credentials: Credentials | undefined;
  readonly connectTimeoutMs: number;
  /** TLS to the coordinator, as to the nodes. Undefined: plaintext. */
  readonly tls?: TlsClientOptions | undefined;
}

/**
 * A follower balancer's link to the map's writer (the coordinator): JOIN and LEAVE that nodes
 * send to a follower are forwarded there, so the map keeps exactly one writer (and, with a
 * replication factor above 1, HEARTBEAT: the writer alone grants leases and detects failures). One PeerLink,
 * replaced when the coordinator changes; its address comes from the election (a peer), never from
 * a client.
 */
export class CoordinatorLink {
  private link: PeerLink | undefined;
  private linkedTo: string | undefined;

  constructor(private readonly options: CoordinatorLinkOptions) {}

  /**
   * Forwards a JOIN, a LEAVE or (replication: the coordinator grants the leases) a HEARTBEAT;
   * fails with UNAVAILABLE when no coordinator is known or reachable.
   */
  async forward(
    message: WithoutId<JoinRequest> | WithoutId<LeaveRequest> | WithoutId<HeartbeatRequest>,
    timeoutMs: number,
  ): Promise<Response> {
    const link = await this.current();
    return link.request(message, { timeoutMs });
  }

  /** Closes the link. */
  async close(): Promise<void> {
    const link = this.link;
    this.link = undefined;
    this.linkedTo = undefined;
    await link?.close();
  }

  private async current(): Promise<PeerLink> {
    const name = this.options.coordinator();
    if (name === undefined || name === this.options.self()) {
      throw new DstoreError(ErrorCode.UNAVAILABLE, 'no coordinator balancer is elected yet: retry shortly');
    }
    if (this.link !== undefined && this.linkedTo === name) return this.link;
    const address = candidateAddress(name);
    if (address === undefined) {
      throw new DstoreError(
        ErrorCode.UNAVAILABLE,
        `the coordinator '${name}' names no address to forward to`,
      );
    }
    await this.close();
    const link = new PeerLink({
      host: address.host,
      port: address.port,
      role: 'balancer',
      connectTimeoutMs: this.options.connectTimeoutMs,
      tls: this.options.tls,
      backoff: { initialDelayMs: 50, maxDelayMs: 1000 },
      credentials: this.options.credentials,
    });
    link.on('error', () => undefined);
    this.link = link;
    this.linkedTo = name;
    link.start();
    // Not ready in time: the request that follows fails fast with UNAVAILABLE.
    await link.whenReady(this.options.connectTimeoutMs);
    return link;
  }
}
