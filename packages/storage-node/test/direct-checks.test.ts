import { HashRing } from '@dstore/hashring';
import {
  bytesToString,
  DstoreError,
  ErrorCode,
  Op,
  type Request,
  type Response,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { engineCases, Resources } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const engines = engineCases(resources);

type Outcome = { readonly op: number } | { readonly code: string };

/** The answer's op, or the error code of a refusal. */
async function outcome(answer: Promise<Response>): Promise<Outcome> {
  try {
    return { op: (await answer).op };
  } catch (error) {
    if (!(error instanceof DstoreError)) throw error;
    return { code: error.code };
  }
}

/**
 * A client request that a direct client's checks verified skips the handler's own fence and
 * ownership checks (one ring lookup per key, not two). These pin down that the skip is taken only
 * when the checks really ran: at the node's epoch every foreign key is still MOVED, a request on
 * another epoch is still MOVED, a client request without an epoch still gets NOT_OWNER, and only
 * the keys the node serves run, on every data op and engine.
 */
describe.each(engines)('direct client checks on $name', ({ options }) => {
  it('serves owned keys and refuses foreign ones whether or not the request was routed directly', async () => {
    const node = await resources.node({ id: 'node-a', ...options() });
    const peer = await resources.peer(node.address.port);
    const client = await resources.client(node.address.port);
    await peer.request({
      op: Op.RING,
      epoch: 3,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      nodes: [
        { id: 'node-a', weight: 1, host: '127.0.0.1', port: node.address.port },
        { id: 'node-b', weight: 1, host: '127.0.0.1', port: 1 },
      ],
    });
    const ring = HashRing.from([{ id: 'node-a' }, { id: 'node-b' }]);
    const owned: Uint8Array[] = [];
    const foreign: Uint8Array[] = [];
    for (let i = 0; owned.length < 3 || foreign.length < 3; i++) {
      const key = toBytes(`direct-${i}`);
      (ring.get(key) === 'node-a' ? owned : foreign).push(key);
    }
    const value = toBytes('v');
    const requests = (key: Uint8Array, other: Uint8Array, epoch: number | undefined) => {
      const fence = epoch === undefined ? {} : { epoch };
      return [
        { op: Op.SET, key, value, ...fence },
        { op: Op.GET, key, ...fence },
        { op: Op.DEL, key, ...fence },
        // The key is second: every key of a batch is checked, not only the first.
        { op: Op.MGET, keys: [other, key], ...fence },
        {
          op: Op.MSET,
          entries: [
            { key: other, value },
            { key, value },
          ],
          ...fence,
        },
      ] as Request[];
    };
    const [mine, alsoMine] = owned as [Uint8Array, Uint8Array];
    for (const key of foreign) {
      // Routed directly at the node's epoch, at an older one, and without an epoch.
      for (const request of requests(key, mine, 3))
        expect(await outcome(client.request(request)), `op ${request.op} at epoch 3`).toEqual({
          op: Op.MOVED,
        });
      for (const request of requests(key, mine, 2))
        expect(await outcome(client.request(request)), `op ${request.op} at epoch 2`).toEqual({
          op: Op.MOVED,
        });
      for (const request of requests(key, mine, undefined))
        expect(await outcome(client.request(request)), `op ${request.op} without epoch`).toEqual({
          code: ErrorCode.NOT_OWNER,
        });
    }
    // Nothing refused ran: the owned key named in the refused batches was never written.
    expect(await client.request({ op: Op.GET, key: mine, epoch: 3 })).toEqual(
      expect.objectContaining({ op: Op.VALUE, value: null }),
    );
    for (const epoch of [3, undefined]) {
      const fence = epoch === undefined ? {} : { epoch };
      expect(
        (await client.request({ op: Op.SET, key: mine, value: toBytes(`w${epoch}`), ...fence })).op,
      ).toBe(Op.OK);
      const read = await client.request({ op: Op.GET, key: mine, ...fence });
      expect(read.op === Op.VALUE && read.value !== null ? bytesToString(read.value) : null).toBe(
        `w${epoch}`,
      );
      expect((await client.request({ op: Op.MSET, entries: [{ key: alsoMine, value }], ...fence })).op).toBe(
        Op.OK,
      );
      const both = await client.request({ op: Op.MGET, keys: [mine, alsoMine], ...fence });
      expect(
        both.op === Op.VALUES ? both.values.map((v) => (v === null ? null : bytesToString(v))) : [],
      ).toEqual([`w${epoch}`, 'v']);
      expect(await client.request({ op: Op.DEL, key: mine, ...fence })).toEqual(
        expect.objectContaining({ op: Op.COUNT, count: 1 }),
      );
      expect(await client.request({ op: Op.DEL, key: mine, ...fence })).toEqual(
        expect.objectContaining({ op: Op.COUNT, count: 0 }),
      );
    }
    // The balancer's path (a peer) is checked by the handler itself: NOT_OWNER at the right epoch.
    expect(await outcome(peer.request({ op: Op.GET, key: foreign[0]!, epoch: 3 }))).toEqual({
      code: ErrorCode.NOT_OWNER,
    });
    expect(await outcome(peer.request({ op: Op.SET, key: foreign[0]!, value, epoch: 3 }))).toEqual({
      code: ErrorCode.NOT_OWNER,
    });
  });
});
