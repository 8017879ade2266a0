/**
 * Replication step 1 on the etcd map store: the factor is stored in the map in etcd, kept by the
 * next balancer, a different one is refused, a value stored before replication loads as factor 1
 * with every member up, and a malformed one is refused. A real etcd, real in-process balancers.
 */
import { ErrorCode } from '@dstore/protocol';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type ClusterMap, createClusterMap, nextMap, serializeClusterMap } from '../src/cluster-map.js';
import type { Balancer, BalancerOptions } from '../src/index.js';
import { startEtcd, type TestEtcd } from './etcd.js';
import { Resources, refusal, startBalancer, waitFor } from './helpers.js';

let etcd: TestEtcd | undefined;
let raw: Etcd3 | undefined;
const resources = new Resources();
let prefixes = 0;

beforeAll(async () => {
  etcd = await startEtcd();
  raw = new Etcd3({ hosts: etcd.endpoint });
});
afterEach(() => resources.releaseAll());
afterAll(async () => {
  raw?.close();
  await etcd?.stop();
});

/** A key prefix of its own per test. */
function freshPrefix(): string {
  prefixes += 1;
  return `/dstore-repl-test/${process.pid}/${prefixes}`;
}

function onEtcd(prefix: string, extra: BalancerOptions = {}): BalancerOptions {
  return { etcd: { endpoints: [etcd!.endpoint], prefix, leaseTtlSeconds: 2 }, ...extra };
}

/** The map document stored in etcd under `prefix`. */
async function storedMap(prefix: string): Promise<Record<string, unknown> | undefined> {
  const text = await raw!.get(`${prefix}/map`).string();
  return text === null ? undefined : (JSON.parse(text) as Record<string, unknown>);
}

/** Resolves once the balancer coordinates (it created or loaded the map in etcd). */
async function coordinating(balancer: Balancer): Promise<void> {
  await waitFor(() => balancer.membership.isCoordinator, 'the balancer coordinates');
}

/** A map with members a and b, in the ring. */
function twoMembers(): ClusterMap {
  const base = createClusterMap('vnode');
  return nextMap(base, {
    members: ['a', 'b'].map((id, index) => ({
      id,
      identity: '',
      host: '127.0.0.1',
      port: 1 + index,
      weight: 1,
      state: 'up' as const,
      sinceEpoch: 1,
      replicaState: 'up' as const,
    })),
    ring: {
      algorithm: 'vnode',
      vnodes: 0,
      epoch: 1,
      members: [
        { id: 'a', weight: 1 },
        { id: 'b', weight: 1 },
      ],
    },
  });
}

describe('replication factor in the etcd map store', () => {
  it('stores the factor, keeps it for the next balancer and refuses a different one', async () => {
    const prefix = freshPrefix();
    const first = await startBalancer(resources, onEtcd(prefix, { replicationFactor: 3 }));
    await coordinating(first);
    expect((await storedMap(prefix))?.replicationFactor).toBe(3);
    await first.stop();

    const next = await startBalancer(resources, onEtcd(prefix));
    await coordinating(next);
    expect(next.membership.clusterMap.replicationFactor).toBe(3);
    await next.stop();

    const error = await refusal(startBalancer(resources, onEtcd(prefix, { replicationFactor: 1 })));
    expect(error.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(error.message).toMatch(/has replication factor 3, not the configured 1/);
    expect((await storedMap(prefix))?.replicationFactor).toBe(3);
  });

  it('loads a value stored before replication as factor 1 with every member up', async () => {
    const prefix = freshPrefix();
    const document = JSON.parse(serializeClusterMap(twoMembers())) as Record<string, unknown>;
    delete document.replicationFactor;
    for (const member of document.members as Record<string, unknown>[]) delete member.replicaState;
    await raw!.put(`${prefix}/map`).value(JSON.stringify(document));
    const balancer = await startBalancer(resources, onEtcd(prefix));
    const map = balancer.membership.clusterMap;
    expect(map.replicationFactor).toBe(1);
    expect(map.members.map((member) => member.replicaState)).toEqual(['up', 'up']);
  });

  it('refuses a stored value with a malformed replication state with MAP_CORRUPT naming the field', async () => {
    const prefix = freshPrefix();
    const document = JSON.parse(serializeClusterMap(twoMembers())) as {
      members: Record<string, unknown>[];
    };
    document.members[0]!.replicaState = 'zombie';
    await raw!.put(`${prefix}/map`).value(JSON.stringify(document));
    const error = await refusal(startBalancer(resources, onEtcd(prefix)));
    expect(error.code).toBe(ErrorCode.MAP_CORRUPT);
    expect(error.message).toMatch(
      /members\[0\]\.replicaState must be up, syncing, promoting, failed or dead/,
    );
  });
});
