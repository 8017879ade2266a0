/**
 * Large answers (pressure audit 2, F3). On the RESP port an MGET whose values pass one frame is
 * read in parts and assembled in the balancer: a client pipelining such MGETs without reading its
 * answers has one assembled at a time, only while its unread answers are under half the output
 * bound, instead of every MGET in flight fetched at once (three such clients stalled the balancer
 * for seconds and let every node's lease lapse); a client that reads gets every answer. On both
 * ports, the requests fetched for a client follow the expected size of its answers: a client
 * pipelining GETs of large values it does not read has as many fetched as its output bound holds,
 * not every one it sent (each a megabyte through the node links every client shares).
 */
import { connect as netConnect } from 'node:net';
import { Op } from '@dstore/protocol';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { connect, Resources, waitFor } from './helpers.js';
import { startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let balancer: Balancer;
let port: number;

/** The output bound of the balancer under test (64 MiB by default). */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Eight values of 900 KB: an MGET of them answers 7.2 MB, past one frame (1 MiB), within the bound. */
const KEYS = Array.from({ length: 8 }, (_, index) => `large:${index}`);
const largeValueOf = (key: string): string => `${key}=`.padEnd(900_000, key.at(-1));
/** MGETs the client that does not read pipelines. */
const PIPELINED = 100;

beforeAll(async () => {
  ({ balancer, respPort: port } = await startRespCluster(resources, 1, {
    respMaxOutputBytes: MAX_OUTPUT_BYTES,
    // Not what is tested: this process serves the balancer and decodes hundreds of megabytes of
    // answers at once; on a loaded CI machine a fetch waited past the default 2 s deadline once.
    requestTimeoutMs: 10_000,
  }));
  const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
  resources.add(() => redis.disconnect());
  await redis.connect();
  for (const key of KEYS) await redis.set(key, largeValueOf(key));
  redis.disconnect();
}, 60_000);
afterAll(() => resources.releaseAll());

/** `op` requests the balancer routed to the nodes (each part of a read in parts counts), answered or failed. */
async function routedOps(op: 'get' | 'mget'): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${balancer.address.adminPort}/metrics`)).text();
  let total = 0;
  const sample = new RegExp(`^dstore_balancer_requests_total\\{op="${op}",result="\\w+"\\} (\\d+)$`, 'gm');
  for (const match of text.matchAll(sample)) total += Number(match[1]);
  return total;
}
const mgetsRouted = (): Promise<number> => routedOps('mget');
const getsRouted = (): Promise<number> => routedOps('get');

/** Resolves once `read()` has not changed for `quietMs` (at most `limitMs`); its last value. */
async function settledValue(read: () => Promise<number>, quietMs: number, limitMs: number): Promise<number> {
  const deadline = Date.now() + limitMs;
  let last = await read();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, quietMs));
    const now = await read();
    if (now === last || Date.now() > deadline) return now;
    last = now;
  }
}

const mgetCommand = `*${KEYS.length + 1}\r\n$4\r\nMGET\r\n${KEYS.map((key) => `$${key.length}\r\n${key}\r\n`).join('')}`;

describe('large answers on the RESP port', () => {
  it('a client pipelining MGETs of large values without reading has a few assembled, not all of them', async () => {
    const before = await mgetsRouted();
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    resources.add(() => socket.destroy());
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    // Never read: the answers stay in the sockets' buffers and then in the balancer.
    socket.pause();
    socket.write(mgetCommand.repeat(PIPELINED));
    await waitFor(async () => (await mgetsRouted()) - before >= PIPELINED, 'every MGET read once');
    const routed = (await settledValue(mgetsRouted, 1000, 30_000)) - before;
    // Each MGET's first read is refused (its answer passes one frame); an MGET assembled in parts
    // reads 15 more (halves down to single keys). The answers the client can leave unread (its
    // socket buffers, then half the output bound) hold a few of 7.2 MB: the rest wait their
    // turn. Before, every MGET in flight was read in parts at once: 100 + 100 x 15.
    expect(routed).toBeLessThan(PIPELINED + 8 * 15);
    socket.destroy();
  }, 60_000);

  it('a client that reads gets every answer of many pipelined MGETs of large values', async () => {
    const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
    resources.add(() => redis.disconnect());
    await redis.connect();
    // 30 x 7.2 MB: far past the output bound, fetched as the client reads them.
    const pipeline = redis.pipeline();
    for (let index = 0; index < 30; index++) pipeline.mget(...KEYS);
    const results = await pipeline.exec();
    expect(results).toHaveLength(30);
    for (const [error, values] of results!) {
      expect(error).toBeNull();
      expect(values).toEqual(KEYS.map(largeValueOf));
    }
    redis.disconnect();
  }, 60_000);

  it('a native client pipelining GETs of large values without reading has as many fetched as its output bound holds', async () => {
    const before = await getsRouted();
    const client = await connect(resources, balancer.address.port);
    // Never read: the answers stay in the sockets' buffers and then in the balancer.
    client.socket.pause();
    const requests = Array.from({ length: 600 }, () =>
      client.request({ op: Op.GET, key: new TextEncoder().encode(KEYS[0]!) }).catch(() => undefined),
    );
    await waitFor(async () => (await getsRouted()) > before, 'the first GETs forwarded');
    const routed = (await settledValue(getsRouted, 1000, 30_000)) - before;
    // The first answers are expected at 64 KiB each: 128 in flight on the 16 MiB output bound of
    // the native port, then 900 KB each. Before, all 600 were fetched at once (up to 1024).
    expect(routed).toBeLessThan(300);
    client.destroy();
    await Promise.all(requests);
  }, 60_000);

  it('a native client that reads gets every answer of many pipelined GETs of large values', async () => {
    const client = await connect(resources, balancer.address.port);
    const key = new TextEncoder().encode(KEYS[1]!);
    // 300 x 900 KB: far past the 16 MiB output bound, fetched as the client reads them.
    const answers = await Promise.all(Array.from({ length: 300 }, () => client.request({ op: Op.GET, key })));
    const expected = largeValueOf(KEYS[1]!);
    for (const answer of answers) {
      expect(answer.op).toBe(Op.VALUE);
      if (answer.op === Op.VALUE) expect(Buffer.from(answer.value!).toString()).toBe(expected);
    }
    client.destroy();
  }, 60_000);
});
