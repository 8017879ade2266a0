/**
 * Transactions on one key (TRANSACT, `client.transaction(key)`) end to end: an in-process balancer
 * in front of REAL storage nodes, driven by @dstore/client through the balancer and directly.
 * The steps' results (a step refused on its own in its slot), atomicity against concurrent
 * transactions, WATCH (`ifVersion`), expiry set by a transaction, and the client-side step limit.
 */

import { type DstoreClient, DstoreError, ErrorCode, VersionConflictError } from '@dstore/client';
import { DEFAULT_LIMITS } from '@dstore/protocol';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { clientOf, cluster } from './data-model-helpers.js';
import { Resources, waitFor } from './helpers.js';

const text = (value: Uint8Array | DstoreError | null | undefined): string | null =>
  value instanceof Uint8Array ? Buffer.from(value).toString() : null;

/** The error `work` throws synchronously (a builder call refused before anything is sent). */
function thrownBy(work: () => unknown): unknown {
  try {
    work();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe.each(['balancer', 'direct'] as const)('transactions through %s routing', (routing) => {
  const resources = new Resources();
  let port = 0;
  let client: DstoreClient;

  beforeAll(async () => {
    const { balancer } = await cluster(resources, 2);
    port = balancer.address.port;
    client = await clientOf(resources, port, routing);
  });
  afterAll(() => resources.releaseAll());

  it('answers every step in order; a step refused on its own holds its DstoreError and the others run', async () => {
    await client.set('mixed', '10');
    const routedBefore = client.routingStats;
    const results = await client
      .transaction('mixed')
      .incr()
      .expire(100, { condition: 'nx' })
      .pttl()
      .get()
      .append('x')
      .incr()
      .getString()
      .expire(200, { condition: 'nx' })
      .exec();
    expectTypeOf(results).toEqualTypeOf<
      | [
          number | DstoreError,
          boolean | DstoreError,
          number | DstoreError,
          Uint8Array | null | DstoreError,
          number | DstoreError,
          number | DstoreError,
          string | null | DstoreError,
          boolean | DstoreError,
        ]
      | null
    >();
    if (routing === 'direct') {
      // One request, answered by the key's node itself (not through the balancer).
      expect(client.routingStats?.direct).toBe(routedBefore!.direct + 1);
      expect(client.routingStats?.viaBalancer).toBe(routedBefore!.viaBalancer);
    }
    expect(results).not.toBeNull();
    const [count, expirySet, pttl, value, length, refused, after, expiryAgain] = results!;
    expect(count).toBe(11);
    expect(expirySet).toBe(true);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(100_000);
    expect(text(value)).toBe('11');
    expect(length).toBe(3);
    expect(refused).toBeInstanceOf(DstoreError);
    expect(refused).toMatchObject({ code: ErrorCode.NOT_AN_INTEGER });
    expect(after).toBe('11x');
    // NX: the expiry set by the second step is there.
    expect(expiryAgain).toBe(false);
    expect(await client.getString('mixed')).toBe('11x');
    expect(await client.ttl('mixed')).toBeGreaterThan(90);
  });

  it('puts a step whose own ifVersion fails in its slot as a VersionConflictError', async () => {
    await client.set('cas-step', 'old');
    const [written, value] = (await client
      .transaction('cas-step')
      .set('new', { ifVersion: 123_456 })
      .get()
      .exec())!;
    expect(written).toBeInstanceOf(VersionConflictError);
    expect(text(value)).toBe('old');
  });

  it('runs each transaction as one step: concurrent incr-then-get never interleave', async () => {
    const clients = [client, ...(await Promise.all([1, 2, 3].map(() => clientOf(resources, port, routing))))];
    const pairs = await Promise.all(
      clients.flatMap((each) =>
        Array.from({ length: 100 }, () => each.transaction('atomic').incr().getString().exec()),
      ),
    );
    const counts = pairs.map((pair) => {
      const [count, value] = pair!;
      // The get right after the incr sees that incr's value, never another transaction's.
      expect(value).toBe(String(count));
      return count as number;
    });
    expect(new Set(counts).size).toBe(400);
    expect(Math.max(...counts)).toBe(400);
    expect(await client.getString('atomic')).toBe('400');
  });

  it('supports a WATCH-style compare-and-set loop with getWithVersion and exec({ ifVersion })', async () => {
    const clients = [client, ...(await Promise.all([1, 2, 3].map(() => clientOf(resources, port, routing))))];
    const addOne = async (each: DstoreClient): Promise<void> => {
      for (;;) {
        const current = await each.getWithVersion('json');
        const { n } =
          current === null ? { n: 0 } : (JSON.parse(Buffer.from(current.value).toString()) as { n: number });
        const results = await each
          .transaction('json')
          .set(JSON.stringify({ n: n + 1 }))
          .exec({ ifVersion: current?.version ?? 0 });
        if (results !== null) return;
      }
    };
    await Promise.all(
      clients.map(async (each) => {
        for (let i = 0; i < 10; i++) await addOne(each);
      }),
    );
    expect(JSON.parse((await client.getString('json'))!)).toEqual({ n: 40 });
  });

  it('resolves null and changes nothing when ifVersion does not hold', async () => {
    await client.set('watched', 'a');
    const seen = (await client.getWithVersion('watched'))!;
    await client.set('watched', 'b');
    expect(await client.transaction('watched').set('c').incr().exec({ ifVersion: seen.version })).toBeNull();
    expect(await client.transaction('watched').set('c').exec({ ifVersion: 0 })).toBeNull();
    expect(await client.transaction('absent').set('c').exec({ ifVersion: seen.version })).toBeNull();
    expect(await client.getString('watched')).toBe('b');
    expect(await client.exists('absent')).toBe(0);
    // With the current version it runs, and is one write: one new version, the one it answers.
    const now = (await client.getWithVersion('watched'))!;
    expect(await client.transaction('watched').exec({ ifVersion: now.version })).toEqual([]);
    const [, , versioned] = (await client
      .transaction('watched')
      .set('c')
      .append('d')
      .getWithVersion()
      .exec({ ifVersion: now.version }))!;
    const after = (await client.getWithVersion('watched'))!;
    expect(text(after.value)).toBe('cd');
    expect(versioned).toMatchObject({ version: after.version });
    expect(after.version).not.toBe(now.version);
    // ifVersion 0: only when the key does not exist.
    expect(await client.transaction('fresh').set('v').exec({ ifVersion: 0 })).toEqual(['OK']);
  });

  it('applies an expiry set in a transaction', async () => {
    expect(await client.transaction('expiring').set('v').pexpire(60_000).exec()).toEqual(['OK', true]);
    const pttl = await client.pttl('expiring');
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);

    const [written, value] = (await client.transaction('short').set('v', { px: 50 }).get().exec())!;
    expect(written).toBe('OK');
    expect(text(value)).toBe('v');
    await waitFor(async () => (await client.get('short')) === null, 'the key to expire');
    expect(await client.exists('short')).toBe(0);
  });

  it('refuses more than maxBatchKeys steps and a second exec client-side', async () => {
    const transaction = client.transaction('many');
    for (let i = 0; i < DEFAULT_LIMITS.maxBatchKeys; i++) transaction.incr();
    const refused = thrownBy(() => transaction.incr());
    expect(refused).toBeInstanceOf(DstoreError);
    expect(refused).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(transaction.length).toBe(DEFAULT_LIMITS.maxBatchKeys);
    const results = await transaction.exec();
    expect(results).toHaveLength(DEFAULT_LIMITS.maxBatchKeys);
    expect(await client.getString('many')).toBe(String(DEFAULT_LIMITS.maxBatchKeys));
    await expect(transaction.exec()).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(thrownBy(() => transaction.get())).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(await client.getString('many')).toBe(String(DEFAULT_LIMITS.maxBatchKeys));
  });
});
