/**
 * `@dstore/hashring`: immutable consistent-hash rings (fast MurmurHash3 vnode
 * ring by default, libketama/twemproxy-compatible ketama, rendezvous).
 *
 * @packageDocumentation
 */

export { inRange, rangeShare } from './diff.js';
export { HashRingError, type HashRingErrorCode } from './errors.js';
export { ketamaPointCount } from './ketama.js';
export { md5 } from './md5.js';
export { murmur3Bytes, murmur3String } from './murmur3.js';
export { type HashRangeLike, RangeIndex } from './range-index.js';
export type {
  Chain,
  ChainRange,
  ReplicaRange,
  ReplicaSetChange,
  ReplicaState,
  ReplicaStates,
} from './replica-sets.js';
export { isExitingState, isLearnerState, isRingChange } from './replica-sets.js';
export { createRing, HashRing } from './ring.js';
export { type RingSpec, ringOfSpec, Topology, type TopologyReplication } from './topology.js';
export {
  DEFAULT_VNODES,
  type RangeMove,
  type RingAlgorithm,
  type RingNode,
  type RingNodeInput,
  type RingOptions,
} from './types.js';
export { unionRingReproduces } from './union.js';
export { vnodePointCount } from './vnode.js';
