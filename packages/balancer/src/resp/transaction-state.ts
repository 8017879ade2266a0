/**
 * A RESP connection's transaction state (MULTI ... EXEC, WATCH): owned by the connection, written
 * by the transaction commands only (see `transaction.ts`).
 */

/** Per queued argument or watched key: what it may add to the TRANSACT frame besides its bytes. */
const STEP_OVERHEAD_BYTES = 64;
/** Room kept in the TRANSACT frame for its own header. */
const FRAME_HEADROOM_BYTES = 4096;

/** A key WATCH read, and its version then (0: the key did not exist). */
export interface WatchedKey {
  readonly key: Uint8Array;
  readonly version: number;
}

/** What EXEC runs (see {@link ConnectionTransaction.take}). */
export interface TakenTransaction {
  /** The queued commands, in order. */
  readonly commands: Uint8Array[][];
  /** The key the TRANSACT is sent on (the first named); undefined when no key was named. */
  readonly key: Uint8Array | undefined;
  /** The version WATCH read of {@link key}, when it is watched. */
  readonly ifVersion: number | undefined;
  /** The other watched keys and their versions. */
  readonly watches: readonly WatchedKey[];
}

/** `key`'s bytes as a string, to find a watched key again (latin1: one char per byte, any bytes). */
function nameOf(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

/**
 * A connection's transaction state: what MULTI queued, the keys WATCH watches, and the ring
 * position every key of the transaction shares (that of the first key named, watched or queued).
 */
export class ConnectionTransaction {
  /** The commands queued since MULTI (copies); undefined outside MULTI. */
  private queued: Uint8Array[][] | undefined;
  /** The TRANSACT steps the queued commands make (a multi-key command makes one per key). */
  private queuedSteps = 0;
  /** Bytes of the queued commands' arguments, with each step's overhead. */
  private queuedBytes = 0;
  /** A command was refused while queueing: EXEC discards the transaction (EXECABORT). */
  private dirty = false;
  /** The first key the transaction or its WATCH named: the TRANSACT is sent on it. */
  private key: Uint8Array | undefined;
  /** The ring position of {@link key}: every other key must have it (one owner, one chain). */
  private keyPosition: number | undefined;
  /** The watched keys by {@link nameOf}, with the version WATCH read (the first WATCH of a key counts). */
  private readonly watched = new Map<string, WatchedKey>();
  /** Bytes the watched keys take in the TRANSACT frame, with each one's overhead. */
  private watchedBytes = 0;

  /** Whether commands are being queued (between MULTI and EXEC/DISCARD). */
  get queueing(): boolean {
    return this.queued !== undefined;
  }

  /** The ring position the transaction's keys must have; undefined until a key is named. */
  get position(): number | undefined {
    return this.keyPosition;
  }

  /** MULTI: commands are queued from now on. */
  begin(): void {
    this.queued = [];
  }

  /** A command was refused while queueing: EXEC will answer EXECABORT. */
  spoil(): void {
    if (this.queued !== undefined) this.dirty = true;
  }

  /** Back to no transaction and no WATCH (EXEC, DISCARD). */
  reset(): void {
    this.queued = undefined;
    this.queuedSteps = 0;
    this.queuedBytes = 0;
    this.dirty = false;
    this.unwatch();
  }

  /**
   * Forgets the WATCH (UNWATCH). The key and its position stay only while commands are queued on
   * them: otherwise the next key named, of any position, starts a new transaction.
   */
  unwatch(): void {
    this.watched.clear();
    this.watchedBytes = 0;
    if (this.queued === undefined || this.queued.length === 0) {
      this.key = undefined;
      this.keyPosition = undefined;
    }
  }

  /** Whether `key` is watched already (a second WATCH of it keeps the first version, as Redis). */
  watches(key: Uint8Array): boolean {
    return this.watched.has(nameOf(key));
  }

  /**
   * Whether `keys` (not watched yet) may be watched too: at most `maxKeys` watched, and the
   * TRANSACT (watched keys and queued arguments) still within one frame of `maxFrameBytes`.
   */
  roomToWatch(keys: readonly Uint8Array[], maxKeys: number, maxFrameBytes: number): boolean {
    let bytes = 0;
    for (const key of keys) bytes += key.length + STEP_OVERHEAD_BYTES;
    return (
      this.watched.size + keys.length <= maxKeys &&
      this.watchedBytes + this.queuedBytes + bytes <= maxFrameBytes - FRAME_HEADROOM_BYTES
    );
  }

  /**
   * Records that `keys` are watched at their versions (the caller checked that their position is
   * `position`, the transaction's if it has one). A key watched already keeps its first version.
   */
  watch(keys: readonly WatchedKey[], position: number): void {
    for (const watched of keys) {
      const name = nameOf(watched.key);
      if (this.watched.has(name)) continue;
      this.watched.set(name, { key: Uint8Array.from(watched.key), version: watched.version });
      this.watchedBytes += watched.key.length + STEP_OVERHEAD_BYTES;
      this.anchor(watched.key, position);
    }
  }

  /**
   * Queues a copy of `args`, a command making `steps` TRANSACT steps whose keys (the first is
   * `key`) the caller checked are at `position`. False when the transaction would be too large:
   * more steps than `maxSteps`, or arguments (and watched keys) past one frame.
   */
  enqueue(
    args: Uint8Array[],
    key: Uint8Array | undefined,
    position: number | undefined,
    steps: number,
    maxSteps: number,
    maxFrameBytes: number,
  ): boolean {
    const queued = this.queued!;
    let bytes = 0;
    for (const arg of args) bytes += arg.length + STEP_OVERHEAD_BYTES;
    if (
      this.queuedSteps + steps > maxSteps ||
      this.watchedBytes + this.queuedBytes + bytes > maxFrameBytes - FRAME_HEADROOM_BYTES
    )
      return false;
    if (key !== undefined && position !== undefined) this.anchor(key, position);
    this.queuedSteps += steps;
    this.queuedBytes += bytes;
    queued.push(args.map((arg) => Uint8Array.from(arg)));
    return true;
  }

  /**
   * What EXEC runs: the queued commands, the key, its watched version and the other watched keys;
   * undefined when spoiled. Either way the connection is back to no transaction and no WATCH.
   */
  take(): TakenTransaction | undefined {
    let taken: TakenTransaction | undefined;
    if (!this.dirty) {
      const key = this.key;
      const own = key === undefined ? undefined : this.watched.get(nameOf(key));
      taken = {
        commands: this.queued ?? [],
        key,
        ifVersion: own?.version,
        watches: [...this.watched.values()].filter((watched) => watched !== own),
      };
    }
    this.reset();
    return taken;
  }

  /** Makes `key` (at `position`) the transaction's key when it has none yet. */
  private anchor(key: Uint8Array, position: number): void {
    if (this.key !== undefined) return;
    this.key = Uint8Array.from(key);
    this.keyPosition = position;
  }
}
