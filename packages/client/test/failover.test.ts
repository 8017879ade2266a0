import { Op } from '@dstore/protocol';
import { FakeServer } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ClientOptions,
  createClient,
  type DstoreClient,
  type DstoreError,
  ErrorCode,
} from '../src/index.js';
import { listenMute } from './helpers/listen.js';
import { failOnUnhandledRejections } from './helpers/unhandled.js';

failOnUnhandledRejections();

const servers: FakeServer[] = [];
const clients: DstoreClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.disconnect()));
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

async function startServer(): Promise<FakeServer> {
  const server = new FakeServer();
  servers.push(server);
  await server.start();
  return server;
}

/** A fake server that was started and stopped: its port refuses connections. */
async function stoppedServer(): Promise<FakeServer> {
  const server = await startServer();
  await server.stop();
  return server;
}

function clientOf(list: readonly FakeServer[], options: ClientOptions = {}): DstoreClient {
  const client = createClient({
    servers: list.map((server) => ({ host: '127.0.0.1', port: server.port })),
    ...options,
  });
  clients.push(client);
  return client;
}

/** Like events.once, but without listening for 'error' (which would change what the client emits). */
function nextEvent(client: DstoreClient, name: 'ready' | 'end' | 'close'): Promise<void> {
  return new Promise((resolve) => client.once(name, () => resolve()));
}

describe('several servers', () => {
  it('uses the first, fails over to the second when it dies, and returns to the first', async () => {
    const first = await startServer();
    const second = await startServer();
    const client = clientOf([first, second]);
    await client.connect();
    expect(client.server).toBe(first.address);
    expect(await client.set('a', '1')).toBe('OK');
    expect(first.store.has('a')).toBe(true);
    expect(second.connectionCount).toBe(0);

    const onSecond = nextEvent(client, 'ready');
    await first.stop();
    await onSecond;
    expect(client.server).toBe(second.address);
    expect(await client.set('b', '2')).toBe('OK');
    expect(second.store.has('b')).toBe(true);
    expect(await client.ping()).toBe('PONG');

    await first.start();
    const backOnFirst = nextEvent(client, 'ready');
    await second.stop();
    await backOnFirst;
    expect(client.server).toBe(first.address);
    expect(await client.set('c', '3')).toBe('OK');
    expect(first.store.has('c')).toBe(true);
  });

  it('connects to the second when the first is unreachable at start', async () => {
    const unreachable = await stoppedServer();
    const second = await startServer();
    const client = clientOf([unreachable, second]);
    await client.connect();
    expect(client.server).toBe(second.address);
    expect(client.address).toBe(second.address);
    expect(await client.set('k', 'v')).toBe('OK');
    expect(second.store.has('k')).toBe(true);
  });

  it('connect() waits out a first server that accepts and never answers, then uses the second', async () => {
    const hung = await listenMute();
    try {
      const second = await startServer();
      const client = createClient({
        servers: [
          { host: '127.0.0.1', port: hung.port },
          { host: '127.0.0.1', port: second.port },
        ],
        connectTimeout: 1000,
        lazyConnect: true,
        retryStrategy: () => null,
      });
      clients.push(client);
      // connect() waits one round (connectTimeout per server), not one attempt.
      await client.connect();
      expect(client.server).toBe(second.address);
      expect(await client.set('k', 'v')).toBe('OK');
      expect(second.store.has('k')).toBe(true);
    } finally {
      await hung.close();
    }
  });

  it('sends commands queued while no server is up to whichever connects', async () => {
    const first = await stoppedServer();
    const second = await stoppedServer();
    const client = clientOf([first, second], { commandTimeout: 10_000 });
    const pending = [client.set('k', 'v'), client.ping()];
    await second.start();
    expect(await Promise.all(pending)).toEqual(['OK', 'PONG']);
    expect(second.store.has('k')).toBe(true);
    expect(client.server).toBe(second.address);
  });

  it('does not resend a command in flight when its server drops, even with another server up', async () => {
    const first = await startServer();
    const second = await startServer();
    const client = clientOf([first, second], { maxRetriesPerRequest: 5, commandTimeout: 1000 });
    await client.connect();
    first.mode = 'silent';
    const inFlight = client.set('k', 'v');
    await new Promise((resolve) => setTimeout(resolve, 20));
    const onSecond = nextEvent(client, 'ready');
    await first.stop();
    const error = await inFlight.catch((caught: unknown) => caught);
    // Indeterminate: it may have been applied, so it is never resent to the second server.
    expect([ErrorCode.CONNECTION_CLOSED, ErrorCode.TIMEOUT]).toContain((error as DstoreError).code);
    await onSecond;
    expect(second.count(Op.SET)).toBe(0);
  });

  it('tries the servers of a round back to back and pauses with retryStrategy between rounds', async () => {
    const first = await stoppedServer();
    const second = await stoppedServer();
    const rounds: number[] = [];
    const client = clientOf([first, second], {
      retryStrategy: (times) => {
        rounds.push(times);
        return times < 3 ? 10 : null;
      },
    });
    const reconnects: { delayMs: number; attempt: number; next: string }[] = [];
    client.on('reconnecting', (delayMs, attempt) =>
      reconnects.push({ delayMs, attempt, next: client.server }),
    );
    // Never ready: the queued command fails once the first round failed (both servers tried).
    const queued = expect(client.get('k')).rejects.toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
    });
    await nextEvent(client, 'end');
    await queued;
    expect(rounds).toEqual([1, 2, 3]);
    expect(reconnects).toEqual([
      { delayMs: 0, attempt: 1, next: second.address },
      { delayMs: 10, attempt: 2, next: first.address },
      { delayMs: 0, attempt: 3, next: second.address },
      { delayMs: 10, attempt: 4, next: first.address },
      { delayMs: 0, attempt: 5, next: second.address },
    ]);
    expect(client.status).toBe('end');
    // connect() starts again, from the first server.
    await second.start();
    await client.connect();
    expect(client.server).toBe(second.address);
  });

  it('emits close, reconnecting and ready when failing over', async () => {
    const first = await startServer();
    const second = await startServer();
    const client = clientOf([first, second]);
    await client.connect();
    const events: string[] = [];
    for (const name of ['connect', 'ready', 'close', 'reconnecting', 'end'] as const) {
      client.on(name, () => events.push(name));
    }
    const onSecond = nextEvent(client, 'ready');
    await first.stop();
    await onSecond;
    expect(events).toEqual(['close', 'reconnecting', 'connect', 'ready']);
    await client.close();
    expect(events.at(-1)).toBe('end');
    expect(client.status).toBe('closed');
  });
});
