/**
 * The requests a node's `ClusterNode` holds to keep each key's order across its two links (a
 * multi-key request whose keys are in flight on both, and every keyed request after it): their
 * deadline counts from their arrival, not from their sending, and the queue is bounded (pressure
 * audit, "Observation"). A stand-in node that holds every answer makes the queue deterministic.
 */
import {
  type DstoreError,
  ErrorCode,
  Op,
  type Request,
  type Response,
  toBytes,
  type WithoutId,
} from '@dstore/protocol';
import type { FakeServer } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterNode } from '../src/cluster-node.js';
import { keySlotsOf } from '../src/key-lanes.js';
import { Resources, startBalancer, startFakeNode, waitFor, waitForNodesUp } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

/** A balancer with one stand-in node, both links ready; the node holds every answer from now on. */
async function stalledNode(maxInFlightPerNode?: number): Promise<{ fake: FakeServer; node: ClusterNode }> {
  const fake = await startFakeNode(resources, 'fake-1');
  const balancer = await startBalancer(resources, {
    replicationFactor: 1,
    requestTimeoutMs: 60_000,
    ...(maxInFlightPerNode === undefined ? {} : { maxInFlightPerNode }),
  });
  await fake.register(balancer.address.port);
  await waitForNodesUp(balancer, 1);
  const node = balancer.membership.node('fake-1')!;
  await waitFor(() => node.bulkLink.isReady && node.link.isReady, 'both links to the node');
  fake.stalled = true;
  resources.add(() => fake.releaseHeld());
  return { fake, node };
}

/** The outcome of a forwarded request: its answer or its error (never rejects). */
function outcome(
  node: ClusterNode,
  message: WithoutId<Request>,
  timeoutMs: number,
): Promise<Response | DstoreError> {
  return node.forward(message, { timeoutMs }).catch((error: DstoreError) => error);
}

const large = toBytes('L'.repeat(64 * 1024));
const [keyA, keyB] = [toBytes('held:a'), toBytes('held:b')];

/**
 * Puts a large SET of `keyA` in flight on the bulk link and a small SET of `keyB` on the main one,
 * so that a request naming both must be held.
 */
function blockBothLanes(node: ClusterNode, timeoutMs: number): Promise<unknown>[] {
  return [
    outcome(node, { op: Op.SET, key: keyA, value: large }, timeoutMs),
    outcome(node, { op: Op.SET, key: keyB, value: toBytes('small') }, timeoutMs),
  ];
}

describe('requests held for their keys order', () => {
  it('the two keys fall on different slots (else nothing is held)', () => {
    expect(keySlotsOf({ op: Op.GET, key: keyA })).not.toBe(keySlotsOf({ op: Op.GET, key: keyB }));
  });

  it('a held request whose deadline passed while held fails with TIMEOUT, not executed, and is never sent', async () => {
    const { fake, node } = await stalledNode();
    // The SETs in flight end at their deadline (1 s); the MGET held behind them has 200 ms, counted
    // from its arrival: it is past it when they settle. It used to be sent then with a fresh 200 ms.
    const blockers = blockBothLanes(node, 1000);
    const mget = outcome(node, { op: Op.MGET, keys: [keyA, keyB] }, 200);
    const error = (await mget) as DstoreError;
    expect(error).toMatchObject({ code: ErrorCode.TIMEOUT, notExecuted: true });
    await Promise.all(blockers);
    fake.releaseHeld();
    expect(fake.count(Op.MGET)).toBe(0);
  }, 30_000);

  it('past the bound of held requests (the node link in-flight bound) a request is refused with BUSY, not executed', async () => {
    const maxHeld = 8;
    const { fake, node } = await stalledNode(maxHeld);
    const blockers = blockBothLanes(node, 30_000);
    const held = [outcome(node, { op: Op.MGET, keys: [keyA, keyB] }, 30_000)];
    for (let index = 1; index < maxHeld; index++) {
      held.push(outcome(node, { op: Op.GET, key: toBytes(`held:${index}`) }, 30_000));
    }
    const refused = (await outcome(
      node,
      { op: Op.GET, key: toBytes('held:refused') },
      30_000,
    )) as DstoreError;
    expect(refused).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true, retryable: true });
    // The held ones are sent, in order, once the node answers.
    fake.releaseHeld();
    await Promise.all([...blockers, ...held]);
    expect(fake.count(Op.MGET)).toBe(1);
  }, 30_000);
});
