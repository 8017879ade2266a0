/**
 * The default `vnode` placement: each node gets `round(weight * vnodes)`
 * points (at least 1), point `i` being MurmurHash3_x86_32(UTF-8(id), seed=i).
 *
 * A node's points depend only on its own id, weight and `vnodes`, never on the
 * other members, so adding or removing a node moves only that node's keys.
 */

import { type Continuum, ContinuumBuilder, PointSide } from './continuum.js';
import { murmur3Bytes, murmur3String } from './murmur3.js';
import type { RingNode } from './types.js';
import { utf8Bytes } from './utf8.js';

/** Number of ring points a node of `weight` receives. */
export function vnodePointCount(weight: number, vnodes: number): number {
  return Math.max(1, Math.round(weight * vnodes));
}

/**
 * Builds the continuum for `nodes` (already sorted by id). A node with a `previousWeight` (the
 * union ring of a ring change that changes its weight) gets the points of the larger of its two
 * weights: point `i` is the same on both rings, so the first points (as many as the smaller weight
 * gives) are on both, the rest on the ring of the larger weight only (see {@link PointSide}).
 */
export function buildVnodeContinuum(nodes: readonly RingNode[], vnodes: number): Continuum {
  let total = 0;
  let sided = false;
  for (const node of nodes) {
    const next = vnodePointCount(node.weight, vnodes);
    const previous = vnodePointCount(node.previousWeight ?? node.weight, vnodes);
    total += Math.max(next, previous);
    if (next !== previous) sided = true;
  }
  const builder = new ContinuumBuilder(total, sided);
  nodes.forEach((node, owner) => {
    const id = utf8Bytes(node.id);
    const next = vnodePointCount(node.weight, vnodes);
    const previous = vnodePointCount(node.previousWeight ?? node.weight, vnodes);
    const both = Math.min(next, previous);
    const side = next > previous ? PointSide.NEXT : PointSide.PREVIOUS;
    for (let i = 0; i < both; i++) builder.push(murmur3Bytes(id, id.length, i), owner);
    for (let i = both; i < next || i < previous; i++)
      builder.push(murmur3Bytes(id, id.length, i), owner, side);
  });
  return builder.build(nodes.length);
}

/** Key position for `vnode` and `rendezvous`: MurmurHash3_x86_32(UTF-8(key), 0). */
export function murmurPosition(key: string | Uint8Array): number {
  return typeof key === 'string' ? murmur3String(key, 0) : murmur3Bytes(key, key.length, 0);
}
