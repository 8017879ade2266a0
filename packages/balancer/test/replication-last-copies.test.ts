/**
 * A graceful leave never hands a range to no one. With factor 3 on 3 nodes and one of them
 * failed, the other two hold every acknowledged write written since; once one of them left, the
 * last one is a range's only live copy, and its leave would switch to a ring whose chains hold
 * only the failed member (stale, or empty). Found trying the quick start's cluster by hand: the
 * leave went through, the leaver purged, and the writes made after the failure were gone.
 * Real dstore-node processes on LMDB, an in-process balancer (see docs/design/replication.md,
 * "Leaves that would lose a range").
 */
import { Nemesis } from '@dstore/checker';
import { ErrorCode, Op, PeerLink } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, refusal, waitFor } from './helpers.js';
import { FAILOVER_TIMEOUTS, ReplicatedCluster } from './replicated-cluster.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

const NODES = ['node-1', 'node-2', 'node-3'];
const KEY_COUNT = 30;

async function start(
  engine: 'memory' | 'lmdb' = 'lmdb',
  nodes: readonly string[] = NODES,
  nodeArgs: readonly string[] = [],
): Promise<ReplicatedCluster> {
  nemesis = new Nemesis();
  return ReplicatedCluster.start({
    engine,
    resources,
    nemesis,
    nodes,
    nodeArgs,
    balancer: { ...FAILOVER_TIMEOUTS, adminToken: ADMIN_TOKEN },
  });
}

/** The admin token the balancers run with (an operator's remove by HTTP needs one). */
const ADMIN_TOKEN = 'last-copies-admin';

/** Writes `prefix-0..n` (acknowledged when this resolves) and returns the values written. */
async function writeKeys(
  cluster: ReplicatedCluster,
  prefix: string,
  count = KEY_COUNT,
): Promise<Map<string, string>> {
  const client = cluster.client(20_000);
  const written = new Map<string, string>();
  for (let i = 0; i < count; i += 100) {
    const batch: Record<string, string> = {};
    for (let k = i; k < Math.min(count, i + 100); k++) batch[`${prefix}-${k}`] = `v-${prefix}-${k}`;
    await client.mset(batch);
    for (const [key, value] of Object.entries(batch)) written.set(key, value);
  }
  return written;
}

/** Every key reads back its value, and every serving member of its chain holds it. */
async function expectAllThere(cluster: ReplicatedCluster, written: Map<string, string>): Promise<void> {
  const client = cluster.client(20_000);
  for (const [key, value] of written) {
    expect(await client.getString(key), `${key}: ${await cluster.describeCopies(key)}`).toBe(value);
    await cluster.expectOnChain(key, value);
  }
}

function ringMembers(cluster: ReplicatedCluster): string[] {
  return cluster.balancer.membership.clusterMap.ring.members.map((member) => member.id);
}

/** Kills `node-2` and waits until the balancer failed it over; the writes made after it are on node-1 and node-3 only. */
async function failNode2(cluster: ReplicatedCluster): Promise<void> {
  await cluster.nodes.get('node-2')!.kill();
  await waitFor(() => cluster.stateOf('node-2') === 'failed', 'node-2 marked failed');
}

/** Restarts the stopped members (same data dirs) and waits until every one serves again. */
async function bringBack(cluster: ReplicatedCluster, ids: readonly string[]): Promise<void> {
  for (const id of ids) await cluster.nodes.get(id)!.restart();
  await waitFor(
    () =>
      ids.every((id) => cluster.stateOf(id) === 'up') &&
      cluster.balancer.membership.clusterMap.transition === null,
    `${ids.join(', ')} up again`,
    60_000,
  );
}

