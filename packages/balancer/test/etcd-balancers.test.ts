/**
 * Several balancers on one etcd are one cluster: each serves clients and follows the map, one
 * elected coordinator writes it; SIGKILLing the coordinator in the middle of a migration lets
 * another finish it, with the per-key history check over the whole run. Real etcd, real processes.
 */
import { PeerLink } from '@dstore/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RingView } from '../src/index.js';
import { startEtcd, type TestEtcd } from './etcd.js';
import {
  BALANCER_CLI,
  type BalancerReady,
  Resources,
  type Spawned,
  spawnCli,
  spawnNode,
  waitFor,
} from './helpers.js';
import { clientLoop, finalCheck, History, type Requester, write } from './history.js';

const resources = new Resources();
let etcd: TestEtcd;
let clusters = 0;

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(() => etcd?.stop());
afterEach(() => resources.releaseAll());

function spawnBalancer(id: string, prefix: string): Promise<Spawned<BalancerReady>> {
  return spawnCli<BalancerReady>(resources, BALANCER_CLI, [
    '--id',
    id,
    '--port',
    '0',
    '--admin-port',
    '0',
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
  ]);
}

async function ringOf(balancer: Spawned<BalancerReady>): Promise<RingView> {
  const response = await fetch(`http://127.0.0.1:${balancer.ready.adminPort}/ring`);
  return (await response.json()) as RingView;
}

/** Waits until `balancer` routes on a ring of exactly `ids`, all up, with no transition. */
async function waitForRing(balancer: Spawned<BalancerReady>, ids: readonly string[]): Promise<RingView> {
  let last: RingView | undefined;
  await waitFor(
    async () => {
      last = await ringOf(balancer);
      const inRing = last.nodes.filter((node) => node.share > 0);
      return (
        last.map.transition === null &&
        inRing.length === ids.length &&
        ids.every((id) => inRing.some((node) => node.id === id && node.status === 'up')) &&
        last.migration.active === false
      );
    },
    `ring of ${ids.join(', ')}`,
    60_000,
  );
  return last!;
}

function clientLink(port: number): PeerLink {
  const link = new PeerLink({
    host: '127.0.0.1',
    port,
    role: 'client',
    connectTimeoutMs: 1000,
    backoff: { initialDelayMs: 20, maxDelayMs: 200 },
    connection: { requestTimeoutMs: 3000 },
  });
  resources.add(() => link.close());
  link.start();
  return link;
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
    const links = [first, second, first, second].map((balancer) => clientLink(balancer.ready.port));
    await waitFor(() => links.every((link) => link.isReady), 'clients connected');
    for (let key = 0; key < history.keys; key += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => write(history, links[i % 4]!, key + i)));
    }
    let stopping = false;
    const load = Promise.all(
      links.map((link, index) => clientLoop(history, link, index, links.length, () => stopping, 5)),
    );
    // node-4 joins through the follower, the coordinator starts streaming, then dies.
    await spawnNode(resources, 'node-4', second.ready.port, slow);
    await waitFor(async () => (await ringOf(second)).map.transition?.phase === 'stream', 'migration running');
    first.child.kill('SIGKILL');
    await first.exited;
    await waitFor(async () => (await ringOf(second)).map.role === 'coordinator', 'bal-2 takes over', 30_000);
    const ring = await waitForRing(second, ['node-1', 'node-2', 'node-3', 'node-4']);
    expect(ring.map.coordinator?.startsWith('bal-2@')).toBe(true);
    stopping = true;
    await load;
    const finalLink = clientLink(second.ready.port);
    await waitFor(() => finalLink.isReady, 'final client');
    const final: Requester = finalLink;
    const lost = await finalCheck(history, final);
    expect(history.anomalies()).toEqual([]);
    expect(lost).toEqual([]);
  });
});
