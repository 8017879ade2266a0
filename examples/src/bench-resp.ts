import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuSeconds, median, scriptArgs } from './bench-load.js';
import { freePort, start, startRedis, stopPeers, waitForPong } from './redis-peers.js';
import { requireRespTools, runRedisBenchmark, type System, startDstore, startPeer } from './resp-systems.js';

const { values: flags } = parseArgs({
  args: scriptArgs(),
  options: {
    requests: { type: 'string', default: process.env.DSTORE_RESP_REQUESTS ?? '100000' },
    clients: { type: 'string', default: process.env.DSTORE_RESP_CLIENTS ?? '50' },
    rounds: { type: 'string', default: process.env.DSTORE_RESP_ROUNDS ?? '3' },
    pipelines: { type: 'string', default: process.env.DSTORE_RESP_PIPELINES ?? '1,16' },
    warmup: { type: 'string', default: process.env.DSTORE_RESP_WARMUP ?? '300000' },
    'baseline-root': { type: 'string', default: process.env.DSTORE_RESP_BASELINE_ROOT },
    floor: { type: 'boolean', default: process.env.DSTORE_RESP_FLOOR === '1' },
    // dstore's replication factor (the twemproxy setup keeps one copy whatever it is).
    'replication-factor': { type: 'string', default: process.env.DSTORE_RESP_FACTOR ?? '1' },
  },
});
const BASELINE_ROOT = flags['baseline-root'];
const REQUESTS = Number(flags.requests);
const CLIENTS = Number(flags.clients);
const ROUNDS = Number(flags.rounds);
const PIPELINES = flags.pipelines.split(',').map(Number);
/** Unmeasured requests per test and pipeline depth before the first round. */
const WARMUP = Number(flags.warmup);
const FACTOR = Number(flags['replication-factor']);
const TESTS = ['SET', 'GET'] as const;

/** One redis-benchmark run: requests/s per test, and CPU µs per op of each server process. */
interface Sample {
  readonly rps: Record<(typeof TESTS)[number], number>;
  readonly cpuUsPerOp: number[];
}

/**
 * The floor under a Node RESP server: reads with `data` events, answers each command `+PONG` in
 * one `socket.write` per read, and does nothing else (no parsing, no routing, no storage). What it
 * costs per op is Node's fixed cost of a read, a write and a wake-up on this machine.
 */
const NODE_FLOOR_SERVER = `
const net = require('node:net');
const REPLY = Buffer.from('+PONG\\r\\n');
net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('error', () => {});
  let lineStart = true;
  socket.on('data', (chunk) => {
    let commands = 0;
    for (let i = 0; i < chunk.length; i++) {
      if (lineStart && chunk[i] === 42) commands++;
      lineStart = chunk[i] === 10;
    }
    if (commands === 1) socket.write(REPLY);
    else if (commands > 1) socket.write(Buffer.concat(Array(commands).fill(REPLY)));
  });
}).listen(Number(process.argv[1]), '127.0.0.1');
`;

/** `--floor`: one redis-server, and {@link NODE_FLOOR_SERVER}. */
async function startFloors(dir: string): Promise<System[]> {
  const redis = await startRedis('floor-redis', dir);
  const port = await freePort();
  const node = start('floor-node', process.execPath, ['-e', NODE_FLOOR_SERVER, String(port)], port, dir);
  await waitForPong(port);
  return [
    {
      label: 'floor: 1 redis-server (no proxy)',
      port: redis.port,
      processes: [{ name: 'redis', pid: redis.pid }],
      stop: () => stopPeers([redis]),
    },
    {
      label: 'floor: Node answering +PONG, no work',
      port,
      processes: [{ name: 'node', pid: node.pid }],
      stop: () => stopPeers([node]),
    },
  ];
}

/** redis-benchmark `-t set,get` against `port`: requests/s by test name. */
function redisBenchmark(
  port: number,
  pipeline: number,
  requests = REQUESTS,
): Promise<Record<string, number>> {
  return runRedisBenchmark(port, [
    '-t',
    'set,get',
    '-n',
    String(requests),
    '-c',
    String(CLIENTS),
    '-P',
    String(pipeline),
    '-r',
    '10000',
    '-d',
    '100',
  ]);
}

