import { connect as netConnect } from 'node:net';
import { Op } from '@dstore/protocol';
import { badInputCorpus } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, Resources, startBalancer, startFakeNode, waitForNodesUp } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

/** Writes raw bytes; resolves once the server closed the socket or `settleMs` passed. */
function sendRaw(port: number, bytes: Uint8Array, settleMs: number): Promise<{ closedByServer: boolean }> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    socket.on('data', () => undefined);
    let finished = false;
    const finish = (closedByServer: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ closedByServer });
    };
    const timer = setTimeout(() => finish(false), settleMs);
    socket.once('close', () => finish(true));
    socket.once('end', () => finish(true));
    socket.once('connect', () => socket.write(bytes));
  });
}

describe('bad input from clients', () => {
  it('survives every case of the corpus and keeps serving new connections', async () => {
    const node = await startFakeNode(resources, 'fake-1');
    const balancer = await startBalancer(resources);
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
