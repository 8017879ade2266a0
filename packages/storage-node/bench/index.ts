/**
 * Storage node throughput and latency over loopback: `pnpm --filter @dstore/storage-node bench`
 * (builds nothing: run `pnpm --filter @dstore/storage-node build` first; the node is the built CLI
 * in a child process so client and server each get a core).
 *
 * For each engine: SET then GET, 1, 50 and 200 requests in flight on one protocol Connection, each
 * case bounded by BENCH_SECONDS (default 3) or BENCH_OPS (default 100,000) operations. Then
 * bytes per key after loading BENCH_KEYS (default 100,000) keys of 16 bytes with 100-byte values.
 * Prints a Markdown table (the one in BENCHMARKS.md).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Connection,
  connectSocket,
  handshake,
  LatencyHistogram,
  Op,
  type Request,
  type WithoutId,
} from '@dstore/protocol';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../dist/cli.js');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const MAX_OPS = Number(process.env.BENCH_OPS ?? 100_000);
const MEMORY_KEYS = Number(process.env.BENCH_KEYS ?? 100_000);
const KEY_SPACE = 10_000;
const KEY_BYTES = 16;
const VALUE_BYTES = 100;

type Engine = 'memory' | 'lmdb';
type BenchOp = 'SET' | 'GET' | 'INCRBY' | 'INCRBYFLOAT' | 'TRANSACT';

interface Child {
  readonly process: ChildProcess;
  readonly port: number;
  readonly dataDir: string | undefined;
}

interface CaseResult {
  readonly engine: Engine;
  readonly op: BenchOp;
  readonly inFlight: number;
  readonly ops: number;
  readonly opsPerSecond: number;
  readonly p50Us: number;
  readonly p99Us: number;
}

function key(i: number): Uint8Array {
  return new TextEncoder().encode(`key:${String(i).padStart(KEY_BYTES - 4, '0')}`);
}

const KEYS = Array.from({ length: KEY_SPACE }, (_, i) => key(i));
const VALUE = new Uint8Array(VALUE_BYTES).fill(0x61);

async function startNode(engine: Engine): Promise<Child> {
  const dataDir = engine === 'lmdb' ? mkdtempSync(join(tmpdir(), 'dstore-bench-')) : undefined;
  const args = [CLI, '--port', '0', '--id', `bench-${engine}`, '--engine', engine, '--log-level', 'warn'];
  if (dataDir) args.push('--data-dir', dataDir);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolvePort, reject) => {
    let stdout = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline >= 0) resolvePort((JSON.parse(stdout.slice(0, newline)) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`dstore-node exited with ${code}`)));
  });
  return { process: child, port, dataDir };
}

async function stopNode(child: Child): Promise<void> {
  const exited = new Promise((resolveExit) => child.process.once('exit', resolveExit));
  child.process.kill('SIGTERM');
  await exited;
  if (child.dataDir) rmSync(child.dataDir, { recursive: true, force: true });
}

async function connect(port: number): Promise<Connection> {
  const socket = await connectSocket({ host: '127.0.0.1', port });
  const connection = new Connection(socket, { maxInFlight: 4096, requestTimeoutMs: 30_000 });
  await handshake(connection, 'client');
  return connection;
}

/** Keeps `inFlight` requests outstanding until the time or op budget is spent. */
async function runCase(
  connection: Connection,
  inFlight: number,
  makeRequest: (i: number) => WithoutId<Request>,
): Promise<{ ops: number; seconds: number; latency: LatencyHistogram }> {
  const latency = new LatencyHistogram();
  const deadline = performance.now() + SECONDS * 1000;
  let issued = 0;
  const worker = async (): Promise<void> => {
    while (issued < MAX_OPS && performance.now() < deadline) {
      const request = makeRequest(issued++);
      const start = performance.now();
      await connection.request(request);
      latency.recordSince(start);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { ops: latency.count, seconds: (performance.now() - started) / 1000, latency };
}

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) * 1024 : Number.NaN;
}

async function stats(connection: Connection): Promise<Record<string, number | string>> {
  const answer = await connection.request({ op: Op.STATS });
  if (answer.op !== Op.STATS_RESULT) throw new Error('expected STATS_RESULT');
  return answer.stats;
}

