/**
 * Direct-routing clients for the load tests: created with `routing: 'direct'`, closed at release,
 * and seen by the per-key history checker through {@link asRequester}.
 */
import { createClient, type DstoreClient } from '@dstore/client';
import { Op, type Request, type Response, type WithoutId } from '@dstore/protocol';
import { type Resources, waitFor } from './helpers.js';
import type { Requester } from './history.js';

/** A direct-routing client of the balancer at `port`, closed at release. */
export function directClient(
  resources: Resources,
  port: number,
  extra: Parameters<typeof createClient>[1] = {},
): DstoreClient {
  const client = createClient({ host: '127.0.0.1', port, routing: 'direct', ...extra });
  resources.add(() => client.disconnect());
  return client;
}

/** Waits until `client` has a map and a ready connection to every node of it. */
export async function withMap(client: DstoreClient): Promise<DstoreClient> {
  await waitFor(() => (client.routingStats?.mapEpoch ?? -1) >= 0, 'the client has a cluster map');
  await waitForLinks(client);
  return client;
}

/** Waits until `client` has a ready connection to every node of its map. */
export async function waitForLinks(client: DstoreClient): Promise<void> {
  await waitFor(() => {
    const stats = client.routingStats!;
    return stats.nodesReady === stats.nodes;
  }, 'connections to every node of the map');
}

/**
 * The history checker's request shape over a client. Every third read is an MGET of the key and
 * another one (split per node, redirected parts through the balancer) and every third write a
 * one-entry MSET, so the batch paths face the same migrations and checks as GET and SET.
 */
export function asRequester(client: DstoreClient, keys: number): Requester {
  let calls = 0;
  return {
    async request(message: WithoutId<Request>): Promise<Response> {
      calls++;
      switch (message.op) {
        case Op.GET: {
          if (calls % 3 !== 0) return { op: Op.VALUE, id: 0, value: await client.get(message.key) };
          const other = `load-${Math.floor(Math.random() * keys)}`;
          const [value] = await client.mget([message.key, other]);
          return { op: Op.VALUE, id: 0, value: value ?? null };
        }
        case Op.SET:
          if (calls % 3 === 0) await client.mset([[message.key, message.value]]);
          else await client.set(message.key, message.value);
          return { op: Op.OK, id: 0 };
        case Op.DEL:
          return { op: Op.COUNT, id: 0, count: (await client.del(message.key)) ? 1 : 0 };
        default:
          throw new Error(`op ${message.op} is not used by the history checker`);
      }
    },
  };
}
