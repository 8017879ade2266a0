import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FrameServer, Op } from '@dstore/protocol';
import { createTestPki, FakeServer, keyOf, startRogueKdfServer } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ClientOptions,
  createClient,
  type DstoreClient,
  DstoreError,
  ErrorCode,
  VersionConflictError,
} from '../src/index.js';
import { listen, listenMute } from './helpers/listen.js';
import { failOnUnhandledRejections } from './helpers/unhandled.js';

failOnUnhandledRejections();

const servers: FakeServer[] = [];
const clients: DstoreClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.disconnect()));
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

async function startServer(token?: string): Promise<FakeServer> {
  const server = new FakeServer({ token });
  servers.push(server);
  await server.start();
  return server;
}

function clientFor(server: FakeServer, options: ClientOptions = {}): DstoreClient {
  const client = createClient({ host: '127.0.0.1', port: server.port, ...options });
  clients.push(client);
  return client;
}

async function readyClient(server: FakeServer, options: ClientOptions = {}): Promise<DstoreClient> {
  const client = clientFor(server, options);
  await client.connect();
  return client;
}

/** Like events.once, but without listening for 'error' (which would change what the client emits). */
function nextEvent(client: DstoreClient, name: 'ready' | 'end' | 'close'): Promise<void> {
  return new Promise((resolve) => client.once(name, () => resolve()));
}

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

/**
 * connect() after a server came back: an attempt already under way when it started listening
 * fails (and rejects connect() of a never-ready client); the next one succeeds.
 */
async function connectEventually(client: DstoreClient): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await client.connect();
      return;
    } catch (error) {
      if (attempt >= 20) throw error;
    }
  }
}

describe('commands', () => {
  it('set, get, getString, del, mget, mset, ping and stats round-trip', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    expect(await client.set('k1', 'v1')).toBe('OK');
    expect(await client.get('k1')).toEqual(bytes('v1'));
    expect(await client.getString('k1')).toBe('v1');
    expect(await client.get('missing')).toBeNull();
    expect(await client.getString('missing')).toBeNull();
    expect(await client.mset({ a: '1', b: bytes('2') })).toBe('OK');
    expect(await client.mset(new Map([['c', '3']]))).toBe('OK');
    expect(await client.mset([[bytes('d'), '4']])).toBe('OK');
    expect(await client.mget(['a', 'b', 'nope', 'c', bytes('d')])).toEqual([
      bytes('1'),
      bytes('2'),
      null,
      bytes('3'),
      bytes('4'),
    ]);
    expect(await client.del('a')).toBe(true);
    expect(await client.del('a')).toBe(false);
    expect(await client.ping()).toBe('PONG');
    server.stats = { 'node.n1.latency.p50_us': 12 };
    expect(await client.stats()).toMatchObject({ role: 'balancer', keys: 4, 'node.n1.latency.p50_us': 12 });
  });

  it('answers empty batches without a round trip', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    expect(await client.mget([])).toEqual([]);
    expect(await client.mset({})).toBe('OK');
    expect(server.count(Op.MGET) + server.count(Op.MSET)).toBe(0);
  });

  it('reads an MGET and an EXISTS past one batch (1000 keys) a batch per request, in order', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    const many = Array.from({ length: 2500 }, (_, i) => `many${i}`);
    await client.mset(many.slice(0, 1000).map((key): [string, string] => [key, key]));
    await client.mset(many.slice(1000, 1200).map((key): [string, string] => [key, key]));
    const before = server.count(Op.MGET);
    const values = await client.mget([...many, 'many0']);
    expect(server.count(Op.MGET) - before).toBe(3);
    expect(values.map((value) => (value === null ? null : Buffer.from(value).toString()))).toEqual([
      ...many.map((key, i) => (i < 1200 ? key : null)),
      'many0',
    ]);
    expect(await client.exists(...many, 'many0', 'many0')).toBe(1202);
    expect(server.count(Op.EXISTS)).toBe(3);
  });

  it('stores and returns binary keys and values byte for byte, as the caller own copies', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    const key = Uint8Array.from([0, 255, 10, 13, 0xc3, 0x28]);
    const value = Uint8Array.from({ length: 256 }, (_, i) => i);
    await client.set(key, value);
    const read = await client.get(key);
    expect(read).toEqual(value);
    read![0] = 99;
    expect(await client.get(key)).toEqual(value);
    expect(await client.set('empty-value', new Uint8Array(0))).toBe('OK');
    expect(await client.get('empty-value')).toEqual(new Uint8Array(0));
  });

  it('keeps many commands in flight on one connection', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    const keys = Array.from({ length: 500 }, (_, i) => `key-${i}`);
    await Promise.all(keys.map((key) => client.set(key, key)));
    expect(await Promise.all(keys.map((key) => client.getString(key)))).toEqual(keys);
    expect(server.connectionCount).toBe(1);
  });

  it('prefixes every key with keyPrefix, and only keys', async () => {
    const server = await startServer();
    const client = await readyClient(server, { keyPrefix: 'app:' });
    await client.set('k', 'v');
    await client.mset({ m: 'w' });
    expect([...server.store.keys()].sort()).toEqual(['app:k', 'app:m']);
    expect(keyOf(server.store.get('app:k')!)).toBe('v');
    expect(await client.getString('k')).toBe('v');
    expect(await client.mget(['k', 'm'])).toEqual([bytes('v'), bytes('w')]);
    expect(await client.del('k')).toBe(true);
    expect([...server.store.keys()]).toEqual(['app:m']);
  });

  it('refuses bad keys, values and batches locally, before sending', async () => {
    const server = await startServer();
    const client = await readyClient(server, { keyPrefix: 'p:' });
    await expect(client.get('')).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(client.get(42 as unknown as string)).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await expect(client.get('x'.repeat(1023))).rejects.toMatchObject({ code: ErrorCode.KEY_TOO_LARGE });
    await expect(client.set('k', new Uint8Array(1024 * 1024))).rejects.toMatchObject({
      code: ErrorCode.VALUE_TOO_LARGE,
    });
    await expect(
      client.mset(Array.from({ length: 1001 }, (_, i): [string, string] => [`k${i}`, 'v'])),
    ).rejects.toMatchObject({
      code: ErrorCode.BATCH_TOO_LARGE,
    });
    const big = new Uint8Array(600 * 1024);
    await expect(client.mset({ a: big, b: big })).rejects.toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE });
    expect(server.count(Op.GET) + server.count(Op.SET) + server.count(Op.MGET) + server.count(Op.MSET)).toBe(
      0,
    );
    const error = await client.get('').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DstoreError);
  });
});

