import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCode, Op, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeBalancer } from './fake-balancer.js';
import {
  capturingLogger,
  ERROR_LEVEL,
  Resources,
  ringRequest,
  sleep,
  WARN_LEVEL,
  waitFor,
} from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

describe('membership', () => {
  it('JOINs, heartbeats with the key count, re-JOINs after a balancer restart, LEAVEs on stop', async () => {
    const balancer = new FakeBalancer(resources);
    const balancerPort = await balancer.start();
    const node = await resources.node({
      id: 'member-1',
      join: `127.0.0.1:${balancerPort}`,
      heartbeatIntervalMs: 20,
      weight: 3,
      advertiseHost: 'localhost',
    });
    await waitFor(() => balancer.count(Op.JOIN) === 1, 5000, 'JOIN');
    expect(balancer.roles).toEqual(['node']);
    expect(balancer.received[0]).toMatchObject({
      op: Op.JOIN,
      nodeId: 'member-1',
      host: 'localhost',
      port: node.address.port,
      weight: 3,
    });
    await node.engine.set(new TextEncoder().encode('a'), new Uint8Array(1));
    await node.engine.set(new TextEncoder().encode('b'), new Uint8Array(1));
    await waitFor(
      () => balancer.received.some((request) => request.op === Op.HEARTBEAT && request.keyCount === 2),
      5000,
      'a HEARTBEAT with keyCount 2',
    );
    const heartbeat = balancer.received.find((request) => request.op === Op.HEARTBEAT);
    expect(heartbeat).toMatchObject({ nodeId: 'member-1' });

    // The balancer goes away and comes back on the same port: the node joins again.
    await balancer.stop();
    const restarted = new FakeBalancer(resources);
    await restarted.start(balancerPort);
    await waitFor(() => restarted.count(Op.JOIN) === 1, 10_000, 'JOIN after the balancer restart');
    expect(restarted.received[0]).toMatchObject({ op: Op.JOIN, nodeId: 'member-1', port: node.address.port });
    await waitFor(() => restarted.count(Op.HEARTBEAT) > 0, 5000, 'heartbeats after the restart');

    await node.stop();
    // Heartbeats go on while the LEAVE waits for its answer, so one may arrive after it; the last
    // membership change is the LEAVE, and none arrive once stop() returned (below).
    const changes = restarted.received.filter((request) => request.op !== Op.HEARTBEAT);
    expect(changes.at(-1)).toMatchObject({ op: Op.LEAVE, nodeId: 'member-1' });
    const heartbeatsAfterStop = restarted.count(Op.HEARTBEAT);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(restarted.count(Op.HEARTBEAT)).toBe(heartbeatsAfterStop);
  });

  it('keeps serving and keeps retrying while the balancer is down', async () => {
    const balancer = new FakeBalancer(resources);
    const balancerPort = await balancer.start();
    await balancer.stop();
    const node = await resources.node({ join: `127.0.0.1:${balancerPort}`, heartbeatIntervalMs: 20 });
    const client = await resources.client(node.address.port);
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
    const late = new FakeBalancer(resources);
    await late.start(balancerPort);
    await waitFor(() => late.count(Op.JOIN) === 1, 10_000, 'JOIN once the balancer is up');
    await node.stop();
    expect(late.count(Op.LEAVE)).toBe(1);
  });

  it('stopped while its balancer restarts, waits for it and hands off (LEAVE) instead of leaving at once', async () => {
    const balancer = new FakeBalancer(resources);
    const balancerPort = await balancer.start();
    const { logger, records } = capturingLogger();
    const node = await resources.node({
      id: 'member-1',
      join: `127.0.0.1:${balancerPort}`,
      heartbeatIntervalMs: 20,
      logger,
    });
    await waitFor(() => balancer.count(Op.JOIN) === 1, 5000, 'JOIN');
    await balancer.stop();
    await waitFor(
      () => records.some((record) => record.msg.startsWith('lost the balancer')),
      5000,
      'the link lost',
    );
    // SIGTERM lands while the link is down: the node must not go without a hand-off.
    const stopped = node.stop();
    await sleep(300);
    const restarted = new FakeBalancer(resources);
    await restarted.start(balancerPort);
    await stopped;
    expect(restarted.count(Op.LEAVE)).toBe(1);
    // Leaving: it never JOINs the restarted balancer (that could make it a member anew).
    expect(restarted.count(Op.JOIN)).toBe(0);
  });

  it('refuses the keys until its first RING (UNAVAILABLE, not executed), then serves them', async () => {
    const balancer = new FakeBalancer(resources);
    const balancerPort = await balancer.start();
    // A member restarted on its data: it cannot know yet whether it owns the key, nor whether
    // its copy is current (it would serve it, or take a write alone, unreplicated).
    const node = await resources.node({
      id: 'member-1',
      join: `127.0.0.1:${balancerPort}`,
      heartbeatIntervalMs: 20,
    });
    const key = new TextEncoder().encode('k');
    await node.engine.set(key, new TextEncoder().encode('old'));
    await waitFor(() => balancer.count(Op.JOIN) === 1, 5000, 'JOIN');
    const client = await resources.client(node.address.port);
    const refusals = [
      { op: Op.SET, key, value: new TextEncoder().encode('new') },
      { op: Op.GET, key },
      { op: Op.MGET, keys: [key] },
      { op: Op.MSET, entries: [{ key, value: new TextEncoder().encode('new') }] },
      { op: Op.DEL, key },
      { op: Op.INCRBY, key, delta: 1n },
      { op: Op.SCAN, cursor: 0 },
    ] as const;
    for (const request of refusals) {
      const refused = await client.request(request).then(
        (response) => response,
        (error: unknown) => error,
      );
      expect(refused, `op ${request.op}`).toMatchObject({ code: ErrorCode.UNAVAILABLE, notExecuted: true });
    }
    expect(new TextDecoder().decode(node.engine.get(key))).toBe('old');
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
    const ring = await resources.peer(node.address.port);
    const members = [{ id: 'member-1', weight: 1, host: '127.0.0.1', port: node.address.port }];
    const ringRequest = {
      op: Op.RING,
      epoch: 1,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      nodes: members,
    };
    expect((await ring.request(ringRequest)).op).toBe(Op.OK);
    expect((await client.request({ op: Op.SET, key, value: new TextEncoder().encode('new') })).op).toBe(
      Op.OK,
    );
    const read = await client.request({ op: Op.GET, key });
    expect(read.op === Op.VALUE && new TextDecoder().decode(read.value ?? undefined)).toBe('new');
  });

  const identityRefusals = [
    {
      code: ErrorCode.IDENTITY_CONFLICT,
      advice:
        /another live node holds this node id: start this node with its own --id, or stop the other one/,
    },
    {
      code: ErrorCode.MEMBER_REMOVED,
      advice:
        /this node was removed from the cluster: it can join again only as a new member, with a fresh data dir/,
    },
    {
      code: ErrorCode.CLUSTER_MISMATCH,
      advice:
        /this node holds data of another cluster than the balancer's map: start the balancer with the map/,
    },
  ];

  it.each(identityRefusals)(
    'retries a JOIN refused with $code on the same link and logs what to do at error level',
    async ({ code, advice }) => {
      const balancer = new FakeBalancer(resources);
      const balancerPort = await balancer.start();
      balancer.refuseJoins(2, code);
      const { logger, records } = capturingLogger();
      const node = await resources.node({
        id: 'refused-1',
        join: `127.0.0.1:${balancerPort}`,
        heartbeatIntervalMs: 20,
        logger,
      });
      await waitFor(() => balancer.count(Op.JOIN) === 3, 10_000, 'the JOIN accepted after two refusals');
      await waitFor(() => balancer.count(Op.HEARTBEAT) > 0, 5000, 'heartbeats once joined');

      expect(balancer.refusedJoins).toBe(2);
      expect(balancer.joins().map((request) => request.identity)).toEqual([
        node.identity,
        node.identity,
        node.identity,
      ]);
      // The refusal leaves the link up: the retries go over the same connection.
      expect(balancer.roles).toEqual(['node']);
      // No heartbeat before the JOIN that was accepted.
      const joinPositions = balancer.received.flatMap((request, i) => (request.op === Op.JOIN ? [i] : []));
      const acceptedJoin = joinPositions.at(-1) as number;
      expect(balancer.received.findIndex((request) => request.op === Op.HEARTBEAT)).toBeGreaterThan(
        acceptedJoin,
      );

      const refusalLogs = records.filter((record) => record.code === code);
      expect(refusalLogs).toHaveLength(2);
      expect(refusalLogs[0]).toMatchObject({
        level: ERROR_LEVEL,
        nodeId: 'refused-1',
        identity: node.identity,
        attempt: 1,
      });
      expect(refusalLogs[0]?.msg).toMatch(advice);
      // The same reason again is not repeated at error level.
      expect(refusalLogs[1]?.level).toBeLessThan(ERROR_LEVEL);
      expect(records.some((record) => record.msg === 'joined balancer')).toBe(true);
    },
  );

  it('says why it cannot reach its balancer when it reconnects (here: an HTTP server on the port)', async () => {
    const http = createServer((_request, response) => response.end('{}'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    resources.defer(() => new Promise<void>((resolve) => http.close(() => resolve())));
    const { logger, records } = capturingLogger();
    await resources.node({
      id: 'lost-1',
      join: `127.0.0.1:${(http.address() as AddressInfo).port}`,
      logger,
    });
    await waitFor(
      () => records.some((record) => record.msg === 'reconnecting to balancer'),
      5000,
      'a reconnect warning',
    );
    expect(records.find((record) => record.msg === 'reconnecting to balancer')).toMatchObject({
      level: WARN_LEVEL,
      attempt: 1,
      code: ErrorCode.VERSION_MISMATCH,
      err: expect.stringMatching(/looks like an HTTP server/),
    });
  });

  it('keeps retrying a JOIN refused for its identity until stopped', async () => {
    const balancer = new FakeBalancer(resources);
    const balancerPort = await balancer.start();
    balancer.refuseJoins(Number.POSITIVE_INFINITY, ErrorCode.IDENTITY_CONFLICT);
    const node = await resources.node({ join: `127.0.0.1:${balancerPort}`, heartbeatIntervalMs: 20 });
    await waitFor(() => balancer.count(Op.JOIN) >= 3, 10_000, 'three refused JOINs');
    expect(balancer.count(Op.HEARTBEAT)).toBe(0);
    await node.stop();
    const joinsAtStop = balancer.count(Op.JOIN);
    // Longer than the backoff's first delays: a retry still scheduled would show up.
    await sleep(300);
    expect(balancer.count(Op.JOIN)).toBe(joinsAtStop);
  });

  it('drops the link and re-JOINs after any other refusal, as before', async () => {
    const balancer = new FakeBalancer(resources);
    const balancerPort = await balancer.start();
    balancer.refuseJoins(1, ErrorCode.INVALID_ARGUMENT);
    const { logger, records } = capturingLogger();
    await resources.node({ join: `127.0.0.1:${balancerPort}`, heartbeatIntervalMs: 20, logger });
    await waitFor(() => balancer.count(Op.JOIN) === 2, 10_000, 'the JOIN after the refusal');
    expect(balancer.roles).toEqual(['node', 'node']);
    expect(records.some((record) => record.msg === 'JOIN failed; retrying')).toBe(true);
    expect(records.some((record) => record.level >= ERROR_LEVEL)).toBe(false);
  });

  it('serves the requests a balancer sends right behind its first RING (a restarted member), not "no cluster map yet"', async () => {
    const balancer = new FakeBalancer(resources);
    const balancerPort = await balancer.start();
    const node = await resources.node({
      id: 'member-1',
      join: `127.0.0.1:${balancerPort}`,
      heartbeatIntervalMs: 50,
    });
    await waitFor(() => balancer.count(Op.JOIN) === 1, 5000, 'JOIN');
    // What a balancer does when a member's link (re)connects: the RING, then at once the clients'
    // requests, on the same connection, in one write.
    const link = await resources.peer(node.address.port);
    const [ring, set, get] = await Promise.all([
      link.request(ringRequest(1, [{ id: 'member-1', weight: 1 }])),
      link.request({ op: Op.SET, key: toBytes('k'), value: toBytes('v'), epoch: 1 }),
      link.request({ op: Op.GET, key: toBytes('k'), epoch: 1 }),
    ]);
    expect(ring.op).toBe(Op.OK);
    expect(set.op).toBe(Op.OK);
    expect(get).toMatchObject({ op: Op.VALUE, value: toBytes('v') });
  });
});
