import type { Command } from 'commander';
import { formatBenchReport } from '../bench/report.js';
import { type BenchOptions, runBench } from '../bench/runner.js';
import type { KeyDistribution } from '../bench/workload.js';
import type { DstoreClient } from '../client.js';
import { DstoreError, ErrorCode } from '../errors.js';
import type { RoutingMode } from '../options.js';
import {
  byteSize,
  fraction,
  nonNegativeInteger,
  openClient,
  positiveInteger,
  positiveNumber,
  printJson,
  printLine,
  type ServerOptions,
} from './shared.js';

interface BenchCliOptions extends ServerOptions {
  readonly ops: number;
  readonly duration: number;
  readonly concurrency: number;
  readonly valueSize: number;
  readonly readRatio: number;
  readonly keyspace: number;
  readonly distribution: string;
  readonly clients: number;
  readonly preload?: number;
  readonly progress: boolean;
  readonly routing: string;
  readonly cleanup?: boolean;
}

/** Most keys preloaded unless `--preload` says otherwise, so a huge keyspace does not stall the start. */
const DEFAULT_PRELOAD_LIMIT = 100_000;
/** Longest allowed run, so a load loop is always bounded in time. */
const MAX_DURATION_S = 3600;

/** Registers `bench`: a YCSB-like load with a latency report. */
export function registerBenchCommand(
  program: Command,
  addServerOptions: (command: Command) => Command,
): void {
  addServerOptions(
    program
      .command('bench')
      .description('YCSB-like load: throughput, client latency per op type, errors, and each node latency')
      .option('--ops <n>', 'operations to run', positiveInteger, 100_000)
      .option(
        '--duration <s>',
        `stop after this many seconds (at most ${MAX_DURATION_S})`,
        positiveNumber,
        60,
      )
      .option('--concurrency <n>', 'requests in flight', positiveInteger, 50)
      .option('--value-size <bytes>', 'bytes per written value (100, 4k, 1MiB)', byteSize, 100)
      .option('--read-ratio <r>', 'fraction of reads (GET); the rest are SET', fraction, 0.5)
      .option('--keyspace <n>', 'distinct keys', positiveInteger, 10_000)
      .option('--distribution <d>', 'key choice: uniform or zipfian (YCSB, constant 0.99)', 'uniform')
      .option('--clients <n>', 'connections to open', positiveInteger, 1)
      .option(
        '--preload <n>',
        `keys written before the run (default min(keyspace, ${DEFAULT_PRELOAD_LIMIT}))`,
        nonNegativeInteger,
      )
      .option(
        '--routing <mode>',
        "balancer (every request through the balancer) or direct (straight to each key's node)",
        'balancer',
      )
      .option('--cleanup', 'delete the keyspace (bench:0 ... bench:<keyspace-1>) after the run')
      .option('--no-progress', 'no progress line on stderr'),
  ).action(async (options: BenchCliOptions) => {
    const settings = benchSettings(options);
    const clients: DstoreClient[] = [];
    try {
      for (let i = 0; i < options.clients; i++) {
        clients.push(await openClient(options, { routing: settings.routing ?? 'balancer' }));
      }
      if (settings.routing === 'direct') await Promise.all(clients.map((client) => waitForMap(client)));
      const report = await runBench(clients, settings, {
        ...(options.progress
          ? {
              onProgress: (progress) =>
                process.stderr.write(
                  `[bench] ${progress.elapsedS.toFixed(0)} s  ${progress.completed} ops  ` +
                    `${Math.round(progress.opsPerSec)} ops/s  ${progress.errors} errors\n`,
                ),
            }
          : {}),
      });
      if (options.json) printJson(report);
      else printLine(formatBenchReport(report));
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  });
}

/** Lets a direct-routing client get its first map (else the first requests go via the balancer). */
async function waitForMap(client: DstoreClient): Promise<void> {
  for (let waited = 0; waited < 3000 && (client.routingStats?.mapEpoch ?? -1) < 0; waited += 20) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function benchSettings(options: BenchCliOptions): BenchOptions {
  if (options.routing !== 'balancer' && options.routing !== 'direct') {
    throw new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `--routing must be balancer or direct, got ${options.routing}`,
    );
  }
  if (options.distribution !== 'uniform' && options.distribution !== 'zipfian') {
    throw new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `--distribution must be uniform or zipfian, got ${options.distribution}`,
    );
  }
  return {
    ops: options.ops,
    durationS: Math.min(options.duration, MAX_DURATION_S),
    concurrency: options.concurrency,
    valueSize: options.valueSize,
    readRatio: options.readRatio,
    keyspace: options.keyspace,
    distribution: options.distribution as KeyDistribution,
    preload: options.preload ?? Math.min(options.keyspace, DEFAULT_PRELOAD_LIMIT),
    routing: options.routing as RoutingMode,
    cleanup: options.cleanup === true,
  };
}
