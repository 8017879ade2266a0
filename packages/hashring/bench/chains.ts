/**
 * Benchmark: `HashRing.chains(n, states)`, which a balancer recomputes on every ring or map change
 * (synchronously: requests wait meanwhile). Run alone:
 *   npx tsx packages/hashring/bench/chains.ts
 * and against another build of the package in the same process (A/B, interleaved runs):
 *   HASHRING_BASELINE=/path/to/hashring/dist/index.js npx tsx packages/hashring/bench/chains.ts
 * (`HASHRING_AB=blocks`: each build's calls in a row, not alternating: alternating, the garbage
 * of one build's call is collected during the other's next call, and counted there).
 *
 * Figures are CPU time per call (process.cpuUsage, min and median of the runs after 2 warm-up
 * calls), which a shared machine perturbs less than wall time, and the first call of the process
 * (cold code, as a balancer meets it after a quiet while).
 */

import { pathToFileURL } from 'node:url';
import { HashRing, type ReplicaState } from '../src/index.js';

type RingClass = typeof HashRing;

interface Case {
  readonly name: string;
  readonly ring: (Ring: RingClass) => HashRing;
  readonly states?: ReadonlyMap<string, ReplicaState>;
}

const five = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
const members = (count: number) => Array.from({ length: count }, (_, i) => `node-${i + 1}`);

const CASES: readonly Case[] = [
  { name: '5 members, plain', ring: (Ring) => Ring.from(five.map((id) => ({ id }))) },
  {
    name: '5 members, 1 entering',
    ring: (Ring) => Ring.from(five.map((id) => ({ id }))),
    states: new Map([['node-5', 'entering']]),
  },
  {
    name: '5 members, 4 entering',
    ring: (Ring) => Ring.from(five.map((id) => ({ id }))),
    states: new Map(five.slice(1).map((id) => [id, 'entering'])),
  },
  {
    name: '5 members, weight 1 -> 2 (sides)',
    ring: (Ring) => Ring.from(five.map((id, i) => (i === 0 ? { id, weight: 2, previousWeight: 1 } : { id }))),
  },
  {
    name: '5 members, 1 dead, 1 syncing',
    ring: (Ring) => Ring.from(five.map((id) => ({ id }))),
    states: new Map<string, ReplicaState>([
      ['node-2', 'dead'],
      ['node-4', 'syncing'],
    ]),
  },
  { name: '20 members, plain', ring: (Ring) => Ring.from(members(20).map((id) => ({ id }))) },
  {
    name: '100 members, 1 entering',
    ring: (Ring) => Ring.from(members(100).map((id) => ({ id }))),
    states: new Map([['node-100', 'entering']]),
  },
];

const N = 3;

/** `HASHRING_AB=blocks`: each build's calls in a row instead of alternating (see {@link printChains}). */
const BLOCKS = process.env.HASHRING_AB === 'blocks';

/**
 * CPU ms (of the whole process, GC threads included) of one call. No forced GC before it: a
 * forced full GC left background sweeping that ran during the call and was counted.
 */
async function cpuMs(run: () => unknown): Promise<number> {
  // A turn of the event loop between calls, as a balancer's calls have.
  await new Promise((resolve) => setImmediate(resolve));
  const before = process.cpuUsage();
  run();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

function median(values: number[]): number {
  return values.sort((a, b) => a - b)[values.length >> 1]!;
}

/** `min / median` of `values`: the minimum is the least perturbed by other processes' load. */
function spread(values: number[]): string {
  return `${fmt(Math.min(...values), 2)} / ${fmt(median(values), 2)}`;
}

function fmt(x: number, digits: number): string {
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** Prints the chains() table; with `baseline`, that build's figures too, runs interleaved. */
export async function printChains(baselinePath = process.env.HASHRING_BASELINE): Promise<void> {
  const baseline = baselinePath
    ? ((await import(pathToFileURL(baselinePath).href)) as { HashRing: RingClass }).HashRing
    : undefined;
  // The first call of the process, cold code: what a balancer meets after a quiet while.
  const cold = CASES[1]!;
  const coldRings = [cold.ring(HashRing), ...(baseline ? [cold.ring(baseline)] : [])];
  const first: number[] = [];
  for (const ring of coldRings) first.push(await cpuMs(() => ring.chains(N, cold.states)));
  console.log(`\n### chains(${N}, states) at the default 4,096 points per member (CPU ms per call)\n`);
  console.log(
    `First call of the process (${cold.name}): ${fmt(first[0]!, 1)} ms` +
      (baseline ? `, baseline ${fmt(first[1]!, 1)} ms` : '') +
      '\n',
  );
  if (baseline) {
    console.log('| ring | ranges | baseline min / median | min / median | speed-up (min, median) |');
    console.log('|---|---:|---:|---:|---:|');
  } else {
    console.log('| ring | ranges | min / median |');
    console.log('|---|---:|---:|');
  }
  for (const c of CASES) {
    const rings = [c.ring(HashRing), ...(baseline ? [c.ring(baseline)] : [])];
    for (const ring of rings) for (let i = 0; i < 2; i++) ring.chains(N, c.states);
    const runs: number[][] = rings.map(() => []);
    const deadline = performance.now() + 5000;
    if (BLOCKS) {
      // Each build's calls in a row: the other build's garbage is not collected meanwhile.
      for (const [k, ring] of rings.entries()) {
        const until = performance.now() + 2500;
        for (let r = 0; r < 30 && (r < 5 || performance.now() < until); r++) {
          runs[k]!.push(await cpuMs(() => ring.chains(N, c.states)));
        }
      }
    } else {
      // Interleaved so both builds see the same machine load; at least 5 runs, at most 30.
      for (let r = 0; r < 30 && (r < 5 || performance.now() < deadline); r++) {
        for (const [k, ring] of rings.entries()) runs[k]!.push(await cpuMs(() => ring.chains(N, c.states)));
      }
    }
    const ranges = rings[0]!.chains(N, c.states).length;
    const [current, base] = runs;
    if (base !== undefined) {
      const byMin = Math.min(...base) / Math.min(...current!);
      const byMedian = median(base) / median(current!);
      console.log(
        `| ${c.name} | ${fmt(ranges, 0)} | ${spread(base)} | ${spread(current!)} | ${fmt(byMin, 1)}x, ${fmt(byMedian, 1)}x |`,
      );
    } else {
      console.log(`| ${c.name} | ${fmt(ranges, 0)} | ${spread(current!)} |`);
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(`node ${process.version}, ${process.platform}/${process.arch}`);
  await printChains();
}
