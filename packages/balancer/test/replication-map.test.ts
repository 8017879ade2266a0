/**
 * Replication step 1: the cluster map's replication factor and members' replication states, and
 * the chains every party derives from them. Real balancers (in process and the CLI), real map
 * stores (a data dir; etcd in replication-map-etcd.test.ts), fake nodes on real sockets, a real
 * direct-routing client.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HashRing, type ReplicaRange } from '@dstore/hashring';
import { DstoreError, ErrorCode, Op, type RingRequest } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { type RingView, ringView } from '../src/admin-server.js';
import {
  type ClusterMap,
  createClusterMap,
  type MapMember,
  nextMap,
  serializeClusterMap,
} from '../src/cluster-map.js';
import type { BalancerOptions } from '../src/index.js';
import { MAP_FILE } from '../src/map-store.js';
import { directClient } from './direct-client.js';
import {
  BALANCER_CLI,
  type BalancerReady,
  Resources,
  refusal,
  spawnCli,
  startBalancer,
  startFakeNode,
  temporaryDir,
  waitFor,
  waitForNodesUp,
} from './helpers.js';
import { metric } from './replicated-cluster.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const FACTOR_3: BalancerOptions = { replicationFactor: 3 };

/** `/ring` of an in-process balancer, over HTTP. */
async function ringOverHttp(adminPort: number): Promise<RingView> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/ring`);
  return (await response.json()) as RingView;
}

/**
 * The chains `/ring` should show, computed here from the hashring's replica sets alone: ranges
 * grouped by replica list, with a count and a share of the hash space each.
 */
function groupedReplicaSets(ranges: readonly ReplicaRange[]): Map<string, { ranges: number; share: number }> {
  const groups = new Map<string, { ranges: number; share: number }>();
  for (const range of ranges) {
    const length = range.end > range.start ? range.end - range.start : range.end - range.start + 2 ** 32;
    const key = range.replicas.join(',');
    const group = groups.get(key) ?? { ranges: 0, share: 0 };
    group.ranges += 1;
    group.share += length / 2 ** 32;
    groups.set(key, group);
  }
  return groups;
}

function groupedView(view: RingView): Map<string, { ranges: number; share: number }> {
  return new Map(
    view.replication.chains.map((chain) => [
      chain.desired.join(','),
      { ranges: chain.ranges, share: chain.share },
    ]),
  );
}

function expectSameGroups(
  actual: Map<string, { ranges: number; share: number }>,
  expected: Map<string, { ranges: number; share: number }>,
): void {
  expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [key, group] of expected) {
    expect(actual.get(key)?.ranges, key).toBe(group.ranges);
    expect(actual.get(key)?.share, key).toBeCloseTo(group.share, 9);
  }
}

/** A stored map with `ids` in the ring, each with the given replication state. */
function mapWith(states: Record<string, MapMember['replicaState']>, replicationFactor: number): ClusterMap {
  const base = createClusterMap('vnode', replicationFactor);
  const ids = Object.keys(states).sort();
  const members: MapMember[] = ids.map((id, index) => ({
    id,
    identity: '',
    host: '127.0.0.1',
    // Nothing listens there: the members stay down, which /ring and the chains do not depend on.
    port: 1 + index,
    weight: 1,
    state: 'up',
    sinceEpoch: 1,
    replicaState: states[id]!,
  }));
  return nextMap(base, {
    members,
    ring: { algorithm: 'vnode', vnodes: 0, epoch: 1, members: ids.map((id) => ({ id, weight: 1 })) },
  });
}

/** Writes `document` as the map file of a fresh data dir; returns the dir. */
function dataDirWith(document: unknown): string {
  const dir = temporaryDir(resources, 'dstore-repl-map-');
  writeFileSync(join(dir, MAP_FILE), typeof document === 'string' ? document : JSON.stringify(document));
  return dir;
}

describe('replication factor in the cluster map', () => {
  it('accepts a factor above 1 without a flag; --experimental-replication is a deprecated no-op that warns', async () => {
    const two = await startBalancer(resources, { replicationFactor: 2 });
    expect(two.membership.clusterMap.replicationFactor).toBe(2);
    await two.stop();
    // The CLI: the old flag still starts (old scripts), changes nothing (the default 3 holds)
    // and says it is deprecated (cli.test.ts: it is no longer in --help).
    const old = await spawnCli<BalancerReady>(resources, BALANCER_CLI, [
      '--port',
      '0',
      '--admin-port',
      '0',
      '--experimental-replication',
      '--data-dir',
      temporaryDir(resources, 'dstore-repl-cli-'),
      '--log-level',
      'warn',
    ]);
    expect((await ringOverHttp(old.ready.adminPort)).replication.factor).toBe(3);
    await waitFor(() => old.stderr().includes('is deprecated and has no effect'), 'the deprecation warning');
  });

  it('stores the factor in a new map, keeps it across a restart and refuses another one', async () => {
    const dir = temporaryDir(resources, 'dstore-repl-map-');
    const first = await startBalancer(resources, { ...FACTOR_3, dataDir: dir });
    expect(first.membership.clusterMap.replicationFactor).toBe(3);
    const stored = JSON.parse(readFileSync(join(dir, MAP_FILE), 'utf8')) as ClusterMap;
    expect(stored.replicationFactor).toBe(3);
    await first.stop();

    // Without the flag the stored factor holds.
    const again = await startBalancer(resources, { dataDir: dir });
    expect(again.membership.clusterMap.replicationFactor).toBe(3);
    expect((await ringOverHttp(again.address.adminPort)).replication.factor).toBe(3);
    await again.stop();

    for (const options of [{ replicationFactor: 1 }, { replicationFactor: 2 }]) {
      const error = await refusal(startBalancer(resources, { ...options, dataDir: dir }));
      expect(error.code).toBe(ErrorCode.INVALID_ARGUMENT);
      expect(error.message).toMatch(/has replication factor 3, not the configured/);
    }
    // The refused starts left the map as it was.
    expect((JSON.parse(readFileSync(join(dir, MAP_FILE), 'utf8')) as ClusterMap).replicationFactor).toBe(3);

    // A stored factor-1 map keeps 1 without the flag: the default 3 is for new maps only.
    const single = temporaryDir(resources, 'dstore-repl-map-');
    await (await startBalancer(resources, { replicationFactor: 1, dataDir: single })).stop();
    const restarted = await startBalancer(resources, { dataDir: single });
    expect(restarted.membership.clusterMap.replicationFactor).toBe(1);
    const refused = await refusal(startBalancer(resources, { replicationFactor: 3, dataDir: single }));
    expect(refused.message).toMatch(/has replication factor 1, not the configured 3/);
  });

  it('a new map without the flag has factor 3: a 1-member ring is one chain of 1, not under-replicated', async () => {
    const balancer = await startBalancer(resources);
    expect(balancer.membership.clusterMap.replicationFactor).toBe(3);
    const node = await startFakeNode(resources, 'solo');
    await node.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    await waitFor(() => balancer.membership.ring.size === 1, 'the ring has the node');
    await balancer.membership.settled();
    const view = await ringOverHttp(balancer.address.adminPort);
    expect(view.replication).toMatchObject({ factor: 3, active: true, underReplicatedRanges: 0 });
    expect(view.replication.chains).toEqual([
      expect.objectContaining({ desired: ['solo'], serving: ['solo'], underReplicated: false, share: 1 }),
    ]);
    expect(await metric(balancer.address.adminPort, 'dstore_balancer_under_replicated_ranges')).toBe(0);
  });

  it('a new map of a balancer given static nodes and no factor keeps one copy (static nodes get no lease); an explicit factor still applies', async () => {
    const node = await startFakeNode(resources, 'static-1');
    const statics = [{ id: 'static-1', host: '127.0.0.1', port: node.port }];
    const balancer = await startBalancer(resources, { nodes: statics });
    expect(balancer.membership.clusterMap.replicationFactor).toBe(1);
    const replicated = await startBalancer(resources, { nodes: statics, replicationFactor: 3 });
    expect(replicated.membership.clusterMap.replicationFactor).toBe(3);
  });

  it('a new map with --replication-factor 1 has factor 1 and nothing is under-replicated', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    expect(balancer.membership.clusterMap.replicationFactor).toBe(1);
    const node = await startFakeNode(resources, 'solo');
    await node.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    await waitFor(() => balancer.membership.ring.size === 1, 'the ring has the node');
    const view = await ringOverHttp(balancer.address.adminPort);
    expect(view.replication).toEqual({
      factor: 1,
      active: false,
      underReplicatedRanges: 0,
      chains: [
        {
          desired: ['solo'],
          serving: ['solo'],
          path: ['solo'],
          head: 'solo',
          tail: 'solo',
          underReplicated: false,
          changing: false,
          ranges: 1,
          share: 1,
        },
      ],
      sync: null,
      syncKeysTotal: 0,
      syncBytesTotal: 0,
    });
    expect(view.nodes[0]).toMatchObject({ id: 'solo', replicaState: 'up' });
  });

  it('loads a map stored before replication as factor 1 with every member up', async () => {
    const document = JSON.parse(serializeClusterMap(mapWith({ a: 'up', b: 'up', c: 'up' }, 1))) as Record<
      string,
      unknown
    >;
    delete document.replicationFactor;
    for (const member of document.members as Record<string, unknown>[]) delete member.replicaState;
    const dir = dataDirWith(document);
    const balancer = await startBalancer(resources, { dataDir: dir });
    const map = balancer.membership.clusterMap;
    expect(map.replicationFactor).toBe(1);
    expect(map.members.map((member) => member.replicaState)).toEqual(['up', 'up', 'up']);
    const view = ringView(balancer.membership);
    expect(view.replication.underReplicatedRanges).toBe(0);
    expectSameGroups(groupedView(view), groupedReplicaSets(HashRing.from(map.ring.members).replicaSets(1)));
  });

  it('refuses a malformed stored factor, replication state or hash tag with MAP_CORRUPT naming the field', async () => {
    const good = JSON.parse(serializeClusterMap(mapWith({ a: 'up', b: 'up' }, 1))) as Record<string, unknown>;
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...good, replicationFactor: 0 }, /replicationFactor must be an integer from 1 to 7/],
      [{ ...good, replicationFactor: '3' }, /replicationFactor must be an integer/],
      [{ ...good, replicationFactor: 2.5 }, /replicationFactor must be an integer/],
      [
        {
          ...good,
          members: (good.members as Record<string, unknown>[]).map((member, index) =>
            index === 1 ? { ...member, replicaState: 'zombie' } : member,
          ),
        },
        /members\[1\]\.replicaState must be up, syncing, promoting, failed or dead/,
      ],
      // A hash tag the ring would refuse: the ring's own check, named by the map's field.
      ...['{', '\u00e9}', 7].map((hashTag): [Record<string, unknown>, RegExp] => [
        { ...good, ring: { ...(good.ring as Record<string, unknown>), hashTag } },
        /ring\.hashTag: hashTag must be two printable ASCII characters/,
      ]),
      // The switch and install phases of a replicated ring change (step 5): only in a map that
      // replicates.
      ...(['switch', 'install'] as const).map((phase): [Record<string, unknown>, RegExp] => [
        {
          ...good,
          transition: { phase, from: good.ring, reason: '+c', startedAt: '', done: [], keysMoved: 0 },
        },
        /transition\.phase is not a phase/,
      ]),
    ];
    for (const [document, message] of cases) {
      const error = await refusal(startBalancer(resources, { dataDir: dataDirWith(document) }));
      expect(error).toBeInstanceOf(DstoreError);
      expect(error.code).toBe(ErrorCode.MAP_CORRUPT);
      expect(error.message).toMatch(message);
    }
  });
});

describe('chains in /ring, the metrics, RING and the direct map', () => {
  it('/ring groups the ranges by chain exactly as the ring replica sets, and nodes and clients get the factor', async () => {
    const balancer = await startBalancer(resources, FACTOR_3);
    const ids = ['n1', 'n2', 'n3', 'n4'];
    const fakes = [];
    for (const id of ids) {
      const fake = await startFakeNode(resources, id);
      await fake.register(balancer.address.port);
      fakes.push(fake);
    }
    await waitForNodesUp(balancer, ids.length);
    await waitFor(() => balancer.membership.ring.size === ids.length, 'every node in the ring');
    await balancer.membership.settled();

    const view = await ringOverHttp(balancer.address.adminPort);
    expect(view.replication.factor).toBe(3);
    expect(view.replication.underReplicatedRanges).toBe(0);
    // Computed here, independently of the balancer: the same ids and weights, default vnodes.
    const expected = groupedReplicaSets(HashRing.from(ids.map((id) => ({ id }))).replicaSets(3));
    expectSameGroups(groupedView(view), expected);
    for (const chain of view.replication.chains) {
      expect(chain.serving).toEqual(chain.desired);
      expect(chain.head).toBe(chain.desired[0]);
      expect(chain.tail).toBe(chain.desired[2]);
    }
    expect(view.nodes.map((node) => node.replicaState)).toEqual(['up', 'up', 'up', 'up']);
    expect(await metric(balancer.address.adminPort, 'dstore_balancer_under_replicated_ranges')).toBe(0);

    // Every node got a RING with the factor and each member's state.
    for (const fake of fakes) {
      await waitFor(
        () =>
          fake.received.some(
            (request) =>
              request.op === Op.RING &&
              request.nodes.length === ids.length &&
              request.replicationFactor === 3,
          ),
        `RING with the factor at ${fake.id}`,
      );
      const ring = fake.received.filter((request): request is RingRequest => request.op === Op.RING).at(-1)!;
      expect(ring.nodes.map((node) => [node.id, node.replicaState])).toEqual(ids.map((id) => [id, 'up']));
    }

    // A direct-routing client gets them in its map.
    const client = directClient(resources, balancer.address.port);
    await client.connect();
    await waitFor(() => (client.routingStats?.mapEpoch ?? -1) >= 0, 'the client has a map');
    expect(client.routingStats).toMatchObject({ replicationFactor: 3, membersNotUp: 0, nodes: ids.length });

    // The groups are kept per map: a fifth member's map gets its own.
    const fifth = await startFakeNode(resources, 'n5');
    await fifth.register(balancer.address.port);
    await waitForNodesUp(balancer, ids.length + 1);
    await balancer.membership.settled();
    const grown = await ringOverHttp(balancer.address.adminPort);
    const five = [...ids, 'n5'].map((id) => ({ id }));
    expectSameGroups(groupedView(grown), groupedReplicaSets(HashRing.from(five).replicaSets(3)));
  });

  it('a failed member leaves the serving chains: its ranges are under-replicated; so does a dead one until its removal runs', async () => {
    const states = { a: 'up', b: 'failed', c: 'up', d: 'dead', e: 'up' } as const;
    const dir = dataDirWith(serializeClusterMap(mapWith(states, 3)));
    const balancer = await startBalancer(resources, { dataDir: dir });
    const view = await ringOverHttp(balancer.address.adminPort);
    expect(view.replication.factor).toBe(3);
    expect(Object.fromEntries(view.nodes.map((node) => [node.id, node.replicaState]))).toEqual(states);

    // A dead member counts as failed until its ring change runs (replication step 5): the next
    // member clockwise must not serve before it holds the range's keys.
    const all = HashRing.from(['a', 'b', 'c', 'd', 'e'].map((id) => ({ id }))).replicaSets(3);
    const expected = groupedReplicaSets(all);
    expectSameGroups(groupedView(view), expected);
    let under = 0;
    for (const chain of view.replication.chains) {
      expect(chain.serving).toEqual(chain.desired.filter((id) => id !== 'b' && id !== 'd'));
      expect(chain.underReplicated).toBe(chain.desired.includes('b') || chain.desired.includes('d'));
      if (chain.underReplicated) under += chain.ranges;
    }
    const independent = all.filter(
      (range) => range.replicas.includes('b') || range.replicas.includes('d'),
    ).length;
    expect(under).toBe(independent);
    expect(view.replication.underReplicatedRanges).toBe(independent);
    expect(independent).toBeGreaterThan(0);
    expect(await metric(balancer.address.adminPort, 'dstore_balancer_under_replicated_ranges')).toBe(
      independent,
    );
    // A direct client's map carries the states: two members are not up.
    const client = directClient(resources, balancer.address.port);
    await client.connect();
    await waitFor(() => (client.routingStats?.mapEpoch ?? -1) >= 0, 'the client has a map');
    expect(client.routingStats).toMatchObject({ replicationFactor: 3, membersNotUp: 2 });
  });
});
