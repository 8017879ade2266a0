/**
 * Size limits every dstore peer enforces on what it receives. Defaults are safe for a public
 * port; raise them deliberately (and on both sides of a connection).
 */
export interface ProtocolLimits {
  /** Largest frame body accepted, in bytes. A larger declared length is refused before buffering. */
  readonly maxFrameBytes: number;
  /** Longest key, in bytes. LMDB cannot store keys over 1978 bytes, so this may not exceed that. */
  readonly maxKeyBytes: number;
  /** Longest value, in bytes. */
  readonly maxValueBytes: number;
  /** Most keys in one MGET or MSET. */
  readonly maxBatchKeys: number;
  /** Longest string field (error messages, node ids, host names, tokens), in bytes. */
  readonly maxStringBytes: number;
  /** Most entries in a STATS map. */
  readonly maxMapEntries: number;
}

/** Hard ceiling on keys: LMDB's maximum key size with its default 4 KiB pages. */
export const LMDB_MAX_KEY_BYTES = 1978;

/** The defaults; see the protocol README for the reasoning behind each. */
export const DEFAULT_LIMITS: ProtocolLimits = Object.freeze({
  maxFrameBytes: 1024 * 1024,
  maxKeyBytes: 1024,
  maxValueBytes: 1024 * 1024 - 4096,
  maxBatchKeys: 1000,
  maxStringBytes: 4096,
  maxMapEntries: 4096,
});

/** Merges overrides into the defaults and checks that the result is coherent. */
export function resolveLimits(overrides: Partial<ProtocolLimits> = {}): ProtocolLimits {
  const limits = { ...DEFAULT_LIMITS, ...overrides };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`limit ${name} must be a positive integer, got ${String(value)}`);
    }
  }
  if (limits.maxKeyBytes > LMDB_MAX_KEY_BYTES) {
    throw new RangeError(`maxKeyBytes may not exceed ${LMDB_MAX_KEY_BYTES} (LMDB's key limit)`);
  }
  if (limits.maxFrameBytes > 0xffff_ffff) {
    throw new RangeError('maxFrameBytes must fit the 32-bit length prefix');
  }
  return Object.freeze(limits);
}
