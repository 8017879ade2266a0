/**
 * The client load as a child process: `dstore bench --json` against one server, shared by
 * the cluster benchmarks (bench-cluster.ts, bench-versions.ts).
 */
import { spawnSync } from 'node:child_process';
import { cliPath } from './cluster.js';

/** The part of `dstore bench --json` the benchmarks read. */
export interface BenchJson {
  readonly throughput: number;
  readonly ops: number;
  readonly latency: { readonly p50Us: number; readonly p99Us: number; readonly p999Us: number };
  readonly errors: Record<string, number>;
}

/** Options of {@link runLoad}. */
export interface LoadOptions {
  readonly ops: number | string;
  readonly concurrency: number | string;
  /** The `dstore` CLI to run. Default: this workspace's. */
  readonly clientCli?: string;
}

/**
 * Runs `dstore bench --ops <ops> --concurrency <c> --value-size 100 --read-ratio 0.5
 * --keyspace 10000 --json --no-progress` against `server` (host:port) and returns its report.
 * The run starts with the CLI's preload (the 10,000 keys, in MSETs of up to 500).
 */
export function runLoad(server: string, options: LoadOptions): BenchJson {
  const args = [
    options.clientCli ?? cliPath('@dstore/client'),
    'bench',
    '--server',
    server,
    '--ops',
    String(options.ops),
    '--concurrency',
    String(options.concurrency),
  ];
  args.push('--value-size', '100', '--read-ratio', '0.5', '--keyspace', '10000', '--json', '--no-progress');
  const result = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0) throw new Error(`dstore bench failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as BenchJson;
}

/** Failed operations of a run, all codes together. */
export function errorCount(report: BenchJson): number {
  return Object.values(report.errors).reduce((sum, count) => sum + count, 0);
}