describe('argument checks: refused before anything is sent', () => {
  it('a command timeout that is not a positive integer, a signal that is no AbortSignal', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    const sent = server.received.length;
    for (const timeout of [Number.NaN, Number.POSITIVE_INFINITY, 0, -5, 1.5, '100' as unknown as number]) {
      await expect(client.get('k', { timeout }), String(timeout)).rejects.toMatchObject({
        code: ErrorCode.INVALID_ARGUMENT,
        message: expect.stringMatching(/timeout/),
      });
    }
    await expect(client.get('k', { signal: 'x' as unknown as AbortSignal })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
      message: expect.stringMatching(/AbortSignal/),
    });
    await expect(client.rename('{t}a', '{t}b', { timeout: Number.NaN })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    expect(server.received.length).toBe(sent);
    expect(await client.get('k', { timeout: 1000 })).toBeNull();
  });

  it('unknown option names of the commands with options, naming the right one', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    const sent = server.received.length;
    const refusals: [Promise<unknown>, RegExp][] = [
      [client.set('k', 'v', { NX: true } as object), /unknown option NX in set: use nx/],
      [client.set('k', 'v', { expire: 10 } as object), /use ex \(seconds\) or px/],
      [client.getex('k', { EX: 10 } as object), /unknown option EX in getex: use ex/],
      [client.expire('k', 10, { cond: 'nx' } as object), /unknown option cond in expire/],
      [client.del('k', { ifversion: 3 } as object), /use ifVersion/],
      [client.scan(0, { pattern: '*' } as object), /unknown option pattern in scan/],
      [client.rename('{t}a', '{t}b', { NX: true } as object), /use nx/],
      [client.copy('{t}a', '{t}b', { force: true } as object), /unknown option force in copy/],
      [client.expire('k', 10, { condition: 'NX' as 'nx' }), /condition must be/],
      [client.scan(''), /invalid SCAN cursor/],
      [client.scan(' 7'), /invalid SCAN cursor/],
      [client.mget('abc' as unknown as string[]), /mget takes an array/],
    ];
    for (const [refused, message] of refusals) {
      await expect(refused, String(message)).rejects.toMatchObject({
        code: ErrorCode.INVALID_ARGUMENT,
        message: expect.stringMatching(message),
      });
    }
    expect(server.received.length).toBe(sent);
    // The documented names pass (the fake server knows only plain SET; the real ones run in the balancer's data-model tests).
    expect(await client.set('k', 'v', { timeout: 1000, signal: new AbortController().signal })).toBe('OK');
  });

  it('says "not executed" for what never left the client', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    const aborted = new AbortController();
    aborted.abort();
    await expect(client.get('k', { signal: aborted.signal })).rejects.toMatchObject({
      code: ErrorCode.ABORTED,
      notExecuted: true,
    });
    const huge = Array.from({ length: 20 }, (_, i): [string, Uint8Array] => [
      `k${i}`,
      new Uint8Array(60_000),
    ]);
    await expect(client.mset(huge)).rejects.toMatchObject({
      code: ErrorCode.FRAME_TOO_LARGE,
      notExecuted: true,
    });
    const transaction = client.transaction('{t}k');
    for (let i = 0; i < 20; i++) transaction.set(new Uint8Array(60_000));
    await expect(transaction.exec()).rejects.toMatchObject({
      code: ErrorCode.FRAME_TOO_LARGE,
      notExecuted: true,
    });
    await client.close();
    await expect(client.get('k')).rejects.toMatchObject({
      code: ErrorCode.CONNECTION_CLOSED,
      notExecuted: true,
    });
  });

  it('keeps commands queued at close() "not executed", as the README says', async () => {
    const server = await startServer();
    const client = clientFor(server, { lazyConnect: true });
    await server.stop();
    const queued = client.get('k').catch((error: unknown) => error);
    await client.close();
    expect(await queued).toMatchObject({ code: ErrorCode.CONNECTION_CLOSED, notExecuted: true });
  });
});

