/**
 * Stable error codes shared by every dstore package and carried on the wire in ERROR frames.
 * Codes never change meaning; new codes may be added in later protocol versions, so readers must
 * accept a code they do not know (see {@link DstoreError.code}).
 */
export const ErrorCode = {
  /**
   * A received frame declares more than `maxFrameBytes`: the connection is closed. Also the
   * local refusal (nothing sent, connection kept) of a request or reply that would encode larger.
   */
  FRAME_TOO_LARGE: 'FRAME_TOO_LARGE',
  /** A frame's body is not a valid message: bad MessagePack, wrong shape, wrong field type. */
  MALFORMED_FRAME: 'MALFORMED_FRAME',
  /** A frame began arriving but was not complete within the frame deadline (slow sender). */
  FRAME_TIMEOUT: 'FRAME_TIMEOUT',
  /** The op code is not one this peer knows. */
  UNKNOWN_OP: 'UNKNOWN_OP',
  /** A key is empty or longer than `maxKeyBytes`. */
  KEY_TOO_LARGE: 'KEY_TOO_LARGE',
  /** A value is longer than `maxValueBytes`. */
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  /** An MGET/MSET carries more than `maxBatchKeys` keys. */
  BATCH_TOO_LARGE: 'BATCH_TOO_LARGE',
  /** A field has the right type but a value that is not allowed (for example an empty key). */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /**
   * The peer speaks an incompatible protocol version, or another protocol altogether (an HTTP
   * server such as the balancer's admin port, an HTTP client on a dstore port: the message says so).
   */
  VERSION_MISMATCH: 'VERSION_MISMATCH',
  /**
   * Authentication is required, failed (wrong user, password, token or cluster secret), or did
   * not finish in time; the message says which. Not executed.
   */
  UNAUTHORIZED: 'UNAUTHORIZED',
  /**
   * Authenticated, but not allowed to do this: a read-only user writing, a key outside the
   * user's prefixes, a client sending a cluster (peer) operation. Not executed.
   */
  NO_PERMISSION: 'NO_PERMISSION',
  /** The node that owns the key is down or unreachable; the request was not executed there. */
  UNAVAILABLE: 'UNAVAILABLE',
  /** No answer within the deadline. The request may or may not have been executed (indeterminate). */
  TIMEOUT: 'TIMEOUT',
  /** A bound was hit (in-flight requests, buffered bytes, connections, queue length). Retry later. */
  BUSY: 'BUSY',
  /** The connection closed before the answer arrived. The request may or may not have been executed. */
  CONNECTION_CLOSED: 'CONNECTION_CLOSED',
  /** The peer is shutting down and no longer accepts requests. */
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  /** The caller aborted the request (AbortSignal). Never sent by a server. */
  ABORTED: 'ABORTED',
  /** An unexpected failure inside the peer (a handler threw). Storage failures have their own codes below. */
  INTERNAL: 'INTERNAL',
  /**
   * A storage node cannot store the write: its lmdb map-size limit is reached or its filesystem is
   * full (the message says which, with the bytes used and available). Not executed: nothing of the
   * request was stored. Reads and deletes go on; writes succeed again once space is freed (DEL, a
   * larger `--map-size`, a cleaned disk).
   */
  OUT_OF_SPACE: 'OUT_OF_SPACE',
  /**
   * A memory node is at its `--max-memory` cap and its eviction policy is `noeviction` (Redis's
   * OOM). Not executed. Reads and deletes go on; writes succeed again once keys are deleted.
   */
  OUT_OF_MEMORY: 'OUT_OF_MEMORY',
  /**
   * The storage failed for another reason (an I/O error of the disk, a failed commit or flush); the
   * message carries the reason. The write was not acknowledged and may or may not have been stored
   * (indeterminate). The node stays up and keeps serving.
   */
  STORAGE_ERROR: 'STORAGE_ERROR',
  /**
   * The node does not own the key at its current ring epoch; the message names the owner. The
   * request was not executed (a router with an older ring should refresh and resend).
   */
  NOT_OWNER: 'NOT_OWNER',
  /**
   * A JOIN names a node id that another live node (another identity) holds; the original keeps
   * its place. Start the new node with its own id, or stop the other one.
   */
  IDENTITY_CONFLICT: 'IDENTITY_CONFLICT',
  /**
   * A JOIN comes from a node identity that was removed from the cluster. It can come back only as
   * a new member: a new identity (a fresh data dir) through a JOIN.
   */
  MEMBER_REMOVED: 'MEMBER_REMOVED',
  /**
   * A node holds data of another cluster than this one: its JOIN names another cluster map
   * generation than the balancer's map, or a RING of another generation reached a node holding
   * data. Refused so that the data is neither served as this cluster's nor overwritten by it (a
   * balancer restarted on a new map would otherwise rebuild the cluster from whichever node joined
   * first). Start the balancer with the map the node belongs to, or the node on a fresh data dir.
   */
  CLUSTER_MISMATCH: 'CLUSTER_MISMATCH',
  /**
   * Fence: the request was routed on another ring epoch than the node's (the message names both:
   * `routed on epoch <r>, this node is at epoch <n>`). Not executed; the router catches up (a
   * newer map, or a RING for a node that missed one) and resends.
   */
  STALE_EPOCH: 'STALE_EPOCH',
  /**
   * A plaintext connection reached a port that serves TLS only: sent once (id 0), then the
   * connection is closed. Connect with TLS (`dstores://`, `--tls-ca`).
   */
  TLS_REQUIRED: 'TLS_REQUIRED',
  /** The cluster map changed under a writer (compare-and-set failed): another writer got there first. */
  MAP_CONFLICT: 'MAP_CONFLICT',
  /** The stored cluster map cannot be read or is not a valid map: the balancer refuses to guess. */
  MAP_CORRUPT: 'MAP_CORRUPT',
  /**
   * A directly routed command was redirected (MOVED) more often than the client's
   * `maxRedirections` allows; the message names the last redirect. Not executed: a MOVED answer
   * means the node did not run it. The cluster map keeps changing, or a node disagrees with it.
   */
  TOO_MANY_REDIRECTS: 'TOO_MANY_REDIRECTS',
  /**
   * INCR/INCRBY/DECR/DECRBY on a value that is not the decimal text of a 64-bit signed integer
   * (Redis's `value is not an integer or out of range`). Not executed: the value is unchanged.
   */
  NOT_AN_INTEGER: 'NOT_AN_INTEGER',
  /**
   * INCR/INCRBY/DECR/DECRBY whose result would leave the 64-bit signed range (Redis's `increment
   * or decrement would overflow`), or INCRBYFLOAT whose result would be infinite (`increment would
   * produce NaN or Infinity`). Not executed: the value is unchanged.
   */
  OVERFLOW: 'OVERFLOW',
  /**
   * INCRBYFLOAT on a value, or with an increment, that does not read as a floating-point number
   * (Redis's `value is not a valid float`). Not executed: the value is unchanged.
   */
  NOT_A_FLOAT: 'NOT_A_FLOAT',
  /**
   * A SCAN cursor the node no longer knows (an lmdb node keeps the last 1,024 open iterations,
   * none across a restart). Not executed. A balancer restarts that node's part of the iteration
   * itself; a client of a single node starts again from cursor 0.
   */
  CURSOR_EXPIRED: 'CURSOR_EXPIRED',
  /**
   * A compare-and-set (`ifVersion`) found the key at another version (or absent, or present for
   * `ifVersion: 0`): another writer got there first. Not executed; read the key again (its
   * current version is in the error) and decide anew. Made by the client from the node's VERSION
   * answer, so it is never retried automatically.
   */
  VERSION_CONFLICT: 'VERSION_CONFLICT',
  /**
   * Replication (peers only): a REPLICATE's batch number does not follow the previous batch of its
   * stream on this connection (a batch went missing). Not executed: nothing of it was applied; the
   * sender drops the connection and re-sends what is not acknowledged from batch 1 on a new one.
   */
  REPLICATION_GAP: 'REPLICATION_GAP',
} as const;

