// The module's `performance`: the global one is an accessor in Node 20, ~25 ns per request more.
import { performance } from 'node:perf_hooks';
import { Op } from '@dstore/protocol';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Copied } from './migrator.js';

/** Upper bounds (seconds) of the request duration histogram: 50 µs to 5 s. */
export const DURATION_BUCKETS_SECONDS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

/** Label value of each request op code (index = op code). */
const OP_LABELS: readonly string[] = (() => {
  const labels: string[] = [];
  for (const [name, code] of Object.entries(Op)) if (code < 64) labels[code] = name.toLowerCase();
  return labels;
})();
const OP_SLOTS = OP_LABELS.length;

/** What the metrics need to know about a node at scrape time. */
export interface NodeGaugeSource {
  readonly id: string;
  readonly up: boolean;
  readonly inFlight: number;
}

/** What the metrics need to know about the cluster at scrape time. */
export interface ClusterGaugeSource {
  readonly epoch: number;
  readonly nodes: Iterable<NodeGaugeSource>;
  /** Key migration progress (absent in clusters without migration). */
  readonly migrator?: { snapshot(): { keysMovedTotal: number; pendingRanges: number; stalled: unknown } };
  /** The ring's chains (absent in clusters without a cluster map): under-replicated ranges are counted. */
  readonly chains?: Iterable<{ readonly underReplicated: boolean }>;
  /** The cluster map's members (absent without a cluster map): learners are counted. */
  readonly clusterMap?: {
    readonly members: readonly { readonly replicaState: string; readonly state: string }[];
  };
}

interface ExportedSample {
  readonly metricName: string;
  readonly labels: Record<string, string | number>;
  readonly sharedLabels: Record<string, string>;
  readonly value: number;
}

/**
 * A histogram fed from plain typed arrays: recording is an array increment on the hot path, and
 * prom-client only sees the counts when scraped (its own `observe` hashes a label object on every
 * call).
 */
class ArrayBackedHistogram extends Histogram<'op'> {
  constructor(
    registry: Registry,
    private readonly counts: Float64Array,
    private readonly sums: Float64Array,
  ) {
    super({
      name: 'dstore_balancer_request_duration_seconds',
      help: 'Time from receiving a request to answering it, by op.',
      labelNames: ['op'],
      buckets: [...DURATION_BUCKETS_SECONDS],
      registers: [registry],
    });
  }

  /** Read by the registry when rendering Prometheus text (shadows prom-client's own). */
  async getForPromString(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: ExportedSample[];
  }> {
    const name = 'dstore_balancer_request_duration_seconds';
    const bucketCount = DURATION_BUCKETS_SECONDS.length + 1;
    const values: ExportedSample[] = [];
    for (let op = 0; op < OP_SLOTS; op++) {
      const label = OP_LABELS[op];
      if (label === undefined) continue;
      let cumulative = 0;
      const base = op * bucketCount;
      const total = sumRange(this.counts, base, bucketCount);
      if (total === 0) continue;
      const sharedLabels = { op: label };
      for (let bucket = 0; bucket < DURATION_BUCKETS_SECONDS.length; bucket++) {
        cumulative += this.counts[base + bucket]!;
        values.push({
          metricName: `${name}_bucket`,
          labels: { le: DURATION_BUCKETS_SECONDS[bucket]! },
          sharedLabels,
          value: cumulative,
        });
      }
      values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, sharedLabels, value: total });
      values.push({ metricName: `${name}_sum`, labels: {}, sharedLabels, value: this.sums[op]! });
      values.push({ metricName: `${name}_count`, labels: {}, sharedLabels, value: total });
    }
    return {
      name,
      help: 'Time from receiving a request to answering it, by op.',
      type: 'histogram',
      aggregator: 'sum',
      values,
    };
  }
}

function sumRange(array: Float64Array, start: number, length: number): number {
  let total = 0;
  for (let index = start; index < start + length; index++) total += array[index]!;
  return total;
}

/** Most nodes whose failures are counted one by one (the cluster map bounds them anyway). */
const MAX_NODES_WITH_ERRORS = 256;