describe('VersionConflictError', () => {
  it('is instanceof across copies of the package (the built CJS against this ESM source)', () => {
    const cjs = createRequire(import.meta.url)('../dist/index.cjs') as {
      VersionConflictError: typeof VersionConflictError;
    };
    expect(cjs.VersionConflictError).not.toBe(VersionConflictError);
    const fromCjs = new cjs.VersionConflictError(3, 4);
    expect(fromCjs instanceof VersionConflictError).toBe(true);
    expect(fromCjs instanceof DstoreError).toBe(true);
    expect(new VersionConflictError(3, 0) instanceof cjs.VersionConflictError).toBe(true);
    expect(new DstoreError(ErrorCode.VERSION_CONFLICT, 'plain') instanceof VersionConflictError).toBe(false);
    expect(fromCjs).toMatchObject({
      code: ErrorCode.VERSION_CONFLICT,
      expectedVersion: 3,
      currentVersion: 4,
    });
  });
});

describe('connection life', () => {
  it('emits connect and ready, then close, reconnecting and ready again after a restart', async () => {
    const server = await startServer();
    const client = clientFor(server);
    const events: string[] = [];
    for (const name of ['connect', 'ready', 'close', 'reconnecting', 'end'] as const) {
      client.on(name, () => events.push(name));
    }
    await nextEvent(client, 'ready');
    expect(client.status).toBe('ready');
    const readyAgain = nextEvent(client, 'ready');
    await server.restart();
    await readyAgain;
    expect(events.slice(0, 5)).toEqual(['connect', 'ready', 'close', 'reconnecting', 'connect']);
    expect(events.at(-1)).toBe('ready');
    await client.close();
    expect(events.at(-1)).toBe('end');
    expect(client.status).toBe('closed');
  });

  it('runs commands issued during an outage once the server is back on the same port', async () => {
    const server = await startServer();
    const client = await readyClient(server, { commandTimeout: 10_000 });
    await client.set('before', '1');
    const closed = nextEvent(client, 'close');
    await server.stop();
    await closed;
    const pending = [client.set('during', '2'), client.getString('before'), client.ping()];
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(client.queueLength).toBe(3);
    server.store.clear();
    server.store.set('before', bytes('1'));
    await server.start();
    expect(await Promise.all(pending)).toEqual(['OK', '1', 'PONG']);
    expect(server.store.has('during')).toBe(true);
  });

  it('keeps reconnecting and working with no error listener', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    expect(client.listenerCount('error')).toBe(0);
    await server.stop();
    // Let several reconnect attempts fail while nobody listens for 'error'.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await server.start();
    expect(await client.set('k', 'v')).toBe('OK');
    expect(await client.getString('k')).toBe('v');
  });

  it('emits error events to a listener while the server is down', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    const errors: Error[] = [];
    client.on('error', (error) => errors.push(error));
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toMatchObject({ code: ErrorCode.UNAVAILABLE });
  });

  it('lazyConnect waits for connect() or the first command', async () => {
    const server = await startServer();
    const client = clientFor(server, { lazyConnect: true });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(client.status).toBe('wait');
    expect(server.connectionCount).toBe(0);
    expect(await client.ping()).toBe('PONG');
    expect(server.connectionCount).toBe(1);
    const other = clientFor(server, { lazyConnect: true });
    await other.connect();
    expect(other.status).toBe('ready');
    await other.connect();
  });

  it('stops when retryStrategy returns null: end, and queued and later commands are rejected', async () => {
    const server = await startServer();
    await server.stop();
    const attempts: number[] = [];
    const client = clientFor(server, {
      retryStrategy: (times) => {
        attempts.push(times);
        return times < 3 ? 10 : null;
      },
    });
    // Never ready: the queued command fails with the first failed attempt, not at 'end'.
    const queued = expect(client.get('k')).rejects.toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
    });
    await nextEvent(client, 'end');
    await queued;
    expect(attempts).toEqual([1, 2, 3]);
    expect(client.status).toBe('end');
    await expect(client.get('k')).rejects.toBeInstanceOf(DstoreError);
    // connect() starts again after 'end'.
    await server.start();
    await client.connect();
    expect(await client.ping()).toBe('PONG');
  });

  it('rejects a connect() the strategy gives up on', async () => {
    const server = await startServer();
    await server.stop();
    const client = clientFor(server, { lazyConnect: true, retryStrategy: () => null });
    await expect(client.connect()).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
  });

  it('sends the token in HELLO; a wrong token ends with UNAUTHORIZED', async () => {
    const server = await startServer('secret');
    const good = await readyClient(server, { token: 'secret' });
    expect(await good.ping()).toBe('PONG');
    const bad = clientFor(server, { token: 'wrong', retryStrategy: () => null });
    await expect(bad.ping()).rejects.toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
      cause: { code: ErrorCode.UNAUTHORIZED },
    });
  });

  it('close() lets commands in flight finish and rejects commands issued afterwards', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    server.delayMs = 100;
    const inFlight = client.set('k', 'v');
    await new Promise((resolve) => setTimeout(resolve, 20));
    await client.close();
    expect(await inFlight).toBe('OK');
    await expect(client.get('k')).rejects.toMatchObject({ code: ErrorCode.CONNECTION_CLOSED });
    await expect(client.connect()).rejects.toMatchObject({ code: ErrorCode.CONNECTION_CLOSED });
    await client.close();
  });

  it('close() rejects commands still queued (never sent) with CONNECTION_CLOSED', async () => {
    const server = await startServer();
    await server.stop();
    const client = clientFor(server);
    const queued = client.get('k');
    await client.close();
    await expect(queued).rejects.toMatchObject({ code: ErrorCode.CONNECTION_CLOSED });
  });

  it('disconnect() fails commands in flight at once', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    server.mode = 'silent';
    const inFlight = client.get('k');
    await new Promise((resolve) => setTimeout(resolve, 20));
    await client.disconnect();
    await expect(inFlight).rejects.toMatchObject({ code: ErrorCode.CONNECTION_CLOSED });
  });
});

