import { Op } from '@dstore/protocol';
import type { ClusterNode } from './cluster-node.js';
import type { HistoryPoint, MembershipEvent, NodeSample } from './dashboard-wire.js';
import type { Membership } from './membership.js';
import { type BalancerMetrics, DURATION_BUCKETS_SECONDS } from './metrics.js';

export type { HistoryPoint, MembershipEvent, NodeSample };

/** Samples kept: one a second for 15 minutes. */
export const HISTORY_CAPACITY = 900;
/** Most error codes and nodes one sample carries (codes are a fixed set; nodes bound the payload). */
const MAX_SERIES_KEYS = 64;
/** Most membership events the log keeps. */
export const EVENT_LOG_CAPACITY = 50;
/** Deadline of the once-a-second STATS asked of each node. */
const NODE_STATS_TIMEOUT_MS = 800;

/** The ops the dashboard charts one by one; every other op counts as `other`. */
const CHARTED_OPS: Readonly<Record<string, number>> = {
  get: Op.GET,
  set: Op.SET,
  del: Op.DEL,
  mget: Op.MGET,
  mset: Op.MSET,
};
const OP_SLOTS = 64;
const BUCKETS_PER_OP = DURATION_BUCKETS_SECONDS.length + 1;

/** The latest STATS of one node, as the sampler keeps it between seconds. */
interface NodeCounters {
  opsTotal: number;
  /** `ops.<name>` totals of its STATS, STATS itself excluded. */
  opsByOp: Record<string, number>;
  /** Keys sent plus received by migration, in total. */
  migrationKeys: number;
  at: number;
  sample: NodeSample | undefined;
}

/** A percentile (ms) of a histogram given as per-bucket counts, interpolated inside the bucket. */
export function percentileMs(buckets: Float64Array, total: number, quantile: number): number {
  if (total === 0) return -1;
  const rank = quantile * total;
  let cumulative = 0;
  for (let bucket = 0; bucket < buckets.length; bucket++) {
    const count = buckets[bucket]!;
    if (count > 0 && cumulative + count >= rank) {
      const lower = bucket === 0 ? 0 : DURATION_BUCKETS_SECONDS[bucket - 1]!;
      // The overflow bucket has no upper bound: report its lower one.
      const upper = DURATION_BUCKETS_SECONDS[bucket] ?? lower;
      return (lower + ((upper - lower) * (rank - cumulative)) / count) * 1000;
    }
    cumulative += count;
  }
  return DURATION_BUCKETS_SECONDS[DURATION_BUCKETS_SECONDS.length - 1]! * 1000;
}

function opName(op: number): string {
  for (const [name, code] of Object.entries(CHARTED_OPS)) if (code === op) return name;
  return 'other';
}

function numberOf(value: number | string | undefined): number {
  return typeof value === 'number' ? value : -1;
}

/**
 * The last 15 minutes of the cluster, one point a second in a fixed-size ring buffer, sampled from
 * what the balancer already counts (its metrics, the migrator, node heartbeats) and one STATS a
 * second per node. Nothing here runs per request: the hot path keeps only its plain counters.
 */
export class ClusterHistory {
  private readonly points: (HistoryPoint | undefined)[] = new Array(HISTORY_CAPACITY);
  private next = 0;
  private count = 0;
  private readonly events: MembershipEvent[] = [];
  private readonly listeners = new Set<(point: HistoryPoint) => void>();
  private timer: NodeJS.Timeout | undefined;
  /** Counters at the previous sample, to turn totals into per-second rates. */
  private previousOutcomes = new Float64Array(0);
  private previousBuckets = new Float64Array(0);
  private previousErrors = new Map<string, number>();
  private previousNodeErrors = new Map<string, Map<string, number>>();
  private previousKeysMoved = 0;
  private readonly nodeCounters = new Map<string, NodeCounters>();
  private statsPending = false;
  /** What the previous sample saw of the membership, to log its changes. */
  private previousMembers = new Map<string, string>();
  private previousEpoch = -1;
  private previousTransition = '';

  constructor(
    private readonly membership: Membership,
    private readonly metrics: BalancerMetrics,
  ) {}

  /** Starts sampling once a second (the timer does not keep the process alive). */
  start(): void {
    if (this.timer !== undefined) return;
    this.takeBaseline();
    this.timer = setInterval(() => this.sample(), 1000);
    this.timer.unref();
  }

