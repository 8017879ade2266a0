import { DstoreError, ErrorCode, LatencyHistogram, type LatencySummary } from '@dstore/protocol';
import type { DstoreClient } from '../client.js';
import type { RoutingMode } from '../options.js';
import { type NodeReport, nodeReportsFrom } from './node-stats.js';
import { type BenchOpType, type KeyDistribution, Workload } from './workload.js';

/** Settings of one bench run. */
export interface BenchOptions {
  /** Operations to run (the run stops at `ops` or `durationS`, whichever comes first). */
  readonly ops: number;
  /** Longest run time in seconds. */
  readonly durationS: number;
  /** Requests in flight at every moment. */
  readonly concurrency: number;
  readonly valueSize: number;
  readonly readRatio: number;
  readonly keyspace: number;
  readonly distribution: KeyDistribution;
  /** Keys written before the run so reads hit: keys 0..preload-1. */
  readonly preload: number;
  /** How the clients route (reported only; the caller creates the clients). Default `'balancer'`. */
  readonly routing?: RoutingMode;
  /** Delete the keyspace's keys (0..keyspace-1) after the run, so it leaves nothing behind. Default false. */
  readonly cleanup?: boolean;
}

/** A progress sample, about once a second. */
export interface BenchProgress {
  readonly elapsedS: number;
  readonly completed: number;
  /** Throughput over the last interval. */
  readonly opsPerSec: number;
  readonly errors: number;
}

/** Everything a run measured. Latencies are microseconds, from the client's point of view. */
export interface BenchReport {
  readonly config: BenchOptions & { readonly clients: number };
  readonly preloaded: number;
  readonly preloadS: number;
  /** Operations completed (successes and errors). */
  readonly ops: number;
  readonly durationS: number;
  /** Completed operations per second. */
  readonly throughput: number;
  /** Latency of successful operations. */
  readonly latency: LatencySummary;
  readonly byOp: Record<BenchOpType, LatencySummary & { readonly ops: number }>;
  readonly hits: number;
  readonly misses: number;
  /** Failed operations by error code. */
  readonly errors: Record<string, number>;
  /** Each storage node's own latency, from the balancer's STATS (empty when not available). */
  readonly nodes: NodeReport[];
  /** With `routing: 'direct'`: operations answered by nodes directly, sent via the balancer, redirects (all clients). */
  readonly routing?: { readonly direct: number; readonly viaBalancer: number; readonly redirects: number };
  /** With `cleanup`: keys of the keyspace that existed and were deleted after the run. */
  readonly deleted?: number;
}

/** Hooks of a run. */
export interface BenchHooks {
  /** Called about once a second while the mix runs. */
  readonly onProgress?: (progress: BenchProgress) => void;
}

/** Bytes per preload MSET at most, so a batch stays far below the 1 MiB frame limit. */
const PRELOAD_BATCH_BYTES = 256 * 1024;
const PRELOAD_MAX_BATCH_KEYS = 500;

/**
 * Runs a YCSB-like mix over `clients` (connected dstore clients): preloads keys, then keeps exactly
 * `concurrency` requests in flight (spread round-robin over the clients) until `ops` operations or
 * `durationS` seconds, recording every operation's latency in a {@link LatencyHistogram}.
 */
export async function runBench(
  clients: readonly DstoreClient[],
  options: BenchOptions,
  hooks: BenchHooks = {},
): Promise<BenchReport> {
  if (clients.length === 0)
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'bench needs at least one client');
  const workload = new Workload(options);
  const preloadStart = performance.now();
  const preloaded = await preload(clients, workload, options);
  const preloadS = (performance.now() - preloadStart) / 1000;
  const run = new BenchRun(clients, workload, options);
  const routedBefore = routedTotals(clients);
  const measured = await run.execute(hooks);
  const routedAfter = routedTotals(clients);
  const nodes = await fetchNodeReports(clients[0]!);
  const deleted = options.cleanup ? await deleteKeyspace(clients, workload, options) : undefined;
  return {
    config: { ...options, clients: clients.length },
    preloaded,
    preloadS,
    ...measured,
    nodes,
    ...(routedBefore === undefined || routedAfter === undefined
      ? {}
      : {
          routing: {
            direct: routedAfter.direct - routedBefore.direct,
            viaBalancer: routedAfter.viaBalancer - routedBefore.viaBalancer,
            redirects: routedAfter.redirects - routedBefore.redirects,
          },
        }),
    ...(deleted === undefined ? {} : { deleted }),
  };
}

/** Direct-routing counters summed over the clients; undefined when they do not route directly. */
function routedTotals(
  clients: readonly DstoreClient[],
): { direct: number; viaBalancer: number; redirects: number } | undefined {
  let totals: { direct: number; viaBalancer: number; redirects: number } | undefined;
  for (const client of clients) {
    const stats = client.routingStats;
    if (stats === undefined) continue;
    totals ??= { direct: 0, viaBalancer: 0, redirects: 0 };
    totals.direct += stats.direct;
    totals.viaBalancer += stats.viaBalancer;
    totals.redirects += stats.moved + stats.asked;
  }
  return totals;
}

