/**
 * Stable error codes raised by storage engines. Callers (the server) map them to protocol
 * status codes, so they never change meaning once published.
 *
 * - `ENGINE_CLOSED`: the engine was used after `close()` was called.
 * - `INVALID_KEY`: the key is empty (LMDB cannot store zero-length keys, and both engines
 *   enforce the same rules so data can move between them).
 * - `KEY_TOO_LARGE`: the key is longer than {@link MAX_KEY_BYTES}.
 * - `OUT_OF_SPACE`: lmdb cannot store the write: its `mapSize` limit is reached or the filesystem
 *   is full. Nothing of the call was stored.
 * - `OUT_OF_MEMORY`: the memory engine is at its `maxMemory` cap and may not (or cannot) evict.
 *   Nothing of the call was stored.
 * - `ENGINE_IO`: the underlying store failed otherwise (an I/O error of a commit or a flush); the
 *   call's writes may or may not have been stored.
 * - `SCAN_EXPIRED`: a scan cursor the engine no longer knows (lmdb keeps a bounded number of open
 *   iterations, none across a restart); the caller starts the iteration again from 0.
 * - `UNSUPPORTED_FORMAT`: the data directory holds data in a format this version does not read
 *   (for example an lmdb data dir written before entries carried versions); raised by `open`.
 */
export type StorageEngineErrorCode =
  | 'ENGINE_CLOSED'
  | 'INVALID_KEY'
  | 'KEY_TOO_LARGE'
  | 'ENGINE_IO'
  | 'OUT_OF_SPACE'
  | 'OUT_OF_MEMORY'
  | 'SCAN_EXPIRED'
  | 'UNSUPPORTED_FORMAT';

/** Error thrown (or rejected with) by every storage engine operation that fails. */
export class StorageEngineError extends Error {
  /** Machine-readable, stable reason. */
  readonly code: StorageEngineErrorCode;

  /**
   * @param code - stable reason code
   * @param message - human readable detail
   * @param options - standard `cause` chaining for wrapped lower-level errors
   */
  constructor(code: StorageEngineErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageEngineError';
    this.code = code;
  }
}

/** True when `error` is a {@link StorageEngineError}, optionally with the given code. */
export function isStorageEngineError(
  error: unknown,
  code?: StorageEngineErrorCode,
): error is StorageEngineError {
  return error instanceof StorageEngineError && (code === undefined || error.code === code);
}
