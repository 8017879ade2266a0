/**
 * Replication step 2: chain replication on static chains. Five real dstore-node
 * processes, replication factor 3, memory and lmdb, an in-process balancer; clients through the
 * balancer and routing directly. Every member of a key's chain is read straight from the node
 * with PULL (a peer's read of its replica, which bypasses the tail-only rule for clients).
 */
import {
  checkHistory,
  formatCheckResult,
  HistoryRecorder,
  Nemesis,
  runRegisterOperation,
  startWorkload,
} from '@dstore/checker';
import type { DstoreClient } from '@dstore/client';
import { DstoreError, ErrorCode, Op, type Response } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { BalancerOptions } from '../src/index.js';
import { directClient, withMap } from './direct-client.js';
import { attempt, Resources, refusal, waitFor } from './helpers.js';
import { type Engine, FACTOR, ReplicatedCluster } from './replicated-cluster.js';
import { redisCli } from './resp-helpers.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

const text = new TextEncoder();

function start(engine: Engine, balancer?: BalancerOptions): Promise<ReplicatedCluster> {
  nemesis = new Nemesis();
  return ReplicatedCluster.start({
    engine,
    resources,
    nemesis,
    ...(balancer === undefined ? {} : { balancer }),
  });
}

function client(cluster: ReplicatedCluster, commandTimeout = 5000): DstoreClient {
  return cluster.client(commandTimeout);
}

