/**
 * The authoritative cluster map under faults, with real processes: a balancer SIGKILLed under load
 * (also in the middle of a migration) restarts from its --data-dir and never answers with another
 * node's data; duplicate ids and removed nodes are refused, also across restarts; nodes holding
 * another cluster's data (a balancer started on a new map) are refused and serve again on their own.
 */

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  bytesToString,
  Connection,
  connectSocket,
  ErrorCode,
  handshake,
  Op,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BALANCER_CLI,
  type BalancerReady,
  clientLink,
  type NodeReady,
  nodeStats,
  Resources,
  ringOf,
  type Spawned,
  sleep,
  spawnCli,
  spawnNode,
  temporaryDir,
  waitFor,
  waitForRing,
} from './helpers.js';
import { finalCheck, History, startLoad } from './history.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());
/** The admin token the balancers run with: node removal by HTTP needs it. */
const ADMIN_TOKEN = 'test-admin-token';

/** A balancer process on `port` (0: any) keeping its map in `dataDir`. */
function spawnBalancer(dataDir: string, port = 0): Promise<Spawned<BalancerReady>> {
  return spawnCli<BalancerReady>(resources, BALANCER_CLI, [
    '--port',
    String(port),
    '--admin-port',
    '0',
    '--replication-factor',
    '1',
    ...(process.env.NO_MAP ? [] : ['--data-dir', dataDir]),
    '--admin-token',
    ADMIN_TOKEN,
    '--heartbeat-timeout',
    '1000',
    '--log-level',
    'warn',
  ]);
}

/** SIGKILLs the balancer and starts it again on the same port and data dir. */
async function restart(balancer: Spawned<BalancerReady>, dataDir: string): Promise<Spawned<BalancerReady>> {
  balancer.child.kill('SIGKILL');
  await balancer.exited;
  return spawnBalancer(dataDir, balancer.ready.port);
}

/** A live process that is no balancer (`sleep`), stopped at release: a pid a crashed balancer's lock may name. */
function stranger(): number {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  resources.add(() => {
    child.kill('SIGKILL');
  });
  return child.pid!;
}

describe('the data dir lock', () => {
  it('is taken over when its pid now names another process, and kept while its owner runs', async () => {
    const dataDir = temporaryDir(resources, 'dstore-lock-');
    const lock = join(dataDir, 'balancer.lock');
    const pid = stranger();
    const start = readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]!.split(' ')[19]!;
    // The pid of a SIGKILLed balancer, reused by another process (after a reboot, in a container):
    // its start time differs, so the lock is stale. It used to keep the balancer from starting.
    writeFileSync(lock, `${pid} 1`);
    const first = await spawnBalancer(dataDir);
    expect(readFileSync(lock, 'utf8')).toMatch(new RegExp(`^${first.child.pid} \\d+$`));
    // A second balancer on the live owner's dir is refused.
    await expect(spawnBalancer(dataDir)).rejects.toThrow(/is in use by another balancer/);
    first.child.kill('SIGKILL');
    await first.exited;
    // Its lock, left by the SIGKILL, is taken over by the next one.
    await spawnBalancer(dataDir);
    // A lock naming a live process that did start then (or a pid alone, as older balancers wrote) holds.
    const other = temporaryDir(resources, 'dstore-lock-');
    for (const text of [`${pid} ${start}`, String(pid)]) {
      writeFileSync(join(other, 'balancer.lock'), text);
      await expect(spawnBalancer(other)).rejects.toThrow(/is in use by another balancer/);
    }
  });
});

