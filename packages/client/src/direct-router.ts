import {
  type Chain,
  type ReplicaState,
  ringOfSpec,
  Topology,
  type TopologyReplication,
} from '@dstore/hashring';
import {
  type AskResponse,
  type ClusterMapSnapshot,
  type DelRequest,
  DstoreError,
  ErrorCode,
  type ExistsRequest,
  type GetRequest,
  type KeyValue,
  type MGetRequest,
  type MovedResponse,
  type MSetRequest,
  Op,
  PeerLink,
  type PeerLinkOptions,
  type Request,
  type Response,
  type SetRequest,
  type WithoutId,
} from '@dstore/protocol';
import {
  type DataRequest,
  isSingleKeyRead,
  type KeyedRequest,
  migratingDeleteOutcome,
  partlyApplied,
  watchAbort,
  withEpoch,
} from '@dstore/protocol/internal';
import { abortedError, commandTimeoutError } from './errors.js';

/** A data command as the client sends it (no id, no epoch yet). */
export type DataCommand = DataRequest;

/**
 * A command for exactly one key: GET, SET, DEL and the data model's single-key requests, TRANSACT
 * among them (a write of its `key`: to the chain's head, fenced, never ASKed, as an INCRBY).
 */
type SingleCommand = WithoutId<GetRequest> | WithoutId<SetRequest> | WithoutId<DelRequest> | KeyedRequest;

/** A command split per owner: each part goes to its node (or, redirected, through the balancer). */
type PartCommand = WithoutId<MGetRequest> | WithoutId<MSetRequest> | WithoutId<ExistsRequest>;

/** Per-request options of a routed command: what is left of its deadline, and its AbortSignal. */
export interface RouteOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}

/** Counters of direct routing, for tests, benchmarks and dashboards. */
export interface DirectRoutingStats {
  /** Requests (or MGET/MSET parts) answered by a storage node directly. */
  direct: number;
  /** Requests (or parts) sent through the balancer: no map yet, node unreachable, map behind a node. */
  viaBalancer: number;
  /** MOVED answers received. */
  moved: number;
  /** ASK answers received (one-shot redirects during a migration). */
  asked: number;
  /** Most redirects one request followed. */
  maxRedirectsPerRequest: number;
  /** Map fetches sent to the balancer (the first, refreshes and backstops). */
  refreshes: number;
  /** Maps pushed by the balancer. */
  pushes: number;
  /** Epoch of the map in use; -1 before the first. */
  mapEpoch: number;
  /** Nodes of the map. */
  nodes: number;
  /** Nodes of the map whose connection is ready now (the others' commands go through the balancer). */
  nodesReady: number;
  /** Replication factor of the map in use (1 before the first, or from a balancer that predates it). */
  replicationFactor: number;
  /** Members of the map in use whose replication state is not `up` (they serve in no chain). */
  membersNotUp: number;
}

/** What the router needs from its client. */
export interface DirectRouterHost {
  /** Sends a command through the balancer (the client's own link). */
  viaBalancer(message: WithoutId<Request>, options: RouteOptions): Promise<Response>;
  /** A node of the map cannot be reached at the address the map gives (reported once per outage). */
  unreachable(nodeId: string, address: string, error: Error): void;
  /** A newer map is in use. */
  mapChanged(epoch: number): void;
}

/** Options of a {@link DirectRouter}. */
export interface DirectRouterOptions {
  /** How node links connect and authenticate: the client's credentials, TLS and timeouts. */
  readonly link: Omit<PeerLinkOptions, 'host' | 'port'>;
  readonly maxRedirections: number;
  readonly refreshIntervalMs: number;
  readonly host: DirectRouterHost;
}

/** One storage node of the map and the client's link to it. */
interface NodeEntry {
  readonly id: string;
  readonly address: string;
  readonly link: PeerLink;
  /** Whether its unreachability was reported since it was last ready. */
  reported: boolean;
}

/** The map in use: the ring and epoch (as a {@link Topology}), its generation and the nodes. */
interface DirectMap {
  readonly topology: Topology;
  readonly generation: number;
  readonly nodes: ReadonlyMap<string, NodeEntry>;
  readonly signature: string;
  /** The map's replication factor and members' replication states: what chains derive from. */
  readonly replicationFactor: number;
  readonly states: ReadonlyMap<string, ReplicaState>;
}