/**
 * The balancer's counters. The hot path only touches typed arrays and plain numbers
 * ({@link record}); a Prometheus registry of its own (never the global one, so several balancers
 * can live in one process) publishes them through collect callbacks when `/metrics` is scraped.
 */
export class BalancerMetrics {
  /** The registry `/metrics` renders. */
  readonly registry = new Registry();
  /** Requests answered since start. */
  requests = 0;
  /** Requests answered with an error since start. */
  errors = 0;

  private readonly outcomes = new Float64Array(OP_SLOTS * 2);
  private readonly bucketCounts = new Float64Array(OP_SLOTS * (DURATION_BUCKETS_SECONDS.length + 1));
  private readonly durationSums = new Float64Array(OP_SLOTS);
  private readonly errorsByCode = new Map<string, number>();
  /** Failures of each node by code (node id -> code -> count), for the dashboard's per-node series. */
  private readonly errorsByNode = new Map<string, Map<string, number>>();

  constructor(cluster: ClusterGaugeSource) {
    collectDefaultMetrics({ register: this.registry });
    this.registerRequestCounters();
    new ArrayBackedHistogram(this.registry, this.bucketCounts, this.durationSums);
    this.registerClusterGauges(cluster);
  }

  /** Counts one answered request of op code `op` that started at `startMs` (`performance.now()`). */
  record(op: number, startMs: number, ok: boolean): void {
    this.requests++;
    const seconds = (performance.now() - startMs) / 1000;
    this.outcomes[op * 2 + (ok ? 0 : 1)]!++;
    let bucket = 0;
    while (bucket < DURATION_BUCKETS_SECONDS.length && seconds > DURATION_BUCKETS_SECONDS[bucket]!) bucket++;
    this.bucketCounts[op * (DURATION_BUCKETS_SECONDS.length + 1) + bucket]!++;
    this.durationSums[op]! += seconds;
  }

  /**
   * Counts one member the map's writer marked `failed` (replication failover), as
   * `dstore_balancer_members_failed_total`.
   */
  memberFailed(): void {
    this.membersFailed.inc();
  }

  private readonly membersFailed = new Counter({
    name: 'dstore_balancer_members_failed_total',
    help: 'Members this balancer, as the map writer, marked failed (replication failover) since it started.',
    registers: [this.registry],
  });

  /**
   * Counts a copy to a learner (a returning member, or a replicated ring change's new chain
   * member), as `dstore_balancer_sync_keys_total` and `dstore_balancer_sync_bytes_total`.
   */
  syncCopied(copied: Copied): void {
    this.syncKeysTotal.inc(copied.keys);
    this.syncBytesTotal.inc(copied.bytes);
  }

  private readonly syncKeysTotal = new Counter({
    name: 'dstore_balancer_sync_keys_total',
    help: 'Keys this balancer, as the map writer, copied to learners (returning members, ring changes) since it started.',
    registers: [this.registry],
  });

  private readonly syncBytesTotal = new Counter({
    name: 'dstore_balancer_sync_bytes_total',
    help: 'Bytes of the keys and values this balancer, as the map writer, copied to learners since it started.',
    registers: [this.registry],
  });

  /**
   * Publishes the failed client authentications of `budget` (both ports), read when `/metrics` is
   * scraped: `dstore_balancer_auth_failures_total`, `dstore_balancer_auth_lockout_refusals_total`
   * (attempts refused at once, no password checked) and `dstore_balancer_auth_lockouts_total`.
   */
  watchAuthFailures(budget: {
    readonly failures: number;
    readonly refusals: number;
    readonly paced: number;
    readonly lockouts: number;
  }): void {
    const counters = [
      [
        'dstore_balancer_auth_failures_total',
        'Failed client authentications (wrong password or unknown user), native and RESP ports, since start.',
        () => budget.failures,
      ],
      [
        'dstore_balancer_auth_lockout_refusals_total',
        'Client authentication attempts refused at once, without checking a password, because their address was locked out after too many failures.',
        () => budget.refusals,
      ],
      [
        'dstore_balancer_auth_paced_refusals_total',
        'Client authentication attempts refused at once, without checking a password, because their address was paced (10 failures in the window) and tried again too soon.',
        () => budget.paced,
      ],
      [
        'dstore_balancer_auth_lockouts_total',
        'Source addresses locked out for too many failed client authentications, since start.',
        () => budget.lockouts,
      ],
    ] as const;
    for (const [name, help, read] of counters) this.counterReading(name, help, read);
  }

