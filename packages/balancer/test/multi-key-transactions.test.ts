/**
 * Transactions over several keys of one hash tag (TRANSACT whose steps and watches name keys of
 * the transaction key's ring position; `client.transaction(key).on(otherKey)`), end to end with
 * REAL storage nodes: factor 1 through both routings, and factor 3 on both engines (the write goes
 * down the chain as one unit). What each proves: the steps see each other's effects across keys;
 * a key of another position refuses the whole transaction before anything runs; WATCH of several
 * keys; every member of the chain ends with the same values at one version; and, under
 * concurrent transfers, no reader (an MGET at the chain's tail, a read-only transaction at its
 * head) ever sees a transfer half applied.
 */

import { Nemesis } from '@dstore/checker';
import { type DstoreClient, DstoreError, ErrorCode } from '@dstore/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientOf, cluster } from './data-model-helpers.js';
import { Resources } from './helpers.js';
import { type Engine, ReplicatedCluster } from './replicated-cluster.js';

const text = (value: unknown): string | null =>
  value instanceof Uint8Array ? Buffer.from(value).toString() : null;

/** What `work` rejects with (or undefined), for checking a refusal's code. */
async function thrown(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** The number an INCRBY-style step answered, or the test fails naming the slot's content. */
function numberOf(value: unknown): number {
  if (typeof value !== 'number') throw new Error(`expected a number, got ${String(value)}`);
  return value;
}

describe.each(['balancer', 'direct'] as const)('multi-key transactions, factor 1, %s routing', (routing) => {
  const resources = new Resources();
  let client: DstoreClient;

  beforeAll(async () => {
    const { balancer } = await cluster(resources, 3);
    client = await clientOf(resources, balancer.address.port, routing);
  });
  afterAll(() => resources.releaseAll());

  it('runs steps over several keys of one tag in order, each seeing the others', async () => {
    await client.mset([
      ['{acct:1}:checking', '100'],
      ['{acct:1}:savings', '5'],
    ]);
    const results = await client
      .transaction('{acct:1}:checking')
      .decrby(30)
      .on('{acct:1}:savings')
      .incrby(30)
      .on('{acct:1}:created')
      .set('yes')
      .on('{acct:1}:checking')
      .getString()
      .on('{acct:1}:savings')
      .getString()
      .exec();
    expect(results).toEqual([70, 35, 'OK', '70', '35']);
    expect(
      (await client.mget(['{acct:1}:checking', '{acct:1}:savings', '{acct:1}:created'])).map(text),
    ).toEqual(['70', '35', 'yes']);
  });

  it('deletes, creates and expires different keys in one step; a key created and deleted is never written', async () => {
    await client.set('{t:2}:old', 'x');
    const results = await client
      .transaction('{t:2}:old')
      .getdel()
      .on('{t:2}:temp')
      .set('t')
      .del()
      .on('{t:2}:new')
      .set('n')
      .pexpire(100_000)
      .exec();
    expect(results?.map((value) => (value instanceof Uint8Array ? text(value) : value))).toEqual([
      'x',
      'OK',
      true,
      'OK',
      true,
    ]);
    expect(await client.exists('{t:2}:old', '{t:2}:temp', '{t:2}:new')).toBe(1);
    const pttl = await client.pttl('{t:2}:new');
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(100_000);
  });

  it('refuses the whole transaction when a key has another position (no tag in common), before anything runs', async () => {
    await client.mset([
      ['{a}:x', '1'],
      ['{b}:x', '1'],
    ]);
    const refused = await client
      .transaction('{a}:x')
      .incr()
      .on('{b}:x')
      .incr()
      .exec()
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(refused).toBeInstanceOf(DstoreError);
    expect(refused).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect((refused as DstoreError).message).toMatch(/CROSSSLOT/);
    expect((await client.mget(['{a}:x', '{b}:x'])).map(text)).toEqual(['1', '1']);
    // A watch of a key of another position is refused alike.
    const watched = await client
      .transaction('{a}:x')
      .incr()
      .exec({ watch: [{ key: '{b}:x', version: 0 }] })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(watched).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(text(await client.get('{a}:x'))).toBe('1');
  });

  it('writes an MSET of keys of one tag as one write (one version), a key named twice with its last value', async () => {
    await client.mset([
      ['{m:5}:a', '1'],
      ['{m:5}:b', '2'],
      ['{m:5}:a', '3'],
      ['untagged-m5', '4'],
    ]);
    expect((await client.mget(['{m:5}:a', '{m:5}:b', 'untagged-m5'])).map(text)).toEqual(['3', '2', '4']);
    const [a, b] = await Promise.all(['{m:5}:a', '{m:5}:b'].map((key) => client.getWithVersion(key)));
    expect(a!.version).toBe(b!.version);
  });

  it('msetnx, rename and copy over keys of one tag: atomic, the expiry kept, Redis semantics', async () => {
    expect(
      await client.msetnx([
        ['{k:6}:a', 'A'],
        ['{k:6}:b', 'B'],
      ]),
    ).toBe(true);
    expect(
      await client.msetnx([
        ['{k:6}:b', 'x'],
        ['{k:6}:c', 'C'],
      ]),
    ).toBe(false);
    expect(await client.exists('{k:6}:c')).toBe(0);
    await client.set('{k:6}:ttl', 'T', { px: 100_000 });
    expect(await client.rename('{k:6}:ttl', '{k:6}:moved')).toBe(true);
    expect(await client.exists('{k:6}:ttl')).toBe(0);
    expect(text(await client.get('{k:6}:moved'))).toBe('T');
    const pttl = await client.pttl('{k:6}:moved');
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(100_000);
    expect(await client.rename('{k:6}:missing', '{k:6}:x')).toBe(false);
    expect(await client.rename('{k:6}:a', '{k:6}:b', { nx: true })).toBe(false);
    expect(text(await client.get('{k:6}:a'))).toBe('A');
    expect(await client.rename('{k:6}:a', '{k:6}:a')).toBe(true);
    expect(await client.rename('{k:6}:a', '{k:6}:a', { nx: true })).toBe(false);
    expect(await client.copy('{k:6}:a', '{k:6}:b')).toBe(false);
    expect(await client.copy('{k:6}:a', '{k:6}:b', { replace: true })).toBe(true);
    expect((await client.mget(['{k:6}:a', '{k:6}:b'])).map(text)).toEqual(['A', 'A']);
    expect(await client.copy('{k:6}:missing', '{k:6}:y')).toBe(false);
    await expect(thrown(() => client.copy('{k:6}:a', '{k:6}:a'))).resolves.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    // Keys of two tags: refused before anything runs.
    await expect(client.rename('{k:6}:a', '{other}:a')).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await expect(
      client.msetnx([
        ['{k:6}:n', '1'],
        ['{other}:n', '2'],
      ]),
    ).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    expect(await client.exists('{k:6}:a', '{other}:a', '{k:6}:n', '{other}:n')).toBe(1);
  });

  it('moves a source exactly once when several renames of it race', async () => {
    for (let round = 0; round < 10; round++) {
      await client.set('{race:7}:src', `v${round}`);
      const moved = await Promise.all(
        Array.from({ length: 5 }, (_, i) => client.rename('{race:7}:src', `{race:7}:dst-${round}-${i}`)),
      );
      expect(moved.filter(Boolean)).toHaveLength(1);
      const values = await client.mget(Array.from({ length: 5 }, (_, i) => `{race:7}:dst-${round}-${i}`));
      expect(values.filter((value) => value !== null).map(text)).toEqual([`v${round}`]);
    }
  });

  it('runs only while every watched key is at the version read (WATCH of several keys)', async () => {
    await client.set('{w:3}:a', '1');
    const a = await client.getWithVersion('{w:3}:a');
    const watch = [
      { key: '{w:3}:a', version: a!.version },
      // Absent: version 0.
      { key: '{w:3}:b', version: 0 },
    ];
    expect(await client.transaction('{w:3}:c').set('ran-1').exec({ watch })).toEqual(['OK']);
    // Another client creates a watched key: the next transaction with the same watches runs nothing.
    await client.set('{w:3}:b', 'now');
    expect(await client.transaction('{w:3}:c').set('ran-2').exec({ watch })).toBeNull();
    expect(text(await client.get('{w:3}:c'))).toBe('ran-1');
    // The transaction key's own `ifVersion` and another key's watch together.
    const b = await client.getWithVersion('{w:3}:b');
    expect(
      await client
        .transaction('{w:3}:a')
        .incr()
        .on('{w:3}:b')
        .getString()
        .exec({ ifVersion: a!.version, watch: [{ key: '{w:3}:b', version: b!.version }] }),
    ).toEqual([2, 'now']);
  });
});

describe.each(['memory', 'lmdb'] as const)('multi-key transactions, factor 3, %s', (engine: Engine) => {
  const resources = new Resources();
  const nemesis = new Nemesis();
  let chain: ReplicatedCluster;
  let client: DstoreClient;
  const accounts = Array.from({ length: 6 }, (_, i) => `{bank}:${i}`);

  beforeAll(async () => {
    resources.add(() => nemesis.cleanup());
    chain = await ReplicatedCluster.start({
      engine,
      resources,
      nemesis,
      nodes: ['node-1', 'node-2', 'node-3'],
    });
    client = chain.client();
  }, 90_000);
  afterAll(() => resources.releaseAll());

  it('never shows a transfer half applied, at the tail or the head, and every member ends equal', async () => {
    for (const account of accounts) await client.set(account, '100');
    const total = 100 * accounts.length;
    const readers = 3;
    const transfers = 4;
    let reads = 0;
    const transfer = async (worker: number): Promise<void> => {
      for (let i = 0; i < 150; i++) {
        const from = accounts[(worker + i) % accounts.length]!;
        const to = accounts[(worker + 2 * i + 1) % accounts.length]!;
        if (from === to) continue;
        const amount = 1 + ((worker * 7 + i) % 5);
        const results = await client.transaction(from).decrby(amount).on(to).incrby(amount).exec();
        expect(results?.length).toBe(2);
      }
    };
    const read = async (reader: number): Promise<void> => {
      for (let i = 0; i < 150; i++) {
        // MGET of one tag: one request to the chain's tail; a read-only transaction: at its head.
        const values =
          (reader + i) % 2 === 0
            ? (await client.mget(accounts)).map((value) => Number(text(value)))
            : await readAll();
        const sum = values.reduce((a, b) => a + b, 0);
        expect(sum, `a read saw ${values.join(', ')}`).toBe(total);
        reads++;
      }
    };
    const readAll = async (): Promise<number[]> => {
      const [a, b, c, d, e, f] = accounts as [string, string, string, string, string, string];
      const results = await client
        .transaction(a)
        .getString()
        .on(b)
        .getString()
        .on(c)
        .getString()
        .on(d)
        .getString()
        .on(e)
        .getString()
        .on(f)
        .getString()
        .exec();
      return (results ?? []).map((value) => Number(value));
    };
    await Promise.all([
      ...Array.from({ length: transfers }, (_, worker) => transfer(worker)),
      ...Array.from({ length: readers }, (_, reader) => read(reader)),
    ]);
    expect(reads).toBe(readers * 150);
    const finals = (await client.mget(accounts)).map((value) => Number(text(value)));
    expect(finals.reduce((a, b) => a + b, 0)).toBe(total);
    for (const account of accounts) await chain.expectOnChain(account);
    // One version for every key a transaction changed: the last transfer's two keys share it.
    const last = await client.transaction(accounts[0]!).decrby(1).on(accounts[1]!).incrby(1).exec();
    expect(last?.map(numberOf)).toHaveLength(2);
    const versions = await Promise.all(accounts.slice(0, 2).map((key) => client.getWithVersion(key)));
    expect(versions[0]!.version).toBe(versions[1]!.version);
  });

  it('applies an MSET of keys of one tag as one unit: no reader sees some keys of it and not the others', async () => {
    const keys = Array.from({ length: 8 }, (_, i) => `{mset}:${i}`);
    const rounds = 120;
    let mixed: string | undefined;
    const write = async (writer: number): Promise<void> => {
      for (let round = 0; round < rounds; round++) {
        const value = `w${writer}-${round}`;
        await client.mset(keys.map((key) => [key, value] as const));
      }
    };
    const read = async (): Promise<void> => {
      for (let i = 0; i < rounds * 2; i++) {
        // One MGET of one tag: one request to the chain's tail.
        const values = (await client.mget(keys)).map(text);
        if (new Set(values).size > 1) mixed ??= values.join(', ');
      }
    };
    await Promise.all([write(0), write(1), read(), read()]);
    expect(mixed, 'an MGET saw two MSETs at once').toBeUndefined();
    for (const key of keys) await chain.expectOnChain(key);
    // The last MSET's keys share one version: one write.
    const versions = await Promise.all(keys.map((key) => client.getWithVersion(key)));
    expect(new Set(versions.map((versioned) => versioned!.version)).size).toBe(1);
  });

  it('refuses a transaction whose writes pass one replication frame together, writing nothing', async () => {
    // Three values of 400 KB each: each fits a frame alone, together they do not (1 MiB); the
    // request itself (an APPEND of one byte to each) is small.
    const big = Buffer.alloc(400_000, 0x61);
    const keys = ['{big}:a', '{big}:b', '{big}:c'];
    for (const key of keys) await client.set(key, big);
    const [a, b, c] = keys as [string, string, string];
    const refused = await client
      .transaction(a)
      .append('x')
      .on(b)
      .append('x')
      .on(c)
      .append('x')
      .exec()
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(refused).toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE });
    expect((await client.mget(keys)).map((value) => value?.length)).toEqual([400_000, 400_000, 400_000]);
    for (const key of keys) await chain.expectOnChain(key);
    // Two of them fit: they are written, as one unit.
    const fits = await client.transaction(keys[0]!).append('x').on(keys[1]!).append('x').exec();
    expect(fits).toEqual([400_001, 400_001]);
    for (const key of keys) await chain.expectOnChain(key);
  });
});
