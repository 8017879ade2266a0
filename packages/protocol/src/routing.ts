import { DstoreError, ErrorCode } from './errors.js';
import {
  type DelRequest,
  type DelVersionedRequest,
  type ExistsRequest,
  type ExpireRequest,
  type ExpireTimeRequest,
  type GetDelRequest,
  type GetRequest,
  type GetVersionedRequest,
  type IncrByFloatRequest,
  type IncrByRequest,
  type MGetRequest,
  type MSetRequest,
  Op,
  type ReadPartRequest,
  type Response,
  type SetBitRequest,
  type SetRangeRequest,
  type SetRequest,
  type SetWithRequest,
  type TransactRequest,
  type TransactStep,
  type TtlRequest,
  type WithoutId,
} from './messages.js';

/**
 * The single-key data requests of the data model (expiry, atomic operations, versions and
 * compare-and-set): a router forwards
 * each to its key's owner, fenced, as it forwards a SET. During a migration the owner itself
 * brings the key's current copy in before it executes one (see the protocol README,
 * "Read-modify-write during a migration"), so a router never needs a fall-back for them.
 */
export type KeyedRequest =
  | WithoutId<SetWithRequest>
  | WithoutId<ExpireRequest>
  | WithoutId<TtlRequest>
  | WithoutId<ExpireTimeRequest>
  | WithoutId<GetDelRequest>
  | WithoutId<IncrByRequest>
  | WithoutId<SetRangeRequest>
  | WithoutId<IncrByFloatRequest>
  | WithoutId<SetBitRequest>
  | WithoutId<ReadPartRequest>
  | WithoutId<GetVersionedRequest>
  | WithoutId<DelVersionedRequest>
  | WithoutId<TransactRequest>;

/** The data requests a router (the balancer's, or a direct client's) sends fenced with an epoch. */
export type DataRequest =
  | WithoutId<GetRequest>
  | WithoutId<SetRequest>
  | WithoutId<DelRequest>
  | WithoutId<MGetRequest>
  | WithoutId<MSetRequest>
  | WithoutId<ExistsRequest>
  | KeyedRequest;

/**
 * Whether a single-key request only reads (GET, TTL, PEXPIRETIME, GET_VERSIONED, READ_PART): with replication
 * it goes to the tail of the key's chain, every other single-key request (a write, an atomic
 * operation) to the head. The one classification for the balancer's router, the direct client and
 * the node's fence.
 */
export function isSingleKeyRead(op: number): boolean {
  return (
    op === Op.GET || op === Op.TTL || op === Op.PEXPIRETIME || op === Op.GET_VERSIONED || op === Op.READ_PART
  );
}

/**
 * A copy of a keyed request whose key (and its value or increment) outlive the current tick, for a
 * request that waits before it is sent or executed (a retry after a routing refusal, a PULL):
 * decoded keys and values are views of a receive buffer.
 */
export function copyKeyed<T extends KeyedRequest>(request: T): T {
  if (request.op === Op.TRANSACT) {
    const copy = { ...request, key: Uint8Array.from(request.key), steps: request.steps.map(copyStep) };
    if (request.watches === undefined) return copy;
    return {
      ...copy,
      watches: request.watches.map((watch) => ({ key: Uint8Array.from(watch.key), version: watch.version })),
    };
  }
  return copyStep(request) as T;
}

function copyStep<T extends TransactStep>(request: T): T {
  const key = Uint8Array.from(request.key);
  if (request.op === Op.SET_WITH || request.op === Op.SETRANGE) {
    return { ...request, key, value: Uint8Array.from(request.value) };
  }
  if (request.op === Op.INCRBYFLOAT)
    return { ...request, key, increment: Uint8Array.from(request.increment) };
  return { ...request, key };
}

/**
 * `message` with the fence: the epoch of the ring it was routed on (a GET's or DEL's fall-back
 * flag kept). One object literal per op, not a spread of the decoded request: the balancer runs
 * this for every request it forwards.
 */
export function withEpoch(message: DataRequest, epoch: number): DataRequest {
  switch (message.op) {
    case Op.GET:
    case Op.DEL:
      return message.fallback === true
        ? { op: message.op, key: message.key, fallback: true, epoch }
        : { op: message.op, key: message.key, epoch };
    case Op.SET:
      return { op: Op.SET, key: message.key, value: message.value, epoch };
    case Op.MGET:
      return { op: Op.MGET, keys: message.keys, epoch };
    case Op.MSET:
      return { op: Op.MSET, entries: message.entries, epoch };
    default:
      // The data-model requests: not the balancer's hottest path, a spread is fine.
      return { ...message, epoch };
  }
}

/**
 * The error of a DEL sent to both copies of a moving key (the new owner and, with the fall-back
 * flag, the old one) when at least one side failed. Only when neither side executed it is the
 * failure "not executed"; when one side applied it (the new owner's tombstone, or the old owner's
 * copy gone) the outcome is unknown to the client, who may safely send the DEL again, so it must
 * not be reported as never executed. Shared by the balancer's router and direct-routing clients,
 * so both report the same failure the same way.
 */
export function migratingDeleteOutcome(
  fromOwner: PromiseSettledResult<Response>,
  fromFallback: PromiseSettledResult<Response>,
  ownerId: string,
  fallbackId: string,
): DstoreError {
  const notExecuted = (result: PromiseSettledResult<Response>): boolean =>
    result.status === 'rejected' && result.reason instanceof DstoreError && result.reason.notExecuted;
  if (fromOwner.status === 'rejected' && notExecuted(fromOwner) && notExecuted(fromFallback)) {
    return fromOwner.reason as DstoreError;
  }
  const failure = fromOwner.status === 'rejected' ? fromOwner : (fromFallback as PromiseRejectedResult);
  const where = failure === fromOwner ? `new owner ${ownerId}` : `old owner ${fallbackId}`;
  const reason = failure.reason instanceof Error ? failure.reason.message : String(failure.reason);
  return new DstoreError(
    ErrorCode.INTERNAL,
    `DEL of a migrating key did not reach the ${where} (${reason}) and may have been applied elsewhere: outcome unknown, sending it again is safe`,
    { cause: failure.reason },
  );
}

/**
 * The error of a write split over several nodes (MSET) whose parts failed with `failures` (one per
 * failed part, in part order) while `stored` of the `parts` were stored. It is "not executed" only
 * when every failed part is and nothing was stored: a part that may have been applied (TIMEOUT,
 * CONNECTION_CLOSED) makes the whole write indeterminate whatever the other parts answered, and so
 * do parts stored beside refused ones (INTERNAL, as a DEL that reached one of two copies, the
 * cause kept). Otherwise a caller could resend the whole batch and overwrite writes made since.
 */
export function partlyApplied(failures: readonly unknown[], stored: number, parts: number): unknown {
  const first = failures[0];
  const maybeApplied = failures.find((failure) => !(failure instanceof DstoreError) || !failure.notExecuted);
  if (maybeApplied !== undefined) return maybeApplied;
  if (stored === 0) return first;
  return new DstoreError(
    ErrorCode.INTERNAL,
    `MSET partly applied (${stored} of ${parts} nodes stored their keys): ${(first as DstoreError).message}`,
    { cause: first },
  );
}