  /**
   * Publishes RESP's password checks (see `PasswordChecks`), read when `/metrics` is scraped:
   * scrypt derivations run, checks answered from a remembered password, checks refused because
   * too many waited, the checks waiting now and the most derivations that ran at once.
   */
  watchPasswordChecks(checks: {
    readonly derivations: number;
    readonly remembered: number;
    readonly refused: number;
    readonly waiting: number;
    readonly peakRunning: number;
  }): void {
    this.counterReading(
      'dstore_balancer_password_checks_total',
      'Passwords sent in clear (RESP AUTH) checked with a scrypt derivation, since start.',
      () => checks.derivations,
    );
    this.counterReading(
      'dstore_balancer_password_checks_remembered_total',
      'RESP AUTHs whose password was the one last verified for the user: answered without a scrypt, since start.',
      () => checks.remembered,
    );
    this.counterReading(
      'dstore_balancer_password_checks_refused_total',
      'RESP AUTHs answered TRYAGAIN BUSY because too many password checks were waiting, since start.',
      () => checks.refused,
    );
    this.gaugeReading(
      'dstore_balancer_password_checks_waiting',
      'Password checks waiting for their turn (one scrypt runs at a time; turns go by source address).',
      () => checks.waiting,
    );
    this.gaugeReading(
      'dstore_balancer_password_checks_running_peak',
      'Most scrypt derivations of password checks that ran at once, since start.',
      () => checks.peakRunning,
    );
  }

  /**
   * Publishes the bytes waiting for clients (`maxClientOutputBytes`): the sum now and the client
   * connections dropped to keep it under its bound.
   */
  watchClientOutput(budget: { readonly bytes: number; readonly evictions: number }): void {
    this.gaugeReading(
      'dstore_balancer_client_output_bytes',
      'Bytes of answers waiting to be written to clients, every client connection of both ports together.',
      () => budget.bytes,
    );
    this.counterReading(
      'dstore_balancer_client_output_evictions_total',
      'Client connections dropped because the answers waiting for all clients passed --max-client-output and they held the most, since start.',
      () => budget.evictions,
    );
  }

