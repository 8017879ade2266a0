/**
 * Balancer throughput benchmark: the same pipelining client (one protocol Connection holding a
 * fixed number of requests in flight, mixed 50% GET / 50% SET, 100-byte values over 10,000 keys)
 * against (a) a balancer in front of 3 storage nodes and (b) one storage node directly. Every
 * server is a child process started from the built CLIs (memory engine). Bounded: a fixed time
 * per case. Run: `pnpm --filter @dstore/balancer bench` (build protocol, hashring, storage-node
 * and balancer first). BENCH_SECONDS sets the per-case duration, BENCH_CONCURRENCY the in-flight list (default 1,50,200),
 * BENCH_NODES the number of nodes behind the balancer (default 3); BENCH_PROFILE=<dir> writes a CPU
 * profile of the balancer process (node --cpu-prof) into <dir>.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Connection, connectSocket, LatencyHistogram, Op, toBytes } from '@dstore/protocol';

const here = dirname(fileURLToPath(import.meta.url));
const BALANCER_CLI = resolve(here, '../dist/cli.js');
const NODE_CLI = resolve(here, '../../storage-node/dist/cli.js');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,50,200').split(',').map(Number);
const KEY_COUNT = 10_000;
const NODE_COUNT = Number(process.env.BENCH_NODES ?? 3);
const children: ChildProcess[] = [];

interface Ready {
  readonly port: number;
  readonly adminPort?: number;
}

function start(script: string, args: string[], nodeFlags: string[] = []): Promise<Ready> {
  const child = spawn(process.execPath, [...nodeFlags, script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  return new Promise((done, fail) => {
    createInterface({ input: child.stdout! }).once('line', (line) => done(JSON.parse(line) as Ready));
    child.once('exit', (code) => fail(new Error(`${script} exited with ${code}`)));
  });
}

function startNode(id: string, join?: number): Promise<Ready> {
  const args = ['--port', '0', '--id', id, '--engine', 'memory', '--log-level', 'warn'];
  if (join !== undefined) args.push('--join', `127.0.0.1:${join}`);
  return start(NODE_CLI, args);
}

async function waitReady(adminPort: number): Promise<void> {
  for (let tries = 0; tries < 200; tries++) {
    const health = (await (await fetch(`http://127.0.0.1:${adminPort}/health`)).json()) as { ready: boolean };
    if (health.ready) return;
    await new Promise((done) => setTimeout(done, 50));
  }
  throw new Error('balancer never became ready');
}

interface CaseResult {
  readonly opsPerSecond: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly errors: number;
}

const keys = Array.from({ length: KEY_COUNT }, (_, index) => toBytes(`bench:${index}`));
const value = new Uint8Array(100).fill(120);

async function runCase(port: number, inFlight: number, seconds = SECONDS): Promise<CaseResult> {
  const connection = new Connection(await connectSocket({ host: '127.0.0.1', port }), { maxInFlight: 1024 });
  const histogram = new LatencyHistogram();
  let errors = 0;
  let counter = 0;
  const deadline = performance.now() + seconds * 1000;
  const worker = async (seed: number): Promise<void> => {
    let state = seed;
    while (performance.now() < deadline) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      const key = keys[state % KEY_COUNT]!;
      const started = performance.now();
      try {
        if (state & 0x100) await connection.request({ op: Op.GET, key });
        else await connection.request({ op: Op.SET, key, value });
        histogram.recordSince(started);
      } catch {
        errors++;
      }
      counter++;
    }
  };
  const began = performance.now();
  await Promise.all(Array.from({ length: inFlight }, (_, index) => worker(index + 1)));
  const elapsed = (performance.now() - began) / 1000;
  connection.destroy();
  return {
    opsPerSecond: counter / elapsed,
    p50Us: histogram.percentile(0.5),
    p99Us: histogram.percentile(0.99),
    errors,
  };
}

async function main(): Promise<void> {
  // BENCH_PROFILE=<dir> writes a CPU profile of the balancer process there.
  const profile = process.env.BENCH_PROFILE
    ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE]
    : [];
  const balancer = await start(
    BALANCER_CLI,
    ['--port', '0', '--admin-port', '0', '--log-level', 'error'],
    profile,
  );
  const nodeIds = Array.from({ length: NODE_COUNT }, (_, index) => `bench-${index + 1}`);
  await Promise.all(nodeIds.map((id) => startNode(id, balancer.port)));
  await waitReady(balancer.adminPort!);
  const direct = await startNode('bench-direct');
  // Warm both paths (JIT, connections) before measuring.
  await runCase(balancer.port, 50, Math.min(1, SECONDS));
  await runCase(direct.port, 50, Math.min(1, SECONDS));
  const rows: string[] = [];
  rows.push('| in flight | target | ops/s | p50 (µs) | p99 (µs) | errors | balancer/direct |');
  rows.push('|---:|---|---:|---:|---:|---:|---:|');
  for (const inFlight of CONCURRENCY) {
    const viaBalancer = await runCase(balancer.port, inFlight);
    const toNode = await runCase(direct.port, inFlight);
    const ratio = viaBalancer.opsPerSecond / toNode.opsPerSecond;
    rows.push(row(inFlight, `balancer -> ${NODE_COUNT} nodes`, viaBalancer, ratio.toFixed(2)));
    rows.push(row(inFlight, 'direct -> 1 node', toNode, ''));
  }
  console.log(`\nmixed 50% GET / 50% SET, 100-byte values, ${KEY_COUNT} keys, ${SECONDS} s per case\n`);
  console.log(rows.join('\n'));
}

function row(inFlight: number, target: string, result: CaseResult, ratio: string): string {
  const ops = Math.round(result.opsPerSecond).toLocaleString('en-US');
  return `| ${inFlight} | ${target} | ${ops} | ${result.p50Us} | ${result.p99Us} | ${result.errors} | ${ratio} |`;
}

async function stopAll(): Promise<void> {
  // Nodes first (their LEAVE needs a listening balancer), the balancer last.
  for (const child of children.slice(1).concat(children.slice(0, 1))) {
    if (child.exitCode !== null) continue;
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGTERM');
    await exited;
  }
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(stopAll);
