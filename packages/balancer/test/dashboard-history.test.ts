import { createServer, type Server } from 'node:http';
import { connect as connectTcp, type Socket } from 'node:net';
import { createRing } from '@dstore/hashring';
import { type DstoreError, ErrorCode, Op, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { ringView } from '../src/admin-server.js';
import { DashboardServer, movingSlots, ringSlots } from '../src/dashboard-server.js';
import { ClusterHistory, EVENT_LOG_CAPACITY, HISTORY_CAPACITY, percentileMs } from '../src/history.js';
import { DURATION_BUCKETS_SECONDS } from '../src/metrics.js';
import { connect, Resources, startBalancer, startFakeNode, waitFor, waitForNodesUp } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

describe('dashboard history and drawing', () => {
  it('takes percentiles from histogram buckets, interpolating inside the bucket', () => {
    const buckets = new Float64Array(DURATION_BUCKETS_SECONDS.length + 1);
    expect(percentileMs(buckets, 0, 0.5)).toBe(-1);
    buckets[4] = 100; // (0.5 ms, 1 ms]
    expect(percentileMs(buckets, 100, 0.5)).toBeCloseTo(0.75);
    expect(percentileMs(buckets, 100, 0.99)).toBeCloseTo(0.995);
    buckets[DURATION_BUCKETS_SECONDS.length] = 100; // over the last bound (5 s)
    expect(percentileMs(buckets, 200, 0.99)).toBe(5000);
  });

  it('draws a ring as 720 slots of the circle, each owned by a ring member, every member present', () => {
    const ring = createRing([{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    const { owners, slots } = ringSlots(ring);
    expect(slots).toHaveLength(720);
    expect([...owners].sort()).toEqual(['a', 'b', 'c']);
    for (let slot = 0; slot < slots.length; slot++) {
      expect(owners[slots[slot]!]).toBe(ring.getByPosition(Math.floor((slot * 2 ** 32) / 720)));
    }
    expect(ringSlots(createRing([]))).toEqual({ owners: [], slots: [] });
  });

  it('marks the moving parts of the ring at drawing resolution, bounded, wrapping past 2^32', () => {
    expect(movingSlots([])).toEqual([]);
    // A tiny range still shows as one slot.
    expect(movingSlots([{ start: 10, end: 11 }])).toEqual([{ start: 0, end: 1 / 720 }]);
    // A range wrapping past the top of the hash space shows at both ends.
    const wrapped = movingSlots([{ start: 2 ** 32 - 100, end: 50 }]);
    expect(wrapped).toEqual([
      { start: 0, end: 1 / 720 },
      { start: 719 / 720, end: 1 },
    ]);
    // A vnode ring's thousands of moves stay within 720 slots.
    const before = createRing([{ id: 'a' }, { id: 'b' }]);
    const after = before.add({ id: 'c' });
    const moves = before.diff(after);
    expect(moves.length).toBeGreaterThan(100);
    expect(movingSlots(moves).length).toBeLessThanOrEqual(360);
  });

  it('keeps 15 minutes of points and the latest membership events, oldest dropped first', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const history = new ClusterHistory(balancer.membership, balancer.metrics);
    for (let index = 0; index < HISTORY_CAPACITY + 25; index++) history.sample();
    expect(history.history()).toHaveLength(HISTORY_CAPACITY);
    await (await startFakeNode(resources, 'fake-1')).register(balancer.address.port);
    await waitFor(() => balancer.membership.size === 1, 'the fake node in the ring');
    for (let index = 0; index < 3; index++) history.sample();
    expect(history.eventLog().some((event) => event.text.startsWith('node fake-1 joined'))).toBe(true);
    expect(history.eventLog().some((event) => event.text.startsWith('map epoch 0 →'))).toBe(true);
    expect(history.eventLog().length).toBeLessThanOrEqual(EVENT_LOG_CAPACITY);
    history.stop();
  });

  it("counts each node's failures by code, and only the failures of that node", async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const history = new ClusterHistory(balancer.membership, balancer.metrics);
    const fake = await startFakeNode(resources, 'fake-1');
    await fake.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    const client = await connect(resources, balancer.address.port);
    fake.failNext.push(ErrorCode.OUT_OF_SPACE, ErrorCode.OUT_OF_SPACE, ErrorCode.STORAGE_ERROR);
    const outcomes = await Promise.all(
      ['a', 'b', 'c', 'd'].map((key) =>
        client.request({ op: Op.SET, key: toBytes(key), value: toBytes('v') }).then(
          () => 'ok',
          (error: DstoreError) => error.code,
        ),
      ),
    );
    expect(outcomes.sort()).toEqual(['OUT_OF_SPACE', 'OUT_OF_SPACE', 'STORAGE_ERROR', 'ok']);
    history.sample();
    const [point] = history.history().slice(-1);
    expect(point?.nodeErrors).toEqual({ 'fake-1': { OUT_OF_SPACE: 2, STORAGE_ERROR: 1 } });
    // Per second: the next sample has none.
    history.sample();
    expect(history.history().slice(-1)[0]?.nodeErrors).toEqual({});
    history.stop();
  });

  it("samples each node's ops by operation, latency and migration from its STATS, without its own STATS", async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const history = new ClusterHistory(balancer.membership, balancer.metrics);
    const fake = await startFakeNode(resources, 'fake-1');
    await fake.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    const statsAsked = () => fake.received.filter((request) => request.op === Op.STATS).length;
    const totals = (scale: number) => ({
      'ops.get': 200_000 * scale,
      'ops.set': 100_000 * scale,
      'ops.stats': 900_000 * scale,
      'migration.keys_sent': 50_000 * scale,
      'migration.keys_received': 50_000 * scale,
      'latency.p50_us': 120,
      'latency.p99_us': 900,
    });
    fake.stats = totals(1);
    history.sample();
    // The first STATS was answered with these totals (answers are built when a request arrives).
    await waitFor(() => statsAsked() >= 1, 'the first STATS');
    fake.stats = totals(2);
    await waitFor(() => {
      history.sample();
      return history.history().slice(-1)[0]?.nodes['fake-1'] !== undefined;
    }, 'a sample of the node');
    const sample = history.history().slice(-1)[0]!.nodes['fake-1']!;
    // Rates over the same interval: their ratios are the totals' (rounding aside).
    expect(Object.keys(sample.opsByOp).sort()).toEqual(['get', 'set']);
    expect(Math.abs(sample.opsByOp.get! - 2 * sample.opsByOp.set!)).toBeLessThanOrEqual(2);
    expect(Math.abs(sample.ops - sample.opsByOp.get! - sample.opsByOp.set!)).toBeLessThanOrEqual(1);
    expect(Math.abs(sample.migrationKeys - sample.opsByOp.set!)).toBeLessThanOrEqual(2);
    expect(sample).toMatchObject({ p50Us: 120, p99Us: 900 });
    history.stop();
  });

  it('closes a stream whose reader does not keep up', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const history = new ClusterHistory(balancer.membership, balancer.metrics);
    history.sample();
    const dashboard = new DashboardServer(balancer.membership, history, ringView, {
      balancerId: 'test',
      maxBufferedBytes: 64 * 1024,
    });
    const server: Server = createServer((request, response) =>
      dashboard.handle('/events', request, response, { operator: false, refused: false }),
    );
    resources.add(() => new Promise((done) => server.close(done)));
    resources.add(() => dashboard.close());
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const port = (server.address() as { port: number }).port;
    // A reader that sends its request and then never reads.
    const socket: Socket = connectTcp(port, '127.0.0.1');
    resources.add(() => socket.destroy());
    socket.write('GET /events HTTP/1.1\r\nhost: x\r\n\r\n');
    socket.pause();
    await waitFor(() => dashboard.streamCount === 1, 'the stream open');
    // Snapshots pile up in the kernel's buffers, then in the stream's: past the bound it is closed.
    await waitFor(() => {
      for (let index = 0; index < 200; index++) history.sample();
      return dashboard.streamCount === 0;
    }, 'the slow stream closed');
    history.stop();
  });
});