async function measure(system: System, pipeline: number): Promise<Sample> {
  const before = system.processes.map((proc) => cpuSeconds(proc.pid));
  const rps = await redisBenchmark(system.port, pipeline);
  const after = system.processes.map((proc) => cpuSeconds(proc.pid));
  const ops = REQUESTS * TESTS.length;
  return {
    rps: { SET: rps.SET ?? 0, GET: rps.GET ?? 0 },
    cpuUsPerOp: after.map((seconds, index) => ((seconds - before[index]!) * 1e6) / ops),
  };
}

const fixed = (value: number, digits = 1): string => value.toFixed(digits);

async function main(): Promise<void> {
  requireRespTools();
  const dir = mkdtempSync(join(tmpdir(), 'dstore-bench-resp-'));
  const systems: System[] = [];
  try {
    systems.push(await startDstore(dir, undefined, FACTOR), await startPeer(dir));
    if (BASELINE_ROOT !== undefined) systems.push(await startDstore(dir, BASELINE_ROOT, FACTOR));
    if (flags.floor) systems.push(...(await startFloors(dir)));
    // Unmeasured: every key written once and the JIT of the Node processes warmed up, so the first
    // round measures the same steady state as the others (the C servers need none, and get the same).
    for (const system of systems) {
      for (const pipeline of PIPELINES) await redisBenchmark(system.port, pipeline, WARMUP);
    }
    const samples = new Map<string, Sample[]>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const pipeline of PIPELINES) {
        for (const system of systems) {
          const sample = await measure(system, pipeline);
          const key = `${system.label}|${pipeline}`;
          samples.set(key, [...(samples.get(key) ?? []), sample]);
          console.log(
            `round ${round} -P ${pipeline} ${system.label}: SET ${fixed(sample.rps.SET, 0)}/s GET ${fixed(sample.rps.GET, 0)}/s, CPU µs/op ${sample.cpuUsPerOp.map((us) => fixed(us)).join(' ')}`,
          );
        }
      }
    }
    console.log(
      `\nredis-benchmark -t set,get -n ${REQUESTS} -c ${CLIENTS} -d 100 -r 10000, medians of ${ROUNDS} rounds; dstore with --replication-factor ${FACTOR}${FACTOR === 1 ? ' (one copy per key, as the Redis setups)' : ' (twemproxy + Redis keep one copy)'}:\n`,
    );
    console.log('| system | -P | SET ops/s | GET ops/s | CPU µs/op per server process | servers total |');
    console.log('|---|---|---|---|---|---|');
    for (const pipeline of PIPELINES) {
      for (const system of systems) {
        const runs = samples.get(`${system.label}|${pipeline}`) ?? [];
        const cpu = system.processes.map((_, index) => median(runs.map((run) => run.cpuUsPerOp[index]!)));
        const perProcess = system.processes
          .map((proc, index) => `${proc.name} ${fixed(cpu[index]!)}`)
          .join(', ');
        console.log(
          `| ${system.label} | ${pipeline} | ${fixed(median(runs.map((run) => run.rps.SET)), 0)} | ${fixed(median(runs.map((run) => run.rps.GET)), 0)} | ${perProcess} | ${fixed(cpu.reduce((sum, us) => sum + us, 0))} |`,
        );
      }
    }
    console.log(
      '\nRatios dstore / twemproxy (ops/s: higher is better; server CPU per op: lower is better):\n',
    );
    console.log('| -P | SET ops/s | GET ops/s | server CPU/op |');
    console.log('|---|---|---|---|');
    const [dstore, peer] = systems as [System, System];
    const baseline = BASELINE_ROOT === undefined ? undefined : systems[2];
    const cpu = (sample: Sample): number => sample.cpuUsPerOp.reduce((sum, us) => sum + us, 0);
    const ratios = (ours: System, theirs: System, label: string): void => {
      for (const pipeline of PIPELINES) {
        const a = samples.get(`${ours.label}|${pipeline}`) ?? [];
        const b = samples.get(`${theirs.label}|${pipeline}`) ?? [];
        const ratio = (pick: (sample: Sample) => number): string =>
          fixed(median(a.map(pick)) / median(b.map(pick)), 2);
        console.log(
          `| ${label}${pipeline} | ${ratio((sample) => sample.rps.SET)}x | ${ratio((sample) => sample.rps.GET)}x | ${ratio(cpu)}x |`,
        );
      }
    };
    ratios(dstore, peer, '');
    if (baseline !== undefined) {
      console.log('\nThis build / the baseline build (same ratios):\n');
      console.log('| -P | SET ops/s | GET ops/s | server CPU/op |');
      console.log('|---|---|---|---|');
      ratios(dstore, baseline, '');
      ratios(baseline, peer, '(baseline / twemproxy) ');
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
