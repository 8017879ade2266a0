import { open, type RootDatabase } from 'lmdb';
import type { StorageEngine } from './engine.js';
import { StorageEngineError } from './errors.js';
import { assertOpen, assertValidKey, inRingRange, MAX_KEY_BYTES } from './keys.js';

/**
 * When an LMDB write is acknowledged.
 *
 * - `flush` (default): after the transaction holding it is committed AND fsync'ed. Nothing
 *   acknowledged is lost on process crash, OS crash or power loss.
 * - `commit`: as soon as the transaction is committed (visible, in the OS page cache). Survives
 *   a process crash (SIGKILL); an OS crash or power loss can lose the writes of the last
 *   commits that were not yet flushed (normally a few milliseconds' worth).
 */
export type LmdbDurability = 'flush' | 'commit';

/** Options of {@link LmdbEngine.open}. */
export interface LmdbEngineOptions {
  /** Directory holding `data.mdb` and `lock.mdb`; created if missing. */
  readonly dataDir: string;
  /** When writes are acknowledged; see {@link LmdbDurability}. Default `flush`. */
  readonly durability?: LmdbDurability;
}

/** Group-commit counters of an {@link LmdbEngine}. */
export interface LmdbEngineStats {
  /** Acknowledgement mode in force. */
  readonly durability: LmdbDurability;
  /** LMDB write transactions committed since open (each batches every write issued in one event turn). */
  readonly commits: number;
  /** Distinct waits for a disk flush started by acknowledgements; concurrent writers share one. */
  readonly flushWaits: number;
}

/** The subset of `getStats()` used here (lmdb-js types it as `{}`). */
interface LmdbStats {
  readonly pageSize: number;
  readonly entryCount: number;
  readonly treeBranchPageCount: number;
  readonly treeLeafPageCount: number;
  readonly overflowPages: number;
}

type Db = RootDatabase<Uint8Array, Uint8Array>;

function ioError(operation: string, cause: unknown): StorageEngineError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new StorageEngineError('ENGINE_IO', `lmdb ${operation} failed: ${detail}`, { cause });
}

/** Keys LMDB could never have stored can be answered without touching it. */
function isStorable(key: Uint8Array): boolean {
  return key.byteLength > 0 && key.byteLength <= MAX_KEY_BYTES;
}

/**
 * Durable engine on LMDB (via lmdb-js): memory-mapped B-tree, synchronous reads, writes batched
 * by lmdb-js into one transaction per event turn and committed on its writer thread.
 *
 * Group commit: every `set`/`delete` issued in the same event turn lands in the same LMDB
 * transaction, and every writer resuming after a given commit shares one wait for the flush
 * that covers it, so N concurrent writes cost one commit and one fsync, not N.
 *
 * Values returned by {@link LmdbEngine.get} are fresh copies owned by the caller.
 */
export class LmdbEngine implements StorageEngine {
  /** Engine discriminator. */
  readonly kind = 'lmdb' as const;
  private closed = false;
  private commits = 0;
  private flushWaits = 0;
  private sharedFlush: { readonly epoch: number; readonly done: Promise<void> } | undefined;

  private constructor(
    private readonly db: Db,
    /** Acknowledgement mode in force. */
    readonly durability: LmdbDurability,
  ) {
    // Fires synchronously before the commit's write promises resolve, so a writer resuming
    // after its commit always sees an epoch that includes it.
    db.on('aftercommit', () => {
      this.commits++;
    });
  }

  /** Opens (creating if needed) the database in `options.dataDir`. */
  static async open(options: LmdbEngineOptions): Promise<LmdbEngine> {
    let db: Db;
    try {
      db = open<Uint8Array, Uint8Array>({
        path: options.dataDir,
        encoding: 'binary',
        keyEncoding: 'binary',
        // Explicit although it is the default off Windows: the flush-after-commit pipeline is
        // what lets group commit overlap the fsync of one batch with the commit of the next.
        overlappingSync: true,
      });
    } catch (error) {
      throw ioError('open', error);
    }
    return new LmdbEngine(db, options.durability ?? 'flush');
  }