describe.each(['memory', 'lmdb'] as const)('chain replication, factor 3 on 5 nodes (%s)', (engine) => {
  it('every acknowledged write and delete is on all 3 members of its chain', {
    timeout: 60_000,
  }, async () => {
    const cluster = await start(engine);
    const writer = client(cluster);
    // Each member read as soon as the write is acknowledged: acknowledged means applied everywhere.
    for (let i = 0; i < 60; i++) {
      const key = `ack-${i}`;
      await writer.set(key, `v${i}`);
      await cluster.expectOnChain(key, `v${i}`);
    }
    for (let i = 0; i < 60; i += 3) {
      await writer.del(`ack-${i}`);
      await cluster.expectOnChain(`ack-${i}`, null);
    }
    // Atomic operations replicate their result.
    await writer.set('counter', '10');
    expect(await writer.incrby('counter', 5)).toBe(15);
    await cluster.expectOnChain('counter', '15');
    // GETEX's change too: a time already past deletes the key on every member, answering its value.
    await writer.set('getex', 'g');
    expect(new TextDecoder().decode((await writer.getex('getex', { pxat: 1 }))!)).toBe('g');
    await cluster.expectOnChain('getex', null);
    // APPEND and SETRANGE: the head's result on every member.
    expect(await writer.append('appended', 'abc')).toBe(3);
    expect(await writer.setrange('appended', 5, 'z')).toBe(6);
    await cluster.expectOnChain('appended', 'abc\0\0z');
    // INCRBYFLOAT: the head's text on every member.
    expect(await writer.incrbyfloat('floated', '0.1')).toBe('0.1');
    expect(await writer.incrbyfloat('floated', '0.2')).toBe('0.3');
    await cluster.expectOnChain('floated', '0.3');
    // SETBIT: the head's whole value on every member ('@' is 0x40).
    expect(await writer.setbit('bitset', 1, 1)).toBe(0);
    await cluster.expectOnChain('bitset', '@');
    // A transaction: its net effect, one write, on every member.
    expect(await writer.transaction('txed').set('1').incrby(2).append('x').getString().exec()).toEqual([
      'OK',
      3,
      2,
      '3x',
    ]);
    await cluster.expectOnChain('txed', '3x');
    // A batch split over chains: each part at its head, each key on its chain.
    const entries = Array.from({ length: 50 }, (_, i): [string, string] => [`batch-${i}`, `b${i}`]);
    await writer.mset(entries);
    for (const [key, value] of entries) await cluster.expectOnChain(key, value);
    // Reads come from the tails.
    expect(await writer.getString('ack-1')).toBe('v1');
    const [deleted, kept] = await writer.mget(['ack-0', 'ack-1']);
    expect(deleted).toBeNull();
    expect(new TextDecoder().decode(kept!)).toBe('v1');
  });

  it('a read at a non-tail and a write at a non-head are refused, naming the tail or the head', {
    timeout: 60_000,
  }, async () => {
    const cluster = await start(engine);
    await client(cluster).set('fenced', 'x');
    const [head, middle, tail] = cluster.chainOf('fenced') as [string, string, string];
    const epoch = cluster.balancer.membership.topology.epoch;
    const key = text.encode('fenced');
    // A direct client (a request with the epoch it routed on): MOVED to the right member.
    for (const member of [head, middle]) {
      const moved = await (await cluster.direct(member)).request({ op: Op.GET, key, epoch });
      expect(moved).toMatchObject({ op: Op.MOVED, nodeId: tail, port: cluster.nodes.get(tail)!.ready.port });
    }
    for (const member of [middle, tail]) {
      const moved = await (await cluster.direct(member)).request({
        op: Op.SET,
        key,
        value: text.encode('y'),
        epoch,
      });
      expect(moved).toMatchObject({ op: Op.MOVED, nodeId: head });
      const rmw = await (await cluster.direct(member)).request({ op: Op.INCRBY, key, delta: 1n, epoch });
      expect(rmw).toMatchObject({ op: Op.MOVED, nodeId: head });
    }
    // Without an epoch (a client of the node itself): NOT_OWNER naming the member.
    const read = await attempt(await cluster.direct(head), { op: Op.GET, key });
    expect(read).toBeInstanceOf(DstoreError);
    expect((read as DstoreError).code).toBe(ErrorCode.NOT_OWNER);
    expect((read as DstoreError).message).toContain(`owned by ${tail}`);
    const write = await refusal((await cluster.direct(tail)).request({ op: Op.DEL, key }));
    expect(write.code).toBe(ErrorCode.NOT_OWNER);
    expect(write.message).toContain(`owned by ${head}`);
    // The right members serve them.
    const value = (await (await cluster.direct(tail)).request({ op: Op.GET, key, epoch })) as Response;
    expect(value).toMatchObject({ op: Op.VALUE, value: text.encode('x') });
    const set = await (await cluster.direct(head)).request({
      op: Op.SET,
      key,
      value: text.encode('z'),
      epoch,
    });
    expect(set.op).toBe(Op.OK);
    await cluster.expectOnChain('fenced', 'z');
    // And the refusals changed nothing.
    expect(await client(cluster).getString('fenced')).toBe('z');
  });

  it('a SIGSTOPped tail: writes of its chains fail typed until the failover, then succeed without it', {
    timeout: 60_000,
  }, async () => {
    // With the RESP port: WAIT answers how many replicas every acknowledged write has right now.
    const cluster = await start(engine, { respPort: 0 });
    const respPort = cluster.balancer.address.respPort!;
    expect(await redisCli(respPort, 'WAIT', '2', '0')).toBe(String(FACTOR - 1));
    const victim = 'node-3';
    const stalled = cluster.keyWhere(victim, FACTOR - 1, 'stalled');
    const free = cluster.keyWhere(victim, -1, 'free');
    const [head, middle] = cluster.chainOf(stalled) as [string, string, string];
    const writer = client(cluster, 30_000);
    await writer.set(stalled, 'before');
    await writer.set(free, 'before');
    const node = cluster.nodes.get(victim)!;
    node.pause();
    try {
      // The client's deadline (30 s) is far beyond the replication deadline (2 s): the failure is
      // the head's, typed and indeterminate (the head executed it), not a hang.
      const failure = await refusal(writer.set(stalled, 'during'));
      expect([ErrorCode.TIMEOUT, ErrorCode.CONNECTION_CLOSED]).toContain(failure.code);
      expect(failure.notExecuted).toBe(false);
      await labelled('free write during the pause', writer.set(free, 'during'));
      expect(await writer.getString(free)).toBe('during');
      // Past the failure timeout the writer takes the silent tail out of its chains: the middle
      // becomes the tail, and the chain takes writes again without the paused member.
      await waitFor(() => cluster.stateOf(victim) === 'failed', `${victim} marked failed`);
      expect(cluster.chainOf(stalled)).toEqual([head, middle]);
      expect(await redisCli(respPort, 'WAIT', '2', '100')).toBe(String(FACTOR - 2));
      // The map changed at the balancer; the head may get its RING a moment later and refuse the
      // chain's writes until then (UNAVAILABLE, not executed): retried as an application would.
      await untilServed(() => writer.set(stalled, 'after'));
      await cluster.expectOnChain(stalled, 'after');
      expect(await writer.getString(stalled)).toBe('after');
    } finally {
      node.resume();
    }
    // Resumed, it comes back as a learner, catches up and serves its chains again, with the write
    // it missed (that a resumed member answers nothing stale meanwhile: replication-failover.test.ts).
    await waitFor(() => cluster.stateOf(victim) === 'up', `${victim} up again`, 60_000);
    expect(cluster.chainOf(stalled)).toEqual([head, middle, victim]);
    expect(await redisCli(respPort, 'WAIT', '2', '0')).toBe(String(FACTOR - 1));
    await cluster.expectOnChain(stalled, 'after');
    expect(await writer.getString(stalled)).toBe('after');
  });
});

