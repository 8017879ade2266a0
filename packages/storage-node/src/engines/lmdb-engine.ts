import { statfsSync } from 'node:fs';
import { type Database, type DatabaseOptions, open, type RootDatabase } from 'lmdb';
import {
  type Decision,
  type EntryHeader,
  isExpired,
  isNewerEntry,
  type ManyDecider,
  type ManyUpdateOptions,
  type Mutation,
  type ScannedEntry,
  type ScanOptions,
  type ScanPage,
  type StorageEngine,
  type StorageHealth,
  type UpdateOptions,
  type VersionedEntry,
  type VersionedValue,
} from './engine.js';
import { StorageEngineError } from './errors.js';
import {
  assertOpen,
  assertUint32,
  assertValidKey,
  inRingRange,
  keyToString,
  MAX_KEY_BYTES,
  MAX_SCAN_CURSOR,
} from './keys.js';
import { assertVersion, VERSIONS_PER_MS, VersionClock } from './version-clock.js';

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
  /**
   * Most bytes the data may occupy, counted as {@link LmdbEngine.bytesUsed} counts them (B-tree
   * pages in use, so deletes give room back). A write that would pass it fails with
   * `OUT_OF_SPACE`; reads and deletes go on. 0 (default): no fixed limit, the data grows while its
   * filesystem has room (less a reserve kept for deletes, see {@link diskReserveBytes}). lmdb-js
   * grows the memory map itself as the data grows, so this is a limit, not a pre-allocation.
   */
  readonly mapSize?: number;
}

/**
 * Free space kept on the data's filesystem: writes that would eat into it are refused with
 * OUT_OF_SPACE, so that deletes (LMDB copies the pages it changes) and the pages of recent
 * transactions still find room. 2% of the filesystem, within 256 KiB..64 MiB.
 */
export function diskReserveBytes(filesystemBytes: number): number {
  return Math.min(64 * 1024 * 1024, Math.max(256 * 1024, Math.floor(filesystemBytes * 0.02)));
}

/**
 * How far past the map size entries the cluster places here may go, as a fraction of it (see
 * `StorageEngine.pastClientRoom`): what a head admitted, in flight before this member's answers
 * told it to stop, must not be refused (as Redis replicas ignore `maxmemory`).
 */
const PLACEMENT_HEADROOM = 1 / 8;

/** At most how close to its limit the data may be before the engine says it is past its client room. */
const FULL_MARGIN_BYTES = 256 * 1024;

/** Longest interval between two reads of the filesystem's free space (one `statfs`). */
const STATFS_INTERVAL_MS = 250;
/** errno values (as lmdb-js reports them) that mean "no room": ENOSPC, EDQUOT, MDB_MAP_FULL. */
const NO_SPACE_ERRNOS: ReadonlySet<number> = new Set([28, 122, -30792]);
const EIO = 5;
/** How long a failed commit's cause is awaited (lmdb-js settles it in the same turn). */
const COMMIT_CAUSE_WAIT_MS = 100;
/** Delay and number of attempts of the commit made to unblock `flushed` after a failed one. */
const KICK_DELAY_MS = 20;
const KICK_ATTEMPTS = 250;
/**
 * How long writers of successful commits still wait for their flush once a later commit failed
 * and no commit succeeded since: past it they get ENGINE_IO (STORAGE_ERROR, indeterminate: the
 * write may well be on disk) instead of waiting for their client's deadline.
 */
const FLUSH_CONFIRM_MS = 1000;
/** What a flush wait's race yields when a commit failed first. */
const COMMIT_FAILED = Symbol('commit failed');
/** Open scan iterations an engine remembers (the last key of each); the least recently used goes first. */
export const MAX_SCAN_ITERATIONS = 1024;

/** Group-commit counters of an {@link LmdbEngine}. */
export interface LmdbEngineStats {
  /** Acknowledgement mode in force. */
  readonly durability: LmdbDurability;
  /** LMDB write transactions committed since open (each batches every write issued in one event turn). */
  readonly commits: number;
  /** Distinct waits for a disk flush started by acknowledgements; concurrent writers share one. */
  readonly flushWaits: number;
}

/**
 * The on-disk format this version writes, recorded in the environment (see ENGINES.md, "LMDB
 * layout"). Format 1 (before entry versions) kept bare values in LMDB's main database; format 2
 * keeps each entry as a 9-byte header (kind, writeEpoch, a uint32 per-key counter) and the value
 * in the named database `dstore-entries`, and the format number and the tombstone count in
 * `dstore-meta`; format 3 adds a third entry kind, a value with an expiry time (a 17-byte
 * header); format 4 adds three kinds whose header holds a version below 2^53 instead of the
 * counter (13 bytes, 21 with an expiry time), and the version clock's high-water mark in
 * `dstore-meta`. Formats 2 and 3 are format 4 data without the new kinds, so such an environment
 * is read as it is and its marker raised to 4 on open (after which an older version refuses it
 * rather than misreading the new kinds); its entries keep their counter as their version (below
 * 2^32, so below every version issued since) until they are written again.
 */
export const LMDB_FORMAT = 4;
/** The older formats this version opens as they are (see {@link LMDB_FORMAT}). */
const LMDB_OLDER_FORMATS: ReadonlySet<number> = new Set([2, 3]);

/** Named database of the entries: key -> header + value bytes. */
const ENTRIES_DB = 'dstore-entries';
/** Named database of the environment's metadata: format marker, tombstone count, version mark. */
const META_DB = 'dstore-meta';
const FORMAT_KEY = Buffer.from('format', 'latin1');
const TOMBSTONES_KEY = Buffer.from('tombstones', 'latin1');
/** The version clock's high-water mark: no version at or above it was issued (decimal ASCII). */
const VERSIONS_KEY = Buffer.from('versions', 'latin1');
/**
 * How far ahead of the clock the stored high-water mark is set: one second of wall-clock
 * versions, so that the mark is written about once a second under load, not once per write.
 */
const VERSION_MARK_BLOCK = VERSIONS_PER_MS * 1000;

/** Header before the value bytes: kind (1 byte), writeEpoch (uint32 BE), version (float64 BE). */
const HEADER_BYTES = 13;
/** Header of an expiring value: the same 13 bytes, then the expiry time (float64 BE, ms since the Unix epoch). */
const EXPIRING_HEADER_BYTES = 21;
const KIND_VALUE = 4;
const KIND_TOMBSTONE = 5;
/** A value with an expiry time. */
const KIND_EXPIRING = 6;
const EPOCH_OFFSET = 1;
const VERSION_OFFSET = 5;
const EXPIRE_OFFSET = 13;
/**
 * The kinds of formats 2 and 3 (read, never written): their header has a uint32 counter where
 * the version is, 9 bytes long (17 with the expiry time at offset 9).
 */
const OLD_KIND_VALUE = 1;
const OLD_KIND_TOMBSTONE = 2;
const OLD_KIND_EXPIRING = 3;
const OLD_HEADER_BYTES = 9;
const OLD_EXPIRE_OFFSET = 9;

function isTombstone(stored: Uint8Array): boolean {
  return stored[0] === KIND_TOMBSTONE || stored[0] === OLD_KIND_TOMBSTONE;
}

function isExpiring(stored: Uint8Array): boolean {
  return stored[0] === KIND_EXPIRING || stored[0] === OLD_KIND_EXPIRING;
}

function view(stored: Uint8Array): Buffer {
  return Buffer.from(stored.buffer, stored.byteOffset, stored.length);
}

/** The version of a stored entry (an old-format entry's counter). */
function versionOf(stored: Uint8Array): number {
  return stored[0]! >= KIND_VALUE
    ? view(stored).readDoubleBE(VERSION_OFFSET)
    : readUint32(stored, VERSION_OFFSET);
}

/** The expiry time of a stored entry (0 = none). */
function expireAtOf(stored: Uint8Array): number {
  if (stored[0] === KIND_EXPIRING) return view(stored).readDoubleBE(EXPIRE_OFFSET);
  if (stored[0] === OLD_KIND_EXPIRING) return view(stored).readDoubleBE(OLD_EXPIRE_OFFSET);
  return 0;
}