  /** A copy of the value stored under `key`, or undefined. */
  get(key: Uint8Array): Uint8Array | undefined {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return undefined;
    try {
      return this.db.getBinary(key);
    } catch (error) {
      throw ioError('get', error);
    }
  }

  /** Whether `key` is stored (committed). */
  has(key: Uint8Array): boolean {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return false;
    try {
      return this.db.doesExist(key);
    } catch (error) {
      throw ioError('has', error);
    }
  }

  /** Stores `value` under `key`; resolves once acknowledged per {@link LmdbEngine.durability}. */
  async set(key: Uint8Array, value: Uint8Array): Promise<void> {
    assertOpen(this.closed, this.kind);
    assertValidKey(key);
    await this.commit('put', () => this.db.put(key, value));
    await this.acknowledge();
  }

  /** Removes `key`; resolves to whether it existed, once acknowledged like {@link LmdbEngine.set}. */
  async delete(key: Uint8Array): Promise<boolean> {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return false;
    // `remove()` resolves true whether or not the key existed; `removeSync` inside a queued
    // transaction reports existence atomically, in order with the other writes of the batch.
    const existed = await this.commit('delete', () => this.db.transaction(() => this.db.removeSync(key)));
    await this.acknowledge();
    return existed;
  }

  /** Number of keys, from the B-tree header (O(1)). */
  count(): number {
    return this.pageStats().entryCount;
  }

  /**
   * Approximate: bytes of the B-tree pages in use (branch + leaf + overflow pages × page size).
   * Includes LMDB's per-entry node headers, page headers and partially filled pages, so it
   * over-estimates the raw keys+values (typically by 1.2–2× for small entries); it excludes
   * free pages and the file's unused pre-allocated space.
   */
  bytesUsed(): number {
    const stats = this.pageStats();
    const pages = stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages;
    return pages * stats.pageSize;
  }

  /** Keys whose ring position lies in (start, end], wrapping when start >= end; read from one snapshot. */
  *keysInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
  ): Iterable<Uint8Array> {
    assertOpen(this.closed, this.kind);
    for (const key of this.db.getKeys()) {
      if (inRingRange(position(key), range.start, range.end)) yield key;
    }
  }

  /** Resolves once every write issued so far (in any durability mode) is fsync'ed. */
  async flush(): Promise<void> {
    assertOpen(this.closed, this.kind);
    await this.waitFlushed();
  }

  /** Flushes, then closes the environment; later calls fail with `ENGINE_CLOSED`. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.waitFlushed();
    try {
      await this.db.close();
    } catch (error) {
      throw ioError('close', error);
    }
  }

  /** Group-commit counters. */
  stats(): LmdbEngineStats {
    return { durability: this.durability, commits: this.commits, flushWaits: this.flushWaits };
  }

  private async commit<T>(operation: string, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      throw ioError(operation, error);
    }
  }

  private acknowledge(): Promise<void> {
    if (this.durability === 'commit') return Promise.resolve();
    // LMDB flushes in commit order and `db.flushed` tracks the newest transaction, so a wait
    // started after commit #n covers every commit <= n: all writers resuming after the same
    // commit reuse it, which is what makes N concurrent writes cost one fsync wait.
    if (this.sharedFlush?.epoch !== this.commits) {
      this.flushWaits++;
      this.sharedFlush = { epoch: this.commits, done: this.waitFlushed() };
    }
    return this.sharedFlush.done;
  }

  private async waitFlushed(): Promise<void> {
    try {
      await this.db.flushed;
    } catch (error) {
      throw ioError('flush', error);
    }
  }

  private pageStats(): LmdbStats {
    assertOpen(this.closed, this.kind);
    return this.db.getStats() as LmdbStats;
  }
}
