import { formatBytes } from '@dstore/protocol/internal';
import type { Command } from 'commander';
import { formatTable } from '../bench/report.js';
import { DstoreError, ErrorCode } from '../errors.js';
import {
  ADMIN_FLAGS,
  type AdminEndpoint,
  type AdminOptions,
  adminEndpoint,
  adminRequest,
} from './admin-http.js';
import {
  DEFAULT_ADMIN,
  DEFAULT_TIMEOUT_MS,
  duration,
  ExitCode,
  printJson,
  printLine,
  reportError,
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
  /**
   * The member's replication state: up, syncing, promoting, failed or dead (balancers with
   * replication fields).
   */
  readonly replicaState?: string;
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
  /** A stream the nodes keep refusing (the new owner out of space, say); absent from older balancers. */
  readonly stalled?: {
    readonly from: string;
    readonly to: string;
    readonly code: string;
    readonly message: string;
    readonly attempts: number;
  } | null;
}

/** The map's replication as `GET /ring` reports it (balancers with replication fields). */
export interface ReplicationView {
  /** Copies of each key the map asks for. */
  readonly factor: number;
  /** Whether the copies beyond the first are made (false until the replication protocol lands). */
  readonly active: boolean;
  /** Ranges whose serving chain is shorter than the factor (0 with factor 1). */
  readonly underReplicatedRanges: number;
  readonly chains: readonly {
    readonly desired: readonly string[];
    readonly serving: readonly string[];
    readonly underReplicated: boolean;
    readonly ranges: number;
    readonly share: number;
  }[];
  /** The catch-up of a returning member, null when none runs (absent from older balancers). */
  readonly sync?: {
    readonly node: string;
    readonly phase: string;
    readonly keysStreamed: number;
    readonly keysPerSecond: number;
    /** Absent from balancers before catch-up bytes were reported. */
    readonly bytesStreamed?: number;
    readonly bytesPerSecond?: number;
    readonly rangesLeft: number;
    readonly rangesTotal: number;
    /** Ranges found equal to their tail's, not copied (absent from older balancers). */
    readonly rangesUnchanged?: number;
  } | null;
}

/** The balancer's `GET /ring` answer. */
export interface RingView {
  readonly epoch: number;
  readonly map?: ClusterMapView;
  readonly replication?: ReplicationView;
  readonly algorithm?: string;
  /** The map's hash tag, null for none (absent from balancers that predate hash tags). */
  readonly hashTag?: string | null;
  readonly nodes: readonly RingNode[];
  readonly migration?: MigrationView;
  /** JOINs the balancer refused in the last minute (absent from balancers that predate it). */
  readonly refusedJoins?: readonly RefusedJoin[];
}

/** A JOIN the balancer refused (`/ring`'s `refusedJoins`). */
export interface RefusedJoin {
  readonly node: string;
  readonly address: string;
  readonly code: string;
  readonly message: string;
  readonly count: number;
  readonly lastAt: string;
}

/** The balancer's `GET /health` answer. */
export interface HealthView {
  readonly status: string;
  readonly ready: boolean;
  readonly nodes: number;
  readonly nodesUp: number;
}

interface StatusOptions extends AdminOptions {
  readonly timeout: number;
  readonly json?: boolean;
  /** Interval in ms with `--watch`, or true for the default; undefined without it. */
  readonly watch?: number | true;
}

/** Default `--watch` interval in ms. */
const DEFAULT_WATCH_MS = 2000;

/** Registers `status`: the ring and health from the balancer's admin HTTP port. */
export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      "show the balancer's ring (epoch, each node's address, status, weight, share, keys) and health",
    )
    .option('--admin <host:port>', 'balancer admin HTTP address', DEFAULT_ADMIN)
    .option('--timeout <ms>', 'HTTP deadline (ms, or 2s)', duration, DEFAULT_TIMEOUT_MS)
    .option('--json', 'print {ring, health, healthy} as one JSON object')
    .option(...ADMIN_FLAGS.token)
    .option(...ADMIN_FLAGS.tlsCa)
    .option(
      '--watch [interval]',
      `print the status again every interval (default ${DEFAULT_WATCH_MS} ms) until interrupted`,
      duration,
    )
    .addHelpText(
      'after',
      '\nExit code: 0 when the cluster is fully healthy (every node in the ring up, no migration stalled, no range under-replicated, no node refused in the last minute), 1 when it is not or the balancer cannot be reached, 2 for a usage error. With --watch: that of the last status printed, on SIGINT/SIGTERM.',
    )
    .action(async (options: StatusOptions) => {
      const base = await adminEndpoint(options);
      if (options.watch === undefined) {
        process.exitCode = await printStatus(base, options);
        return;
      }
      await watchStatus(base, options, options.watch === true ? DEFAULT_WATCH_MS : options.watch);
    });
}

