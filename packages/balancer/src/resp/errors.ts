import { ErrorCode } from '@dstore/protocol';

/**
 * The Redis error prefix of each dstore error code a data command can get. Redis clients read the
 * first word of an error as its kind; the choice follows what they do with it:
 * - `TRYAGAIN` (Redis: "retry later, nothing was done") for refusals made before the request ran:
 *   a ring change (NOT_OWNER, STALE_EPOCH), BUSY and SHUTTING_DOWN. Cluster-aware clients retry it.
 * - `CLUSTERDOWN` for UNAVAILABLE (the key's owner is down): Redis's own answer when a slot is not
 *   served; clients surface it instead of retrying in a loop.
 * - `NOPERM`, `NOAUTH`, `OOM` as Redis 6+ uses them.
 * - `ERR` for the rest (TIMEOUT and CONNECTION_CLOSED included: the request may have run, so it
 *   must not look retriable).
 * The dstore code follows the prefix, so logs name the exact cause.
 */
const PREFIXES: Readonly<Record<string, string>> = {
  [ErrorCode.NOT_OWNER]: 'TRYAGAIN',
  [ErrorCode.STALE_EPOCH]: 'TRYAGAIN',
  [ErrorCode.BUSY]: 'TRYAGAIN',
  [ErrorCode.SHUTTING_DOWN]: 'TRYAGAIN',
  [ErrorCode.UNAVAILABLE]: 'CLUSTERDOWN',
  [ErrorCode.NO_PERMISSION]: 'NOPERM',
  [ErrorCode.UNAUTHORIZED]: 'NOAUTH',
  [ErrorCode.OUT_OF_MEMORY]: 'OOM',
  [ErrorCode.OUT_OF_SPACE]: 'OOM',
};

/** The RESP error line (without `-` and CRLF) of a dstore error: `PREFIX CODE: message`. */
export function respErrorLine(code: string, message: string): string {
  return `${PREFIXES[code] ?? 'ERR'} ${code}: ${message}`;
}
