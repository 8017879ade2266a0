/**
 * The JOINs a balancer refused lately, for `/ring` and `dstore status`: a node refused for its
 * identity or its data (another live node under its id, a removed identity, another cluster's
 * data, too little room for its share) is in no ring, and without this list the operator would
 * see an empty ring and have to find the reason in the logs of the node or the balancer.
 *
 * @packageDocumentation
 */
import { type DstoreError, ErrorCode } from '@dstore/protocol';

/** A refused JOIN as `/ring` shows it (`refusedJoins`). */
export interface RefusedJoinView {
  readonly node: string;
  /** The address the node announced (`host:port`). */
  readonly address: string;
  /** IDENTITY_CONFLICT, MEMBER_REMOVED, CLUSTER_MISMATCH or OUT_OF_SPACE. */
  readonly code: string;
  /** The refusal, with what to do. */
  readonly message: string;
  /** JOINs refused so far while listed. */
  readonly count: number;
  /** When the last one was refused (ISO 8601). */
  readonly lastAt: string;
}

/** The refusals that no retry fixes by itself: the operator has to act. */
const LISTED_CODES: ReadonlySet<string> = new Set([
  ErrorCode.IDENTITY_CONFLICT,
  ErrorCode.MEMBER_REMOVED,
  ErrorCode.CLUSTER_MISMATCH,
  ErrorCode.OUT_OF_SPACE,
]);

/** Listed refusals that a JOIN of the same node id from another address ends. */
const SUPERSEDED_BY_A_JOIN: ReadonlySet<string> = new Set([
  ErrorCode.CLUSTER_MISMATCH,
  ErrorCode.OUT_OF_SPACE,
]);

/** How long a refusal stays listed after its last JOIN: a refused node retries every few seconds. */
const LISTED_FOR_MS = 60_000;

/** Most refusals listed: JOINs under ever new ids must not grow the list without bound. */
const MAX_LISTED = 64;

/** The refused JOINs of the last minute, one entry per node id and address. */
export class JoinRefusals {
  private readonly entries = new Map<string, RefusedJoinView & { readonly lastMs: number }>();

  /**
   * Records `error` as the answer to `node`'s JOIN from `address`, when it is a listed refusal.
   * Returns how many JOINs of that node at that address were refused while listed (this one
   * included), 0 for a refusal that is not listed.
   */
  refused(node: string, address: string, error: DstoreError, nowMs = Date.now()): number {
    if (!LISTED_CODES.has(error.code)) return 0;
    const key = `${node}\u0000${address}`;
    const previous = this.entries.get(key);
    this.entries.delete(key);
    this.entries.set(key, {
      node,
      address,
      code: error.code,
      message: error.message,
      count: (previous?.count ?? 0) + 1,
      lastAt: new Date(nowMs).toISOString(),
      lastMs: nowMs,
    });
    // Oldest first (re-inserted on every refusal): drop from the front.
    while (this.entries.size > MAX_LISTED) this.entries.delete(this.entries.keys().next().value as string);
    return (previous?.count ?? 0) + 1;
  }

  /**
   * `node` from `address` joined: its refusals there are over, and so are its refusals elsewhere
   * for its data or its room (the node restarted on another port with a fresh data dir, a larger
   * memory cap). Identity refusals elsewhere stay: they are another process under its id.
   */
  accepted(node: string, address: string): void {
    for (const [key, entry] of this.entries) {
      if (entry.node !== node) continue;
      if (entry.address === address || SUPERSEDED_BY_A_JOIN.has(entry.code)) this.entries.delete(key);
    }
  }

  /** The refusals of the last minute, oldest first. */
  list(nowMs = Date.now()): RefusedJoinView[] {
    const listed: RefusedJoinView[] = [];
    for (const [key, { lastMs, ...view }] of this.entries) {
      if (nowMs - lastMs > LISTED_FOR_MS) this.entries.delete(key);
      else listed.push(view);
    }
    return listed;
  }
}
