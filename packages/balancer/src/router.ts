import {
  type Connection,
  type DelRequest,
  DstoreError,
  ErrorCode,
  type ExistsRequest,
  type GetRequest,
  type KeyValue,
  type MGetRequest,
  type MSetRequest,
  Op,
  type Response,
  type SetRequest,
} from '@dstore/protocol';
import {
  copyKeyed,
  type DataRequest,
  isSingleKeyRead,
  type KeyedRequest,
  partlyApplied,
  stacklessError,
  withEpoch,
} from '@dstore/protocol/internal';
import type { ClusterNode } from './cluster-node.js';
import type { ClientShare } from './link-share.js';
import type { Membership } from './membership.js';
import type { BalancerMetrics } from './metrics.js';
import type { Topology } from './topology.js';

/**
 * Where the router sends a client's answer: the client's native connection, or any front door
 * that turns answers into its own protocol (the RESP port) by implementing these two methods;
 * `linkShare` is the client connection's count of requests in flight to each node, which its
 * requests are admitted against (see `link-share.ts`). Required, so that every replier a front
 * door builds for a client's command says whose share it uses.
 */
export type Replier = Pick<Connection, 'reply' | 'replyError' | 'linkShare'>;

/** A request for exactly one key. */
export type SingleKeyRequest = GetRequest | SetRequest | DelRequest;

/**
 * A single-key data-model request as a client sent it (SET_WITH, EXPIRE, TTL, GETDEL, INCRBY, SETRANGE): see
 * {@link Router.forwardKeyed}.
 */
export type KeyedClientRequest = KeyedRequest & { readonly id: number };

/**
 * The node's answer re-labelled with the client's request id. Built field by field so value bytes
 * are never copied (they stay views into the node's socket chunk until encoded for the client).
 */
export function withRequestId(response: Response, id: number): Response {
  switch (response.op) {
    case Op.VALUE:
      return { op: Op.VALUE, id, value: response.value };
    case Op.OK:
      return { op: Op.OK, id };
    case Op.COUNT:
      return { op: Op.COUNT, id, count: response.count };
    case Op.VALUES:
      return { op: Op.VALUES, id, values: response.values };
    default:
      return { ...response, id };
  }
}

function errorCodeOf(error: unknown): string {
  return error instanceof DstoreError ? error.code : ErrorCode.INTERNAL;
}

function downError(node: ClusterNode | undefined): DstoreError {
  if (node === undefined) return stacklessError(ErrorCode.UNAVAILABLE, 'the ring has no nodes');
  const why = node.identityMismatch
    ? `answers as '${node.identityMismatch}'`
    : node.link.isReady
      ? 'missed its heartbeats'
      : 'is not connected';
  return stacklessError(ErrorCode.UNAVAILABLE, `node ${node.id} (${node.address}) is down: it ${why}`);
}

function countOf(response: Response): number {
  return response.op === Op.COUNT ? response.count : 0;
}

/** `message` fenced with the epoch of the ring `topology` routes on. */
function fenced(message: DataRequest, topology: Topology): DataRequest {
  return withEpoch(message, topology.epoch);
}

/** A node refused because the request was routed on another ring epoch (the fence). */
function isFenceRefusal(error: unknown): error is DstoreError {
  return error instanceof DstoreError && error.code === ErrorCode.STALE_EPOCH;
}

/**
 * A node refused a request for routing reasons, before executing it: NOT_OWNER (it has a ring
 * this balancer has not switched to yet) or STALE_EPOCH (the fence). Retried once, after catching up.
 */
function isRoutingRefusal(error: unknown): error is DstoreError {
  return (
    error instanceof DstoreError &&
    (error.code === ErrorCode.NOT_OWNER || error.code === ErrorCode.STALE_EPOCH)
  );
}

/**
 * What a client is answered for `error`. A routing refusal still standing after this balancer's
 * one retry (the map moved on again meanwhile: a failover during a ring change) becomes BUSY,
 * as other refusals while keys move: the node refused it before executing it, and a client of the
 * balancer can do nothing with a node's ring epoch but send the request again, which the native
 * client does with its backoff (it would surface a STALE_EPOCH or NOT_OWNER as a failure) and
 * RESP clients read as TRYAGAIN.
 */
