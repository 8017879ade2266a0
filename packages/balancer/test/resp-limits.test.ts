/** The RESP port under the balancer's connection cap: a client past it gets Redis's error, others stay served. */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { Resources, sendRaw, startBalancer } from './helpers.js';

const resources = new Resources();
afterAll(() => resources.releaseAll());

describe('RESP connection cap', () => {
  it('answers -ERR max number of clients reached past --max-connections and keeps serving the others', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1, respPort: 0, maxConnections: 2 });
    const port = balancer.address.respPort;
    const clients = [new Redis({ port, lazyConnect: true }), new Redis({ port, lazyConnect: true })];
    for (const client of clients) {
      resources.add(() => client.disconnect());
      await client.connect();
      expect(await client.ping()).toBe('PONG');
    }
    const refused = await sendRaw(port, Buffer.from('PING\r\n'), 5000);
    expect(refused).toEqual({ closedByServer: true, reply: '-ERR max number of clients reached\r\n' });
    for (const client of clients) expect(await client.ping()).toBe('PONG');
  });
});
