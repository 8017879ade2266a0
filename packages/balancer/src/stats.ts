import { DEFAULT_LIMITS, Op, type StatsMap } from '@dstore/protocol';
import type { ClusterNode } from './cluster-node.js';
import type { Membership } from './membership.js';
import type { BalancerMetrics } from './metrics.js';

/** What a balancer STATS answer is built from. */
export interface StatsSources {
  readonly balancerId: string;
  readonly membership: Membership;
  readonly metrics: BalancerMetrics;
  readonly connections: number;
  readonly startedAt: number;
  /** Deadline of each node's STATS, in ms. */
  readonly timeoutMs: number;
  /** Most entries the answer may carry (a client refuses larger maps). */
  readonly maxEntries?: number;
}

/** Fetches one node's STATS, or undefined when it is down or does not answer in time. */
async function fetchNodeStats(node: ClusterNode, timeoutMs: number): Promise<StatsMap | undefined> {
  if (!node.up) return undefined;
  try {
    const answer = await node.forward({ op: Op.STATS }, { timeoutMs });
    return answer.op === Op.STATS_RESULT ? answer.stats : undefined;
  } catch {
    return undefined;
  }
}

/** The nodes' memory limits as Redis names them (RESP `CONFIG GET`): see {@link clusterMemoryConfig}. */
export interface MemoryConfig {
  /** The smallest `--max-memory` of a memory node, in bytes; 0 when none is capped. */
  readonly maxmemory: number;
  /** An eviction policy when any node evicts, else `noeviction`. */
  readonly policy: string;
}

/**
 * The cluster's `maxmemory` and `maxmemory-policy` from the nodes' STATS (`engine`,
 * `storage.limit_bytes`, `storage.eviction_policy`), fetched concurrently within `timeoutMs`: the
 * smallest memory cap, and the first eviction policy any node runs. Clients check the policy to
 * learn whether keys can vanish (job queues warn unless it is `noeviction`): an answer of
 * `noeviction` while a node evicts would be the harmful lie. Nodes that do not answer are left out.
 */
export async function clusterMemoryConfig(membership: Membership, timeoutMs: number): Promise<MemoryConfig> {
  const fetched = await Promise.all([...membership.nodes].map((node) => fetchNodeStats(node, timeoutMs)));
  let maxmemory = 0;
  let policy = 'noeviction';
  for (const stats of fetched) {
    if (stats === undefined) continue;
    const limit = Number(stats['storage.limit_bytes'] ?? 0);
    if (stats.engine === 'memory' && limit > 0 && (maxmemory === 0 || limit < maxmemory)) maxmemory = limit;
    const nodePolicy = stats['storage.eviction_policy'];
    if (policy === 'noeviction' && typeof nodePolicy === 'string' && nodePolicy !== 'noeviction') {
      policy = nodePolicy;
    }
  }
  return { maxmemory, policy };
}

/**
 * The balancer's STATS: its own counters, then every ring node's STATS prefixed `node.<id>.`
 * (fetched concurrently with a short deadline; a node that cannot answer gets
 * `node.<id>.status`="down"). Truncated, with `stats.truncated`=1, at the map-size limit.
 */
export async function collectStats(sources: StatsSources): Promise<Record<string, number | string>> {
  const { membership, metrics } = sources;
  const maxEntries = sources.maxEntries ?? DEFAULT_LIMITS.maxMapEntries;
  const nodes = [...membership.nodes];
  const stats: Record<string, number | string> = {
    role: 'balancer',
    id: sources.balancerId,
    epoch: membership.epoch,
    algorithm: membership.algorithm,
    hash_tag: membership.clusterMap.ring.hashTag ?? 'none',
    nodes: nodes.length,
    'nodes.up': nodes.filter((node) => node.up).length,
    requests: metrics.requests,
    errors: metrics.errors,
    connections: sources.connections,
    uptime_s: Math.floor((Date.now() - sources.startedAt) / 1000),
  };
  const fetched = await Promise.all(nodes.map((node) => fetchNodeStats(node, sources.timeoutMs)));
  let entries = Object.keys(stats).length;
  for (let index = 0; index < nodes.length; index++) {
    const prefix = `node.${nodes[index]!.id}.`;
    const nodeStats = fetched[index];
    const nodeEntries = nodeStats ? Object.entries(nodeStats) : [];
    // Keep one slot for the truncation marker.
    if (entries + 1 + nodeEntries.length + 1 > maxEntries) {
      stats['stats.truncated'] = 1;
      break;
    }
    stats[`${prefix}status`] = nodeStats ? 'up' : 'down';
    for (const [name, value] of nodeEntries) stats[prefix + name] = value;
    entries += 1 + nodeEntries.length;
  }
  return stats;
}
