import { type LmdbDurability, LmdbEngine } from './lmdb-engine.js';
import { MemoryEngine } from './memory-engine.js';

/**
 * A storage engine holds binary keys and values.
 *
 * Keys must be 1..MAX_KEY_BYTES (1978) bytes in every engine. Values may be any length,
 * including empty.
 */
export interface StorageEngine {
  /** Which implementation this is. */
  readonly kind: 'memory' | 'lmdb';
  /**
   * Value or undefined. Synchronous: the hot path must not pay a promise per read.
   * Ownership differs per engine: memory returns a view valid until the next write to the
   * engine, lmdb a fresh copy. Callers that keep a value beyond the current tick must copy it.
   */
  get(key: Uint8Array): Uint8Array | undefined;
  /** Whether the key is stored. */
  has(key: Uint8Array): boolean;
  /** Resolves once the write is ACKNOWLEDGED as defined by the engine (lmdb: durable = flushed to disk by default). */
  set(key: Uint8Array, value: Uint8Array): Promise<void>;
  /** Resolves to whether the key existed; acknowledged like set. */
  delete(key: Uint8Array): Promise<boolean>;
  /** Number of keys. */
  count(): number;
  /** Bytes of keys+values held (exact for memory, approximate for lmdb: see `LmdbEngine.bytesUsed`). */
  bytesUsed(): number;
  /** Keys whose `position(key)` falls in the ring range (start, end] (wrapping when start >= end). Used by key migration. */
  keysInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
  ): Iterable<Uint8Array>;
  /** Every pending acknowledged write is durable when this resolves. */
  flush(): Promise<void>;
  /** Flushes and releases resources; any later call fails with `ENGINE_CLOSED`. Idempotent. */
  close(): Promise<void>;
}

/** Options selecting the non-durable in-memory engine. */
export interface MemoryEngineOptions {
  readonly engine: 'memory';
}

/** Options selecting the durable LMDB engine. */
export interface LmdbOpenOptions {
  readonly engine: 'lmdb';
  /** Directory holding the LMDB files; created if missing. */
  readonly dataDir: string;
  /** When writes are acknowledged (default `flush`: only once fsync'ed). */
  readonly durability?: LmdbDurability;
}

/** Options of {@link openEngine}. */
export type EngineOptions = MemoryEngineOptions | LmdbOpenOptions;

/** Opens the selected engine (creating the LMDB data directory if needed). */
export async function openEngine(options: EngineOptions): Promise<StorageEngine> {
  if (options.engine === 'memory') return new MemoryEngine();
  return LmdbEngine.open({ dataDir: options.dataDir, durability: options.durability ?? 'flush' });
}
