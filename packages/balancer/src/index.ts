export {
  AdminServer,
  type HealthView,
  healthView,
  type MapView,
  mapView,
  type RingNodeView,
  type RingView,
  ringView,
} from './admin-server.js';
export { Balancer, type BalancerAddress, createBalancer } from './balancer.js';
export type {
  ClusterMap,
  MapMember,
  MapRing,
  MapRingMember,
  MapTransition,
  MemberState,
} from './cluster-map.js';
export { ClusterNode, type NodeAddress, type NodeLinkOptions } from './cluster-node.js';
export {
  type BalancerHashAlgorithm,
  type BalancerOptions,
  DEFAULT_ADMIN_PORT,
  DEFAULT_BALANCER_PORT,
  DEFAULT_ETCD_PREFIX,
  type EtcdSettings,
  loadConfigFile,
  parseNodeAddress,
  type ResolvedBalancerOptions,
  resolveBalancerOptions,
  resolveNodeSpec,
  type StaticNodeSpec,
} from './config.js';
export { EtcdMapStore, type EtcdMapStoreOptions } from './etcd-map-store.js';
export { HealthMonitor, type HealthMonitorEvents } from './health.js';
export { createLogger } from './logger.js';
export { FileMapStore, type MapStore, type MapStoreKind, MemoryMapStore } from './map-store.js';
export {
  type JoinOutcome,
  type JoinSpec,
  Membership,
  type MembershipEvents,
  type MembershipOptions,
} from './membership.js';
export {
  BalancerMetrics,
  type ClusterGaugeSource,
  DURATION_BUCKETS_SECONDS,
  type NodeGaugeSource,
} from './metrics.js';
export { Router, type SingleKeyRequest, withRequestId } from './router.js';
export { collectStats, type StatsSources } from './stats.js';
export { Topology } from './topology.js';

/** Package name, for diagnostics. */
export const PACKAGE_NAME = '@dstore/balancer';