/** Whether a stored entry is a value that has not expired at `now`. */
function isLiveValue(stored: Uint8Array | undefined, now: number): boolean {
  if (stored === undefined) return false;
  const kind = stored[0];
  if (kind === KIND_VALUE || kind === OLD_KIND_VALUE) return true;
  return isExpiring(stored) && !isExpired(expireAtOf(stored), now);
}

/** Where a stored value's bytes start. */
function valueStart(stored: Uint8Array): number {
  switch (stored[0]) {
    case KIND_VALUE:
      return HEADER_BYTES;
    case KIND_EXPIRING:
      return EXPIRING_HEADER_BYTES;
    case OLD_KIND_EXPIRING:
      return OLD_HEADER_BYTES + 8;
    default:
      return OLD_HEADER_BYTES;
  }
}

/** `Uint8Array.prototype.slice` copies; Buffer's own `slice` would return a view of lmdb's reused buffer. */
const copyBytes = Uint8Array.prototype.slice;

/** The subset of `getStats()` used here (lmdb-js types it as `{}`). */
interface LmdbStats {
  readonly pageSize: number;
  readonly entryCount: number;
  readonly treeBranchPageCount: number;
  readonly treeLeafPageCount: number;
  readonly overflowPages: number;
  /** Environment info (in every database's stats): the data file's last page in use. */
  readonly lastPageNumber: number;
}

/** What the space check compares a write with; renewed once per commit (see `refreshUsage`). */
interface SpaceUsage {
  /** Bytes of B-tree pages in use (`bytesUsed()`). */
  used: number;
  /** Most bytes `used` may reach: `mapSize`, or the data file plus the free disk less the reserve. */
  limit: number;
  /** Whether `limit` is the configured map size (else the disk's room). */
  mapLimited: boolean;
  /**
   * How far past `limit` entries the cluster places here may go (`applyIfNewer`, see
   * `StorageEngine.pastClientRoom`): an eighth of the map size, within the disk's room; on a
   * disk-limited engine half the disk reserve.
   */
  headroom: number;
  pageSize: number;
  /** Free bytes of the filesystem (for unprivileged users), as of `statfsAt`. */
  diskFree: number;
  /** Size of the filesystem, in bytes. */
  diskTotal: number;
}

/** The errno of a failed lmdb-js write: its own, or that of the commit it was part of. */
async function commitCause(error: unknown): Promise<unknown> {
  // lmdb-js rejects every write of a failed commit with a generic error whose `commitError`
  // promise rejects with the real one. Nobody else listens to that promise, so without a handler
  // here its rejection would be unhandled and end the process.
  const commitError = (error as { commitError?: unknown } | null)?.commitError;
  if (!(commitError instanceof Promise)) return error;
  let timer: NodeJS.Timeout | undefined;
  const cause = await Promise.race([
    commitError.then(
      () => error,
      (reason: unknown) => reason,
    ),
    new Promise<unknown>((resolve) => {
      timer = setTimeout(() => resolve(error), COMMIT_CAUSE_WAIT_MS);
    }),
  ]);
  clearTimeout(timer);
  return cause;
}

/** lmdb-js's error for every write of a failed commit (the real cause is in `commitError`). */
function isCommitFailure(error: unknown): boolean {
  return error instanceof Error && (error as { commitError?: unknown }).commitError instanceof Promise;
}

const ignore = (): void => undefined;

/** A promise with its settle functions. */
interface Deferred<T> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T) => void;
  readonly reject: (error: Error) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((settle, fail) => {
    resolve = settle;
    reject = fail;
  });
  return { promise, resolve, reject };
}

/**
 * Handles a rejection of the promise lmdb-js creates for the start of an event-turn batch. lmdb-js
 * (3.x, `write.js`) writes a "batch start" instruction for every event turn with writes and calls
 * it from its `setImmediate` task, dropping the promise it returns. When that instruction begins a
 * new transaction, the promise is a fresh commit promise that nothing else holds; if the commit
 * fails it rejects with nobody listening, and Node's default `--unhandled-rejections=throw` ended
 * the process (how a full disk crashed nodes). The writers of the failed commit get their own
 * rejections, which the engine maps (see `LmdbEngine.fail`), so here the error is only consumed,
 * with the `commitError` promise it carries (rejected with the real cause: when the batch start
 * is the only rejected write of the commit, nothing else would listen to that one either).
 */
function consumeBatchFailure(error: unknown): void {
  const commitError = (error as { commitError?: unknown } | null)?.commitError;
  if (commitError instanceof Promise) commitError.catch(ignore);
}

function errnoOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

type Root = RootDatabase<Uint8Array, Uint8Array>;
type Db = Database<Uint8Array, Uint8Array>;
/** lmdb-js honours `create: false` (open only if it exists) but does not declare it. */
type NamedDbOptions = DatabaseOptions & { readonly name: string; readonly create?: boolean };

/**
 * Bytes a stored entry adds to the B-tree, from above: twice its node, or its overflow pages when
 * large. Twice, because a leaf page LMDB splits keeps half of its nodes, and keys written in order
 * (a bulk load, a migration's stream) leave every page half full: measured, 100-byte values cost
 * ~250 bytes each where the node is ~135. Priced at the node alone, the writes in flight together
 * under one stale `used` (a pipelined preload) took the data ~30-80% past `--map-size`.
 */
function entryCost(keyBytes: number, valueBytes: number, pageSize: number): number {
  // LMDB puts a node bigger than about half a page on overflow pages of its own.
  const node = keyBytes + valueBytes + HEADER_BYTES + 16;
  return node * 2 < pageSize ? node * 2 : Math.ceil((valueBytes + HEADER_BYTES) / pageSize) * pageSize + 64;
}

function ioError(operation: string, cause: unknown): StorageEngineError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new StorageEngineError('ENGINE_IO', `lmdb ${operation} failed: ${detail}`, { cause });
}

function formatError(dataDir: string, found: string, cause?: unknown): StorageEngineError {
  return new StorageEngineError(
    'UNSUPPORTED_FORMAT',
    `the lmdb data dir ${dataDir} holds ${found}; this version of dstore-node reads ` +
      `format ${LMDB_FORMAT} (a version header on every entry, tombstones, expiry times) and ` +
      `formats 2 and 3 (older version headers, raised to format ${LMDB_FORMAT} on open) and does not convert other formats ` +
      'data in place. Start this node on an empty data dir (it joins as a new member) or run the ' +
      'version that wrote it',
    cause === undefined ? undefined : { cause },
  );
}

/** Keys LMDB could never have stored can be answered without touching it. */
function isStorable(key: Uint8Array): boolean {
  return key.byteLength > 0 && key.byteLength <= MAX_KEY_BYTES;
}