/** One of the error codes this version of the protocol defines. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/** Whether `code` is one this version defines (a newer peer may send codes we do not know). */
export function isKnownErrorCode(code: string): code is ErrorCode {
  return KNOWN_CODES.has(code);
}

/** Options of a {@link DstoreError}. */
export interface DstoreErrorOptions {
  /** The error behind this one (a socket error, the peer's refusal). */
  readonly cause?: unknown;
  /**
   * Overrides what the code says about execution: true for a failure that certainly happened
   * before the request was sent (a TIMEOUT while queued, a failed connection attempt).
   */
  readonly notExecuted?: boolean;
}

/**
 * Codes that certainly mean "not executed": refusals before the request ran (the peer down, busy or
 * closing, a wrong token, another protocol version, a key the node does not own, another ring
 * epoch, an invalid request, a refused JOIN or map write). Every other code is indeterminate: no
 * answer in time, a connection lost with the request on the wire, an abort, a failure inside the
 * peer (a DEL that reached one of two copies), framing errors (the connection closes and other
 * requests on it may have run), and any code this version does not know (from a newer peer).
 */
const NOT_EXECUTED_CODES: ReadonlySet<string> = new Set([
  ErrorCode.UNAVAILABLE,
  ErrorCode.BUSY,
  ErrorCode.SHUTTING_DOWN,
  ErrorCode.UNAUTHORIZED,
  ErrorCode.NO_PERMISSION,
  ErrorCode.TLS_REQUIRED,
  ErrorCode.OUT_OF_SPACE,
  ErrorCode.OUT_OF_MEMORY,
  ErrorCode.VERSION_MISMATCH,
  ErrorCode.NOT_OWNER,
  ErrorCode.STALE_EPOCH,
  ErrorCode.KEY_TOO_LARGE,
  ErrorCode.VALUE_TOO_LARGE,
  ErrorCode.BATCH_TOO_LARGE,
  ErrorCode.INVALID_ARGUMENT,
  ErrorCode.UNKNOWN_OP,
  ErrorCode.IDENTITY_CONFLICT,
  ErrorCode.MEMBER_REMOVED,
  ErrorCode.CLUSTER_MISMATCH,
  ErrorCode.MAP_CONFLICT,
  ErrorCode.MAP_CORRUPT,
  ErrorCode.TOO_MANY_REDIRECTS,
  ErrorCode.NOT_AN_INTEGER,
  ErrorCode.OVERFLOW,
  ErrorCode.NOT_A_FLOAT,
  ErrorCode.CURSOR_EXPIRED,
  ErrorCode.VERSION_CONFLICT,
  ErrorCode.REPLICATION_GAP,
]);

