import { EventEmitter } from 'node:events';
import {
  type BinaryLike,
  bytesToString,
  type ClusterMapSnapshot,
  type Connection,
  DEFAULT_LIMITS,
  DstoreError,
  ErrorCode,
  FailoverLink,
  isSafeToResend,
  type KeyValue,
  Op,
  type Request,
  type Response,
  toBytes,
  type WithoutId,
} from '@dstore/protocol';
import {
  type MoveOptions,
  moveKey,
  readInParts,
  resultsOf,
  type StopWatchingAbort,
  setAllIfAbsent,
  sumInChunks,
  watchAbort,
} from '@dstore/protocol/internal';
import {
  bitCountCommand,
  bitPosCommand,
  copyBytes,
  delVersionedCommand,
  type ExpireForm,
  expireCommand,
  expireTimeCommand,
  getBitCommand,
  getDelCommand,
  getExCommand,
  getRangeCommand,
  getVersionedCommand,
  incrByCommand,
  incrByFloatCommand,
  incrCommand,
  inputBytes,
  int64Argument,
  type KeyCommand,
  OPTION_NAMES,
  persistCommand,
  pexpireTimeCommand,
  pttlCommand,
  setBitCommand,
  setRangeCommand,
  setVersionedCommand,
  setWithCommand,
  setWithRequest,
  strlenCommand,
  ttlCommand,
  unexpectedAnswer,
  valueAnswer,
  valueBytes,
} from './commands.js';
import { type DataCommand, DirectRouter, type DirectRoutingStats } from './direct-router.js';
import {
  abortedError,
  clientClosedError,
  commandTimeoutError,
  connectFailedError,
  invalidArgument,
  isForeignProtocol,
  serverTimeoutError,
  timeoutAfterRefusals,
} from './errors.js';
import { OfflineQueue } from './offline-queue.js';
import {
  type ClientArguments,
  type ClientOptions,
  checkCommandTimeout,
  checkOptionNames,
  clientArguments,
  credentialsOf,
  type ResolvedClientOptions,
  resendDelay,
  resolveClientOptions,
} from './options.js';
import { Transaction } from './transaction.js';

/** Per-command options. */
export interface CommandOptions {
  /** Aborts the command, queued or in flight; it fails with ABORTED (a write may still have happened). */
  readonly signal?: AbortSignal;
  /** Deadline of this command in ms, instead of the client's `commandTimeout`. */
  readonly timeout?: number;
}

/**
 * Options of {@link DstoreClient.set}, Redis's SET options (all off by default; a plain SET also
 * removes any expiry the key had). At most one of `ex`, `px`, `exat`, `pxat`, `keepTtl`, and not
 * both `nx` and `xx`. Relative times (`ex`, `px`) count from when the owning node executes the
 * write, on its clock, as Redis counts them on the server.
 */
export interface SetOptions extends CommandOptions {
  /** Expire after this many seconds (a positive integer). */
  readonly ex?: number;
  /** Expire after this many milliseconds (a positive integer). */
  readonly px?: number;
  /** Expire at this Unix time in seconds (a positive integer). */
  readonly exat?: number;
  /** Expire at this Unix time in milliseconds (a positive integer). */
  readonly pxat?: number;
  /** Keep the key's current expiry. */
  readonly keepTtl?: boolean;
  /** Write only if the key does not exist; resolves null when it does. */
  readonly nx?: boolean;
  /** Write only if the key exists; resolves null when it does not. */
  readonly xx?: boolean;
  /** Resolve the value before the write (null when there was none) instead of 'OK'. */
  readonly get?: boolean;
  /**
   * Compare-and-set: write only when the key's version (see {@link DstoreClient.getWithVersion})
   * is this one; 0 = only when the key does not exist. Otherwise the write is not made and the
   * command fails with {@link VersionConflictError} (code VERSION_CONFLICT, never retried), which
   * carries the key's current version. Not with `nx`, `xx` or `get`.
   */
  readonly ifVersion?: number;
}

/** Options of {@link DstoreClient.del}. */
export interface DelOptions extends CommandOptions {
  /**
   * Compare-and-delete: delete only when the key's version is this one; otherwise nothing is
   * deleted and the command fails with {@link VersionConflictError}. 0 never matches a value
   * (the command then resolves false when the key does not exist).
   */
  readonly ifVersion?: number;
}

/** A value with its version, as {@link DstoreClient.getWithVersion} reads it. */
export interface VersionedValue {
  /** The value (a copy the caller owns). */
  readonly value: Uint8Array;
  /**
   * The value's version: an integer below 2^53 that changes with every write of the key (SET,
   * an expiry change, INCR, ...) and never repeats for it, not even after a delete and a
   * re-create or a move to another node. Compare-and-set with `set(key, v, { ifVersion })`.
   */
  readonly version: number;
}

/** Options of {@link DstoreClient.expire} and its kin: Redis 7's condition (default: none). */
export interface ExpireOptions extends CommandOptions {
  /** `nx`: only when the key has no expiry; `xx`: only when it has one; `gt`/`lt`: only when later/earlier. */
  readonly condition?: 'nx' | 'xx' | 'gt' | 'lt';
}

/**
 * Options of {@link DstoreClient.getex}, Redis's GETEX options: at most one of them; none is a
 * plain GET. Relative times count on the owning node's clock, as for {@link SetOptions}.
 */
export interface GetExOptions extends CommandOptions {
  /** Expire after this many seconds (a positive integer). */
  readonly ex?: number;
  /** Expire after this many milliseconds (a positive integer). */
  readonly px?: number;
  /** Expire at this Unix time in seconds (a positive integer; a time past deletes the key). */
  readonly exat?: number;
  /** Expire at this Unix time in milliseconds (a positive integer; a time past deletes the key). */
  readonly pxat?: number;
  /** Remove the key's expiry. */
  readonly persist?: boolean;
}

/** Options of {@link DstoreClient.scan} and {@link DstoreClient.scanIterator}. */
export interface ScanOptions extends CommandOptions {
  /**
   * Redis glob pattern the keys must match (`*`, `?`, `[...]`, `\` escapes), as Redis's MATCH;
   * with `keyPrefix` set it applies to the key without the prefix. Default: every key.
   */
  readonly match?: string;
  /** Hint of the keys each page examines (Redis's COUNT), 1..1000. Default 10. */
  readonly count?: number;
}

/** A range of {@link DstoreClient.bitcount}: indexes `start`..`end`, both included, negative from the end. */
export interface BitRange {
  readonly start: number;
  readonly end: number;
  /** What the indexes count: `'byte'` (default, as Redis) or `'bit'`. */
  readonly unit?: 'byte' | 'bit';
}

/** A range of {@link DstoreClient.bitpos}: from `start`, to `end` (default: the value's end). */
export interface BitPosRange {
  readonly start: number;
  readonly end?: number;
  /** What the indexes count: `'byte'` (default, as Redis) or `'bit'`. */
  readonly unit?: 'byte' | 'bit';
}

/** One page of {@link DstoreClient.scan}. */
export interface ScanPage {
  /** Pass it to the next call; `'0'` when the iteration is complete. */
  readonly cursor: string;
  /** The keys of this page (without `keyPrefix`), as UTF-8 strings. */
  readonly keys: string[];
}

/** Entries of an MSET: an object of string keys, or any iterable of `[key, value]` pairs (a Map, an array). */
export type MSetEntries = Readonly<Record<string, BinaryLike>> | Iterable<readonly [BinaryLike, BinaryLike]>;

