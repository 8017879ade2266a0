/**
 * The load process of bench:peers: one closed loop that drives any of the compared systems through
 * its usual Node client, so every system gets exactly the same workload from the same code.
 *
 * Run as a child by bench-peers.ts with one JSON argument ({@link LoadConfig}). It connects, writes
 * every key of the keyspace once and runs a warm-up (both unmeasured), prints
 * `{"event":"ready"}`, waits for a line on stdin, then runs the measured load: `sets` SETs, then
 * `gets` GETs, each phase with `concurrency` requests in flight (closed loop: a request is sent as
 * soon as one completes), keys uniform over the keyspace, 100-byte values. It prints one
 * {@link LoadResult} line and exits.
 */
import { createInterface } from 'node:readline';
import { type ClientOptions, createClient } from '@dstore/client';
import { LatencyHistogram, type LatencySummary } from '@dstore/protocol';
import { seededRandom } from '@dstore/protocol/testing';
import { Cluster, Redis } from 'ioredis';
import { cpuSeconds } from './bench-load.js';

/** The client library and the way it reaches the servers. */
export type Driver = 'ioredis' | 'ioredis-cluster' | 'dstore' | 'dstore-direct';

/** What the parent asks for. */
export interface LoadConfig {
  readonly driver: Driver;
  /** host:port of the proxy/balancer, or the cluster's seed nodes. */
  readonly endpoints: readonly { readonly host: string; readonly port: number }[];
  readonly sets: number;
  readonly gets: number;
  readonly concurrency: number;
  readonly valueSize: number;
  readonly keyspace: number;
  /** Unmeasured ops (half SET, half GET) after the keyspace is written. */
  readonly warmupOps: number;
  /** Seed of the key sequence (each load process gets its own). */
  readonly seed: number;
}

/** What one load process measured. */
export interface LoadResult {
  readonly ops: number;
  readonly errors: number;
  /** Wall time of the measured load. */
  readonly durationS: number;
  readonly latency: LatencySummary;
  /** This process's own CPU (user + system) during the measured load, seconds. */
  readonly cpuS: number;
  /** First error message seen, if any. */
  readonly firstError?: string;
}

interface KvDriver {
  set(key: string, value: Buffer): Promise<unknown>;
  get(key: string): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * Whether this @dstore/client accepts `routing: 'direct'` (clients that route straight to the
 * owning node). Older clients refuse unknown options, so this asks a lazy client.
 */
export function directRoutingAvailable(): boolean {
  try {
    const options: Record<string, unknown> = {
      host: '127.0.0.1',
      port: 1,
      lazyConnect: true,
      routing: 'direct',
    };
    const client = createClient(options as ClientOptions);
    void client.close();
    return true;
  } catch {
    return false;
  }
}

async function connect(config: LoadConfig): Promise<KvDriver> {
  const first = config.endpoints[0]!;
  switch (config.driver) {
    case 'ioredis': {
      // No INFO ready check and no CLIENT SETINFO: twemproxy serves neither (it closes the connection).
      const redis = new Redis({
        host: first.host,
        port: first.port,
        enableReadyCheck: false,
        disableClientInfo: true,
      });
      await redis.ping();
      return {
        set: (key, value) => redis.set(key, value),
        get: (key) => redis.getBuffer(key),
        // disconnect, not QUIT: twemproxy does not serve QUIT either.
        close: async () => redis.disconnect(),
      };
    }
    case 'ioredis-cluster': {
      const cluster = new Cluster(config.endpoints.map(({ host, port }) => ({ host, port })));
      await new Promise<void>((resolve, reject) => {
        cluster.once('ready', resolve);
        cluster.once('error', reject);
      });
      return {
        set: (key, value) => cluster.set(key, value),
        get: (key) => cluster.getBuffer(key),
        close: async () => void (await cluster.quit()),
      };
    }
    case 'dstore':
    case 'dstore-direct': {
      const options: Record<string, unknown> = { host: first.host, port: first.port };
      if (config.driver === 'dstore-direct') options.routing = 'direct';
      const client = createClient(options as ClientOptions);
      await client.ping();
      return {
        set: (key, value) => client.set(key, value),
        get: (key) => client.get(key),
        close: () => client.close(),
      };
    }
  }
}

interface PhaseCounters {
  errors: number;
  firstError?: string;
}

/** `ops` requests of one kind, `concurrency` in flight, each latency into `histogram` when given. */
async function phase(
  driver: KvDriver,
  kind: 'set' | 'get',
  ops: number,
  concurrency: number,
  keys: readonly string[],
  value: Buffer,
  next: () => number,
  histogram: LatencyHistogram | undefined,
  counters: PhaseCounters,
): Promise<void> {
  let issued = 0;
  const worker = async (): Promise<void> => {
    while (issued < ops) {
      issued++;
      const key = keys[Math.floor(next() * keys.length)]!;
      const start = performance.now();
      try {
        await (kind === 'set' ? driver.set(key, value) : driver.get(key));
        histogram?.recordSince(start);
      } catch (error) {
        counters.errors++;
        counters.firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, ops)) }, worker));
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as LoadConfig;
  const keys = Array.from({ length: config.keyspace }, (_, i) => `key:${String(i).padStart(8, '0')}`);
  const value = Buffer.alloc(config.valueSize, 0x61);
  // The key sequence costs next to nothing and is reproducible from the seed.
  const next = seededRandom(config.seed);
  const driver = await connect(config);
  const unmeasured: PhaseCounters = { errors: 0 };
  // Every key once (so GETs hit), then a warm-up of both kinds, long enough (the parent's default)
  // for V8 to have optimised the hot paths of this process and of the Node servers.
  let written = 0;
  await Promise.all(
    Array.from({ length: config.concurrency }, async () => {
      while (written < keys.length) await driver.set(keys[written++]!, value);
    }),
  );
  const half = Math.floor(config.warmupOps / 2);
  await phase(driver, 'set', half, config.concurrency, keys, value, next, undefined, unmeasured);
  await phase(driver, 'get', half, config.concurrency, keys, value, next, undefined, unmeasured);

  process.stdout.write(`${JSON.stringify({ event: 'ready' })}\n`);
  const lines = createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => lines.once('line', () => resolve()));
  lines.close();

  const histogram = new LatencyHistogram();
  const counters: PhaseCounters = { errors: 0 };
  const cpuBefore = cpuSeconds(process.pid);
  const start = performance.now();
  await phase(driver, 'set', config.sets, config.concurrency, keys, value, next, histogram, counters);
  await phase(driver, 'get', config.gets, config.concurrency, keys, value, next, histogram, counters);
  const durationS = (performance.now() - start) / 1000;
  const cpuS = cpuSeconds(process.pid) - cpuBefore;
  const result: LoadResult = {
    ops: config.sets + config.gets,
    errors: counters.errors,
    durationS,
    latency: histogram.summary(),
    cpuS,
    ...(counters.firstError === undefined ? {} : { firstError: counters.firstError }),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await driver.close();
}

// Run only as the child process, not when bench-peers.ts imports the types and the probe.
if (process.argv[1]?.endsWith('peers-load.ts') || process.argv[1]?.endsWith('peers-load.js')) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