/**
 * Codes of transient conditions: the peer is down, busy, restarting or slow, so the same request
 * may succeed later. Refusals of the request itself (a bad key, a wrong token, another protocol)
 * and routing refusals the router resolves itself (NOT_OWNER, STALE_EPOCH) are not.
 */
const TRANSIENT_CODES: ReadonlySet<string> = new Set([
  ErrorCode.UNAVAILABLE,
  ErrorCode.BUSY,
  ErrorCode.SHUTTING_DOWN,
  ErrorCode.TIMEOUT,
  ErrorCode.CONNECTION_CLOSED,
]);

/**
 * What a failure says about its request, for anyone deciding whether to send it again:
 * `retryable` (a transient condition: it may succeed later), `notExecuted` (it certainly was not
 * applied, so sending it again cannot apply it twice) and `indeterminate` (it may have been
 * applied). A request is safe to resend automatically when it is both retryable and not executed;
 * an idempotent one (GET, a MIGRATE, a PURGE) when it is retryable.
 */
export interface ErrorClass {
  readonly retryable: boolean;
  readonly notExecuted: boolean;
  readonly indeterminate: boolean;
}

/**
 * The one classification of failures that the client, the balancer's router and migrator and the
 * storage node's membership all use. Anything that is not a {@link DstoreError} (a bug, a socket
 * error that escaped) is indeterminate and not retryable.
 */
export function classifyError(error: unknown): ErrorClass {
  if (!(error instanceof DstoreError)) return { retryable: false, notExecuted: false, indeterminate: true };
  const notExecuted = error.notExecuted;
  return { retryable: error.retryable, notExecuted, indeterminate: !notExecuted };
}

