/**
 * Several balancers on one etcd are one cluster: each serves clients and follows the map, one
 * elected coordinator writes it; SIGKILLing the coordinator in the middle of a migration lets
 * another finish it, with the per-key history check over the whole run. Real etcd, real processes.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type TestEtcd } from './etcd.js';
import {
  BALANCER_CLI,
  type BalancerReady,
  balancerArgs,
  clientLink,
  Resources,
  ringOf,
  type Spawned,
  spawnCli,
  spawnNode,
  waitFor,
  waitForRing,
} from './helpers.js';
import { finalCheck, History, type Requester, startLoad } from './history.js';

const resources = new Resources();
let etcd: TestEtcd;
let clusters = 0;

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(() => etcd?.stop());
afterEach(() => resources.releaseAll());

function spawnBalancer(id: string, prefix: string): Promise<Spawned<BalancerReady>> {
  return spawnCli<BalancerReady>(
    resources,
    BALANCER_CLI,
    balancerArgs([
      '--id',
      id,
      '--etcd',
      etcd.endpoint,
      '--etcd-prefix',
      prefix,
      '--etcd-lease-ttl',
      '2',
      '--heartbeat-timeout',
      '1000',
      '--log-level',
      'warn',
    ]),
  );
}

describe('several balancers on etcd', () => {
  it('follow one map; when the coordinator dies mid-migration another finishes it, losing nothing', async () => {
    const prefix = `/dstore/test-${process.pid}-${clusters++}`;
    const first = await spawnBalancer('bal-1', prefix);
    await waitFor(async () => (await ringOf(first)).map.role === 'coordinator', 'bal-1 coordinates');
    const second = await spawnBalancer('bal-2', prefix);
    await waitFor(
      async () => (await ringOf(second)).map.coordinator?.startsWith('bal-1@') === true,
      'bal-2 follows',
    );
    expect((await ringOf(second)).map.role).toBe('follower');

    // Nodes register with either balancer: a follower forwards their JOIN to the coordinator.
    const slow = ['--migration-rate', '400'];
    await spawnNode(resources, 'node-1', first.ready.port, slow);
    await spawnNode(resources, 'node-2', second.ready.port, slow);
    await spawnNode(resources, 'node-3', second.ready.port, slow);
    for (const balancer of [first, second]) await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);

    const history = new History(3000);
    // Clients spread over both balancers; each key has one writer, so it sticks to one balancer.
    const links = [first, second, first, second].map((balancer) =>
      clientLink(resources, balancer.ready.port),
    );
    await waitFor(() => links.every((link) => link.isReady), 'clients connected');
    const load = await startLoad(history, links);
    // node-4 joins through the follower, the coordinator starts streaming, then dies.
    await spawnNode(resources, 'node-4', second.ready.port, slow);
    await waitFor(async () => (await ringOf(second)).map.transition?.phase === 'stream', 'migration running');
    first.child.kill('SIGKILL');
    await first.exited;
    await waitFor(async () => (await ringOf(second)).map.role === 'coordinator', 'bal-2 takes over', 30_000);
    const ring = await waitForRing(second, ['node-1', 'node-2', 'node-3', 'node-4']);
    expect(ring.map.coordinator?.startsWith('bal-2@')).toBe(true);
    await load.stop();
    const finalLink = clientLink(resources, second.ready.port);
    await waitFor(() => finalLink.isReady, 'final client');
    const final: Requester = finalLink;
    const lost = await finalCheck(history, final);
    expect(history.anomalies()).toEqual([]);
    expect(lost).toEqual([]);
  });
});