/** Fewest ms between two map fetches caused by redirects (the backstop and pushes are separate). */
const MIN_REFRESH_INTERVAL_MS = 250;

/**
 * Routes a client's data commands straight to the storage node that owns each key, on the cluster
 * map the balancer sends (and pushes whenever it changes). Correctness comes from the nodes, not
 * from the map being fresh: every request carries the map's epoch, and a node answers a request
 * routed on another epoch, or for a key it does not own, with MOVED (not executed). The router
 * then refreshes its map (one fetch at a time, at most one per 250 ms, only ever moving to a newer
 * epoch) and resends; when its map cannot catch up with the node (the balancer is still
 * announcing a ring, or the node is behind), the command goes through the balancer, which
 * resolves exactly those cases. During a migration a node answers ASK (one-shot, the map is kept):
 * read, or also delete, the old owner's copy, as the balancer would. A stale map costs hops, never
 * a wrong answer; at most `maxRedirections` redirects per command.
 *
 * The map is one immutable snapshot, replaced whole by {@link install}; requests read it once per
 * attempt. This class is its only writer.
 */
export class DirectRouter {
  /** Routing counters. */
  readonly stats: DirectRoutingStats = {
    direct: 0,
    viaBalancer: 0,
    moved: 0,
    asked: 0,
    maxRedirectsPerRequest: 0,
    refreshes: 0,
    pushes: 0,
    mapEpoch: -1,
    nodes: 0,
    nodesReady: 0,
    replicationFactor: 1,
    membersNotUp: 0,
  };