  /** A gauge whose value is `read()` when `/metrics` is scraped. */
  private gaugeReading(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** A counter whose value is `read()` when `/metrics` is scraped (a count kept elsewhere). */
  private counterReading(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        const count = read();
        if (count > 0) this.inc(count);
      },
    });
  }

  /** Counts one error answer with its code. */
  recordError(code: string): void {
    this.errors++;
    this.errorsByCode.set(code, (this.errorsByCode.get(code) ?? 0) + 1);
  }

  /**
   * Counts one failure of node `node` (a request it refused or failed, or one refused because it
   * is down). Routing refusals the balancer resolves itself are not counted by the router. At
   * most {@link MAX_NODES_WITH_ERRORS} nodes are tracked: ids come from the cluster map.
   */
  recordNodeError(node: string, code: string): void {
    let codes = this.errorsByNode.get(node);
    if (codes === undefined) {
      if (this.errorsByNode.size >= MAX_NODES_WITH_ERRORS) return;
      codes = new Map();
      this.errorsByNode.set(node, codes);
    }
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }

  /**
   * The raw counters, read once a second by the dashboard's history sampler (never on the hot
   * path): outcomes at `op * 2 + (ok ? 0 : 1)`, duration buckets at
   * `op * (DURATION_BUCKETS_SECONDS.length + 1) + bucket`, errors by code.
   */
  counters(): {
    readonly outcomes: Float64Array;
    readonly durationBuckets: Float64Array;
    readonly errorsByCode: ReadonlyMap<string, number>;
    readonly errorsByNode: ReadonlyMap<string, ReadonlyMap<string, number>>;
  } {
    return {
      outcomes: this.outcomes,
      durationBuckets: this.bucketCounts,
      errorsByCode: this.errorsByCode,
      errorsByNode: this.errorsByNode,
    };
  }

  /** Answered requests of one op and outcome (for STATS and tests). */
  count(op: number, ok: boolean): number {
    return this.outcomes[op * 2 + (ok ? 0 : 1)] ?? 0;
  }

  private registerRequestCounters(): void {
    const outcomes = this.outcomes;
    const errorsByCode = this.errorsByCode;
    new Counter({
      name: 'dstore_balancer_requests_total',
      help: 'Requests answered by the balancer, by op and result (ok or error).',
      labelNames: ['op', 'result'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (let op = 0; op < OP_SLOTS; op++) {
          const label = OP_LABELS[op];
          if (label === undefined) continue;
          const ok = outcomes[op * 2]!;
          const failed = outcomes[op * 2 + 1]!;
          if (ok > 0) this.inc({ op: label, result: 'ok' }, ok);
          if (failed > 0) this.inc({ op: label, result: 'error' }, failed);
        }
      },
    });
    new Counter({
      name: 'dstore_balancer_errors_total',
      help: 'Error answers sent by the balancer, by error code.',
      labelNames: ['code'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [code, count] of errorsByCode) this.inc({ code }, count);
      },
    });
  }

  private registerClusterGauges(cluster: ClusterGaugeSource): void {
    new Gauge({
      name: 'dstore_balancer_node_in_flight',
      help: 'Requests forwarded to a node and not answered yet.',
      labelNames: ['node'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const node of cluster.nodes) this.set({ node: node.id }, node.inFlight);
      },
    });
    new Gauge({
      name: 'dstore_balancer_node_up',
      help: '1 when the node is up (link ready and heartbeats fresh), 0 when down.',
      labelNames: ['node'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const node of cluster.nodes) this.set({ node: node.id }, node.up ? 1 : 0);
      },
    });
    new Counter({
      name: 'dstore_balancer_migration_keys_total',
      help: 'Keys moved to their new owner by key migration since the balancer started.',
      registers: [this.registry],
      collect() {
        this.reset();
        const moved = cluster.migrator?.snapshot().keysMovedTotal ?? 0;
        if (moved > 0) this.inc(moved);
      },
    });
    new Gauge({
      name: 'dstore_balancer_migration_pending_ranges',
      help: 'Ring ranges of the running migration that have not moved yet (0 when none runs).',
      registers: [this.registry],
      collect() {
        this.set(cluster.migrator?.snapshot().pendingRanges ?? 0);
      },
    });
    new Gauge({
      name: 'dstore_balancer_migration_stalled',
      help: '1 while a migration stream is refused for a reason an operator must fix (see /ring migration.stalled), else 0.',
      registers: [this.registry],
      collect() {
        this.set(cluster.migrator?.snapshot().stalled ? 1 : 0);
      },
    });
    new Gauge({
      name: 'dstore_balancer_under_replicated_ranges',
      help: 'Ring ranges (neighbours with the same chain counted once) with fewer serving replicas than the replication factor; always 0 with factor 1.',
      registers: [this.registry],
      collect() {
        let count = 0;
        for (const chain of cluster.chains ?? []) if (chain.underReplicated) count++;
        this.set(count);
      },
    });
    new Gauge({
      name: 'dstore_balancer_syncing_members',
      help: 'Members catching up (replication state syncing or promoting): in write paths, serving nothing yet.',
      registers: [this.registry],
      collect() {
        let count = 0;
        for (const member of cluster.clusterMap?.members ?? []) {
          if (
            member.state !== 'removed' &&
            (member.replicaState === 'syncing' || member.replicaState === 'promoting')
          )
            count++;
        }
        this.set(count);
      },
    });
    new Gauge({
      name: 'dstore_balancer_dead_members',
      help: 'Members declared dead (dstore node remove --dead, --dead-after) whose ranges are being re-replicated; 0 once each is removed.',
      registers: [this.registry],
      collect() {
        let count = 0;
        for (const member of cluster.clusterMap?.members ?? []) {
          if (member.state !== 'removed' && member.replicaState === 'dead') count++;
        }
        this.set(count);
      },
    });
    new Gauge({
      name: 'dstore_balancer_ring_epoch',
      help: 'Epoch of the current ring; increases with every membership change.',
      registers: [this.registry],
      collect() {
        this.set(cluster.epoch);
      },
    });
  }
}