function clientError(error: unknown): unknown {
  if (!isRoutingRefusal(error)) return error;
  return new DstoreError(
    ErrorCode.BUSY,
    `the cluster map is changing, retry (not executed: ${error.code}: ${error.message})`,
    { notExecuted: true },
  );
}

/** A copy of a single-key request whose key and value outlive the current tick. */
function copyRequest(request: SingleKeyRequest): SingleKeyRequest {
  const key = Uint8Array.from(request.key);
  if (request.op === Op.SET)
    return { op: Op.SET, id: request.id, key, value: Uint8Array.from(request.value) };
  return { op: request.op, id: request.id, key };
}

/** A group of an MGET/MSET bound for one owner, with the positions of its items in the request. */
interface OwnerBatch<T> {
  readonly node: ClusterNode;
  readonly positions: number[];
  readonly items: T[];
}

/**
 * Forwards client requests to the owners of their keys: the hot path of the balancer. A key whose
 * owner is down fails at once with UNAVAILABLE (no attempt, no waiting, no re-routing); every
 * forwarded request carries the node link's deadline, so a client always gets an answer.
 */
export class Router {
  constructor(
    private readonly membership: Membership,
    private readonly metrics: BalancerMetrics,
  ) {}

  /**
   * The node that serves `key` on the topology's ring, when it is up: its owner, or with
   * replication the head of its chain for a write and the tail for a read.
   */
  private upOwnerOf(key: Uint8Array, topology: Topology, write: boolean): ClusterNode | DstoreError {
    const id = topology.targetOf(key, write);
    if (id === undefined) return downError(undefined);
    const node = this.membership.node(id);
    if (node === undefined || !node.up) {
      const error = downError(node);
      if (node !== undefined) this.nodeFailed(node, error);
      return error;
    }
    return node;
  }

  /** Counts a failure of `node` for its per-node series (not the routing refusals resolved here). */
  private nodeFailed(node: ClusterNode, error: unknown): void {
    if (!isRoutingRefusal(error)) this.metrics.recordNodeError(node.id, errorCodeOf(error));
  }

  /** The old owner of `key` while its range moves to `owner`; undefined when it is not moving. */
  private fallbackOf(key: Uint8Array, owner: ClusterNode, topology: Topology): ClusterNode | undefined {
    const from = topology.fallbackOf(key, owner.id);
    return from === undefined ? undefined : this.membership.node(from);
  }

  /** Answers `id` with `error` (a routing refusal as BUSY: see `clientError`) and counts it. */
  fail(client: Replier, id: number, op: number, startMs: number, error: unknown): void {
    const answer = clientError(error);
    const code = errorCodeOf(answer);
    this.metrics.recordError(code);
    this.metrics.record(op, startMs, false);
    client.replyError(id, code, answer instanceof Error ? answer.message : String(answer));
  }

  /** GET, SET or DEL: forward to the key's owner and relay its answer. */
  forwardToOwner(request: SingleKeyRequest, client: Replier, startMs: number, retried = false): void {
    if (request.op === Op.DEL && request.fallback === true) {
      this.deleteOldCopy(request, client, startMs);
      return;
    }
    const topology = this.membership.topology;
    const owner = this.upOwnerOf(request.key, topology, !isSingleKeyRead(request.op));
    if (owner instanceof DstoreError) {
      this.fail(client, request.id, request.op, startMs, owner);
      return;
    }
    if (topology.changing) {
      this.forwardDuringMigration(request, owner, client, startMs, retried, topology);
      return;
    }
    const { id, op } = request;
    // Key/value views are encoded before this call returns; the copy only adds the fence. One
    // callback, no promise: this is the balancer's busiest line.
    const refusal = owner.forwardWith(
      fenced(request, topology),
      (error, response) => {
        if (error === undefined) {
          this.metrics.record(op, startMs, true);
          client.reply(withRequestId(response!, id));
        } else this.forwardFailed(client, id, op, startMs, error, owner);
      },
      client.linkShare,
    );
    if (refusal !== undefined) this.forwardFailed(client, id, op, startMs, refusal, owner);
  }

