import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Connection,
  ErrorCode,
  LARGE_REQUEST_BYTES,
  LatencyHistogram,
  Op,
  resolveLimits,
} from '../src/index.js';
import { backoffDelay, DeadlineSweeper, watchAbort } from '../src/internal.js';
import { failOnUncaught, Resources, waitFor } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

describe('Connection bounds', () => {
  it('stops reading at maxServing and resumes as answers go out', async () => {
    const held: (() => void)[] = [];
    let peakServing = 0;
    const { address } = await resources.server({
      connection: { maxServing: 8 },
      onRequest: (request, connection) => {
        peakServing = Math.max(peakServing, connection.serving);
        held.push(() => connection.reply({ op: Op.OK, id: request.id }));
      },
    });
    const client = await resources.connection(address.port, { requestTimeoutMs: 30_000 });
    const answers = Promise.all(Array.from({ length: 200 }, () => client.request({ op: Op.PING })));
    await waitFor(() => held.length >= 8, 5000, 'the first requests');
    // Requests of an already-read chunk may be handed over, but serving stops growing.
    const servedBeforeRelease = held.length;
    while (held.length > 0) {
      held.shift()!();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const release = setInterval(() => {
      while (held.length > 0) held.shift()!();
    }, 1);
    try {
      expect(await answers).toHaveLength(200);
    } finally {
      clearInterval(release);
    }
    expect(servedBeforeRelease).toBeLessThan(200);
    expect(peakServing).toBeLessThanOrEqual(8);
  });

  it('stops reading at maxServingBytes of large requests and resumes as they are answered', async () => {
    const held: (() => void)[] = [];
    // Bodies of a little more than 64 KiB: the fourth reaches the bound.
    const { address } = await resources.server({
      connection: { maxServingBytes: 3.5 * 64 * 1024 },
      onRequest: (request, connection) => held.push(() => connection.reply({ op: Op.OK, id: request.id })),
    });
    const client = await resources.connection(address.port, { requestTimeoutMs: 30_000 });
    const value = new Uint8Array(64 * 1024);
    const answers = Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        client.request({ op: Op.SET, key: new TextEncoder().encode(`k${index}`), value }),
      ),
    );
    await waitFor(() => held.length >= 4, 5000, 'the first requests');
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Requests already read wait unserved: none past the one that reached the bound.
    expect(held.length).toBe(4);
    const release = setInterval(() => {
      while (held.length > 0) held.shift()!();
    }, 1);
    try {
      expect(await answers).toHaveLength(20);
    } finally {
      clearInterval(release);
    }
  });

  it('does not count requests below LARGE_REQUEST_BYTES against maxServingBytes', async () => {
    const held: (() => void)[] = [];
    const { address } = await resources.server({
      connection: { maxServingBytes: LARGE_REQUEST_BYTES },
      onRequest: (request, connection) => held.push(() => connection.reply({ op: Op.OK, id: request.id })),
    });
    const client = await resources.connection(address.port, { requestTimeoutMs: 30_000 });
    const value = new Uint8Array(LARGE_REQUEST_BYTES / 2);
    const answers = Promise.all(
      Array.from({ length: 50 }, (_, index) =>
        client.request({ op: Op.SET, key: new TextEncoder().encode(`k${index}`), value }),
      ),
    );
    // 25 times the bound in small requests, all served before any is answered.
    await waitFor(() => held.length === 50, 5000, 'every small request served');
    for (const answer of held.splice(0)) answer();
    expect(await answers).toHaveLength(50);
  });

  it('closes an idle connection after idleTimeoutMs', async () => {
    const closes: (Error | undefined)[] = [];
    const { address, server } = await resources.server({
      connection: { idleTimeoutMs: 100 },
      onRequest: (request, connection) => connection.reply({ op: Op.OK, id: request.id }),
    });
    server.on('connection', (connection: Connection) =>
      connection.on('close', (error) => closes.push(error)),
    );
    const client = await resources.connection(address.port);
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
    await waitFor(() => !client.isOpen, 5000, 'the idle close');
    expect(closes[0]).toMatchObject({ code: ErrorCode.TIMEOUT });
  });

  it('unregisters closed connections from the sweeper', async () => {
    const sweeper = new DeadlineSweeper(10);
    const { address } = await resources.server({
      onRequest: (request, connection) => connection.reply({ op: Op.OK, id: request.id }),
    });
    const client = await resources.connection(address.port, { sweeper });
    expect(sweeper.size).toBe(1);
    await client.request({ op: Op.PING });
    await client.close();
    expect(sweeper.size).toBe(0);
  });
});

describe('helpers', () => {
  it('resolveLimits refuses incoherent limits', () => {
    expect(() => resolveLimits({ maxKeyBytes: 5000 })).toThrow(RangeError);
    expect(() => resolveLimits({ maxFrameBytes: 0 })).toThrow(RangeError);
    expect(() => resolveLimits({ maxFrameBytes: 2 ** 32 })).toThrow(RangeError);
    expect(resolveLimits({ maxBatchKeys: 5 }).maxBatchKeys).toBe(5);
  });

  it('backoffDelay grows, caps and jitters within bounds', () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      const base = Math.min(2000, 50 * 2 ** (attempt - 1));
      const delay = backoffDelay(attempt);
      expect(delay).toBeGreaterThanOrEqual(base);
      expect(delay).toBeLessThanOrEqual(Math.round(base * 1.2));
    }
    expect(backoffDelay(3, { initialDelayMs: 10, multiplier: 3, jitter: 0 })).toBe(90);
  });

  it('LatencyHistogram percentiles are within 1/64 of the true values', () => {
    const histogram = new LatencyHistogram();
    for (let us = 1; us <= 100_000; us++) histogram.record(us);
    const summary = histogram.summary();
    expect(summary.count).toBe(100_000);
    expect(summary.maxUs).toBe(100_000);
    expect(Math.abs(summary.p50Us - 50_000) / 50_000).toBeLessThan(1 / 64);
    expect(Math.abs(summary.p99Us - 99_000) / 99_000).toBeLessThan(1 / 64);
    const other = new LatencyHistogram();
    other.record(1_000_000);
    histogram.merge(other);
    expect(histogram.maximum()).toBe(1_000_000);
    histogram.reset();
    expect(histogram.summary().count).toBe(0);
  });
});

describe('watchAbort', () => {
  it('shares one listener per signal, calls the watchers still subscribed in order, then lets go', () => {
    const controller = new AbortController();
    const calls: string[] = [];
    const stopA = watchAbort(controller.signal, () => calls.push('a'));
    // B settles C (a command ending its siblings): C is not called after that.
    watchAbort(controller.signal, () => {
      calls.push('b');
      stopC();
    });
    const stopC = watchAbort(controller.signal, () => calls.push('c'));
    const again = (): void => {
      calls.push('twice');
    };
    const stopFirst = watchAbort(controller.signal, again);
    watchAbort(controller.signal, again);
    stopFirst();
    stopFirst();
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    stopA();
    controller.abort();
    expect(calls).toEqual(['b', 'twice']);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);

    const idle = new AbortController();
    const stops = Array.from({ length: 20 }, () => watchAbort(idle.signal, () => calls.push('never')));
    for (const stop of stops) stop();
    expect(getEventListeners(idle.signal, 'abort')).toHaveLength(0);
    idle.abort();
    expect(calls).not.toContain('never');
  });
});