describe('a leave that would leave a range with no live copy (factor 3, 3 nodes on LMDB)', () => {
  it('the last live member cannot leave while the others are failed; nothing acknowledged is lost', {
    timeout: 120_000,
  }, async () => {
    const cluster = await start();
    const written = await writeKeys(cluster, 'before');
    await failNode2(cluster);
    for (const [key, value] of await writeKeys(cluster, 'after')) written.set(key, value);

    // node-1 may leave: node-3 keeps a live copy of every range.
    await cluster.nodes.get('node-1')!.terminate();
    await waitFor(() => !ringMembers(cluster).includes('node-1'), 'node-1 out of the ring', 30_000);
    await waitFor(
      () => cluster.balancer.membership.clusterMap.transition === null,
      'the leave finished',
      30_000,
    );

    // node-3 may not: asked by an operator, refused with why; asked by the node itself (SIGTERM),
    // refused too, and the node stops keeping its keys and its place in the ring.
    const refused = await refusal(cluster.balancer.membership.leave('node-3', 'operator'));
    expect(refused.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(refused.message).toMatch(/node-3 cannot leave now: .* node-2, are failed/);
    // Through the admin API (`dstore node remove`): refused at once with why, not "removing".
    const removal = await fetch(
      `http://127.0.0.1:${cluster.balancer.address.adminPort}/nodes/node-3/remove`,
      { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
    );
    expect(removal.status).toBe(400);
    expect(await removal.json()).toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
      error: expect.stringMatching(/node-3 cannot leave now: .* node-2, are failed/),
    });
    await cluster.nodes.get('node-3')!.terminate();
    expect(ringMembers(cluster)).toContain('node-3');
    expect(cluster.balancer.membership.clusterMap.transition).toBeNull();

    // Both come back (node-3 first: node-2 catches up from it); every write is there, on both.
    await bringBack(cluster, ['node-3', 'node-2']);
    await expectAllThere(cluster, written);
  });

  it('a member that fails while the leaver streams, leaving it the last holder: the leaver stays until it returns', {
    timeout: 120_000,
  }, async () => {
    const cluster = await start();
    const membership = cluster.balancer.membership;
    const written = await writeKeys(cluster, 'before');
    await failNode2(cluster);
    for (const [key, value] of await writeKeys(cluster, 'after')) written.set(key, value);

    // node-3 stops answering, then node-1 leaves (allowed: node-3 is up in the map). node-3 is
    // failed while the change streams, which would hand every range to failed members alone:
    // node-1 is kept in the next ring, and the change ends without its leave.
    const node3 = cluster.nodes.get('node-3')!;
    node3.pause();
    const leaving = cluster.nodes.get('node-1')!.terminate();
    await waitFor(() => cluster.stateOf('node-3') === 'failed', 'node-3 marked failed');
    await waitFor(() => membership.clusterMap.transition === null, 'the change ended', 30_000);
    expect(ringMembers(cluster)).toEqual(['node-1', 'node-2', 'node-3']);
    expect(membership.clusterMap.members.find((member) => member.id === 'node-1')?.state).toBe('leaving');

    // node-3 returns and catches up from node-1; then node-1's leave goes on (it was waiting).
    node3.resume();
    await leaving;
    await waitFor(
      () => membership.clusterMap.transition === null && !ringMembers(cluster).includes('node-1'),
      'node-1 left',
      60_000,
    );
    await bringBack(cluster, ['node-2']);
    await expectAllThere(cluster, written);
  });

  it('leaves queued behind a change are kept in the ring when a failure meanwhile makes them the last holders', {
    timeout: 150_000,
  }, async () => {
    // Four members; copies paced so that a weight change streams for a while.
    const cluster = await start('lmdb', [...NODES, 'node-4'], ['--migration-rate', '150']);
    const membership = cluster.balancer.membership;
    const written = await writeKeys(cluster, 'seed', 1500);
    // node-4 asks for weight 2 (a JOIN again, as a node restarted with another --weight does): a
    // ring change whose copies take seconds.
    const link = new PeerLink({ host: '127.0.0.1', port: cluster.port, role: 'node' });
    resources.add(() => link.close());
    link.start();
    await waitFor(() => link.isReady, 'control link ready');
    const node4 = membership.node('node-4')!;
    await link.request({ op: Op.JOIN, nodeId: 'node-4', host: node4.host, port: node4.port, weight: 2 });
    await waitFor(() => membership.clusterMap.transition?.phase === 'stream', 'the weight change streaming');
    // node-4 stops answering: the weight change, whose copies go to it, cannot end before it is
    // failed. Two leaves wait in the map meanwhile: with node-2 and node-4 up in the map, the next
    // ring keeps live copies.
    cluster.nodes.get('node-4')!.pause();
    const leaving1 = membership.leave('node-1', 'operator');
    const leaving3 = membership.leave('node-3', 'operator');
    // Then node-2 fails too: removing both leavers would hand every range to failed members only
    // (whether the leaves start before node-2 is marked failed or after). node-3 goes; node-1
    // stays in the ring, still leaving.
    await cluster.nodes.get('node-2')!.kill();
    await waitFor(
      () => cluster.stateOf('node-2') === 'failed' && cluster.stateOf('node-4') === 'failed',
      'node-2 and node-4 failed',
    );
    expect(await leaving3).toBe(true);
    await waitFor(() => membership.clusterMap.transition === null, 'the changes ended', 60_000);
    expect(ringMembers(cluster)).toEqual(['node-1', 'node-2', 'node-4']);
    expect(membership.clusterMap.members.find((member) => member.id === 'node-1')?.state).toBe('leaving');

    // Once they are back and caught up from node-1, node-1's leave goes on.
    for (const id of ['node-2', 'node-4']) await cluster.nodes.get(id)!.restart();
    expect(await leaving1).toBe(true);
    await waitFor(
      () => membership.clusterMap.transition === null && ringMembers(cluster).join() === 'node-2,node-4',
      'node-1 left',
      60_000,
    );
    await waitFor(
      () => cluster.stateOf('node-2') === 'up' && cluster.stateOf('node-4') === 'up',
      'node-2 and node-4 up',
      60_000,
    );
    await expectAllThere(cluster, written);
  });
});
