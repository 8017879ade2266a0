/**
 * Chain replication's forward streams on a node: a member that stops answering holds back the
 * writes of the chains it is in, not those of other chains that share their head and successor.
 * Three in-process nodes and a stand-in member that holds its answers (a paused node, before
 * its failover), on a ring of four with replication factor 3.
 */
import { HashRing } from '@dstore/hashring';
import { type Connection, Op, type RingMember, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeBalancer } from './fake-balancer.js';
import { HeldPeer } from './held-peer.js';
import { Resources, sleep } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const IDS = ['node-a', 'node-b', 'node-c', 'node-x'] as const;
const STALLED = 'node-x';

describe('forward streams (factor 3)', () => {
  it('a member that does not answer holds back only the chains it is in', { timeout: 60_000 }, async () => {
    const balancer = new FakeBalancer(resources);
    balancer.lease = 60_000;
    const balancerPort = await balancer.start();
    const ports = new Map<string, number>();
    const control = new Map<string, Connection>();
    for (const id of ['node-a', 'node-b', 'node-c']) {
      // Forwards never time out here: only the streams' independence can let a write through.
      const node = await resources.node({
        id,
        join: `127.0.0.1:${balancerPort}`,
        heartbeatIntervalMs: 100,
        replicationTimeoutMs: 120_000,
      });
      ports.set(id, node.address.port);
      control.set(id, await resources.peer(node.address.port));
    }
    const stalled = new HeldPeer(resources, STALLED);
    ports.set(STALLED, await stalled.start());
    while (balancer.count(Op.HEARTBEAT) < 6) await sleep(20);
    const ring = HashRing.from(IDS.map((id) => ({ id })));
    // Two chains with the same head and successor, one ending at the stalled member.
    const keyWith = (path: string): string => {
      for (let i = 0; ; i++) if (ring.chainOf(`k-${i}`, 3).path.join() === path) return `k-${i}`;
    };
    const blocked = keyWith('node-a,node-b,node-x');
    const free = keyWith('node-a,node-b,node-c');
    const ringRequest = {
      op: Op.RING,
      epoch: 10,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      replicationFactor: 3,
      nodes: IDS.map(
        (id): RingMember => ({ id, weight: 1, host: '127.0.0.1', port: ports.get(id)!, replicaState: 'up' }),
      ),
    } as const;
    for (const connection of control.values())
      expect(await connection.request(ringRequest)).toMatchObject({ op: Op.OK });
    const head = control.get('node-a')!;
    // A bound on each write far above what one takes (held back, one would wait for the stand-in).
    const set = (key: string, value: string, timeoutMs = 10_000) =>
      head.request({ op: Op.SET, key: toBytes(key), value: toBytes(value), epoch: 10 }, { timeoutMs });
    // In flight until the stalled member answers: node-b's forward of it waits.
    const held = set(blocked, 'held', 120_000);
    while (!stalled.received.some((request) => request.entries.length > 0)) await sleep(10);
    // The other chain's writes go through meanwhile, onto every member of their chain.
    for (let i = 0; i < 20; i++) expect(await set(free, `free-${i}`)).toMatchObject({ op: Op.OK });
    for (const id of ['node-a', 'node-b', 'node-c']) {
      const peer = await resources.peer(ports.get(id)!, 'node');
      const pulled = await peer.request({ op: Op.PULL, key: toBytes(free) });
      expect(pulled.op === Op.ENTRY && new TextDecoder().decode(pulled.entry?.value), id).toBe('free-19');
    }
    stalled.release();
    expect(await held).toMatchObject({ op: Op.OK });
  });
});
