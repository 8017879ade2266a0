/**
 * Answers found to differ from Redis 7.0's in an audit of the RESP port, now the same: one script
 * runs against dstore (a balancer without users, two real storage nodes) and against a real
 * redis-server without a password, through ioredis, and every answer (value or error text) must
 * be Redis's. EXPIRE's XX GT / XX LT and its option errors, a refused EXEC ending the transaction
 * (EXECABORT), AUTH default with any password when there is none.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Resources } from './helpers.js';
import { answerOf, client, startRedisOnSocket, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let dstore: Redis;
let redis: Redis;

beforeAll(async () => {
  const { respPort } = await startRespCluster(resources, 2);
  dstore = client(resources, { port: respPort });
  redis = client(resources, { path: await startRedisOnSocket(resources) });
  await Promise.all([dstore.connect(), redis.connect()]);
}, 60_000);
afterAll(() => resources.releaseAll());

/** Runs `script` one command at a time on both; the rows whose answers differ. */
async function differences(script: readonly string[][]): Promise<unknown[]> {
  const rows: { command: string; redis: unknown; dstore: unknown }[] = [];
  for (const command of script) {
    rows.push({
      command: command.join(' ').slice(0, 120),
      redis: await answerOf(redis, command),
      dstore: await answerOf(dstore, command),
    });
  }
  return rows.filter((row) => JSON.stringify(row.redis) !== JSON.stringify(row.dstore));
}

