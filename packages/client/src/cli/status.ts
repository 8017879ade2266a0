import type { Command } from 'commander';
import { formatTable } from '../bench/report.js';
import { DstoreError, ErrorCode } from '../errors.js';
import {
  ADMIN_TOKEN_FLAG,
  ADMIN_TOKEN_HELP,
  adminHeaders,
  DEFAULT_ADMIN,
  DEFAULT_TIMEOUT_MS,
  parseHostPort,
  positiveInteger,
  printJson,
  printLine,
} from './shared.js';

/** One node as the balancer's `GET /ring` describes it. */
export interface RingNode {
  readonly id: string;
  readonly address: string;
  readonly status: string;
  readonly weight: number;
  /** Fraction of the key space (0..1). */
  readonly share: number;
  readonly keys?: number;
  /** The node's incarnation in the cluster map (balancers with a cluster map). */
  readonly identity?: string;
  /** The member's state in the cluster map: joining, up, leaving or removed. */
  readonly state?: string;
  /** The node's storage from its last heartbeat: ok, or degraded (writes refused) with the reason. */
  readonly storage?: {
    readonly state: string;
    readonly reason: string;
    readonly usedBytes: number;
    readonly availableBytes: number;
  };
}

/** The cluster map as `GET /ring` reports it (balancers with a cluster map). */
export interface ClusterMapView {
  readonly epoch: number;
  readonly cluster: string;
  readonly store: string;
  readonly location: string;
  readonly coordinator?: string;
  readonly ringEpoch: number;
  readonly transition: {
    readonly phase: string;
    readonly reason: string;
    readonly streamsDone: number;
    readonly keysMoved: number;
  } | null;
  readonly removed: readonly { readonly id: string; readonly identity: string }[];
}

/** Key migration progress as `GET /ring` reports it (balancers with key migration). */
export interface MigrationView {
  readonly active: boolean;
  readonly epoch: number;
  readonly pendingRanges: number;
  readonly totalRanges: number;
  readonly keysMoved: number;
  readonly keysPerSecond: number;
  readonly queuedChanges: number;
}

/** The balancer's `GET /ring` answer. */
export interface RingView {
  readonly epoch: number;
  readonly map?: ClusterMapView;
  readonly algorithm?: string;
  readonly nodes: readonly RingNode[];
  readonly migration?: MigrationView;
}

/** The balancer's `GET /health` answer. */
export interface HealthView {
  readonly status: string;
  readonly ready: boolean;
  readonly nodes: number;
  readonly nodesUp: number;
}

interface StatusOptions {
  readonly admin: string;
  readonly timeout: number;
  readonly json?: boolean;
  readonly adminToken?: string;
}

/** Registers `status`: the ring and health from the balancer's admin HTTP port. */
export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      "show the balancer's ring (epoch, each node's address, status, weight, share, keys) and health",
    )
    .option('--admin <host:port>', 'balancer admin HTTP address', DEFAULT_ADMIN)
    .option('--timeout <ms>', 'HTTP deadline in ms', positiveInteger, DEFAULT_TIMEOUT_MS)
    .option('--json', 'print {ring, health} as one JSON object')
    .option(ADMIN_TOKEN_FLAG, ADMIN_TOKEN_HELP)
    .action(async (options: StatusOptions) => {
      const headers = adminHeaders(options.adminToken);
      const { host, port } = parseHostPort(options.admin, 7380);
      const base = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
      const [ring, health] = await Promise.all([
        fetchJson<RingView>(`${base}/ring`, options.timeout, false, headers),
        fetchJson<HealthView>(`${base}/health`, options.timeout, true, headers),
      ]);
      if (options.json) printJson({ ring, health });
      else printLine(formatStatus(ring, health));
    });
}

