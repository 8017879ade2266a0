import { DstoreError, ErrorCode } from './errors.js';
import type { Response } from './messages.js';

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
