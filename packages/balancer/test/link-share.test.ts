/**
 * Each client connection's fair share of a node link's in-flight slots (`--max-in-flight`, audit
 * MEDIUM): one client pipelining on many connections towards a stalled node used to take every
 * slot of the link, and every other client got BUSY. Now past half of the slots a connection is
 * admitted only within its share, so another client's request still reaches the node; and the
 * counts are given back on every end of a request (answer, deadline, link closing, refusal, a held
 * request's end), else a client would be wedged for good.
 */
import { connect as netConnect, type Socket } from 'node:net';
import {
  Connection,
  connectSocket,
  DstoreError,
  ErrorCode,
  Op,
  type Request,
  type Response,
  toBytes,
  type WithoutId,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterNode } from '../src/cluster-node.js';
import type { Balancer } from '../src/index.js';
import {
  keysOwnedBy,
  type NodeReady,
  Resources,
  type Spawned,
  startBalancer,
  startFakeNode,
  waitFor,
  waitForNodesUp,
} from './helpers.js';
import { ioredisOf, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

/** The node link bound under test: small, so a few connections fill it. */
const MAX_IN_FLIGHT = 64;
const STALLED = 'resp-node-1';

/** A native client connection with a deadline longer than the test's stall, destroyed at release. */
async function client(port: number): Promise<Connection> {
  const connection = new Connection(await connectSocket({ host: '127.0.0.1', port }), {
    requestTimeoutMs: 120_000,
    maxInFlight: 4096,
  });
  resources.add(() => connection.destroy());
  return connection;
}

/** The answer or the error of a request (never rejects). */
function outcome(connection: Connection, message: WithoutId<Request>): Promise<Response | DstoreError> {
  return connection.request(message).catch((error: unknown) => {
    if (error instanceof DstoreError) return error;
    throw error;
  });
}

/** Whether `result` is a BUSY refusal. */
const isBusy = (result: Response | DstoreError | undefined): boolean =>
  result instanceof DstoreError && result.code === ErrorCode.BUSY;

/** A flood of GETs: every outcome as it arrives, and how many were refused so far. */
interface Flood {
  readonly all: Promise<(Response | DstoreError)[]>;
  readonly refused: () => number;
  readonly total: number;
}

/** `perConnection` GETs of `keys` pipelined on each of `connections`, none awaited. */
function flood(connections: readonly Connection[], keys: readonly string[], perConnection: number): Flood {
  let refused = 0;
  const requests: Promise<Response | DstoreError>[] = [];
  connections.forEach((connection, c) => {
    for (let index = 0; index < perConnection; index++) {
      const key = keys[(c * perConnection + index) % keys.length]!;
      requests.push(
        outcome(connection, { op: Op.GET, key: toBytes(key) }).then((result) => {
          if (isBusy(result)) refused++;
          return result;
        }),
      );
    }
  });
  return { all: Promise.all(requests), refused: () => refused, total: requests.length };
}

/** A cluster of two real nodes behind a balancer with a small `--max-in-flight`; node 1 will stall. */
async function cluster(requestTimeoutMs = 120_000): Promise<{
  balancer: Balancer;
  respPort: number;
  stalled: Spawned<NodeReady>;
  node: ClusterNode;
}> {
  const { balancer, respPort, nodes } = await startRespCluster(resources, 2, {
    maxInFlightPerNode: MAX_IN_FLIGHT,
    requestTimeoutMs,
    // The node is SIGSTOPped for a while: it must not be marked down meanwhile.
    heartbeatTimeoutMs: 120_000,
  });
  return { balancer, respPort, stalled: nodes[0]!, node: balancer.membership.node(STALLED)! };
}

/** Stops node `stalled` (SIGSTOP), resumed at release. */
function stall(stalled: Spawned<NodeReady>): void {
  stalled.child.kill('SIGSTOP');
  resources.add(() => stalled.child.kill('SIGCONT'));
}

/** Waits until every request of `flood` is either refused or in flight on the stalled node's link. */
function floodSettledIn(node: ClusterNode, requests: Flood): Promise<void> {
  return waitFor(() => requests.refused() + node.inFlight >= requests.total, 'the flood sent or refused');
}

describe('a client connection gets a fair share of a node link', () => {
  it('a client flooding a stalled node over several native connections leaves room for another client, whose request reaches the node', async () => {
    const { balancer, stalled, node } = await cluster();
    const keys = keysOwnedBy(balancer, STALLED, 'flood:', 32);
    const [canaryKey] = keysOwnedBy(balancer, STALLED, 'canary:', 1);
    stall(stalled);
    const flooders = await Promise.all(Array.from({ length: 4 }, () => client(balancer.address.port)));
    // 4 x 64 GETs towards a link of 64 slots.
    const requests = flood(flooders, keys, MAX_IN_FLIGHT);
    await floodSettledIn(node, requests);
    expect(requests.refused()).toBeGreaterThan(0);
    // Another client's GET of the same node's key: before, BUSY ("64 requests in flight on this
    // connection"); now it is sent and waits for the node like the flood's.
    const canary = await client(balancer.address.port);
    const before = node.inFlight;
    let settled = false;
    const answer = outcome(canary, { op: Op.GET, key: toBytes(canaryKey!) }).finally(() => {
      settled = true;
    });
    await waitFor(() => settled || node.inFlight > before, 'the canary sent or answered');
    stalled.child.kill('SIGCONT');
    expect(await answer).toMatchObject({ op: Op.VALUE, value: null });
    const results = await requests.all;
    const busy = results.find(isBusy) as DstoreError;
    expect(busy.message).toMatch(
      /^this connection has \d+ of the \d+ requests in flight to node resp-node-1/,
    );
    expect(busy.notExecuted).toBe(true);
    // Every admitted GET was answered; every count given back.
    expect(results.filter((result) => !(result instanceof DstoreError))).toHaveLength(
      requests.total - requests.refused(),
    );
    expect([node.shares.inFlight, node.shares.connections]).toEqual([0, 0]);
  }, 60_000);

  it('a client flooding over RESP connections leaves room for another RESP client on the same node', async () => {
    const { balancer, respPort, stalled, node } = await cluster();
    const keys = keysOwnedBy(balancer, STALLED, 'flood:', 32);
    const [canaryKey] = keysOwnedBy(balancer, STALLED, 'canary:', 1);
    stall(stalled);
    const perConnection = MAX_IN_FLIGHT;
    const flooders = await Promise.all(Array.from({ length: 4 }, () => rawResp(respPort)));
    flooders.forEach((flooder, c) => {
      const commands = Array.from({ length: perConnection }, (_, i) =>
        resp('GET', keys[(c * perConnection + i) % keys.length]!),
      );
      flooder.socket.write(commands.join(''));
    });
    const total = flooders.length * perConnection;
    // Answers leave in command order, so the refusals behind a waiting GET are not seen yet: the
    // balancer's error count tells them.
    await waitFor(() => balancer.metrics.errors + node.inFlight >= total, 'the RESP flood sent or refused');
    expect(balancer.metrics.errors).toBeGreaterThan(0);
    const canary = ioredisOf(resources, respPort);
    await canary.connect();
    const before = node.inFlight;
    let settled = false;
    const answer = canary
      .get(canaryKey!)
      .catch((error: unknown) => error)
      .finally(() => {
        settled = true;
      });
    await waitFor(() => settled || node.inFlight > before, 'the canary sent or answered');
    stalled.child.kill('SIGCONT');
    expect(await answer).toBeNull();
    // Every command of the flood answered: nulls for the admitted ones, TRYAGAIN for the others.
    await waitFor(
      () => flooders.every((flooder) => (flooder.received().match(/\r\n/g)?.length ?? 0) >= perConnection),
      'every flood answer',
    );
    expect([node.shares.inFlight, node.shares.connections]).toEqual([0, 0]);
  }, 60_000);

  it('counts are given back when requests end by their deadline and by the node closing: a connection gets its full share again', async () => {
    const { balancer, stalled, node } = await cluster(1500);
    const keys = keysOwnedBy(balancer, STALLED, 'flood:', 32);
    stall(stalled);
    const flooder = await client(balancer.address.port);
    // One connection alone: admitted up to its share, the rest refused, then every admitted GET
    // ends with TIMEOUT (the node is stopped past the request deadline).
    const first = flood([flooder], keys, MAX_IN_FLIGHT);
    const firstResults = await first.all;
    const admitted = first.total - first.refused();
    expect(admitted).toBeGreaterThan(0);
    expect(first.refused()).toBeGreaterThan(0);
    expect(
      firstResults.filter((result) => result instanceof DstoreError && result.code === ErrorCode.TIMEOUT),
    ).toHaveLength(admitted);
    expect([node.shares.inFlight, node.shares.connections]).toEqual([0, 0]);
    // The same connection again: the same share, nothing leaked from the first round.
    const second = flood([flooder], keys, MAX_IN_FLIGHT);
    await floodSettledIn(node, second);
    expect(second.total - second.refused()).toBe(admitted);
    expect(node.shares.inFlight).toBe(admitted);
    // The node dies: its link closes and the admitted GETs fail; their counts come back too.
    stalled.child.kill('SIGKILL');
    const secondResults = await second.all;
    expect(secondResults.filter((result) => !isBusy(result))).toHaveLength(admitted);
    expect([node.shares.inFlight, node.shares.connections]).toEqual([0, 0]);
  }, 60_000);
});

describe('held requests count in the share', () => {
  it('a held request is counted until it ends by its deadline; one the held bound refuses is given back at once', async () => {
    const fake = await startFakeNode(resources, 'fake-1');
    const balancer = await startBalancer(resources, {
      replicationFactor: 1,
      requestTimeoutMs: 60_000,
      maxInFlightPerNode: 8,
    });
    await fake.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    const node = balancer.membership.node('fake-1')!;
    await waitFor(() => node.bulkLink.isReady && node.link.isReady, 'both links to the node');
    fake.stalled = true;
    resources.add(() => fake.releaseHeld());
    const share: number[] = [];
    const forward = (message: WithoutId<Request>, timeoutMs: number): Promise<Response | DstoreError> =>
      node.forward(message, { timeoutMs }, share).catch((error: DstoreError) => error);
    const [keyA, keyB] = [toBytes('held:a'), toBytes('held:b')];
    // A large SET of one key on the bulk link, a small SET of the other on the main one: a
    // request naming both must be held.
    const blockers = [
      forward({ op: Op.SET, key: keyA, value: toBytes('L'.repeat(64 * 1024)) }, 1000),
      forward({ op: Op.SET, key: keyB, value: toBytes('small') }, 1000),
    ];
    const held = forward({ op: Op.MGET, keys: [keyA, keyB] }, 200);
    expect(node.shares.inFlight).toBe(3);
    // The balancer's own requests (no share) fill the held queue to its bound (8)...
    const internal = Array.from({ length: 7 }, (_, index) =>
      node
        .forward({ op: Op.GET, key: toBytes(`held:${index}`) }, { timeoutMs: 5000 })
        .catch((error: DstoreError) => error),
    );
    // ... so the client's next request is refused there (BUSY, the held bound's words), its count given back.
    const refused = await forward({ op: Op.GET, key: toBytes('held:refused') }, 5000);
    expect(refused).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true });
    expect((refused as DstoreError).message).toMatch(/already waiting/);
    expect(node.shares.inFlight).toBe(3);
    expect(await held).toMatchObject({ code: ErrorCode.TIMEOUT, notExecuted: true });
    await Promise.all(blockers);
    fake.releaseHeld();
    await Promise.all(internal);
    expect([node.shares.inFlight, node.shares.connections]).toEqual([0, 0]);
    expect(share.every((count) => count === 0)).toBe(true);
  }, 30_000);
});

/** RESP command text. */
function resp(...args: string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
}

/** A raw RESP connection collecting what it receives, destroyed at release. */
async function rawResp(port: number): Promise<{ socket: Socket; received: () => string }> {
  const socket = netConnect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  resources.add(() => socket.destroy());
  let text = '';
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, received: () => text };
}
