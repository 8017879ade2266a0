/**
 * Benchmark: @dstore/hashring vs npm `hashring` in one process.
 * Run: pnpm --filter @dstore/hashring bench (chains() alone, and A/B against another build: bench/chains.ts)
 *
 * Each tinybench iteration performs BATCH lookups over a pre-generated pool of
 * random 16-character keys, because a single ~50 ns call is below timer
 * resolution; the pool (100k keys) is far larger than npm hashring's 5,000
 * entry LRU cache, so its cache never hits.
 */

import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import NpmHashRing from 'hashring';
import { Bench } from 'tinybench';
import { HashRing, type RingAlgorithm } from '../src/index.js';
import { printChains } from './chains.js';

const POOL = 100_000;
const BATCH = 1_000;
const NODE_COUNTS = [3, 100, 1000];

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

const pool = Array.from({ length: POOL }, () => randomBytes(8).toString('hex'));
const serverIds = (n: number) => Array.from({ length: n }, (_, i) => `10.0.${i >> 8}.${i & 255}:6379`);

interface Lookup {
  get(key: string): string;
}

/** A tinybench task doing BATCH lookups, continuing through the pool. */
function batchTask(ring: Lookup): () => void {
  let i = 0;
  let sink = 0;
  return () => {
    for (let j = 0; j < BATCH; j++) {
      sink += ring.get(pool[i]!).length;
      i = i + 1 === POOL ? 0 : i + 1;
    }
    if (sink === -1) console.log(sink);
  };
}

interface Row {
  name: string;
  nsPerLookup: number;
  opsPerSec: number;
}

async function runLookups(): Promise<Map<string, Row>> {
  const bench = new Bench({ time: 400, warmupTime: 150 });
  const rows = new Map<string, Row>();
  for (const n of NODE_COUNTS) {
    const ids = serverIds(n);
    const algos: RingAlgorithm[] = n <= 100 ? ['vnode', 'ketama', 'rendezvous'] : ['vnode', 'ketama'];
    for (const algorithm of algos) {
      const ring = HashRing.from(
        ids.map((id) => ({ id })),
        { algorithm },
      );
      bench.add(`dstore ${algorithm} n=${n}`, batchTask(ring));
    }
    // The cost of a hash tag on keys without one (the tag scan every lookup pays).
    const tagged = HashRing.from(
      ids.map((id) => ({ id })),
      { algorithm: 'vnode', hashTag: '{}' },
    );
    bench.add(`dstore vnode, hashTag {} n=${n}`, batchTask(tagged));
    bench.add(`npm hashring n=${n}`, batchTask(new NpmHashRing(ids)));
  }
  await bench.run();
  for (const task of bench.tasks) {
    const r = task.result;
    if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`);
    const nsPerLookup = (r.latency.mean * 1e6) / BATCH;
    rows.set(task.name, { name: task.name, nsPerLookup, opsPerSec: 1e9 / nsPerLookup });
  }
  return rows;
}

function fmt(x: number, digits = 0): string {
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function printLookups(rows: Map<string, Row>): void {
  console.log('\n### get() of random 16-char keys (100k key pool)\n');
  console.log('| nodes | implementation | ops/s | ns/lookup | dstore / npm |');
  console.log('|---:|---|---:|---:|---:|');
  for (const n of NODE_COUNTS) {
    const npm = rows.get(`npm hashring n=${n}`)!;
    for (const row of rows.values()) {
      if (!row.name.endsWith(`n=${n}`)) continue;
      const label = row.name.replace(` n=${n}`, '');
      const ratio = row === npm ? '1.00x' : `${fmt(npm.nsPerLookup / row.nsPerLookup, 2)}x`;
      console.log(`| ${n} | ${label} | ${fmt(row.opsPerSec)} | ${fmt(row.nsPerLookup, 1)} | ${ratio} |`);
    }
  }
}

function timeBuild(build: () => unknown, runs = 7): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    build();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[runs >> 1]!;
}

function heapDelta(build: () => unknown): { bytes: number; value: unknown } {
  gc();
  const before = process.memoryUsage();
  const value = build();
  gc();
  const after = process.memoryUsage();
  const bytes = after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers);
  return { bytes, value };
}

function printBuildAndMemory(): void {
  const ids = serverIds(1000);
  const nodes = ids.map((id) => ({ id }));
  console.log('\n### Ring build (1000 nodes, median of 7) and memory per ring point\n');
  console.log(
    '| implementation | points | build ms | bytes/point (measured heap) | bytes/point (typed arrays) |',
  );
  console.log('|---|---:|---:|---:|---:|');
  for (const algorithm of ['vnode', 'ketama'] as const) {
    const ms = timeBuild(() => HashRing.from(nodes, { algorithm }));
    const { bytes, value } = heapDelta(() => HashRing.from(nodes, { algorithm }));
    const ring = value as HashRing;
    console.log(
      `| dstore ${algorithm} | ${fmt(ring.pointCount)} | ${fmt(ms, 1)} | ${fmt(bytes / ring.pointCount, 1)} | ${fmt(ring.byteLength / ring.pointCount, 2)} |`,
    );
  }
  const ms = timeBuild(() => new NpmHashRing(ids));
  const { bytes, value } = heapDelta(() => new NpmHashRing(ids));
  const points = (value as { ring: unknown[] }).ring.length;
  console.log(`| npm hashring | ${fmt(points)} | ${fmt(ms, 1)} | ${fmt(bytes / points, 1)} | n/a |`);
}

function maxOverMean(ring: HashRing, keys: readonly string[]): number {
  const counts = new Map<string, number>();
  for (const k of keys) {
    const o = ring.get(k);
    counts.set(o, (counts.get(o) ?? 0) + 1);
  }
  return Math.max(...counts.values()) / (keys.length / ring.size);
}

function printQuality(): void {
  const keys = Array.from({ length: 1_000_000 }, (_, i) => pool[i % POOL]! + (i / POOL).toString(36));
  const ten = serverIds(10).map((id) => ({ id }));
  const npm = new NpmHashRing(ten.map((n) => n.id));
  const npmCounts = new Map<string, number>();
  for (const k of keys) npmCounts.set(npm.get(k), (npmCounts.get(npm.get(k)) ?? 0) + 1);
  console.log('\n### Balance: 1,000,000 random keys over 10 equal nodes (max / mean)\n');
  console.log('| implementation | sampled max/mean | exact max share x 10 |');
  console.log('|---|---:|---:|');
  for (const algorithm of ['vnode', 'ketama', 'rendezvous'] as const) {
    const ring = HashRing.from(ten, { algorithm });
    const exact = Math.max(...ring.shares().values()) * 10;
    console.log(`| dstore ${algorithm} | ${fmt(maxOverMean(ring, keys), 4)} | ${fmt(exact, 4)} |`);
  }
  console.log(`| npm hashring | ${fmt(Math.max(...npmCounts.values()) / 100_000, 4)} | n/a |`);
}

async function main(): Promise<void> {
  const t0 = performance.now();
  console.log(`node ${process.version}, ${process.platform}/${process.arch}`);
  printLookups(await runLookups());
  printBuildAndMemory();
  printQuality();
  await printChains();
  console.log(`\n(total ${fmt((performance.now() - t0) / 1000, 1)} s)`);
}

await main();
