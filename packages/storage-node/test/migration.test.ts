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
  type StatsMap,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { StorageNode } from '../src/index.js';
import { crashTarget } from './crash-harness.js';
import { HeldPeer } from './held-peer.js';
import { engineCases, Resources, ringRequest, sleep } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const engines = engineCases(resources);

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

/** The port each node id listens on, as the cluster map would hold it (RING carries addresses). */
const ports = new Map<string, number>();

function ringMessage(epoch: number, members: readonly RingMember[]) {
  const nodes = members.map((member) => {
    const port = ports.get(member.id);
    return port === undefined ? member : { ...member, host: '127.0.0.1', port };
  });
  return ringRequest(epoch, nodes);
}

describe.each(engines)('migration between two nodes on $name', ({ options }) => {
  async function twoNodes(): Promise<{
    a: StorageNode;
    b: StorageNode;
    ca: Connection;
    cb: Connection;
    /** B as another node sees it: MIGRATE_PUT comes from a node, never from a balancer. */
    nb: Connection;
  }> {
    const a = await resources.node({ id: 'node-a', ...options() });
    const b = await resources.node({ id: 'node-b', ...options() });
    ports.set('node-a', a.address.port);
    ports.set('node-b', b.address.port);
    // Peers, as a balancer is: only they may send RING, MIGRATE and PURGE.
    return {
      a,
      b,
      ca: await resources.peer(a.address.port),
      cb: await resources.peer(b.address.port),
      nb: await resources.peer(b.address.port, 'node'),
    };
  }

  it('fences requests routed on another ring epoch with STALE_EPOCH, before executing them', async () => {
    const { ca } = await twoNodes();
    const key = toBytes('fenced-key');
    // No ring yet: nothing to fence against, every epoch is served.
    await ca.request({ op: Op.SET, key, value: toBytes('v1'), epoch: 9 });
    await ca.request(ringMessage(5, [{ id: 'node-a', weight: 1 }]));
    for (const epoch of [4, 6]) {
      const refused = await rejection(ca.request({ op: Op.SET, key, value: toBytes('stale'), epoch }));
      expect(refused.code).toBe(ErrorCode.STALE_EPOCH);
      expect(refused.notExecuted).toBe(true);
      expect(refused.message).toBe(`routed on epoch ${epoch}, this node is at epoch 5`);
      for (const request of [
        { op: Op.GET, key, epoch },
        { op: Op.DEL, key, epoch },
        { op: Op.MGET, keys: [key], epoch },
        { op: Op.MSET, entries: [{ key, value: toBytes('stale') }], epoch },
      ] as const) {
        expect((await rejection(ca.request(request))).code).toBe(ErrorCode.STALE_EPOCH);
      }
    }
    // Nothing refused was executed; the right epoch, and no epoch (a client), are served.
    expect(textOf(await ca.request({ op: Op.GET, key, epoch: 5 }))).toBe('v1');
    expect(textOf(await ca.request({ op: Op.GET, key }))).toBe('v1');
    const stats = await ca.request({ op: Op.STATS });
    expect(stats.op === Op.STATS_RESULT ? stats.stats.fenced : undefined).toBe(10);
  });

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

  it('moves the keys of a joining node, skips copies older than its writes, serves fall-back reads until PURGE', async () => {
    const { b, ca, cb, nb } = await twoNodes();
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
    // The new owner's DEL of a key the stream has not brought yet answers for the key: it pulls the
    // old owner's copy first (it answered 0, this copy's count, when routers also asked the old owner).
    expect(countOf(await cb.request({ op: Op.DEL, key: toBytes(`key-${deleted}`) }))).toBe(1);
    expect(countOf(await cb.request({ op: Op.DEL, key: toBytes(`key-${deleted}`) }))).toBe(0);
    // An older router's second half: the old owner still holds its copy (shadowed by the tombstone).
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
      nb.request({
        op: Op.MIGRATE_PUT,
        epoch: 2,
        entries: [{ key: probe, value: toBytes('stale'), writeEpoch: 1, version: 1 }],
      }),
    );
    expect(late.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(textOf(await cb.request({ op: Op.GET, key: probe }))).toBe(`v${moved[2]!}`);
  });

  it('stores a copy only when it is newer than the entry, keeps deletes, ends tombstones at PURGE', async () => {
    const { b, cb, nb } = await twoNodes();
    const one: RingMember[] = [{ id: 'node-a', weight: 1 }];
    const two: RingMember[] = [...one, { id: 'node-b', weight: 1 }];
    await cb.request(ringMessage(3, one));
    await cb.request(ringMessage(4, two));
    const after = HashRing.from(two);
    const incoming = [...Array(200).keys()].map((i) => `key-${i}`).filter((k) => after.get(k) === 'node-b');
    const [written, deleted, copied, upgraded, foreign] = incoming;
    expect(foreign).toBeDefined();
    const key = (name: string | undefined): Uint8Array => toBytes(name as string);
    const copy = (name: string | undefined, value: string, writeEpoch: number) => ({
      key: key(name),
      value: toBytes(value),
      writeEpoch,
      version: 17,
    });
    const put = async (entries: ReturnType<typeof copy>[]): Promise<number> =>
      countOf(await nb.request({ op: Op.MIGRATE_PUT, epoch: 4, entries }));

    // Client writes on the new owner during the transition: stored at the ring epoch, 4.
    await cb.request({ op: Op.SET, key: key(written), value: toBytes('client') });
    expect(countOf(await cb.request({ op: Op.DEL, key: key(deleted) }))).toBe(0);
    expect(await put([copy(upgraded, 'first copy', 1)])).toBe(1);

    const stored = await put([
      copy(written, 'older', 3),
      copy(written, 'equal', 4),
      // A version from another cluster map generation, above the migration's epoch: capped.
      copy(written, 'other generation', 1000),
      copy(deleted, 'resurrected', 3),
      copy(deleted, 'resurrected', 4),
      copy(copied, 'copied', 2),
      copy(upgraded, 'second copy', 2),
      copy(upgraded, 'stale copy', 1),
    ]);
    expect(stored).toBe(2);
    expect(b.stats()['migration.keys_skipped']).toBe(6);
    expect(textOf(await cb.request({ op: Op.GET, key: key(written) }))).toBe('client');
    expect(textOf(await cb.request({ op: Op.GET, key: key(deleted) }))).toBeNull();
    expect(textOf(await cb.request({ op: Op.GET, key: key(copied) }))).toBe('copied');
    expect(textOf(await cb.request({ op: Op.GET, key: key(upgraded) }))).toBe('second copy');
    // A copy keeps the old owner's version; a client write gets the node's epoch and a newer version.
    expect(b.engine.header(key(copied))).toEqual({
      writeEpoch: 2,
      version: 17,
      tombstone: false,
      expireAt: 0,
    });
    expect(b.engine.header(key(written))).toEqual({
      writeEpoch: 4,
      version: expect.any(Number),
      tombstone: false,
      expireAt: 0,
    });

    // The tombstone is invisible: not counted, MGET nil, and a DEL answers 0.
    expect(b.stats().keys).toBe(3);
    expect(b.stats().tombstones).toBe(1);
    const values = await cb.request({ op: Op.MGET, keys: [key(deleted), key(copied)] });
    expect(values).toMatchObject({ op: Op.VALUES, values: [null, expect.any(Uint8Array)] });
    expect(countOf(await cb.request({ op: Op.DEL, key: key(deleted) }))).toBe(0);
    // A DEL of a value during the transition answers 1 and leaves a tombstone too.
    expect(countOf(await cb.request({ op: Op.DEL, key: key(copied) }))).toBe(1);
    expect(await put([copy(copied, 'copied', 2)])).toBe(0);
    expect(textOf(await cb.request({ op: Op.GET, key: key(copied) }))).toBeNull();
    expect(b.stats().tombstones).toBe(2);

    // PURGE of the ranges that moved in ends their tombstones and keeps every value.
    const ranges = HashRing.from(one)
      .diff(after)
      .map(({ start, end }) => ({ start, end }));
    let purged = 0;
    for (const chunk of chunkRanges(ranges)) {
      purged += countOf(await cb.request({ op: Op.PURGE, epoch: 4, ranges: chunk }));
    }
    expect(purged).toBe(0);
    expect(b.stats().tombstones).toBe(0);
    expect(b.stats()['migration.tombstones_purged']).toBe(2);
    expect(b.engine.header(key(deleted))).toBeUndefined();
    expect(b.stats().keys).toBe(2);
    // After the migration a DEL removes the key outright.
    expect(countOf(await cb.request({ op: Op.DEL, key: key(written) }))).toBe(1);
    expect(b.engine.header(key(written))).toBeUndefined();
  });

  it("a DEL waiting for the old owner's copy when PURGE ends the move deletes it and leaves no tombstone", async () => {
    const b = await resources.node({ id: 'node-b', ...options() });
    const cb = await resources.peer(b.address.port);
    // The old owner answers PULL only once released: the DEL below waits for its copy meanwhile.
    const oldOwner = new HeldPeer(resources, 'node-a');
    ports.set('node-a', await oldOwner.start());
    ports.set('node-b', b.address.port);
    const one: RingMember[] = [{ id: 'node-a', weight: 1 }];
    const two: RingMember[] = [...one, { id: 'node-b', weight: 1 }];
    await cb.request(ringMessage(3, one));
    await cb.request(ringMessage(4, two));
    const name = [...Array(200).keys()]
      .map((i) => `key-${i}`)
      .find((k) => HashRing.from(two).get(k) === 'node-b')!;
    const key = toBytes(name);
    oldOwner.copies.set(name, { value: toBytes('old owner'), writeEpoch: 3, version: 5 });

    const deleted = cb.request({ op: Op.DEL, key });
    while (oldOwner.pulls.length === 0) await sleep(5);
    const ranges = HashRing.from(one)
      .diff(HashRing.from(two))
      .map(({ start, end }) => ({ start, end }));
    for (const chunk of chunkRanges(ranges)) await cb.request({ op: Op.PURGE, epoch: 4, ranges: chunk });
    oldOwner.release();

    // The key's value was the old owner's copy: deleted (1), and nothing left of it.
    expect(countOf(await deleted)).toBe(1);
    expect(textOf(await cb.request({ op: Op.GET, key }))).toBeNull();
    expect(b.engine.header(key)).toBeUndefined();
    expect(b.stats().tombstones).toBe(0);
  });

  it('refuses MIGRATE_PUT of a key the receiver does not own', async () => {
    const { cb, nb } = await twoNodes();
    await cb.request(ringMessage(3, [{ id: 'node-a', weight: 1 }]));
    const error = await rejection(
      nb.request({
        op: Op.MIGRATE_PUT,
        epoch: 3,
        entries: [{ key: toBytes('k'), value: toBytes('v'), writeEpoch: 0, version: 1 }],
      }),
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

describe('a new owner SIGKILLed in the middle of a migration (lmdb)', () => {
  it('keeps every acknowledged write and delete when the old owner streams everything again', async () => {
    const one: RingMember[] = [{ id: 'node-a', weight: 1 }];
    const two: RingMember[] = [...one, { id: 'node-b', weight: 1 }];
    const after = HashRing.from(two);
    const ranges = HashRing.from(one)
      .diff(after)
      .map(({ start, end }) => ({ start, end }));
    // Slow enough that B is killed after the first batch, well before the stream ends.
    const a = await resources.node({
      id: 'node-a',
      engine: 'lmdb',
      dataDir: resources.tempDir(),
      migrationRateKeysPerSecond: 150,
    });
    ports.set('node-a', a.address.port);
    const ca = await resources.peer(a.address.port);
    const bDir = resources.tempDir();
    const bArgs = [
      '--id',
      'node-b',
      '--engine',
      'lmdb',
      '--data-dir',
      bDir,
      '--port',
      '0',
      '--log-level',
      'warn',
    ];
    /** Starts B as a real process and gives it the rings a balancer gives a (re)connecting node. */
    const startB = async () => {
      const target = crashTarget(await resources.spawnNode(bArgs));
      // Restarted on the port it had: the ring holds that address.
      bArgs[bArgs.indexOf('--port') + 1] = String(target.port);
      ports.set('node-b', target.port);
      const connection = await resources.peer(target.port);
      await connection.request(ringMessage(1, one));
      await connection.request(ringMessage(2, two));
      return { target, connection };
    };
    /** The old owner's MIGRATE of every moving range (in chunks, as a balancer sends them). */
    const migrate = async (port: number): Promise<number> => {
      let sent = 0;
      for (const chunk of chunkRanges(ranges)) {
        const request = {
          op: Op.MIGRATE,
          epoch: 2,
          target: 'node-b',
          host: '127.0.0.1',
          port,
          ranges: chunk,
        };
        sent += countOf(await ca.request(request, { timeoutMs: 20_000 }));
      }
      return sent;
    };

    await ca.request(ringMessage(1, one));
    const total = 400;
    for (let i = 0; i < total; i++)
      await ca.request({ op: Op.SET, key: toBytes(`key-${i}`), value: toBytes(`old-${i}`) });
    const moved = [...Array(total).keys()].filter((i) => after.get(`key-${i}`) === 'node-b');
    expect(moved.length).toBeGreaterThan(150);
    let b = await startB();
    await ca.request(ringMessage(2, two));

    // What B acknowledges must survive: the expected value of every moved key (null = deleted).
    const expected = new Map<number, string | null>(moved.map((i) => [i, `old-${i}`]));
    const write = async (i: number, round: string): Promise<void> => {
      await b.connection.request({ op: Op.SET, key: toBytes(`key-${i}`), value: toBytes(`${round}-${i}`) });
      expected.set(i, `${round}-${i}`);
    };
    const remove = async (i: number): Promise<void> => {
      await b.connection.request({ op: Op.DEL, key: toBytes(`key-${i}`) });
      expected.set(i, null);
    };
    // Before any copy arrived: SETs and DELs of keys B does not hold yet (the DELs leave tombstones).
    for (const i of moved.slice(0, 40)) await (i % 2 === 0 ? write(i, 'before') : remove(i));
    // The first stream: B is killed once the first batch is in, with copies on disk.
    const firstStream = migrate(b.target.port).catch(() => undefined);
    const deadline = Date.now() + 15_000;
    while (Number((await statsOf(b.connection))['migration.keys_received']) === 0) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the first batch on B');
      await sleep(10);
    }
    // Writes over copies (the first batch) and over keys not copied yet, then the crash.
    for (const i of moved.slice(40, 120)) await (i % 3 === 0 ? remove(i) : write(i, 'during'));
    await b.target.kill();
    await firstStream;

    // Restarted on the same data dir: the old owner's MIGRATE is retried and sends every key again.
    b = await startB();
    for (const i of moved.slice(120, 140)) await (i % 2 === 0 ? remove(i) : write(i, 'after'));
    expect(await migrate(b.target.port)).toBe(moved.length);

    /** Every moved key must read as acknowledged: a lost write or a resurrected delete is listed. */
    const check = async (): Promise<void> => {
      const wrong: string[] = [];
      for (const i of moved) {
        const got = textOf(await b.connection.request({ op: Op.GET, key: toBytes(`key-${i}`) }));
        if (got !== expected.get(i)) wrong.push(`key-${i}: ${got} instead of ${expected.get(i)}`);
      }
      expect(wrong).toEqual([]);
    };
    await check();
    const deletes = [...expected.values()].filter((value) => value === null).length;
    expect(deletes).toBeGreaterThan(20);
    const stats = await statsOf(b.connection);
    expect(stats.keys).toBe(moved.length - deletes);
    expect(stats.tombstones).toBe(deletes);

    // PURGE ends the migration: the old owner drops its copies, the new one its tombstones.
    let purgedA = 0;
    for (const chunk of chunkRanges(ranges)) {
      purgedA += countOf(await ca.request({ op: Op.PURGE, epoch: 2, ranges: chunk }));
      expect(countOf(await b.connection.request({ op: Op.PURGE, epoch: 2, ranges: chunk }))).toBe(0);
    }
    expect(purgedA).toBe(moved.length);
    await check();
    const purged = await statsOf(b.connection);
    expect(purged.tombstones).toBe(0);
    expect(purged.keys).toBe(moved.length - deletes);
  }, 60_000);
});

async function statsOf(connection: Connection): Promise<StatsMap> {
  const answer = await connection.request({ op: Op.STATS });
  expect(answer.op).toBe(Op.STATS_RESULT);
  return (answer as Extract<Response, { op: typeof Op.STATS_RESULT }>).stats;
}