describe('RESP answers as Redis 7.0', () => {
  it('EXPIRE with XX GT and XX LT, and its option errors', async () => {
    expect(
      await differences([
        ['SET', 'exp:a', 'v', 'EX', '100'],
        ['SET', 'exp:none', 'v'],
        ['EXPIRE', 'exp:a', '200', 'XX', 'GT'],
        ['TTL', 'exp:a'],
        ['EXPIRE', 'exp:a', '50', 'GT', 'XX'],
        ['EXPIRE', 'exp:a', '50', 'XX', 'LT'],
        ['TTL', 'exp:a'],
        ['EXPIRE', 'exp:a', '70', 'LT', 'XX'],
        // Without an expiry: LT sets one (none is infinite), XX LT does not.
        ['EXPIRE', 'exp:none', '50', 'XX', 'LT'],
        ['TTL', 'exp:none'],
        ['EXPIRE', 'exp:none', '50', 'XX', 'GT'],
        ['EXPIRE', 'exp:none', '50', 'LT'],
        ['TTL', 'exp:none'],
        ['EXPIRE', 'exp:a', '10', 'XX', 'XX'],
        ['EXPIRE', 'exp:a', '10', 'GT', 'LT'],
        ['EXPIRE', 'exp:a', '10', 'NX', 'XX'],
        ['EXPIRE', 'exp:a', '10', 'NX', 'NX'],
        ['EXPIRE', 'exp:a', '10', 'LT', 'NX'],
        ['EXPIRE', 'exp:a', '10', 'BOGUS'],
        // The options are checked before the time, as Redis.
        ['EXPIRE', 'exp:a', 'soon', 'GT', 'LT'],
        ['EXPIRE', 'exp:a', 'soon', 'BOGUS'],
        ['EXPIRE', 'exp:a', 'soon', 'XX'],
        ['PEXPIRE', 'exp:a', '90000', 'XX', 'LT'],
        ['TTL', 'exp:none'],
        ['EXPIREAT', 'exp:missing', '4102444800', 'XX', 'LT'],
      ]),
    ).toEqual([]);
  });

  it('64-bit indexes of GETRANGE and SETRANGE, repeated expiry options of SET and GETEX', async () => {
    expect(
      await differences([
        ['SET', 'int:k', 'hello'],
        ['GETRANGE', 'int:k', '0', '9223372036854775807'],
        ['GETRANGE', 'int:k', '-9223372036854775808', '2'],
        ['GETRANGE', 'int:k', '9007199254740993', '-9007199254740993'],
        ['GETRANGE', 'int:k', '0', '9223372036854775808'],
        ['SETRANGE', 'int:k', '-9223372036854775808', 'x'],
        ['SETRANGE', 'int:k', '9223372036854775808', 'x'],
        // The same expiry option again takes the last time; two different ones are an error,
        // and every word is checked before a time is read.
        ['SET', 'int:e', 'v', 'EX', '100', 'EX', '200'],
        ['TTL', 'int:e'],
        ['SET', 'int:e', 'v', 'PX', '100', 'EX', '200'],
        ['SET', 'int:e', 'v', 'EX', 'soon', 'PX', '10'],
        ['SET', 'int:e', 'v', 'EX', 'soon', 'EX', '10'],
        ['SET', 'int:e', 'v', 'EXAT', '4102444800', 'GET', 'EXAT', '4102444801'],
        ['EXPIRETIME', 'int:e'],
        ['SET', 'int:e', 'v', 'KEEPTTL', 'KEEPTTL'],
        ['EXPIRETIME', 'int:e'],
        ['SET', 'int:e', 'v', 'KEEPTTL', 'EX', '10'],
        ['SET', 'int:e', 'v', 'EX'],
        ['GETEX', 'int:e', 'EX', '10', 'EX', '300'],
        ['TTL', 'int:e'],
        ['GETEX', 'int:e', 'PERSIST', 'PERSIST'],
        ['TTL', 'int:e'],
        ['GETEX', 'int:e', 'PERSIST', 'EX', '5'],
        ['GETEX', 'int:e', 'EX'],
        ['GETEX', 'int:e', 'EX', '0'],
        ['GETEX', 'int:e', 'EX', '9223372036854775807'],
        ['GETEX', 'int:e', 'EX', 'soon', 'BOGUS'],
        ['GETEX', 'int:e', 'PXAT', '4102444800000', 'PXAT', '4102444801000'],
        ['PEXPIRETIME', 'int:e'],
        ['EXPIRE', 'int:e', '9223372036854775807'],
        ['EXPIRE', 'int:e', '-9223372036854775808'],
        ['EXPIRE', 'int:e', '9223372036854775808'],
        ['PEXPIREAT', 'int:e', '-9223372036854775808'],
        ['EXISTS', 'int:e'],
      ]),
    ).toEqual([]);
    // Past the value limit: Redis names its proto-max-bulk-len, dstore the code (both ERR, nothing written).
    const far = ['SETRANGE', 'int:k', '9007199254740993', 'x'];
    expect(await answerOf(redis, far)).toMatch(/^error: ERR string exceeds/);
    expect(await answerOf(dstore, far)).toMatch(/^error: ERR VALUE_TOO_LARGE/);
    expect(await dstore.get('int:k')).toBe('hello');
  });

  it('DEL, UNLINK, EXISTS, TOUCH and MGET of thousands of keys (redis-cli --scan | xargs redis-cli del)', async () => {
    const keys = Array.from({ length: 2500 }, (_, i) => `many:${i}`);
    for (const connection of [redis, dstore]) {
      const pipeline = connection.pipeline();
      for (const key of keys) pipeline.set(key, key);
      await pipeline.exec();
    }
    const missing = Array.from({ length: 20 }, (_, i) => `many:missing:${i}`);
    const mixed = [...keys.slice(0, 1200), ...missing, ...keys.slice(0, 300), ...keys.slice(1200)];
    expect(
      await differences([
        ['EXISTS', ...mixed],
        ['TOUCH', ...mixed],
        ['MGET', ...mixed],
        ['DEL', ...keys.slice(0, 1500), ...missing],
        ['EXISTS', ...mixed],
        ['UNLINK', ...mixed],
        ['EXISTS', ...mixed],
      ]),
    ).toEqual([]);
    // One hash tag is one atomic step on its owner, in one frame: past 1000 keys it is refused, nothing deleted.
    const tagged = Array.from({ length: 1001 }, (_, i) => `{many}${i}`);
    await dstore.set('{many}0', 'v');
    expect(await answerOf(dstore, ['DEL', ...tagged])).toMatch(/^error: ERR BATCH_TOO_LARGE/);
    expect(await dstore.get('{many}0')).toBe('v');
  });

  it('a refused EXEC ends the transaction with EXECABORT', async () => {
    expect(
      await differences([
        ['MULTI'],
        ['SET', '{x}a', '1'],
        ['EXEC', 'now'],
        ['GET', '{x}a'],
        ['EXEC'],
        ['EXEC', 'x'],
        ['MULTI'],
        ['SET', '{x}a', '2'],
        ['EXEC'],
        ['GET', '{x}a'],
      ]),
    ).toEqual([]);
  });

  it('AUTH without users, as Redis without a password', async () => {
    expect(
      await differences([
        ['AUTH', 'default', 'anything'],
        ['AUTH', 'DEFAULT', 'anything'],
        ['AUTH', 'someone', 'anything'],
        ['AUTH', 'onlypassword'],
        ['PING'],
      ]),
    ).toEqual([]);
  });
});
