/**
 * libketama / twemproxy-compatible continuum (see twemproxy
 * `src/hashkit/nc_ketama.c`, `ketama_update`).
 *
 * For each server, in float32 arithmetic exactly as the C code:
 *   pct = weight / total_weight
 *   points = floorf(pct * 160 / 4 * server_count + 1e-10) * 4
 * then for h in 0 .. points/4 - 1, digest = MD5("<id>-<h>") yields 4 points:
 * the digest's four 32-bit little-endian words.
 */

import { type Continuum, ContinuumBuilder } from './continuum.js';
import { md5WordsString } from './md5.js';
import type { RingNode } from './types.js';

const POINTS_PER_SERVER = 160;
const POINTS_PER_HASH = 4;
const f32 = Math.fround;

/**
 * Points twemproxy assigns to a server. Uses float32 rounding at each step
 * because twemproxy computes in `float`; doing it in float64 would give a
 * different count for some weight mixes and break compatibility.
 */
export function ketamaPointCount(weight: number, totalWeight: number, serverCount: number): number {
  const pct = f32(f32(weight) / f32(totalWeight));
  let x = f32(pct * POINTS_PER_SERVER);
  x = f32(x / POINTS_PER_HASH);
  x = f32(x * f32(serverCount));
  // `+ 0.0000000001` is a double literal in C: added in double, then cast back.
  const hashes = Math.floor(f32(x + 0.0000000001));
  return hashes * POINTS_PER_HASH;
}

/** Builds the ketama continuum for `nodes` (already sorted by id). */
export function buildKetamaContinuum(nodes: readonly RingNode[]): Continuum {
  let totalWeight = 0;
  for (const node of nodes) totalWeight += node.weight;
  const counts = nodes.map((n) => ketamaPointCount(n.weight, totalWeight, nodes.length));
  const builder = new ContinuumBuilder(counts.reduce((a, b) => a + b, 0));
  const digest = new Uint32Array(4);
  nodes.forEach((node, owner) => {
    const hashes = counts[owner]! / POINTS_PER_HASH;
    for (let h = 0; h < hashes; h++) {
      md5WordsString(`${node.id}-${h}`, digest);
      for (let x = 0; x < POINTS_PER_HASH; x++) builder.push(digest[x]!, owner);
    }
  });
  return builder.build(nodes.length);
}