  private map: DirectMap | undefined;
  private refreshing: Promise<void> | undefined;
  private lastRefreshAt = Number.NEGATIVE_INFINITY;
  private delayedRefresh: NodeJS.Timeout | undefined;
  private readonly backstop: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly options: DirectRouterOptions) {
    this.backstop = setInterval(() => void this.refresh(), options.refreshIntervalMs);
    this.backstop.unref();
  }

  /** The counters, with the node counts of this moment. */
  snapshot(): DirectRoutingStats {
    let ready = 0;
    for (const node of this.map?.nodes.values() ?? []) if (node.link.isReady) ready++;
    return { ...this.stats, nodes: this.map?.nodes.size ?? 0, nodesReady: ready };
  }

  /**
   * Installs a map from the balancer if it is newer than the one in use (a higher epoch of the
   * same generation, the same epoch with other addresses, or another generation: the cluster was
   * recreated). Links to new nodes are opened, links to nodes gone are closed. Returns whether it
   * was installed.
   */
  install(snapshot: ClusterMapSnapshot): boolean {
    if (this.closed) return false;
    const current = this.map;
    const signature = mapSignature(snapshot);
    if (current !== undefined && current.generation === snapshot.generation) {
      if (snapshot.epoch < current.topology.epoch) return false;
      if (snapshot.epoch === current.topology.epoch && signature === current.signature) return false;
    }
    let topology: Topology;
    try {
      topology = new Topology(
        ringOfSpec(snapshot),
        snapshot.epoch,
        undefined,
        undefined,
        replicationOf(snapshot),
      );
    } catch {
      // A ring this client cannot build (an algorithm it does not know): keep using the balancer.
      return false;
    }
    const nodes = new Map<string, NodeEntry>();
    for (const member of snapshot.nodes) {
      if (member.host === undefined || member.port === undefined || member.port === 0) continue;
      const address = `${member.host}:${member.port}`;
      const existing = current?.nodes.get(member.id);
      nodes.set(
        member.id,
        existing !== undefined && existing.address === address
          ? existing
          : this.openNode(member.id, member.host, member.port),
      );
    }
    if (current !== undefined) {
      for (const [id, entry] of current.nodes) {
        if (nodes.get(id) !== entry) void entry.link.close();
      }
    }
    const states = new Map<string, ReplicaState>();
    for (const member of snapshot.nodes)
      if (member.replicaState !== undefined) states.set(member.id, member.replicaState);
    const replicationFactor = snapshot.replicationFactor ?? 1;
    this.map = { topology, generation: snapshot.generation, nodes, signature, replicationFactor, states };
    this.stats.mapEpoch = snapshot.epoch;
    this.stats.replicationFactor = replicationFactor;
    this.stats.membersNotUp = [...states.values()].filter((state) => state !== 'up').length;
    this.options.host.mapChanged(snapshot.epoch);
    return true;
  }

  /**
   * The chain of `key` on the map in use (see `HashRing.chainOf`): the chain the balancer and the
   * nodes derive from the same map. Undefined before the first map. With factor 1 its head and
   * tail are the owner this router sends the key to.
   */
  chainOf(key: Uint8Array): Chain | undefined {
    const map = this.map;
    if (map === undefined || map.topology.ring.size === 0) return undefined;
    return map.topology.ring.chainOf(key, map.replicationFactor, map.states);
  }

  /** A map the balancer pushed (MAP_PUSH). */
  pushed(snapshot: ClusterMapSnapshot): void {
    this.stats.pushes++;
    this.install(snapshot);
  }

  /**
   * Fetches the map from the balancer (and subscribes this connection to its pushes). One fetch at
   * a time: concurrent callers share it. Failures are ignored (the balancer route keeps working,
   * and the next redirect, push or backstop tries again).
   */
  refresh(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.refreshing ??= this.fetchMap().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** Whether it holds a cluster map to route on (fetched once at least, not closed). */
  get routable(): boolean {
    return !this.closed && this.map !== undefined;
  }

  /** Sends `message` to the node that owns its key(s), following redirects; see the class comment. */
  request(message: DataCommand, options: RouteOptions): Promise<Response> {
    switch (message.op) {
      case Op.MGET:
        return this.mget(message, options);
      case Op.MSET:
        return this.mset(message, options);
      case Op.EXISTS:
        return this.exists(message, options);
      default:
        return this.single(message, options, performance.now() + options.timeoutMs);
    }
  }

  /**
   * Stops refreshing and closes every node link; with `destroyWith`, commands in flight on them
   * fail at once with that error (the client's `disconnect()`).
   */
  async close(destroyWith?: Error): Promise<void> {
    this.closed = true;
    clearInterval(this.backstop);
    if (this.delayedRefresh !== undefined) clearTimeout(this.delayedRefresh);
    const nodes = [...(this.map?.nodes.values() ?? [])];
    const closed = Promise.all(nodes.map((node) => node.link.close()));
    if (destroyWith !== undefined) for (const node of nodes) node.link.connection?.destroy(destroyWith);
    await closed;
  }

  private async fetchMap(): Promise<void> {
    this.lastRefreshAt = performance.now();
    this.stats.refreshes++;
    try {
      const answer = await this.options.host.viaBalancer(
        { op: Op.CLUSTER_MAP, subscribe: true },
        { timeoutMs: 5000 },
      );
      if (answer.op === Op.MAP) this.install(answer);
    } catch {
      // The balancer is unreachable or does not serve maps: commands keep going through it.
    }
  }

  /**
   * A redirect named a newer epoch: refresh now unless one ran less than 250 ms ago (then later,
   * once). Returns the refresh to wait for, or undefined when the command should not wait.
   */
  private refreshFor(): Promise<void> | undefined {
    if (this.refreshing !== undefined) return this.refreshing;
    const wait = this.lastRefreshAt + MIN_REFRESH_INTERVAL_MS - performance.now();
    if (wait <= 0) return this.refresh();
    if (this.delayedRefresh === undefined && !this.closed) {
      this.delayedRefresh = setTimeout(() => {
        this.delayedRefresh = undefined;
        void this.refresh();
      }, wait);
      this.delayedRefresh.unref();
    }
    return undefined;
  }

  private openNode(id: string, host: string, port: number): NodeEntry {
    const link = new PeerLink({ ...this.options.link, host, port });
    const entry: NodeEntry = { id, address: `${host}:${port}`, link, reported: false };
    link.on('ready', () => {
      entry.reported = false;
    });
    link.on('error', (error) => {
      if (entry.reported || this.closed) return;
      entry.reported = true;
      this.options.host.unreachable(id, entry.address, error);
    });
    link.start();
    return entry;
  }

  /** The ready link of `nodeId` in `map`, or undefined. */
  private readyNode(map: DirectMap, nodeId: string | undefined): NodeEntry | undefined {
    if (nodeId === undefined) return undefined;
    const node = map.nodes.get(nodeId);
    return node?.link.isReady === true ? node : undefined;
  }

  private viaBalancer(message: DataCommand, options: RouteOptions): Promise<Response> {
    this.stats.viaBalancer++;
    return this.options.host.viaBalancer(message, options);
  }

  /** GET, SET, DEL or a single-key data-model command (never ASKed: the owner brings its key in). */
  private async single(message: SingleCommand, options: RouteOptions, deadline: number): Promise<Response> {
    let redirects = 0;
    let lastRedirect = '';
    for (;;) {
      const map = this.map;
      if (map === undefined) return this.viaBalancer(message, options);
      // With replication, a write goes to the head of the key's chain and a read to its tail.
      const node = this.readyNode(map, map.topology.targetOf(message.key, isWrite(message)));
      if (node === undefined) return this.viaBalancer(message, options);
      const hop = remaining(options, deadline);
      let response: Response;
      try {
        response = await node.link.request(withEpoch(message, map.topology.epoch), hop);
      } catch (error) {
        // The node's link went down, or it is closing or busy: not executed, the balancer decides.
        if (isSafeToReroute(error)) return this.viaBalancer(message, remaining(options, deadline));
        throw error;
      }
      if (response.op !== Op.MOVED && response.op !== Op.ASK) {
        this.stats.direct++;
        this.noteRedirects(redirects);
        return response;
      }
      redirects++;
      lastRedirect = describe(response, node.id);
      // An ASK of a DEL is always followed: the DEL already ran on this node, so failing it now
      // could not say "not executed". Any other redirect means nothing ran (or it is a read).
      const executedHere = response.op === Op.ASK && message.op === Op.DEL;
      if (redirects > this.options.maxRedirections && !executedHere) {
        throw tooManyRedirects(redirects, this.options.maxRedirections, lastRedirect);
      }
      if (response.op === Op.ASK) {
        this.stats.asked++;
        const answer = await this.followAsk(message, response, node.id, map, options, deadline);
        if (answer !== undefined) {
          this.noteRedirects(redirects);
          return answer;
        }
        continue;
      }
      this.stats.moved++;
      if (!(await this.caughtUpWith(response, map, options, deadline))) {
        this.noteRedirects(redirects);
        return this.viaBalancer(message, remaining(options, deadline));
      }
    }
  }

  /**
   * After MOVED: whether the map now in use lets the command be resent directly. A node at a newer
   * epoch than the map: refresh (shared, rate-limited) and resend if the balancer's map caught up.
   * A node behind the map (it missed a RING) or a map the balancer has not published yet: no,
   * the balancer route resolves it (it waits for its announce, or sends the node its ring).
   */
  private async caughtUpWith(
    moved: MovedResponse,
    map: DirectMap,
    options: RouteOptions,
    deadline: number,
  ): Promise<boolean> {
    if (this.map !== map) return true;
    if (moved.epoch <= map.topology.epoch) return false;
    const refreshed = this.refreshFor();
    if (refreshed === undefined) return false;
    // The refresh asks a balancer that may hang (its own bound is longer): the command waits for
    // it within its own deadline only, and fails not executed past it (the node refused it).
    await withinDeadline(refreshed, options, deadline, 'waiting for the cluster map after a redirect');
    const now = this.map;
    return now !== undefined && now !== map && now.topology.epoch >= moved.epoch;
  }

  /**
   * ASK: the key's range moves to the node that answered, from `ask.nodeId`. A GET reads the old
   * owner's copy (fall-back flag); a DEL, executed on the new owner, deletes that copy too and
   * counts a key removed if either side removed it. Returns undefined when the old owner refused
   * (its range was purged meanwhile): the command starts over.
   */
  private async followAsk(
    message: SingleCommand,
    ask: AskResponse,
    ownerId: string,
    map: DirectMap,
    options: RouteOptions,
    deadline: number,
  ): Promise<Response | undefined> {
    const source = this.readyNode(map, ask.nodeId);
    if (message.op === Op.GET) {
      if (source === undefined) return this.viaBalancer(message, remaining(options, deadline));
      const response = await source.link.request(
        { op: Op.GET, key: message.key, fallback: true, epoch: ask.epoch },
        remaining(options, deadline),
      );
      if (response.op === Op.MOVED || response.op === Op.ASK) return undefined;
      this.stats.direct++;
      return response;
    }
    if (message.op === Op.DEL) {
      // Only nodes before 2026-12-06 answer a DEL with ASK (after running it); newer ones pull the
      // old owner's copy in and answer COUNT themselves.
      const here = ask.count ?? 0;
      const fromOwner: PromiseSettledResult<Response> = {
        status: 'fulfilled',
        value: { op: Op.COUNT, id: 0, count: here },
      };
      if (source === undefined) {
        const owners = { owner: ownerId, old: ask.nodeId };
        return this.deleteOldCopyViaBalancer(message.key, here, fromOwner, owners, options, deadline);
      }
      let response: Response;
      try {
        response = await source.link.request(
          { op: Op.DEL, key: message.key, fallback: true, epoch: ask.epoch },
          remaining(options, deadline),
        );
      } catch (error) {
        throw migratingDeleteOutcome(fromOwner, { status: 'rejected', reason: error }, ownerId, source.id);
      }
      this.stats.direct++;
      // A refusal means the old owner purged the range: its copy is gone already.
      const there = response.op === Op.COUNT ? response.count : 0;
      return { op: Op.COUNT, id: response.id, count: Math.max(here, there) };
    }
    // A node never answers SET or a data-model command with ASK; if one did, the balancer is the safe route.
    return this.viaBalancer(message, remaining(options, deadline));
  }

  /**
   * The old owner's half of a DEL the new owner already executed, when this client has no link to
   * the old owner (a leaving node is not in the map clients get): the balancer deletes only that
   * copy (a DEL with the fall-back flag). Sending the whole DEL again would run it a second time on
   * the new owner and could erase a write acknowledged in between (found by the linearizability
   * test). A failure of this half leaves the DEL indeterminate, as when a direct one fails.
   */
  private async deleteOldCopyViaBalancer(
    key: Uint8Array,
    here: number,
    fromOwner: PromiseSettledResult<Response>,
    owners: { readonly owner: string; readonly old: string },
    options: RouteOptions,
    deadline: number,
  ): Promise<Response> {
    let there: Response;
    try {
      there = await this.viaBalancer({ op: Op.DEL, key, fallback: true }, remaining(options, deadline));
    } catch (error) {
      throw migratingDeleteOutcome(
        fromOwner,
        { status: 'rejected', reason: error },
        owners.owner,
        owners.old,
      );
    }
    const count = there.op === Op.COUNT ? there.count : 0;
    return { op: Op.COUNT, id: there.id, count: Math.max(here, count) };
  }

  /** MGET: split per owner, each part sent to its node; a part that is redirected goes through the balancer. */
  private async mget(message: WithoutId<MGetRequest>, options: RouteOptions): Promise<Response> {
    const map = this.map;
    if (map === undefined) return this.viaBalancer(message, options);
    const values = new Array<Uint8Array | null>(message.keys.length);
    const split = this.sendParts(
      map,
      message.keys,
      (key) => key,
      (keys) => ({ op: Op.MGET, keys }),
      options,
      false,
    );
    await Promise.all(
      split.map(async ({ part, answer }) => {
        const response = await answer;
        if (response.op !== Op.VALUES || response.values.length !== part.items.length) {
          throw unexpectedPartAnswer('MGET', response);
        }
        for (let index = 0; index < part.positions.length; index++) {
          values[part.positions[index]!] = response.values[index]!;
        }
      }),
    );
    return { op: Op.VALUES, id: 0, values };
  }

  /** MSET: split per owner like the balancer does; not atomic across nodes, as through the balancer. */
  private async mset(message: WithoutId<MSetRequest>, options: RouteOptions): Promise<Response> {
    const map = this.map;
    if (map === undefined) return this.viaBalancer(message, options);
    const keyOf = (entry: KeyValue) => entry.key;
    const split = this.sendParts(
      map,
      message.entries,
      keyOf,
      (entries) => ({ op: Op.MSET, entries }),
      options,
      true,
    );
    const results = await Promise.allSettled(
      split.map(async ({ answer }) => {
        const response = await answer;
        if (response.op !== Op.OK) throw unexpectedPartAnswer('MSET', response);
      }),
    );
    const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
    if (failures.length > 0) {
      // Parts other nodes stored, or may have stored, stay so: the whole MSET must not look "not executed".
      throw partlyApplied(failures, results.length - failures.length, results.length);
    }
    return { op: Op.OK, id: 0 };
  }

  /** EXISTS: split per owner like MGET, the counts summed (a key named twice counts twice). */
  private async exists(message: WithoutId<ExistsRequest>, options: RouteOptions): Promise<Response> {
    const map = this.map;
    if (map === undefined) return this.viaBalancer(message, options);
    const split = this.sendParts(
      map,
      message.keys,
      (key) => key,
      (keys) => ({ op: Op.EXISTS, keys }),
      options,
      false,
    );
    const counts = await Promise.all(
      split.map(async ({ answer }) => {
        const response = await answer;
        if (response.op !== Op.COUNT) throw unexpectedPartAnswer('EXISTS', response);
        return response.count;
      }),
    );
    return { op: Op.COUNT, id: 0, count: counts.reduce((sum, count) => sum + count, 0) };
  }

  /**
   * A multi-key command split per owner on `map` (`write`: MSET, whose parts go to chain heads;
   * reads go to tails): each part built by `command` and sent at once
   * with {@link sendPart} under one deadline; the parts in order, each with its answer to come.
   */
  private sendParts<T>(
    map: DirectMap,
    items: readonly T[],
    keyOf: (item: T) => Uint8Array,
    command: (items: T[]) => PartCommand,
    options: RouteOptions,
    write: boolean,
  ): { readonly part: OwnerPart<T>; readonly answer: Promise<Response> }[] {
    const deadline = performance.now() + options.timeoutMs;
    return splitByOwner(map, items, keyOf, write).map((part) => ({
      part,
      answer: this.sendPart(map, part.nodeId, command(part.items), options, deadline),
    }));
  }

  /**
   * One MGET/MSET/EXISTS part: to its node when it is ready; through the balancer when it is not, or when
   * the node redirects (MOVED starts a refresh for the next commands; ASK means keys of the part
   * are moving, which the balancer resolves key by key). A redirected part was not executed.
   */
  private async sendPart(
    map: DirectMap,
    nodeId: string | undefined,
    message: PartCommand,
    options: RouteOptions,
    deadline: number,
  ): Promise<Response> {
    const node = this.readyNode(map, nodeId);
    if (node === undefined) return this.viaBalancer(message, remaining(options, deadline));
    let response: Response;
    try {
      response = await node.link.request(
        withEpoch(message, map.topology.epoch),
        remaining(options, deadline),
      );
    } catch (error) {
      if (isSafeToReroute(error)) return this.viaBalancer(message, remaining(options, deadline));
      throw error;
    }
    if (response.op === Op.MOVED) {
      this.stats.moved++;
      this.noteRedirects(1);
      if (response.epoch > map.topology.epoch) this.refreshFor();
      return this.viaBalancer(message, remaining(options, deadline));
    }
    if (response.op === Op.ASK) {
      this.stats.asked++;
      this.noteRedirects(1);
      return this.viaBalancer(message, remaining(options, deadline));
    }
    this.stats.direct++;
    return response;
  }

  private noteRedirects(redirects: number): void {
    if (redirects > this.stats.maxRedirectsPerRequest) this.stats.maxRedirectsPerRequest = redirects;
  }
}

