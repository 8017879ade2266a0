/**
 * Hostile RESP from raw sockets against the balancer's RESP port: every case of the shared corpus,
 * the native protocol's corpus (garbage to a RESP parser), a slow sender and a client that never
 * reads. Each gets a typed error or a closed connection, and another client is served throughout.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { DEFAULT_LIMITS } from '@dstore/protocol';
import { badInputCorpus, respBadInputCorpus } from '@dstore/protocol/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Resources, sendRaw, waitFor } from './helpers.js';
import { startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let port: number;
/** The well-behaved client that must keep being served. */
let bystander: Redis;

beforeAll(async () => {
  // A small output limit, so the kernel's socket buffers cannot absorb what goes over it. A long
  // node deadline: the non-reader's 100 MiB of GETs share the node link with the bystander's
  // requests, and on a loaded machine they can take longer than the default 2 s to stream.
  ({ respPort: port } = await startRespCluster(resources, 1, {
    respMaxOutputBytes: 4 * 1024 * 1024,
    requestTimeoutMs: 15_000,
  }));
  bystander = new Redis({ port, lazyConnect: true });
  await bystander.connect();
  resources.add(() => bystander.disconnect());
  await bystander.set('bystander', 'still here');
}, 60_000);
afterAll(() => resources.releaseAll());

async function bystanderServed(): Promise<void> {
  expect(await bystander.get('bystander')).toBe('still here');
}

/** A raw connection, destroyed at release. */
async function rawSocket(): Promise<Socket> {
  const socket = netConnect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  resources.add(() => socket.destroy());
  await new Promise((resolve) => socket.once('connect', resolve));
  return socket;
}

/** The clients INFO counts. */
async function connectedClients(): Promise<number> {
  const info = await bystander.info('clients');
  return Number(/connected_clients:(\d+)/.exec(info)?.[1]);
}

describe('hostile RESP input', () => {
  it('answers a protocol error and closes, or waits without holding memory, for every corpus case', async () => {
    for (const testCase of respBadInputCorpus()) {
      const outcome = await sendRaw(port, testCase.bytes, testCase.closes ? 5000 : 100);
      expect(outcome.closedByServer, testCase.name).toBe(testCase.closes);
      if (testCase.closes) expect(outcome.reply, testCase.name).toMatch(/^-ERR Protocol error: /);
      await bystanderServed();
    }
  });

  it('survives the native protocol corpus sent to the RESP port', async () => {
    for (const testCase of badInputCorpus()) {
      await sendRaw(port, testCase.bytes, 50);
      await bystanderServed();
    }
  });

  it('answers pipelined commands sent one byte at a time', async () => {
    const socket = await rawSocket();
    let reply = '';
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
    });
    const stream = '*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$5\r\nv\r\n\0z\r\nGET slow\r\n*1\r\n$4\r\nPING\r\n';
    for (const char of stream) {
      socket.write(char);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await waitFor(() => reply.endsWith('+PONG\r\n'), 'the slow pipeline answered');
    expect(reply).toBe('+OK\r\n$5\r\nv\r\n\0z\r\n+PONG\r\n');
    await bystanderServed();
  });

  it('refuses a value over the limit without closing, then serves the same connection', async () => {
    const size = DEFAULT_LIMITS.maxValueBytes + 1;
    const command = Buffer.concat([
      Buffer.from(`*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$${size}\r\n`),
      Buffer.alloc(size, 0x78),
      Buffer.from('\r\n*1\r\n$4\r\nPING\r\n'),
    ]);
    const outcome = await sendRaw(port, command, 2000);
    expect(outcome.reply).toBe(
      `-ERR argument of ${size} bytes is over the limit of ${DEFAULT_LIMITS.maxValueBytes} bytes\r\n+PONG\r\n`,
    );
  });

  it('disconnects a client that never reads its replies, and keeps serving others', async () => {
    const value = 'v'.repeat(DEFAULT_LIMITS.maxValueBytes);
    await bystander.set('hostile:big', value);
    const before = await connectedClients();
    const socket = await rawSocket();
    let closed = false;
    socket.once('close', () => {
      closed = true;
    });
    await waitFor(async () => (await connectedClients()) === before + 1, 'the non-reader connected');
    // Never read: 100 replies of ~1 MiB are far more than the 4 MiB output limit plus what the
    // kernel buffers on loopback (tcp_rmem/tcp_wmem maxima, a few tens of MiB).
    socket.pause();
    socket.write('GET hostile:big\r\n'.repeat(100));
    await waitFor(
      async () => closed || (await connectedClients()) < before + 1,
      'the non-reader dropped',
      30_000,
    );
    await bystanderServed();
    expect((await bystander.get('hostile:big'))?.length).toBe(value.length);
  }, 60_000);
});
