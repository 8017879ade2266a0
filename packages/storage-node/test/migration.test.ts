import { HashRing } from '@dstore/hashring';
import {
  bytesToString,
  type Connection,
  chunkRanges,
  DstoreError,
  ErrorCode,
  Op,
  type Response,
  type RingMember,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { StorageNode, StorageNodeOptions } from '../src/index.js';
import { Resources } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const engines: { name: string; options: () => StorageNodeOptions }[] = [
  { name: 'memory', options: () => ({ engine: 'memory' }) },
  { name: 'lmdb', options: () => ({ engine: 'lmdb', dataDir: resources.tempDir() }) },
];

async function rejection(promise: Promise<unknown>): Promise<DstoreError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(DstoreError);
    return error as DstoreError;
  }
  throw new Error('expected a rejection');
}

function textOf(response: Response): string | null {
  expect(response.op).toBe(Op.VALUE);
  const value = (response as Extract<Response, { op: typeof Op.VALUE }>).value;
  return value === null ? null : bytesToString(value);
}

function countOf(response: Response): number {
  expect(response.op).toBe(Op.COUNT);
  return (response as Extract<Response, { op: typeof Op.COUNT }>).count;
}

function ringMessage(epoch: number, nodes: readonly RingMember[]) {
  return { op: Op.RING, epoch, generation: 1, algorithm: 'vnode', vnodes: 0, nodes } as const;
}