async function preload(
  clients: readonly DstoreClient[],
  workload: Workload,
  options: BenchOptions,
): Promise<number> {
  const total = Math.min(options.preload, options.keyspace);
  const perKeyBytes = options.valueSize + 32;
  const batchKeys = Math.max(
    1,
    Math.min(PRELOAD_MAX_BATCH_KEYS, Math.floor(PRELOAD_BATCH_BYTES / perKeyBytes)),
  );
  await inLanes(clients, options, total, batchKeys, async (client, start, end) => {
    const entries: [string, Uint8Array][] = [];
    for (let index = start; index < end; index++) entries.push([workload.keyOf(index), workload.value]);
    await client.mset(entries);
  });
  return total;
}

/** Deletes every key of the keyspace (keys of several nodes: one DEL each); how many existed. */
async function deleteKeyspace(
  clients: readonly DstoreClient[],
  workload: Workload,
  options: BenchOptions,
): Promise<number> {
  let deleted = 0;
  await inLanes(clients, options, options.keyspace, 1, async (client, index) => {
    if (await client.del(workload.keyOf(index))) deleted++;
  });
  return deleted;
}

/**
 * Runs `work` over [0, total) in batches of `batchKeys`, on up to 16 lanes (at most
 * `concurrency`) spread over the clients, each with one batch in flight.
 */
async function inLanes(
  clients: readonly DstoreClient[],
  options: BenchOptions,
  total: number,
  batchKeys: number,
  work: (client: DstoreClient, start: number, end: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lanes = Math.max(1, Math.min(options.concurrency, 16));
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      const client = clients[lane % clients.length]!;
      while (next < total) {
        const start = next;
        const end = Math.min(total, start + batchKeys);
        next = end;
        await work(client, start, end);
      }
    }),
  );
}

type Measured = Pick<
  BenchReport,
  'ops' | 'durationS' | 'throughput' | 'latency' | 'byOp' | 'hits' | 'misses' | 'errors'
>;

/** The measured phase: `concurrency` loops, each with one request in flight at a time. */
class BenchRun {
  private readonly all = new LatencyHistogram();
  private readonly perOp: Record<BenchOpType, LatencyHistogram> = {
    get: new LatencyHistogram(),
    set: new LatencyHistogram(),
  };
  private readonly opCounts: Record<BenchOpType, number> = { get: 0, set: 0 };
  private readonly errors: Record<string, number> = {};
  private errorCount = 0;
  private issued = 0;
  private completed = 0;
  private hits = 0;
  private misses = 0;
  private endAt = 0;

  constructor(
    private readonly clients: readonly DstoreClient[],
    private readonly workload: Workload,
    private readonly options: BenchOptions,
  ) {}

  async execute(hooks: BenchHooks): Promise<Measured> {
    const start = performance.now();
    this.endAt = start + this.options.durationS * 1000;
    const stopProgress = this.reportProgress(start, hooks);
    try {
      await Promise.all(
        Array.from({ length: this.options.concurrency }, (_, lane) =>
          this.loop(this.clients[lane % this.clients.length]!),
        ),
      );
    } finally {
      stopProgress();
    }
    const durationS = (performance.now() - start) / 1000;
    return {
      ops: this.completed,
      durationS,
      throughput: durationS > 0 ? this.completed / durationS : 0,
      latency: this.all.summary(),
      byOp: {
        get: { ops: this.opCounts.get, ...this.perOp.get.summary() },
        set: { ops: this.opCounts.set, ...this.perOp.set.summary() },
      },
      hits: this.hits,
      misses: this.misses,
      errors: this.errors,
    };
  }

  private async loop(client: DstoreClient): Promise<void> {
    const { workload } = this;
    while (this.issued < this.options.ops && performance.now() < this.endAt) {
      this.issued++;
      const type = workload.nextType();
      const key = workload.nextKey();
      const started = performance.now();
      try {
        if (type === 'get') {
          if ((await client.get(key)) === null) this.misses++;
          else this.hits++;
        } else {
          await client.set(key, workload.value);
        }
        const micros = (performance.now() - started) * 1000;
        this.all.record(micros);
        this.perOp[type].record(micros);
      } catch (error) {
        const code = error instanceof DstoreError ? error.code : ErrorCode.INTERNAL;
        this.errors[code] = (this.errors[code] ?? 0) + 1;
        this.errorCount++;
      }
      this.opCounts[type]++;
      this.completed++;
    }
  }

  private reportProgress(start: number, hooks: BenchHooks): () => void {
    const { onProgress } = hooks;
    if (!onProgress) return () => undefined;
    let lastAt = start;
    let lastCompleted = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      const opsPerSec = ((this.completed - lastCompleted) * 1000) / Math.max(1, now - lastAt);
      lastAt = now;
      lastCompleted = this.completed;
      onProgress({
        elapsedS: (now - start) / 1000,
        completed: this.completed,
        opsPerSec,
        errors: this.errorCount,
      });
    }, 1000);
    timer.unref();
    return () => clearInterval(timer);
  }
}

async function fetchNodeReports(client: DstoreClient): Promise<NodeReport[]> {
  try {
    return nodeReportsFrom(await client.stats());
  } catch {
    // A server without per-node STATS (or a failing one) still gets its client-side report.
    return [];
  }
}