  /**
   * A client's DEL with the fall-back flag: delete only the old owner's copy of a moving key. A
   * direct client sends it after the key's new owner executed its DEL and answered ASK naming an
   * old owner the client cannot reach (a leaving node is not in the map clients get): the whole DEL
   * again would run twice on the new owner. COUNT 0 when the key's range no longer moves here
   * (nobody reads that copy any more, and PURGE removes it).
   */
  private deleteOldCopy(request: DelRequest, client: Replier, startMs: number): void {
    const topology = this.membership.topology;
    const { id } = request;
    const ownerId = topology.ownerOf(request.key);
    const fromId = ownerId === undefined ? undefined : topology.fallbackOf(request.key, ownerId);
    if (fromId === undefined) {
      this.metrics.record(Op.DEL, startMs, true);
      client.reply({ op: Op.COUNT, id, count: 0 });
      return;
    }
    const from = this.membership.node(fromId);
    if (from === undefined || !from.up) {
      this.fail(client, id, Op.DEL, startMs, downError(from));
      return;
    }
    const key = Uint8Array.from(request.key);
    from.forward(fenced({ op: Op.DEL, key, fallback: true }, topology), undefined, client.linkShare).then(
      (response) => {
        this.metrics.record(Op.DEL, startMs, true);
        client.reply(withRequestId(response, id));
      },
      (error: unknown) => this.forwardFailed(client, id, Op.DEL, startMs, error as DstoreError, from),
    );
  }

  private forwardFailed(
    client: Replier,
    id: number,
    op: number,
    startMs: number,
    error: DstoreError,
    owner: ClusterNode,
  ): void {
    this.nodeFailed(owner, error);
    // A fence refusal here means a map this balancer has not seen yet (or a node that missed
    // a RING): the request was not executed; catch up for the next ones and say so.
    if (isFenceRefusal(error)) void this.membership.catchUp(error);
    this.fail(client, id, op, startMs, error);
  }

  /**
   * The slow path while the ring changes. The key is copied (it is used after this tick). A
   * moving key's GET asks the new owner and, on not-found, the old one (which keeps its copy
   * until PURGE); its SET and DEL go to the new owner, which then refuses older copies (a DEL
   * brings the old owner's copy in first when none is here, so that its count is the key's). A
   * NOT_OWNER or STALE_EPOCH (a node got the new ring before we route on it) is retried once on
   * the settled ring.
   */
  private forwardDuringMigration(
    original: SingleKeyRequest,
    owner: ClusterNode,
    client: Replier,
    startMs: number,
    retried: boolean,
    topology: Topology,
  ): void {
    const request = copyRequest(original);
    const { id, op } = request;
    const fallback = this.fallbackOf(request.key, owner, topology);
    const answered = (response: Response) => {
      this.metrics.record(op, startMs, true);
      client.reply(withRequestId(response, id));
    };
    const failed = (error: unknown) => {
      this.nodeFailed(owner, error);
      if (!retried && isRoutingRefusal(error)) {
        this.membership.catchUp(error).then(() => this.forwardToOwner(request, client, startMs, true));
        return;
      }
      this.fail(client, id, op, startMs, error);
    };
    if (fallback === undefined || op !== Op.GET) {
      owner.forward(fenced(request, topology), undefined, client.linkShare).then(answered, failed);
      return;
    }
    this.readWithFallback(request.key, owner, fallback, topology, client.linkShare).then(answered, failed);
  }

  /**
   * A GET of a key whose range moves from `fallback` (old owner) to `owner`: the new owner first;
   * only when it has nothing (not migrated yet) the old owner, which keeps its copy until PURGE.
   * A key deleted on the new owner since the move began (it answers `deleted`) is not found:
   * the old owner's copy is older than that delete.
   */
  private readWithFallback(
    key: Uint8Array,
    owner: ClusterNode,
    fallback: ClusterNode | undefined,
    topology: Topology,
    share: ClientShare,
  ): Promise<Response> {
    return owner.forward(fenced({ op: Op.GET, key }, topology), undefined, share).then((response) => {
      if (response.op !== Op.VALUE || response.value !== null) return response;
      if (response.deleted === true) return { op: Op.VALUE, id: response.id, value: null };
      return fallback === undefined
        ? response
        : fallback.forward(fenced({ op: Op.GET, key, fallback: true }, topology), undefined, share);
    });
  }

