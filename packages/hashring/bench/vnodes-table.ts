/**
 * How `vnodes` trades memory for balance: exact max share x node count over
 * 200 random 10-node sets per setting (uses shares(), so no sampling noise).
 * Run: npx tsx packages/hashring/bench/vnodes-table.ts
 */

import { HashRing } from '../src/index.js';

const SETS = 200;
const NODES = 10;

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

console.log('| vnodes | p50 max/mean | p90 | p99 | sets > 1.05 | bytes per node |');
console.log('|---:|---:|---:|---:|---:|---:|');
for (const vnodes of [160, 256, 512, 1024, 2048, 4096]) {
  const ratios: number[] = [];
  let bytes = 0;
  for (let s = 0; s < SETS; s++) {
    const nodes = Array.from({ length: NODES }, (_, i) => ({ id: `set${s}-node${i}` }));
    const ring = HashRing.from(nodes, { vnodes });
    ratios.push(Math.max(...ring.shares().values()) * NODES);
    bytes = ring.byteLength / NODES;
  }
  ratios.sort((a, b) => a - b);
  const over = ratios.filter((r) => r > 1.05).length / SETS;
  console.log(
    `| ${vnodes} | ${quantile(ratios, 0.5).toFixed(3)} | ${quantile(ratios, 0.9).toFixed(3)} | ${quantile(ratios, 0.99).toFixed(3)} | ${(over * 100).toFixed(1)}% | ${Math.round(bytes).toLocaleString('en-US')} |`,
  );
}