/** Counters answered by STATS: a flat map of names to numbers or short strings. */
export type StatsRecord = Record<string, number | string>;

/**
 * Where the client is in its life: `wait` (lazyConnect, not started), `connecting`, `ready`,
 * `reconnecting`, `end` (retryStrategy gave up; `connect()` starts again) or `closed` (for good).
 */
export type ClientStatus = 'wait' | 'connecting' | 'ready' | 'reconnecting' | 'end' | 'closed';

/** Events of a {@link DstoreClient}; the names and meanings of ioredis. */
export interface ClientEvents {
  /** The TCP connection is established (HELLO not yet answered). */
  connect: [];
  /** HELLO succeeded: commands flow, and the offline queue is being drained in order. */
  ready: [];
  /** A connection attempt or a live connection failed. Emitted only when someone listens. */
  error: [error: Error];
  /** The connection closed (it reconnects unless the client is closing or the strategy gives up). */
  close: [];
  /**
   * A reconnect attempt is scheduled in `delayMs` ms. With several servers, moving on to the next
   * server within a round is reported too, with delay 0; `attempt` counts failed attempts since
   * the last `ready`, and {@link DstoreClient.server} names the server about to be tried.
   */
  reconnecting: [delayMs: number, attempt: number];
  /** No more reconnects: after close()/disconnect(), or when retryStrategy returned null. */
  end: [];
  /**
   * `routing: 'direct'`: a storage node of the cluster map cannot be reached at the address the
   * map gives (`error` says why: refused, unreachable, TLS, credentials). Its keys' commands go
   * through the balancer meanwhile; emitted once per outage, again after it was reachable.
   */
  nodeUnreachable: [nodeId: string, address: string, error: Error];
  /**
   * `routing: 'direct'`: the client routes on a changed cluster map (fetched or pushed). A change
   * of the members' states (a replica failed, caught up) or addresses keeps the ring's epoch, so
   * one epoch may be reported more than once.
   */
  clusterMap: [epoch: number];
}

/** One command from the call until it settles; it may wait in the offline queue on the way. */
interface Command {
  readonly message: WithoutId<Request>;
  readonly deadline: number;
  readonly timeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (response: Response) => void;
  readonly reject: (error: Error) => void;
  retries: number;
  /** The refusal (not executed) that made the last resend wait, named if the deadline then passes. */
  lastRefusal?: DstoreError | undefined;
  /** Ends the command's watch of its signal while it waits in the offline queue. */
  stopWatchingQueued: StopWatchingAbort | undefined;
}

/** Fixed per-frame and per-entry overheads used to refuse an MSET that cannot fit in one frame. */
const FRAME_OVERHEAD_BYTES = 16;
const ENTRY_OVERHEAD_BYTES = 10;

/**
 * A client of a dstore balancer: one multiplexed connection that reconnects by itself, a promise
 * API, a bounded offline queue and a deadline on every command.
 *
 * Given several balancers (`servers`, or `dstore://h1:p1,h2:p2`), it still keeps one connection
 * at a time and fails over to the next balancer in order when the current one cannot be reached
 * or is lost; commands queued meanwhile go to whichever balancer connects.
 *
 * Many commands are in flight at once on the one connection; those issued in the same tick leave
 * in one socket write (the protocol's connection layer coalesces them), which is the automatic
 * pipelining ioredis users turn on with `enableAutoPipelining`.
 */
export class DstoreClient extends EventEmitter<ClientEvents> {
  /** The options in effect, defaults filled in. */
  readonly options: ResolvedClientOptions;
  private readonly link: FailoverLink;
  private readonly queue: OfflineQueue<Command>;
  private readonly prefix: Uint8Array;
  private state: ClientStatus;
  /** The last failed connection attempt since the last `ready` (cleared on `ready`). */
  private lastError: Error | undefined;
  /** Whether the client was ever ready since it was (re)started. */
  private everReady = false;
  /** The failure of the last round in which no server could be reached (cleared on `ready`). */
  private roundFailure: Error | undefined;
  /** When the next connection attempt starts (`performance.now()`), after a failed round. */
  private nextAttemptAt = 0;
  private closing: Promise<void> | undefined;
  private connectWaiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  private inFlight = 0;
  private onAllAnswered: (() => void) | undefined;
  /** Commands waiting to be resent after a refusal: each entry ends its wait (on shutdown). */
  private readonly resendWaits = new Set<() => void>();
  /** Direct routing (`routing: 'direct'`): the map and the node links; undefined otherwise. */
  private readonly direct: DirectRouter | undefined;

  constructor(...args: ClientArguments) {
    super();
    this.options = resolveClientOptions(...clientArguments(args));
    this.prefix = toBytes(this.options.keyPrefix);
    this.queue = new OfflineQueue<Command>(this.options.maxQueueLength, (command) =>
      this.expireQueued(command),
    );
    const credentials = credentialsOf(this.options);
    const direct = this.options.routing === 'direct';
    this.direct = direct ? this.createDirectRouter() : undefined;
    this.link = new FailoverLink({
      servers: this.options.servers,
      link: {
        connectTimeoutMs: this.options.connectTimeout,
        probeTimeoutMs: this.probeTimeoutMs(),
        role: 'client',
        credentials,
        ...(this.options.tls === undefined ? {} : { tls: this.options.tls }),
        connection: direct
          ? {
              requestTimeoutMs: this.options.commandTimeout,
              onRequest: (request, connection) => this.onBalancerPush(request, connection),
            }
          : { requestTimeoutMs: this.options.commandTimeout },
      },
      // With one server a round is one attempt, so `times` means what it always did.
      retryStrategy: (round) => this.options.retryStrategy(round),
    });
    this.listenToLink();
    this.state = 'wait';
    if (!this.options.lazyConnect) this.start();
  }

  /** Where the client is in its life (see {@link ClientStatus}). */
  get status(): ClientStatus {
    return this.state;
  }

  /**
   * Direct routing counters (`routing: 'direct'`): commands answered by nodes directly, sent
   * through the balancer, redirects, map fetches and pushes, the map's epoch. Undefined otherwise.
   */
  get routingStats(): Readonly<DirectRoutingStats> | undefined {
    return this.direct?.snapshot();
  }

  /** Commands waiting in the offline queue. */
  get queueLength(): number {
    return this.queue.length;
  }

  /**
   * `host:port` of the current balancer: the one connected, or the one being tried while not
   * ready. With a single server, always that server.
   */
  get server(): string {
    return this.link.address;
  }

  /** `host:port` of the current balancer; the same as {@link server}. */
  get address(): string {
    return this.link.address;
  }

