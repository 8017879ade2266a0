import { DstoreError, ErrorCode } from './errors.js';
import {
  Op,
  type Response,
  type SetWithRequest,
  type TransactRequest,
  type TransactStep,
  type WithoutId,
} from './messages.js';

/**
 * Operations over several keys of one hash tag built from TRANSACT, shared by the balancer's RESP
 * port (MSETNX, RENAME, RENAMENX, COPY) and the client (`msetnx`, `rename`, `copy`): one
 * implementation of each. Every key must have the first one's ring position (the node refuses the
 * TRANSACT otherwise), so each operation is one atomic step on the keys' owner, replicated as one
 * unit.
 */

/** Sends a TRANSACT (routing, deadline and retries are the caller's) and resolves its answer. */
export type TransactSender = (request: WithoutId<TransactRequest>) => Promise<Response>;

/**
 * The TRANSACT of MSETNX: every key set to its value (no expiry, as SET) only if none of them
 * exists: the first key's `ifVersion` and the others' watches at version 0 (absent). Its RESULTS
 * are nil when a key existed (nothing written).
 */
export function setAllIfAbsent(
  entries: readonly { readonly key: Uint8Array; readonly value: Uint8Array }[],
): WithoutId<TransactRequest> {
  const first = entries[0];
  if (first === undefined) throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'MSETNX needs at least one key');
  const steps: TransactStep[] = entries.map(({ key, value }) => ({ op: Op.SET_WITH, key, value }));
  const watches = entries.slice(1).map(({ key }) => ({ key, version: 0 }));
  return watches.length === 0
    ? { op: Op.TRANSACT, key: first.key, ifVersion: 0, steps }
    : { op: Op.TRANSACT, key: first.key, ifVersion: 0, steps, watches };
}

/** What {@link moveKey} does with the destination. */
export interface MoveOptions {
  /** The source is deleted (RENAME); otherwise kept (COPY). */
  readonly deletesSource: boolean;
  /** Only when the destination does not exist (RENAMENX, COPY without REPLACE). */
  readonly onlyIfAbsent: boolean;
}

/** How a {@link moveKey} ended. */
export type MoveOutcome = 'moved' | 'no-source' | 'destination-exists';

/** Reads and writes of a move whose source changed in between, before it gives up (BUSY). */
export const MOVE_ATTEMPTS = 16;

/**
 * RENAME, RENAMENX or COPY of `source` to a different `destination` of its ring position: reads
 * the source's value, version and expiry time and whether the destination exists (one read-only
 * TRANSACT), then writes the destination with the source's expiry time (and, for a rename,
 * deletes the source) in one TRANSACT that runs only if the source is still at the version read
 * (and, when the destination must be absent, it still is); reads again when it is not, at most
 * {@link MOVE_ATTEMPTS} times, then fails with BUSY (nothing done, retryable).
 */
export async function moveKey(
  send: TransactSender,
  source: Uint8Array,
  destination: Uint8Array,
  options: MoveOptions,
): Promise<MoveOutcome> {
  for (let attempt = 0; attempt < MOVE_ATTEMPTS; attempt++) {
    const read = await resultsOf(
      send({
        op: Op.TRANSACT,
        key: source,
        steps: [
          { op: Op.GET_VERSIONED, key: source },
          { op: Op.PEXPIRETIME, key: source },
          { op: Op.PEXPIRETIME, key: destination },
        ],
      }),
    );
    const [value, expiry, destinationExpiry] = read ?? [];
    if (value?.op !== Op.VERSIONED || expiry?.op !== Op.INTEGER || destinationExpiry?.op !== Op.INTEGER) {
      throw new DstoreError(ErrorCode.INTERNAL, "unexpected answers to a move's read of its source");
    }
    if (value.value === null) return 'no-source';
    // PEXPIRETIME -2: the destination does not exist.
    if (options.onlyIfAbsent && destinationExpiry.value !== -2n) return 'destination-exists';
    const expireAt = Number(expiry.value);
    const set: Omit<SetWithRequest, 'id' | 'epoch'> =
      expireAt >= 0
        ? { op: Op.SET_WITH, key: destination, value: value.value, expiry: { kind: 'at', ms: expireAt } }
        : { op: Op.SET_WITH, key: destination, value: value.value };
    const written = await resultsOf(
      send({
        op: Op.TRANSACT,
        key: source,
        ifVersion: value.version,
        steps: options.deletesSource ? [set, { op: Op.DEL_VERSIONED, key: source }] : [set],
        ...(options.onlyIfAbsent ? { watches: [{ key: destination, version: 0 }] } : {}),
      }),
    );
    if (written !== null) return 'moved';
  }
  throw new DstoreError(
    ErrorCode.BUSY,
    `the source key changed between its read and its move ${MOVE_ATTEMPTS} times in a row: nothing was done; retry`,
  );
}

/**
 * A TRANSACT's RESULTS, or null when a watched version did not hold. These operations' steps
 * (plain SETs, unconditional DELs, reads) are never refused on their own, so a step's ERROR is
 * an answer no node gives them: it fails the operation with that error.
 */
export async function resultsOf(answer: Promise<Response>): Promise<readonly Response[] | null> {
  const response = await answer;
  if (response.op !== Op.RESULTS) {
    throw new DstoreError(ErrorCode.INTERNAL, `TRANSACT answered with op ${response.op}`);
  }
  const results = response.results;
  if (results === null) return null;
  for (const result of results) {
    if (result.op === Op.ERROR) throw new DstoreError(result.code as ErrorCode, result.message);
  }
  return results;
}