/** The human-readable status: a summary line, then one row per node. */
export function formatStatus(ring: RingView, health: HealthView): string {
  const summary =
    `epoch ${ring.epoch}  algorithm ${ring.algorithm ?? '-'}  health ${health.status}  ` +
    `ready ${health.ready ? 'yes' : 'no'}  nodes up ${health.nodesUp}/${health.nodes}`;
  const rows: string[][] = [
    [
      'ID',
      'ADDRESS',
      'STATUS',
      'STATE',
      'WEIGHT',
      'SHARE',
      'KEYS',
      'IDENTITY',
      'STORAGE',
      'USED',
      'AVAILABLE',
    ],
  ];
  const degraded: string[] = [];
  for (const node of ring.nodes) {
    const storage = node.storage;
    if (storage !== undefined && storage.state !== 'ok')
      degraded.push(`${node.id} degraded: ${storage.reason}`);
    rows.push([
      node.id,
      node.address,
      node.status,
      node.state ?? '-',
      String(node.weight),
      `${(node.share * 100).toFixed(1)}%`,
      node.keys === undefined ? '-' : String(node.keys),
      node.identity === undefined || node.identity === '' ? '-' : node.identity.slice(0, 12),
      storage?.state ?? '-',
      storage === undefined ? '-' : formatBytes(storage.usedBytes),
      storage === undefined ? '-' : formatBytes(storage.availableBytes),
    ]);
  }
  const table = ring.nodes.length === 0 ? '(no nodes in the ring)' : formatTable(rows);
  const lines = [summary, formatMap(ring.map), formatMigration(ring.migration), table, ...degraded];
  return lines.filter((line) => line !== undefined).join('\n');
}

/** Bytes as a short human figure (binary units): `512 B`, `3.2 MiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The cluster map's lines: where it lives, who writes it, the transition and removed members. */
export function formatMap(map: ClusterMapView | undefined): string | undefined {
  if (map === undefined) return undefined;
  const head =
    `map epoch ${map.epoch}  ring epoch ${map.ringEpoch}  store ${map.store} (${map.location})  ` +
    `coordinator ${map.coordinator ?? '-'}  cluster ${map.cluster}`;
  const transition =
    map.transition === null
      ? undefined
      : `transition ${map.transition.phase}: ${map.transition.reason}  streams done ${map.transition.streamsDone}  keys moved ${map.transition.keysMoved}`;
  const removed =
    map.removed.length === 0 ? undefined : `removed: ${map.removed.map((member) => member.id).join(', ')}`;
  return [head, transition, removed].filter((line) => line !== undefined).join('\n');
}

/** One line about key migration, when the balancer reports one (running or finished). */
export function formatMigration(migration: MigrationView | undefined): string | undefined {
  if (migration === undefined || migration.epoch < 0) return undefined;
  const state = migration.active ? 'running' : 'done';
  return (
    `migration ${state} (epoch ${migration.epoch})  pending ranges ${migration.pendingRanges}/${migration.totalRanges}  ` +
    `keys moved ${migration.keysMoved}  ${migration.keysPerSecond} keys/s  queued changes ${migration.queuedChanges}`
  );
}

/** GETs JSON; `anyStatus` accepts non-2xx answers that still carry JSON (/health says "not ready" that way). */
async function fetchJson<T>(
  url: string,
  timeoutMs: number,
  anyStatus: boolean,
  headers: Record<string, string>,
): Promise<T> {
  let response: Response;
  try {
    response = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    const timedOut = (error as Error).name === 'TimeoutError';
    throw new DstoreError(
      timedOut ? ErrorCode.TIMEOUT : ErrorCode.UNAVAILABLE,
      `cannot fetch ${url}: ${timedOut ? `no answer within ${timeoutMs} ms` : describe(error)}`,
      { cause: error },
    );
  }
  if (response.status === 401 || response.status === 403) {
    throw new DstoreError(ErrorCode.UNAUTHORIZED, `${url} needs the admin token (--admin-token)`);
  }
  if (!response.ok && !anyStatus) {
    throw new DstoreError(ErrorCode.UNAVAILABLE, `${url} answered HTTP ${response.status}`);
  }
  try {
    return (await response.json()) as T;
  } catch (error) {
    throw new DstoreError(ErrorCode.MALFORMED_FRAME, `${url} did not answer JSON`, { cause: error });
  }
}

function describe(error: unknown): string {
  const cause = (error as Error).cause;
  return cause instanceof Error ? cause.message : (error as Error).message;
}
