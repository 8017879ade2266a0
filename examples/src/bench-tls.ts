/**
 * `bench:tls`: what TLS on every hop costs (issue #11). In one run, interleaved rounds of a
 * plaintext cluster and a TLS cluster (balancer + 3 memory nodes, `--tls-cert/--tls-key/--tls-ca`
 * on every process): the load through `dstore bench` (ops/s) and, around it, the CPU time
 * of the 4 server processes (CPU µs per op, from /proc). Then the cost of a connection: `HANDSHAKES`
 * sequential connects + HELLO + close against the balancer, plaintext and TLS (TLS 1.3, P-256
 * certificates), with the wall time per connection and the balancer's CPU per connection.
 *
 * Env: DSTORE_BENCH_OPS (default 100000), DSTORE_BENCH_CONCURRENCY (50), DSTORE_BENCH_ROUNDS (2),
 * DSTORE_BENCH_WARMUP_OPS (20000), DSTORE_BENCH_HANDSHAKES (300). Linux only (/proc).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection, connectSocket, handshake, type TlsClientOptions } from '@dstore/protocol';
import { createTestPki } from '@dstore/protocol/testing';
import { type BenchJson, cpuSeconds, errorCount, median, runLoadWithCpu } from './bench-load.js';
import { type ClusterState, type ClusterTls, startCluster, stopCluster } from './cluster.js';

const OPS = process.env.DSTORE_BENCH_OPS ?? '100000';
const CONCURRENCY = process.env.DSTORE_BENCH_CONCURRENCY ?? '50';
const ROUNDS = Number(process.env.DSTORE_BENCH_ROUNDS ?? 2);
const WARMUP_OPS = Number(process.env.DSTORE_BENCH_WARMUP_OPS ?? 20_000);
const HANDSHAKES = Number(process.env.DSTORE_BENCH_HANDSHAKES ?? 300);

type Mode = 'plaintext' | 'tls';

interface Sample {
  readonly report: BenchJson;
  /** CPU µs per op of the balancer and of the 3 nodes together. */
  readonly balancerUsPerOp: number;
  readonly nodesUsPerOp: number;
  /** Wall ms and balancer CPU µs per connection (connect, HELLO, close). */
  readonly connectMs: number;
  readonly connectCpuUs: number;
}

/** Opens `count` connections one after the other, each connect + HELLO + close. */
async function connections(state: ClusterState, tls: TlsClientOptions | undefined, count: number) {
  const { host, port, pid } = state.balancer;
  const cpuBefore = cpuSeconds(pid);
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const socket = await connectSocket({ host, port, tls });
    const connection = new Connection(socket);
    await handshake(connection, 'client');
    await connection.close();
  }
  const elapsedMs = performance.now() - started;
  return { connectMs: elapsedMs / count, connectCpuUs: ((cpuSeconds(pid) - cpuBefore) * 1e6) / count };
}

async function measure(mode: Mode, files: ClusterTls, ca: Buffer): Promise<Sample> {
  const root = mkdtempSync(join(tmpdir(), `dstore-bench-tls-${mode}-`));
  try {
    // Factor 1: the cost of TLS on each hop, as in the figures measured before replication.
    const state = await startCluster({
      root,
      engine: 'memory',
      replicationFactor: 1,
      ...(mode === 'tls' ? { tls: files } : {}),
    });
    const server = `${mode === 'tls' ? 'dstores' : 'dstore'}://${state.balancer.host}:${state.balancer.port}`;
    const { report, cpuUsPerOp: usPerOp } = runLoadWithCpu(
      server,
      [state.balancer, ...state.nodes].map((proc) => proc.pid),
      {
        concurrency: CONCURRENCY,
        ops: OPS,
        warmupOps: WARMUP_OPS,
        extraArgs: mode === 'tls' ? ['--tls-ca', files.ca] : [],
      },
    );
    const cost = await connections(state, mode === 'tls' ? { ca } : undefined, HANDSHAKES);
    return {
      report,
      balancerUsPerOp: usPerOp[0]!,
      nodesUsPerOp: usPerOp.slice(1).reduce((sum, us) => sum + us, 0),
      ...cost,
    };
  } finally {
    await stopCluster(root);
    rmSync(root, { recursive: true, force: true });
  }
}

const pkiDir = mkdtempSync(join(tmpdir(), 'dstore-bench-tls-pki-'));
try {
  const pki = createTestPki(pkiDir);
  const files: ClusterTls = { cert: pki.peer.certFile, key: pki.peer.keyFile, ca: pki.ca.certFile };
  const samples: Record<Mode, Sample[]> = { plaintext: [], tls: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of ['plaintext', 'tls'] as const)
      samples[mode].push(await measure(mode, files, pki.ca.cert));
  }
  console.log(
    `bench:tls: ${OPS} ops, ${CONCURRENCY} in flight, 100-byte values, 50% reads, 10,000 keys, 1 client connection; ` +
      `balancer + 3 memory nodes, --replication-factor 1; ${ROUNDS} interleaved rounds (median); ${HANDSHAKES} connections per round\n`,
  );
  console.log(
    '| hops | ops/s | p50 ms | p99 ms | CPU µs/op balancer | CPU µs/op 3 nodes | CPU µs/op total | errors | connect+HELLO+close ms | balancer CPU µs/connection |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  const totals: Record<Mode, number> = { plaintext: 0, tls: 0 };
  const throughput: Record<Mode, number> = { plaintext: 0, tls: 0 };
  for (const mode of ['plaintext', 'tls'] as const) {
    const list = samples[mode];
    const pick = (f: (sample: Sample) => number): number => median(list.map(f));
    totals[mode] = pick((s) => s.balancerUsPerOp + s.nodesUsPerOp);
    throughput[mode] = pick((s) => s.report.throughput);
    console.log(
      `| ${mode} | ${Math.round(throughput[mode]).toLocaleString('en-US')} | ${(pick((s) => s.report.latency.p50Us) / 1000).toFixed(2)} | ` +
        `${(pick((s) => s.report.latency.p99Us) / 1000).toFixed(2)} | ${pick((s) => s.balancerUsPerOp).toFixed(1)} | ` +
        `${pick((s) => s.nodesUsPerOp).toFixed(1)} | ${totals[mode].toFixed(1)} | ${list.reduce((sum, s) => sum + errorCount(s.report), 0)} | ` +
        `${pick((s) => s.connectMs).toFixed(2)} | ${Math.round(pick((s) => s.connectCpuUs))} |`,
    );
  }
  console.log(
    `\nTLS/plaintext: ops/s x${(throughput.tls / throughput.plaintext).toFixed(2)}, CPU per op x${(totals.tls / totals.plaintext).toFixed(2)}`,
  );
} finally {
  rmSync(pkiDir, { recursive: true, force: true });
}