async function bytesPerKey(engine: Engine): Promise<{ engineBytes: number; rssBytes: number }> {
  const child = await startNode(engine);
  try {
    const connection = await connect(child.port);
    const pid = child.process.pid as number;
    const before = rssBytes(pid);
    const batch = 500;
    const pending: Promise<unknown>[] = [];
    for (let offset = 0; offset < MEMORY_KEYS; offset += batch) {
      const entries = [];
      for (let i = offset; i < Math.min(MEMORY_KEYS, offset + batch); i++)
        entries.push({ key: key(i), value: VALUE });
      pending.push(connection.request({ op: Op.MSET, entries }));
      if (pending.length >= 8) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    const after = rssBytes(pid);
    const nodeStats = await stats(connection);
    connection.destroy();
    return {
      engineBytes: (nodeStats.bytes as number) / (nodeStats.keys as number),
      rssBytes: (after - before) / MEMORY_KEYS,
    };
  } finally {
    await stopNode(child);
  }
}

async function benchEngine(engine: Engine): Promise<CaseResult[]> {
  const child = await startNode(engine);
  const results: CaseResult[] = [];
  try {
    const connection = await connect(child.port);
    // Populate the key space so every GET hits.
    for (let offset = 0; offset < KEY_SPACE; offset += 500) {
      const entries = KEYS.slice(offset, offset + 500).map((k) => ({ key: k, value: VALUE }));
      await connection.request({ op: Op.MSET, entries });
    }
    // The atomic counters at 50 in flight only: INCRBYFLOAT's exact long-double arithmetic next to
    // INCRBY's integer step, on keys of their own (an INCRBY of a 100-byte value would be refused),
    // and a transaction of three steps on them.
    const cases: [BenchOp, number][] = [
      ...(['SET', 'GET'] as const).flatMap((op) => [1, 50, 200].map((n): [BenchOp, number] => [op, n])),
      ['INCRBY', 50],
      ['INCRBYFLOAT', 50],
      // A rate limiter's three steps (INCRBY, EXPIRE NX, PTTL) as one transaction.
      ['TRANSACT', 50],
    ];
    for (const [op, inFlight] of cases) {
      const make = requestMaker(op);
      const { ops, seconds, latency } = await runCase(connection, inFlight, make);
      const summary = latency.summary();
      results.push({
        engine,
        op,
        inFlight,
        ops,
        opsPerSecond: ops / seconds,
        p50Us: summary.p50Us,
        p99Us: summary.p99Us,
      });
      process.stderr.write(`${engine} ${op} x${inFlight}: ${Math.round(ops / seconds)} ops/s\n`);
    }
    connection.destroy();
  } finally {
    await stopNode(child);
  }
  return results;
}

const COUNTERS = Array.from({ length: KEY_SPACE }, (_, i) => new TextEncoder().encode(`counter:${i}`));
const FLOAT_STEP = new TextEncoder().encode('0.25');

/** The request of case `op` for its i-th operation. */
function requestMaker(op: BenchOp): (i: number) => WithoutId<Request> {
  switch (op) {
    case 'SET':
      return (i) => ({ op: Op.SET, key: KEYS[i % KEY_SPACE] as Uint8Array, value: VALUE });
    case 'GET':
      return (i) => ({ op: Op.GET, key: KEYS[i % KEY_SPACE] as Uint8Array });
    case 'INCRBY':
      return (i) => ({ op: Op.INCRBY, key: COUNTERS[i % KEY_SPACE] as Uint8Array, delta: 3n });
    case 'INCRBYFLOAT':
      return (i) => ({
        op: Op.INCRBYFLOAT,
        key: COUNTERS[i % KEY_SPACE] as Uint8Array,
        increment: FLOAT_STEP,
      });
    case 'TRANSACT':
      return (i) => {
        const key = COUNTERS[i % KEY_SPACE] as Uint8Array;
        return {
          op: Op.TRANSACT,
          key,
          steps: [
            { op: Op.INCRBY, key, delta: 1n },
            { op: Op.EXPIRE, key, mode: 'in', ms: 60_000, condition: 'nx' },
            { op: Op.TTL, key },
          ],
        };
      };
  }
}

function formatInteger(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

async function main(): Promise<void> {
  const results = [...(await benchEngine('memory')), ...(await benchEngine('lmdb'))];
  const memoryBytes = await bytesPerKey('memory');
  const lmdbBytes = await bytesPerKey('lmdb');
  const lines = [
    `Loopback, one connection, node in a child process; ${SECONDS} s or ${formatInteger(MAX_OPS)} ops per case; ${KEY_BYTES}-byte keys, ${VALUE_BYTES}-byte values, ${formatInteger(KEY_SPACE)} keys.`,
    '',
    '| engine | op | in flight | ops | ops/s | p50 µs | p99 µs |',
    '|---|---|---:|---:|---:|---:|---:|',
    ...results.map(
      (r) =>
        `| ${r.engine} | ${r.op} | ${r.inFlight} | ${formatInteger(r.ops)} | ${formatInteger(r.opsPerSecond)} | ${formatInteger(r.p50Us)} | ${formatInteger(r.p99Us)} |`,
    ),
  ];
  const at50 = (engine: Engine, op: BenchOp): number =>
    results.find((r) => r.engine === engine && r.op === op && r.inFlight === 50)?.opsPerSecond ?? Number.NaN;
  const ratio = at50('lmdb', 'SET') / at50('memory', 'SET');
  const floatRatio = (engine: Engine): string =>
    (at50(engine, 'INCRBYFLOAT') / at50(engine, 'INCRBY')).toFixed(2);
  const transactRatio = (engine: Engine): string =>
    (at50(engine, 'TRANSACT') / at50(engine, 'INCRBY')).toFixed(2);
  lines.push(
    '',
    `lmdb/memory SET ratio at 50 in flight: **${ratio.toFixed(2)}** (goal >= 0.5)`,
    `INCRBYFLOAT/INCRBY ops/s at 50 in flight: memory ${floatRatio('memory')}, lmdb ${floatRatio('lmdb')}`,
    `TRANSACT (INCRBY, EXPIRE NX, PTTL)/INCRBY ops/s at 50 in flight: memory ${transactRatio('memory')}, lmdb ${transactRatio('lmdb')} (the three as separate requests: at most 0.33)`,
    '',
    `Bytes per key after loading ${formatInteger(MEMORY_KEYS)} keys (${KEY_BYTES} B key + ${VALUE_BYTES} B value):`,
    '',
    '| engine | engine.bytesUsed()/count | node RSS delta / key |',
    '|---|---:|---:|',
    `| memory | ${memoryBytes.engineBytes.toFixed(1)} | ${memoryBytes.rssBytes.toFixed(1)} |`,
    `| lmdb | ${lmdbBytes.engineBytes.toFixed(1)} | ${lmdbBytes.rssBytes.toFixed(1)} |`,
  );
  console.log(lines.join('\n'));
}

await main();