  /**
   * Connects now (with `lazyConnect`, or again after `end`). Resolves when ready; rejects when the
   * retry strategy gives up, the client is closed, or it is not ready within one round of attempts
   * (`connectTimeout` per server listed; reconnecting goes on in the background then).
   */
  connect(): Promise<void> {
    if (this.state === 'closed') return Promise.reject(clientClosedError(`${this.label} is closed`));
    if (this.state === 'ready') return Promise.resolve();
    // A whole round: a hung first balancer (accepts, never answers) uses its connectTimeout, and
    // the next listed one must still get its own attempt before connect() gives up.
    const boundMs = this.options.connectTimeout * this.options.servers.length;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.connectWaiters = this.connectWaiters.filter((waiter) => waiter !== entry);
        reject(
          new DstoreError(ErrorCode.TIMEOUT, `${this.label} not ready within ${boundMs} ms`, {
            cause: this.lastError,
          }),
        );
      }, boundMs);
      timer.unref();
      const entry = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.connectWaiters.push(entry);
      this.start();
    });
  }

  /** The value of `key`, or null when it does not exist. The bytes are the caller's own copy. */
  async get(key: BinaryLike, options?: CommandOptions): Promise<Uint8Array | null> {
    return valueAnswer(await this.send({ op: Op.GET, key: this.keyBytes(key) }, options), 'GET');
  }

  /** The value of `key` decoded as UTF-8, or null when it does not exist. */
  async getString(key: BinaryLike, options?: CommandOptions): Promise<string | null> {
    const response = await this.send({ op: Op.GET, key: this.keyBytes(key) }, options);
    if (response.op !== Op.VALUE) throw unexpectedAnswer('GET', response);
    return response.value === null ? null : bytesToString(response.value);
  }

  /**
   * Stores `value` under `key`; resolves 'OK' once every replica of the key stored it (lmdb:
   * committed, and flushed by default). With {@link SetOptions} it is Redis's SET: an expiry,
   * NX/XX (null when the condition does not hold) and GET (the previous value), in one atomic step
   * on the key's owner.
   */
  set(
    key: BinaryLike,
    value: BinaryLike,
    options: SetOptions & { readonly get: true },
  ): Promise<Uint8Array | null>;
  set(
    key: BinaryLike,
    value: BinaryLike,
    options: SetOptions & ({ readonly nx: true } | { readonly xx: true }),
  ): Promise<'OK' | null>;
  set(
    key: BinaryLike,
    value: BinaryLike,
    options?: SetOptions & { readonly nx?: false; readonly xx?: false },
  ): Promise<'OK'>;
  set(key: BinaryLike, value: BinaryLike, options?: SetOptions): Promise<'OK' | null | Uint8Array>;
  async set(key: BinaryLike, value: BinaryLike, options: SetOptions = {}): Promise<'OK' | null | Uint8Array> {
    const keyBytes = this.keyBytes(key);
    const bytes = valueBytes(value);
    if (options.ifVersion !== undefined) {
      await this.setWithVersion(key, value, options);
      return 'OK';
    }
    const request = setWithRequest(keyBytes, bytes, options);
    if (request === undefined) {
      const response = await this.send({ op: Op.SET, key: keyBytes, value: bytes }, options);
      if (response.op !== Op.OK) throw unexpectedAnswer('SET', response);
      return 'OK';
    }
    return this.run(setWithCommand(request), options);
  }

  /**
   * Stores `value` like {@link set} (expiry options and `ifVersion` included, not `nx`, `xx` or
   * `get`) and resolves the version the write gave the key. A failed `ifVersion` fails with
   * {@link VersionConflictError}.
   */
  async setWithVersion(key: BinaryLike, value: BinaryLike, options: SetOptions = {}): Promise<number> {
    return this.run(setVersionedCommand(this.keyBytes(key), valueBytes(value), options), options);
  }

  /**
   * The value of `key` with its version, or null when the key does not exist. Read on the key's
   * owner (during a migration, after the owner brought the key's current copy in).
   */
  async getWithVersion(key: BinaryLike, options?: CommandOptions): Promise<VersionedValue | null> {
    return this.run(getVersionedCommand(this.keyBytes(key)), options);
  }

  /** SETNX: stores `value` only when `key` does not exist; true when it wrote. */
  async setnx(key: BinaryLike, value: BinaryLike, options?: CommandOptions): Promise<boolean> {
    return (await this.set(key, value, { ...options, nx: true })) === 'OK';
  }

  /** Makes `key` expire after `seconds` (EXPIRE); true when the key exists and the condition held. */
  async expire(key: BinaryLike, seconds: number, options?: ExpireOptions): Promise<boolean> {
    return this.expireAs('expire', key, seconds, options);
  }

  /** Makes `key` expire after `ms` milliseconds (PEXPIRE). */
  async pexpire(key: BinaryLike, ms: number, options?: ExpireOptions): Promise<boolean> {
    return this.expireAs('pexpire', key, ms, options);
  }

  /** Makes `key` expire at Unix time `seconds` (EXPIREAT). */
  async expireat(key: BinaryLike, seconds: number, options?: ExpireOptions): Promise<boolean> {
    return this.expireAs('expireat', key, seconds, options);
  }

  /** Makes `key` expire at Unix time `ms` in milliseconds (PEXPIREAT). */
  async pexpireat(key: BinaryLike, ms: number, options?: ExpireOptions): Promise<boolean> {
    return this.expireAs('pexpireat', key, ms, options);
  }

  /** EXPIRE and its kin: the options' names checked, then one EXPIRE request. */
  private expireAs(
    form: ExpireForm,
    key: BinaryLike,
    time: number,
    options?: ExpireOptions,
  ): Promise<boolean> {
    if (options !== undefined) checkOptionNames(options, OPTION_NAMES.expire, form);
    return this.run(expireCommand(this.keyBytes(key), form, time, options?.condition), options);
  }

  /** Removes `key`'s expiry (PERSIST); true when it had one. */
  async persist(key: BinaryLike, options?: CommandOptions): Promise<boolean> {
    return this.run(persistCommand(this.keyBytes(key)), options);
  }

  /** Seconds until `key` expires, rounded as Redis rounds them; -1 without expiry, -2 when it does not exist. */
  async ttl(key: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(ttlCommand(this.keyBytes(key)), options);
  }

  /** Milliseconds until `key` expires; -1 without expiry, -2 when it does not exist. */
  async pttl(key: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(pttlCommand(this.keyBytes(key)), options);
  }

  /**
   * EXPIRETIME: the Unix time in seconds at which `key` expires (rounded as Redis rounds it); -1
   * without expiry, -2 when it does not exist.
   */
  async expiretime(key: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(expireTimeCommand(this.keyBytes(key)), options);
  }

  /** PEXPIRETIME: the Unix time in ms at which `key` expires; -1 without expiry, -2 when it does not exist. */
  async pexpiretime(key: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(pexpireTimeCommand(this.keyBytes(key)), options);
  }

  /** How many of `keys` exist (a key named twice counts twice, as Redis). No keys: 0 without a round trip. */
  async exists(...keys: BinaryLike[]): Promise<number> {
    // Past one batch, a batch at a time (one request each).
    return sumInChunks(
      keys.map((key) => this.keyBytes(key)),
      DEFAULT_LIMITS.maxBatchKeys,
      async (chunk) => {
        const response = await this.send({ op: Op.EXISTS, keys: chunk as Uint8Array[] });
        if (response.op !== Op.COUNT) throw unexpectedAnswer('EXISTS', response);
        return response.count;
      },
    );
  }

  /**
   * Reads `key` and changes its expiry in one atomic step (GETEX): `ex`/`px` from now, `exat`/`pxat`
   * at a Unix time (one already past deletes the key, answering its value), or `persist`; null
   * when the key does not exist. Without an option, a plain GET. A sliding expiry (a session
   * touched on every read) in one round trip.
   */
  async getex(key: BinaryLike, options: GetExOptions = {}): Promise<Uint8Array | null> {
    const command = getExCommand(this.keyBytes(key), options);
    return command === undefined ? this.get(key, options) : this.run(command, options);
  }

  /** Reads and deletes `key` in one atomic step (GETDEL); null when it did not exist. */
  async getdel(key: BinaryLike, options?: CommandOptions): Promise<Uint8Array | null> {
    return this.run(getDelCommand(this.keyBytes(key)), options);
  }

  /**
   * APPEND: adds `value` at the end of `key`'s value (a missing key is created with it) in one
   * atomic step on the key's owner, keeping its expiry; resolves the value's length after it.
   * Fails with VALUE_TOO_LARGE, nothing written, past the value limit.
   */
  async append(key: BinaryLike, value: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(setRangeCommand(this.keyBytes(key), undefined, value, 'APPEND'), options);
  }

  /**
   * SETRANGE: writes `value` into `key`'s value at byte `offset`, padding with zero bytes when the
   * value is shorter, in one atomic step on the key's owner, keeping its expiry; resolves the
   * value's length after it. An empty `value` writes nothing. Fails with VALUE_TOO_LARGE, nothing
   * written, past the value limit.
   */
  async setrange(
    key: BinaryLike,
    offset: number,
    value: BinaryLike,
    options?: CommandOptions,
  ): Promise<number> {
    return this.run(setRangeCommand(this.keyBytes(key), offset, value, 'SETRANGE'), options);
  }

  /**
   * GETRANGE: the bytes of `key`'s value from `start` to `end`, both included; negative indexes
   * count from the end (-1 is the last byte), as Redis. Empty when the key does not exist or the
   * range is empty.
   */
  async getrange(key: BinaryLike, start: number, end: number, options?: CommandOptions): Promise<Uint8Array> {
    return this.run(getRangeCommand(this.keyBytes(key), start, end), options);
  }

  /** STRLEN: the length in bytes of `key`'s value (0 when the key does not exist). */
  async strlen(key: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(strlenCommand(this.keyBytes(key)), options);
  }

  /**
   * SETBIT: sets the bit at `offset` (bit 0 is the high bit of the first byte) of `key`'s value to
   * `bit`, zero-padding a shorter value (a missing key is created), in one atomic step on the key's
   * owner, keeping its expiry; resolves the bit's previous value. Fails with VALUE_TOO_LARGE,
   * nothing written, past the value limit.
   */
  async setbit(key: BinaryLike, offset: number, bit: 0 | 1, options?: CommandOptions): Promise<0 | 1> {
    return this.run(setBitCommand(this.keyBytes(key), offset, bit), options);
  }

  /** GETBIT: the bit at `offset` of `key`'s value (0 past its end, or when the key does not exist). */
  async getbit(key: BinaryLike, offset: number, options?: CommandOptions): Promise<0 | 1> {
    return this.run(getBitCommand(this.keyBytes(key), offset), options);
  }

  /**
   * BITCOUNT: the set bits of `key`'s value, or of the range `start`..`end` (both included, in
   * bytes or, with `unit: 'bit'`, bits; negative from the end), as Redis counts them.
   */
  async bitcount(key: BinaryLike, range?: BitRange, options?: CommandOptions): Promise<number> {
    return this.run(bitCountCommand(this.keyBytes(key), range), options);
  }

  /**
   * BITPOS: the position of the first bit set to `bit` in `key`'s value, or in the range from
   * `start` to `end` (in bytes or bits; negative from the end), as Redis finds it: -1 when there is
   * none, except that a clear bit not found without an `end` is the bit just past the value (a
   * missing key reads as all zeros).
   */
  async bitpos(key: BinaryLike, bit: 0 | 1, range?: BitPosRange, options?: CommandOptions): Promise<number> {
    return this.run(bitPosCommand(this.keyBytes(key), bit, range), options);
  }

  /** INCR: adds 1 to the integer value of `key` (absent: 0); resolves the new value. */
  async incr(key: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(incrCommand(this.keyBytes(key), 1n), options);
  }

  /** DECR: subtracts 1. */
  async decr(key: BinaryLike, options?: CommandOptions): Promise<number> {
    return this.run(incrCommand(this.keyBytes(key), -1n), options);
  }

  /** INCRBY: adds `increment` (an integer; a bigint for the whole 64-bit range). */
  async incrby(key: BinaryLike, increment: number | bigint, options?: CommandOptions): Promise<number> {
    return this.run(incrCommand(this.keyBytes(key), int64Argument(increment, 'increment')), options);
  }

  /** DECRBY: subtracts `decrement`. */
  async decrby(key: BinaryLike, decrement: number | bigint, options?: CommandOptions): Promise<number> {
    return this.run(incrCommand(this.keyBytes(key), -int64Argument(decrement, 'decrement')), options);
  }

  /**
   * INCRBY resolving the exact 64-bit value as a bigint (incr and its kin resolve a number, as
   * ioredis does, which is exact only within ±2^53).
   */
  async incrbyBig(key: BinaryLike, increment: bigint, options?: CommandOptions): Promise<bigint> {
    return this.run(incrByCommand(this.keyBytes(key), int64Argument(increment, 'increment')), options);
  }

  /**
   * INCRBYFLOAT: adds `increment` to the value of `key` (absent: 0), both read as Redis reads
   * floating-point text (C `long double`: decimal, `1e5`, `0x1p-3`), in one atomic step on the
   * key's owner, keeping its expiry; resolves the new value's text as Redis writes it (`0.1` then
   * `0.2` give `"0.3"`). Give `increment` as a string to keep every digit you typed; a number is
   * sent as `String(increment)`. Fails with NOT_A_FLOAT (the value or the increment is not a
   * number) or OVERFLOW (an infinite result), nothing written.
   */
  async incrbyfloat(key: BinaryLike, increment: number | string, options?: CommandOptions): Promise<string> {
    return this.run(incrByFloatCommand(this.keyBytes(key), increment), options);
  }

  /**
   * Deletes `key`; true when a key was removed, false when it did not exist. With `ifVersion`,
   * only when the key is at that version (else {@link VersionConflictError}).
   */
  async del(key: BinaryLike, options?: DelOptions): Promise<boolean> {
    if (options !== undefined) checkOptionNames(options, OPTION_NAMES.del, 'del');
    const ifVersion = options?.ifVersion;
    if (ifVersion !== undefined) return this.run(delVersionedCommand(this.keyBytes(key), ifVersion), options);
    const response = await this.send({ op: Op.DEL, key: this.keyBytes(key) }, options);
    if (response.op !== Op.COUNT) throw unexpectedAnswer('DEL', response);
    return response.count > 0;
  }

  /**
   * A transaction on `key` (Redis's MULTI/EXEC, WATCH with `exec({ ifVersion, watch })`): chain
   * the steps, then `exec()` runs them in order as one atomic step on the key's owner, stored and
   * replicated as one write; `on(otherKey)` adds keys of the same hash tag. See {@link Transaction}. Throws INVALID_ARGUMENT or
   * KEY_TOO_LARGE at once for a key the client refuses.
   *
   * ```ts
   * // exec() resolves null only when a watched version changed (exec({ ifVersion, watch }))
   * const [count, , ttl] = (await client.transaction('rate:alice').incr().expire(60, { condition: 'nx' }).pttl().exec())!;
   * ```
   */
  transaction(key: BinaryLike): Transaction {
    return new Transaction(
      this.keyBytes(key),
      (request, options) => this.send(request, options),
      (other) => this.keyBytes(other),
    );
  }

  /**
   * The values of `keys`, in order, null for missing keys. An empty list answers [] without a
   * round trip. Values too large for one frame together (1 MiB) are read in parts, each part a
   * request of its own (with its own timeout).
   */
  async mget(keys: readonly BinaryLike[], options?: CommandOptions): Promise<(Uint8Array | null)[]> {
    if (!Array.isArray(keys)) throw invalidArgument(`mget takes an array of keys, got ${typeof keys}`);
    if (keys.length === 0) return [];
    // More keys than one batch takes are read a batch at a time, and values too large for one
    // frame together are read again in halves (a read: parts may see different moments, as an
    // MGET split per node does anyway).
    return readInParts(
      keys.map((key) => this.keyBytes(key)),
      async (part) => {
        const response = await this.send({ op: Op.MGET, keys: part as Uint8Array[] }, options);
        if (response.op !== Op.VALUES || response.values.length !== part.length) {
          throw unexpectedAnswer('MGET', response);
        }
        return response.values.map((value) => (value === null ? null : copyBytes(value)));
      },
      {
        sizeOf: (value) => value?.length ?? 0,
        maxBytes: Number.POSITIVE_INFINITY,
        maxItems: DEFAULT_LIMITS.maxBatchKeys,
      },
    );
  }

  /**
   * Stores several keys. Not atomic across nodes: on failure some keys may have been written. The
   * keys of one hash tag (one node) are one atomic write, replicated as one unit.
   * No entries resolves 'OK' without a round trip.
   */
  async mset(entries: MSetEntries, options?: CommandOptions): Promise<'OK'> {
    const pairs = this.entryBytes(entries);
    if (pairs.length === 0) return 'OK';
    const response = await this.send({ op: Op.MSET, entries: pairs }, options);
    if (response.op !== Op.OK) throw unexpectedAnswer('MSET', response);
    return 'OK';
  }

  /**
   * MSETNX: stores every entry only if none of the keys exists, as one atomic step: true when
   * stored, false when a key existed (nothing stored). The keys must share one hash tag
   * (`{user:7}:a`, `{user:7}:b`): one owner, one chain; keys of different positions fail with
   * INVALID_ARGUMENT, nothing stored (Redis Cluster: CROSSSLOT).
   */
  async msetnx(entries: MSetEntries, options?: CommandOptions): Promise<boolean> {
    const pairs = this.entryBytes(entries);
    if (pairs.length === 0) throw invalidArgument('MSETNX needs at least one entry');
    checkBatchSize(pairs.length);
    const results = await resultsOf(this.send(setAllIfAbsent(pairs), options));
    return results !== null;
  }

  /**
   * RENAME (RENAMENX with `nx`): moves the value of `source`, with its expiry, to `destination`
   * (overwriting it; with `nx` only if it does not exist) and deletes `source`, as one atomic step:
   * true when moved, false when `source` does not exist or, with `nx`, `destination` exists. Both
   * keys must share one hash tag (INVALID_ARGUMENT otherwise, nothing done). The source is read,
   * then moved only if unchanged since (read again when it changed; BUSY after 16 changes in a
   * row, nothing done): concurrent renames of one source move it exactly once.
   */
  async rename(
    source: BinaryLike,
    destination: BinaryLike,
    options: CommandOptions & { readonly nx?: boolean } = {},
  ): Promise<boolean> {
    checkOptionNames(options, OPTION_NAMES.rename, 'rename');
    return this.move(
      source,
      destination,
      { deletesSource: true, onlyIfAbsent: options.nx === true },
      options,
    );
  }

  /**
   * COPY: copies the value of `source`, with its expiry, to `destination` (with `replace`, over an
   * existing one), as one atomic step: true when copied, false when `source` does not exist or
   * `destination` exists without `replace`. Both keys must share one hash tag, as {@link rename}.
   */
  async copy(
    source: BinaryLike,
    destination: BinaryLike,
    options: CommandOptions & { readonly replace?: boolean } = {},
  ): Promise<boolean> {
    checkOptionNames(options, OPTION_NAMES.copy, 'copy');
    return this.move(
      source,
      destination,
      { deletesSource: false, onlyIfAbsent: options.replace !== true },
      options,
    );
  }

  /** {@link rename} and {@link copy}: one `moveKey` over this client's sends. */
  private async move(
    source: BinaryLike,
    destination: BinaryLike,
    mode: MoveOptions,
    options: CommandOptions,
  ): Promise<boolean> {
    const from = this.keyBytes(source);
    const to = this.keyBytes(destination);
    if (Buffer.compare(from, to) === 0) {
      // As Redis: COPY onto itself is refused; RENAME onto itself changes nothing (true when the
      // key exists), RENAMENX answers false.
      if (!mode.deletesSource) throw invalidArgument('the source and the destination are the same key');
      if (mode.onlyIfAbsent) return false;
      return (await this.exists(source)) > 0;
    }
    // One deadline for the whole move: each of its round trips gets what is left of it.
    const timeoutMs = options.timeout ?? this.options.commandTimeout;
    if (options.timeout !== undefined) checkCommandTimeout(options.timeout);
    const deadline = performance.now() + timeoutMs;
    const outcome = await moveKey(
      (request) => {
        const leftMs = Math.ceil(deadline - performance.now());
        // Every round trip before this one changed nothing (a read, or a write refused by its version).
        if (leftMs <= 0)
          return Promise.reject(
            commandTimeoutError(timeoutMs, 'before it could be sent', { cause: undefined }),
          );
        return this.send(request, { ...options, timeout: leftMs });
      },
      from,
      to,
      mode,
    );
    return outcome === 'moved';
  }

  /**
   * One page of an iteration over every key of the cluster (Redis's SCAN). Start with cursor
   * `'0'` and call again with the returned cursor until it is `'0'`. Every key present for the
   * whole iteration is returned at least once, even while nodes join and leave; keys may come
   * more than once (deduplicate if it matters) and a page may be empty before the end. Through the
   * balancer in both routing modes. See {@link scanIterator} for the loop.
   */
  async scan(cursor: string | number, options: ScanOptions = {}): Promise<ScanPage> {
    checkOptionNames(options, OPTION_NAMES.scan, 'scan');
    // Number('') and Number(' 7 ') are numbers too: a cursor string is digits only, as Redis's.
    const value =
      typeof cursor === 'number' ? cursor : /^\d+$/.test(String(cursor)) ? Number(cursor) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < 0) throw invalidArgument(`invalid SCAN cursor '${cursor}'`);
    const count = options.count;
    if (
      count !== undefined &&
      (!Number.isInteger(count) || count < 1 || count > DEFAULT_LIMITS.maxBatchKeys)
    ) {
      throw invalidArgument(`count must be an integer in 1..${DEFAULT_LIMITS.maxBatchKeys}`);
    }
    const match = this.scanPattern(options.match);
    const message = {
      op: Op.SCAN,
      cursor: value,
      ...(count === undefined ? {} : { count }),
      ...(match === undefined ? {} : { match }),
    } as const;
    const response = await this.send(message, options);
    if (response.op !== Op.KEYS) throw unexpectedAnswer('SCAN', response);
    const prefix = this.prefix.length;
    return {
      cursor: String(response.cursor),
      keys: response.keys.map((key) => bytesToString(prefix === 0 ? key : key.subarray(prefix))),
    };
  }

  /**
   * Every key of the cluster, page after page of {@link scan} (same guarantee: keys present for
   * the whole iteration come at least once, duplicates possible).
   */
  async *scanIterator(options: ScanOptions = {}): AsyncGenerator<string, void, undefined> {
    let cursor = '0';
    do {
      const page = await this.scan(cursor, options);
      yield* page.keys;
      cursor = page.cursor;
    } while (cursor !== '0');
  }

  /**
   * Number of keys in the cluster (Redis's DBSIZE): the sum of the nodes' counts, exact on a
   * settled ring, approximate while keys move. Refused (NO_PERMISSION) for a user limited to key
   * prefixes.
   */
  async dbsize(options?: CommandOptions): Promise<number> {
    const response = await this.send({ op: Op.DBSIZE }, options);
    if (response.op !== Op.COUNT) throw unexpectedAnswer('DBSIZE', response);
    return response.count;
  }

  /**
   * FLUSHALL: deletes every key of the cluster; resolves to the number deleted. Only for a user
   * with read-write access to every key (NO_PERMISSION otherwise). Refused with BUSY (not
   * executed, retryable) while keys migrate; fails indeterminate when some nodes flushed and
   * others could not (sending it again is safe).
   */
  async flushAll(options?: CommandOptions): Promise<number> {
    const response = await this.send({ op: Op.FLUSH }, options);
    if (response.op !== Op.COUNT) throw unexpectedAnswer('FLUSHALL', response);
    return response.count;
  }

  /** Round trip to the balancer; resolves 'PONG'. */
  async ping(options?: CommandOptions): Promise<'PONG'> {
    const response = await this.send({ op: Op.PING }, options);
    if (response.op !== Op.OK) throw unexpectedAnswer('PING', response);
    return 'PONG';
  }

  /**
   * The balancer's counters, including each node's as `node.<id>.<name>` (see the cluster conventions).
   * Refused (NO_PERMISSION) to a user limited to key prefixes: the counts are of every key.
   */
  async stats(options?: CommandOptions): Promise<StatsRecord> {
    const response = await this.send({ op: Op.STATS }, options);
    if (response.op !== Op.STATS_RESULT) throw unexpectedAnswer('STATS', response);
    return { ...response.stats };
  }

  /**
   * Closes gracefully: stops reconnecting, fails commands still in the offline queue (never sent)
   * with CONNECTION_CLOSED, lets commands in flight get their answers (each within its deadline),
   * then closes the connection. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.shutDown(false);
    return this.closing;
  }

  /**
   * Closes at once: queued commands and commands in flight fail with CONNECTION_CLOSED (an
   * in-flight write may still have been applied). Idempotent.
   */
  disconnect(): Promise<void> {
    this.closing ??= this.shutDown(true);
    return this.closing;
  }

  /**
   * The deadline of the PING a link sends after a command timed out (PeerLinkOptions'
   * `probeTimeoutMs`): a balancer or node that cannot answer a PING in the time a command is
   * given (at least {@link MIN_PROBE_TIMEOUT_MS}: a short `timeout` says how long the caller
   * waits, not that a peer that slow is gone) nor in the time a connection may take is hung, and
   * the link leaves it: the next balancer of `servers`, or the balancer route for a node's keys.
   */
  private probeTimeoutMs(): number {
    return Math.min(this.options.connectTimeout, Math.max(this.options.commandTimeout, MIN_PROBE_TIMEOUT_MS));
  }

  private createDirectRouter(): DirectRouter {
    const tls = this.options.tls;
    return new DirectRouter({
      link: {
        connectTimeoutMs: this.options.connectTimeout,
        probeTimeoutMs: this.probeTimeoutMs(),
        role: 'client',
        credentials: credentialsOf(this.options),
        // The balancer's server name is not a node's: each node is verified under its own host.
        ...(tls === undefined ? {} : { tls: { ...tls, servername: undefined } }),
        connection: { requestTimeoutMs: this.options.commandTimeout },
      },
      maxRedirections: this.options.maxRedirections,
      refreshIntervalMs: this.options.mapRefreshInterval,
      host: {
        viaBalancer: (message, options) => this.link.request(message, options),
        unreachable: (nodeId, address, error) => this.emit('nodeUnreachable', nodeId, address, error),
        mapChanged: (epoch) => this.emit('clusterMap', epoch),
      },
    });
  }

  /** Requests the balancer sends on its link: only MAP_PUSH, to a client that subscribed. */
  private onBalancerPush(request: Request, connection: Connection): void {
    if (request.op === Op.MAP_PUSH && this.direct !== undefined) {
      const snapshot: ClusterMapSnapshot = request;
      this.direct.pushed(snapshot);
      connection.reply({ op: Op.OK, id: request.id });
      return;
    }
    connection.replyError(request.id, ErrorCode.UNKNOWN_OP, `op ${request.op} is not served by a client`);
  }

  private get label(): string {
    return `${this.options.name || 'dstore client'} (${this.link.address})`;
  }

  private start(): void {
    if (this.state !== 'wait' && this.state !== 'end') return;
    this.state = 'connecting';
    this.link.start();
  }

  private listenToLink(): void {
    this.link.on('connect', () => this.emit('connect'));
    this.link.on('ready', () => this.onReady());
    this.link.on('error', (error) => {
      this.lastError = error;
      // Never emit 'error' without a listener: EventEmitter would throw and break reconnecting.
      if (this.listenerCount('error') > 0) this.emit('error', error);
      // Another protocol on the only server (the admin port, an HTTP proxy): every attempt would
      // fail the same way, so stop instead of looping; 'end' fails what is queued.
      if (this.options.servers.length === 1 && isForeignProtocol(error)) void this.link.close();
    });
    this.link.on('close', () => {
      if (this.state === 'ready') this.state = 'reconnecting';
      this.emit('close');
    });
    this.link.on('reconnecting', (delayMs, attempt) => {
      if (this.state !== 'closed') this.state = 'reconnecting';
      this.onConnectFailed(delayMs, attempt);
      this.emit('reconnecting', delayMs, attempt);
    });
    this.link.on('end', () => this.onEnd());
  }

  /**
   * A connection attempt failed (or a live connection was lost) and the next one is `delayMs`
   * away. Once every server failed in this round, commands that cannot be sent in time fail now,
   * as not executed, with the cause: before the first `ready` all of them (nothing says the
   * server will appear, and a wrong address or token must be reported, not waited out), after it
   * those whose deadline passes before the next attempt. Others wait for the next attempt.
   */
  private onConnectFailed(delayMs: number, attempt: number): void {
    const failure = this.lastError;
    if (failure === undefined || attempt % this.options.servers.length !== 0) return;
    const error = connectFailedError(this.label, failure);
    this.roundFailure = failure;
    this.nextAttemptAt = performance.now() + delayMs;
    for (const command of this.queue.takeDue(this.sendableBefore())) {
      this.unqueue(command);
      command.reject(error);
    }
    if (!this.everReady) {
      const waiters = this.connectWaiters;
      this.connectWaiters = [];
      for (const waiter of waiters) waiter.reject(error);
    }
  }

  /**
   * After a failed round, commands whose deadline comes before this cannot be sent in time: all of
   * them before the first `ready`, else those due before the next attempt.
   */
  private sendableBefore(): number {
    return this.everReady ? this.nextAttemptAt : Number.POSITIVE_INFINITY;
  }

  private onReady(): void {
    this.state = 'ready';
    this.everReady = true;
    this.lastError = undefined;
    this.roundFailure = undefined;
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) waiter.resolve();
    this.emit('ready');
    // Every new balancer connection fetches the map and subscribes to its pushes.
    void this.direct?.refresh();
    // Oldest first, each with what is left of its deadline; all leave in one coalesced write.
    for (const command of this.queue.takeAll()) {
      this.unqueue(command);
      this.submit(command);
    }
  }

  private onEnd(): void {
    if (this.state !== 'closed') {
      this.state = 'end';
      const reason =
        this.lastError !== undefined && isForeignProtocol(this.lastError)
          ? `${this.label} stopped reconnecting: the server does not speak the dstore protocol`
          : `${this.label} stopped reconnecting (retryStrategy returned null)`;
      this.failQueued(this.endError(reason));
      const waiters = this.connectWaiters;
      this.connectWaiters = [];
      for (const waiter of waiters) waiter.reject(this.endError(reason));
    }
    this.emit('end');
  }

  /** The error of commands failed by `end`: the last connection failure when there is one. */
  private endError(reason: string): DstoreError {
    const last = this.lastError;
    if (last !== undefined) return connectFailedError(`${reason}`, last);
    // Only commands not yet sent are failed with it (queued, or made while not reconnecting).
    return clientClosedError(reason, true);
  }

  private async shutDown(immediately: boolean): Promise<void> {
    const wasRunning = this.state !== 'wait' && this.state !== 'end' && this.state !== 'closed';
    this.state = 'closed';
    this.failQueued(clientClosedError(`${this.label} closed before the command was sent`, true));
    for (const endWait of [...this.resendWaits]) endWait();
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) waiter.reject(clientClosedError(`${this.label} was closed`));
    // Wait for answers here rather than in the connection's own graceful close, which stops
    // reading at once; every command in flight settles by its deadline at the latest.
    if (!immediately && this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        this.onAllAnswered = resolve;
      });
    }
    const connection = this.link.connection;
    const routerClosed = this.direct?.close(
      immediately ? clientClosedError(`${this.label} disconnected`) : undefined,
    );
    const linkClosed = this.link.close();
    connection?.destroy(clientClosedError(`${this.label} disconnected`));
    await linkClosed;
    await routerClosed;
    // The link emits 'end' itself only when it was running.
    if (!wasRunning) this.emit('end');
  }

  /** Sends `command`'s request and converts its answer (see commands.ts). */
  private async run<T>(command: KeyCommand<T, WithoutId<Request>>, options?: CommandOptions): Promise<T> {
    return command.answer(await this.send(command.request, options));
  }

  /** Sends a command now, queues it while not connected, or fails it at once. */
  private send(message: WithoutId<Request>, options: CommandOptions = {}): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      const { signal, timeout } = options;
      if (timeout !== undefined || signal !== undefined) {
        const problem = commandOptionsProblem(timeout, signal);
        if (problem !== undefined) {
          reject(problem);
          return;
        }
      }
      if (signal?.aborted) {
        reject(abortedError(signal, true));
        return;
      }
      const timeoutMs = timeout ?? this.options.commandTimeout;
      const command: Command = {
        message,
        deadline: performance.now() + timeoutMs,
        timeoutMs,
        signal,
        resolve,
        reject,
        retries: 0,
        stopWatchingQueued: undefined,
      };
      this.submit(command);
    });
  }

  private submit(command: Command): void {
    const connection = this.link.connection;
    if (connection?.isOpen) {
      this.dispatch(command);
      return;
    }
    if (this.state === 'closed') {
      command.reject(clientClosedError(`${this.label} is closed`, true));
      return;
    }
    if (this.state === 'end') {
      command.reject(this.endError(`${this.label} is not reconnecting; call connect()`));
      return;
    }
    this.start();
    // A direct client routes data commands on its last map while its balancer is away: the nodes
    // serve them (above factor 1 while their leases last); a command for a node it cannot reach
    // falls back to the balancer route and fails as not sent. It queued them all, which made
    // direct routing no help during a balancer restart (rolling-restart audit).
    if (this.direct?.routable === true && isDataCommand(command.message)) {
      this.dispatch(command);
      return;
    }
    // The last round failed and this command cannot outlive the wait for the next one: say why now.
    if (this.roundFailure !== undefined && command.deadline <= this.sendableBefore()) {
      command.reject(connectFailedError(this.label, this.roundFailure));
      return;
    }
    if (!this.options.enableOfflineQueue) {
      command.reject(
        new DstoreError(ErrorCode.UNAVAILABLE, `${this.label} is not connected (offline queue disabled)`),
      );
      return;
    }
    this.enqueue(command);
  }

  private enqueue(command: Command): void {
    if (!this.queue.push(command)) {
      command.reject(
        new DstoreError(ErrorCode.BUSY, `${this.label}: offline queue full (${this.options.maxQueueLength})`),
      );
      return;
    }
    const { signal } = command;
    if (signal) {
      command.stopWatchingQueued = watchAbort(signal, () => {
        command.stopWatchingQueued = undefined;
        if (this.queue.remove(command)) command.reject(abortedError(signal, true));
      });
    }
  }

  private unqueue(command: Command): void {
    command.stopWatchingQueued?.();
    command.stopWatchingQueued = undefined;
  }

  private expireQueued(command: Command): void {
    this.unqueue(command);
    command.reject(
      commandTimeoutError(command.timeoutMs, `still queued: ${this.label} is not connected`, {
        cause: this.lastError,
      }),
    );
  }

  private failQueued(error: DstoreError): void {
    for (const command of this.queue.takeAll()) {
      this.unqueue(command);
      command.reject(error);
    }
  }

  private dispatch(command: Command): void {
    const remainingMs = Math.ceil(command.deadline - performance.now());
    if (remainingMs <= 0) {
      command.reject(
        commandTimeoutError(command.timeoutMs, 'before it could be sent', { cause: this.lastError }),
      );
      return;
    }
    const requestOptions =
      command.signal === undefined
        ? { timeoutMs: remainingMs }
        : { timeoutMs: remainingMs, signal: command.signal };
    this.inFlight++;
    const direct = this.direct;
    const sent =
      direct !== undefined && isDataCommand(command.message)
        ? direct.request(command.message, requestOptions)
        : this.link.request(command.message, requestOptions);
    sent.then(
      (response) => {
        this.answered();
        command.resolve(response);
      },
      (error: unknown) => {
        this.answered();
        this.onSendFailure(command, error);
      },
    );
  }

  private answered(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.onAllAnswered) {
      const resolve = this.onAllAnswered;
      this.onAllAnswered = undefined;
      resolve();
    }
  }

  /**
   * Resends a command only when it certainly was not executed; a TIMEOUT or CONNECTION_CLOSED after
   * the write is indeterminate, and resending a SET could overwrite a newer write by someone else.
   */
  private onSendFailure(command: Command, error: unknown): void {
    // Once close() began, a refusal ends the command: a resend wait would outlive the connection
    // and end it with CONNECTION_CLOSED (indeterminate) although it certainly was not executed.
    if (
      this.state !== 'closed' &&
      isSafeToResend(error) &&
      command.retries < this.options.maxRetriesPerRequest &&
      performance.now() < command.deadline
    ) {
      command.retries++;
      if (error instanceof DstoreError) command.lastRefusal = error;
      // Not on the wire (the link is down): the command waits for the reconnect in the offline
      // queue. Refused by a server that is up (a failover, a migration's freeze, a full queue):
      // it tries again after the backoff, while its deadline leaves room for the attempt.
      if (this.link.connection?.isOpen !== true) {
        this.submit(command);
        return;
      }
      const delayMs = resendDelay(command.retries);
      if (performance.now() + delayMs < command.deadline) {
        this.resendLater(command, delayMs, error);
        return;
      }
    }
    if (error instanceof DstoreError && error.code === ErrorCode.TIMEOUT) {
      // The link fails a request with TIMEOUT only once the command's deadline passed (it was sent
      // with the time left): one before it is the server's answer, such as the balancer's own
      // --request-timeout towards a node, which must not be reported as this client's deadline.
      command.reject(
        performance.now() < command.deadline
          ? serverTimeoutError(this.link.address, command.timeoutMs, error)
          : command.lastRefusal === undefined
            ? commandTimeoutError(command.timeoutMs, 'waiting for the answer')
            : timeoutAfterRefusals(command.timeoutMs, command.retries, command.lastRefusal),
      );
      return;
    }
    command.reject(error instanceof Error ? error : new DstoreError(ErrorCode.INTERNAL, String(error)));
  }

  /**
   * Sends `command` again after `delayMs`. It counts as in flight meanwhile (`close()` waits for it);
   * an abort or the client's shutdown ends the wait with the abort or with `refusal`, the answer
   * that made it wait (the command was not executed either way).
   */
  private resendLater(command: Command, delayMs: number, refusal: unknown): void {
    this.inFlight++;
    const { signal } = command;
    const settle = (): void => {
      clearTimeout(timer);
      stopWatching?.();
      this.resendWaits.delete(onShutDown);
      this.answered();
    };
    const onAbort = (): void => {
      settle();
      command.reject(abortedError(signal as AbortSignal, true));
    };
    const onShutDown = (): void => {
      settle();
      command.reject(
        refusal instanceof Error ? refusal : new DstoreError(ErrorCode.INTERNAL, String(refusal)),
      );
    };
    const timer = setTimeout(() => {
      settle();
      this.submit(command);
    }, delayMs);
    const stopWatching = signal === undefined ? undefined : watchAbort(signal, onAbort);
    this.resendWaits.add(onShutDown);
  }

  /** SCAN's MATCH on the wire: the pattern behind the key prefix (escaped), or undefined for every key. */
  private scanPattern(match: string | undefined): Uint8Array | undefined {
    if (this.prefix.length === 0) return match === undefined ? undefined : toBytes(match);
    const escaped = Buffer.from(this.prefix)
      .toString('latin1')
      .replace(/[*?[\]\\]/g, '\\$&');
    return concatBytes(Buffer.from(escaped, 'latin1'), toBytes(match ?? '*'));
  }

  private keyBytes(key: BinaryLike): Uint8Array {
    const bytes = inputBytes(key, 'key');
    if (bytes.length === 0) throw invalidArgument('key must not be empty');
    const full = this.prefix.length === 0 ? bytes : concatBytes(this.prefix, bytes);
    if (full.length > DEFAULT_LIMITS.maxKeyBytes) {
      throw new DstoreError(
        ErrorCode.KEY_TOO_LARGE,
        `key is ${full.length} bytes (with prefix), limit ${DEFAULT_LIMITS.maxKeyBytes}`,
      );
    }
    return full;
  }

  private entryBytes(entries: MSetEntries): KeyValue[] {
    const source: Iterable<readonly [BinaryLike, BinaryLike]> =
      Symbol.iterator in entries
        ? (entries as Iterable<readonly [BinaryLike, BinaryLike]>)
        : Object.entries(entries as Readonly<Record<string, BinaryLike>>);
    const pairs: KeyValue[] = [];
    let frameBytes = FRAME_OVERHEAD_BYTES;
    for (const [key, value] of source) {
      const pair = { key: this.keyBytes(key), value: valueBytes(value) };
      frameBytes += pair.key.length + pair.value.length + ENTRY_OVERHEAD_BYTES;
      pairs.push(pair);
    }
    checkBatchSize(pairs.length);
    if (frameBytes > DEFAULT_LIMITS.maxFrameBytes) {
      throw new DstoreError(
        ErrorCode.FRAME_TOO_LARGE,
        `MSET of about ${frameBytes} bytes exceeds the ${DEFAULT_LIMITS.maxFrameBytes}-byte frame limit; split it`,
        { notExecuted: true },
      );
    }
    return pairs;
  }
}