describe('offline queue and deadlines', () => {
  it('rejects with BUSY at once past maxQueueLength', async () => {
    const server = await startServer();
    await server.stop();
    const client = clientFor(server, { maxQueueLength: 2, commandTimeout: 200 });
    const first = expect(client.get('a')).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    const second = expect(client.get('b')).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    const third = client.get('c');
    expect(client.queueLength).toBe(2);
    await expect(third).rejects.toMatchObject({ code: ErrorCode.BUSY });
    await first;
    await second;
  });

  it('counts time in the queue: TIMEOUT, not executed, although the command was never sent', async () => {
    // A server that accepts connections and never answers HELLO: the attempt outlives the command.
    const mute = await listenMute();
    const client = createClient({ port: mute.port, commandTimeout: 100, connectTimeout: 60_000 });
    clients.push(client);
    const error = await client.set('k', 'v').catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: ErrorCode.TIMEOUT, notExecuted: true });
    expect((error as Error).message).toMatch(/queued/);
    expect(client.queueLength).toBe(0);
    await client.disconnect();
    await mute.close();
  });

  it('fails with TIMEOUT when the server never answers', async () => {
    const server = await startServer();
    const client = await readyClient(server, { commandTimeout: 100 });
    server.mode = 'silent';
    await expect(client.get('k')).rejects.toMatchObject({ code: ErrorCode.TIMEOUT });
    await expect(client.get('k', { timeout: 50 })).rejects.toMatchObject({ code: ErrorCode.TIMEOUT });
  });

  it('fails at once with UNAVAILABLE while disconnected when enableOfflineQueue is false', async () => {
    const server = await startServer();
    await server.stop();
    const client = clientFor(server, { enableOfflineQueue: false });
    await expect(client.get('k')).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    expect(client.queueLength).toBe(0);
  });

  it('aborts a queued command, an in-flight command and an already-aborted one with ABORTED', async () => {
    const server = await startServer();
    await server.stop();
    const client = clientFor(server);
    const queuedAbort = new AbortController();
    const queued = client.get('k', { signal: queuedAbort.signal });
    queuedAbort.abort();
    await expect(queued).rejects.toMatchObject({ code: ErrorCode.ABORTED });
    expect(client.queueLength).toBe(0);

    await server.start();
    await connectEventually(client);
    server.mode = 'silent';
    const flightAbort = new AbortController();
    const inFlight = client.get('k', { signal: flightAbort.signal });
    await new Promise((resolve) => setTimeout(resolve, 20));
    flightAbort.abort();
    await expect(inFlight).rejects.toMatchObject({ code: ErrorCode.ABORTED });
    await expect(client.get('k', { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: ErrorCode.ABORTED,
    });
  });

  it('keeps one abort listener per signal however many commands share it', async () => {
    // Node warns (MaxListenersExceededWarning, read as a leak) past 10 listeners on one signal.
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(warning);
    };
    process.on('warning', onWarning);
    try {
      const server = await startServer();
      const client = await readyClient(server, { commandTimeout: 60_000 });
      const many = 50;

      // Answered: nothing stays on the signal.
      const answered = new AbortController();
      await Promise.all(
        Array.from({ length: many }, (_, i) => client.get(`a${i}`, { signal: answered.signal })),
      );
      expect(getEventListeners(answered.signal, 'abort')).toHaveLength(0);

      // In flight: one listener, and one abort ends every command.
      server.mode = 'silent';
      const inFlight = new AbortController();
      const sent = Array.from({ length: many }, (_, i) => client.get(`f${i}`, { signal: inFlight.signal }));
      expect(getEventListeners(inFlight.signal, 'abort')).toHaveLength(1);
      inFlight.abort();
      for (const command of sent) await expect(command).rejects.toMatchObject({ code: ErrorCode.ABORTED });
      expect(getEventListeners(inFlight.signal, 'abort')).toHaveLength(0);

      // Waiting to be resent after a refusal, and queued while not connected.
      server.mode = 'normal';
      server.failNext = new Array<string>(10_000).fill(ErrorCode.BUSY);
      const waiting = new AbortController();
      const refused = Array.from({ length: many }, (_, i) =>
        client.set(`r${i}`, 'v', { signal: waiting.signal }),
      );
      while (server.count(Op.SET) < 2 * many) await new Promise((resolve) => setTimeout(resolve, 5));
      const down = await startServer();
      await down.stop();
      const queuedClient = clientFor(down, { commandTimeout: 60_000 });
      const queued = Array.from({ length: many }, (_, i) =>
        queuedClient.get(`q${i}`, { signal: waiting.signal }),
      );
      expect(queuedClient.queueLength).toBe(many);
      expect(getEventListeners(waiting.signal, 'abort')).toHaveLength(1);
      waiting.abort();
      const outcomes = await Promise.allSettled([...refused, ...queued]);
      for (const outcome of outcomes) {
        expect(outcome).toMatchObject({ status: 'rejected', reason: { code: ErrorCode.ABORTED } });
      }
      expect(queuedClient.queueLength).toBe(0);
      expect(getEventListeners(waiting.signal, 'abort')).toHaveLength(0);
      server.failNext = [];
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((warning) => warning.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('retries', () => {
  it('resends a command that certainly was not executed, maxRetriesPerRequest times', async () => {
    const server = await startServer();
    const client = await readyClient(server);
    // A failover or a freeze: refused several times (not executed), then served.
    server.failNext = [ErrorCode.UNAVAILABLE, ErrorCode.BUSY, ErrorCode.SHUTTING_DOWN, ErrorCode.UNAVAILABLE];
    expect(await client.set('k', 'v')).toBe('OK');
    expect(server.count(Op.SET)).toBe(5);
    const once = await readyClient(server, { maxRetriesPerRequest: 1 });
    server.failNext = [ErrorCode.BUSY, ErrorCode.SHUTTING_DOWN];
    await expect(once.set('k', 'v')).rejects.toMatchObject({ code: ErrorCode.SHUTTING_DOWN });
    const noRetry = await readyClient(server, { maxRetriesPerRequest: 0 });
    server.failNext = [ErrorCode.UNAVAILABLE];
    await expect(noRetry.get('k')).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
  });

  it('keeps resending a refused command until its deadline, then fails with the refusal, not a TIMEOUT', async () => {
    const server = await startServer();
    const client = await readyClient(server, { commandTimeout: 400, maxRetriesPerRequest: 1000 });
    server.failNext = new Array<string>(10_000).fill(ErrorCode.UNAVAILABLE);
    const error = await client.set('k', 'v').catch((caught: unknown) => caught);
    // The server's answer (not executed): the client stopped when the next wait would pass the deadline.
    expect(error).toMatchObject({ code: ErrorCode.UNAVAILABLE, notExecuted: true });
    // Spaced by the backoff: several attempts, far fewer than an immediate resend loop would make.
    expect(server.count(Op.SET)).toBeGreaterThan(2);
    expect(server.count(Op.SET)).toBeLessThan(40);
    server.failNext = [];
  });

  it('ends a resend wait on abort and on close(), with nothing sent after', async () => {
    const server = await startServer();
    const client = await readyClient(server, { commandTimeout: 60_000 });
    server.failNext = new Array<string>(10_000).fill(ErrorCode.BUSY);
    const abort = new AbortController();
    const aborted = client.set('a', 'v', { signal: abort.signal });
    while (server.count(Op.SET) < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    abort.abort();
    await expect(aborted).rejects.toMatchObject({ code: ErrorCode.ABORTED });

    const before = server.count(Op.SET);
    const waiting = client.set('b', 'v').catch((caught: unknown) => caught);
    while (server.count(Op.SET) < before + 2) await new Promise((resolve) => setTimeout(resolve, 5));
    // close() waits for commands in flight; this one ends with the refusal that made it wait.
    await client.close();
    expect(await waiting).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true });
    const sent = server.count(Op.SET);
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(server.count(Op.SET)).toBe(sent);
    server.failNext = [];
  });

  it('never resends an indeterminate failure (TIMEOUT, INTERNAL)', async () => {
    const server = await startServer();
    const client = await readyClient(server, { commandTimeout: 100, maxRetriesPerRequest: 5 });
    server.delayMs = 300;
    await expect(client.set('k', 'v')).rejects.toMatchObject({ code: ErrorCode.TIMEOUT });
    expect(server.count(Op.SET)).toBe(1);
    server.delayMs = 0;
    server.failNext = [ErrorCode.INTERNAL];
    await expect(client.set('k', 'v')).rejects.toMatchObject({ code: ErrorCode.INTERNAL });
    expect(server.count(Op.SET)).toBe(2);
  });

  it('names the refusal of the earlier attempts when its deadline passes on a later one (as cause)', async () => {
    const server = await startServer();
    const client = await readyClient(server, { commandTimeout: 400, maxRetriesPerRequest: 5 });
    // Refused once (not executed), then sent again and never answered in time.
    server.stalled = true;
    const outcome = client.set('k', 'v').catch((failure: unknown) => failure);
    while (server.count(Op.SET) < 1) await new Promise((resolve) => setTimeout(resolve, 5));
    server.failNext = [ErrorCode.BUSY];
    server.releaseHeld();
    // The resend comes after the backoff: held from now on.
    server.stalled = true;
    const error = (await outcome) as DstoreError;
    expect(error).toMatchObject({ code: ErrorCode.TIMEOUT, notExecuted: false });
    expect(error.message).toContain('no response within 400 ms');
    expect(error.message).toContain('1 earlier attempt was refused, the last with BUSY');
    expect(error.cause).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true });
    expect(server.count(Op.SET)).toBe(2);
    server.releaseHeld();
  });

  it("reports the server's TIMEOUT as the server's (its message kept, as cause), not as its own deadline", async () => {
    // A balancer whose --request-timeout (2 s) towards a node passed answers TIMEOUT long before
    // the client's own 10 s; the error used to say "no response within 10000 ms".
    const server = await startServer();
    const client = await readyClient(server, { commandTimeout: 10_000, maxRetriesPerRequest: 5 });
    server.failNext = [ErrorCode.TIMEOUT];
    const error = (await client.set('k', 'v').catch((failure: unknown) => failure)) as DstoreError;
    expect(error).toMatchObject({ code: ErrorCode.TIMEOUT, notExecuted: false });
    expect(error.message).toContain('fake failure TIMEOUT');
    expect(error.message).not.toContain('no response within 10000 ms');
    expect(error.cause).toMatchObject({ code: ErrorCode.TIMEOUT, message: 'fake failure TIMEOUT' });
    // Indeterminate: never resent.
    expect(server.count(Op.SET)).toBe(1);
  });

  it('does not resend commands in flight when the connection drops', async () => {
    const server = await startServer();
    const client = await readyClient(server, { maxRetriesPerRequest: 5, commandTimeout: 300 });
    server.mode = 'silent';
    const inFlight = client.set('k', 'v');
    await new Promise((resolve) => setTimeout(resolve, 20));
    server.dropConnections();
    // The peer's FIN starts a graceful close that waits for answers, so the outcome is either.
    const error = await inFlight.catch((caught: unknown) => caught);
    expect([ErrorCode.CONNECTION_CLOSED, ErrorCode.TIMEOUT]).toContain((error as DstoreError).code);
    expect(server.count(Op.SET)).toBe(1);
  });
});

/**
 * Errors say what happened, at once. No test asserts a duration: the commands have a deadline far
 * beyond the test timeout, so only an early failure lets them pass.
 */
describe('connection failures fail commands at once', () => {
  const patient = { commandTimeout: 600_000, connectTimeout: 5000 } as const;

  it('nothing listening: UNAVAILABLE, not executed, cause ECONNREFUSED', async () => {
    const server = await startServer();
    await server.stop();
    const client = clientFor(server, patient);
    const error = await client.get('k').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DstoreError);
    expect(error).toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
      cause: { code: 'ECONNREFUSED' },
    });
    expect((error as Error).message).toMatch(/ECONNREFUSED/);
    expect(client.queueLength).toBe(0);
    // Later commands fail the same way at once while no server can be reached.
    await expect(client.set('k', 'v')).rejects.toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
    });
    // connect() too.
    await expect(client.connect()).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
  });

  it('a host that does not resolve: UNAVAILABLE, not executed, cause ENOTFOUND', async () => {
    // `.invalid` never resolves (RFC 2606): the resolver answers at once, no network needed.
    const client = createClient({ host: 'no-such-balancer.invalid', port: 7379, ...patient });
    clients.push(client);
    const error = await client.get('k').catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: ErrorCode.UNAVAILABLE, notExecuted: true });
    expect((error as Error).message).toMatch(/ENOTFOUND|EAI_AGAIN/);
  });

  it('a TLS balancer the client does not trust: UNAVAILABLE, not executed, the TLS failure as cause', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-client-pki-'));
    const pki = createTestPki(dir);
    const server = new FrameServer({
      tls: { cert: pki.peer.cert, key: pki.peer.key },
      onRequest: () => undefined,
    });
    const { port } = await server.listen();
    try {
      const client = createClient({ port, tls: { ca: pki.rogueCa.cert }, ...patient });
      clients.push(client);
      const error = await client.get('k').catch((caught: unknown) => caught);
      expect(error).toMatchObject({ code: ErrorCode.UNAVAILABLE, notExecuted: true });
      expect((error as Error).message).toMatch(/certificate/);
    } finally {
      await server.close(100);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a wrong token: UNAVAILABLE with cause UNAUTHORIZED, while the client keeps retrying', async () => {
    const server = await startServer('secret');
    const client = clientFor(server, { ...patient, token: 'wrong' });
    const error = await client.get('k').catch((caught: unknown) => caught);
    expect(error).toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
      cause: { code: ErrorCode.UNAUTHORIZED },
    });
    expect((error as Error).message).toMatch(/UNAUTHORIZED|invalid token/);
    expect(server.count(Op.GET)).toBe(0);
  });

  it('a server asking for a password hash cheaper than the floor: refused before any proof is sent', async () => {
    // A rogue server (or a downgrade on a plaintext path): the weakest cost, a salt of its choice.
    const server = await startRogueKdfServer('scrypt:1024,1,1', ErrorCode.UNAUTHORIZED);
    const { port, proofs } = server;
    try {
      const once = { ...patient, port, user: 'app', password: 'app-password', retryStrategy: () => null };
      const client = createClient(once);
      clients.push(client);
      const error = await client.get('k').catch((caught: unknown) => caught);
      expect(error).toMatchObject({
        code: ErrorCode.UNAVAILABLE,
        cause: {
          code: ErrorCode.UNAUTHORIZED,
          message: expect.stringMatching(/cheaper than this client's floor/),
        },
      });
      expect(proofs).toHaveLength(0);
      // A floor lowered on purpose (hashes made cheap knowingly): the proof goes out.
      const lowered = createClient({ ...once, minScryptCost: { N: 1024, r: 1, p: 1 } });
      clients.push(lowered);
      await lowered.get('k').catch(() => undefined);
      expect(proofs).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it('an HTTP server (the admin port): says so, does not retry in a loop', async () => {
    let requests = 0;
    const http = await listen(
      createHttpServer((_request, response) => {
        requests++;
        response.end('{}');
      }),
    );
    const client = createClient({ port: http.port, ...patient });
    clients.push(client);
    const ended = nextEvent(client, 'end');
    const error = await client.get('k').catch((caught: unknown) => caught);
    expect(error).toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
      cause: { code: ErrorCode.VERSION_MISMATCH },
    });
    expect((error as Error).message).toMatch(/HTTP server.*admin port/);
    await ended;
    expect(client.status).toBe('end');
    // One attempt, no reconnect loop (an HTTP server answers the HELLO bytes with 400 and no request).
    expect(requests).toBe(0);
    await http.close();
  });

  it('after a lost connection, waits for the next attempt when the deadline allows it', async () => {
    const server = await startServer();
    const client = await readyClient(server, { retryStrategy: () => 20 });
    const closed = nextEvent(client, 'close');
    await server.stop();
    await closed;
    const pending = client.set('k', 'v');
    await server.start();
    expect(await pending).toBe('OK');
  });
});

