/**
 * The default `vnode` placement: each node gets `round(weight * vnodes)`
 * points (at least 1), point `i` being MurmurHash3_x86_32(UTF-8(id), seed=i).
 *
 * A node's points depend only on its own id, weight and `vnodes`, never on the
 * other members, so adding or removing a node moves only that node's keys.
 */

import { type Continuum, ContinuumBuilder } from './continuum.js';
import { murmur3Bytes, murmur3String } from './murmur3.js';
import type { RingNode } from './types.js';
import { utf8Bytes } from './utf8.js';

/** Number of ring points a node of `weight` receives. */
export function vnodePointCount(weight: number, vnodes: number): number {
  return Math.max(1, Math.round(weight * vnodes));
}

/** Builds the continuum for `nodes` (already sorted by id). */
export function buildVnodeContinuum(nodes: readonly RingNode[], vnodes: number): Continuum {
  let total = 0;
  for (const node of nodes) total += vnodePointCount(node.weight, vnodes);
  const builder = new ContinuumBuilder(total);
  nodes.forEach((node, owner) => {
    const id = utf8Bytes(node.id);
    const count = vnodePointCount(node.weight, vnodes);
    for (let i = 0; i < count; i++) builder.push(murmur3Bytes(id, id.length, i), owner);
  });
  return builder.build(nodes.length);
}

/** Key position for `vnode` and `rendezvous`: MurmurHash3_x86_32(UTF-8(key), 0). */
export function murmurPosition(key: string | Uint8Array): number {
  return typeof key === 'string' ? murmur3String(key, 0) : murmur3Bytes(key, key.length, 0);
}
