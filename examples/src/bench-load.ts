/**
 * The client load as a child process: `dstore bench --json` against one server, shared by
 * the cluster benchmarks (bench-cluster.ts, bench-versions.ts).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { type ParseArgsConfig, parseArgs } from 'node:util';
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
  /** More `dstore bench` arguments (for example `--tls-ca <file>`). Default: none. */
  readonly extraArgs?: readonly string[];
  /** Share of reads (`--read-ratio`). Default: 0.5. */
  readonly readRatio?: number;
}

/**
 * Runs `dstore bench --ops <ops> --concurrency <c> --value-size 100 --read-ratio 0.5
 * --keyspace 10000 --json --no-progress` (another read ratio with `readRatio`) against `server`
 * (host:port) and returns its report.
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
  args.push('--value-size', '100', '--read-ratio', String(options.readRatio ?? 0.5));
  args.push('--keyspace', '10000', '--json', '--no-progress');
  args.push(...(options.extraArgs ?? []));
  const result = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0) throw new Error(`dstore bench failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as BenchJson;
}

/** Failed operations of a run, all codes together. */
export function errorCount(report: BenchJson): number {
  return Object.values(report.errors).reduce((sum, count) => sum + count, 0);
}

/** Clock ticks per second of /proc/<pid>/stat's CPU times. */
export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

/**
 * CPU seconds (user + system, all threads) process `pid` has used so far (Linux: /proc): the sum
 * of its threads' run time in nanoseconds (`/proc/<pid>/task/<tid>/schedstat`), since utime +
 * stime count in ticks of 1/CLK_TCK s (10 ms: ±8% on a node that spends 130 ms in a short run);
 * those ticks where schedstat is missing.
 */
export function cpuSeconds(pid: number): number {
  if (!HAS_SCHEDSTAT) return tickCpuSeconds(pid);
  let nanoseconds = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let schedstat: string;
    try {
      schedstat = readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8');
    } catch {
      continue; // The thread exited after the listing (Node's threads live as long as the process).
    }
    nanoseconds += Number(schedstat.slice(0, schedstat.indexOf(' ')));
  }
  return nanoseconds / 1e9;
}

/** Whether this kernel has per-thread schedstat (else CPU is read in ticks). */
const HAS_SCHEDSTAT = existsSync(`/proc/${process.pid}/task/${process.pid}/schedstat`);

/** Write syscalls process `pid` has made so far (Linux: `syscw` of /proc/<pid>/io; NaN without it). */
export function writeSyscalls(pid: number): number {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    return Number(/^syscw: (\d+)$/m.exec(io)?.[1] ?? Number.NaN);
  } catch {
    return Number.NaN;
  }
}

function tickCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/**
 * CPU seconds (user + system) of this process's children that have exited and been waited for
 * (Linux: /proc/self/stat cutime + cstime): read around a `spawnSync`, the CPU of the load process.
 */
export function reapedChildrenCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / CLK_TCK;
}

/** A load's report and, around it, each server's CPU µs per completed op. */
export interface CpuSample {
  readonly report: BenchJson;
  /** One entry per process of `pids`, in their order. */
  readonly cpuUsPerOp: number[];
  /** The load process's own CPU µs per completed op (Linux). */
  readonly loadCpuUsPerOp: number;
  /** Write syscalls per completed op of each process of `pids`, in their order (NaN without /proc/<pid>/io). */
  readonly writesPerOp: number[];
}

/**
 * Runs `warmupOps` (when > 0), then the measured load against `server`, reading the CPU time of
 * the processes `pids` (Linux: /proc) just around the measured load.
 */
export function runLoadWithCpu(
  server: string,
  pids: readonly number[],
  options: LoadOptions & { readonly warmupOps: number },
): CpuSample {
  if (options.warmupOps > 0) runLoad(server, { ...options, ops: options.warmupOps });
  const before = pids.map(cpuSeconds);
  const writesBefore = pids.map(writeSyscalls);
  const loadBefore = reapedChildrenCpuSeconds();
  const report = runLoad(server, options);
  const loadCpuUsPerOp = ((reapedChildrenCpuSeconds() - loadBefore) * 1e6) / report.ops;
  const cpuUsPerOp = pids.map((pid, i) => ((cpuSeconds(pid) - before[i]!) * 1e6) / report.ops);
  const writesPerOp = pids.map((pid, i) => (writeSyscalls(pid) - writesBefore[i]!) / report.ops);
  return { report, cpuUsPerOp, loadCpuUsPerOp, writesPerOp };
}

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * The script's own arguments. `pnpm --filter … bench:x -- --flag` hands the script a literal `--`
 * first: it is skipped, or `parseArgs` would take every flag after it for a positional (and the
 * script would refuse them, or silently run its defaults).
 */
export function scriptArgs(): string[] {
  const argv = process.argv.slice(2);
  return argv[0] === '--' ? argv.slice(1) : argv;
}

/** The flag options of a script (`parseArgs`'s `options`). */
export type ScriptOptions = NonNullable<ParseArgsConfig['options']>;

/**
 * The script's flags ({@link scriptArgs}) parsed with `options`: an unknown or malformed flag
 * prints its message and `usage` and exits 2 (the usage, not a stack trace); `--help` (when among
 * `options`) prints `usage` and exits 0. The one flag parsing of the scripts that take flags.
 */
export function scriptFlags<const T extends ScriptOptions>(
  options: T,
  usage: string,
): ReturnType<typeof parseArgs<{ args: string[]; options: T }>>['values'] {
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; options: T }>>;
  try {
    parsed = parseArgs({ args: scriptArgs(), options });
  } catch (error) {
    console.error(`${(error as Error).message}\n${usage}`);
    process.exit(2);
  }
  if ((parsed.values as Record<string, unknown>).help === true) {
    console.log(usage);
    process.exit(0);
  }
  return parsed.values;
}
