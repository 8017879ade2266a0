/**
 * The direct router's wait for a newer cluster map after a MOVED is bounded by the command's own
 * deadline. A fault audit (two balancers over etcd, the client's balancer SIGSTOPped during a
 * join) saw commands run ~5 s past a 1 s `commandTimeout`: the wait lasted the map fetch's own
 * bound on the hung balancer. Here a real node stand-in answers MOVED to a newer epoch and the
 * balancer never answers the map request within the command's deadline.
 */
import {
  Authenticator,
  DstoreError,
  ErrorCode,
  FrameServer,
  Op,
  type Response,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { DirectRouter, type RouteOptions } from '../src/direct-router.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A node that answers HELLO as `id` and every other request with MOVED to ring epoch `epoch`. */
async function movingNode(id: string, epoch: number): Promise<number> {
  const authenticator = new Authenticator({ role: 'node', serverId: () => id });
  const server = new FrameServer({
    port: 0,
    onRequest: (request, connection) => {
      if (request.op === Op.HELLO || request.op === Op.AUTH) {
        authenticator.respond(connection, request);
        return;
      }
      connection.reply({ op: Op.MOVED, id: request.id, epoch, nodeId: id, host: '127.0.0.1', port: 1 });
    },
  });
  const { port } = await server.listen();
  cleanups.push(() => server.close(100));
  return port;
}

describe('direct routing after a MOVED to a newer epoch', () => {
  it('waits for the new map within the command deadline only, then fails not executed', async () => {
    const port = await movingNode('node-1', 6);
    const mapRequests: RouteOptions[] = [];
    const sentViaBalancer: number[] = [];
    const router = new DirectRouter({
      link: {
        role: 'client',
        credentials: undefined,
        connectTimeoutMs: 2000,
        connection: { requestTimeoutMs: 2000 },
      },
      maxRedirections: 5,
      refreshIntervalMs: 60_000,
      host: {
        // A hung balancer: the map request gets no answer within its own bound.
        viaBalancer: (message, options): Promise<Response> => {
          if (message.op === Op.CLUSTER_MAP) {
            mapRequests.push(options);
            return new Promise((_, reject) => {
              const timer = setTimeout(
                () => reject(new DstoreError(ErrorCode.TIMEOUT, 'hung balancer')),
                options.timeoutMs,
              );
              cleanups.push(() => clearTimeout(timer));
            });
          }
          sentViaBalancer.push(message.op);
          return Promise.resolve({ op: Op.OK, id: 0 });
        },
        unreachable: () => undefined,
        mapChanged: () => undefined,
      },
    });
    cleanups.push(() => router.close());
    router.install({
      epoch: 5,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      nodes: [{ id: 'node-1', weight: 1, host: '127.0.0.1', port, replicaState: 'up' }],
    });
    // Until the node's link is ready, commands go through the balancer (bounded: 200 tries).
    const set = { op: Op.SET, key: toBytes('k'), value: toBytes('v') } as const;
    for (let tries = 0; router.snapshot().moved === 0; tries++) {
      if (tries >= 200) throw new Error(`no MOVED from the node: ${JSON.stringify(router.snapshot())}`);
      await router.request(set, { timeoutMs: 2000 }).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    sentViaBalancer.length = 0;

    const outcome = await router.request(set, { timeoutMs: 300 }).then(
      (response) => response,
      (error: unknown) => error,
    );
    expect(mapRequests.length).toBeGreaterThan(0);
    // The map request's own bound is longer than the command's: the command did not wait it out.
    expect(mapRequests[0]!.timeoutMs).toBeGreaterThan(300);
    expect(outcome).toMatchObject({ code: ErrorCode.TIMEOUT, notExecuted: true });
    expect(sentViaBalancer).toEqual([]);
  });
});
