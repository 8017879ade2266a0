/**
 * MULTI / EXEC / DISCARD / WATCH / UNWATCH on the RESP port, with real clients (redis-cli reading a
 * script on one connection, ioredis 5, node-redis 4 and 5 over RESP3) against three real nodes: a
 * transaction on one key runs atomically on its owner, as Redis runs it; a key of another hash tag
 * is refused (transactions over several keys of one tag: resp-multi-key-transactions.test.ts).
 */
import type { Redis } from 'ioredis';
import { createClient as createClient4 } from 'redis4';
import { createClient as createClient5 } from 'redis5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Resources, waitFor } from './helpers.js';
import { ioredisOf, keyPerNode, redisCliScript as runScript, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let port: number;

beforeAll(async () => {
  ({ respPort: port } = await startRespCluster(resources, 3));
}, 60_000);
afterAll(() => resources.releaseAll());

/** redis-cli reading `lines` on one connection to the RESP port. */
function redisCliScript(lines: readonly string[]): Promise<string[]> {
  return runScript(port, lines);
}

function ioredis(): Redis {
  return ioredisOf(resources, port);
}

describe('MULTI / EXEC on the RESP port', () => {
  it('answers a redis-cli script exactly as Redis 7 does (captured from redis-server 7.0)', async () => {
    const script = [
      'EXEC',
      'DISCARD',
      'MULTI',
      'MULTI',
      'SET tk abc',
      'INCR tk',
      'APPEND tk !',
      'GET tk',
      'TTL tk',
      'EXPIRE tk 100',
      'TTL tk',
      'EXISTS tk tk',
      'MGET tk',
      'STRLEN tk',
      'GETRANGE tk 0 1',
      'DEL tk tk',
      'GET tk',
      'INCRBY tk 5',
      'EXEC',
      'MULTI',
      'SET tk 1',
      'FOOBAR x',
      'EXEC',
      'GET tk',
      'MULTI',
      'SET tk 1',
      'INCR tk x',
      'EXEC',
      'MULTI',
      'WATCH tk',
      'SET tk 2',
      'DISCARD',
      'GET tk',
      'WATCH tk',
      'MULTI',
      'INCR tk',
      'EXEC',
      'UNWATCH',
      'MULTI',
      'EXEC',
      'SET tk notnum',
      'MULTI',
      'INCR tk',
      'SET tk 10',
      'INCRBYFLOAT tk 0.5',
      'SETBIT tk 7 1',
      'GETBIT tk 7',
      'EXEC',
    ];
    const redis7 = [
      'ERR EXEC without MULTI',
      'ERR DISCARD without MULTI',
      'OK',
      'ERR MULTI calls can not be nested',
      ...Array<string>(14).fill('QUEUED'),
      'OK',
      // dstore names the error's code after Redis's prefix and keeps Redis's words.
      'ERR NOT_AN_INTEGER: value is not an integer or out of range',
      '4',
      'abc!',
      '-1',
      '1',
      '100',
      '2',
      'abc!',
      '4',
      'ab',
      '1',
      '5',
      'OK',
      'QUEUED',
      "ERR unknown command 'FOOBAR', with args beginning with: 'x' ",
      'EXECABORT Transaction discarded because of previous errors.',
      '5',
      'OK',
      'QUEUED',
      "ERR wrong number of arguments for 'incr' command",
      'EXECABORT Transaction discarded because of previous errors.',
      'OK',
      'ERR WATCH inside MULTI is not allowed',
      'QUEUED',
      'OK',
      '5',
      'OK',
      'OK',
      'QUEUED',
      '6',
      'OK',
      'OK',
      'OK',
      'OK',
      ...Array<string>(5).fill('QUEUED'),
      'ERR NOT_AN_INTEGER: value is not an integer or out of range',
      'OK',
      '10.5',
      '1',
      '1',
    ];
    // redis-cli prints an empty line for the empty array of MULTI / EXEC: filtered with the others.
    expect(await redisCliScript(script)).toEqual(redis7);
  });

  it('runs ioredis multi() on one key atomically, with per-command errors in the result as Redis', async () => {
    const client = ioredis();
    await client.connect();
    expect(
      await client.multi().set('rl:a', '0').incr('rl:a').expire('rl:a', 60).ttl('rl:a').get('rl:a').exec(),
    ).toEqual([
      [null, 'OK'],
      [null, 1],
      [null, 1],
      [null, 60],
      [null, '1'],
    ]);
    const withError = await client.multi().set('rl:b', 'text').incr('rl:b').append('rl:b', '!').exec();
    expect(withError?.[0]).toEqual([null, 'OK']);
    expect(String(withError?.[1]?.[0])).toContain('value is not an integer or out of range');
    expect(withError?.[2]).toEqual([null, 5]);
    expect(await client.get('rl:b')).toBe('text!');
  });

  it('keeps every transaction whole under concurrency: INCR then GET answer the same number', async () => {
    const clients = Array.from({ length: 4 }, () => ioredis());
    await Promise.all(clients.map((client) => client.connect()));
    const perClient = 100;
    const pairs = await Promise.all(
      clients.map(async (client) => {
        const seen: [unknown, unknown][] = [];
        for (let index = 0; index < perClient; index++) {
          const result = await client.multi().incr('race').get('race').exec();
          seen.push([result?.[0]?.[1], result?.[1]?.[1]]);
        }
        return seen;
      }),
    );
    const all = pairs.flat();
    // Each GET saw exactly its own INCR: no other client's INCR ran in between.
    for (const [incremented, read] of all) expect(String(incremented)).toBe(read);
    expect(new Set(all.map(([incremented]) => incremented)).size).toBe(4 * perClient);
    expect(await clients[0]!.get('race')).toBe(String(4 * perClient));
  });

  it('makes WATCH an optimistic lock: a changed key aborts EXEC with null, a retry loop counts exactly', async () => {
    const [watcher, other] = [ioredis(), ioredis()];
    await Promise.all([watcher.connect(), other.connect()]);
    await watcher.set('w', '1');
    await watcher.watch('w');
    await other.set('w', '2');
    expect(await watcher.multi().set('w', '3').exec()).toBeNull();
    expect(await watcher.get('w')).toBe('2');
    // Unchanged since WATCH: runs; an expired-then-absent or deleted key counts as changed too.
    await watcher.watch('w');
    expect(await watcher.multi().set('w', '4').exec()).toEqual([[null, 'OK']]);
    await watcher.watch('w');
    await other.del('w');
    expect(await watcher.multi().set('w', '5').exec()).toBeNull();

    // Four connections add 1 to a counter 50 times each with WATCH / GET / MULTI / SET / EXEC.
    const clients = Array.from({ length: 4 }, () => ioredis());
    await Promise.all(clients.map((client) => client.connect()));
    let aborted = 0;
    await Promise.all(
      clients.map(async (client) => {
        for (let added = 0; added < 50; ) {
          await client.watch('counter');
          const now = Number((await client.get('counter')) ?? '0');
          const result = await client
            .multi()
            .set('counter', String(now + 1))
            .exec();
          if (result === null) aborted++;
          else added++;
        }
      }),
    );
    expect(await clients[0]!.get('counter')).toBe('200');
    // The loop above raced: some EXECs must have found the key changed (else WATCH did nothing).
    expect(aborted).toBeGreaterThan(0);
  });

  it('refuses a key of another hash tag (CROSSSLOT) and then discards the transaction, as Redis Cluster does', async () => {
    const crossSlot =
      "CROSSSLOT Keys in request don't hash to the same slot (a dstore transaction uses keys of one hash tag, e.g. {user:7}:a and {user:7}:b)";
    expect(
      await redisCliScript([
        'MULTI',
        'SET {x}:1 a',
        'SET {y}:2 b',
        'GET {x}:1',
        'EXEC',
        'GET {x}:1',
        'WATCH {x}:1 {y}:2',
        // PING and ECHO are queued and answered in EXEC's array, as Redis does; other commands
        // without keys are refused.
        'MULTI',
        'PING',
        'ECHO hi',
        'SET {x}:1 c',
        'EXEC',
        'MULTI',
        'TIME',
        'EXEC',
      ]),
    ).toEqual([
      'OK',
      'QUEUED',
      crossSlot,
      'QUEUED',
      'EXECABORT Transaction discarded because of previous errors.',
      crossSlot,
      'OK',
      'QUEUED',
      'QUEUED',
      'QUEUED',
      'PONG',
      'hi',
      'OK',
      'OK',
      "ERR 'time' cannot be queued: a dstore transaction holds key-value commands on keys of one hash tag, PING and ECHO",
      'EXECABORT Transaction discarded because of previous errors.',
    ]);
    const client = ioredis();
    await client.connect();
    // Keys without a tag are placed by the whole key: two of them have two positions.
    await expect(client.multi().set('y1', 'a').set('y2', 'b').exec()).rejects.toThrow(/EXECABORT/);
    expect(await client.exists('y1', 'y2')).toBe(0);
  });

  it('bounds what a transaction may queue (the batch limit), answering typed errors', async () => {
    const client = ioredis();
    await client.connect();
    const transaction = client.multi();
    for (let index = 0; index < 1001; index++) transaction.incr('many');
    await expect(transaction.exec()).rejects.toThrow(/EXECABORT/);
    expect(await client.get('many')).toBeNull();
    const fits = client.multi();
    for (let index = 0; index < 1000; index++) fits.incr('many');
    const results = await fits.exec();
    expect(results?.[999]).toEqual([null, 1000]);
    // Arguments past one frame (the TRANSACT must fit one): refused while queueing, nothing runs.
    const value = 'v'.repeat(400 * 1024);
    const large = client.multi().set('large', value).append('large', value).append('large', value);
    await expect(large.exec()).rejects.toThrow(/EXECABORT/);
    expect(await client.exists('large')).toBe(0);
    // The connection still serves, and a transaction within the bounds runs.
    expect(await client.multi().set('large', value).strlen('large').exec()).toEqual([
      [null, 'OK'],
      [null, value.length],
    ]);
  });

  it('serves node-redis 4 and node-redis 5 over RESP3 multi()', async () => {
    const client4 = createClient4({ socket: { port } });
    const client5 = createClient5({ socket: { port }, RESP: 3 });
    resources.add(() => client4.disconnect().catch(() => undefined));
    resources.add(() => client5.destroy());
    await client4.connect();
    await client5.connect();
    expect(await client4.multi().set('nr4', '1').incrBy('nr4', 4).get('nr4').exec()).toEqual(['OK', 5, '5']);
    expect(await client5.multi().set('nr5', '1').incrBy('nr5', 4).pTTL('nr5').get('nr5').exec()).toEqual([
      'OK',
      5,
      -1,
      '5',
    ]);
    // RESP3: a WATCH that failed is a null, not an empty array.
    await client5.watch('nr5');
    await client4.set('nr5', 'changed');
    await expect(client5.multi().get('nr5').exec()).rejects.toThrow(/WATCH|watch/);
  });
});

describe('MULTI / EXEC whose outcome is unknown', () => {
  it('answers EXEC itself with the error, not one per element (an element error says "did nothing")', async () => {
    const local = new Resources();
    let paused: { child: { kill: (signal: NodeJS.Signals) => boolean } } | undefined;
    try {
      // A node that stops answering (SIGSTOP) before its heartbeats say so: the TRANSACT times out.
      const { balancer, respPort, nodes } = await startRespCluster(local, 2, {
        requestTimeoutMs: 300,
        heartbeatTimeoutMs: 60_000,
      });
      const [key] = keyPerNode(balancer, 'unknown:');
      const owner = balancer.ring.get(key!);
      paused = nodes.find((node) => node.ready.id === owner)!;
      const client = ioredisOf(local, respPort);
      await client.connect();
      paused.child.kill('SIGSTOP');
      await expect(client.multi().set(key!, 'v').incr(key!).exec()).rejects.toThrow(/^ERR TIMEOUT/);
      expect(await client.ping()).toBe('PONG');
    } finally {
      paused?.child.kill('SIGCONT');
      await local.releaseAll();
    }
  });
});

describe("MULTI / EXEC and WATCH with the key's node down", () => {
  it('answers typed errors at once (every element, and WATCH), holds nothing, and serves the other keys', async () => {
    const local = new Resources();
    try {
      const { balancer, respPort, nodes } = await startRespCluster(local, 3);
      const [deadKey, liveKey] = keyPerNode(balancer, 'down:');
      const owner = balancer.ring.get(deadKey!);
      const victim = nodes.find((node) => node.ready.id === owner)!;
      victim.child.kill('SIGKILL');
      await waitFor(
        () => [...balancer.membership.nodes].some((node) => node.id === owner && !node.up),
        `${owner} marked down`,
      );
      const client = ioredisOf(local, respPort);
      await client.connect();
      const results = await client.multi().set(deadKey!, 'v').incr(deadKey!).exec();
      expect(results).toHaveLength(2);
      for (const [error] of results!) expect(String(error)).toMatch(/^ReplyError: CLUSTERDOWN UNAVAILABLE/);
      // WATCH of that key fails typed, and the commands after it are not held.
      await expect(client.watch(deadKey!)).rejects.toThrow(/CLUSTERDOWN UNAVAILABLE/);
      expect(await client.ping()).toBe('PONG');
      // The same connection runs a transaction on a key of a node that is up.
      expect(await client.multi().set(liveKey!, '1').incr(liveKey!).exec()).toEqual([
        [null, 'OK'],
        [null, 2],
      ]);
    } finally {
      await local.releaseAll();
    }
  });
});
