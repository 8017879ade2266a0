/**
 * MSETNX, RENAME, RENAMENX, COPY and DEL on the RESP port, over keys of one hash tag (one owner, one
 * chain: one atomic TRANSACT each). The same script runs against dstore (a balancer and two real
 * storage nodes) and against a real redis-server started here, through ioredis, and every answer
 * (value or error text) must be Redis's. Then what only a cluster has: keys of two tags are
 * CROSSSLOT (as Redis Cluster), the commands are refused inside MULTI, and concurrent RENAMEs of
 * one source move it exactly once.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Resources } from './helpers.js';
import { answerOf, client, startRedisOnSocket, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let dstore: Redis;
let redis: Redis;
let respPort = 0;

beforeAll(async () => {
  ({ respPort } = await startRespCluster(resources, 2));
  dstore = client(resources, { port: respPort });
  redis = client(resources, { path: await startRedisOnSocket(resources) });
  await Promise.all([dstore.connect(), redis.connect()]);
}, 60_000);
afterAll(() => resources.releaseAll());

describe('MSETNX, RENAME, RENAMENX, COPY over keys of one hash tag', () => {
  it('answers a script exactly as a real redis-server does', async () => {
    const script: string[][] = [
      ['SET', '{t}:a', '1'],
      ['RENAME', '{t}:a', '{t}:b'],
      ['MGET', '{t}:a', '{t}:b'],
      ['RENAME', '{t}:missing', '{t}:x'],
      ['RENAMENX', '{t}:missing', '{t}:x'],
      ['SET', '{t}:c', '2'],
      ['RENAMENX', '{t}:b', '{t}:c'],
      ['RENAMENX', '{t}:b', '{t}:d'],
      ['MGET', '{t}:b', '{t}:c', '{t}:d'],
      ['RENAME', '{t}:d', '{t}:d'],
      ['RENAMENX', '{t}:d', '{t}:d'],
      ['RENAME', '{t}:zz', '{t}:zz'],
      ['RENAME', '{t}:d', '{t}:c'],
      ['MGET', '{t}:c', '{t}:d'],
      ['SET', '{t}:e', 'v', 'EX', '1000'],
      ['RENAME', '{t}:e', '{t}:f'],
      ['TTL', '{t}:f'],
      ['COPY', '{t}:f', '{t}:g'],
      ['TTL', '{t}:g'],
      ['COPY', '{t}:f', '{t}:g'],
      ['SET', '{t}:f', 'changed'],
      ['COPY', '{t}:f', '{t}:g', 'REPLACE'],
      ['MGET', '{t}:f', '{t}:g'],
      ['TTL', '{t}:g'],
      ['COPY', '{t}:missing', '{t}:h'],
      ['EXISTS', '{t}:h'],
      ['COPY', '{t}:f', '{t}:f'],
      ['COPY', '{t}:f', '{t}:g', 'DB', '0', 'REPLACE'],
      ['COPY', '{t}:f', '{t}:g', 'NOSUCHOPTION'],
      ['COPY', '{t}:f', '{t}:g', 'DB', 'x'],
      ['MSETNX', '{t}:m1', 'a', '{t}:m2', 'b'],
      ['MSETNX', '{t}:m2', 'x', '{t}:m3', 'y'],
      ['MGET', '{t}:m1', '{t}:m2', '{t}:m3'],
      ['MSETNX', '{t}:m4', 'a', '{t}:m4', 'b'],
      ['GET', '{t}:m4'],
      ['MSETNX', '{t}:m5'],
      ['RENAME', '{t}:a'],
      ['DEL', '{t}:m1', '{t}:m2', '{t}:none', '{t}:m1'],
      ['MGET', '{t}:m1', '{t}:m2'],
      ['MULTI'],
      ['DEL', '{t}:b', '{t}:c', '{t}:none'],
      ['GET', '{t}:b'],
      ['EXEC'],
      ['SET', '{t}:ttl', 'v', 'EX', '1000'],
      ['MSETNX', '{t}:ttl', 'again'],
      ['TTL', '{t}:ttl'],
    ];
    const expected: unknown[] = [];
    const actual: unknown[] = [];
    // One command at a time on each: every answer compared in order.
    for (const command of script) {
      expected.push(await answerOf(redis, command));
      actual.push(await answerOf(dstore, command));
    }
    const rows = script.map((command, i) => ({
      command: command.join(' '),
      redis: expected[i],
      dstore: actual[i],
    }));
    expect(rows.filter((row) => JSON.stringify(row.redis) !== JSON.stringify(row.dstore))).toEqual([]);
  });

  it('answers CROSSSLOT for keys of two tags, as Redis Cluster, and changes nothing', async () => {
    await dstore.set('{x}:src', 'v');
    const crossSlot = /^CROSSSLOT Keys in request don't hash to the same slot/;
    for (const command of [
      ['RENAME', '{x}:src', '{y}:dst'],
      ['RENAMENX', '{x}:src', '{y}:dst'],
      ['COPY', '{x}:src', '{y}:dst'],
      ['MSETNX', '{x}:m', '1', '{y}:m', '2'],
    ]) {
      expect(String(await answerOf(dstore, command))).toMatch(/^error: CROSSSLOT/);
      await expect(dstore.call(command[0]!, ...command.slice(1))).rejects.toThrow(crossSlot);
    }
    expect(await dstore.mget('{x}:src', '{y}:dst', '{x}:m', '{y}:m')).toEqual(['v', null, null, null]);
  });

  it('refuses them inside MULTI (their write depends on a read), discarding the transaction', async () => {
    const multi = await dstore
      .multi()
      .set('{q}:a', '1')
      .rename('{q}:a', '{q}:b')
      .exec()
      .then(
        () => 'ran',
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      );
    expect(multi).toMatch(/EXECABORT/);
    expect(await dstore.exists('{q}:a', '{q}:b')).toBe(0);
  });

  it('moves a source exactly once when several clients RENAME it at the same time', async () => {
    const clients = Array.from({ length: 5 }, () => client(resources, { port: respPort }));
    await Promise.all(clients.map((one) => one.connect()));
    for (let round = 0; round < 20; round++) {
      await dstore.set('{race}:src', `v${round}`);
      const answers = await Promise.all(
        clients.map((one, i) => answerOf(one, ['RENAME', '{race}:src', `{race}:dst-${round}-${i}`])),
      );
      expect(answers.filter((answer) => answer === 'OK')).toHaveLength(1);
      expect(answers.filter((answer) => answer === 'error: ERR no such key')).toHaveLength(
        clients.length - 1,
      );
      const destinations = await dstore.mget(clients.map((_, i) => `{race}:dst-${round}-${i}`));
      expect(destinations.filter((value) => value !== null)).toEqual([`v${round}`]);
      expect(await dstore.exists('{race}:src')).toBe(0);
    }
  });
});