  /**
   * A single-key data-model request (SET_WITH, EXPIRE, TTL, GETDEL, INCRBY, SETRANGE): forwarded to the key's
   * owner, fenced, and its answer relayed. No fall-back during a migration: the owner brings a
   * moving key's copy in from the old owner itself before it executes (PULL), so every answer
   * comes from one atomic step on the owner. A routing refusal (NOT_OWNER, STALE_EPOCH: not
   * executed) is retried once after catching up.
   */
  forwardKeyed(request: KeyedClientRequest, client: Replier, startMs: number, retried = false): void {
    const topology = this.membership.topology;
    const owner = this.upOwnerOf(request.key, topology, !isSingleKeyRead(request.op));
    if (owner instanceof DstoreError) {
      this.fail(client, request.id, request.op, startMs, owner);
      return;
    }
    const { id, op } = request;
    // Copied only when a retry may need it after this tick: the forward encodes the views now.
    const kept = retried || !topology.changing ? request : copyKeyed(request);
    const { id: _, ...message } = kept;
    this.forwardCounted(owner, fenced(message, topology), client).then(
      (response) => {
        this.metrics.record(op, startMs, true);
        client.reply(withRequestId(response, id));
      },
      (error: unknown) => {
        if (!retried && topology.changing && isRoutingRefusal(error)) {
          this.membership.catchUp(error).then(() => this.forwardKeyed(kept, client, startMs, true));
          return;
        }
        if (isFenceRefusal(error)) void this.membership.catchUp(error);
        this.fail(client, id, op, startMs, error);
      },
    );
  }

  /**
   * EXISTS: split per owner like MGET, the counts summed. Each owner brings moving keys in itself
   * (see {@link forwardKeyed}); a routing refusal is retried once, caught up (EXISTS only reads).
   */
  forwardExists(request: ExistsRequest, client: Replier, startMs: number, retried = false): void {
    const topology = this.membership.topology;
    if (!retried && topology.changing) {
      request = { op: Op.EXISTS, id: request.id, keys: request.keys.map((key) => Uint8Array.from(key)) };
    }
    const again = retried ? undefined : () => this.forwardExists(request, client, startMs, true);
    const { id, keys } = request;
    const batches = this.splitByOwner(keys, (key) => key, topology, false);
    if (batches instanceof DstoreError) {
      this.fail(client, id, Op.EXISTS, startMs, batches);
      return;
    }
    Promise.all(
      batches.map((batch) =>
        this.forwardCounted(batch.node, fenced({ op: Op.EXISTS, keys: batch.items }, topology), client).then(
          countOf,
        ),
      ),
    ).then(
      (counts) => {
        this.metrics.record(Op.EXISTS, startMs, true);
        client.reply({ op: Op.COUNT, id, count: counts.reduce((sum, count) => sum + count, 0) });
      },
      (error: unknown) => this.failOrRetry(client, id, Op.EXISTS, startMs, error, again),
    );
  }

