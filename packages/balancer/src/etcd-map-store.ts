import { DstoreError, ErrorCode } from '@dstore/protocol';
import type * as Cockatiel from 'cockatiel';
import type { Etcd3, IKeyValue, IRangeResponse, ITxnResponse, Lease, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { type ClusterMap, parseClusterMap, serializeClusterMap } from './cluster-map.js';
import type { MapStore } from './map-store.js';

/** How to reach etcd and where the cluster's keys live. */
export interface EtcdMapStoreOptions {
  /** etcd client URLs, e.g. `http://127.0.0.1:2379` (the client spreads calls over them). */
  readonly endpoints: readonly string[];
  /**
   * Key prefix of this cluster, e.g. `/dstore/prod`. The map is `<prefix>/map`, election keys
   * are under `<prefix>/coordinator/`. A trailing `/` is ignored.
   */
  readonly prefix: string;
  /**
   * TTL of the leadership lease, in seconds (default 5, at least 1). A leader that cannot renew
   * it for this long gives leadership up; etcd may round it up to its minimum (about 2 s).
   */
  readonly leaseTtlSeconds?: number;
  /**
   * Bound on every request to etcd, in ms (default 5000): past it the call rejects with
   * UNAVAILABLE instead of waiting for an etcd that does not answer.
   */
  readonly requestTimeoutMs?: number;
  /** Where background problems go (a corrupt map seen by the watch, a lost lease, a failed resync). */
  readonly logger?: Pick<Logger, 'warn'>;
  /** Called with each background problem too (after the logger); for callers without a logger. */
  readonly onError?: (error: Error) => void;
}

const DEFAULT_LEASE_TTL_SECONDS = 5;
const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
/** Pause before a failed watch is set up again: enough not to spin on an etcd that is down. */
const RESYNC_DELAY_MS = 500;
/** Longest wait of the library between attempts to re-open a broken watch. */
const WATCH_RETRY_MAX_MS = 1_000;

/** A revision from etcd (decimal int64 text) as a number we can compare and do arithmetic on. */
function revision(text: string): bigint {
  return BigInt(text);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The leadership of one acquireLeadership call: its lease, its election key, and whether it is
 * still held. Ends once (`lost` or close), never comes back: a new term needs a new call.
 */
interface Term {
  readonly candidate: string;
  readonly lease: Lease;
  readonly onLost: () => void;
  /** `<prefix>/coordinator/<lease id in hex>`, the layout of etcd's own election recipe. */
  key: string | undefined;
  /** Create revision of {@link key}: the fence every CAS of this term compares. */
  createRevision: bigint | undefined;
  elected: boolean;
  ended: boolean;
  /** Local time before which etcd cannot have expired the lease (see {@link EtcdMapStore.trackLease}). */
  aliveUntil: number;
  watchdog: NodeJS.Timeout | undefined;
  /** Rejects a campaign still waiting for its turn when the term ends. */
  abort: (error: DstoreError) => void;
  aborted: Promise<never>;
}

/**
 * The cluster map in etcd, shared by any number of balancers.
 *
 * - The map is one key, `<prefix>/map`, holding {@link serializeClusterMap}'s text. Every write is
 *   one etcd transaction comparing the key's mod revision (the stored map is still the one that
 *   was read) and, once this process won the election, its election key's create revision (it is
 *   still the leader: a deposed leader's write fails even if it has not noticed yet).
 * - Leadership is etcd's election recipe (as in etcd's Go `concurrency` package): each candidate
 *   puts `<prefix>/coordinator/<lease>` under its own lease; the oldest key leads; a candidate
 *   waits for the deletion of the key created just before its own.
 * - Every call to etcd is bounded by `requestTimeoutMs`: an unreachable etcd is an UNAVAILABLE
 *   error, never a hang.
 */
export class EtcdMapStore implements MapStore {
  /** Always `etcd`. */
  readonly kind = 'etcd';
  /** `etcd <endpoints, comma-separated> <prefix>`, for operators and in error messages. */
  readonly location: string;
  /**
   * The etcd client, set once {@link connected} resolves: etcd3 (gRPC, protobuf, cockatiel) costs
   * ~300 ms of CPU to load, which every balancer process keeping its map elsewhere paid when it
   * was loaded with this module. Every path to it waits for {@link connected} first (see {@link call}).
   */
  private client!: Etcd3;
  /** Loads etcd3 and creates {@link client}; rejects only if etcd3 cannot be loaded. */
  private readonly connected: Promise<void>;
  private readonly mapKey: string;
  private readonly electionPrefix: string;
  private readonly leaseTtlSeconds: number;
  private readonly requestTimeoutMs: number;

  /** Epoch and mod revision of the newest map this store saw (load, CAS or watch). */
  private known: { epoch: number; modRevision: bigint } | undefined;
  /** Highest epoch seen: the watch reports only maps above it. */
  private seenEpoch: number | undefined;
  /** etcd revision of the last load or CAS: a watch started later replays from just after it. */
  private syncedRevision: bigint | undefined;
  /** Texts of this process's CAS writes in flight: their watch events are not news to it. */
  private readonly writing = new Set<string>();

  private readonly listeners = new Set<(map: ClusterMap) => void>();
  private mapWatcher: Watcher | undefined;
  private leaderWatcher: Watcher | undefined;
  private observing = false;
  private leaderName: string | undefined;
  /** Header revision of the newest election read applied to {@link leaderName}. */
  private leaderRevision = -1n;
  private term: Term | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** The map resync is failing: report the first failure of an outage, not every retry. */
  private mapResyncFailing = false;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: EtcdMapStoreOptions) {
    if (options.endpoints.length === 0) throw new RangeError('EtcdMapStore needs at least one etcd endpoint');
    const prefix = options.prefix.replace(/\/+$/, '');
    if (prefix === '') throw new RangeError('EtcdMapStore needs a non-empty key prefix');
    this.leaseTtlSeconds = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    if (!Number.isInteger(this.leaseTtlSeconds) || this.leaseTtlSeconds < 1) {
      throw new RangeError(`leaseTtlSeconds must be an integer >= 1, got ${this.leaseTtlSeconds}`);
    }
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.mapKey = `${prefix}/map`;
    this.electionPrefix = `${prefix}/coordinator/`;
    this.location = `etcd ${options.endpoints.join(',')} ${prefix}`;
    this.connected = Promise.all([import('etcd3'), import('cockatiel')]).then(([etcd3, cockatiel]) => {
      this.client = this.createClient(etcd3.Etcd3, cockatiel);
    });
    // Awaited by every call, which reports a failure; nobody may be waiting yet.
    this.connected.catch(() => undefined);
  }

  private createClient(Client: typeof Etcd3, policies: typeof Cockatiel): Etcd3 {
    const options = this.options;
    const timeout = this.requestTimeoutMs;
    return new Client({
      hosts: [...options.endpoints],
      dialTimeout: timeout,
      // Unary calls get a deadline (streams, i.e. watches and keepalives, live on): the library's
      // own retries then end too, and call() below bounds the whole.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: {
        // No circuit breaker per host: the library's default opens after 3 failures and refuses
        // every call for 5 s, so after any outage past the lease TTL the cluster stayed down ~5 s
        // after etcd was back (etcd audit). Every call here is bounded and retried already.
        host: () => policies.noop,
        // Watches (the map, the election) come back within a second of etcd, not up to 30 s.
        // (The library takes a started backoff and asks it for the next step.)
        watchBackoff: new policies.ExponentialBackoff({
          initialDelay: 100,
          maxDelay: WATCH_RETRY_MAX_MS,
        }).next(),
      },
    });
  }

  /** Reads `<prefix>/map` (a linearizable read); MAP_CORRUPT if it is not a valid map. */
  async load(): Promise<ClusterMap | undefined> {
    const response = await this.call('read the map', () => this.client.get(this.mapKey).exec());
    this.syncedRevision = revision(response.header.revision);
    this.startObserving();
    const kv = response.kvs[0];
    if (kv === undefined) {
      this.known = undefined;
      return undefined;
    }
    const map = parseClusterMap(kv.value.toString('utf8'), this.location);
    this.remember(map, kv);
    return map;
  }

  /**
   * One transaction: put the map if the key's mod revision is still the one remembered for
   * `expectedEpoch` (create revision 0 when undefined) and, after {@link acquireLeadership}
   * succeeded, this process's election key still has its create revision. UNAVAILABLE when etcd
   * does not answer in time: the write may then have been applied or not, and sending the same
   * CAS again is safe (it applies once; a repeat finds its own map and succeeds).
   */
  async compareAndSet(expectedEpoch: number | undefined, next: ClusterMap): Promise<void> {
    await this.connection();
    const term = this.term;
    if (term?.elected && term.ended) throw this.notLeader(term);
    const text = serializeClusterMap(next);
    let modRevision: bigint | undefined;
    if (expectedEpoch !== undefined) {
      // The revision of the epoch the caller read. Not known here (the caller read it through
      // another store, or the watch skipped it): read it now; the compare still guards the write.
      modRevision = this.known?.epoch === expectedEpoch ? this.known.modRevision : undefined;
      if (modRevision === undefined) {
        const current = await this.call('read the map', () => this.client.get(this.mapKey).exec());
        const kv = current.kvs[0];
        const epoch = kv === undefined ? undefined : (this.epochOf(kv) ?? 'unreadable');
        if (kv === undefined || epoch !== expectedEpoch) throw this.conflict(expectedEpoch, epoch);
        modRevision = revision(kv.mod_revision);
      }
    }
    const fence = term?.elected ? term : undefined;
    let transaction =
      modRevision === undefined
        ? this.client.if(this.mapKey, 'Create', '==', 0)
        : this.client.if(this.mapKey, 'Mod', '==', modRevision.toString());
    if (fence?.key !== undefined && fence.createRevision !== undefined) {
      transaction = transaction.and(fence.key, 'Create', '==', fence.createRevision.toString());
    }
    const otherwise = [this.client.get(this.mapKey)];
    if (fence?.key !== undefined) otherwise.push(this.client.get(fence.key));
    this.writing.add(text);
    let result: ITxnResponse;
    try {
      result = await this.call('write the map', () =>
        transaction
          .then(this.client.put(this.mapKey).value(text))
          .else(...otherwise)
          .commit(),
      );
    } finally {
      this.writing.delete(text);
    }
    if (result.succeeded) {
      this.syncedRevision = revision(result.header.revision);
      this.remember(next, { mod_revision: result.header.revision });
      return;
    }
    const stored = result.responses[0]?.response_range.kvs[0];
    if (stored !== undefined && stored.value.toString('utf8') === text) {
      // Our own write, applied by an earlier attempt whose answer was lost (the client retries
      // on a broken connection): the map is what the caller asked for.
      this.remember(next, stored);
      return;
    }
    if (fence !== undefined) {
      const leaderKv = result.responses[1]?.response_range.kvs[0];
      if (leaderKv === undefined || revision(leaderKv.create_revision) !== fence.createRevision) {
        this.endTerm(fence, 'its election key is gone (lease expired or revoked)');
        throw this.notLeader(fence);
      }
    }
    let actual: number | 'unreadable' | undefined;
    if (stored !== undefined) {
      actual = this.epochOf(stored) ?? 'unreadable';
      if (actual !== 'unreadable') this.remember({ epoch: actual }, stored);
    }
    throw this.conflict(expectedEpoch, actual);
  }

  /**
   * Watches `<prefix>/map` from just after the last load or CAS (nothing in between is missed;
   * without one, the current map is read first and reported if newer than anything seen). A
   * corrupt value is reported through `logger`/`onError` and skipped. A broken watch (etcd
   * compacted past it) is set up again from a fresh read.
   */
  watch(listener: (map: ClusterMap) => void): () => void {
    if (this.closed) return () => undefined;
    this.listeners.add(listener);
    if (this.listeners.size === 1 && this.mapWatcher === undefined) {
      if (this.syncedRevision === undefined) this.resyncMap(0);
      else this.watchMap(this.syncedRevision + 1n);
    }
    this.startObserving();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0 && this.mapWatcher !== undefined) {
        const watcher = this.mapWatcher;
        this.mapWatcher = undefined;
        void this.cancelWatcher(watcher);
      }
    };
  }

  /**
   * Campaigns under `<prefix>/coordinator/` with a lease of `leaseTtlSeconds` and resolves once
   * this process leads. Rejects (UNAVAILABLE) if etcd cannot be reached or the lease is lost
   * while waiting, and SHUTTING_DOWN if the store is closed first. Once leading, `onLost` is
   * called (once) when the lease is not renewed for its TTL, etcd reports it gone, or the
   * election key is deleted; this process must then stop writing (and its CASes fail).
   */
  async acquireLeadership(candidate: string, onLost: () => void): Promise<void> {
    // First: the check below and taking the term must run in one step.
    await this.connection();
    if (this.term !== undefined && !this.term.ended) {
      throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `${this.location}: a campaign is already running`);
    }
    this.startObserving();
    let abort: (error: DstoreError) => void = () => undefined;
    const aborted = new Promise<never>((_, reject) => {
      abort = reject;
    });
    // Nobody may be awaiting it (the campaign finished): a rejection must not go unhandled.
    aborted.catch(() => undefined);
    const grantSent = Date.now();
    const term: Term = {
      candidate,
      lease: this.client.lease(this.leaseTtlSeconds),
      onLost,
      key: undefined,
      createRevision: undefined,
      elected: false,
      ended: false,
      aliveUntil: grantSent + this.leaseTtlSeconds * 1000,
      watchdog: undefined,
      abort,
      aborted,
    };
    this.term = term;
    this.trackLease(term);
    try {
      const leaseId = await this.race(term, 'grant the leadership lease', () => term.lease.grant());
      const key = `${this.electionPrefix}${BigInt(leaseId).toString(16)}`;
      term.key = key;
      const put = await this.race(term, 'enter the election', () =>
        this.client
          .if(key, 'Create', '==', 0)
          .then(this.client.put(key).value(candidate).lease(leaseId))
          .else(this.client.get(key))
          .commit(),
      );
      // On a retried request the key may already be ours: its create revision is the one to use.
      term.createRevision = put.succeeded
        ? revision(put.header.revision)
        : revision(put.responses[0]?.response_range.kvs[0]?.create_revision ?? put.header.revision);
      await this.waitForTurn(term);
      // The lease may have expired during the wait (its deletion would also have ended the
      // wait): lead only if the key is still ours.
      const mine = await this.race(term, 'check the election key', () => this.client.get(key).exec());
      if (mine.kvs[0] === undefined || revision(mine.kvs[0].create_revision) !== term.createRevision) {
        throw new DstoreError(
          ErrorCode.UNAVAILABLE,
          `${this.location}: the leadership lease expired while waiting`,
        );
      }
      if (term.ended)
        throw new DstoreError(ErrorCode.UNAVAILABLE, `${this.location}: leadership ended before it began`);
      term.elected = true;
      this.setLeader(candidate, revision(mine.header.revision));
    } catch (error) {
      const failure =
        error instanceof DstoreError ? error : this.unavailable('campaign for leadership', error);
      if (!term.ended) this.endTerm(term, `campaign failed: ${failure.message}`);
      throw failure;
    }
  }

  /** The leader as last observed: this process once elected, else the oldest election key's value. */
  leader(): string | undefined {
    return this.leaderName;
  }

  /** Resigns (revokes the lease, which deletes the election key), stops watches, closes the client. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /**
   * See {@link MapStore.resign}: ends this process's term without `onLost` (it is leaving, not
   * deposed) and revokes its lease, which deletes the election key: a follower takes over at once.
   */
  async resign(): Promise<boolean> {
    const term = this.term;
    if (this.closed || term === undefined || term.ended) return false;
    await this.endOwnTerm(term);
    return true;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const term = this.term;
    if (term !== undefined && !term.ended) await this.endOwnTerm(term);
    if (this.leaderName === term?.candidate) this.leaderName = undefined;
    const watchers = [this.mapWatcher, this.leaderWatcher];
    this.mapWatcher = undefined;
    this.leaderWatcher = undefined;
    await Promise.all(watchers.map((watcher) => (watcher ? this.cancelWatcher(watcher) : undefined)));
    // Never created when etcd3 could not be loaded.
    const created = await this.connected.then(
      () => true,
      () => false,
    );
    if (created) this.client.close();
  }

  /**
   * Keeps `term.aliveUntil` = send time of the oldest keepalive etcd acknowledged last + TTL:
   * etcd counts the TTL from when it received that keepalive, so until then nobody else can have
   * won the election. A watchdog ends the term at that time unless a newer ack moved it.
   */
  private trackLease(term: Term): void {
    const sent: number[] = [];
    term.lease.on('keepaliveEstablished', () => {
      // A new stream: requests written on the old one will never be answered.
      sent.length = 0;
    });
    term.lease.on('keepaliveFired', () => {
      sent.push(Date.now());
    });
    term.lease.on('keepaliveSucceeded', () => {
      const at = sent.shift();
      if (at !== undefined) term.aliveUntil = Math.max(term.aliveUntil, at + this.leaseTtlSeconds * 1000);
      this.armWatchdog(term);
    });
    term.lease.on('lost', (error) => this.endTerm(term, `lease lost: ${error.message}`));
    this.armWatchdog(term);
  }

  private armWatchdog(term: Term): void {
    if (term.ended) return;
    clearTimeout(term.watchdog);
    const wait = Math.max(0, term.aliveUntil - Date.now());
    term.watchdog = setTimeout(() => {
      if (Date.now() >= term.aliveUntil) {
        this.endTerm(term, `lease not renewed for ${this.leaseTtlSeconds} s (etcd unreachable?)`);
      } else {
        this.armWatchdog(term);
      }
    }, wait);
    term.watchdog.unref();
  }

  /** Ends this process's own term (a resignation or a close): its campaign stops, its lease is revoked. */
  private async endOwnTerm(term: Term): Promise<void> {
    term.ended = true;
    clearTimeout(term.watchdog);
    term.abort(this.closedError());
    // Revoking deletes the election key at once: a follower takes over without waiting a TTL.
    await this.bounded(term.lease.revoke()).catch((error: unknown) =>
      this.report(this.unavailable('revoke the leadership lease', error)),
    );
    if (this.leaderName === term.candidate) this.leaderName = undefined;
  }

  /** Ends a term once: stops its lease, rejects a pending campaign, tells a leader it lost. */
  private endTerm(term: Term, reason: string): void {
    if (term.ended || this.closed) return;
    term.ended = true;
    clearTimeout(term.watchdog);
    const error = new DstoreError(
      ErrorCode.UNAVAILABLE,
      `${this.location}: leadership of ${term.candidate} ended: ${reason}`,
    );
    term.abort(error);
    // Stop renewing; revoking frees the election at once when etcd is reachable (else it expires).
    void this.bounded(term.lease.revoke()).catch(() => undefined);
    if (!term.elected) return;
    if (this.leaderName === term.candidate) this.leaderName = undefined;
    this.report(error);
    try {
      term.onLost();
    } catch (callbackError) {
      this.report(callbackError instanceof Error ? callbackError : new Error(String(callbackError)));
    }
  }

  /** Waits until no election key older than this term's is left (etcd's waitDeletes). */
  private async waitForTurn(term: Term): Promise<void> {
    const own = term.createRevision!;
    for (;;) {
      const older = await this.race(term, 'read the election', () =>
        this.client
          .getAll()
          .prefix(this.electionPrefix)
          .maxCreateRevision((own - 1n).toString())
          .sort('Create', 'Descend')
          .limit(1)
          .exec(),
      );
      const previous = older.kvs[0];
      if (previous === undefined) return;
      // Only the key just before ours: when it goes, the next older one (if any) is looked up.
      // Watching from after the read means a deletion in between is still seen.
      const watcher = this.client
        .watch()
        .key(previous.key)
        .only('delete')
        .startRevision((revision(older.header.revision) + 1n).toString())
        .watcher();
      try {
        await Promise.race([
          new Promise<void>((resolve, reject) => {
            watcher.once('delete', () => resolve());
            watcher.on('error', (error) => reject(this.unavailable('watch the election', error)));
          }),
          term.aborted,
        ]);
      } finally {
        void this.cancelWatcher(watcher);
      }
    }
  }

  /** Runs an etcd call for a campaign: bounded like {@link call}, and cut short if the term ends. */
  private race<T>(term: Term, what: string, run: () => Promise<T>): Promise<T> {
    return Promise.race([this.call(what, run), term.aborted]);
  }

  /** Follows the election so {@link leader} is known to followers too. Started on first use. */
  private startObserving(): void {
    if (this.observing || this.closed) return;
    this.observing = true;
    this.resyncLeader(0);
  }

  private resyncLeader(delayMs: number): void {
    this.later(delayMs, async () => {
      try {
        const response = await this.readLeader();
        this.leaderWatcher = this.client
          .watch()
          .prefix(this.electionPrefix)
          .startRevision((revision(response.header.revision) + 1n).toString())
          .watcher();
        const watcher = this.leaderWatcher;
        watcher.on('put', () => void this.readLeader().catch(() => undefined));
        watcher.on('delete', (kv) => {
          const term = this.term;
          if (term?.key !== undefined && kv.key.toString('utf8') === term.key) {
            this.endTerm(term, 'its election key was deleted');
          }
          void this.readLeader().catch(() => undefined);
        });
        watcher.on('error', (error) => {
          if (this.leaderWatcher !== watcher) return;
          this.leaderWatcher = undefined;
          this.report(this.unavailable('watch the election', error));
          void this.cancelWatcher(watcher);
          this.resyncLeader(RESYNC_DELAY_MS);
        });
      } catch {
        // etcd unreachable: try again; leader() keeps what it last knew.
        this.resyncLeader(RESYNC_DELAY_MS);
      }
    });
  }

  /** Reads the oldest election key: its value is the leader's name. */
  private async readLeader(): Promise<IRangeResponse> {
    const response = await this.call('read the election', () =>
      this.client.getAll().prefix(this.electionPrefix).sort('Create', 'Ascend').limit(1).exec(),
    );
    const first = response.kvs[0];
    this.setLeader(first?.value.toString('utf8'), revision(response.header.revision));
    return response;
  }

  /** Applies an observation unless a newer one was applied (reads can answer out of order). */
  private setLeader(name: string | undefined, at: bigint): void {
    if (at < this.leaderRevision || this.closed) return;
    this.leaderRevision = at;
    this.leaderName = name;
  }

  /** Reads the map, reports it if newer, then watches from just after that read. */
  private resyncMap(delayMs: number): void {
    this.later(delayMs, async () => {
      if (this.listeners.size === 0 || this.mapWatcher !== undefined) return;
      try {
        const response = await this.call('read the map', () => this.client.get(this.mapKey).exec());
        const kv = response.kvs[0];
        this.mapResyncFailing = false;
        if (kv !== undefined) this.onMapPut(kv);
        if (this.listeners.size === 0 || this.mapWatcher !== undefined) return;
        this.watchMap(revision(response.header.revision) + 1n);
      } catch (error) {
        if (!this.mapResyncFailing) this.report(error instanceof Error ? error : new Error(String(error)));
        this.mapResyncFailing = true;
        this.resyncMap(RESYNC_DELAY_MS);
      }
    });
  }

  private watchMap(from: bigint): void {
    if (this.closed) return;
    const watcher = this.client.watch().key(this.mapKey).startRevision(from.toString()).watcher();
    this.mapWatcher = watcher;
    watcher.on('put', (kv) => this.onMapPut(kv));
    watcher.on('delete', () => {
      // Someone removed the map by hand: the next CAS must be a create.
      this.known = undefined;
    });
    watcher.on('error', (error) => {
      // Cancelled by etcd (typically: compacted past our revision). The library does not retry
      // this one: read the map afresh and watch again.
      if (this.mapWatcher !== watcher) return;
      this.mapWatcher = undefined;
      this.report(this.unavailable('watch the map', error));
      void this.cancelWatcher(watcher);
      this.resyncMap(RESYNC_DELAY_MS);
    });
  }

  private onMapPut(kv: IKeyValue): void {
    let map: ClusterMap;
    try {
      map = parseClusterMap(kv.value.toString('utf8'), this.location);
    } catch (error) {
      this.report(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    const newer = this.seenEpoch === undefined || map.epoch > this.seenEpoch;
    const ours = this.writing.has(kv.value.toString('utf8'));
    this.remember(map, kv);
    if (!newer || ours) return;
    for (const listener of [...this.listeners]) {
      try {
        listener(map);
      } catch (error) {
        this.report(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  /** Notes a stored map's epoch and revision; revisions only go forward, whatever order we learn them in. */
  private remember(map: Pick<ClusterMap, 'epoch'>, kv: Pick<IKeyValue, 'mod_revision'>): void {
    const modRevision = revision(kv.mod_revision);
    if (this.known === undefined || modRevision >= this.known.modRevision) {
      this.known = { epoch: map.epoch, modRevision };
    }
    // The map is known as of that revision: a watch (re)started later need not replay before it.
    if (this.syncedRevision === undefined || modRevision > this.syncedRevision)
      this.syncedRevision = modRevision;
    if (this.seenEpoch === undefined || map.epoch > this.seenEpoch) this.seenEpoch = map.epoch;
  }

  /** The epoch of a stored value, or undefined if it is not a readable map. */
  private epochOf(kv: IKeyValue): number | undefined {
    try {
      return parseClusterMap(kv.value.toString('utf8'), this.location).epoch;
    } catch {
      return undefined;
    }
  }

  /** Runs one etcd call, bounded by requestTimeoutMs; every failure becomes a DstoreError. */
  private async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    await this.connection();
    if (this.closed) throw this.closedError();
    try {
      return await this.bounded(run(), what);
    } catch (error) {
      if (error instanceof DstoreError) throw error;
      if (this.closed) throw this.closedError();
      throw this.unavailable(what, error);
    }
  }

  /** Resolves once {@link client} exists; UNAVAILABLE if etcd3 cannot be loaded, SHUTTING_DOWN once closed. */
  private async connection(): Promise<void> {
    if (this.closed) throw this.closedError();
    try {
      await this.connected;
    } catch (error) {
      throw this.unavailable('load the etcd client (etcd3)', error);
    }
  }

  /** `promise`, or an UNAVAILABLE rejection after requestTimeoutMs. */
  private bounded<T>(promise: Promise<T>, what = 'answer'): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new DstoreError(
              ErrorCode.UNAVAILABLE,
              `${this.location}: etcd did not ${what} within ${this.requestTimeoutMs} ms`,
            ),
          ),
        this.requestTimeoutMs,
      );
    });
    return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
  }

  /** Cancels a watcher without waiting on an etcd that does not answer. */
  private async cancelWatcher(watcher: Watcher): Promise<void> {
    // Only our listeners: the library's own (revision tracking, cancel handshake) must stay.
    for (const event of ['put', 'delete', 'error'] as const) watcher.removeAllListeners(event);
    // The library may still emit 'error' on a watcher being cancelled: an 'error' event without
    // a listener would throw.
    watcher.on('error', () => undefined);
    await this.bounded(watcher.cancel()).catch(() => undefined);
  }

  /** Runs `task` after `delayMs` unless the store closed; the timer does not keep the process up. */
  private later(delayMs: number, task: () => Promise<void>): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closed) void task();
    }, delayMs);
    timer.unref();
    this.timers.add(timer);
  }

  private report(error: Error): void {
    this.options.logger?.warn({ err: error, store: this.location }, error.message);
    this.options.onError?.(error);
  }

  private unavailable(what: string, cause: unknown): DstoreError {
    return new DstoreError(
      ErrorCode.UNAVAILABLE,
      `${this.location}: cannot ${what}: ${errorMessage(cause)}`,
      { cause },
    );
  }

  private conflict(expected: number | undefined, actual: number | 'unreadable' | undefined): DstoreError {
    return new DstoreError(
      ErrorCode.MAP_CONFLICT,
      `cluster map in ${this.location} is at epoch ${actual ?? 'none'}, expected ${expected ?? 'none'}: another writer changed it`,
    );
  }

  private notLeader(term: Term): DstoreError {
    return new DstoreError(
      ErrorCode.MAP_CONFLICT,
      `${this.location}: ${term.candidate} is no longer the map's writer (leadership lost): not written`,
    );
  }

  private closedError(): DstoreError {
    return new DstoreError(ErrorCode.SHUTTING_DOWN, `${this.location}: the map store is closed`);
  }
}
