/**
 * Rendezvous (highest-random-weight) hashing.
 *
 * Each node scores the key's 32-bit position; the highest score wins. Score =
 * -weight / ln(u) with u = (MurmurHash3(position word, seed = node seed) + 0.5) / 2^32
 * (the "logarithmic method"), which gives each node exactly weight/total of
 * the keys in expectation, with no virtual nodes and no memory per point.
 * Lookups cost O(nodes), so it pays off only for small clusters.
 */

import { murmur3Word } from './murmur3.js';
import type { RingNode } from './types.js';
import { murmurPosition } from './vnode.js';

/** Per-node hashing seeds and weights, indexed like the id-sorted node list. */
export interface RendezvousTable {
  readonly seeds: Int32Array;
  readonly weights: Float64Array;
  /** True when every weight is equal, allowing integer score comparison. */
  readonly uniform: boolean;
}

/** Precomputes seeds (MurmurHash3 of the node id) for `nodes`. */
export function buildRendezvous(nodes: readonly RingNode[]): RendezvousTable {
  const seeds = new Int32Array(nodes.length);
  const weights = new Float64Array(nodes.length);
  nodes.forEach((node, i) => {
    seeds[i] = murmurPosition(node.id);
    weights[i] = node.weight;
  });
  const uniform = nodes.every((n) => n.weight === nodes[0]?.weight);
  return { seeds, weights, uniform };
}

/** Score of node `i` for a key at `position`; higher wins. */
export function rendezvousScore(table: RendezvousTable, i: number, position: number): number {
  const h = murmur3Word(position, table.seeds[i]!);
  if (table.uniform) return h;
  return -table.weights[i]! / Math.log((h + 0.5) / 2 ** 32);
}

/** Index of the winning node; ties go to the lower index (lower id). */
export function rendezvousOwner(table: RendezvousTable, position: number): number {
  let best = 0;
  let bestScore = rendezvousScore(table, 0, position);
  for (let i = 1; i < table.seeds.length; i++) {
    const s = rendezvousScore(table, i, position);
    if (s > bestScore) {
      best = i;
      bestScore = s;
    }
  }
  return best;
}

/** The `n` highest-scoring node indices, best first. */
export function rendezvousTop(table: RendezvousTable, position: number, n: number): number[] {
  const count = table.seeds.length;
  const scores = new Float64Array(count);
  const order: number[] = [];
  for (let i = 0; i < count; i++) {
    scores[i] = rendezvousScore(table, i, position);
    order.push(i);
  }
  order.sort((a, b) => scores[b]! - scores[a]! || a - b);
  return order.slice(0, Math.min(n, count));
}