function readUint32(bytes: Uint8Array, offset: number): number {
  // Multiplication rather than `<< 24`, which would turn values of 2^31 and up negative.
  return (
    bytes[offset]! * 0x1000000 + ((bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!)
  );
}

/**
 * A stored entry: the header, then (for a value) its bytes. The version may be patched in later
 * ({@link setVersion}). A value with an expiry time (`expireAt` > 0) is stored as {@link KIND_EXPIRING}.
 */
function encodeEntry(
  kind: number,
  writeEpoch: number,
  version: number,
  value?: Uint8Array,
  expireAt = 0,
): Buffer {
  assertUint32(writeEpoch, 'writeEpoch');
  assertVersion(version);
  const expiring = kind === KIND_VALUE && expireAt > 0;
  const header = expiring ? EXPIRING_HEADER_BYTES : HEADER_BYTES;
  const stored = Buffer.allocUnsafe(header + (value?.byteLength ?? 0));
  stored[0] = expiring ? KIND_EXPIRING : kind;
  stored.writeUInt32BE(writeEpoch, EPOCH_OFFSET);
  stored.writeDoubleBE(version, VERSION_OFFSET);
  if (expiring) stored.writeDoubleBE(expireAt, EXPIRE_OFFSET);
  if (value !== undefined) stored.set(value, header);
  return stored;
}

/** Writes `version` into an entry made by {@link encodeEntry}. */
function setVersion(stored: Buffer, version: number): void {
  stored.writeDoubleBE(version, VERSION_OFFSET);
}

/** Small counters in the meta database are decimal ASCII, readable with `mdb_dump`. */
function encodeCount(value: number): Buffer {
  return Buffer.from(String(value), 'latin1');
}

function decodeCount(bytes: Uint8Array): number {
  let value = 0;
  // `length`, not the byte length: lmdb's reused read buffer reports the value's size there.
  for (let i = 0; i < bytes.length; i++) {
    const digit = bytes[i]! - 0x30;
    if (digit < 0 || digit > 9) return Number.NaN;
    value = value * 10 + digit;
  }
  return value;
}

function entryCount(db: Db | Root): number {
  return (db.getStats() as LmdbStats).entryCount;
}

/**
 * Opens (or, in a new environment, creates) the named databases of format 2 and checks the
 * format marker. Refuses, without writing anything, an environment holding format 1 data (bare
 * values in the main database) or an unknown format.
 */
function openLayout(root: Root, dataDir: string): { entries: Db; meta: Db } {
  const named = (name: string, create: boolean): Db | undefined => {
    const options: NamedDbOptions = { name, encoding: 'binary', keyEncoding: 'binary', create };
    // openDB returns undefined (its types say otherwise) when `create` is false and there is none.
    return root.openDB<Uint8Array, Uint8Array>(options) as Db | undefined;
  };
  let meta: Db | undefined;
  if (entryCount(root) > 0) {
    // The main database of a format 2 environment holds only the records of its named
    // databases; anything else there is format 1 user data.
    try {
      meta = named(META_DB, false);
    } catch (error) {
      // MDB_INCOMPATIBLE: a format 1 key happens to be named like the meta database.
      throw formatError(dataDir, 'format 1 data (bare values in the main database)', error);
    }
    if (meta === undefined) throw formatError(dataDir, 'format 1 data (bare values in the main database)');
  }
  meta ??= named(META_DB, true) as Db;
  const entries = named(ENTRIES_DB, true) as Db;
  const marker = meta.getBinary(FORMAT_KEY);
  if (marker === undefined) {
    // A new environment, or one whose first open stopped before the marker was written (its
    // entries database is then still empty, since nothing is written before the marker).
    if (entryCount(entries) > 0) throw formatError(dataDir, 'entries but no format marker');
    meta.putSync(FORMAT_KEY, encodeCount(LMDB_FORMAT));
  } else if (LMDB_OLDER_FORMATS.has(decodeCount(marker))) {
    // Nothing to convert: formats 3 and 4 only add entry kinds. Raised first, so that a version
    // that reads only an older format never opens data holding kinds it does not know.
    meta.putSync(FORMAT_KEY, encodeCount(LMDB_FORMAT));
  } else if (decodeCount(marker) !== LMDB_FORMAT) {
    throw formatError(dataDir, `format ${Buffer.from(marker).toString('latin1')}`);
  }
  return { entries, meta };
}

/**
 * Durable engine on LMDB (via lmdb-js): memory-mapped B-tree, synchronous reads, writes batched
 * by lmdb-js into one transaction per event turn and committed on its writer thread.
 *
 * Every entry is stored as a 13-byte header (kind: value or tombstone, writeEpoch: uint32
 * big-endian, version: float64 big-endian; 8 more bytes of expiry time for an expiring value)
 * followed by the value bytes, in the named database `dstore-entries`; a tombstone
 * is the header alone. Writes that depend on the entry they replace (deletes, tombstones, the
 * version comparisons of `applyIfNewer`) run as callbacks of an lmdb-js queued transaction and
 * read it inside the transaction that writes; a client SET is a native queued put when nothing
 * it could depend on is pending (see {@link LmdbEngine.set}). Either way writes apply in the
 * order the calls were made, and a crash keeps or loses each call's writes whole.
 *
 * Group commit: every write issued in the same event turn lands in the same LMDB transaction,
 * and every writer resuming after a given commit shares one wait for the flush that covers it,
 * so N concurrent writes cost one commit and one fsync, not N.
 *
 * Values returned by {@link LmdbEngine.get} are fresh copies owned by the caller.
 */
export class LmdbEngine implements StorageEngine {
  /** Engine discriminator. */
  readonly kind = 'lmdb' as const;
  private closed = false;
  /** Open scan iterations: cursor -> last key returned, least recently used first. */
  private readonly scanIterations = new Map<number, Uint8Array>();
  private lastScanCursor = 0;
  private commits = 0;
  private flushWaits = 0;
  private sharedFlush: { readonly epoch: number; readonly done: Promise<void> } | undefined;
  /** Transaction callbacks queued and not yet settled; while any is, SETs queue callbacks too. */
  private callbacksQueued = 0;
  /** Whether the committed tombstone count is above 0 (renewed whenever no callback is queued). */
  private tombstonesStored: boolean;
  /** The stored high-water mark of {@link clock}: no version at or above it was issued. */
  private versionMark: number;
  /** Keys whose expired value a read found and whose reclaiming is queued (latin1). */
  private readonly reclaiming = new Set<string>();
  /** Last key examined by {@link LmdbEngine.sweepExpired}; undefined: start from the first. */
  private sweepCursor: Uint8Array | undefined;
  private retainExpired: (key: Uint8Array) => boolean = () => false;
  /** Estimated bytes of the writes issued and not settled yet (the space check counts them as used). */
  private pendingBytes = 0;
  private readonly usage: SpaceUsage = {
    used: 0,
    limit: Number.POSITIVE_INFINITY,
    mapLimited: false,
    headroom: 0,
    pageSize: 4096,
    diskFree: Number.POSITIVE_INFINITY,
    diskTotal: 0,
  };
  /** A commit happened since `usage` was computed. */
  private usageStale = true;
  /** Size of the data file as of the last `usage` (LMDB's last page in use). */
  private fileBytes = 0;
  private statfsAt = Number.NEGATIVE_INFINITY;
  /** Why writes are refused or failing ('' when they are not), and what clears it. */
  private degraded = '';
  private degradedBy: 'space' | 'io' | undefined;
  /** The estimated size of the write refused last: room for it clears a space degradation. */
  private refusedBytes = 0;
  private refusedWrites = 0;
  private failedWrites = 0;
  /**
   * The newest commit failed. lmdb-js's `flushed` then waits for that batch's flush, which never
   * comes until another commit succeeds, so flush() and close() must not simply await it.
   */
  private lastCommitFailed = false;
  /** Attempts left of the commit that unblocks `flushed` after a failed one (see {@link kickCommit}). */
  private kicksLeft = 0;
  private kickTimer: NodeJS.Timeout | undefined;
  /**
   * The flush waits in progress, woken when a commit fails (they may hold its `flushed`). One
   * entry per wait, removed when it ends: nothing long-lived collects a reaction per commit.
   */
  private readonly flushWaiters = new Set<(outcome: typeof COMMIT_FAILED) => void>();
  /**
   * Made only while a flush wait a failed commit woke needs it: resolved (then cleared) by the
   * next successful write, rejected (then cleared) {@link FLUSH_CONFIRM_MS} after a failed commit
   * no successful one followed.
   */
  private nextCommit: Deferred<void> | undefined;
  private flushGiveUpTimer: NodeJS.Timeout | undefined;
  /** Attaches a handler to the promise lmdb-js dropped for the current batch's start. */
  private readonly watchBatch = (): void => {
    // Both callbacks: with no commit promise pending, `committed` calls the first unconditionally.
    this.root.committed.then(ignore, consumeBatchFailure);
  };

  /**
   * The node-wide version clock, started from the stored high-water mark, so a restart never
   * issues a version again (see {@link markVersions}).
   */
  readonly clock: VersionClock;

  private constructor(
    private readonly root: Root,
    private readonly entries: Db,
    private readonly meta: Db,
    /** Acknowledgement mode in force. */
    readonly durability: LmdbDurability,
    private readonly dataDir: string,
    /** The configured limit on the data's bytes; 0 = the disk's room. */
    readonly mapSize: number,
  ) {
    this.tombstonesStored = this.tombstoneCount() > 0;
    const mark = this.meta.getBinary(VERSIONS_KEY);
    this.versionMark = mark === undefined ? 0 : decodeCount(mark);
    this.clock = new VersionClock(this.versionMark);
    // Fires synchronously before the commit's write promises resolve, so a writer resuming
    // after its commit always sees an epoch that includes it. Failed commits fire it too.
    root.on('aftercommit', () => {
      this.commits++;
      this.usageStale = true;
    });
    // lmdb-js calls the `beforecommit` listeners in its event-turn task just before it calls, and
    // drops the promise of, the batch start (see `consumeBatchFailure`); a microtask queued here
    // runs right after that task, when `committed` is exactly that promise (or the one the turn's
    // writes already share, which is handled twice, harmlessly). One listener and one handler per
    // batch, none per write.
    root.on('beforecommit', () => queueMicrotask(this.watchBatch));
  }

  /**
   * Opens (creating if needed) the database in `options.dataDir`. Rejects with
   * `UNSUPPORTED_FORMAT` when the directory holds data of another format (see {@link LMDB_FORMAT}).
   */
  static async open(options: LmdbEngineOptions): Promise<LmdbEngine> {
    let root: Root;
    try {
      root = open<Uint8Array, Uint8Array>({
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
    try {
      const { entries, meta } = openLayout(root, options.dataDir);
      return new LmdbEngine(
        root,
        entries,
        meta,
        options.durability ?? 'flush',
        options.dataDir,
        options.mapSize ?? 0,
      );
    } catch (error) {
      await root.close().catch(() => undefined);
      throw error instanceof StorageEngineError ? error : ioError('open', error);
    }
  }

  /** A copy of the value stored under `key`, or undefined (absent or tombstone). */
  get(key: Uint8Array): Uint8Array | undefined {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return undefined;
    try {
      // The fast read fills lmdb-js's reused buffer; copying the value part out of it costs the
      // same single copy `getBinary` made before there was a header.
      const stored = this.entries.getBinaryFast(key);
      if (stored === undefined) return undefined;
      if (stored[0] === KIND_VALUE) return copyBytes.call(stored, HEADER_BYTES, stored.length);
      if (!this.liveOrReclaim(key, stored)) return undefined;
      return copyBytes.call(stored, valueStart(stored), stored.length);
    } catch (error) {
      throw ioError('get', error);
    }
  }

  /**
   * Whether `stored` (the entry under `key`) is a live value; an expired one is reclaimed in the
   * background (a write cannot be made in a synchronous read), once per key at a time.
   */
  private liveOrReclaim(key: Uint8Array, stored: Uint8Array): boolean {
    if (stored[0] === KIND_VALUE || stored[0] === OLD_KIND_VALUE) return true;
    if (!isExpiring(stored)) return false;
    if (!isExpired(expireAtOf(stored), Date.now())) return true;
    const name = keyToString(key);
    if (!this.reclaiming.has(name)) {
      this.reclaiming.add(name);
      const copy = Uint8Array.from(key);
      this.reclaimExpired([copy]).then(
        () => this.reclaiming.delete(name),
        () => this.reclaiming.delete(name),
      );
    }
    return false;
  }

  /** Whether `key` holds a value (committed). */
  has(key: Uint8Array): boolean {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return false;
    try {
      const stored = this.entries.getBinaryFast(key);
      return stored !== undefined && this.liveOrReclaim(key, stored);
    } catch (error) {
      throw ioError('has', error);
    }
  }

  /** A copy of the value stored under `key` with its version, or undefined (absent or tombstone). */
  getEntry(key: Uint8Array): VersionedValue | undefined {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return undefined;
    try {
      const stored = this.entries.getBinaryFast(key);
      if (stored === undefined || !this.liveOrReclaim(key, stored)) return undefined;
      return decodeValue(stored);
    } catch (error) {
      throw ioError('get', error);
    }
  }

  /** The header of the entry under `key` (value or tombstone), or undefined. */
  header(key: Uint8Array): EntryHeader | undefined {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return undefined;
    try {
      const stored = this.entries.getBinaryFast(key);
      return stored === undefined ? undefined : decodeHeader(stored);
    } catch (error) {
      throw ioError('get', error);
    }
  }

  /**
   * Stores `value` as a client write at `writeEpoch` with the next version of {@link clock},
   * replacing a value or tombstone in one put; resolves once acknowledged per
   * {@link LmdbEngine.durability}.
   *
   * Two paths with one outcome. When no transaction callback is queued and the environment holds
   * no tombstone, the version is taken now and the write is lmdb-js's native asynchronous `put`:
   * no JavaScript runs inside the write transaction, which is what makes it ~15-25% cheaper per
   * write at small batches (BENCHMARKS.md, "Cluster map"). Otherwise it is a transaction callback
   * that takes its version where it writes (after the callbacks queued before it, which take
   * theirs there too) and keeps the tombstone count. lmdb-js runs queued callbacks after the
   * queued single puts of a batch, so a put is only ever issued while no callback is queued: call
   * order, and so the order of versions, is kept.
   */
  async set(key: Uint8Array, value: Uint8Array, writeEpoch = 0, expireAt = 0): Promise<void> {
    assertOpen(this.closed, this.kind);
    assertValidKey(key);
    // Encoded now: `value` may be a view of a network buffer, the transaction runs later.
    const stored = encodeEntry(KIND_VALUE, writeEpoch, 0, value, expireAt);
    const cost = entryCost(key.byteLength, value.byteLength, this.usage.pageSize);
    this.reserveSpace(cost, true);
    try {
      await this.storeValue(key, stored);
    } finally {
      this.pendingBytes -= cost;
    }
    await this.acknowledge();
  }

  /** The write of {@link LmdbEngine.set}, on one of its two paths. */
  private async storeValue(key: Uint8Array, stored: Buffer): Promise<void> {
    if (this.callbacksQueued === 0 && !this.tombstonesStored) {
      setVersion(stored, this.clock.next());
      const mark = this.markVersions();
      // Issued before the entry's put, so it commits with it (one batch) or before it.
      if (mark !== undefined) this.meta.put(VERSIONS_KEY, mark).catch(this.markLost);
      try {
        await this.entries.put(key, stored);
        this.wrote();
      } catch (error) {
        throw await this.writeFailed('put', error);
      }
    } else {
      await this.write('put', () => {
        const previous = this.entries.getBinaryFast(key);
        if (previous !== undefined && isTombstone(previous)) this.adjustTombstones(-1);
        setVersion(stored, this.nextVersion());
        this.entries.putSync(key, stored);
      });
    }
  }

  /**
   * The new high-water mark to store when {@link clock} reached the stored one, else undefined:
   * set a block ahead, so that it is written about once a second rather than with every write.
   */
  private markVersions(): Buffer | undefined {
    const current = this.clock.current;
    if (current < this.versionMark) return undefined;
    this.versionMark = current + VERSION_MARK_BLOCK;
    return encodeCount(this.versionMark);
  }

  /**
   * A write of the high-water mark failed (its commit did): what is stored is unknown, so the next
   * write stores the mark again.
   */
  private readonly markLost = (): void => {
    this.versionMark = 0;
  };

  /** Inside a write transaction: stores the high-water mark if the clock reached it. */
  private markVersionsSync(): void {
    const mark = this.markVersions();
    if (mark !== undefined) this.meta.putSync(VERSIONS_KEY, mark);
  }

  /** Inside a write transaction: the next version, its high-water mark stored with it if needed. */
  private nextVersion(): number {
    const version = this.clock.next();
    this.markVersionsSync();
    return version;
  }

  /** Removes `key` (value or tombstone); resolves to whether a value existed, once acknowledged like {@link LmdbEngine.set}. */
  async delete(key: Uint8Array): Promise<boolean> {
    assertOpen(this.closed, this.kind);
    if (!isStorable(key)) return false;
    // Decided inside the transaction, so "did it exist" is atomic and in order with the other
    // writes of the batch (`db.remove()` alone resolves `true` either way).
    const existed = await this.write('delete', () => {
      const previous = this.entries.getBinaryFast(key);
      if (previous === undefined) return false;
      const wasTombstone = isTombstone(previous);
      const existed = isLiveValue(previous, Date.now());
      this.entries.removeSync(key);
      if (wasTombstone) this.adjustTombstones(-1);
      return existed;
    });
    await this.acknowledge();
    return existed;
  }

  /** Replaces `key`'s entry by a tombstone at `writeEpoch`; resolves to whether a value existed. */
  async tombstone(key: Uint8Array, writeEpoch: number): Promise<boolean> {
    assertOpen(this.closed, this.kind);
    assertValidKey(key);
    const stored = encodeEntry(KIND_TOMBSTONE, writeEpoch, 0);
    const existed = await this.write('tombstone', () => {
      const previous = this.entries.getBinaryFast(key);
      const existed = isLiveValue(previous, Date.now());
      if (previous === undefined || !isTombstone(previous)) this.adjustTombstones(1);
      setVersion(stored, this.nextVersion());
      this.entries.putSync(key, stored);
      return existed;
    });
    await this.acknowledge();
    return existed;
  }

  /**
   * Stores each copy whose writeEpoch is greater than its key's entry (or with no entry), in one
   * transaction; resolves to how many, once acknowledged like {@link LmdbEngine.set}.
   */
  async applyIfNewer(entries: readonly VersionedEntry[]): Promise<number> {
    assertOpen(this.closed, this.kind);
    // Checked and encoded first: a bad entry stores nothing of the batch, and the values (views
    // of a network buffer) are copied before the transaction runs.
    let cost = 0;
    for (const entry of entries) {
      assertValidKey(entry.key);
      assertVersion(entry.version);
      // Deletes are not charged: they must go through when the data is at its limit (their
      // pages come from the headroom or the disk reserve), and they give room back.
      if (entry.deleted !== true)
        cost += entryCost(entry.key.byteLength, entry.value.byteLength, this.usage.pageSize);
    }
    const stored = entries.map((entry) =>
      entry.deleted === true && entry.tombstone === true
        ? encodeEntry(KIND_TOMBSTONE, entry.writeEpoch, entry.version)
        : encodeEntry(KIND_VALUE, entry.writeEpoch, entry.version, entry.value, entry.expireAt ?? 0),
    );
    const now = Date.now();
    cost = this.placementCost(entries, cost);
    this.reserveSpace(cost, true, true);
    let applied: number;
    try {
      applied = await this.write('put', () => {
        // Every copy's version, stored or not, raises the clock (see StorageEngine.applyIfNewer).
        for (const entry of entries) this.clock.observe(entry.version);
        this.markVersionsSync();
        let count = 0;
        for (let i = 0; i < entries.length; i++) {
          const entry = entries[i]!;
          const key = entry.key;
          const previous = this.entries.getBinaryFast(key);
          if (previous !== undefined) {
            const epoch = readUint32(previous, EPOCH_OFFSET);
            if (!isNewerEntry(entry.writeEpoch, entry.version, epoch, versionOf(previous))) continue;
          }
          if (entry.deleted === true && entry.tombstone === true) {
            // A replicated delete keeps its version: a re-sent older write must not win.
            if (previous === undefined || !isTombstone(previous)) this.adjustTombstones(1);
            this.entries.putSync(key, stored[i]!);
            count++;
            continue;
          }
          // A delete, or an expired copy (the key is gone wherever it is): the older entry goes.
          if (entry.deleted === true || isExpired(entry.expireAt ?? 0, now)) {
            if (previous !== undefined) {
              this.entries.removeSync(key);
              if (isTombstone(previous)) this.adjustTombstones(-1);
            }
            if (entry.deleted === true) count++;
            continue;
          }
          if (previous !== undefined && isTombstone(previous)) this.adjustTombstones(-1);
          this.entries.putSync(key, stored[i]!);
          count++;
        }
        return count;
      });
    } finally {
      this.pendingBytes -= cost;
    }
    await this.acknowledge();
    return applied;
  }

  /**
   * Decides on the live entry inside the write transaction (after every write issued before this
   * call) and applies the mutation there; resolves to the result once acknowledged like set.
   */
  async update<T>(
    key: Uint8Array,
    options: UpdateOptions,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
  ): Promise<T> {
    assertOpen(this.closed, this.kind);
    assertValidKey(key);
    assertUint32(options.writeEpoch, 'writeEpoch');
    // `key` may be a view of a network buffer: the transaction runs later.
    const ownKey = Uint8Array.from(key);
    // Room is reserved for the largest value the update may write, as the caller bounds it; one
    // that stores no value (a delete, an expiry change) is not refused: it must go on when full.
    const cost =
      options.valueBytes === undefined
        ? 0
        : entryCost(key.byteLength, options.valueBytes, this.usage.pageSize);
    this.reserveSpace(cost, true);
    let result: T;
    try {
      result = await this.write('put', () => {
        const now = Date.now();
        const previous = this.entries.getBinaryFast(ownKey);
        const live = isLiveValue(previous, now);
        const version = this.nextVersion();
        const decision = decide(live ? decodeValue(previous!) : undefined, now, version);
        this.applyMutation(ownKey, previous, live, options, decision.mutation, version);
        return decision.result;
      });
    } finally {
      this.pendingBytes -= cost;
    }
    await this.acknowledge();
    return result;
  }

  /**
   * {@link update} over several distinct keys: decided on every key's live entry inside one write
   * transaction and applied there with one version, so a crash or a failed commit keeps all of
   * the mutations or none; resolves to the result once acknowledged like set. Room is reserved
   * for every value the mutations may store before anything runs.
   */
  async updateMany<T>(
    keys: readonly Uint8Array[],
    options: ManyUpdateOptions,
    decide: ManyDecider<T>,
  ): Promise<T> {
    assertOpen(this.closed, this.kind);
    for (const key of keys) assertValidKey(key);
    assertUint32(options.writeEpoch, 'writeEpoch');
    // The keys may be views of a network buffer: the transaction runs later.
    const ownKeys = keys.map((key) => Uint8Array.from(key));
    let cost = 0;
    for (let i = 0; i < keys.length; i++) {
      const valueBytes = options.valueBytes[i];
      if (valueBytes !== undefined) cost += entryCost(keys[i]!.byteLength, valueBytes, this.usage.pageSize);
    }
    this.reserveSpace(cost, true);
    let result: T;
    try {
      result = await this.write('put', () => {
        const now = Date.now();
        // Copies (`getBinary`): a fast get's buffer is the shared one, good until the next get.
        const previous = ownKeys.map((key) => this.entries.getBinary(key));
        const live = previous.map((entry) => isLiveValue(entry, now));
        const current = previous.map((entry, i) => (live[i] ? decodeValue(entry!) : undefined));
        const version = this.nextVersion();
        const decision = decide(current, now, version);
        for (let i = 0; i < ownKeys.length; i++) {
          const single = { writeEpoch: options.writeEpoch, tombstone: options.tombstones[i] === true };
          this.applyMutation(ownKeys[i]!, previous[i], live[i]!, single, decision.mutations[i]!, version);
        }
        return decision.result;
      });
    } finally {
      this.pendingBytes -= cost;
    }
    await this.acknowledge();
    return result;
  }

  /** Inside a write transaction: writes `mutation` over `previous` (the entry under `key`, if any). */
  private applyMutation(
    key: Uint8Array,
    previous: Uint8Array | undefined,
    live: boolean,
    options: UpdateOptions,
    mutation: Mutation,
    version: number,
  ): void {
    if (mutation.kind === 'none') return;
    if (mutation.kind !== 'put' && !live) return;
    const wasTombstone = previous !== undefined && isTombstone(previous);
    switch (mutation.kind) {
      case 'put':
        if (wasTombstone) this.adjustTombstones(-1);
        this.entries.putSync(
          key,
          encodeEntry(KIND_VALUE, options.writeEpoch, version, mutation.value, mutation.expireAt),
        );
        return;
      case 'expire': {
        const value = previous!.subarray(valueStart(previous!));
        this.entries.putSync(
          key,
          encodeEntry(KIND_VALUE, options.writeEpoch, version, value, mutation.expireAt),
        );
        return;
      }
      case 'delete':
        if (options.tombstone) {
          this.adjustTombstones(1);
          this.entries.putSync(key, encodeEntry(KIND_TOMBSTONE, options.writeEpoch, version));
        } else this.entries.removeSync(key);
        return;
    }
  }

  /**
   * Examines up to `maxEntries` entries in key order from where the last sweep stopped and
   * reclaims the expired values among them in one transaction (each checked again there).
   */
  async sweepExpired(maxEntries: number): Promise<number> {
    assertOpen(this.closed, this.kind);
    const now = Date.now();
    const expired: Uint8Array[] = [];
    let examined = 0;
    let last: Uint8Array | undefined;
    const range =
      this.sweepCursor === undefined
        ? this.entries.getRange({})
        : this.entries.getRange({ start: this.sweepCursor });
    for (const { key, value } of range) {
      // The cursor itself was examined by the previous sweep.
      if (examined === 0 && this.sweepCursor !== undefined && Buffer.compare(key, this.sweepCursor) === 0)
        continue;
      if (examined++ >= maxEntries) break;
      last = key;
      if (isExpiring(value) && isExpired(expireAtOf(value), now)) expired.push(Uint8Array.from(key));
    }
    // The end of the keys: the next sweep starts again from the first.
    this.sweepCursor = examined > maxEntries && last !== undefined ? Uint8Array.from(last) : undefined;
    return expired.length === 0 ? 0 : this.reclaimExpired(expired);
  }

  /** Keys whose expired values become tombstones when reclaimed. */
  setRetainExpired(predicate: (key: Uint8Array) => boolean): void {
    this.retainExpired = predicate;
  }

  /** Reclaims those of `keys` that hold an expired value, in one transaction; resolves to how many. */
  private async reclaimExpired(keys: readonly Uint8Array[]): Promise<number> {
    if (this.closed) return 0;
    const reclaimed = await this.write('delete', () => {
      const now = Date.now();
      let count = 0;
      let tombstones = 0;
      for (const key of keys) {
        const stored = this.entries.getBinaryFast(key);
        if (stored === undefined || !isExpiring(stored) || !isExpired(expireAtOf(stored), now)) continue;
        if (this.retainExpired(key)) {
          // The expired value's own version: only a copy newer than it may replace the tombstone.
          const epoch = readUint32(stored, EPOCH_OFFSET);
          this.entries.putSync(key, encodeEntry(KIND_TOMBSTONE, epoch, versionOf(stored)));
          tombstones++;
        } else this.entries.removeSync(key);
        count++;
      }
      if (tombstones > 0) this.adjustTombstones(tombstones);
      return count;
    });
    await this.acknowledge();
    return reclaimed;
  }

  /** Deletes those of `keys` that are tombstones no newer than `maxWriteEpoch`, in one transaction. */
  removeTombstones(keys: readonly Uint8Array[], maxWriteEpoch: number): Promise<number> {
    return this.removeEntries(keys, maxWriteEpoch, true);
  }

  removeUpTo(keys: readonly Uint8Array[], maxWriteEpoch: number): Promise<number> {
    return this.removeEntries(keys, maxWriteEpoch, false);
  }

  /** Removes the entries of `keys` with `writeEpoch <= maxWriteEpoch` (only tombstones with `tombstonesOnly`). */
  private async removeEntries(
    keys: readonly Uint8Array[],
    maxWriteEpoch: number,
    tombstonesOnly: boolean,
  ): Promise<number> {
    assertOpen(this.closed, this.kind);
    const removed = await this.write('delete', () => {
      let count = 0;
      let tombstones = 0;
      for (const key of keys) {
        if (!isStorable(key)) continue;
        const previous = this.entries.getBinaryFast(key);
        if (previous === undefined) continue;
        const tombstone = isTombstone(previous);
        if (tombstonesOnly && !tombstone) continue;
        if (readUint32(previous, EPOCH_OFFSET) > maxWriteEpoch) continue;
        this.entries.removeSync(key);
        count++;
        if (tombstone) tombstones++;
      }
      if (tombstones > 0) this.adjustTombstones(-tombstones);
      return count;
    });
    await this.acknowledge();
    return removed;
  }

  /**
   * Removes every entry in one transaction (LMDB empties the database, keeping it open); resolves
   * to the number of values there were, once acknowledged like {@link LmdbEngine.set}.
   */
  async clear(): Promise<number> {
    assertOpen(this.closed, this.kind);
    const removed = await this.write('delete', () => {
      const now = Date.now();
      let values = 0;
      for (const { value } of this.entries.getRange({})) if (isLiveValue(value, now)) values++;
      this.entries.clearSync();
      this.meta.putSync(TOMBSTONES_KEY, encodeCount(0));
      return values;
    });
    this.scanIterations.clear();
    this.sweepCursor = undefined;
    await this.acknowledge();
    return removed;
  }

  /** Number of keys holding a value: the B-tree's entry count (O(1)) minus the tombstone count. */
  count(): number {
    // Both read in the same read transaction, so they describe one commit.
    return this.pageStats(this.entries).entryCount - this.tombstoneCount();
  }

  /** Number of tombstones, kept in the meta database by the transactions that change it. */
  tombstoneCount(): number {
    assertOpen(this.closed, this.kind);
    try {
      const stored = this.meta.getBinaryFast(TOMBSTONES_KEY);
      return stored === undefined ? 0 : decodeCount(stored);
    } catch (error) {
      throw ioError('get', error);
    }
  }

  /**
   * Approximate: bytes of the B-tree pages in use (branch + leaf + overflow pages × page size).
   * Includes LMDB's per-entry node headers, page headers, the 9-byte entry headers, tombstones
   * and partially filled pages, so it over-estimates the raw keys+values (typically by 1.2–2×
   * for small entries); it excludes free pages and the file's unused pre-allocated space.
   */
  bytesUsed(): number {
    let bytes = 0;
    for (const db of [this.entries, this.meta]) {
      const stats = this.pageStats(db);
      bytes += (stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages) * stats.pageSize;
    }
    return bytes;
  }

  /**
   * See {@link StorageEngine.scan}: keys in LMDB's order, after the last key of the iteration the
   * cursor names. The engine keeps the last key of up to {@link MAX_SCAN_ITERATIONS} iterations
   * (the least recently used is dropped), so a cursor stays a small number.
   */
  scan(cursor: number, count: number, accept: (key: Uint8Array) => boolean): ScanPage {
    assertOpen(this.closed, this.kind);
    let after: Uint8Array | undefined;
    if (cursor !== 0) {
      after = this.scanIterations.get(cursor);
      if (after === undefined) {
        throw new StorageEngineError(
          'SCAN_EXPIRED',
          `scan cursor ${cursor} is unknown or expired: start again from 0`,
        );
      }
      this.scanIterations.delete(cursor);
    }
    const keys: Uint8Array[] = [];
    let last: Uint8Array | undefined;
    let examined = 0;
    const now = Date.now();
    for (const key of this.entries.getKeys(after === undefined ? {} : { start: after })) {
      if (after !== undefined && examined === 0 && Buffer.compare(key, after) === 0) continue;
      if (examined >= count) {
        return { cursor: this.rememberScan(cursor, last ?? after ?? key), keys };
      }
      examined++;
      last = key;
      const stored = this.entries.getBinaryFast(key);
      // Tombstones and expired values are not keys (an expired one is reclaimed by the sweep).
      if (!isLiveValue(stored, now)) continue;
      if (accept(key)) keys.push(key);
    }
    return { cursor: 0, keys };
  }

  /** Records where an iteration stopped under a cursor (`previous`, or a new one) and returns it. */
  private rememberScan(previous: number, lastKey: Uint8Array): number {
    let cursor = previous;
    if (cursor === 0) {
      this.lastScanCursor = this.lastScanCursor >= MAX_SCAN_CURSOR ? 1 : this.lastScanCursor + 1;
      cursor = this.lastScanCursor;
    }
    this.scanIterations.set(cursor, Buffer.from(lastKey));
    if (this.scanIterations.size > MAX_SCAN_ITERATIONS) {
      const oldest = this.scanIterations.keys().next().value;
      if (oldest !== undefined) this.scanIterations.delete(oldest);
    }
    return cursor;
  }

  /** Keys holding a value whose ring position lies in (start, end], wrapping when start >= end. */
  *keysInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
  ): Iterable<Uint8Array> {
    for (const entry of this.entriesInRange(range, position)) yield entry.key;
  }

  /**
   * Entries (with headers; tombstones only when asked) whose ring position lies in (start, end].
   * Keys come from one snapshot; each header is read when its key is reached, so an entry
   * deleted meanwhile is skipped. Values are not read (nor copied).
   */
  *entriesInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
    options: ScanOptions = {},
  ): Iterable<ScannedEntry> {
    assertOpen(this.closed, this.kind);
    const withTombstones = options.tombstones === true;
    const now = Date.now();
    for (const key of this.entries.getKeys()) {
      if (!inRingRange(position(key), range.start, range.end)) continue;
      const stored = this.entries.getBinaryFast(key);
      if (stored === undefined) continue;
      if (!withTombstones && !isLiveValue(stored, now)) continue;
      yield { key, ...decodeHeader(stored) };
    }
  }

  /**
   * Resolves once every write issued so far (in any durability mode) is fsync'ed. After a failed
   * commit, a rewrite of the format marker makes a new commit whose flush covers the earlier
   * ones (it fails with the same typed error while the disk is still full).
   */
  async flush(): Promise<void> {
    assertOpen(this.closed, this.kind);
    if (this.lastCommitFailed) {
      await this.write('put', () => this.meta.putSync(FORMAT_KEY, encodeCount(LMDB_FORMAT)));
    }
    await this.waitFlushed();
  }

  /**
   * Flushes, then closes the environment; later calls fail with `ENGINE_CLOSED`. Idempotent.
   * After a failed commit it closes without that wait (LMDB syncs on close; the failed batch
   * stored nothing).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.kickTimer !== undefined) clearTimeout(this.kickTimer);
    if (this.flushGiveUpTimer !== undefined) clearTimeout(this.flushGiveUpTimer);
    if (!this.lastCommitFailed) await this.waitFlushed();
    try {
      await this.root.close();
    } catch (error) {
      throw ioError('close', error);
    }
  }

  /** Refuses (OUT_OF_SPACE) `bytes` more of keys and values when they certainly do not fit now. */
  assertCapacity(bytes: number): void {
    assertOpen(this.closed, this.kind);
    this.reserveSpace(bytes, false);
  }

  /**
   * See {@link StorageEngine.pastClientRoom}: the data and the writes in flight are within a
   * margin of the limit (256 KiB, or a quarter of the headroom when that is less), as the memory
   * engine within a slab of its cap: a few more entries of a typical size would be refused. On the
   * figures of the last write's check (no `getStats` per REPLICATE answered): at most one batch
   * behind, which the headroom absorbs.
   */
  pastClientRoom(): boolean {
    if (this.closed) return false;
    const { used, limit, headroom } = this.usage;
    return used + this.pendingBytes + Math.min(FULL_MARGIN_BYTES, headroom / 4) >= limit;
  }

  /** Used and available bytes, the limit, and why writes are refused or failing, if they are. */
  health(): StorageHealth {
    assertOpen(this.closed, this.kind);
    this.refreshUsage();
    const { used, limit } = this.usage;
    return {
      usedBytes: used,
      availableBytes: Math.max(0, Math.min(Number.MAX_SAFE_INTEGER, limit - used - this.pendingBytes)),
      limitBytes: this.mapSize,
      degraded: this.degraded,
      refusedWrites: this.refusedWrites,
      failedWrites: this.failedWrites,
      evictions: 0,
      evictionPolicy: 'noeviction',
    };
  }

  /** Group-commit counters. */
  stats(): LmdbEngineStats {
    return { durability: this.durability, commits: this.commits, flushWaits: this.flushWaits };
  }

  /**
   * Queues `body` as an lmdb-js transaction callback: it runs in the write transaction of the
   * next batch (with every other write issued in the same event turn, after its single puts, in
   * call order), where reads see the writes before it.
   */
  private async write<T>(operation: string, body: () => T): Promise<T> {
    this.callbacksQueued++;
    try {
      const result = await this.root.transaction(body);
      this.wrote();
      return result;
    } catch (error) {
      throw await this.writeFailed(operation, error);
    } finally {
      // Only callbacks change the tombstone count; once none is queued the committed count is
      // final until the next one, so this is the one place the fast path's condition is renewed.
      if (--this.callbacksQueued === 0 && !this.closed) this.tombstonesStored = this.tombstoneCount() > 0;
    }
  }

  /** Inside a write transaction: moves the stored tombstone count by `delta`. */
  private adjustTombstones(delta: number): void {
    const stored = this.meta.getBinaryFast(TOMBSTONES_KEY);
    const count = (stored === undefined ? 0 : decodeCount(stored)) + delta;
    this.meta.putSync(TOMBSTONES_KEY, encodeCount(count));
  }

  /**
   * After a failed commit, lmdb-js's `flushed` (which follows the newest commit) resolves only
   * once a later commit succeeds, so writers of earlier, successful commits waiting for their flush
   * would never be acknowledged (their clients would time out on writes that are stored). This
   * makes that later commit: a rewrite of the format marker, which needs no new space when LMDB has
   * free pages, retried every 20 ms for a few seconds while commits keep failing.
   */
  private kickCommit(): void {
    if (this.closed) return;
    if (this.kickTimer === undefined && this.kicksLeft === 0) this.kicksLeft = KICK_ATTEMPTS;
    if (this.kickTimer !== undefined || this.kicksLeft <= 0) return;
    this.kicksLeft--;
    this.kickTimer = setTimeout(() => {
      this.kickTimer = undefined;
      if (this.closed || !this.lastCommitFailed) {
        this.kicksLeft = 0;
        return;
      }
      // Its own failure comes back through writeFailed, which kicks again while attempts remain.
      this.write('put', () => this.meta.putSync(FORMAT_KEY, encodeCount(LMDB_FORMAT))).then(
        () => {
          this.kicksLeft = 0;
        },
        () => undefined,
      );
    }, KICK_DELAY_MS);
    this.kickTimer.unref();
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

  /**
   * Waits for lmdb-js's `flushed`, which follows the newest transaction. When that transaction's
   * commit fails, lmdb-js may never settle the promise this wait holds (seen on a full tmpfs: a
   * write whose own commit had succeeded waited until its client's deadline), so a failed commit
   * wakes the wait: it waits for a later commit to succeed (the kicks of {@link kickCommit} make
   * one) and then for that one's flush, which covers its own (LMDB flushes in commit order), or
   * gives up after {@link FLUSH_CONFIRM_MS} with no commit succeeding.
   */
  private async waitFlushed(): Promise<void> {
    try {
      for (;;) {
        const woken = deferred<typeof COMMIT_FAILED>();
        this.flushWaiters.add(woken.resolve);
        let outcome: unknown;
        try {
          outcome = await Promise.race([this.root.flushed, woken.promise]);
        } finally {
          this.flushWaiters.delete(woken.resolve);
        }
        if (outcome !== COMMIT_FAILED) return;
        if (this.lastCommitFailed) {
          this.nextCommit ??= deferred();
          await this.nextCommit.promise;
        }
      }
    } catch (error) {
      throw await this.writeFailed('flush', error);
    }
  }

  /**
   * The space check of a write of `bytes` (estimated B-tree bytes): throws OUT_OF_SPACE when the
   * data, with the writes still in flight, would pass the limit (with `placed`, the limit and its
   * headroom for entries the cluster places here). With `hold`, the bytes count as in flight until
   * the caller gives them back.
   */
  private reserveSpace(bytes: number, hold: boolean, placed = false): void {
    // Nothing to store (deletes only): never refused, however full the data is.
    if (bytes === 0) return;
    if (this.hasRoom(bytes, placed)) {
      if (hold) this.pendingBytes += bytes;
      return;
    }
    const { used, mapLimited } = this.usage;
    const limit = this.usage.limit + (placed ? this.usage.headroom : 0);
    this.refusedWrites++;
    this.refusedBytes = bytes;
    const bound =
      (mapLimited
        ? `the map-size limit of ${this.mapSize} bytes`
        : `the free space of the filesystem of ${this.dataDir} (less ${diskReserveBytes(this.usage.diskTotal)} bytes kept for deletes)`) +
      (placed ? ` and its headroom for replicated and copied entries (${this.usage.headroom} bytes)` : '');
    const available = Math.max(0, limit - used - this.pendingBytes);
    this.degrade('space', `out of space: ${bound} is reached (${used} bytes used, ${available} available)`);
    throw new StorageEngineError(
      'OUT_OF_SPACE',
      `cannot store ${bytes} more bytes: ${bound} is reached (${used} bytes used, ${available} available)`,
    );
  }

  /** Whether `bytes` more fit with the writes in flight (see {@link reserveSpace}); renews `usage`. */
  private hasRoom(bytes: number, placed: boolean): boolean {
    this.refreshUsage();
    const limit = this.usage.limit + (placed ? this.usage.headroom : 0);
    return this.usage.used + this.pendingBytes + bytes <= limit;
  }

  /**
   * What placed entries cost against the room: `all` (every value among them) when that fits,
   * else only the values newer than this node's entries of their keys. A batch sent again after
   * a refusal for room can hold writes this node has since seen deleted (the deletes go on ahead
   * of them to free that room, see the protocol README, "Room"): skipped when applied, they must
   * not keep the batch out. Read outside the write's transaction: an estimate, as the cost is.
   */
  private placementCost(entries: readonly VersionedEntry[], all: number): number {
    if (all === 0 || this.hasRoom(all, true)) return all;
    let cost = 0;
    try {
      for (const entry of entries) {
        if (entry.deleted === true) continue;
        const previous = this.entries.getBinaryFast(entry.key);
        if (
          previous !== undefined &&
          !isNewerEntry(
            entry.writeEpoch,
            entry.version,
            readUint32(previous, EPOCH_OFFSET),
            versionOf(previous),
          )
        )
          continue;
        cost += entryCost(entry.key.byteLength, entry.value.byteLength, this.usage.pageSize);
      }
    } catch {
      return all;
    }
    return cost;
  }

  /**
   * Renews `usage` after a commit (at most once per commit: the write path calls this for every
   * write) and the filesystem's free space at most every {@link STATFS_INTERVAL_MS}, or at every
   * commit once the room left is within a few reserves.
   */
  private refreshUsage(force = false): void {
    const usage = this.usage;
    const now = performance.now();
    const reserve = diskReserveBytes(usage.diskTotal);
    // Near the limit the free space is read for every write: room freed outside (a cleaned disk)
    // must be seen at once, and writes are being refused anyway.
    const diskDue =
      force || now - this.statfsAt >= STATFS_INTERVAL_MS || usage.limit - usage.used < 4 * reserve;
    if (!this.usageStale && !diskDue) return;
    if (this.usageStale || force) {
      this.usageStale = false;
      try {
        const env = this.root.getStats() as LmdbStats;
        usage.pageSize = env.pageSize;
        this.fileBytes = (env.lastPageNumber + 1) * env.pageSize;
        usage.used = this.bytesUsed();
      } catch {
        // Keep the last figures: a stats read is no reason to fail a write.
      }
    }
    if (diskDue) {
      this.statfsAt = now;
      try {
        const disk = statfsSync(this.dataDir);
        usage.diskFree = disk.bavail * disk.bsize;
        usage.diskTotal = disk.blocks * disk.bsize;
      } catch {
        usage.diskFree = Number.POSITIVE_INFINITY;
      }
    }
    const diskReserve = diskReserveBytes(usage.diskTotal);
    const diskLimit = this.fileBytes + usage.diskFree - diskReserve;
    usage.mapLimited = this.mapSize > 0 && this.mapSize <= diskLimit;
    usage.limit = usage.mapLimited ? this.mapSize : diskLimit;
    usage.headroom = usage.mapLimited
      ? Math.max(0, Math.min(Math.floor(this.mapSize * PLACEMENT_HEADROOM), diskLimit - this.mapSize))
      : Math.floor(diskReserve / 2);
    if (this.degradedBy === 'space' && usage.used + this.pendingBytes + this.refusedBytes <= usage.limit) {
      this.degrade(undefined, '');
    }
  }

  /** A write committed: a storage failure is over. */
  private wrote(): void {
    this.lastCommitFailed = false;
    if (this.nextCommit !== undefined) {
      this.nextCommit.resolve();
      this.nextCommit = undefined;
    }
    if (this.flushGiveUpTimer !== undefined) {
      clearTimeout(this.flushGiveUpTimer);
      this.flushGiveUpTimer = undefined;
    }
    if (this.degradedBy === 'io') this.degrade(undefined, '');
  }

  /**
   * After a failed commit: unless a commit succeeds within {@link FLUSH_CONFIRM_MS} (the kicks of
   * {@link kickCommit} usually make one at once), the flush waits that a failed commit woke give
   * up, so a writer whose own commit succeeded gets a typed indeterminate error in bounded time
   * while the disk stays full, never a wait until its client's deadline.
   */
  private armFlushGiveUp(): void {
    if (this.flushGiveUpTimer !== undefined || this.closed) return;
    this.flushGiveUpTimer = setTimeout(() => {
      this.flushGiveUpTimer = undefined;
      const waiting = this.nextCommit;
      if (!this.lastCommitFailed || this.closed || waiting === undefined) return;
      this.nextCommit = undefined;
      waiting.reject(
        new Error(
          `a later commit failed and none succeeded for ${FLUSH_CONFIRM_MS} ms: the flush of this write cannot be confirmed`,
        ),
      );
    }, FLUSH_CONFIRM_MS);
    this.flushGiveUpTimer.unref();
  }

  /**
   * The typed error of a failed write or flush: OUT_OF_SPACE when the disk or the map is full
   * (an EIO counts when the filesystem has less than the reserve left: a full tmpfs reports
   * it), ENGINE_IO otherwise. LMDB aborted the transaction, so the engine goes on: the next
   * commit starts from the last good one.
   */
  private async writeFailed(operation: string, error: unknown): Promise<StorageEngineError> {
    // The failed transaction may have held a new high-water mark of the version clock.
    this.markLost();
    if (isCommitFailure(error)) {
      this.lastCommitFailed = true;
      this.kickCommit();
      this.armFlushGiveUp();
      for (const wake of this.flushWaiters) wake(COMMIT_FAILED);
      this.flushWaiters.clear();
    }
    const cause = await commitCause(error);
    const errno = errnoOf(cause);
    this.refreshUsage(true);
    const diskFull = this.usage.diskFree < diskReserveBytes(this.usage.diskTotal);
    const detail = cause instanceof Error ? cause.message : String(cause);
    const noSpace = (errno !== undefined && NO_SPACE_ERRNOS.has(errno)) || (errno === EIO && diskFull);
    // A failed flush is of a commit already applied: its outcome is unknown, never "not stored".
    if (noSpace && operation !== 'flush') {
      this.refusedWrites++;
      const message = `out of space: lmdb ${operation} failed (${detail}) with ${this.usage.diskFree} bytes free on the filesystem of ${this.dataDir}`;
      this.degrade('space', message);
      return new StorageEngineError('OUT_OF_SPACE', message, { cause });
    }
    this.failedWrites++;
    const failure = ioError(operation, cause);
    this.degrade('io', `storage error: ${failure.message}`);
    return failure;
  }

  private degrade(by: 'space' | 'io' | undefined, reason: string): void {
    this.degradedBy = by;
    this.degraded = reason;
  }

  private pageStats(db: Db): LmdbStats {
    assertOpen(this.closed, this.kind);
    return db.getStats() as LmdbStats;
  }
}

function decodeHeader(stored: Uint8Array): EntryHeader {
  return {
    writeEpoch: readUint32(stored, EPOCH_OFFSET),
    version: versionOf(stored),
    expireAt: expireAtOf(stored),
    tombstone: isTombstone(stored),
  };
}

/** A copy of a stored value with its version and expiry time. */
function decodeValue(stored: Uint8Array): VersionedValue {
  return {
    value: copyBytes.call(stored, valueStart(stored), stored.length),
    writeEpoch: readUint32(stored, EPOCH_OFFSET),
    version: versionOf(stored),
    expireAt: expireAtOf(stored),
  };
}