/** Fetches and prints the status once; the exit code it means (a failure is reported, exit 1). */
async function printStatus(base: AdminEndpoint, options: StatusOptions): Promise<number> {
  const [ring, health] = await Promise.all([
    fetchJson<RingView>(base, '/ring', options.timeout, false),
    fetchJson<HealthView>(base, '/health', options.timeout, true),
  ]);
  const stalled = ring.migration?.stalled ?? null;
  const underReplicated = ring.replication?.underReplicatedRanges ?? 0;
  const refused = ring.refusedJoins?.length ?? 0;
  // A node whose storage refuses every write (a full disk, its --map-size or --max-memory
  // reached) serves reads only: its keys cannot be written, which an operator must hear.
  const degraded = ring.nodes.filter(
    (node) => node.storage !== undefined && node.storage.state !== 'ok',
  ).length;
  const healthy =
    isHealthy(health) && stalled === null && underReplicated === 0 && refused === 0 && degraded === 0;
  if (options.json) printJson({ ring, health, healthy });
  else {
    const verdict = healthy
      ? 'healthy'
      : stalled !== null
        ? 'NOT HEALTHY: a migration is stalled'
        : refused > 0
          ? `NOT HEALTHY: ${refused} refused ${refused === 1 ? 'node' : 'nodes'} (see above)`
          : health.nodes === 0
            ? 'NOT HEALTHY: the ring has no nodes (start dstore-node with --join <this balancer>)'
            : !isHealthy(health)
              ? 'NOT HEALTHY: not every node is up'
              : degraded > 0
                ? `NOT HEALTHY: ${degraded} ${degraded === 1 ? 'node refuses' : 'nodes refuse'} writes (storage degraded, see above)`
                : `NOT HEALTHY: ${underReplicated} under-replicated ranges`;
    printLine(`${formatStatus(ring, health)}\n${verdict}`);
  }
  return healthy ? ExitCode.OK : ExitCode.FAILURE;
}

/** Fully healthy: the ring has nodes and every one of them is up. */
export function isHealthy(health: HealthView): boolean {
  return health.ready && health.nodes > 0 && health.nodesUp === health.nodes;
}

/**
 * Prints the status every `intervalMs` until SIGINT/SIGTERM, then exits with the code of the last
 * status (an unreachable balancer is printed and counts as a failure; watching goes on).
 */
async function watchStatus(base: AdminEndpoint, options: StatusOptions, intervalMs: number): Promise<void> {
  let stopped = false;
  let wake: (() => void) | undefined;
  const stop = (): void => {
    stopped = true;
    wake?.();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  let code: number = ExitCode.FAILURE;
  while (!stopped) {
    try {
      code = await printStatus(base, options);
    } catch (error) {
      reportError(error);
      code = ExitCode.FAILURE;
    }
    if (!options.json) printLine('');
    if (stopped) break;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, intervalMs);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  process.exitCode = code;
}

/** The human-readable status: a summary line, then one row per node. */
export function formatStatus(ring: RingView, health: HealthView): string {
  const summary =
    `epoch ${ring.epoch}  algorithm ${ring.algorithm ?? '-'}  hash tag ${ring.hashTag ?? 'none'}  health ${health.status}  ` +
    `ready ${health.ready ? 'yes' : 'no'}  nodes up ${health.nodesUp}/${health.nodes}`;
  const rows: string[][] = [
    [
      'ID',
      'ADDRESS',
      'STATUS',
      'STATE',
      'REPLICA',
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
      node.replicaState ?? '-',
      String(node.weight),
      `${(node.share * 100).toFixed(1)}%`,
      keysOf(node),
      node.identity === undefined || node.identity === '' ? '-' : node.identity.slice(0, 12),
      storage?.state ?? '-',
      storage === undefined ? '-' : formatBytes(storage.usedBytes),
      storage === undefined ? '-' : formatBytes(storage.availableBytes),
    ]);
  }
  const table = ring.nodes.length === 0 ? '(no nodes in the ring)' : formatTable(rows);
  const lines = [
    summary,
    formatMap(ring.map),
    formatReplication(ring.replication),
    formatMigration(ring.migration),
    table,
    ...degraded,
    ...(ring.refusedJoins ?? []).map(
      (refusal) =>
        `refused ${refusal.node} (${refusal.address}) ${refusal.code} x${refusal.count}: ${refusal.message}`,
    ),
  ];
  return lines.filter((line) => line !== undefined).join('\n');
}

