/**
 * MULTI / EXEC and WATCH over several keys of one hash tag on the RESP port, as Redis Cluster runs
 * them over the keys of one slot: real clients (redis-cli reading a script on one connection,
 * ioredis 5) against three real storage nodes with replication factor 3 (every key on a chain of
 * the 3), so a transaction over two keys is one atomic step on their owner replicated as one unit.
 * Answers are compared with redis-server 7.0's (captured). A key of another tag is CROSSSLOT.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { Resources, waitFor } from './helpers.js';
import { ioredisOf, redisCliScript as runScript, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let balancer: Balancer;
let port: number;

beforeAll(async () => {
  ({ balancer, respPort: port } = await startRespCluster(resources, 3, { replicationFactor: 3 }));
  // Every chain 3 long: a transaction's write is acknowledged by the tail of 3 copies.
  await waitFor(() => balancer.membership.replicasOfEveryWrite === 2, 'every key on 3 nodes', 30_000);
}, 90_000);
afterAll(() => resources.releaseAll());

const CROSSSLOT =
  "CROSSSLOT Keys in request don't hash to the same slot (a dstore transaction uses keys of one hash tag, e.g. {user:7}:a and {user:7}:b)";
const EXECABORT = 'EXECABORT Transaction discarded because of previous errors.';

/** redis-cli reading `lines` on one connection to the RESP port. */
function redisCliScript(lines: readonly string[]): Promise<string[]> {
  return runScript(port, lines);
}

function ioredis(): Redis {
  return ioredisOf(resources, port);
}

async function connected(count: number): Promise<Redis[]> {
  const clients = Array.from({ length: count }, () => ioredis());
  await Promise.all(clients.map((client) => client.connect()));
  return clients;
}

describe('MULTI / EXEC over the keys of one hash tag', () => {
  it('answers a redis-cli script exactly as Redis 7 does (captured from redis-server 7.0)', async () => {
    const script = [
      'MULTI',
      'SET {acct}:a 100',
      'SET {acct}:b 5',
      'DECRBY {acct}:a 30',
      'INCRBY {acct}:b 30',
      'MGET {acct}:a {acct}:b {acct}:none',
      'EXISTS {acct}:a {acct}:b {acct}:none {acct}:a',
      'MSET {acct}:c x {acct}:d y {acct}:c z',
      'GET {acct}:c',
      'APPEND {acct}:d !',
      'DEL {acct}:c {acct}:d {acct}:none {acct}:c',
      'EXISTS {acct}:c {acct}:d',
      'INCR {acct}:a',
      'GETDEL {acct}:b',
      'TOUCH {acct}:a {acct}:b',
      'UNLINK {acct}:x {acct}:a',
      'EXEC',
      'MGET {acct}:a {acct}:b',
      'SET {acct}:a 1',
      'WATCH {acct}:a {acct}:b {acct}:a',
      'WATCH {acct}:c',
      'MULTI',
      'INCRBY {acct}:b 7',
      'SET {acct}:c 2',
      'MGET {acct}:a {acct}:b {acct}:c',
      'EXEC',
      'WATCH {acct}:a {acct}:b',
      'UNWATCH',
      'MULTI',
      'EXEC',
    ];
    // redis-cli prints nested arrays flat, and an empty line for a nil or an empty array: those
    // lines are filtered here (the nils are checked with ioredis below).
    const redis7 = [
      'OK',
      ...Array<string>(15).fill('QUEUED'),
      'OK',
      'OK',
      '70',
      '35',
      '70',
      '35',
      '3',
      'OK',
      'z',
      '2',
      '2',
      '0',
      '71',
      '35',
      '1',
      '1',
      'OK',
      'OK',
      'OK',
      'OK',
      'QUEUED',
      'QUEUED',
      'QUEUED',
      '7',
      'OK',
      '1',
      '7',
      '2',
      'OK',
      'OK',
      'OK',
    ];
    expect(await redisCliScript(script)).toEqual(redis7);
  });

  it('runs ioredis multi() over two tagged keys in one EXEC, answers and errors as Redis', async () => {
    const [client] = await connected(1);
    const results = await client!
      .multi()
      .set('{io}:a', '100')
      .set('{io}:b', '5')
      .decrby('{io}:a', 30)
      .incrby('{io}:b', 30)
      .get('{io}:a')
      .get('{io}:b')
      .mget('{io}:a', '{io}:b', '{io}:none')
      .del('{io}:a', '{io}:none')
      .exists('{io}:a', '{io}:b', '{io}:b')
      .incrby('{io}:a', 5)
      .exec();
    // Captured from redis-server 7.0 with ioredis 5.
    expect(results).toEqual([
      [null, 'OK'],
      [null, 'OK'],
      [null, 70],
      [null, 35],
      [null, '70'],
      [null, '35'],
      [null, ['70', '35', null]],
      [null, 1],
      [null, 2],
      [null, 5],
    ]);
    expect(await client!.mget('{io}:a', '{io}:b')).toEqual(['5', '35']);
    // A command refused on its own answers its error in its slot; the others, on both keys, run.
    const withError = await client!
      .multi()
      .set('{io}:text', 'abc')
      .incr('{io}:text')
      .incrby('{io}:b', 1)
      .append('{io}:text', '!')
      .exec();
    expect(withError?.[0]).toEqual([null, 'OK']);
    expect(String(withError?.[1]?.[0])).toContain('value is not an integer or out of range');
    expect(withError?.[2]).toEqual([null, 36]);
    expect(withError?.[3]).toEqual([null, 4]);
    expect(await client!.mget('{io}:text', '{io}:b')).toEqual(['abc!', '36']);
  });

  it('refuses a key of another tag (CROSSSLOT), then discards the whole transaction (EXECABORT)', async () => {
    expect(
      await redisCliScript([
        'MULTI',
        'SET {acct2}:x 1',
        'SET {other}:x 2',
        'MGET {acct2}:x {other}:x',
        'GET {acct2}:x',
        'EXEC',
        'EXISTS {acct2}:x {other}:x',
        'WATCH {acct2}:x {other}:x',
        'WATCH {acct2}:x',
        'MULTI',
        'SET {other}:x 1',
        'EXEC',
        // The first command's own keys must share a tag too.
        'MULTI',
        'MSET plain:a 1 plain:b 2',
        'DEL {acct2}:x {other}:x',
        'EXEC',
        'EXISTS {acct2}:x {other}:x plain:a plain:b',
      ]),
    ).toEqual([
      'OK',
      'QUEUED',
      CROSSSLOT,
      CROSSSLOT,
      'QUEUED',
      EXECABORT,
      '0',
      CROSSSLOT,
      'OK',
      'OK',
      CROSSSLOT,
      EXECABORT,
      'OK',
      CROSSSLOT,
      CROSSSLOT,
      EXECABORT,
      '0',
    ]);
    const [client] = await connected(1);
    await expect(client!.multi().set('{t1}:a', '1').set('{t2}:a', '2').exec()).rejects.toThrow(/EXECABORT/);
    expect(await client!.exists('{t1}:a', '{t2}:a')).toBe(0);
  });

  it('counts every key a command names against the batch limit (a step per key)', async () => {
    const [client] = await connected(1);
    const keys = Array.from({ length: 600 }, (_, index) => `{many}:${index}`);
    // 600 keys set, then 600 deleted: 1200 steps, past the 1000 of one TRANSACT.
    const over = client!
      .multi()
      .mset(...keys.flatMap((key) => [key, 'v']))
      .del(...keys);
    await expect(over.exec()).rejects.toThrow(/EXECABORT/);
    expect(await client!.exists(keys[0]!)).toBe(0);
    const fits = await client!
      .multi()
      .mset(...keys.flatMap((key) => [key, 'v']))
      .del(...keys.slice(0, 400))
      .exec();
    expect(fits).toEqual([
      [null, 'OK'],
      [null, 400],
    ]);
    expect(await client!.exists(...keys)).toBe(200);
  });
});

