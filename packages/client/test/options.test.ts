import { DeadlineSweeper } from '@dstore/protocol/internal';
import { describe, expect, it } from 'vitest';
import { type ClientOptions, DEFAULT_CLIENT_OPTIONS, ErrorCode } from '../src/index.js';
import { OfflineQueue } from '../src/offline-queue.js';
import { parseDstoreUrl, resolveClientOptions } from '../src/options.js';

describe('options', () => {
  it('has the documented defaults', () => {
    const options = resolveClientOptions();
    expect(options).toMatchObject({
      host: '127.0.0.1',
      port: 7379,
      connectTimeout: 10_000,
      commandTimeout: 5000,
      maxRetriesPerRequest: 20,
      enableOfflineQueue: true,
      maxQueueLength: 1000,
      lazyConnect: false,
      keyPrefix: '',
      name: '',
      routing: 'balancer',
      maxRedirections: 5,
      mapRefreshInterval: 30_000,
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
    expect(parseDstoreUrl('dstore://app:p%40ss@h:1')).toEqual({
      host: 'h',
      port: 1,
      user: 'app',
      password: 'p@ss',
    });
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
    expect(() => resolveClientOptions({ routing: 'cluster' as 'direct' })).toThrow(/routing/);
    expect(() => resolveClientOptions({ maxRedirections: -1 })).toThrow(/maxRedirections/);
    expect(() => resolveClientOptions({ mapRefreshInterval: 10 })).toThrow(/mapRefreshInterval/);
    // A port nobody can connect to, and options of the wrong type that would otherwise act unseen.
    expect(() => resolveClientOptions({ port: 0 })).toThrow(/port/);
    expect(() => resolveClientOptions({ enableOfflineQueue: 'false' as unknown as boolean })).toThrow(
      expect.objectContaining({
        code: ErrorCode.INVALID_ARGUMENT,
        message: expect.stringMatching(/enableOfflineQueue/),
      }),
    );
    expect(() => resolveClientOptions({ lazyConnect: 1 as unknown as boolean })).toThrow(/lazyConnect/);
    expect(() => resolveClientOptions({ keyPrefix: 5 as unknown as string })).toThrow(
      expect.objectContaining({
        code: ErrorCode.INVALID_ARGUMENT,
        message: expect.stringMatching(/keyPrefix/),
      }),
    );
    expect(() => resolveClientOptions({ keyPrefix: 'p'.repeat(1024) })).toThrow(/keyPrefix is 1024 bytes/);
    expect(resolveClientOptions({ keyPrefix: 'p'.repeat(1000) }).keyPrefix).toHaveLength(1000);
  });

  it('takes the routing options from a URL too', () => {
    expect(
      resolveClientOptions('dstore://h:1?routing=direct&maxRedirections=3&mapRefreshInterval=5000'),
    ).toMatchObject({ routing: 'direct', maxRedirections: 3, mapRefreshInterval: 5000 });
  });

  it('lets explicit options override the URL, and ignores undefined ones', () => {
    const options = resolveClientOptions('dstore://h:9?commandTimeout=100', {
      commandTimeout: 300,
      host: undefined,
    });
    expect(options).toMatchObject({ host: 'h', port: 9, commandTimeout: 300 });
  });
});

describe('several servers', () => {
  it('parses a comma-separated host list in a URL into servers, with the token and parameters', () => {
    expect(parseDstoreUrl('dstore://h1:7001,h2:7002')).toEqual({
      servers: [
        { host: 'h1', port: 7001 },
        { host: 'h2', port: 7002 },
      ],
    });
    expect(parseDstoreUrl('dstore://:s%40cret@h1,[::1]:7002,h3:7003/?commandTimeout=250')).toEqual({
      token: 's@cret',
      commandTimeout: 250,
      servers: [{ host: 'h1' }, { host: '::1', port: 7002 }, { host: 'h3', port: 7003 }],
    });
    const options = resolveClientOptions('dstore://h1,h2:7002');
    expect(options.servers).toEqual([
      { host: 'h1', port: 7379 },
      { host: 'h2', port: 7002 },
    ]);
    // host and port stay those of the first server, for code that reads them.
    expect(options).toMatchObject({ host: 'h1', port: 7379 });
  });

  it('resolves servers from the option, and host/port into a one-server list', () => {
    const options = resolveClientOptions({ servers: [{ host: 'a', port: 1 }, { host: 'b' }] });
    expect(options.servers).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 7379 },
    ]);
    expect(resolveClientOptions({ host: 'h', port: 9 }).servers).toEqual([{ host: 'h', port: 9 }]);
    expect(resolveClientOptions().servers).toEqual([{ host: '127.0.0.1', port: 7379 }]);
    // Overrides replace the URL's servers; a lone port still applies to a one-host URL.
    expect(resolveClientOptions('dstore://a:1,b:2', { servers: [{ host: 'c', port: 3 }] }).servers).toEqual([
      { host: 'c', port: 3 },
    ]);
    expect(resolveClientOptions('dstore://a:1', { port: 4 }).servers).toEqual([{ host: 'a', port: 4 }]);
  });

  it('refuses servers together with host/port, naming the conflict', () => {
    const conflicts: [ClientOptions | string, ClientOptions][] = [
      [{ servers: [{ host: 'a', port: 1 }], host: 'b' }, {}],
      [{ servers: [{ host: 'a', port: 1 }], port: 2 }, {}],
      [{}, { servers: [{ host: 'a', port: 1 }], host: 'b' }],
      ['dstore://a:1,b:2', { host: 'c' }],
    ];
    for (const [input, overrides] of conflicts) {
      expect(() => resolveClientOptions(input, overrides)).toThrow(
        expect.objectContaining({
          code: ErrorCode.INVALID_ARGUMENT,
          message: expect.stringMatching(/conflicting options.*servers.*host\/port|host\/port.*servers/),
        }),
      );
    }
  });

  it('refuses bad server lists with INVALID_ARGUMENT', () => {
    const bad: ClientOptions[] = [
      { servers: [] },
      { servers: [{ host: '', port: 1 }] },
      {
        servers: [
          { host: 'a', port: 1 },
          { host: 'b', port: 70_000 },
        ],
      },
      { servers: [{ host: 'a', port: 1.5 }] },
    ];
    for (const options of bad) {
      expect(() => resolveClientOptions(options), JSON.stringify(options)).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
      );
    }
    expect(() => resolveClientOptions({ servers: [{ host: 'a' }, { host: 'b', port: -1 }] })).toThrow(
      /servers\[1\]\.port/,
    );
    for (const url of ['dstore://a:1,,b:2', 'dstore://a:1,b:99999', 'dstore://a:1,b c:2']) {
      expect(() => parseDstoreUrl(url), url).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
      );
    }
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

describe('credentials', () => {
  it('takes user and password together, or a token, never both', () => {
    expect(resolveClientOptions({ user: 'app', password: 'pw' })).toMatchObject({
      user: 'app',
      password: 'pw',
    });
    expect(() => resolveClientOptions({ user: 'app' })).toThrow(/user needs its password/);
    expect(() => resolveClientOptions({ user: 'app', password: 'pw', token: 't' })).toThrow(/conflicting/);
  });

  it('takes minScryptCost as an object or a URL parameter, and refuses a malformed one', () => {
    const cheap = { N: 1024, r: 8, p: 1 };
    expect(resolveClientOptions({ user: 'app', password: 'pw', minScryptCost: cheap }).minScryptCost).toEqual(
      cheap,
    );
    expect(resolveClientOptions('dstore://app:pw@h?minScryptCost=1024,8,1').minScryptCost).toEqual(cheap);
    expect(resolveClientOptions('dstore://app:pw@h').minScryptCost).toBeUndefined();
    expect(() => resolveClientOptions('dstore://h?minScryptCost=1000,8,1')).toThrow(/not a scrypt cost/);
    expect(() => resolveClientOptions({ minScryptCost: { N: 1024, r: 0, p: 1 } })).toThrow(/minScryptCost/);
  });
});