/**
 * A node's key count, or `-` when this balancer does not know it: the node's heartbeats go to
 * another balancer (a follower, or a coordinator whose node joined elsewhere), so `/ring` says 0
 * with no storage report; printing 0 there looked like every key was gone.
 */
function keysOf(node: RingNode): string {
  if (node.keys === undefined || (node.keys === 0 && node.storage === undefined)) return '-';
  return String(node.keys);
}

/** `, 3.2 MiB` (with `unit` after it), or nothing when a balancer did not report the figure. */
function bytesOf(bytes: number | undefined, unit = ''): string {
  return bytes === undefined ? '' : `, ${formatBytes(bytes)}${unit}`;
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

/**
 * One line about replication: the factor, whether copies are made, the under-replicated ranges
 * (none with factor 1, by definition: a single copy has no replica to restore).
 */
export function formatReplication(replication: ReplicationView | undefined): string | undefined {
  if (replication === undefined) return undefined;
  // A balancer of replication step 1 reports a factor above 1 with no copies made.
  const copies =
    replication.factor === 1
      ? ''
      : replication.active
        ? ' (chain replication)'
        : ' (not replicating yet: every key has ONE copy)';
  const sync = replication.sync;
  // A returning member catching up: its ranges stay under-replicated until it is up again.
  const catchUp =
    sync === undefined || sync === null
      ? ''
      : `\n${sync.phase} ${sync.node}: ${sync.keysStreamed} keys${bytesOf(sync.bytesStreamed)} streamed ` +
        `(${sync.keysPerSecond} keys/s${bytesOf(sync.bytesPerSecond, '/s')}), ` +
        `${sync.rangesLeft} of ${sync.rangesTotal} ranges left` +
        (sync.rangesUnchanged ? `, ${sync.rangesUnchanged} unchanged (not copied)` : '');
  return (
    `replication factor ${replication.factor}${copies}  under-replicated ranges ${replication.underReplicatedRanges}  ` +
    `chains ${replication.chains.length}${catchUp}`
  );
}

/** One line about key migration, when the balancer reports one (running or finished). */
export function formatMigration(migration: MigrationView | undefined): string | undefined {
  if (migration === undefined || migration.epoch < 0) return undefined;
  const state = migration.active ? 'running' : 'done';
  const line =
    `migration ${state} (epoch ${migration.epoch})  pending ranges ${migration.pendingRanges}/${migration.totalRanges}  ` +
    `keys moved ${migration.keysMoved}  ${migration.keysPerSecond} keys/s  queued changes ${migration.queuedChanges}`;
  const stalled = migration.stalled;
  if (stalled === undefined || stalled === null) return line;
  return `${line}\nmigration STALLED: ${stalled.from} -> ${stalled.to} refused ${stalled.attempts} times: ${stalled.code} ${stalled.message}`;
}

/** GETs JSON; `anyStatus` accepts non-2xx answers that still carry JSON (/health says "not ready" that way). */
async function fetchJson<T>(
  base: AdminEndpoint,
  path: string,
  timeoutMs: number,
  anyStatus: boolean,
): Promise<T> {
  const answer = await adminRequest<T>(base, path, { timeoutMs });
  if ((answer.status < 200 || answer.status > 299) && !anyStatus) {
    throw new DstoreError(ErrorCode.UNAVAILABLE, `${base.base}${path} answered HTTP ${answer.status}`);
  }
  return answer.body;
}
