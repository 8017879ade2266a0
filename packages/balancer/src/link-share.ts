import { type DstoreError, ErrorCode } from '@dstore/protocol';
import { stacklessError } from '@dstore/protocol/internal';

/**
 * One client connection's requests in flight on each node, indexed by the node's
 * {@link LinkShares} index: the `linkShare` array of the client's native `Connection` or of its
 * RESP connection, carried to the router by its `Replier`. An array, so the hot path reads a
 * count by index and never looks a client up in a map.
 */
export type ClientShare = number[];

/**
 * Indices given to nodes: each live {@link LinkShares} holds one; a closed node's goes back to
 * the pool once nothing is counted on it, so clients' arrays stay as long as the most nodes the
 * balancer had at once, not as many as it ever had.
 */
const freeIndices: number[] = [];
let nextIndex = 0;

/**
 * Each client connection's fair share of one node's in-flight slots (its two links and the
 * requests it holds, `--max-in-flight` each): without it one client pipelining on many connections
 * towards a stalled node took every slot, and every other client got BUSY even for healthy keys.
 *
 * The rule. Below half of `max` client requests on the node, every request is admitted (no division
 * on the hot path). Past half, a connection that has requests on the node may add one only while
 *
 * - it has fewer than `max / (n + 1)` of them, `n` the connections with requests on the node (itself
 *   among them): its share, the `+ 1` keeping a share's room for a connection yet to come; and
 * - the node keeps that share free: fewer than `max - max / (n + 1)` client requests on it. The
 *   shares alone do not bound the total when connections arrive one after the other (the first
 *   took `max/2`, the second `max/3`, ...: the sum grows without bound), so late comers would still
 *   find the link full until the early ones' requests ended; with the reserve the total stays
 *   below `max` and the early ones come down to the new share as their requests end.
 *
 * A connection with no request on the node is always admitted (up to the link's own hard bound):
 * the reserve is for it. Internal requests (migration, heartbeats, STATS, scans) have no share and
 * are not counted: they are few and must not be refused because clients are busy. A refusal is
 * BUSY, not executed (retryable), naming this connection's share.
 *
 * Counts are taken when the node accepts a client request (sent or held) and given back exactly
 * once when it settles: its answer, its error or deadline, the link closing, or a refusal.
 */
export class LinkShares {
  /** This node's position in every {@link ClientShare}; -1 once retired (closed, nothing counted). */
  private index: number;
  /** Client requests counted on the node. */
  private requests = 0;
  /** Client connections with at least one counted request on the node. */
  private clients = 0;
  private closed = false;

  constructor(
    private readonly nodeId: string,
    /** The node link's in-flight bound (`--max-in-flight`). */
    private readonly max: number,
  ) {
    this.index = freeIndices.pop() ?? nextIndex++;
  }

  /** Client requests counted on the node now. */
  get inFlight(): number {
    return this.requests;
  }

  /** Client connections with requests counted on the node now. */
  get connections(): number {
    return this.clients;
  }

  /**
   * Counts a request of `client` on the node, or refuses it (BUSY) past the client's share. Every
   * admitted request must be {@link release}d exactly once.
   */
  acquire(client: ClientShare): DstoreError | undefined {
    const index = this.index;
    // A retired node (closed) forwards nothing: its links refuse, so there is nothing to share.
    if (index < 0) return undefined;
    while (client.length <= index) client.push(0);
    const own = client[index]!;
    // The division only past half: most requests never reach it.
    if (own > 0 && this.requests * 2 > this.max) {
      const share = this.max / (this.clients + 1);
      if (own >= share || this.requests >= this.max - share) {
        return stacklessError(
          ErrorCode.BUSY,
          `this connection has ${own} of the ${this.requests} requests in flight to node ${this.nodeId} (its share: ${Math.ceil(share)} of ${this.max})`,
          { notExecuted: true },
        );
      }
    }
    client[index] = own + 1;
    if (own === 0) this.clients++;
    this.requests++;
    return undefined;
  }

  /** Gives back a request {@link acquire} admitted. */
  release(client: ClientShare): void {
    const index = this.index;
    if (index < 0) return;
    const own = client[index]! - 1;
    client[index] = own;
    if (own === 0) this.clients--;
    if (--this.requests === 0 && this.closed) this.retire();
  }

  /** The node is gone: its index is reused once nothing is counted on it. */
  close(): void {
    this.closed = true;
    if (this.requests === 0) this.retire();
  }

  private retire(): void {
    if (this.index < 0) return;
    freeIndices.push(this.index);
    this.index = -1;
  }
}
