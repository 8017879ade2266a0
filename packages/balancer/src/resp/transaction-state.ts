/**
 * A RESP connection's transaction state (MULTI ... EXEC, WATCH): owned by the connection, written
 * by the transaction commands only (see `transaction.ts`).
 */

/** Per queued argument: what its step may add to the TRANSACT frame besides its bytes. */
const STEP_OVERHEAD_BYTES = 64;
/** Room kept in the TRANSACT frame for its own header. */
const FRAME_HEADROOM_BYTES = 4096;

/** A connection's transaction state: what MULTI queued, and the key WATCH watches. */
export class ConnectionTransaction {
  /** The commands queued since MULTI (copies); undefined outside MULTI. */
  private queued: Uint8Array[][] | undefined;
  /** Bytes of the queued commands' arguments, with each step's overhead. */
  private queuedBytes = 0;
  /** A command was refused while queueing: EXEC discards the transaction (EXECABORT). */
  private dirty = false;
  /** The one key the transaction and its WATCH name (the first named). */
  private key: Uint8Array | undefined;
  /** The watched key's version when WATCH read it (0: absent); undefined: nothing watched. */
  private watchedVersion: number | undefined;

  /** Whether commands are being queued (between MULTI and EXEC/DISCARD). */
  get queueing(): boolean {
    return this.queued !== undefined;
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
    this.queuedBytes = 0;
    this.dirty = false;
    this.unwatch();
  }

  /** Forgets the WATCH (UNWATCH); the key stays only while commands are queued on it. */
  unwatch(): void {
    this.watchedVersion = undefined;
    if (this.queued === undefined || this.queued.length === 0) this.key = undefined;
  }

  /** Whether `key` may join the transaction: the first key named, or the same one again. */
  admits(key: Uint8Array): boolean {
    return this.key === undefined || Buffer.compare(this.key, key) === 0;
  }

  /** Records that `key` is watched at `version`. */
  watch(key: Uint8Array, version: number): void {
    this.key ??= Uint8Array.from(key);
    this.watchedVersion ??= version;
  }

  /** Queues a copy of `args` (the caller checked it); false when the transaction would be too large. */
  enqueue(args: Uint8Array[], key: Uint8Array | undefined, maxSteps: number, maxFrameBytes: number): boolean {
    const queued = this.queued!;
    let bytes = 0;
    for (const arg of args) bytes += arg.length + STEP_OVERHEAD_BYTES;
    if (queued.length >= maxSteps || this.queuedBytes + bytes > maxFrameBytes - FRAME_HEADROOM_BYTES)
      return false;
    if (key !== undefined) this.key ??= Uint8Array.from(key);
    this.queuedBytes += bytes;
    queued.push(args.map((arg) => Uint8Array.from(arg)));
    return true;
  }

  /** What EXEC runs: the queued commands, the key and the watched version; undefined when spoiled. */
  take():
    | { commands: Uint8Array[][]; key: Uint8Array | undefined; ifVersion: number | undefined }
    | undefined {
    const taken = this.dirty
      ? undefined
      : { commands: this.queued ?? [], key: this.key, ifVersion: this.watchedVersion };
    this.reset();
    return taken;
  }
}
