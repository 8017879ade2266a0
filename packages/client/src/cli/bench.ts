import type { Command } from 'commander';
import { formatBenchReport } from '../bench/report.js';
import { type BenchOptions, runBench } from '../bench/runner.js';
import type { KeyDistribution } from '../bench/workload.js';
import type { DstoreClient } from '../client.js';
import { DstoreError, ErrorCode } from '../errors.js';
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
      .option('--no-progress', 'no progress line on stderr'),
  ).action(async (options: BenchCliOptions) => {
    const settings = benchSettings(options);
    const clients: DstoreClient[] = [];
    try {
      for (let i = 0; i < options.clients; i++) clients.push(await openClient(options));
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

function benchSettings(options: BenchCliOptions): BenchOptions {
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
  };
}
