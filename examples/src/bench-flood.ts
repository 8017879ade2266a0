/**
 * `bench:flood`: the noisy neighbour of issue #12, with real processes. A balancer and one memory
 * node (their own processes); a quiet client in this process does small SETs and GETs (100-byte
 * values, one request at a time) and records each latency, first alone (steady state), then while
 * a flooding client in another process sends 1 MB SETs over several connections, many pipelined on
 * each (the issue: 8 connections x 64 in flight). Printed per build: the quiet client's p50 / p99 /
 * p999 and errors, alone and under the flood, and the ratio of the two p99s (the issue's goal: at
 * most 3x, and no errors).
 *
 * Builds: this workspace, and optionally another checkout's built CLIs and client library
 * (DSTORE_BASELINE_ROOT, e.g. a worktree of the commit before the fairness work), measured
 * alternately in the same run. The flooding and quiet clients load the client library of the
 * build measured, so the handshake matches its servers.
 *
 * Env: DSTORE_BENCH_QUIET_OPS (2000 per phase), DSTORE_BENCH_FLOOD_CONNECTIONS (8),
 * DSTORE_BENCH_FLOOD_PIPELINE (64), DSTORE_BENCH_ROUNDS (1), DSTORE_BASELINE_ROOT (none).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { median } from './bench-load.js';
import { type ClusterState, startCluster, stopCluster } from './cluster.js';

const require = createRequire(import.meta.url);
const QUIET_OPS = Number(process.env.DSTORE_BENCH_QUIET_OPS ?? 2000);
const FLOOD_CONNECTIONS = Number(process.env.DSTORE_BENCH_FLOOD_CONNECTIONS ?? 8);
const FLOOD_PIPELINE = Number(process.env.DSTORE_BENCH_FLOOD_PIPELINE ?? 64);
const ROUNDS = Number(process.env.DSTORE_BENCH_ROUNDS ?? 1);
const FLOOD_VALUE_BYTES = 1_000_000;

/** The slice of @dstore/client both builds have. */
interface Client {
  set(key: string, value: string | Uint8Array): Promise<unknown>;
  get(key: string): Promise<unknown>;
  close(): Promise<void>;
}
type CreateClient = (url: string, options?: Record<string, unknown>) => Client;

interface Phase {
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly errors: number;
  readonly firstError: string | undefined;
}

function clientModule(root: string | undefined): string {
  return root === undefined
    ? pathToFileURL(require.resolve('@dstore/client')).href
    : pathToFileURL(join(resolve(root), 'packages', 'client', 'dist', 'index.js')).href;
}

async function quietPhase(createClient: CreateClient, url: string): Promise<Phase> {
  const client = createClient(url, { commandTimeout: 10_000 });
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const value = 'v'.repeat(100);
  for (let i = 0; i < QUIET_OPS; i++) {
    const key = `quiet-${i % 100}`;
    const started = performance.now();
    try {
      await (i % 2 === 0 ? client.set(key, value) : client.get(key));
      latencies.push(performance.now() - started);
    } catch (error) {
      errors++;
      firstError ??= (error as Error).message;
    }
  }
  await client.close();
  latencies.sort((a, b) => a - b);
  const at = (q: number): number =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), errors, firstError };
}

/** The flooding client: its own process, so that only the servers are shared with the quiet one. */
function startFlood(module: string, url: string): () => Promise<number> {
  const script = `
    const { createClient } = await import(${JSON.stringify(module)});
    const value = new Uint8Array(${FLOOD_VALUE_BYTES}).fill(7);
    let acked = 0;
    let stop = false;
    process.on('message', () => { stop = true; });
    const clients = Array.from({ length: ${FLOOD_CONNECTIONS} }, () => createClient(${JSON.stringify(url)}, { commandTimeout: 60000, maxQueueLength: 100000 }));
    await Promise.all(clients.map(async (client, c) => {
      while (!stop) {
        await Promise.all(Array.from({ length: ${FLOOD_PIPELINE} }, (_, i) =>
          client.set('flood-' + c + '-' + i, value).then(() => { acked++; }, () => undefined)));
      }
      await client.close();
    }));
    process.send(acked, () => process.exit(0));
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  return () =>
    new Promise<number>((done) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.once('message', (acked) => done(Number(acked)));
      child.once('exit', () => {
        clearTimeout(timer);
        done(-1);
      });
      child.send('stop');
    });
}

async function measure(
  label: string,
  root: string | undefined,
): Promise<{ steady: Phase; flood: Phase; floodAcked: number }> {
  const dir = mkdtempSync(join(tmpdir(), `dstore-bench-flood-${label}-`));
  let state: ClusterState | undefined;
  try {
    state = await startCluster({
      root: dir,
      engine: 'memory',
      nodes: 1,
      // Factor 1: the balancer's fairness alone, comparable with builds before replication.
      replicationFactor: 1,
      ...(root === undefined ? {} : { distRoot: root }),
    });
    const url = `dstore://${state.balancer.host}:${state.balancer.port}`;
    const module = clientModule(root);
    const { createClient } = (await import(module)) as { createClient: CreateClient };
    const steady = await quietPhase(createClient, url);
    const stopFlood = startFlood(module, url);
    // Let the flood fill its pipelines before measuring.
    await new Promise((resolveWait) => setTimeout(resolveWait, 2000));
    const flood = await quietPhase(createClient, url);
    const floodAcked = await stopFlood();
    return { steady, flood, floodAcked };
  } finally {
    await stopCluster(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

const ms = (value: number): string => value.toFixed(2);

async function main(): Promise<void> {
  const builds: { label: string; root: string | undefined }[] = [{ label: 'current', root: undefined }];
  if (process.env.DSTORE_BASELINE_ROOT)
    builds.unshift({ label: 'baseline', root: process.env.DSTORE_BASELINE_ROOT });
  console.log(
    `bench:flood: quiet client ${QUIET_OPS} ops per phase (SET/GET, 100 B, 1 in flight); flood ${FLOOD_CONNECTIONS} connections x ${FLOOD_PIPELINE} pipelined ${FLOOD_VALUE_BYTES}-byte SETs; balancer + 1 memory node, --replication-factor 1; ${ROUNDS} round(s)\n`,
  );
  console.log(
    '| build | round | steady p50 / p99 / p999 ms | under flood p50 / p99 / p999 ms | p99 ratio | quiet errors | flood SETs acked |',
  );
  console.log('|---|---:|---|---|---:|---:|---:|');
  const ratios = new Map<string, number[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const build of builds) {
      const { steady, flood, floodAcked } = await measure(build.label, build.root);
      const ratio = flood.p99 / Math.max(steady.p99, 0.001);
      ratios.set(build.label, [...(ratios.get(build.label) ?? []), ratio]);
      const errors = steady.errors + flood.errors;
      console.log(
        `| ${build.label} | ${round} | ${ms(steady.p50)} / ${ms(steady.p99)} / ${ms(steady.p999)} | ${ms(flood.p50)} / ${ms(flood.p99)} / ${ms(flood.p999)} | ${ratio.toFixed(1)}x | ${errors}${flood.firstError ? ` (${flood.firstError.slice(0, 60)})` : ''} | ${floodAcked} |`,
      );
    }
  }
  for (const [label, values] of ratios)
    console.log(`\n${label}: median p99 ratio under flood ${median(values).toFixed(1)}x (goal <= 3x)`);
}

void main();