describe('WATCH over the keys of one hash tag', () => {
  it('runs EXEC when no watched key changed, answers null and applies nothing when one did', async () => {
    const [watcher, other] = await connected(2);
    await watcher!.mset('{w}:a', '1', '{w}:b', '1');
    await watcher!.watch('{w}:a', '{w}:b');
    expect(await watcher!.multi().incr('{w}:a').incr('{w}:b').exec()).toEqual([
      [null, 2],
      [null, 2],
    ]);
    // The second key changes (a watch of its own, not the transaction key's).
    await watcher!.watch('{w}:a', '{w}:b');
    await other!.set('{w}:b', '10');
    expect(await watcher!.multi().incr('{w}:a').incr('{w}:b').exec()).toBeNull();
    expect(await other!.mget('{w}:a', '{w}:b')).toEqual(['2', '10']);
    // A key absent when watched, created since.
    await watcher!.watch('{w}:a', '{w}:new');
    await other!.set('{w}:new', 'x');
    expect(await watcher!.multi().del('{w}:a').exec()).toBeNull();
    expect(await other!.get('{w}:a')).toBe('2');
    // Keys watched by two WATCHes; the first one's key changes.
    await watcher!.watch('{w}:a');
    await watcher!.watch('{w}:b');
    await other!.incr('{w}:a');
    expect(await watcher!.multi().get('{w}:b').exec()).toBeNull();
    // Watched keys, a transaction on another key of the tag: runs while they are unchanged.
    await watcher!.watch('{w}:a', '{w}:b');
    expect(await watcher!.multi().set('{w}:c', '1').get('{w}:a').exec()).toEqual([
      [null, 'OK'],
      [null, '3'],
    ]);
    // EXEC cleared the watches: a change now does not abort the next transaction.
    await other!.set('{w}:a', '0');
    expect(await watcher!.multi().get('{w}:a').exec()).toEqual([[null, '0']]);
    // WATCH of another tag than the one watched already is CROSSSLOT; UNWATCH forgets the tag.
    await watcher!.watch('{w}:a');
    await expect(watcher!.watch('{other}:a')).rejects.toThrow(CROSSSLOT);
    await watcher!.unwatch();
    expect(await watcher!.watch('{other}:a')).toBe('OK');
    await watcher!.unwatch();
  });

  it('watches keys whose values pass one frame together, and aborts an empty EXEC on a change', async () => {
    const [watcher, other] = await connected(2);
    // Two values of 600 KiB: read together by WATCH's TRANSACT they pass the 1 MiB frame.
    const value = 'v'.repeat(600 * 1024);
    await watcher!.set('{big}:a', value);
    await watcher!.set('{big}:b', value);
    await watcher!.watch('{big}:a', '{big}:b');
    expect(await watcher!.multi().strlen('{big}:a').append('{big}:b', '!').exec()).toEqual([
      [null, value.length],
      [null, value.length + 1],
    ]);
    await watcher!.watch('{big}:a', '{big}:b');
    await other!.append('{big}:b', '?');
    expect(await watcher!.multi().del('{big}:a').exec()).toBeNull();
    expect(await other!.strlen('{big}:a')).toBe(value.length);
    // Nothing queued: EXEC still answers null when a watched key changed, an empty array if not.
    await watcher!.watch('{big}:a', '{big}:c');
    await other!.set('{big}:c', '1');
    expect(await watcher!.multi().exec()).toBeNull();
    await watcher!.watch('{big}:a', '{big}:c');
    expect(await watcher!.multi().exec()).toEqual([]);
    // An MGET whose values pass one frame together in a transaction: its element is the error,
    // the transaction ran (its other commands answered).
    const results = await watcher!.multi().mget('{big}:a', '{big}:b').incr('{big}:c').exec();
    expect(String(results?.[0]?.[0])).toMatch(/FRAME_TOO_LARGE/);
    expect(results?.[1]).toEqual([null, 2]);
  });

  it('makes a transfer with WATCH / GET / MULTI an exact optimistic lock over two keys', async () => {
    const clients = await connected(4);
    await clients[0]!.mset('{opt}:from', '1000', '{opt}:to', '0');
    let aborted = 0;
    await Promise.all(
      clients.map(async (client) => {
        for (let moved = 0; moved < 25; ) {
          await client.watch('{opt}:from', '{opt}:to');
          const [from, to] = await client.mget('{opt}:from', '{opt}:to');
          const result = await client
            .multi()
            .set('{opt}:from', String(Number(from) - 1))
            .set('{opt}:to', String(Number(to) + 1))
            .exec();
          if (result === null) aborted++;
          else moved++;
        }
      }),
    );
    expect(await clients[0]!.mget('{opt}:from', '{opt}:to')).toEqual(['900', '100']);
    // The loops raced: some EXECs must have found a key changed (else WATCH did nothing).
    expect(aborted).toBeGreaterThan(0);
  });
});