describe('constructor forms', () => {
  it('createClient(port), (port, host), (port, host, options) and { url }', () => {
    const lazy = { lazyConnect: true } as const;
    const byPort = createClient(7001, lazy);
    const byPortHost = createClient(7002, 'localhost', lazy);
    const byUrl = createClient({ url: 'dstore://10.0.0.1:7003', ...lazy });
    const urlOverridden = createClient({ url: 'dstore://10.0.0.1:7003', port: 7004, ...lazy });
    clients.push(byPort, byPortHost, byUrl, urlOverridden);
    expect(byPort.options).toMatchObject({ host: '127.0.0.1', port: 7001 });
    expect(byPortHost.options).toMatchObject({ host: 'localhost', port: 7002 });
    expect(byUrl.options).toMatchObject({ host: '10.0.0.1', port: 7003 });
    expect(urlOverridden.options).toMatchObject({ host: '10.0.0.1', port: 7004 });
  });

  it('password is an alias of token', async () => {
    const server = await startServer('secret');
    const client = await readyClient(server, { password: 'secret' });
    expect(client.options.token).toBe('secret');
    expect(await client.ping()).toBe('PONG');
    expect(() => createClient({ token: 'a', password: 'b', lazyConnect: true })).toThrow(/alias of token/);
  });

  it('refuses unknown options, naming the right one', () => {
    const refuse = (options: object): unknown => {
      try {
        createClient({ lazyConnect: true, ...options } as ClientOptions);
      } catch (error) {
        return error;
      }
      return undefined;
    };
    expect(refuse({ socket: { host: 'h', port: 1 } })).toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
      message: expect.stringMatching(/socket.*use host, port/),
    });
    expect(refuse({ db: 1 })).toMatchObject({ message: expect.stringMatching(/keyPrefix/) });
    expect(refuse({ hots: 'h' })).toMatchObject({
      message: expect.stringMatching(/unknown option hots.*host, port/),
    });
    expect(() => createClient('not a url')).toThrow(DstoreError);
  });
});
