/**
 * The migration scenario under continuous load, shared by the CI test (20k+ ops) and
 * scripts/migration-soak.ts (200k+ ops): several clients write and read while a 4th and a 5th
 * node join and one node leaves gracefully; every acknowledged write is recorded and checked.
 *
 * History check, per key: each key has exactly one writer (so its versions are ordered), values
 * carry a version that increases per write. A read must not return a version older than the
 * newest write acknowledged before the read began; at the end every key must read its last
 * acknowledged version (or a later write whose outcome was indeterminate).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import type { Balancer } from '../src/index.js';
import {
  connect,
  type NodeReady,
  type Resources,
  ringSettled,
  type Spawned,
  spawnNode,
  startBalancer,
  waitFor,
  waitForNodesUp,
} from './helpers.js';
import { clientLoop, finalCheck, History, type Requester, write } from './history.js';

/** Options of {@link runMigrationScenario}. */
export interface ScenarioOptions {
  readonly resources: Resources;
  readonly engine: 'memory' | 'lmdb';
  /** Operations (reads + writes, including the initial fill) to run at least. */
  readonly ops: number;
  readonly clients: number;
  readonly keys: number;
  /** With lmdb: SIGKILL and restart every node after the migrations, then check again. */
  readonly restart?: boolean;
  /**
   * Membership rounds: round 1 is join node-4, join node-5, leave node-2; each further round
   * (while fewer than `ops` operations ran) joins a new node and gracefully removes the oldest.
   */
  readonly rounds?: number;
  readonly log?: (line: string) => void;
  /**
   * How each load client talks to the cluster; default a plain connection to the balancer. The
   * direct-routing test passes a `routing: 'direct'` client, so the same scenario and checks apply.
   */
  readonly requester?: (balancerPort: number) => Promise<Requester>;
  /** Fraction of operations that are DELs (default 0). */
  readonly deleteRatio?: number;
  /**
   * With lmdb: after the membership rounds, while the load still runs, SIGKILL one node and
   * restart it on its data dir (at a new port); its keys fail (UNAVAILABLE) meanwhile, never stale.
   */
  readonly restartUnderLoad?: boolean;
}

/** What one join moved. */
export interface JoinFigure {
  readonly node: string;
  readonly keysMoved: number;
  readonly keysBefore: number;
  /** keysMoved / keysBefore. */
  readonly fraction: number;
  /** 1/n for the n nodes after the join. */
  readonly ideal: number;
  /** Every moved range went to the joining node. */
  readonly onlyToNewNode: boolean;
}

/** The outcome of a scenario. */
export interface ScenarioReport {
  readonly ops: number;
  readonly reads: number;
  readonly writes: number;
  readonly failedOps: number;
  readonly indeterminateWrites: number;
  readonly staleReads: readonly string[];
  readonly lostWrites: readonly string[];
  readonly lostAfterRestart: readonly string[];
  readonly joins: readonly JoinFigure[];
  readonly durationMs: number;
  /** Failed operations by error code. */
  readonly failures: ReadonlyMap<string, number>;
}

async function waitForMigration(balancer: Balancer, epochBefore: number, nodes: number): Promise<void> {
  await waitFor(
    () => balancer.epoch > epochBefore && balancer.ring.size === nodes && ringSettled(balancer),
    `ring of ${nodes} settled`,
    120_000,
  );
}

