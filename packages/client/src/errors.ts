import { DstoreError, ErrorCode } from '@dstore/protocol';

export { DstoreError, ErrorCode, isKnownErrorCode, ProtocolError } from '@dstore/protocol';

/**
 * Whether sending the failed command again cannot apply it twice: true for UNAVAILABLE, BUSY,
 * SHUTTING_DOWN and UNAUTHORIZED (the command certainly was not executed). TIMEOUT,
 * CONNECTION_CLOSED and ABORTED are indeterminate — a write may have happened — so they are not
 * safe to retry blindly.
 */
export function isSafeToRetry(error: unknown): boolean {
  return error instanceof DstoreError && error.notExecuted;
}

/** The error a command gets when the client is closing or closed, or gave up reconnecting. */
export function clientClosedError(reason: string): DstoreError {
  return new DstoreError(ErrorCode.CONNECTION_CLOSED, reason);
}

/** The error of a command that waited longer than its deadline (in the queue or on the wire). */
export function commandTimeoutError(timeoutMs: number, where: string): DstoreError {
  return new DstoreError(ErrorCode.TIMEOUT, `no response within ${timeoutMs} ms (${where})`);
}

/** The error of a command aborted through its AbortSignal. */
export function abortedError(signal: AbortSignal): DstoreError {
  return new DstoreError(ErrorCode.ABORTED, 'command aborted', { cause: signal.reason });
}

/** A caller passed something the client refuses before sending. */
export function invalidArgument(message: string): DstoreError {
  return new DstoreError(ErrorCode.INVALID_ARGUMENT, message);
}