/**
 * Waits for `work` within the command's deadline and its signal; past either, fails with TIMEOUT
 * or ABORTED, not executed (nothing was sent meanwhile). `work` goes on (shared with others).
 */
function withinDeadline(
  work: Promise<void>,
  options: RouteOptions,
  deadline: number,
  where: string,
): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(abortedError(signal, true));
  return new Promise<void>((resolve, reject) => {
    const settle = (): void => {
      clearTimeout(timer);
      stopWatching?.();
    };
    const timer = setTimeout(
      () => {
        settle();
        reject(commandTimeoutError(options.timeoutMs, where, { cause: undefined }));
      },
      Math.max(0, deadline - performance.now()),
    );
    const stopWatching =
      signal === undefined
        ? undefined
        : watchAbort(signal, () => {
            settle();
            reject(abortedError(signal, true));
          });
    work.then(
      () => {
        settle();
        resolve();
      },
      (error: unknown) => {
        settle();
        reject(error);
      },
    );
  });
}

/** The options of the next hop: what is left of the command's deadline. */
function remaining(options: RouteOptions, deadline: number): RouteOptions {
  const timeoutMs = Math.max(1, Math.ceil(deadline - performance.now()));
  return options.signal === undefined ? { timeoutMs } : { timeoutMs, signal: options.signal };
}

