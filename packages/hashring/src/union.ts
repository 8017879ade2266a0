/**
 * Which replicated ring changes a union ring can route (replication step 5): during the change
 * every party walks one ring, the union of the previous and the next one, and derives both rings'
 * preference lists from it (`HashRing.chainOf`). That holds only when each member has, on the
 * union ring, exactly the points it has on each of the two rings.
 */

import { ketamaPointCount } from './ketama.js';
import type { RingAlgorithm, RingNodeInput } from './types.js';

/** Most members entering at once whose subsets {@link unionRingReproduces} checks under ketama. */
const MAX_KETAMA_ENTERING = 8;

/**
 * Whether the union ring of a replicated ring change from `previous` to `next` (both member
 * lists; a member with another weight in each, or one in only one of them) reproduces both
 * rings' preference lists:
 * - `vnode`: always. A member's points depend only on its id and weight, and its points at two
 *   weights are a prefix of one sequence, so the union ring tags the points one weight alone
 *   gives (`previousWeight`).
 * - `rendezvous`: unless a member's weight changes (scores depend only on a member's own id and
 *   weight; there are no points to tag).
 * - `ketama` (twemproxy): a member's point count depends on every member's weight and on the
 *   number of members, so a weight change, or a join or leave that changes any member's count,
 *   moves points of members that do not change. Reproduced only when no weight changes and every
 *   member has the same count on the previous ring, the next ring and each union ring a change
 *   routes on (the union without any subset of the entering members: an entering member that
 *   fails leaves it). Equal weights usually keep 160 points, but not at every member count (24
 *   to 25 members gives 156 each, from float32 rounding twemproxy shares).
 */
export function unionRingReproduces(
  algorithm: RingAlgorithm,
  previous: readonly RingNodeInput[],
  next: readonly RingNodeInput[],
): boolean {
  if (algorithm === 'vnode') return true;
  const before = new Map(previous.map((node) => [node.id, node.weight ?? 1]));
  const after = new Map(next.map((node) => [node.id, node.weight ?? 1]));
  for (const [id, weight] of after) {
    const was = before.get(id);
    if (was !== undefined && was !== weight) return false;
  }
  if (algorithm === 'rendezvous') return true;
  const entering = [...after.keys()].filter((id) => !before.has(id));
  if (entering.length > MAX_KETAMA_ENTERING) return false;
  const expected = new Map<string, number>();
  const counts = (members: ReadonlyMap<string, number>): Map<string, number> => {
    let total = 0;
    for (const weight of members.values()) total += weight;
    return new Map([...members].map(([id, weight]) => [id, ketamaPointCount(weight, total, members.size)]));
  };
  for (const [id, count] of counts(before)) expected.set(id, count);
  for (const [id, count] of counts(after)) {
    if (expected.has(id) && expected.get(id) !== count) return false;
    expected.set(id, count);
  }
  // Every union ring the change may route on: the previous ring's members and a subset of the
  // entering ones (each bit of `subset` keeps one).
  for (let subset = 0; subset < 2 ** entering.length; subset++) {
    const union = new Map(before);
    entering.forEach((id, bit) => {
      if ((subset & (2 ** bit)) !== 0) union.set(id, after.get(id)!);
    });
    for (const [id, count] of counts(union)) if (expected.get(id) !== count) return false;
  }
  return true;
}
