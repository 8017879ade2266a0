/**
 * The data-model requests on a standalone storage node (in process, both engines), and expiry
 * across a restart of a durable node.
 */
import { bytesToString, type Connection, Op, type Response, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, waitFor } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

function integer(response: Response): number {
  if (response.op !== Op.INTEGER) throw new Error(`expected INTEGER, got op ${response.op}`);
  return Number(response.value);
}

function value(response: Response): string | null {
  if (response.op !== Op.VALUE) throw new Error(`expected VALUE, got op ${response.op}`);
  return response.value === null ? null : bytesToString(response.value);
}

async function pttl(client: Connection, key: string): Promise<number> {
  return integer(await client.request({ op: Op.TTL, key: toBytes(key) }));
}

describe.each(['memory', 'lmdb'] as const)('data-model requests on a %s node', (engine) => {
  it('answers SET_WITH, EXPIRE, TTL, EXISTS, GETDEL and INCRBY, and reclaims expired keys by itself', async () => {
    const dataDir = engine === 'lmdb' ? resources.tempDir() : undefined;
    const node = await resources.node({ engine, dataDir });
    const client = await resources.client(node.address.port);
    const set = (key: string, extra: object) =>
      client.request({ op: Op.SET_WITH, key: toBytes(key), value: toBytes('v'), ...extra });
    expect(await set('a', { condition: 'nx', expiry: { kind: 'in', ms: 100_000 } })).toMatchObject({
      op: Op.COUNT,
      count: 1,
    });
    expect(await set('a', { condition: 'nx' })).toMatchObject({ op: Op.COUNT, count: 0 });
    expect(await pttl(client, 'a')).toBeGreaterThan(90_000);
    expect(value(await set('a', { get: true, expiry: { kind: 'keep' } }))).toBe('v');
    expect(await pttl(client, 'a')).toBeGreaterThan(90_000);
    expect(await client.request({ op: Op.EXPIRE, key: toBytes('a'), mode: 'persist', ms: 0 })).toMatchObject({
      count: 1,
    });
    expect(await pttl(client, 'a')).toBe(-1);
    expect(await pttl(client, 'none')).toBe(-2);
    expect(integer(await client.request({ op: Op.INCRBY, key: toBytes('n'), delta: -7n }))).toBe(-7);
    expect(
      await client.request({ op: Op.EXISTS, keys: [toBytes('a'), toBytes('n'), toBytes('x')] }),
    ).toMatchObject({
      count: 2,
    });
    expect(value(await client.request({ op: Op.GETDEL, key: toBytes('n') }))).toBe('-7');
    const refused = await client
      .request({ op: Op.INCRBY, key: toBytes('a'), delta: 1n })
      .catch((error: unknown) => error);
    expect(refused).toMatchObject({
      code: 'NOT_AN_INTEGER',
      message: 'value is not an integer or out of range',
    });
    // Expired keys nobody reads are reclaimed by the background sweep.
    for (let i = 0; i < 50; i++) await set(`short-${i}`, { expiry: { kind: 'in', ms: 50 } });
    await waitFor(() => Number(node.stats().keys) === 1, 10_000, 'the sweep to reclaim the expired keys');
    expect(Number(node.stats()['expired.swept'])).toBeGreaterThan(0);
  });
});

describe('expiry across a restart (lmdb)', () => {
  it('keeps expiry times, and a key whose time passed while the node was down never comes back', async () => {
    const dataDir = resources.tempDir();
    const first = await resources.node({ engine: 'lmdb', dataDir });
    const client = await resources.client(first.address.port);
    const expiresAt = Date.now() + 300;
    await client.request({
      op: Op.SET_WITH,
      key: toBytes('short'),
      value: toBytes('v'),
      expiry: { kind: 'at', ms: expiresAt },
    });
    await client.request({
      op: Op.SET_WITH,
      key: toBytes('long'),
      value: toBytes('v'),
      expiry: { kind: 'in', ms: 1_000_000 },
    });
    await first.stop();
    await waitFor(() => Date.now() > expiresAt, 5000, 'the short key to expire');
    const second = await resources.node({ engine: 'lmdb', dataDir });
    const again = await resources.client(second.address.port);
    expect(value(await again.request({ op: Op.GET, key: toBytes('short') }))).toBeNull();
    expect(await pttl(again, 'short')).toBe(-2);
    expect(await again.request({ op: Op.EXISTS, keys: [toBytes('short'), toBytes('long')] })).toMatchObject({
      count: 1,
    });
    const left = await pttl(again, 'long');
    expect(left).toBeGreaterThan(900_000);
    expect(left).toBeLessThanOrEqual(1_000_000);
  });
});