/**
 * A failure of the node link that certainly did not run the command and may pass elsewhere: the
 * link is down, the node is busy or closing, or a node that predates direct routing refused it
 * for routing reasons (NOT_OWNER, STALE_EPOCH instead of MOVED).
 */
function isSafeToReroute(error: unknown): boolean {
  if (!(error instanceof DstoreError) || !error.notExecuted) return false;
  return error.retryable || error.code === ErrorCode.NOT_OWNER || error.code === ErrorCode.STALE_EPOCH;
}

function describe(redirect: MovedResponse | AskResponse, from: string): string {
  const kind = redirect.op === Op.MOVED ? 'MOVED' : 'ASK';
  return `${kind} from ${from} to ${redirect.nodeId} (${redirect.host}:${redirect.port}) at epoch ${redirect.epoch}`;
}

function tooManyRedirects(redirects: number, limit: number, last: string): DstoreError {
  return new DstoreError(
    ErrorCode.TOO_MANY_REDIRECTS,
    `redirected ${redirects} times (maxRedirections ${limit}); last: ${last}`,
  );
}

function mapSignature(snapshot: ClusterMapSnapshot): string {
  const members = snapshot.nodes.map(
    (node) =>
      `${node.id}=${node.weight}<${node.previousWeight ?? ''}@${node.host ?? ''}:${node.port ?? 0}/${node.replicaState ?? 'up'}`,
  );
  return `${snapshot.generation}/${snapshot.epoch}/${snapshot.algorithm}/${snapshot.vnodes}/${snapshot.replicationFactor ?? 1}/${snapshot.hashTag ?? ''}/${members.join(',')}`;
}