  /** MGET: split per owner, sent concurrently, values reassembled in request order. */
  forwardMGet(request: MGetRequest, client: Replier, startMs: number, retried = false): void {
    const topology = this.membership.topology;
    if (topology.moves !== undefined) {
      this.forwardMGetDuringMigration(request, client, startMs, topology);
      return;
    }
    if (!retried && topology.announcing) {
      // The ring is being announced: a node may already refuse with NOT_OWNER; keep a copy to retry.
      request = { op: Op.MGET, id: request.id, keys: request.keys.map((key) => Uint8Array.from(key)) };
    }
    const again = retried ? undefined : () => this.forwardMGet(request, client, startMs, true);
    const { id, keys } = request;
    const batches = this.splitByOwner(keys, (key) => key, topology, false);
    if (batches instanceof DstoreError) {
      this.fail(client, id, Op.MGET, startMs, batches);
      return;
    }
    if (batches.length === 0) {
      this.metrics.record(Op.MGET, startMs, true);
      client.reply({ op: Op.VALUES, id, values: [] });
      return;
    }
    if (batches.length === 1) {
      this.forwardWhole(
        batches[0]!.node,
        fenced({ op: Op.MGET, keys }, topology),
        client,
        id,
        Op.MGET,
        startMs,
        again,
      );
      return;
    }
    const values = new Array<Uint8Array | null>(keys.length);
    const parts = batches.map((batch) =>
      this.forwardCounted(batch.node, fenced({ op: Op.MGET, keys: batch.items }, topology), client).then(
        (response) => {
          if (response.op !== Op.VALUES || response.values.length !== batch.positions.length) {
            throw new DstoreError(
              ErrorCode.INTERNAL,
              `node ${batch.node.id} answered MGET with op ${response.op}`,
            );
          }
          for (let index = 0; index < batch.positions.length; index++) {
            values[batch.positions[index]!] = response.values[index]!;
          }
        },
      ),
    );
    Promise.all(parts).then(
      () => {
        this.metrics.record(Op.MGET, startMs, true);
        client.reply({ op: Op.VALUES, id, values });
      },
      (error: unknown) => this.failOrRetry(client, id, Op.MGET, startMs, error, again),
    );
  }

  /** MGET while ranges move: each key as a GET with fall-back (keys copied; a rare, slower path). */
  private forwardMGetDuringMigration(
    request: MGetRequest,
    client: Replier,
    startMs: number,
    topology: Topology,
  ): void {
    const { id } = request;
    const keys = request.keys.map((key) => Uint8Array.from(key));
    const values = new Array<Uint8Array | null>(keys.length);
    const reads = keys.map((key, index) => {
      const owner = this.upOwnerOf(key, topology, false);
      if (owner instanceof DstoreError) return Promise.reject(owner);
      const fallback = this.fallbackOf(key, owner, topology);
      return this.readWithFallback(key, owner, fallback, topology, client.linkShare).then(
        (response) => {
          if (response.op !== Op.VALUE) {
            throw new DstoreError(ErrorCode.INTERNAL, `node answered GET with op ${response.op}`);
          }
          values[index] = response.value;
        },
        (error: unknown) => {
          this.nodeFailed(owner, error);
          throw error;
        },
      );
    });
    Promise.all(reads).then(
      () => {
        this.metrics.record(Op.MGET, startMs, true);
        client.reply({ op: Op.VALUES, id, values });
      },
      (error: unknown) => this.fail(client, id, Op.MGET, startMs, error),
    );
  }

  /**
   * MSET: split per owner, sent concurrently; OK once every owner acknowledged. Not atomic: when
   * one owner fails the client gets its error, but other owners may have applied their part.
   */
  forwardMSet(request: MSetRequest, client: Replier, startMs: number, retried = false): void {
    const topology = this.membership.topology;
    if (!retried && topology.announcing) {
      const entries = request.entries.map((entry) => ({
        key: Uint8Array.from(entry.key),
        value: Uint8Array.from(entry.value),
      }));
      request = { op: Op.MSET, id: request.id, entries };
    }
    const again = retried ? undefined : () => this.forwardMSet(request, client, startMs, true);
    const { id, entries } = request;
    const batches = this.splitByOwner(entries, (entry) => entry.key, topology, true);
    if (batches instanceof DstoreError) {
      this.fail(client, id, Op.MSET, startMs, batches);
      return;
    }
    if (batches.length === 0) {
      this.metrics.record(Op.MSET, startMs, true);
      client.reply({ op: Op.OK, id });
      return;
    }
    if (batches.length === 1) {
      this.forwardWhole(
        batches[0]!.node,
        fenced({ op: Op.MSET, entries }, topology),
        client,
        id,
        Op.MSET,
        startMs,
        again,
      );
      return;
    }
    Promise.allSettled(
      batches.map((batch) =>
        this.forwardCounted(batch.node, fenced({ op: Op.MSET, entries: batch.items }, topology), client),
      ),
    ).then((results) => this.msetSettled(request, batches, results, client, startMs, retried));
  }

