/**
 * Stable machine-readable error codes thrown by this package.
 *
 * Codes never change meaning between releases, so callers can switch on them
 * instead of parsing messages.
 */
export type HashRingErrorCode =
  | 'EMPTY_RING'
  | 'INVALID_NODE_ID'
  | 'DUPLICATE_NODE'
  | 'INVALID_WEIGHT'
  | 'UNKNOWN_NODE'
  | 'INVALID_ARGUMENT'
  | 'INCOMPATIBLE_RINGS'
  | 'UNSUPPORTED_OPERATION';

/** Error thrown for every bad input or impossible request; inspect `code`. */
export class HashRingError extends Error {
  /** Stable code identifying the failure (see README "Error codes"). */
  readonly code: HashRingErrorCode;

  /**
   * @param code - stable failure code
   * @param message - human-readable detail
   */
  constructor(code: HashRingErrorCode, message: string) {
    super(message);
    this.name = 'HashRingError';
    this.code = code;
  }
}
