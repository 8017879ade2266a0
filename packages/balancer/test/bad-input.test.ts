import { Op } from '@dstore/protocol';
import { badInputCorpus } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, Resources, sendRaw, startBalancer, startFakeNode, waitForNodesUp } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

describe('bad input from clients', () => {
  it('survives every case of the corpus and keeps serving new connections', async () => {
    const node = await startFakeNode(resources, 'fake-1');
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    await node.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    for (const testCase of badInputCorpus()) {
      // Cases that must close are given time to; the others only need to have been read.
      const outcome = await sendRaw(balancer.address.port, testCase.bytes, testCase.closes ? 5000 : 100);
      if (testCase.closes) expect(outcome.closedByServer, testCase.name).toBe(true);
      const client = await connect(resources, balancer.address.port);
      expect(await client.request({ op: Op.PING }), testCase.name).toMatchObject({ op: Op.OK });
      client.destroy();
    }
    // Nothing from the corpus reached the ring.
    expect(balancer.ring.nodes().map((member) => member.id)).toEqual(['fake-1']);
  });
});