describe('the cluster map', () => {
  it('survives three balancer SIGKILLs under load: no nil, stale or wrong read, no acknowledged write lost', async () => {
    const dataDir = temporaryDir(resources, 'dstore-map-');
    let balancer = await spawnBalancer(dataDir);
    const port = balancer.ready.port;
    for (const id of ['node-1', 'node-2', 'node-3']) await spawnNode(resources, id, port);
    await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);

    const history = new History(1500);
    const links = Array.from({ length: 4 }, () => clientLink(resources, port));
    await waitFor(() => links.every((link) => link.isReady), 'clients connected');
    const load = await startLoad(history, links);
    for (let round = 0; round < 3; round++) {
      const okBefore = history.reads + history.writeCount - history.failed;
      await waitFor(
        () => history.reads + history.writeCount - history.failed > okBefore + 2000,
        'load served',
        60_000,
      );
      balancer = await restart(balancer, dataDir);
      // The restarted balancer routes on the stored ring at once, before any node is back.
      const ring = await ringOf(balancer);
      expect(ring.nodes.map((node) => node.id).sort()).toEqual(['node-1', 'node-2', 'node-3']);
      await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);
    }
    const okBefore = history.reads + history.writeCount - history.failed;
    await waitFor(() => history.reads + history.writeCount - history.failed > okBefore + 2000, 'load served');
    await load.stop();
    const final = clientLink(resources, port);
    await waitFor(() => final.isReady, 'final client');
    const lost = await finalCheck(history, final);
    expect(history.nil).toEqual([]);
    expect(history.stale).toEqual([]);
    expect(history.wrong).toEqual([]);
    expect(lost).toEqual([]);
    // The restarts did cost something: requests failed (typed) while the balancer was away.
    expect(history.failed).toBeGreaterThan(0);
  });

  it('resumes a migration cut by a balancer SIGKILL, finishes and purges it, losing nothing', async () => {
    const dataDir = temporaryDir(resources, 'dstore-map-');
    let balancer = await spawnBalancer(dataDir);
    const port = balancer.ready.port;
    // Slow streams, so the SIGKILL lands in the middle of the migration.
    const slow = ['--migration-rate', '400'];
    const nodes: Spawned<NodeReady>[] = [];
    for (const id of ['node-1', 'node-2', 'node-3']) nodes.push(await spawnNode(resources, id, port, slow));
    await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);

    const history = new History(3000);
    const links = Array.from({ length: 3 }, () => clientLink(resources, port));
    await waitFor(() => links.every((link) => link.isReady), 'clients connected');
    const load = await startLoad(history, links);
    nodes.push(await spawnNode(resources, 'node-4', port, slow));
    await waitFor(
      async () => (await ringOf(balancer)).map.transition?.phase === 'stream',
      'migration running',
    );
    await sleep(300);
    balancer = await restart(balancer, dataDir);
    const resumed = await ringOf(balancer);
    expect(resumed.map.transition).not.toBeNull();
    const ring = await waitForRing(balancer, ['node-1', 'node-2', 'node-3', 'node-4']);
    expect(ring.migration.keysMovedTotal).toBeGreaterThan(0);
    await load.stop();
    const final = clientLink(resources, port);
    await waitFor(() => final.isReady, 'final client');
    const lost = await finalCheck(history, final);
    expect(history.anomalies()).toEqual([]);
    expect(lost).toEqual([]);
    // Every node finished the transition: nothing pending, old copies purged.
    for (const node of nodes) expect((await nodeStats(node.ready.port))['migration.pending_ranges']).toBe(0);
    const held = await Promise.all(
      nodes.map(async (node) => Number((await nodeStats(node.ready.port)).keys)),
    );
    expect(held.reduce((sum, keys) => sum + keys, 0)).toBe(history.keys);
  });

  it("refuses a second node under a live id, a copy of a member's data dir, and a removed node, also after a balancer restart", async () => {
    const dataDir = temporaryDir(resources, 'dstore-map-');
    let balancer = await spawnBalancer(dataDir);
    const port = balancer.ready.port;
    const nodes = new Map<string, Spawned<NodeReady>>();
    for (const id of ['node-1', 'node-2', 'node-3']) nodes.set(id, await spawnNode(resources, id, port));
    const before = await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);
    const original = before.nodes.find((node) => node.id === 'node-1')!;

    // Same id, another process (another identity): refused, the original keeps its place.
    const impostor = await spawnNode(resources, 'node-1', port);
    await waitFor(() => impostor.stderr().includes('IDENTITY_CONFLICT'), 'impostor refused');
    const during = await ringOf(balancer);
    expect(during.nodes.find((node) => node.id === 'node-1')).toMatchObject({
      address: original.address,
      identity: original.identity,
      status: 'up',
    });
    // Its operator stops it gracefully: its LEAVE (with its own identity, on the connection whose
    // JOIN was refused) must not take the real node-1 out of the ring.
    impostor.child.kill('SIGTERM');
    await impostor.exited;
    expect(impostor.stderr()).toMatch(/LEAVE failed/);
    const afterLeave = await ringOf(balancer);
    expect(afterLeave.nodes.find((node) => node.id === 'node-1')).toMatchObject({
      address: original.address,
      identity: original.identity,
      status: 'up',
    });
    expect(afterLeave.nodes.map((node) => node.id).sort()).toEqual(['node-1', 'node-2', 'node-3']);

    // Another id on a copy of node-1's data dir (its identity file: a cloned disk): refused, as
    // one node's keys in two places of the ring. It joined as a new member before.
    const copy = temporaryDir(resources, 'dstore-copy-');
    writeFileSync(join(copy, 'node-identity'), `${original.identity}\n`);
    const twin = await spawnNode(resources, 'node-4', port, ['--engine', 'lmdb', '--data-dir', copy]);
    await waitFor(() => twin.stderr().includes('IDENTITY_CONFLICT'), 'twin refused');
    expect(twin.stderr()).toContain(`node identity ${original.identity} belongs to member 'node-1'`);
    expect((await ringOf(balancer)).nodes.map((node) => node.id).sort()).toEqual([
      'node-1',
      'node-2',
      'node-3',
    ]);
    twin.child.kill('SIGKILL');
    await twin.exited;

    // An operator removes node-3, which keeps running and keeps trying to join.
    const removal = await fetch(`http://127.0.0.1:${balancer.ready.adminPort}/nodes/node-3/remove`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(removal.status).toBe(202);
    const removed = await waitForRing(balancer, ['node-1', 'node-2']);
    expect(removed.map.removed.map((member) => member.id)).toEqual(['node-3']);
    const node3 = nodes.get('node-3')!;

    balancer = await restart(balancer, dataDir);
    // node-3 reconnects to the restarted balancer and is refused: it never re-joins.
    await waitFor(
      () => node3.stderr().includes('MEMBER_REMOVED'),
      'node-3 refused after the restart',
      30_000,
    );
    const after = await waitForRing(balancer, ['node-1', 'node-2']);
    expect(after.nodes.map((node) => node.id).sort()).toEqual(['node-1', 'node-2']);
    expect(after.nodes.find((node) => node.id === 'node-1')?.identity).toBe(original.identity);
  });

  it("refuses nodes holding another cluster's data when the balancer starts on a new map, and serves them again on their own", async () => {
    const mapDir = temporaryDir(resources, 'dstore-map-');
    let balancer = await spawnBalancer(mapDir);
    const port = balancer.ready.port;
    const ids = ['node-1', 'node-2', 'node-3'];
    const dataDirs = new Map(ids.map((id) => [id, temporaryDir(resources, `dstore-${id}-`)]));
    const lmdbNode = (id: string) =>
      spawnNode(resources, id, port, ['--engine', 'lmdb', '--data-dir', dataDirs.get(id)!]);
    const nodes = new Map<string, Spawned<NodeReady>>();
    for (const id of ids) nodes.set(id, await lmdbNode(id));
    const own = await waitForRing(balancer, ids);
    const link = clientLink(resources, port);
    await waitFor(() => link.isReady, 'client');
    const keys = Array.from({ length: 200 }, (_, i) => `bound-${i}`);
    for (const key of keys) await link.request({ op: Op.SET, key: toBytes(key), value: toBytes(`v-${key}`) });

    // The operator restarts the balancer on another, empty data dir: a new cluster map. Taking the
    // nodes in would rebuild the cluster from the first to join (the others' keys copied over
    // from it, without them, and purged).
    balancer.child.kill('SIGKILL');
    await balancer.exited;
    const wrong = await spawnBalancer(temporaryDir(resources, 'dstore-other-map-'), port);
    for (const [id, node] of nodes) {
      await waitFor(() => node.stderr().includes('CLUSTER_MISMATCH'), `${id} refused`, 30_000);
    }
    expect(nodes.get('node-1')!.stderr()).toContain(`cluster map generation ${own.map.generation}`);
    // The balancer lists them, with the reason, for /ring and `dstore status`.
    const { refusedJoins } = await ringOf(wrong);
    expect(new Set(refusedJoins.map((refusal) => refusal.node))).toEqual(new Set(ids));
    expect(refusedJoins.every((refusal) => refusal.code === 'CLUSTER_MISMATCH')).toBe(true);
    // Restarted meanwhile, a node still knows its cluster: the binding is kept in its data dir.
    const node2 = nodes.get('node-2')!;
    node2.child.kill('SIGKILL');
    await node2.exited;
    const restarted = await lmdbNode('node-2');
    nodes.set('node-2', restarted);
    await waitFor(
      () => restarted.stderr().includes('CLUSTER_MISMATCH'),
      'node-2 refused after a restart',
      30_000,
    );
    // A node that holds nothing belongs to no cluster yet: it joins the new one.
    const empty = await spawnNode(resources, 'node-9', port);
    const other = await waitForRing(wrong, ['node-9']);
    expect(other.map.generation).not.toBe(own.map.generation);
    await expect(link.request({ op: Op.GET, key: toBytes('probe') })).resolves.toMatchObject({
      op: Op.VALUE,
    });
    // (Still holding nothing, it would join the cluster's own map next, as a new member.)
    empty.child.kill('SIGKILL');
    await empty.exited;

    // Back on the cluster's own map: the nodes join again and every key reads its value.
    wrong.child.kill('SIGKILL');
    await wrong.exited;
    balancer = await spawnBalancer(mapDir, port);
    await waitForRing(balancer, ids);
    await waitFor(() => link.isReady, 'client after the restart');
    for (const key of keys) {
      const answer = await link.request({ op: Op.GET, key: toBytes(key) });
      expect(answer.op === Op.VALUE && answer.value !== null ? bytesToString(answer.value) : null).toBe(
        `v-${key}`,
      );
    }
  }, 60_000);

  it('a node holding data refuses a RING of another cluster (another map generation) and keeps serving on its own', async () => {
    const dataDir = temporaryDir(resources, 'dstore-map-');
    const balancer = await spawnBalancer(dataDir);
    const port = balancer.ready.port;
    const nodes = new Map<string, Spawned<NodeReady>>();
    for (const id of ['node-1', 'node-2', 'node-3']) nodes.set(id, await spawnNode(resources, id, port));
    await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);
    const link = clientLink(resources, port);
    await waitFor(() => link.isReady, 'client');
    const keys = Array.from({ length: 300 }, (_, i) => `fence-${i}`);
    for (const key of keys) await link.request({ op: Op.SET, key: toBytes(key), value: toBytes(`v-${key}`) });
    const ringEpochBefore = (await nodeStats(nodes.get('node-1')!.ready.port))['ring.epoch'];

    // node-1 is handed another cluster's ring (another generation, it alone, at epoch 1), as a
    // second balancer on another map would send it: it must not serve on it.
    const rogue = new Connection(
      await connectSocket({ host: '127.0.0.1', port: nodes.get('node-1')!.ready.port }),
      { requestTimeoutMs: 5000 },
    );
    resources.add(() => rogue.destroy());
    await handshake(rogue, 'balancer');
    const refusal = rogue.request({
      op: Op.RING,
      epoch: 1,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      nodes: [{ id: 'node-1', weight: 1 }],
    });
    await expect(refusal).rejects.toMatchObject({ code: ErrorCode.CLUSTER_MISMATCH });
    expect((await nodeStats(nodes.get('node-1')!.ready.port))['ring.epoch']).toBe(ringEpochBefore);
    for (const key of keys) {
      const answer = await link.request({ op: Op.GET, key: toBytes(key) });
      expect(answer.op === Op.VALUE && answer.value !== null ? bytesToString(answer.value) : null).toBe(
        `v-${key}`,
      );
    }
  });
});