/** A part of an MGET/MSET bound for one owner, with the positions of its items in the command. */
interface OwnerPart<T> {
  readonly nodeId: string | undefined;
  readonly positions: number[];
  readonly items: T[];
}

function unexpectedPartAnswer(command: string, response: Response): DstoreError {
  return new DstoreError(ErrorCode.INTERNAL, `unexpected answer (op ${response.op}) to ${command}`);
}

/** Whether a single-key command writes (it goes to the head of a replicated chain, a read to the tail). */
function isWrite(message: SingleCommand): boolean {
  return !isSingleKeyRead(message.op);
}

/** The replication a map snapshot describes, for its {@link Topology}; undefined with factor 1. */
function replicationOf(snapshot: ClusterMapSnapshot): TopologyReplication | undefined {
  const factor = snapshot.replicationFactor ?? 1;
  if (factor <= 1) return undefined;
  const states = new Map<string, ReplicaState>();
  for (const member of snapshot.nodes)
    if (member.replicaState !== undefined) states.set(member.id, member.replicaState);
  return { factor, states };
}

function splitByOwner<T>(
  map: DirectMap,
  items: readonly T[],
  keyOf: (item: T) => Uint8Array,
  write: boolean,
): OwnerPart<T>[] {
  const byOwner = new Map<string | undefined, OwnerPart<T>>();
  const parts: OwnerPart<T>[] = [];
  for (let position = 0; position < items.length; position++) {
    const item = items[position]!;
    const nodeId = map.topology.targetOf(keyOf(item), write);
    let part = byOwner.get(nodeId);
    if (part === undefined) {
      part = { nodeId, positions: [], items: [] };
      byOwner.set(nodeId, part);
      parts.push(part);
    }
    part.positions.push(position);
    part.items.push(item);
  }
  return parts;
}