/** Runs the scenario; throws only on harness failures, returns what the checks found. */
export async function runMigrationScenario(options: ScenarioOptions): Promise<ScenarioReport> {
  const { resources, engine, clients, keys } = options;
  const log = options.log ?? (() => undefined);
  const dirs = new Map<string, string>();
  const nodeArgs = (id: string): string[] => {
    if (engine !== 'lmdb') return [];
    let dir = dirs.get(id);
    if (dir === undefined) {
      dir = mkdtempSync(joinPath(tmpdir(), `dstore-mig-${id}-`));
      dirs.set(id, dir);
      const created = dir;
      resources.add(() => rmSync(created, { recursive: true, force: true }));
    }
    return ['--engine', 'lmdb', '--data-dir', dir];
  };
  const balancer = await startBalancer(resources, { replicationFactor: 1 });
  const port = balancer.address.port;
  const nodes = new Map<string, Spawned<NodeReady>>();
  const start = async (id: string) => {
    const node = await spawnNode(resources, id, port, nodeArgs(id));
    // Re-inserted at the end: the map's order is the age order the soak's leaves use.
    nodes.delete(id);
    nodes.set(id, node);
  };
  for (const id of ['node-1', 'node-2', 'node-3']) await start(id);
  await waitForNodesUp(balancer, 3);

  const history = new History(keys);
  const requester = options.requester ?? ((balancerPort: number) => connect(resources, balancerPort));
  const connections = await Promise.all(Array.from({ length: clients }, () => requester(port)));
  const startedAt = performance.now();
  // Fill: every key gets a first version, so each join has keys to move.
  for (let key = 0; key < keys; key += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, keys - key) }, (_, i) => write(history, connections[0]!, key + i)),
    );
  }
  let membershipDone = false;
  const stop = () => membershipDone && history.reads + history.writeCount >= options.ops;
  const load = Promise.all(
    connections.map((client, index) =>
      clientLoop(history, client, index, clients, stop, 0, options.deleteRatio ?? 0),
    ),
  );

  const joins: JoinFigure[] = [];
  const joinNode = async (id: string) => {
    const before = balancer.ring;
    const epochBefore = balancer.epoch;
    await start(id);
    await waitForMigration(balancer, epochBefore, before.size + 1);
    const moves = before.diff(balancer.ring);
    const progress = balancer.membership.migrator.snapshot();
    const figure: JoinFigure = {
      node: id,
      keysMoved: progress.keysMoved,
      keysBefore: keys,
      fraction: progress.keysMoved / keys,
      ideal: 1 / balancer.ring.size,
      onlyToNewNode: moves.every((move) => move.to === id),
    };
    joins.push(figure);
    log(
      `join ${id}: moved ${figure.keysMoved}/${keys} keys (${(figure.fraction * 100).toFixed(1)}%, ideal ${(figure.ideal * 100).toFixed(1)}%) at ${progress.keysPerSecond} keys/s`,
    );
  };
  // Graceful leave (SIGTERM): its ranges move, then it exits 0.
  const leaveNode = async (id: string) => {
    const leaving = nodes.get(id)!;
    const epochBefore = balancer.epoch;
    const size = balancer.ring.size;
    leaving.child.kill('SIGTERM');
    const exitCode = await leaving.exited;
    if (exitCode !== 0) throw new Error(`${id} exited with ${exitCode} after SIGTERM`);
    nodes.delete(id);
    await waitForMigration(balancer, epochBefore, size - 1);
    log(`leave ${id}: moved ${balancer.membership.migrator.snapshot().keysMoved} keys`);
  };
  await joinNode('node-4');
  await joinNode('node-5');
  await leaveNode('node-2');
  // Soak: keep changing membership while the load runs (join a new node, then the oldest leaves).
  for (
    let round = 1;
    (options.rounds ?? 1) > round && history.reads + history.writeCount < options.ops;
    round++
  ) {
    await joinNode(`node-r${round}`);
    await leaveNode([...nodes.keys()][0]!);
  }
  if (options.restartUnderLoad && engine === 'lmdb') {
    const [id, node] = [...nodes][0]!;
    node.child.kill('SIGKILL');
    await node.exited;
    await start(id);
    await waitForNodesUp(balancer, nodes.size);
    log(`restart under load: ${id} SIGKILLed and restarted on its data dir`);
  }
  membershipDone = true;
  await load;
  const durationMs = performance.now() - startedAt;
  const lostWrites = await finalCheck(history, connections[0]!);

  let lostAfterRestart: string[] = [];
  if (options.restart && engine === 'lmdb') {
    for (const [id, node] of [...nodes]) {
      node.child.kill('SIGKILL');
      await node.exited;
      await start(id);
    }
    await waitForNodesUp(balancer, nodes.size);
    lostAfterRestart = await finalCheck(history, connections[0]!);
    log(`restart: every node SIGKILLed and restarted on its data dir; ${lostAfterRestart.length} keys lost`);
  }
  const indeterminateWrites = history.writes.flat().filter((write) => write.state === 'indeterminate').length;
  return {
    ops: history.reads + history.writeCount,
    reads: history.reads,
    writes: history.writeCount,
    failedOps: history.failed,
    indeterminateWrites,
    staleReads: history.anomalies(),
    lostWrites,
    lostAfterRestart,
    joins,
    durationMs,
    failures: history.failures,
  };
}
