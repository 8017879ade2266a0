import { DeadlineSweeper } from '@dstore/protocol';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_CLIENT_OPTIONS,
  ErrorCode,
  OfflineQueue,
  parseDstoreUrl,
  resolveClientOptions,
} from '../src/index.js';

describe('options', () => {
  it('has the documented defaults', () => {
    const options = resolveClientOptions();
    expect(options).toMatchObject({
      host: '127.0.0.1',
      port: 7379,
      connectTimeout: 10_000,
      commandTimeout: 5000,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: true,
      maxQueueLength: 1000,
      lazyConnect: false,
      keyPrefix: '',
      name: '',
    });
    expect(options.token).toBeUndefined();
    const delays = [1, 2, 3, 10].map((times) => DEFAULT_CLIENT_OPTIONS.retryStrategy(times));
    expect(delays[0]).toBeGreaterThanOrEqual(50);
    expect(delays[3]).toBeLessThanOrEqual(2400);
  });

  it('parses dstore:// URLs: host, port, token and option parameters', () => {
    expect(parseDstoreUrl('dstore://10.0.0.5:7000')).toEqual({ host: '10.0.0.5', port: 7000 });
    expect(parseDstoreUrl('dstore://db.local')).toEqual({ host: 'db.local' });
    expect(parseDstoreUrl('dstore://[::1]:7379')).toEqual({ host: '::1', port: 7379 });
    expect(parseDstoreUrl('dstore://:s%40cret@h:1')).toEqual({ host: 'h', port: 1, token: 's@cret' });
    expect(
      parseDstoreUrl(
        'dstore://h:2?commandTimeout=250&lazyConnect=true&keyPrefix=app:&name=web&maxQueueLength=5',
      ),
    ).toEqual({
      host: 'h',
      port: 2,
      commandTimeout: 250,
      lazyConnect: true,
      keyPrefix: 'app:',
      name: 'web',
      maxQueueLength: 5,
    });
  });

  it('refuses bad URLs and bad option values with INVALID_ARGUMENT', () => {
    for (const url of [
      'redis://h:1',
      'not a url',
      'dstore://h:1?commandTimeout=soon',
      'dstore://h:1?lazyConnect=yes',
      'dstore://h:1?bogus=1',
    ]) {
      expect(() => parseDstoreUrl(url), url).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
      );
    }
    expect(() => resolveClientOptions({ commandTimeout: 0 })).toThrow(/commandTimeout/);
    expect(() => resolveClientOptions({ port: 70_000 })).toThrow(/port/);
    expect(() => resolveClientOptions({ maxQueueLength: -1 })).toThrow(/maxQueueLength/);
  });

  it('lets explicit options override the URL, and ignores undefined ones', () => {
    const options = resolveClientOptions('dstore://h:9?commandTimeout=100', {
      commandTimeout: 300,
      host: undefined,
    });
    expect(options).toMatchObject({ host: 'h', port: 9, commandTimeout: 300 });
  });
});

describe('OfflineQueue', () => {
  it('is bounded, keeps order, and expires entries on the sweep', () => {
    const sweeper = new DeadlineSweeper(1000);
    const expired: number[] = [];
    const queue = new OfflineQueue<{ deadline: number; n: number }>(
      3,
      (entry) => expired.push(entry.n),
      sweeper,
    );
    expect(queue.push({ deadline: 10, n: 1 })).toBe(true);
    expect(queue.push({ deadline: 30, n: 2 })).toBe(true);
    const third = { deadline: 20, n: 3 };
    expect(queue.push(third)).toBe(true);
    expect(queue.push({ deadline: 5, n: 4 })).toBe(false);
    expect(sweeper.size).toBe(1);
    queue.sweep(5);
    expect(expired).toEqual([]);
    queue.sweep(20);
    expect(expired).toEqual([1, 3]);
    expect(queue.remove(third)).toBe(false);
    expect(queue.takeAll().map((entry) => entry.n)).toEqual([2]);
    expect(queue.length).toBe(0);
    expect(sweeper.size).toBe(0);
  });

  it('removes an entry (abort) and stops sweeping when empty', () => {
    const sweeper = new DeadlineSweeper(1000);
    const queue = new OfflineQueue<{ deadline: number }>(10, () => undefined, sweeper);
    const entry = { deadline: 100 };
    queue.push(entry);
    expect(queue.remove(entry)).toBe(true);
    expect(sweeper.size).toBe(0);
  });
});
