import { DstoreError, ErrorCode } from '@dstore/protocol';

export { DstoreError, ErrorCode } from '@dstore/protocol';

/**
 * Whether sending the failed command again cannot apply it twice: the command certainly was not
 * executed (`error.notExecuted`; see `classifyError` for the one classification every dstore
 * package uses). TIMEOUT, CONNECTION_CLOSED and ABORTED after sending are indeterminate: a write
 * may have happened, so they are not safe to retry blindly. `isSafeToResend` also asks
 * that the cause be transient (a bad key would fail again).
 */
export function isSafeToRetry(error: unknown): boolean {
  return error instanceof DstoreError && error.notExecuted;
}

/**
 * The error a command gets when the client is closing or closed, or gave up reconnecting. With
 * `notSent` the command never left the client (still queued, or called after close): not
 * executed, so safe to send elsewhere; otherwise it may have run.
 */
export function clientClosedError(reason: string, notSent = false): DstoreError {
  return new DstoreError(ErrorCode.CONNECTION_CLOSED, reason, notSent ? { notExecuted: true } : undefined);
}

/**
 * The TIMEOUT of a command whose deadline passed on the wire after its earlier attempts were
 * refused (not executed: `BUSY`, `UNAVAILABLE`, ...): the last refusal is named in the message and
 * is the `cause`, so a caller sees why the deadline ran out rather than only the last wait.
 * Outcome unknown, as any TIMEOUT after the command was sent.
 */
export function timeoutAfterRefusals(
  timeoutMs: number,
  retries: number,
  lastRefusal: DstoreError,
): DstoreError {
  return new DstoreError(
    ErrorCode.TIMEOUT,
    `no response within ${timeoutMs} ms (waiting for the answer; ${retries} earlier attempt${retries === 1 ? ' was' : 's were'} refused, the last with ${lastRefusal.code}: ${lastRefusal.message})`,
    { cause: lastRefusal },
  );
}

/**
 * The error of a command that waited longer than its deadline, on the wire (indeterminate) or
 * before it could be sent (`notSent`: not executed, with the last connection failure as cause).
 */
export function commandTimeoutError(
  timeoutMs: number,
  where: string,
  notSent?: { readonly cause: Error | undefined },
): DstoreError {
  const message = `no response within ${timeoutMs} ms (${where})`;
  if (notSent === undefined) return new DstoreError(ErrorCode.TIMEOUT, message);
  return new DstoreError(ErrorCode.TIMEOUT, message, { notExecuted: true, cause: notSent.cause });
}

/**
 * A TIMEOUT the server answered (a balancer whose forwarded request passed its `--request-timeout`,
 * a node's own deadline) before the client's deadline: the server's words stay in the message and
 * as `cause`, so it says which hop timed out and after how long. Outcome unknown, as any TIMEOUT
 * after the command was sent (`notExecuted` false, by its code).
 */
export function serverTimeoutError(address: string, timeoutMs: number, answered: DstoreError): DstoreError {
  return new DstoreError(
    ErrorCode.TIMEOUT,
    `the server (${address}) timed out the command within the client's ${timeoutMs} ms: ${answered.message}`,
    { cause: answered },
  );
}

/**
 * What made a connection attempt fail, for the user: the socket error (ECONNREFUSED, ENOTFOUND,
 * a TLS error), the peer's refusal (UNAUTHORIZED) or the protocol mismatch (an HTTP server)
 * rather than the UNAVAILABLE or CONNECTION_CLOSED wrappers around them.
 */
export function rootConnectCause(error: Error): Error {
  let current = error;
  while (
    current instanceof DstoreError &&
    (current.code === ErrorCode.UNAVAILABLE || current.code === ErrorCode.CONNECTION_CLOSED) &&
    current.cause instanceof Error
  ) {
    current = current.cause;
  }
  return current;
}

/**
 * The error of a command that could not be sent because connecting failed: UNAVAILABLE, not
 * executed, with the root cause (see {@link rootConnectCause}) as `cause` and in the message.
 */
export function connectFailedError(label: string, failure: Error): DstoreError {
  const cause = rootConnectCause(failure);
  const code = (cause as { code?: unknown }).code;
  const detail =
    typeof code === 'string' && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message;
  return new DstoreError(
    ErrorCode.UNAVAILABLE,
    `${label}: cannot connect, the command was not sent (${detail})`,
    {
      cause,
      notExecuted: true,
    },
  );
}

/** True when connecting failed in a way retrying the same server cannot fix: another protocol. */
export function isForeignProtocol(failure: Error): boolean {
  const cause = rootConnectCause(failure);
  return cause instanceof DstoreError && cause.code === ErrorCode.VERSION_MISMATCH;
}

/**
 * The error of a command aborted through its AbortSignal; with `notSent`, aborted before it was
 * sent (queued, or waiting to be sent again after a refusal): not executed.
 */
export function abortedError(signal: AbortSignal, notSent = false): DstoreError {
  return new DstoreError(
    ErrorCode.ABORTED,
    notSent ? 'command aborted before it was sent' : 'command aborted',
    notSent ? { cause: signal.reason, notExecuted: true } : { cause: signal.reason },
  );
}

/** A caller passed something the client refuses before sending. */
export function invalidArgument(message: string): DstoreError {
  return new DstoreError(ErrorCode.INVALID_ARGUMENT, message);
}

/** The brand {@link VersionConflictError}'s `instanceof` looks for (shared by every copy of the package). */
const VERSION_CONFLICT_ERROR: unique symbol = Symbol.for('@dstore/client.VersionConflictError');

/**
 * A compare-and-set (`ifVersion`) found the key at another version: nothing was written. Code
 * VERSION_CONFLICT (not executed, not retryable: read the key again and decide anew). As for
 * `DstoreError`, `instanceof` holds across copies of the package (the ESM and the CJS build).
 */
export class VersionConflictError extends DstoreError {
  /** Brand check across module copies; see the class comment. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: subclasses inherit this method, `this` is the class tested
    if (this !== VersionConflictError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && VERSION_CONFLICT_ERROR in value;
  }

  /** The version the command required. */
  readonly expectedVersion: number;
  /** The key's version when the command ran (0: the key did not exist). */
  readonly currentVersion: number;

  constructor(expectedVersion: number, currentVersion: number) {
    super(
      ErrorCode.VERSION_CONFLICT,
      currentVersion === 0
        ? `version conflict: expected version ${expectedVersion}, the key does not exist`
        : `version conflict: expected version ${expectedVersion}, the key is at version ${currentVersion}`,
    );
    this.name = 'VersionConflictError';
    this.expectedVersion = expectedVersion;
    this.currentVersion = currentVersion;
  }
}

Object.defineProperty(VersionConflictError.prototype, VERSION_CONFLICT_ERROR, { value: true });
