/**
 * dstore balancer: membership, consistent-hash routing, forwarding, health, admin HTTP and
 * Prometheus metrics. Start one with {@link createBalancer} or the `dstore-balancer` CLI.
 *
 * This is the whole public API. The router, membership, migrator, node links, health monitor,
 * metrics and map stores are internals: they change without a major release.
 *
 * @packageDocumentation
 */
export type {
  ChainView,
  HealthView,
  MapView,
  ReplicationView,
  RingNodeView,
  RingView,
} from './admin-server.js';
export { Balancer, type BalancerAddress, createBalancer } from './balancer.js';
export {
  type ClusterMap,
  DEFAULT_HASH_TAG,
  DEFAULT_REPLICATION_FACTOR,
  type MapMember,
  type MapRing,
  type MapRingMember,
  type MapTransition,
  type MemberState,
} from './cluster-map.js';
export {
  type BalancerHashAlgorithm,
  type BalancerOptions,
  DEFAULT_ADMIN_PORT,
  DEFAULT_BALANCER_PORT,
  DEFAULT_ETCD_PREFIX,
  type EtcdSettings,
  type ResolvedBalancerOptions,
  type StaticNodeSpec,
} from './config.js';
export type { RefusedJoinView } from './join-refusals.js';
export type { MapStore, MapStoreKind } from './map-store.js';
export type { SyncProgress } from './resync.js';
