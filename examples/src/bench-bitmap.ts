/**
 * `bench:bitmap`: reads of part of a large value through the RESP port (balancer + 3 memory nodes)
 * next to twemproxy + 3 Redis, in one run: GETBIT, STRLEN and GETRANGE of a 1,000,000-byte value,
 * redis-benchmark with each command, 50 clients. Requests/s, CPU µs per op of every server process
 * and the ratios; with `--baseline-root` another built checkout too (e.g. one whose balancer read
 * the whole value with GET and computed the answer itself).
 *
 *   pnpm build && pnpm --filter @dstore/examples bench:bitmap
 *   pnpm --filter @dstore/examples bench:bitmap -- --baseline-root /tmp/dstore-baseline --rounds 3
 *
 * Flags: --bytes (the value's size, 1000000), --requests (per command, 20000), --clients (50),
 * --rounds (3), --warmup (requests per command before the rounds, 20000), --pipeline (redis-benchmark
 * -P, 1), --baseline-root.
 * Needs redis-server, redis-tools and nutcracker (Debian). Linux only (/proc).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuSeconds, median, scriptArgs } from './bench-load.js';
import { requireRespTools, runRedisBenchmark, type System, startDstore, startPeer } from './resp-systems.js';

const { values: flags } = parseArgs({
  args: scriptArgs(),
  options: {
    bytes: { type: 'string', default: '1000000' },
    requests: { type: 'string', default: '20000' },
    clients: { type: 'string', default: '50' },
    rounds: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '20000' },
    pipeline: { type: 'string', default: '1' },
    'baseline-root': { type: 'string' },
  },
});
const BYTES = Number(flags.bytes);
const REQUESTS = Number(flags.requests);
const CLIENTS = Number(flags.clients);
const ROUNDS = Number(flags.rounds);
const WARMUP = Number(flags.warmup);
/** Commands each client sends before it waits for their answers (redis-benchmark -P). */
const PIPELINE = Number(flags.pipeline);
const KEY = 'bench:bitmap';
/** The commands measured: each reads a little of the value. */
const COMMANDS: readonly (readonly string[])[] = [
  ['GETBIT', KEY, String(BYTES * 8 - 1)],
  ['STRLEN', KEY],
  ['GETRANGE', KEY, '0', '9'],
];
const nameOf = (command: readonly string[]): string => command[0]!;

/**
 * Writes the value (the last bit set) through the system's RESP port with redis-cli (`-x`: the
 * value from stdin; it sends nothing before the command, which twemproxy requires).
 */
function writeValue(system: System): void {
  const value = Buffer.alloc(BYTES);
  value[BYTES - 1] = 1;
  const written = spawnSync('redis-cli', ['-p', String(system.port), '-x', 'SET', KEY], { input: value });
  const answer = written.stdout?.toString().trim();
  if (written.status !== 0 || answer !== 'OK') {
    throw new Error(
      `${system.label}: SET of ${BYTES} bytes answered ${answer} ${written.stderr?.toString()}`,
    );
  }
}

interface Sample {
  readonly rps: number;
  readonly cpuUsPerOp: number;
}

async function measure(system: System, command: readonly string[], requests: number): Promise<Sample> {
  const before = system.processes.map((proc) => cpuSeconds(proc.pid));
  const rps = await runRedisBenchmark(system.port, [
    '-n',
    String(requests),
    '-c',
    String(CLIENTS),
    '-P',
    String(PIPELINE),
    ...command,
  ]);
  const after = system.processes.map((proc) => cpuSeconds(proc.pid));
  const cpu = after.reduce((sum, seconds, index) => sum + seconds - before[index]!, 0);
  return { rps: rps[nameOf(command)] ?? 0, cpuUsPerOp: (cpu * 1e6) / requests };
}

async function main(): Promise<void> {
  requireRespTools();
  const dir = mkdtempSync(join(tmpdir(), 'dstore-bench-bitmap-'));
  const systems: System[] = [];
  try {
    systems.push(await startDstore(dir), await startPeer(dir));
    const baselineRoot = flags['baseline-root'];
    if (baselineRoot !== undefined) systems.push(await startDstore(dir, baselineRoot));
    for (const system of systems) {
      writeValue(system);
      for (const command of COMMANDS) await measure(system, command, WARMUP);
    }
    const samples = new Map<string, Sample[]>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const command of COMMANDS) {
        for (const system of systems) {
          const sample = await measure(system, command, REQUESTS);
          const key = `${system.label}|${nameOf(command)}`;
          samples.set(key, [...(samples.get(key) ?? []), sample]);
          console.log(
            `round ${round} ${nameOf(command)} ${system.label}: ${sample.rps.toFixed(0)}/s, servers ${sample.cpuUsPerOp.toFixed(1)} µs/op`,
          );
        }
      }
    }
    const medianOf = (system: System, command: readonly string[], pick: (sample: Sample) => number): number =>
      median((samples.get(`${system.label}|${nameOf(command)}`) ?? []).map(pick));
    console.log(
      `\nredis-benchmark -n ${REQUESTS} -c ${CLIENTS} -P ${PIPELINE} <command>, a ${BYTES}-byte value, medians of ${ROUNDS} rounds:\n`,
    );
    console.log('| command | system | ops/s | servers CPU µs/op | ops/s vs twemproxy |');
    console.log('|---|---|---:|---:|---:|');
    const peer = systems[1]!;
    for (const command of COMMANDS) {
      for (const system of systems) {
        const rps = medianOf(system, command, (sample) => sample.rps);
        const ratio = rps / medianOf(peer, command, (sample) => sample.rps);
        console.log(
          `| ${command.join(' ')} | ${system.label} | ${rps.toFixed(0)} | ${medianOf(system, command, (sample) => sample.cpuUsPerOp).toFixed(1)} | ${ratio.toFixed(2)}x |`,
        );
      }
    }
  } finally {
    for (const system of systems) await system.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
