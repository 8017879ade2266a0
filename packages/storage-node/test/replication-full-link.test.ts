/**
 * Every replication stream of a node towards one peer shares one connection. A stream that found
 * it full (its output past `maxOutputBytes`, or its requests in flight at the connection's bound)
 * failed its batch: the chain was blocked and its clients answered indeterminate. Found by a
 * pressure audit (one RESP client pipelining large values made other clients' writes fail). Such
 * a stream now holds its batches, in order, until there is room.
 */

import { afterEach, describe, expect, it } from 'vitest';
import { Resources } from './helpers.js';
import { headOf, heldTail, whenReceived, written } from './replication-harness.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

describe('a forward stream whose connection to its successor is full', () => {
  it('waits for room, in order, instead of failing its writes (more batches than a connection may have in flight)', async () => {
    const tail = await heldTail(resources, 'node-x');
    const { replication, key } = await headOf(resources, tail, 60_000);
    // One batch per tick, all held unanswered: past the connection's 1,024 requests in flight.
    const outcomes: Promise<unknown>[] = [];
    for (let i = 0; i < 1100; i++) {
      outcomes.push(written(replication, key));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await whenReceived(tail.peer, 1024);
    tail.peer.release();
    const answers = await Promise.all(outcomes);
    expect(answers.filter((answer) => typeof answer !== 'string')).toEqual([]);
    expect(replication.counters.batchesFailed).toBe(0);
  });
});