  /** Stops sampling. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.listeners.clear();
  }

  /** Calls `listener` after every sample; returns the function that unsubscribes it. */
  subscribe(listener: (point: HistoryPoint) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The kept points, oldest first. */
  history(): HistoryPoint[] {
    const out: HistoryPoint[] = [];
    const start = (this.next - this.count + HISTORY_CAPACITY) % HISTORY_CAPACITY;
    for (let index = 0; index < this.count; index++) {
      out.push(this.points[(start + index) % HISTORY_CAPACITY]!);
    }
    return out;
  }

  /** The latest membership events, oldest first. */
  eventLog(): readonly MembershipEvent[] {
    return this.events;
  }

  /** `performance.now()` of each node's last JOIN or HEARTBEAT, as milliseconds ago (-1 = never). */
  heartbeatAges(): Record<string, number> {
    const now = performance.now();
    const ages: Record<string, number> = {};
    for (const node of this.membership.nodes) {
      ages[node.id] = node.lastHeartbeatAt === 0 ? -1 : Math.round(now - node.lastHeartbeatAt);
    }
    return ages;
  }

  /** Takes one sample now (the timer calls it; tests may too). */
  sample(): void {
    const point = this.measure();
    this.points[this.next] = point;
    this.next = (this.next + 1) % HISTORY_CAPACITY;
    this.count = Math.min(this.count + 1, HISTORY_CAPACITY);
    this.logMembershipChanges();
    this.pollNodeStats();
    for (const listener of this.listeners) listener(point);
  }

  private takeBaseline(): void {
    const counters = this.metrics.counters();
    this.previousOutcomes = counters.outcomes.slice();
    this.previousBuckets = counters.durationBuckets.slice();
    this.previousErrors = new Map(counters.errorsByCode);
    this.previousNodeErrors = copyNodeErrors(counters.errorsByNode);
    this.previousKeysMoved = this.membership.migrator.snapshot().keysMovedTotal;
    this.logMembershipChanges();
    this.pollNodeStats();
  }

  private measure(): HistoryPoint {
    const counters = this.metrics.counters();
    const ops: Record<string, number> = { get: 0, set: 0, del: 0, mget: 0, mset: 0, other: 0 };
    const latency = new Float64Array(BUCKETS_PER_OP);
    let answered = 0;
    for (let op = 0; op < OP_SLOTS; op++) {
      const done =
        (counters.outcomes[op * 2] ?? 0) +
        (counters.outcomes[op * 2 + 1] ?? 0) -
        (this.previousOutcomes[op * 2] ?? 0) -
        (this.previousOutcomes[op * 2 + 1] ?? 0);
      if (done <= 0) continue;
      ops[opName(op)]! += done;
      answered += done;
      for (let bucket = 0; bucket < BUCKETS_PER_OP; bucket++) {
        const index = op * BUCKETS_PER_OP + bucket;
        latency[bucket]! += (counters.durationBuckets[index] ?? 0) - (this.previousBuckets[index] ?? 0);
      }
    }
    this.previousOutcomes = counters.outcomes.slice();
    this.previousBuckets = counters.durationBuckets.slice();
    const errors: Record<string, number> = {};
    for (const [code, total] of counters.errorsByCode) {
      const delta = total - (this.previousErrors.get(code) ?? 0);
      if (delta > 0 && Object.keys(errors).length < MAX_SERIES_KEYS) errors[code] = delta;
    }
    this.previousErrors = new Map(counters.errorsByCode);
    const nodeErrors = this.nodeErrorRates(counters.errorsByNode);
    const keysMovedTotal = this.membership.migrator.snapshot().keysMovedTotal;
    const migrationKeys = Math.max(0, keysMovedTotal - this.previousKeysMoved);
    this.previousKeysMoved = keysMovedTotal;
    return {
      t: Math.round(Date.now() / 1000),
      ops,
      errors,
      p50Ms: percentileMs(latency, answered, 0.5),
      p99Ms: percentileMs(latency, answered, 0.99),
      migrationKeys,
      nodeErrors,
      nodes: this.nodeSamples(),
    };
  }

  /** Each node's failures since the previous sample, by code (nodes without any left out). */
  private nodeErrorRates(
    totals: ReadonlyMap<string, ReadonlyMap<string, number>>,
  ): Record<string, Record<string, number>> {
    const rates: Record<string, Record<string, number>> = {};
    let kept = 0;
    for (const [node, codes] of totals) {
      const before = this.previousNodeErrors.get(node);
      for (const [code, total] of codes) {
        const delta = total - (before?.get(code) ?? 0);
        if (delta <= 0 || kept >= MAX_SERIES_KEYS) continue;
        rates[node] ??= {};
        rates[node][code] = delta;
        kept++;
      }
    }
    this.previousNodeErrors = copyNodeErrors(totals);
    return rates;
  }

  private nodeSamples(): Record<string, NodeSample> {
    const samples: Record<string, NodeSample> = {};
    let kept = 0;
    for (const node of this.membership.nodes) {
      const sample = this.nodeCounters.get(node.id)?.sample;
      if (sample === undefined || kept++ >= MAX_SERIES_KEYS) continue;
      samples[node.id] = sample;
    }
    return samples;
  }

  /**
   * Asks every up node for its STATS (one at a time per node, at most one round in flight), for
   * per-node ops/s and latency; the answers feed the next sample.
   */
  private pollNodeStats(): void {
    if (this.statsPending) return;
    const nodes = [...this.membership.nodes].filter((node) => node.up);
    for (const id of this.nodeCounters.keys()) {
      if (this.membership.node(id) === undefined) this.nodeCounters.delete(id);
    }
    if (nodes.length === 0) return;
    this.statsPending = true;
    void Promise.all(nodes.map((node) => this.pollNode(node))).finally(() => {
      this.statsPending = false;
    });
  }

  private async pollNode(node: ClusterNode): Promise<void> {
    let stats: Readonly<Record<string, number | string>>;
    try {
      const answer = await node.forward({ op: Op.STATS }, { timeoutMs: NODE_STATS_TIMEOUT_MS });
      if (answer.op !== Op.STATS_RESULT) return;
      stats = answer.stats;
    } catch {
      return; // A node that cannot answer shows as down in the table; its series gets a gap.
    }
    let opsTotal = 0;
    const opsByOp: Record<string, number> = {};
    for (const [name, value] of Object.entries(stats)) {
      // The dashboard's own STATS are not the node's traffic.
      if (!name.startsWith('ops.') || name === 'ops.stats' || typeof value !== 'number') continue;
      opsTotal += value;
      const op = name.slice(4);
      const charted = op in CHARTED_OPS ? op : 'other';
      opsByOp[charted] = (opsByOp[charted] ?? 0) + value;
    }
    const migrationKeys =
      Math.max(0, numberOf(stats['migration.keys_sent'])) +
      Math.max(0, numberOf(stats['migration.keys_received']));
    const now = performance.now();
    const previous = this.nodeCounters.get(node.id);
    const seconds = previous === undefined ? 0 : (now - previous.at) / 1000;
    const rate = (total: number, before: number): number =>
      Math.max(0, Math.round((total - before) / seconds));
    const sample: NodeSample | undefined =
      previous === undefined || seconds <= 0
        ? undefined
        : {
            ops: rate(opsTotal, previous.opsTotal),
            opsByOp: Object.fromEntries(
              Object.entries(opsByOp).map(([op, total]) => [op, rate(total, previous.opsByOp[op] ?? 0)]),
            ),
            migrationKeys: rate(migrationKeys, previous.migrationKeys),
            p50Us: numberOf(stats['latency.p50_us']),
            p99Us: numberOf(stats['latency.p99_us']),
            keys: node.keyCount,
          };
    this.nodeCounters.set(node.id, { opsTotal, opsByOp, migrationKeys, at: now, sample });
  }

  /** Logs joins, leaves, state and up/down changes, epoch changes and transitions (bounded log). */
  private logMembershipChanges(): void {
    const map = this.membership.clusterMap;
    const members = new Map<string, string>();
    for (const member of map.members) if (member.state !== 'removed') members.set(member.id, member.state);
    for (const node of this.membership.nodes) {
      members.set(node.id, `${members.get(node.id) ?? 'static'}, ${node.up ? 'up' : 'down'}`);
    }
    if (this.previousEpoch !== -1) {
      for (const [id, state] of members) {
        const before = this.previousMembers.get(id);
        if (before === undefined) this.log(`node ${id} joined (${state})`);
        else if (before !== state) this.log(`node ${id}: ${before} → ${state}`);
      }
      for (const id of this.previousMembers.keys()) {
        if (!members.has(id)) this.log(`node ${id} left the map`);
      }
      if (map.epoch !== this.previousEpoch) this.log(`map epoch ${this.previousEpoch} → ${map.epoch}`);
    }
    const transition = map.transition === null ? '' : `${map.transition.phase}: ${map.transition.reason}`;
    if (transition !== this.previousTransition) {
      this.log(transition === '' ? 'transition finished' : `transition ${transition}`);
    }
    this.previousMembers = members;
    this.previousEpoch = map.epoch;
    this.previousTransition = transition;
  }

  private log(text: string): void {
    this.events.push({ at: Date.now(), text });
    if (this.events.length > EVENT_LOG_CAPACITY) this.events.shift();
  }
}

function copyNodeErrors(
  totals: ReadonlyMap<string, ReadonlyMap<string, number>>,
): Map<string, Map<string, number>> {
  return new Map([...totals].map(([node, codes]) => [node, new Map(codes)]));
}