describe('atomicity over two keys, replicated', () => {
  it('never shows a transfer half done: reads in MULTI (head) and MGETs (tail) always sum to the total', async () => {
    const total = 10_000;
    const writers = await connected(4);
    const readers = await connected(3);
    await writers[0]!.mset('{bank}:x', String(total), '{bank}:y', '0');
    const transfersEach = 60;
    const readsEach = 120;
    const sums: number[] = [];
    const read = async (reader: Redis, index: number): Promise<void> => {
      let pair: unknown[];
      if (index % 3 === 0) {
        // A transaction of one MGET: runs at the chain's head, in the transfers' order.
        const result = await reader.multi().mget('{bank}:x', '{bank}:y').exec();
        pair = result?.[0]?.[1] as unknown[];
      } else if (index % 3 === 1) {
        const result = await reader.multi().get('{bank}:x').get('{bank}:y').exec();
        pair = [result?.[0]?.[1], result?.[1]?.[1]];
      } else {
        // A plain MGET: read at the chain's tail, which applies each transfer as one unit or not at all.
        pair = await reader.mget('{bank}:x', '{bank}:y');
      }
      sums.push(Number(pair[0]) + Number(pair[1]));
    };
    await Promise.all([
      ...writers.map(async (writer, w) => {
        for (let index = 0; index < transfersEach; index++) {
          const amount = 1 + ((index + w) % 7);
          const result = await writer.multi().decrby('{bank}:x', amount).incrby('{bank}:y', amount).exec();
          expect(result?.map(([error]) => error)).toEqual([null, null]);
        }
      }),
      ...readers.map(async (reader) => {
        for (let index = 0; index < readsEach; index++) await read(reader, index);
      }),
    ]);
    expect(sums).toHaveLength(readers.length * readsEach);
    expect(sums.filter((sum) => sum !== total)).toEqual([]);
    let moved = 0;
    for (let w = 0; w < writers.length; w++) {
      for (let index = 0; index < transfersEach; index++) moved += 1 + ((index + w) % 7);
    }
    expect(await readers[0]!.mget('{bank}:x', '{bank}:y')).toEqual([String(total - moved), String(moved)]);
  });
});