/**
 * Runs `operation` again while it fails with an error that says it was not executed (at most
 * 10 s, 50 ms apart); any other error, or the last one, is thrown.
 */
async function untilServed<T>(operation: () => Promise<T>): Promise<T> {
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      return await operation();
    } catch (error) {
      if (!(error instanceof DstoreError && error.notExecuted) || Date.now() > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function labelled<T>(what: string, pending: Promise<T>): Promise<T> {
  try {
    return await pending;
  } catch (error) {
    throw new Error(`${what}: ${(error as Error).message}`);
  }
}

describe.each([
  { engine: 'memory', routing: 'balancer' },
  { engine: 'lmdb', routing: 'direct' },
] as const)('linearizable with factor 3, no faults ($engine, $routing)', ({ engine, routing }) => {
  it('4 clients x 2 workers on few keys: the checker finds the history linearizable', {
    timeout: 90_000,
  }, async () => {
    const cluster = await start(engine);
    const clients: DstoreClient[] = [];
    for (let i = 0; i < 4; i++) {
      clients.push(
        routing === 'direct'
          ? await withMap(directClient(resources, cluster.port, { commandTimeout: 5000 }))
          : client(cluster),
      );
    }
    const recorder = new HistoryRecorder();
    const keys = Array.from({ length: 8 }, (_, i) => `lin-${i}`);
    const load = startWorkload({
      recorder,
      keys,
      workers: 8,
      maxOperations: 3000,
      durationMs: 8000,
      mix: { read: 5, write: 4, delete: 1 },
      execute: (operation, worker) => runRegisterOperation(clients[worker % clients.length]!, operation),
    });
    const stats = await load.done;
    const result = checkHistory(recorder.events, { timeLimitMs: 30_000 });
    if (result.verdict !== 'ok') console.log(formatCheckResult(result));
    expect(result.verdict).toBe('ok');
    expect(stats.ok).toBeGreaterThan(500);
    if (routing === 'direct') {
      for (const each of clients) expect(each.routingStats!.direct).toBeGreaterThan(0);
    }
    // Every key ends the same on its whole chain.
    for (const key of keys) {
      const value = await clients[0]!.getString(key);
      await cluster.expectOnChain(key, value);
    }
  });
});