/** True when `error` is a transient failure: the same request may succeed later. */
export function isRetryable(error: unknown): boolean {
  return error instanceof DstoreError && error.retryable;
}

/**
 * True when sending the failed request again can neither apply it twice nor fail the same way for
 * sure: it was not executed, and the cause is transient.
 */
export function isSafeToResend(error: unknown): boolean {
  return error instanceof DstoreError && error.retryable && error.notExecuted;
}

/**
 * Brand every DstoreError carries. A registered symbol is the same in every copy of this module:
 * the ESM and the CJS build of `@dstore/protocol` (both can be loaded in one process: the dual
 * package hazard) and two installed versions.
 */
const DSTORE_ERROR: unique symbol = Symbol.for('@dstore/protocol.DstoreError');

/**
 * The one error class of dstore. Every failure a caller can see carries a stable `code`; branch on
 * the code, never on the message.
 *
 * `err instanceof DstoreError` holds for a DstoreError made by any copy of this package (the ESM
 * and the CJS build, another installed version): the check looks for a brand, not at the
 * prototype chain. Subclasses ({@link ProtocolError}) keep the ordinary prototype check.
 */
export class DstoreError extends Error {
  /** Brand check across module copies; see the class comment. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: subclasses inherit this method, `this` is the class tested
    if (this !== DstoreError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && DSTORE_ERROR in value;
  }

  /** Stable machine-readable code; an unknown string when a newer peer sent a code we do not know. */
  readonly code: ErrorCode | (string & {});
  /** Set when the failing side knows better than the code (see {@link DstoreErrorOptions.notExecuted}). */
  readonly #notExecuted: boolean | undefined;

  constructor(code: ErrorCode | (string & {}), message: string, options?: DstoreErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DstoreError';
    this.code = code;
    this.#notExecuted = options?.notExecuted;
  }

  /**
   * True when the request certainly was not executed, so sending it again cannot apply it twice.
   * By code (see {@link classifyError}), unless the error was made knowing better: a TIMEOUT of a
   * command that never left the client's queue is not executed.
   */
  get notExecuted(): boolean {
    return this.#notExecuted ?? NOT_EXECUTED_CODES.has(this.code);
  }

  /** True when the same request may succeed if tried again later (a transient condition). */
  get retryable(): boolean {
    return TRANSIENT_CODES.has(this.code);
  }
}

Object.defineProperty(DstoreError.prototype, DSTORE_ERROR, { value: true });

/** A peer sent bytes that are not a valid frame or message. */
export class ProtocolError extends DstoreError {
  /** The request id, when it could be read before the error was found; 0 otherwise. */
  readonly requestId: number;
  /** True when the byte stream can no longer be trusted and the connection must close. */
  readonly fatal: boolean;
  /**
   * What a serving side sends instead of the ERROR frame before it closes, when the peer speaks
   * another protocol and can read only that one's errors (a RESP error line for a Redis client).
   */
  readonly foreignAnswer: Uint8Array | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { requestId?: number; fatal?: boolean; foreignAnswer?: Uint8Array } = {},
  ) {
    super(code, message);
    this.name = 'ProtocolError';
    this.requestId = options.requestId ?? 0;
    this.fatal = options.fatal ?? false;
    this.foreignAnswer = options.foreignAnswer;
  }
}

/**
 * A {@link DstoreError} made without capturing a stack trace, for the errors made by the thousand
 * when a process is overloaded: a refusal (BUSY, a closed connection, a node that is down), a
 * deadline passed, a peer's ERROR frame. Their stack would only point into a socket handler, and
 * capturing it is the most expensive part of the answer: about 5 us with the stack depth of a
 * socket handler against 0.65 us without (measured on Node 20), which made the refusals of an
 * overloaded balancer a fifth of its CPU (pressure audit 2, F3). `stack` is then just the name
 * and message.
 */
export function stacklessError(
  code: ErrorCode | (string & {}),
  message: string,
  options?: DstoreErrorOptions,
): DstoreError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new DstoreError(code, message, options);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** Shorthand for the error a request gets when its deadline passes. */
export function timeoutError(ms: number): DstoreError {
  return stacklessError(ErrorCode.TIMEOUT, `no response within ${ms} ms`);
}