  /**
   * The end of a split MSET: OK when every part was stored. While the ring is announced, only the
   * parts a node refused for routing (not executed) are sent again once caught up: the parts other
   * nodes stored stay as they are, since storing them again could overwrite a write acknowledged
   * in between (what the linearizability tests look for).
   */
  private msetSettled(
    request: MSetRequest,
    batches: readonly OwnerBatch<KeyValue>[],
    results: readonly PromiseSettledResult<Response>[],
    client: Replier,
    startMs: number,
    retried: boolean,
  ): void {
    const { id } = request;
    const refused: KeyValue[] = [];
    let refusal: DstoreError | undefined;
    const failures: unknown[] = [];
    results.forEach((result, index) => {
      if (result.status === 'fulfilled') return;
      if (!retried && isRoutingRefusal(result.reason)) {
        refusal ??= result.reason;
        refused.push(...batches[index]!.items);
      } else failures.push(result.reason);
    });
    if (failures.length > 0) {
      const stored = results.filter((result) => result.status === 'fulfilled').length;
      this.failOrRetry(
        client,
        id,
        Op.MSET,
        startMs,
        partlyApplied(failures, stored, results.length),
        undefined,
      );
      return;
    }
    if (refusal === undefined) {
      this.metrics.record(Op.MSET, startMs, true);
      client.reply({ op: Op.OK, id });
      return;
    }
    const rest: MSetRequest = { op: Op.MSET, id, entries: refused };
    this.membership.catchUp(refusal).then(() => this.forwardMSet(rest, client, startMs, true));
  }

  /**
   * Fails the request, except a NOT_OWNER or STALE_EPOCH while the ring is announced: then `again`
   * runs once caught up (MGET and MSET are idempotent, so resending the whole batch is safe).
   */
  private failOrRetry(
    client: Replier,
    id: number,
    op: number,
    startMs: number,
    error: unknown,
    again: (() => void) | undefined,
  ): void {
    if (again !== undefined && isRoutingRefusal(error)) {
      this.membership.catchUp(error).then(again);
      return;
    }
    if (isFenceRefusal(error)) void this.membership.catchUp(error);
    this.fail(client, id, op, startMs, error);
  }

  private forwardWhole(
    node: ClusterNode,
    message: DataRequest,
    client: Replier,
    id: number,
    op: number,
    startMs: number,
    again?: () => void,
  ): void {
    this.forwardCounted(node, message, client).then(
      (response) => {
        this.metrics.record(op, startMs, true);
        client.reply(withRequestId(response, id));
      },
      (error: unknown) => this.failOrRetry(client, id, op, startMs, error, again),
    );
  }

  /**
   * `node.forward(message)` within `client`'s share, its failure counted in the node's series
   * (multi-key paths).
   */
  private forwardCounted(node: ClusterNode, message: DataRequest, client: Replier): Promise<Response> {
    return node.forward(message, undefined, client.linkShare).catch((error: unknown) => {
      this.nodeFailed(node, error);
      throw error;
    });
  }

  /**
   * Groups items by the node that serves their key (`write`: see {@link upOwnerOf}). Fails (before anything is sent) when any owner is
   * down, so an MSET never half-applies because of a node we already know is down.
   */
  private splitByOwner<T>(
    items: readonly T[],
    keyOf: (item: T) => Uint8Array,
    topology: Topology,
    write: boolean,
  ): OwnerBatch<T>[] | DstoreError {
    const byNode = new Map<ClusterNode, OwnerBatch<T>>();
    const batches: OwnerBatch<T>[] = [];
    for (let position = 0; position < items.length; position++) {
      const item = items[position]!;
      const owner = this.upOwnerOf(keyOf(item), topology, write);
      if (owner instanceof DstoreError) return owner;
      let batch = byNode.get(owner);
      if (batch === undefined) {
        batch = { node: owner, positions: [], items: [] };
        byNode.set(owner, batch);
        batches.push(batch);
      }
      batch.positions.push(position);
      batch.items.push(item);
    }
    return batches;
  }
}