/**
 * Creates a client. The forms users bring from ioredis and node-redis work:
 * `createClient()` (127.0.0.1:7379), `createClient('dstore://host:port')`, `createClient({ host, port })`,
 * `createClient({ url })`, `createClient(port)`, `createClient(port, host)`,
 * `createClient(port, host, options)`; a URL or options may be followed by overrides. Unknown
 * options are refused with an error naming the right one.
 */
export function createClient(options?: ClientOptions | string, overrides?: ClientOptions): DstoreClient;
export function createClient(port: number, host?: string, options?: ClientOptions): DstoreClient;
export function createClient(port: number, options: ClientOptions): DstoreClient;
export function createClient(...args: ClientArguments): DstoreClient {
  return new DstoreClient(...args);
}

/**
 * What is wrong with a command's own `timeout` and `signal`, or undefined: checked before anything
 * is sent, so a bad deadline (NaN never fires) or a signal that is no AbortSignal is
 * INVALID_ARGUMENT rather than a hang or a TypeError.
 */
function commandOptionsProblem(timeout: unknown, signal: unknown): DstoreError | undefined {
  try {
    if (timeout !== undefined) checkCommandTimeout(timeout);
  } catch (error) {
    return error as DstoreError;
  }
  if (
    signal !== undefined &&
    (typeof signal !== 'object' ||
      signal === null ||
      typeof (signal as AbortSignal).aborted !== 'boolean' ||
      typeof (signal as AbortSignal).addEventListener !== 'function')
  ) {
    return invalidArgument(`signal must be an AbortSignal, got ${typeof signal}`);
  }
  return undefined;
}

/** The shortest wait for a liveness PING's answer (see `probeTimeoutMs`). */
const MIN_PROBE_TIMEOUT_MS = 1000;

function isDataCommand(message: WithoutId<Request>): message is DataCommand {
  return (
    (message.op >= Op.GET && message.op <= Op.MSET) ||
    (message.op >= Op.SET_WITH && message.op <= Op.INCRBY) ||
    message.op === Op.SETRANGE ||
    message.op === Op.INCRBYFLOAT ||
    message.op === Op.SETBIT ||
    message.op === Op.PEXPIRETIME ||
    message.op === Op.READ_PART ||
    message.op === Op.GET_VERSIONED ||
    message.op === Op.DEL_VERSIONED ||
    // A transaction is a single-key write routed by its key, like the steps it is made of.
    message.op === Op.TRANSACT
  );
}

function checkBatchSize(count: number): void {
  if (count > DEFAULT_LIMITS.maxBatchKeys) {
    throw new DstoreError(
      ErrorCode.BATCH_TOO_LARGE,
      `batch of ${count} keys, limit ${DEFAULT_LIMITS.maxBatchKeys}`,
    );
  }
}

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a, 0);
  joined.set(b, a.length);
  return joined;
}
