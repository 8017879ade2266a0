import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { releaseLockFile, takeLockFile, writeFileDurably } from '@dstore/protocol/internal';
import { type ClusterMap, parseClusterMap, serializeClusterMap } from './cluster-map.js';

/** Which kind of store holds the cluster map. */
export type MapStoreKind = 'memory' | 'file' | 'etcd';

/**
 * Where the authoritative cluster map lives. Exactly one writer at a time (see
 * {@link MapStore.acquireLeadership}); every write is a compare-and-set on the epoch it replaces.
 */
export interface MapStore {
  readonly kind: MapStoreKind;
  /** Where, for operators: a path, or etcd endpoints and prefix. */
  readonly location: string;
  /** The stored map, or undefined when none was ever stored. Throws MAP_CORRUPT on a damaged one. */
  load(): Promise<ClusterMap | undefined>;
  /**
   * Stores `next` if the stored map's epoch is `expectedEpoch` (undefined: nothing stored yet);
   * resolves once it is durable. Throws MAP_CONFLICT when another writer got there first.
   */
  compareAndSet(expectedEpoch: number | undefined, next: ClusterMap): Promise<void>;
  /** Calls `listener` with each newer map stored by another process; returns the unsubscribe. */
  watch(listener: (map: ClusterMap) => void): () => void;
  /**
   * Resolves once this process is the map's single writer (at once for a file store, which
   * holds a lock; by election on etcd). `onLost` is called if that ends before {@link close}.
   */
  acquireLeadership(candidate: string, onLost: () => void): Promise<void>;
  /** The current writer's name, when known. */
  leader(): string | undefined;
  /**
   * Hands the writer's role over now, before this process stops (a graceful stop): true when
   * another process can take it at once (etcd: the election key is deleted), false when there is
   * no one to hand it to (a file or memory store: this process keeps it until {@link close}).
   */
  resign(): Promise<boolean>;
  /** Releases leadership, locks and connections. */
  close(): Promise<void>;
}

function conflict(location: string, expected: number | undefined, actual: number | undefined): DstoreError {
  return new DstoreError(
    ErrorCode.MAP_CONFLICT,
    `cluster map in ${location} is at epoch ${actual ?? 'none'}, expected ${expected ?? 'none'}: another writer changed it`,
  );
}

/**
 * The map in this process only: a balancer without `--data-dir`. Lost on restart (the ring is then
 * rebuilt from JOINs, with the hazards the file store exists to avoid); for tests and throwaway
 * clusters.
 */
export class MemoryMapStore implements MapStore {
  readonly kind = 'memory';
  readonly location = 'memory';
  private current: ClusterMap | undefined;
  private candidate: string | undefined;

  async load(): Promise<ClusterMap | undefined> {
    return this.current;
  }

  async compareAndSet(expectedEpoch: number | undefined, next: ClusterMap): Promise<void> {
    if (this.current?.epoch !== expectedEpoch)
      throw conflict(this.location, expectedEpoch, this.current?.epoch);
    this.current = next;
  }

  watch(): () => void {
    return () => undefined;
  }

  async acquireLeadership(candidate: string): Promise<void> {
    this.candidate = candidate;
  }

  leader(): string | undefined {
    return this.candidate;
  }

  async resign(): Promise<boolean> {
    return false;
  }

  async close(): Promise<void> {}
}

/** Name of the map document in a balancer's data dir. */
export const MAP_FILE = 'cluster-map.json';
/** Name of the lock file that keeps a second balancer off the same data dir. */
export const LOCK_FILE = 'balancer.lock';

/**
 * The map in a file of the balancer's data dir. A write goes to a temporary file, is fsync'ed,
 * renamed over the map and the directory is fsync'ed: a crash leaves the old map or the new one,
 * never a mix. A lock file (the owner's pid and start time; a dead owner's lock is taken over) keeps a second
 * balancer off the same directory, so this process is the only writer.
 */
export class FileMapStore implements MapStore {
  readonly kind = 'file';
  readonly location: string;
  private readonly mapPath: string;
  private readonly lockPath: string;
  private storedEpoch: number | undefined;
  private loaded = false;
  private locked = false;
  private writes: Promise<void> = Promise.resolve();
  private candidate: string | undefined;

  constructor(private readonly dir: string) {
    this.mapPath = join(dir, MAP_FILE);
    this.lockPath = join(dir, LOCK_FILE);
    this.location = this.mapPath;
  }

  async load(): Promise<ClusterMap | undefined> {
    await mkdir(this.dir, { recursive: true });
    let text: string;
    try {
      text = await readFile(this.mapPath, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new DstoreError(
          ErrorCode.MAP_CORRUPT,
          `cannot read ${this.mapPath}: ${(error as Error).message}`,
        );
      }
      this.loaded = true;
      this.storedEpoch = undefined;
      return undefined;
    }
    const map = parseClusterMap(text, this.mapPath);
    this.loaded = true;
    this.storedEpoch = map.epoch;
    return map;
  }

  compareAndSet(expectedEpoch: number | undefined, next: ClusterMap): Promise<void> {
    const write = this.writes.then(async () => {
      if (!this.locked)
        throw new DstoreError(ErrorCode.MAP_CONFLICT, `${this.lockPath} is not held by this process`);
      if (!this.loaded) await this.load();
      if (this.storedEpoch !== expectedEpoch) throw conflict(this.location, expectedEpoch, this.storedEpoch);
      await writeFileDurably(this.mapPath, serializeClusterMap(next));
      this.storedEpoch = next.epoch;
    });
    // A failed write must not block the next one.
    this.writes = write.catch(() => undefined);
    return write;
  }

  watch(): () => void {
    // One writer per directory (the lock): nobody else changes the file.
    return () => undefined;
  }

  async acquireLeadership(candidate: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    this.takeLock();
    this.candidate = candidate;
  }

  leader(): string | undefined {
    return this.candidate;
  }

  async resign(): Promise<boolean> {
    return false;
  }

  async close(): Promise<void> {
    await this.writes;
    if (!this.locked) return;
    this.locked = false;
    releaseLockFile(this.lockPath);
  }

  private takeLock(): void {
    const owner = takeLockFile(this.lockPath);
    if (owner !== undefined) {
      throw new DstoreError(
        ErrorCode.MAP_CONFLICT,
        `${this.dir} is in use by another balancer (pid ${owner}); give each balancer its own --data-dir, or share a map with --etcd`,
      );
    }
    this.locked = true;
  }
}
