/**
 * Real Redis clients and tools against the balancer's RESP port, with three real storage nodes:
 * redis-cli (one-shot and --pipe), redis-benchmark, ioredis 5 (plain and auto-pipelining),
 * node-redis 4 and node-redis 5 over RESP3, each with its default options.
 */
import { DEFAULT_LIMITS } from '@dstore/protocol';
import { Redis } from 'ioredis';
import { commandOptions, createClient as createClient4 } from 'redis4';
import { createClient as createClient5, RESP_TYPES } from 'redis5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { type NodeReady, Resources, type Spawned, waitFor } from './helpers.js';
import { keyPerNode, redisCli, run, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let balancer: Balancer;
let port: number;
let nodes: Spawned<NodeReady>[];

beforeAll(async () => {
  ({ balancer, respPort: port, nodes } = await startRespCluster(resources, 3));
}, 60_000);
afterAll(() => resources.releaseAll());

/** What the suite needs of a client: binary-safe strings commands and a MULTI-less batch. */
interface SuiteClient {
  set(key: string, value: Buffer): Promise<unknown>;
  get(key: string): Promise<Buffer | null>;
  mset(entries: [string, string][]): Promise<unknown>;
  mget(keys: string[]): Promise<(string | null)[]>;
  del(keys: string[]): Promise<number>;
  /** Many commands sent without waiting for each answer (a pipeline or one tick's batch). */
  batch(commands: string[][]): Promise<unknown[]>;
}

/** The same checks for every client. */
async function exerciseClient(client: SuiteClient, prefix: string): Promise<void> {
  // A key on every node.
  const spread = keyPerNode(balancer, `${prefix}:node:`);
  expect(spread).toHaveLength(3);
  for (const key of spread) await client.set(key, Buffer.from(`v-${key}`));
  expect((await Promise.all(spread.map((key) => client.get(key)))).map(String)).toEqual(
    spread.map((key) => `v-${key}`),
  );
  // Binary values, every byte value, and a value at the size limit.
  const binary = Buffer.from(Array.from({ length: 512 }, (_, index) => index % 256));
  await client.set(`${prefix}:binary`, binary);
  expect(await client.get(`${prefix}:binary`)).toEqual(binary);
  const big = Buffer.alloc(DEFAULT_LIMITS.maxValueBytes, 0x61);
  big[big.length - 1] = 0x7a;
  await client.set(`${prefix}:big`, big);
  expect((await client.get(`${prefix}:big`))?.equals(big)).toBe(true);
  // MSET/MGET across nodes, a missing key in the middle.
  const entries = Array.from({ length: 50 }, (_, index): [string, string] => [
    `${prefix}:m:${index}`,
    `value ${index}`,
  ]);
  await client.mset(entries);
  const keys = entries.map(([key]) => key);
  expect(await client.mget([keys[0]!, `${prefix}:absent`, ...keys.slice(1)])).toEqual([
    entries[0]![1],
    null,
    ...entries.slice(1).map(([, value]) => value),
  ]);
  // A batch whose answers complete out of order (different nodes) comes back in order.
  const batch = keys.flatMap((key, index) => [
    ['SET', key, `batch ${index}`],
    ['GET', key],
  ]);
  const answers = await client.batch(batch);
  expect(answers.filter((_, index) => index % 2 === 1)).toEqual(keys.map((_, index) => `batch ${index}`));
  expect(await client.del([...keys, `${prefix}:absent`])).toBe(keys.length);
  expect(await client.get(keys[0]!)).toBeNull();
}

describe('RESP front door with real clients', () => {
  it('answers an MGET whose values pass one frame from a node, as Redis does', async () => {
    const redis = new Redis({ port, lazyConnect: true });
    resources.add(() => redis.disconnect());
    await redis.connect();
    const keys = Array.from({ length: 24 }, (_, i) => `mget-big-${i}`);
    const bigValue = (i: number): string => String.fromCharCode(0x41 + (i % 26)).repeat(300 * 1024);
    for (const [i, key] of keys.entries()) await redis.set(key, bigValue(i));
    const values = await redis.mget(...keys, 'mget-big-missing');
    expect(values.map((value) => value?.length ?? null)).toEqual([...keys.map(() => 300 * 1024), null]);
    expect(values.slice(0, -1)).toEqual(keys.map((_, i) => bigValue(i)));
    // The suite counts keys (DBSIZE) later on.
    expect(await redis.del(...keys)).toBe(keys.length);
  });

  it('tells redis-cli pointed at the native port (the balancer or a node) where RESP is', async () => {
    const advice =
      "ERR this port speaks dstore's native protocol, not RESP: connect Redis clients to a balancer's RESP port (dstore-balancer --resp-port)";
    expect(await redisCli(balancer.address.port, 'PING')).toBe(advice);
    expect(await redisCli(nodes[0]!.ready.port, 'SET', 'k', 'v')).toBe(advice);
    // The balancer keeps serving.
    expect(await redisCli(port, 'PING')).toBe('PONG');
  });

  it('answers redis-cli one-shot commands', async () => {
    expect(await redisCli(port, 'PING')).toBe('PONG');
    expect(await redisCli(port, 'SET', 'cli:k', 'hello world')).toBe('OK');
    expect(await redisCli(port, 'GET', 'cli:k')).toBe('hello world');
    expect(await redisCli(port, 'MSET', 'cli:a', '1', 'cli:b', '2')).toBe('OK');
    expect(await redisCli(port, 'MGET', 'cli:a', 'cli:nope', 'cli:b')).toBe('1\n\n2');
    expect(await redisCli(port, 'DEL', 'cli:a', 'cli:b', 'cli:k', 'cli:nope')).toBe('3');
    expect(await redisCli(port, 'ECHO', 'hi')).toBe('hi');
    expect(await redisCli(port, 'FOOBAR', 'x', 'y')).toBe(
      "ERR unknown command 'FOOBAR', with args beginning with: 'x' 'y'",
    );
    expect(await redisCli(port, 'GET')).toBe("ERR wrong number of arguments for 'get' command");
    expect(await redisCli(port, 'SELECT', '1')).toBe('ERR DB index is out of range');
    expect(await redisCli(port, 'INFO', 'persistence')).toContain('loading:0');
    expect(await redisCli(port, '-3', 'HELLO', '3')).toContain('proto 3');
    expect(await redisCli(port, 'HELLO', '4')).toBe('NOPROTO unsupported protocol version');
    expect(await redisCli(port, 'SETNX', 'cli:n', '0')).toBe('1');
    expect(await redisCli(port, 'SETNX', 'cli:n', '5')).toBe('0');
    expect(await redisCli(port, 'INCR', 'cli:n')).toBe('1');
    expect(await redisCli(port, 'INCRBY', 'cli:n', '41')).toBe('42');
    expect(await redisCli(port, 'DECRBY', 'cli:n', '50')).toBe('-8');
    expect(await redisCli(port, 'DECR', 'cli:n')).toBe('-9');
    expect(await redisCli(port, 'INCRBY', 'cli:n', 'x')).toBe('ERR value is not an integer or out of range');
    expect(await redisCli(port, 'EXISTS', 'cli:n', 'cli:none', 'cli:n')).toBe('2');
    expect(await redisCli(port, 'GETDEL', 'cli:n')).toBe('-9');
    expect(await redisCli(port, 'EXISTS', 'cli:n')).toBe('0');
    expect(await redisCli(port, 'SCAN', 'x')).toBe('ERR invalid cursor');
    expect(await redisCli(port, 'SCAN', '0', 'COUNT', '0')).toBe('ERR syntax error');
    expect(await redisCli(port, 'SCAN', '0', 'TYPE', 'hash')).toMatch(/^\d+$/);
    expect(await redisCli(port, 'GETSET', 'cli:gs', 'one')).toBe('');
    expect(await redisCli(port, 'SET', 'cli:gs', 'two', 'EX', '100')).toBe('OK');
    expect(await redisCli(port, 'GETSET', 'cli:gs', 'three')).toBe('two');
    // GETSET drops the expiry, as SET does.
    expect(await redisCli(port, 'TTL', 'cli:gs')).toBe('-1');
    expect(await redisCli(port, 'GET', 'cli:gs')).toBe('three');
    expect(await redisCli(port, 'KEYS', 'cli:g?')).toBe('cli:gs');
    expect(await redisCli(port, 'KEYS', 'cli:nothing*')).toBe('');
    expect(await redisCli(port, 'GETEX', 'cli:gs', 'EX', '100')).toBe('three');
    expect(await redisCli(port, 'TTL', 'cli:gs')).toMatch(/^(100|99)$/);
    expect(await redisCli(port, 'GETEX', 'cli:gs', 'PERSIST')).toBe('three');
    expect(await redisCli(port, 'TTL', 'cli:gs')).toBe('-1');
    expect(await redisCli(port, 'GETEX', 'cli:gs')).toBe('three');
    // APPEND, SETRANGE, GETRANGE and SUBSTR (outputs as Redis 7 gives them for the same commands).
    expect(await redisCli(port, 'APPEND', 'cli:ap', 'hello')).toBe('5');
    expect(await redisCli(port, 'APPEND', 'cli:ap', ' world')).toBe('11');
    expect(await redisCli(port, 'SETRANGE', 'cli:ap', '6', 'W')).toBe('11');
    expect(await redisCli(port, 'GETRANGE', 'cli:ap', '-5', '-1')).toBe('World');
    expect(await redisCli(port, 'GETRANGE', 'cli:ap', '0', '-100')).toBe('h');
    expect(await redisCli(port, 'SUBSTR', 'cli:ap', '1', '3')).toBe('ell');
    expect(await redisCli(port, 'SETRANGE', 'cli:ap', '-1', 'x')).toBe('ERR offset is out of range');
    expect(await redisCli(port, 'SETRANGE', 'cli:ap', 'a', 'x')).toBe(
      'ERR value is not an integer or out of range',
    );
    expect(await redisCli(port, 'SETRANGE', 'cli:ap', '99999999999', 'x')).toMatch(
      /^ERR VALUE_TOO_LARGE: string exceeds maximum allowed size/,
    );
    expect(await redisCli(port, 'SETRANGE', 'cli:ap', '99999999999', '')).toBe('11');
    expect(await redisCli(port, 'GETRANGE', 'cli:ap', '0', 'x')).toBe(
      'ERR value is not an integer or out of range',
    );
    // INCRBYFLOAT (outputs as Redis 7 gives them for the same commands).
    expect(await redisCli(port, 'INCRBYFLOAT', 'cli:fl', '10.5')).toBe('10.5');
    expect(await redisCli(port, 'INCRBYFLOAT', 'cli:fl', '0.1')).toBe('10.6');
    expect(await redisCli(port, 'INCRBYFLOAT', 'cli:fl', '-5.0e3')).toBe('-4989.39999999999999991');
    expect(await redisCli(port, 'INCRBYFLOAT', 'cli:fl', '0x1p4')).toBe('-4973.39999999999999991');
    expect(await redisCli(port, 'INCRBYFLOAT', 'cli:fl', 'abc')).toBe(
      'ERR NOT_A_FLOAT: value is not a valid float',
    );
    expect(await redisCli(port, 'INCRBYFLOAT', 'cli:fl', 'inf')).toBe(
      'ERR OVERFLOW: increment would produce NaN or Infinity',
    );
    expect(await redisCli(port, 'INCRBYFLOAT', 'cli:fl')).toBe(
      "ERR wrong number of arguments for 'incrbyfloat' command",
    );
    // TIME: the balancer's clock, as Redis answers it; WAIT: factor 1, no replicas, answered at once.
    const [seconds, micros] = (await redisCli(port, 'TIME')).split('\n').map(Number);
    expect(Math.abs(seconds! - Date.now() / 1000)).toBeLessThan(60);
    expect(micros).toBeGreaterThanOrEqual(0);
    expect(micros).toBeLessThan(1_000_000);
    expect(await redisCli(port, 'WAIT', '1', '100')).toBe('0');
    expect(await redisCli(port, 'WAIT', 'x', '0')).toBe('ERR value is not an integer or out of range');
    expect(await redisCli(port, 'WAIT', '0', '-1')).toBe('ERR timeout is negative');
    // EXPIRETIME and PEXPIRETIME: the stored time itself (Redis 7 rounds seconds to the nearest).
    expect(await redisCli(port, 'SET', 'cli:at', 'v', 'PXAT', '4102444800700')).toBe('OK');
    expect(await redisCli(port, 'PEXPIRETIME', 'cli:at')).toBe('4102444800700');
    expect(await redisCli(port, 'EXPIRETIME', 'cli:at')).toBe('4102444801');
    expect(await redisCli(port, 'PERSIST', 'cli:at')).toBe('1');
    expect(await redisCli(port, 'EXPIRETIME', 'cli:at')).toBe('-1');
    expect(await redisCli(port, 'PEXPIRETIME', 'cli:none')).toBe('-2');
    // SETBIT, GETBIT, BITCOUNT, BITPOS (outputs as Redis 7 gives them for the same commands).
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '7', '1')).toBe('0');
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '7', '0')).toBe('1');
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '12', '1')).toBe('0');
    expect(await redisCli(port, 'STRLEN', 'cli:bits')).toBe('2');
    expect(await redisCli(port, 'GETBIT', 'cli:bits', '12')).toBe('1');
    expect(await redisCli(port, 'GETBIT', 'cli:bits', '1000')).toBe('0');
    expect(await redisCli(port, 'BITCOUNT', 'cli:bits')).toBe('1');
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '0', '1')).toBe('0');
    expect(await redisCli(port, 'BITCOUNT', 'cli:bits', '0', '0')).toBe('1');
    expect(await redisCli(port, 'BITCOUNT', 'cli:bits', '0', '7', 'BIT')).toBe('1');
    expect(await redisCli(port, 'BITPOS', 'cli:bits', '1', '1')).toBe('12');
    expect(await redisCli(port, 'BITPOS', 'cli:bits', '0')).toBe('1');
    expect(await redisCli(port, 'BITPOS', 'cli:bits', '1', '2', '-1', 'BIT')).toBe('12');
    expect(await redisCli(port, 'BITPOS', 'cli:none', '0')).toBe('0');
    expect(await redisCli(port, 'BITPOS', 'cli:none', '1')).toBe('-1');
    expect(await redisCli(port, 'BITCOUNT', 'cli:none')).toBe('0');
    expect(await redisCli(port, 'SETBIT', 'cli:zero', '7', '0')).toBe('0');
    expect(await redisCli(port, 'STRLEN', 'cli:zero')).toBe('1');
    const badOffset = 'ERR bit offset is not an integer or out of range';
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '-1', '1')).toBe(badOffset);
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '4294967296', '1')).toBe(badOffset);
    expect(await redisCli(port, 'GETBIT', 'cli:bits', 'x')).toBe(badOffset);
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '1', '2')).toBe(
      'ERR bit is not an integer or out of range',
    );
    expect(await redisCli(port, 'BITCOUNT', 'cli:bits', '0')).toBe('ERR syntax error');
    expect(await redisCli(port, 'BITCOUNT', 'cli:bits', '0', '1', 'WORD')).toBe('ERR syntax error');
    expect(await redisCli(port, 'BITCOUNT', 'cli:bits', 'a', 'b')).toBe(
      'ERR value is not an integer or out of range',
    );
    expect(await redisCli(port, 'BITPOS', 'cli:bits', '2')).toBe('ERR The bit argument must be 1 or 0.');
    expect(await redisCli(port, 'BITPOS', 'cli:bits', 'x')).toBe(
      'ERR value is not an integer or out of range',
    );
    // Past dstore's value limit (1 MiB; Redis: 512 MB): refused by the owner, nothing written.
    expect(await redisCli(port, 'SETBIT', 'cli:bits', '99999999', '1')).toMatch(
      /^ERR VALUE_TOO_LARGE: string exceeds maximum allowed size/,
    );
    expect(await redisCli(port, 'STRLEN', 'cli:bits')).toBe('2');
    expect(await redisCli(port, 'GETEX', 'cli:none', 'PX', '100')).toBe('');
    expect(await redisCli(port, 'GETEX', 'cli:gs', 'EX', '0')).toBe(
      "ERR invalid expire time in 'getex' command",
    );
    expect(await redisCli(port, 'GETEX', 'cli:gs', 'EX', '1', 'PERSIST')).toBe('ERR syntax error');
    expect(await redisCli(port, 'GETEX', 'cli:gs', 'EX', 'x')).toBe(
      'ERR value is not an integer or out of range',
    );
    expect(await redisCli(port, 'DEL', 'cli:gs', 'cli:ap', 'cli:fl', 'cli:bits', 'cli:zero', 'cli:at')).toBe(
      '6',
    );
    expect(await redisCli(port, 'KEYS')).toBe("ERR wrong number of arguments for 'keys' command");
  });

  it('takes a redis-cli --pipe mass insertion of 10,000 keys, all readable back', async () => {
    let input = '';
    for (let index = 0; index < 10_000; index++) {
      const key = `pipe:${index}`;
      const value = `value-${index}`;
      input += `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n${value}\r\n`;
    }
    const result = await run('redis-cli', ['-p', String(port), '--pipe'], input);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('errors: 0, replies: 10000');
    // The ring is settled (no range moving): the nodes' counts sum to exactly what is stored.
    expect(await redisCli(port, 'DBSIZE')).toBe('10000');
    // redis-cli --scan drives SCAN cursor MATCH ... to the end: every key, once or more.
    const scanned = await run('redis-cli', ['-p', String(port), '--scan', '--pattern', 'pipe:*']);
    expect(scanned.code, scanned.stderr).toBe(0);
    expect(new Set(scanned.stdout.trim().split('\n')).size).toBe(10_000);
    // KEYS drives the same SCAN to its end and lists each key once.
    const listed = (await redisCli(port, 'KEYS', 'pipe:*')).split('\n');
    expect(listed.length).toBe(10_000);
    expect(new Set(listed).size).toBe(10_000);
    const redis = new Redis({ port, lazyConnect: true });
    try {
      await redis.connect();
      for (let start = 0; start < 10_000; start += 1000) {
        const keys = Array.from({ length: 1000 }, (_, index) => `pipe:${start + index}`);
        expect(await redis.mget(keys)).toEqual(keys.map((_, index) => `value-${start + index}`));
      }
    } finally {
      redis.disconnect();
    }
  });

  it('runs redis-benchmark ping,set,get,incr,mset with no error, 150 connections opened at once', async () => {
    // More connections from one address than the pending-connection cap (64): without users they
    // must be admitted as they connect, not evicted as silent pending ones.
    const args = ['-p', String(port), '-t', 'ping,set,get,incr,mset', '-n', '20000', '-c', '150', '-q'];
    const result = await run('redis-benchmark', args);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout + result.stderr).not.toMatch(/error/i);
    expect(result.stdout).toContain('MSET');
  }, 120_000);

  it('runs redis-benchmark set,get pipelined 16 deep on one connection with 100-byte values (answers cross output slabs)', async () => {
    // One connection, 16 commands per round trip: a page of answers passes the 64 KiB output slab
    // (this caught bytes appended to the old slab after it was replaced).
    const args = ['-p', String(port), '-t', 'set,get', '-n', '20000', '-c', '1', '-P', '16', '-r', '10000'];
    const result = await run('redis-benchmark', [...args, '-d', '100', '-q']);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout + result.stderr).not.toMatch(/error/i);
    expect(result.stdout).toContain('GET');
  }, 120_000);

  it('counts INCRs and INCRBYFLOATs from several connections exactly', async () => {
    const clients = Array.from({ length: 4 }, () => new Redis({ port, lazyConnect: true }));
    try {
      await Promise.all(clients.map((client) => client.connect()));
      await Promise.all(
        clients.map((client) =>
          Promise.all(
            Array.from({ length: 250 }, () =>
              Promise.all([client.incr('race:counter'), client.incrbyfloat('race:float', '0.25')]),
            ),
          ),
        ),
      );
      expect(await clients[0]!.get('race:counter')).toBe('1000');
      expect(await clients[0]!.get('race:float')).toBe('250');
    } finally {
      for (const client of clients) client.disconnect();
    }
  });

  for (const autoPipelining of [false, true]) {
    it(`serves ioredis 5${autoPipelining ? ' with enableAutoPipelining' : ''}`, async () => {
      const redis = new Redis({ port, enableAutoPipelining: autoPipelining, lazyConnect: true });
      try {
        await redis.connect();
        await exerciseClient(
          {
            set: (key, value) => redis.set(key, value),
            get: (key) => redis.getBuffer(key),
            mset: (entries) => redis.mset(...entries.flat()),
            mget: (keys) => redis.mget(keys),
            del: (keys) => redis.del(keys),
            batch: async (commands) => {
              // ioredis names pipeline commands by their method names (lower case).
              const lower = commands.map(([name, ...args]) => [name!.toLowerCase(), ...args]);
              const results = await redis.pipeline(lower).exec();
              return (results ?? []).map(([error, value]) => error ?? value);
            },
          },
          `ioredis${autoPipelining ? '-auto' : ''}`,
        );
        // An error answer keeps the connection usable.
        await expect(redis.call('NOSUCHCOMMAND')).rejects.toThrow(/unknown command 'NOSUCHCOMMAND'/);
        expect(await redis.set('ioredis:opt', 'v', 'EX', 100)).toBe('OK');
        expect(await redis.set('ioredis:opt', 'w', 'NX')).toBeNull();
        expect(await redis.set('ioredis:opt', 'w', 'XX', 'GET')).toBe('v');
        expect(await redis.ttl('ioredis:opt')).toBe(-1);
        expect(await redis.expire('ioredis:opt', 100)).toBe(1);
        expect(await redis.ttl('ioredis:opt')).toBeGreaterThan(0);
        expect(await redis.persist('ioredis:opt')).toBe(1);
        expect(await redis.pttl('ioredis:opt')).toBe(-1);
        expect(await redis.pttl('ioredis:none')).toBe(-2);
        await expect(redis.set('ioredis:opt', 'v', 'EX', 0)).rejects.toThrow(
          "ERR invalid expire time in 'set' command",
        );
        await expect(redis.call('SET', 'ioredis:opt', 'v', 'NX', 'XX')).rejects.toThrow('ERR syntax error');
        await redis.set('ioredis:short', 'v', 'PX', 50);
        await waitFor(async () => (await redis.get('ioredis:short')) === null, 'the key expired');
        // What caching libraries and GUIs send besides SET/GET: SETEX/PSETEX, UNLINK, TYPE, STRLEN, TOUCH.
        expect(await redis.setex('ioredis:ex', 100, 'héllo')).toBe('OK');
        expect(await redis.ttl('ioredis:ex')).toBeGreaterThan(90);
        expect(await redis.psetex('ioredis:pex', 100_000, 'x')).toBe('OK');
        expect(await redis.pttl('ioredis:pex')).toBeGreaterThan(90_000);
        await expect(redis.setex('ioredis:ex', 0, 'v')).rejects.toThrow(
          "ERR invalid expire time in 'setex' command",
        );
        expect(await redis.strlen('ioredis:ex')).toBe(6);
        expect(await redis.strlen('ioredis:none')).toBe(0);
        expect(await redis.type('ioredis:ex')).toBe('string');
        expect(await redis.type('ioredis:none')).toBe('none');
        expect(await redis.touch('ioredis:ex', 'ioredis:pex', 'ioredis:none')).toBe(2);
        expect(await redis.unlink('ioredis:ex', 'ioredis:pex', 'ioredis:none')).toBe(2);
        expect(await redis.exists('ioredis:ex', 'ioredis:pex')).toBe(0);
        expect(await redis.ping()).toBe('PONG');
      } finally {
        redis.disconnect();
      }
    });
  }

  it('serves node-redis 4', async () => {
    const client = createClient4({ socket: { port } });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const binary = commandOptions({ returnBuffers: true });
      await exerciseClient(
        {
          set: (key, value) => client.set(key, value),
          get: (key) => client.get(binary, key),
          mset: (entries) => client.mSet(entries),
          mget: (keys) => client.mGet(keys),
          del: (keys) => client.del(keys),
          batch: (commands) => Promise.all(commands.map((command) => client.sendCommand(command))),
        },
        'redis4',
      );
    } finally {
      await client.quit();
    }
  });

  it('serves node-redis 5 over RESP3 (HELLO 3)', async () => {
    const client = createClient5({ socket: { port }, RESP: 3 });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const binary = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
      await exerciseClient(
        {
          set: (key, value) => client.set(key, value),
          get: (key) => binary.get(key),
          mset: (entries) => client.mSet(entries),
          mget: (keys) => client.mGet(keys),
          del: (keys) => client.del(keys),
          batch: (commands) => Promise.all(commands.map((command) => client.sendCommand(command))),
        },
        'redis5',
      );
      expect(await client.get('redis5:never-set')).toBeNull();
    } finally {
      client.destroy();
    }
  });
});
