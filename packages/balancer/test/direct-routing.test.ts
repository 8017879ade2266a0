/**
 * Direct routing with real processes: clients created with `routing: 'direct'` fetch the cluster
 * map from the balancer, are pushed its changes and send each command straight to the key's node.
 * The migration scenario under load (two joins, a graceful leave, every node SIGKILLed and
 * restarted on its data dir at new ports) runs with such clients and the same per-key history
 * check: nothing lost, nothing stale, redirects counted and bounded. Then the rules that keep a
 * smart client correct, one by one: a stale map is redirected and converges, a removed node
 * refuses direct requests, unreachable nodes fall back to the balancer.
 */
import { type DstoreClient, ErrorCode } from '@dstore/client';
import { type ClusterMapSnapshot, DstoreError, Op, PeerLink, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { asRequester, directClient as newDirectClient, waitForLinks, withMap } from './direct-client.js';
import { Resources, spawnNode, startBalancer, waitFor, waitForNodesUp } from './helpers.js';
import { runMigrationScenario } from './migration-load.js';

const resources = new Resources();
const directClient = (port: number, extra: Parameters<typeof newDirectClient>[2] = {}): DstoreClient =>
  newDirectClient(resources, port, extra);
/** Keys of the load scenario. */
const LOAD_KEYS = 1500;
afterEach(() => resources.releaseAll());

describe('direct routing under membership changes', () => {
  it('loses no acknowledged write and serves no stale read across joins, a leave and restarts', async () => {
    const clients: DstoreClient[] = [];
    const report = await runMigrationScenario({
      resources,
      engine: 'lmdb',
      ops: 12_000,
      clients: 6,
      keys: LOAD_KEYS,
      restart: true,
      restartUnderLoad: true,
      deleteRatio: 0.1,
      requester: async (port) => {
        const client = await withMap(directClient(port));
        clients.push(client);
        return asRequester(client, LOAD_KEYS);
      },
      log: (line) => console.log(`[direct] ${line}`),
    });
    const totals = { direct: 0, viaBalancer: 0, moved: 0, asked: 0, pushes: 0, maxRedirects: 0 };
    for (const client of clients) {
      const stats = client.routingStats!;
      totals.direct += stats.direct;
      totals.viaBalancer += stats.viaBalancer;
      totals.moved += stats.moved;
      totals.asked += stats.asked;
      totals.pushes += stats.pushes;
      totals.maxRedirects = Math.max(totals.maxRedirects, stats.maxRedirectsPerRequest);
    }
    console.log(
      `[direct] ${report.ops} ops, ${report.failedOps} failed (${JSON.stringify([...report.failures])}), ` +
        `routing ${JSON.stringify(totals)}`,
    );
    expect(report.staleReads).toEqual([]);
    expect(report.lostWrites).toEqual([]);
    expect(report.lostAfterRestart).toEqual([]);
    // The load really went to the nodes, and the map changes were pushed and redirected.
    expect(totals.direct).toBeGreaterThan(report.ops / 2);
    expect(totals.pushes).toBeGreaterThan(0);
    expect(totals.moved + totals.asked).toBeGreaterThan(0);
    expect(totals.maxRedirects).toBeLessThanOrEqual(5);
    expect(report.failures.get(ErrorCode.TOO_MANY_REDIRECTS) ?? 0).toBe(0);
  }, 240_000);
});

describe('direct routing rules', () => {
  it('redirects a client with a stale map (older epoch) and it converges', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    for (const id of ['node-1', 'node-2']) await spawnNode(resources, id, port);
    await waitForNodesUp(balancer, 2);
    const client = await withMap(directClient(port));
    const staleEpoch = client.routingStats!.mapEpoch;
    await client.mset(Array.from({ length: 200 }, (_, i) => [`stale:${i}`, `v${i}`] as const));
    // Keep a copy of the map as it is now, then change the ring.
    const old = await fetchMap(port);
    await spawnNode(resources, 'node-3', port);
    await waitFor(
      () => balancer.ring.size === 3 && balancer.membership.topology.moves === undefined,
      'node-3 joined and its keys moved',
      60_000,
    );
    await waitFor(() => client.routingStats!.mapEpoch > staleEpoch, 'the new map was pushed');
    // A second client that is told the old map only: its pushes are ignored by sending it the old one.
    const stale = directClient(port, { mapRefreshInterval: 3_600_000 });
    await withMap(stale);
    const movedBefore = stale.routingStats!.moved;
    forceMap(stale, old);
    expect(stale.routingStats!.mapEpoch).toBe(old.epoch);
    await waitForLinks(stale);
    const refreshesBefore = stale.routingStats!.refreshes;
    // 200 reads at once on the stale map: every one is redirected, all share ONE map refresh.
    const values = await Promise.all(Array.from({ length: 200 }, (_, i) => stale.getString(`stale:${i}`)));
    expect(values).toEqual(Array.from({ length: 200 }, (_, i) => `v${i}`));
    expect(stale.routingStats!.moved).toBeGreaterThan(movedBefore);
    // Converged: the refresh a MOVED started (at once, or after the 250 ms rate limit, the
    // commands meanwhile going through the balancer) brought the current map.
    await waitFor(
      () => stale.routingStats!.mapEpoch === client.routingStats!.mapEpoch,
      'the stale client converged on the current map',
    );
    const after = stale.routingStats!;
    expect(after.refreshes).toBe(refreshesBefore + 1);
    expect(after.maxRedirectsPerRequest).toBeLessThanOrEqual(5);
    // Once its connection to the node the old map did not have is up, everything goes direct.
    await waitForLinks(stale);
    const direct = stale.routingStats!.direct;
    for (let i = 0; i < 50; i++) expect(await stale.getString(`stale:${i}`)).toBe(`v${i}`);
    expect(stale.routingStats!.direct).toBe(direct + 50);

    // The bound: with no redirect allowed, the first MOVED fails the command, naming the redirect.
    const bounded = directClient(port, { maxRedirections: 0, mapRefreshInterval: 3_600_000 });
    await withMap(bounded);
    forceMap(bounded, old);
    await waitForLinks(bounded);
    const failure = await bounded.set('stale:0', 'never').catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(DstoreError);
    expect((failure as DstoreError).code).toBe(ErrorCode.TOO_MANY_REDIRECTS);
    expect((failure as DstoreError).notExecuted).toBe(true);
    expect((failure as DstoreError).message).toMatch(/last: MOVED from node-\d to node-\d .* at epoch \d+/);
    expect(await client.getString('stale:0')).toBe('v0');
  }, 90_000);

  it('splits MGET and MSET per node and sends each part straight to its node', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    for (const id of ['node-1', 'node-2', 'node-3']) await spawnNode(resources, id, port);
    await waitForNodesUp(balancer, 3);
    const client = await withMap(directClient(port));
    const entries = Array.from({ length: 120 }, (_, i) => [`batch:${i}`, `v${i}`] as const);
    await client.mset(entries);
    const afterMset = client.routingStats!;
    // One part per node, none through the balancer.
    expect(afterMset.direct).toBe(3);
    expect(afterMset.viaBalancer).toBe(0);
    const keys = [...entries.map(([key]) => key), 'batch:missing'];
    const values = await client.mget(keys);
    expect(values.map((value) => (value === null ? null : Buffer.from(value).toString()))).toEqual([
      ...entries.map(([, value]) => value),
      null,
    ]);
    expect(client.routingStats!.direct).toBe(6);
    expect(client.routingStats!.viaBalancer).toBe(0);
  }, 60_000);

  it('a node that was removed refuses direct requests', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    const nodes = [];
    for (const id of ['node-1', 'node-2', 'node-3']) nodes.push(await spawnNode(resources, id, port));
    await waitForNodesUp(balancer, 3);
    const client = await withMap(directClient(port));
    await client.set('removed:key', 'v');
    const before = await fetchMap(port);
    // The operator removes node-3: its keys move, it leaves the ring and the map (it keeps running).
    const removed = nodes[2]!;
    expect(await balancer.membership.leave('node-3', 'operator')).toBe(true);
    await waitFor(() => balancer.ring.size === 2, 'node-3 out of the ring', 60_000);
    const removedAddress = before.nodes.find((node) => node.id === 'node-3')!;
    const link = new PeerLink({ host: removedAddress.host!, port: removedAddress.port!, role: 'client' });
    resources.add(() => link.close());
    link.start();
    await link.whenReady(5000);
    expect(link.isReady).toBe(true);
    // Routed on the map in which it owned keys: refused with MOVED naming another node, never served.
    let refused = 0;
    for (let i = 0; i < 100; i++) {
      const key = toBytes(`removed:${i}`);
      const answer = await link.request({ op: Op.SET, key, value: toBytes('x'), epoch: before.epoch });
      expect(answer.op).toBe(Op.MOVED);
      if (answer.op === Op.MOVED) {
        expect(answer.nodeId).not.toBe('node-3');
        expect(answer.epoch).toBeGreaterThan(before.epoch);
        refused++;
      }
    }
    expect(refused).toBe(100);
    expect(removed.child.exitCode).toBe(null);
    expect(await client.getString('removed:key')).toBe('v');
  }, 90_000);

  it('nodes the client cannot reach: it says so and the balancer route keeps working', async () => {
    // The balancer reaches the nodes (as a cluster peer); the client cannot: the nodes do not
    // accept its credentials (as with addresses it cannot route to, every attempt fails).
    const balancer = await startBalancer(resources, { replicationFactor: 1, token: 'balancer-users-token' });
    const port = balancer.address.port;
    for (const id of ['node-1', 'node-2']) {
      await spawnNode(resources, id, port, ['--token', 'another-token-for-nodes']);
    }
    await waitForNodesUp(balancer, 2);
    const unreachable: string[] = [];
    const client = directClient(port, { token: 'balancer-users-token' });
    client.on('nodeUnreachable', (nodeId) => unreachable.push(nodeId));
    await waitFor(() => (client.routingStats?.mapEpoch ?? -1) >= 0, 'the client has a cluster map');
    await waitFor(() => unreachable.length === 2, 'both nodes reported unreachable');
    expect(new Set(unreachable)).toEqual(new Set(['node-1', 'node-2']));
    await client.set('through:balancer', 'v');
    expect(await client.getString('through:balancer')).toBe('v');
    expect(await client.mget(['through:balancer', 'missing'])).toEqual([toBytes('v'), null]);
    await client.mset({ a: '1', b: '2' });
    expect(await client.del('a')).toBe(true);
    const stats = client.routingStats!;
    expect(stats.direct).toBe(0);
    expect(stats.viaBalancer).toBeGreaterThanOrEqual(5);
  }, 60_000);

  it('its balancer away: the client keeps routing on its last map (factor 1: the nodes need no lease)', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    for (const id of ['node-1', 'node-2']) await spawnNode(resources, id, port);
    await waitForNodesUp(balancer, 2);
    const client = await withMap(directClient(port, { maxRetriesPerRequest: 0 }));
    await client.mset({ a: '1', b: '2', c: '3' });
    await balancer.stop();
    // Before: every command waited in the offline queue for the balancer, then failed UNAVAILABLE.
    const before = client.routingStats!.direct;
    expect(await client.mget(['a', 'b', 'c'])).toEqual([toBytes('1'), toBytes('2'), toBytes('3')]);
    await client.set('during', 'away');
    expect(await client.getString('during')).toBe('away');
    expect(await client.del('a')).toBe(true);
    expect(client.routingStats!.direct).toBeGreaterThan(before);
    expect(client.routingStats!.viaBalancer).toBe(0);
  }, 60_000);

  it('a node down for everyone: the client answers what the balancer answers (UNAVAILABLE)', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    // Advertises an address nobody listens on: down for the balancer and the client alike.
    await spawnNode(resources, 'node-1', port, ['--advertise-host', '127.0.0.2']);
    await waitFor(() => balancer.membership.size === 1, 'one member');
    const unreachable: string[] = [];
    const client = directClient(port, { maxRetriesPerRequest: 0 });
    client.on('nodeUnreachable', (nodeId) => unreachable.push(nodeId));
    await waitFor(() => (client.routingStats?.mapEpoch ?? -1) >= 0, 'the client has a cluster map');
    await waitFor(() => unreachable.length === 1, 'node-1 reported unreachable');
    expect(client.routingStats!.nodesReady).toBe(0);
    await expect(client.set('k', 'v')).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    expect(client.routingStats!.viaBalancer).toBe(1);
  }, 60_000);
});

/** The cluster map as the balancer serves it to any client. */
async function fetchMap(port: number): Promise<ClusterMapSnapshot> {
  const link = new PeerLink({ host: '127.0.0.1', port, role: 'client' });
  link.start();
  try {
    await link.whenReady(5000);
    const answer = await link.request({ op: Op.CLUSTER_MAP, subscribe: false });
    if (answer.op !== Op.MAP)
      throw new DstoreError(ErrorCode.INTERNAL, `CLUSTER_MAP answered op ${answer.op}`);
    return answer;
  } finally {
    await link.close();
  }
}

/**
 * Makes `client` route on `map`, although it is older than its own: the test's stand-in for a
 * client that missed every push. Reaches into the router, which accepts only newer maps.
 */
function forceMap(client: DstoreClient, map: ClusterMapSnapshot): void {
  interface RouterInternals {
    map: { nodes: Map<string, { link: PeerLink }> } | undefined;
    install(map: ClusterMapSnapshot): boolean;
  }
  const router = (client as unknown as { direct: RouterInternals }).direct;
  for (const node of router.map?.nodes.values() ?? []) void node.link.close();
  router.map = undefined;
  expect(router.install(map)).toBe(true);
}
