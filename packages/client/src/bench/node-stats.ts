import type { LatencySummary } from '@dstore/protocol';
import type { StatsRecord } from '../client.js';

/** One storage node's figures, read from the balancer's STATS (`node.<id>.*` entries). */
export interface NodeReport {
  readonly id: string;
  /** `down` when the balancer could not reach the node; otherwise `up`. */
  readonly status: string;
  readonly keys: number | undefined;
  /** The node's own request latency (time inside the node), when it reported it. */
  readonly latency: LatencySummary | undefined;
}

const LATENCY_FIELDS = {
  'latency.count': 'count',
  'latency.mean_us': 'meanUs',
  'latency.p50_us': 'p50Us',
  'latency.p99_us': 'p99Us',
  'latency.p999_us': 'p999Us',
  'latency.max_us': 'maxUs',
} as const satisfies Record<string, keyof LatencySummary>;

const KNOWN_SUFFIXES = [...Object.keys(LATENCY_FIELDS), 'keys', 'status'];

/**
 * Groups the balancer's `node.<id>.<name>` STATS entries by node. Node ids may contain dots, so an
 * entry is matched by its known suffix rather than split on the first dot.
 */
export function nodeReportsFrom(stats: StatsRecord): NodeReport[] {
  const byId = new Map<string, Map<string, number | string>>();
  for (const [name, value] of Object.entries(stats)) {
    if (!name.startsWith('node.')) continue;
    const suffix = KNOWN_SUFFIXES.find((candidate) => name.endsWith(`.${candidate}`));
    if (suffix === undefined) continue;
    const id = name.slice('node.'.length, name.length - suffix.length - 1);
    if (id === '') continue;
    let fields = byId.get(id);
    if (!fields) {
      fields = new Map();
      byId.set(id, fields);
    }
    fields.set(suffix, value);
  }
  return [...byId.entries()]
    .sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }))
    .map(([id, fields]) => ({
      id,
      status: String(fields.get('status') ?? 'up'),
      keys: numberOrUndefined(fields.get('keys')),
      latency: latencyOf(fields),
    }));
}

function latencyOf(fields: Map<string, number | string>): LatencySummary | undefined {
  if (!fields.has('latency.p50_us')) return undefined;
  const summary: Record<string, number> = {};
  for (const [name, key] of Object.entries(LATENCY_FIELDS))
    summary[key] = numberOrUndefined(fields.get(name)) ?? 0;
  return summary as unknown as LatencySummary;
}

function numberOrUndefined(value: number | string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = typeof value === 'number' ? value : Number(value);
  return Number.isFinite(number) ? number : undefined;
}
