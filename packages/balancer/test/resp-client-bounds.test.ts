/**
 * The bounds a RESP connection shares with the native port (pressure audit, F1 point 5): a client
 * pipelining big SETs it never reads the answers of holds at most `--max-client-bytes-in-flight`
 * of them towards the nodes (reading pauses past it, as on the native port).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { type NodeReady, Resources, type Spawned, waitFor } from './helpers.js';
import { startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let balancer: Balancer;
let port: number;
let nodes: Spawned<NodeReady>[];

/** The byte bound of the cluster under test: eight of the 64 KiB SETs below. */
const BYTES_IN_FLIGHT = 512 * 1024;
const VALUE = 'v'.repeat(64 * 1024);

beforeAll(async () => {
  // Long deadlines: a node is SIGSTOPped for a while and must neither time out nor be marked down.
  ({
    balancer,
    respPort: port,
    nodes,
  } = await startRespCluster(resources, 2, {
    maxClientBytesInFlight: BYTES_IN_FLIGHT,
    requestTimeoutMs: 60_000,
    heartbeatTimeoutMs: 60_000,
  }));
}, 60_000);
afterAll(() => resources.releaseAll());

const command = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;

/** `count` keys whose owner is node `id`. */
function keysOf(id: string, prefix: string, count: number): string[] {
  const keys: string[] = [];
  for (let index = 0; keys.length < count; index++) {
    if (balancer.ring.get(`${prefix}${index}`) === id) keys.push(`${prefix}${index}`);
  }
  return keys;
}

/** Requests the balancer has sent node `id` and not had answered, on both its links. */
function inFlightAt(id: string): number {
  const node = balancer.membership.node(id)!;
  return node.inFlight + (node.bulkLink.connection?.inFlight ?? 0);
}

/** A raw connection, destroyed at release; what it receives is collected in `received()`. */
async function rawSocket(): Promise<{ socket: Socket; received: () => string }> {
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

describe('bytes of large commands in flight per RESP connection', () => {
  it('a client pipelining big SETs without reading is not read past the bound; another is served meanwhile; then all complete', async () => {
    const stalled = nodes[0]!;
    const id = 'resp-node-1';
    const keys = keysOf(id, 'big:', 24);
    const [elsewhere] = keysOf('resp-node-2', 'small:', 1);
    // Node 1 stops answering: every SET the balancer reads stays in flight towards it.
    stalled.child.kill('SIGSTOP');
    resources.add(() => stalled.child.kill('SIGCONT'));
    try {
      const flooder = await rawSocket();
      // It does not read its answers either.
      flooder.socket.pause();
      flooder.socket.write(keys.map((key) => command('SET', key, VALUE)).join(''));
      // Eight SETs reach the bound: the balancer stops reading there.
      const perBound = Math.ceil(BYTES_IN_FLIGHT / VALUE.length);
      await waitFor(() => inFlightAt(id) >= perBound, 'the bound reached');
      const other = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0 });
      resources.add(() => other.disconnect());
      await other.connect();
      expect(await other.set(elsewhere!, 'served')).toBe('OK');
      expect(await other.get(elsewhere!)).toBe('served');
      // Before the fix every SET read was forwarded (up to 1024 commands of ~1 MiB per connection).
      expect(inFlightAt(id)).toBe(perBound);
      // The node answers again and the client reads: every SET completes, in order.
      stalled.child.kill('SIGCONT');
      flooder.socket.resume();
      const all = '+OK\r\n'.repeat(keys.length);
      await waitFor(() => flooder.received().length >= all.length, 'every answer');
      expect(flooder.received()).toBe(all);
      expect(await other.strlen(keys.at(-1)!)).toBe(VALUE.length);
    } finally {
      stalled.child.kill('SIGCONT');
    }
  }, 60_000);
});