describe.each(engines)('migration between two nodes on $name', ({ options }) => {
  async function twoNodes(): Promise<{ a: StorageNode; b: StorageNode; ca: Connection; cb: Connection }> {
    const a = await resources.node({ id: 'node-a', ...options() });
    const b = await resources.node({ id: 'node-b', ...options() });
    return { a, b, ca: await resources.client(a.address.port), cb: await resources.client(b.address.port) };
  }

  it('serves every key before a RING, refuses foreign keys with NOT_OWNER after', async () => {
    const { ca } = await twoNodes();
    const key = toBytes('any-key');
    await ca.request({ op: Op.SET, key, value: toBytes('v') });
    const ring = HashRing.from([{ id: 'node-a' }, { id: 'node-b' }]);
    await ca.request(
      ringMessage(1, [
        { id: 'node-a', weight: 1 },
        { id: 'node-b', weight: 1 },
      ]),
    );
    let foreign = 0;
    for (let i = 0; i < 50; i++) {
      const k = toBytes(`k${i}`);
      if (ring.get(k) === 'node-a') {
        expect(textOf(await ca.request({ op: Op.GET, key: k }))).toBeNull();
        continue;
      }
      foreign++;
      const error = await rejection(ca.request({ op: Op.SET, key: k, value: toBytes('x') }));
      expect(error.code).toBe(ErrorCode.NOT_OWNER);
      expect(error.notExecuted).toBe(true);
      expect(error.message).toContain('node-b');
      // Not moving away from here: a fall-back read is refused too.
      expect((await rejection(ca.request({ op: Op.GET, key: k, fallback: true }))).code).toBe(
        ErrorCode.NOT_OWNER,
      );
    }
    expect(foreign).toBeGreaterThan(0);
  });

  it('moves the keys of a joining node, skips touched keys, serves fall-back reads until PURGE', async () => {
    const { b, ca, cb } = await twoNodes();
    const one: RingMember[] = [{ id: 'node-a', weight: 1 }];
    const two: RingMember[] = [...one, { id: 'node-b', weight: 1 }];
    await ca.request(ringMessage(1, one));
    await cb.request(ringMessage(1, one));
    const total = 400;
    for (let i = 0; i < total; i++)
      await ca.request({ op: Op.SET, key: toBytes(`key-${i}`), value: toBytes(`v${i}`) });

    const before = HashRing.from(one);
    const after = HashRing.from(two);
    const moves = before.diff(after);
    expect(moves.every((move) => move.from === 'node-a' && move.to === 'node-b')).toBe(true);
    const moved = [...Array(total).keys()].filter((i) => after.get(`key-${i}`) === 'node-b');
    expect(moved.length).toBeGreaterThan(total / 4);

    await cb.request(ringMessage(2, two));
    await ca.request(ringMessage(2, two));
    // The new owner receives client writes before the copy arrives: the copy must not win.
    const overwritten = moved[0]!;
    const deleted = moved[1]!;
    await cb.request({ op: Op.SET, key: toBytes(`key-${overwritten}`), value: toBytes('newer') });
    expect(countOf(await cb.request({ op: Op.DEL, key: toBytes(`key-${deleted}`) }))).toBe(0);
    expect(countOf(await ca.request({ op: Op.DEL, key: toBytes(`key-${deleted}`), fallback: true }))).toBe(1);
    // The old owner refuses plain requests for moved keys but answers fall-back reads.
    const probe = toBytes(`key-${moved[2]!}`);
    expect((await rejection(ca.request({ op: Op.GET, key: probe }))).code).toBe(ErrorCode.NOT_OWNER);
    expect(textOf(await ca.request({ op: Op.GET, key: probe, fallback: true }))).toBe(`v${moved[2]!}`);

    const ranges = moves.map(({ start, end }) => ({ start, end }));
    let sent = 0;
    for (const chunk of chunkRanges(ranges)) {
      const migrate = {
        op: Op.MIGRATE,
        epoch: 2,
        target: 'node-b',
        host: '127.0.0.1',
        port: b.address.port,
        ranges: chunk,
      } as const;
      sent += countOf(await ca.request(migrate, { timeoutMs: 20_000 }));
    }
    // Every moved key except the deleted one was sent; the overwritten one was skipped by B.
    expect(sent).toBe(moved.length - 1);
    expect(b.stats()['migration.keys_received']).toBe(moved.length - 2);

    for (let i = 0; i < total; i++) {
      const owner = after.get(`key-${i}`) === 'node-b' ? cb : ca;
      const expected = i === overwritten ? 'newer' : i === deleted ? null : `v${i}`;
      expect(textOf(await owner.request({ op: Op.GET, key: toBytes(`key-${i}`) })), `key-${i}`).toBe(
        expected,
      );
    }

    // PURGE: the old owner drops what moved; fall-back reads end with it.
    let purgedA = 0;
    let purgedB = 0;
    for (const chunk of chunkRanges(ranges)) {
      purgedA += countOf(await ca.request({ op: Op.PURGE, epoch: 2, ranges: chunk }));
      purgedB += countOf(await cb.request({ op: Op.PURGE, epoch: 2, ranges: chunk }));
    }
    expect(purgedA).toBe(moved.length - 1);
    expect(purgedB).toBe(0);
    expect((await rejection(ca.request({ op: Op.GET, key: probe, fallback: true }))).code).toBe(
      ErrorCode.NOT_OWNER,
    );
    expect(b.engine.count()).toBe(moved.length - 1);
    expect(b.stats()['migration.pending_ranges']).toBe(0);
    // A late batch of the finished migration is refused: it could overwrite newer writes.
    const late = await rejection(
      cb.request({ op: Op.MIGRATE_PUT, epoch: 2, entries: [{ key: probe, value: toBytes('stale') }] }),
    );
    expect(late.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(textOf(await cb.request({ op: Op.GET, key: probe }))).toBe(`v${moved[2]!}`);
  });

  it('refuses MIGRATE_PUT of a key the receiver does not own', async () => {
    const { cb } = await twoNodes();
    await cb.request(ringMessage(3, [{ id: 'node-a', weight: 1 }]));
    const error = await rejection(
      cb.request({ op: Op.MIGRATE_PUT, epoch: 3, entries: [{ key: toBytes('k'), value: toBytes('v') }] }),
    );
    expect(error.code).toBe(ErrorCode.NOT_OWNER);
  });

  it('ignores a RING older than the one it has', async () => {
    const { a, ca } = await twoNodes();
    await ca.request(ringMessage(5, [{ id: 'node-a', weight: 1 }]));
    await ca.request(ringMessage(4, [{ id: 'node-b', weight: 1 }]));
    expect(a.stats()['ring.epoch']).toBe(5);
    await ca.request({ op: Op.SET, key: toBytes('mine'), value: toBytes('v') });
  });
});
