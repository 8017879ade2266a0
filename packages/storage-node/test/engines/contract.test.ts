import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { open as openLmdb } from 'lmdb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type EntryHeader,
  type EvictionScope,
  LMDB_FORMAT,
  LmdbEngine,
  MAX_KEY_BYTES,
  MemoryEngine,
  type StorageEngine,
  StorageEngineError,
  type VersionedEntry,
} from '../../src/engines/index.js';
import { type Harness, lmdbHarness, memoryHarness } from './harness.js';

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const hex = (value: Uint8Array): string => Buffer.from(value).toString('hex');
/** Ring position of a key for tests: its first byte, so ranges are easy to reason about. */
const firstByte = (key: Uint8Array): number => key[0]!;

describe.each([memoryHarness, lmdbHarness])('StorageEngine contract (%o)', (makeHarness) => {
  let harness: Harness;
  let engine: StorageEngine;

  beforeEach(async () => {
    harness = makeHarness();
    engine = await harness.open();
  });

  afterEach(async () => {
    await engine.close();
    await harness.cleanup();
  });

  it('scans every key present for the whole iteration while keys are written and deleted between pages', async () => {
    const stable = Array.from({ length: 3000 }, (_, i) => `stable-${i}`);
    // Issued together (lmdb: one transaction and one flush instead of one per write).
    await Promise.all([
      ...stable.map((name) => engine.set(text(name), text('v'))),
      ...Array.from({ length: 500 }, (_, i) => engine.set(text(`doomed-${i}`), text('v'))),
      engine.tombstone(text('ghost'), 1),
    ]);
    const seen = new Set<string>();
    let cursor = 0;
    let pages = 0;
    let added = 0;
    do {
      const page = engine.scan(cursor, 50, (key) => key[0] !== 0x78 /* 'x': filtered out */);
      for (const key of page.keys) seen.add(Buffer.from(key).toString());
      cursor = page.cursor;
      pages++;
      // Between pages: new keys (the memory index doubles several times), deletes, overwrites.
      await Promise.all([
        ...Array.from({ length: 100 }, () => engine.set(text(`added-${added++}`), text('v'))),
        engine.delete(text(`doomed-${pages}`)),
        engine.set(text(stable[pages % stable.length]!), text(`v${pages}`)),
        engine.set(text(`x-filtered-${pages}`), text('v')),
      ]);
    } while (cursor !== 0 && pages < 10_000);
    expect(cursor).toBe(0);
    expect(stable.filter((name) => !seen.has(name))).toEqual([]);
    expect(seen.has('ghost')).toBe(false);
    expect([...seen].some((name) => name.startsWith('x'))).toBe(false);
  });

  it('scans an empty engine in one call', async () => {
    expect(engine.scan(0, 10, () => true)).toEqual({ cursor: 0, keys: [] });
  });

  it('round-trips set/get/has/delete/count', async () => {
    expect(engine.get(text('a'))).toBeUndefined();
    expect(engine.has(text('a'))).toBe(false);
    await engine.set(text('a'), text('one'));
    await engine.set(text('b'), text('two'));
    expect(hex(engine.get(text('a'))!)).toBe(hex(text('one')));
    expect(engine.has(text('b'))).toBe(true);
    expect(engine.count()).toBe(2);
    expect(await engine.delete(text('a'))).toBe(true);
    expect(engine.get(text('a'))).toBeUndefined();
    expect(engine.has(text('a'))).toBe(false);
    expect(engine.count()).toBe(1);
  });

  it('stores binary keys containing 0x00 and 0xff distinctly', async () => {
    const keys = [bytes(0), bytes(0, 0), bytes(0xff), bytes(0xff, 0), bytes(0, 0xff, 0), bytes(0x80)];
    for (const [i, key] of keys.entries()) await engine.set(key, bytes(i, 0xff, 0));
    expect(engine.count()).toBe(keys.length);
    for (const [i, key] of keys.entries()) expect(hex(engine.get(key)!)).toBe(hex(bytes(i, 0xff, 0)));
  });

  it('stores an empty value as present and empty', async () => {
    await engine.set(text('empty'), new Uint8Array(0));
    expect(engine.has(text('empty'))).toBe(true);
    expect(engine.get(text('empty'))?.byteLength).toBe(0);
  });

  it('overwrites, including across value sizes', async () => {
    for (const size of [10, 10, 3, 300, 70_000, 5, 0, 100]) {
      const value = new Uint8Array(size).fill(size & 0xff);
      await engine.set(text('k'), value);
      expect(hex(engine.get(text('k'))!)).toBe(hex(value));
    }
    expect(engine.count()).toBe(1);
  });

  it('reports false when deleting a missing key', async () => {
    expect(await engine.delete(text('missing'))).toBe(false);
    await engine.set(text('k'), text('v'));
    expect(await engine.delete(text('k'))).toBe(true);
    expect(await engine.delete(text('k'))).toBe(false);
  });

  it('rejects invalid keys with typed errors', async () => {
    await expect(engine.set(new Uint8Array(MAX_KEY_BYTES + 1), text('v'))).rejects.toMatchObject({
      code: 'KEY_TOO_LARGE',
    });
    await expect(engine.set(new Uint8Array(0), text('v'))).rejects.toMatchObject({ code: 'INVALID_KEY' });
    await engine.set(new Uint8Array(MAX_KEY_BYTES).fill(7), text('max'));
    expect(engine.has(new Uint8Array(MAX_KEY_BYTES).fill(7))).toBe(true);
    expect(engine.get(new Uint8Array(MAX_KEY_BYTES + 1))).toBeUndefined();
    expect(await engine.delete(new Uint8Array(0))).toBe(false);
  });

  it('lists keys in a ring range, including wrap-around', async () => {
    for (const first of [1, 5, 10, 200, 250]) await engine.set(bytes(first, 9), text('v'));
    const firsts = (start: number, end: number): number[] =>
      [...engine.keysInRange({ start, end }, firstByte)].map(firstByte).sort((a, b) => a - b);
    expect(firsts(1, 10)).toEqual([5, 10]);
    expect(firsts(0, 1)).toEqual([1]);
    expect(firsts(200, 5)).toEqual([1, 5, 250]);
    expect(firsts(10, 10)).toEqual([1, 5, 10, 200, 250]);
    expect(firsts(11, 199)).toEqual([]);
  });

  it('flushes', async () => {
    await engine.set(text('k'), text('v'));
    await expect(engine.flush()).resolves.toBeUndefined();
  });

  it('fails with ENGINE_CLOSED after close', async () => {
    await engine.set(text('k'), text('v'));
    await engine.close();
    const closed = { code: 'ENGINE_CLOSED' };
    expect(() => engine.get(text('k'))).toThrow(StorageEngineError);
    expect(() => engine.has(text('k'))).toThrowError(expect.objectContaining(closed));
    expect(() => engine.count()).toThrowError(expect.objectContaining(closed));
    await expect(engine.set(text('k'), text('v'))).rejects.toMatchObject(closed);
    await expect(engine.delete(text('k'))).rejects.toMatchObject(closed);
    await expect(engine.close()).resolves.toBeUndefined();
  });

  it('acknowledges concurrent writes and keeps the last one per key', async () => {
    const writes: Promise<unknown>[] = [];
    for (let i = 0; i < 200; i++) writes.push(engine.set(bytes(i % 50, 1), bytes(i)));
    writes.push(engine.delete(bytes(0, 1)));
    await Promise.all(writes);
    expect(engine.count()).toBe(49);
    expect(hex(engine.get(bytes(49, 1))!)).toBe(hex(bytes(199)));
  });

  it('stores a version header with every value: writeEpoch as given, a new version per write', async () => {
    const k = text('k');
    expect(engine.header(k)).toBeUndefined();
    expect(engine.getEntry(k)).toBeUndefined();
    const versions: number[] = [];
    const version = (): number => engine.header(k)!.version;
    await engine.set(k, text('one'), 7);
    expect(engine.header(k)).toEqual({
      writeEpoch: 7,
      version: expect.any(Number),
      tombstone: false,
      expireAt: 0,
    });
    versions.push(version());
    await engine.set(k, text('two'), 0xffff_ffff);
    const entry = engine.getEntry(k)!;
    expect([hex(entry.value), entry.writeEpoch]).toEqual([hex(text('two')), 0xffff_ffff]);
    versions.push(entry.version);
    // The default writeEpoch is 0 (no RING yet).
    await engine.set(k, new Uint8Array(0));
    expect(engine.header(k)).toMatchObject({ writeEpoch: 0, tombstone: false, expireAt: 0 });
    versions.push(version());
    expect(engine.getEntry(k)!.value.byteLength).toBe(0);
    // A delete forgets the key, not the clock: the re-created key's version is above every one before.
    await engine.delete(k);
    await engine.set(k, text('again'), 2);
    versions.push(version());
    await engine.tombstone(k, 3);
    versions.push(version());
    await engine.set(k, text('back'), 3);
    versions.push(version());
    expect(versions.every((v, i) => Number.isSafeInteger(v) && (i === 0 || v > versions[i - 1]!))).toBe(true);
    // Versions come from the node-wide clock: another key's write is above them too.
    await engine.set(text('other'), text('x'));
    expect(engine.header(text('other'))!.version).toBeGreaterThan(versions.at(-1)!);
    expect(engine.clock.current).toBe(engine.header(text('other'))!.version);
  });

  it('clears every entry at once (FLUSH), keeping the clock going', async () => {
    for (let i = 0; i < 50; i++) await engine.set(text(`k${i}`), text('v'), 1);
    await engine.set(text('expired'), text('v'), 1, Date.now() - 1);
    await engine.tombstone(text('gone'), 2);
    const before = engine.clock.current;
    expect(await engine.clear()).toBe(50);
    expect(engine.count()).toBe(0);
    expect(engine.tombstoneCount()).toBe(0);
    expect(engine.header(text('gone'))).toBeUndefined();
    expect(engine.get(text('k1'))).toBeUndefined();
    expect([...engine.entriesInRange({ start: 0, end: 0 }, () => 1, { tombstones: true })]).toEqual([]);
    expect(engine.scan(0, 100, () => true)).toEqual({ cursor: 0, keys: [] });
    // A key written again takes a version above every one before the flush.
    await engine.set(text('k1'), text('again'), 1);
    expect(engine.header(text('k1'))!.version).toBeGreaterThan(before);
    expect(engine.count()).toBe(1);
    if (harness.name === 'lmdb') {
      await engine.close();
      engine = await harness.open(true);
      expect(engine.count()).toBe(1);
      expect(engine.tombstoneCount()).toBe(0);
    }
  });

  it('refuses a writeEpoch that is not a uint32 or a version that is not below 2^53, storing nothing', async () => {
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) {
      await expect(engine.set(text('k'), text('v'), bad)).rejects.toThrow(RangeError);
      await expect(engine.tombstone(text('k'), bad)).rejects.toThrow(RangeError);
      const batch = [
        { key: text('a'), value: text('v'), writeEpoch: 1, version: 1 },
        { key: text('b'), value: text('v'), writeEpoch: bad, version: 1 },
      ];
      await expect(engine.applyIfNewer(batch)).rejects.toThrow(RangeError);
    }
    for (const bad of [-1, 2 ** 53, 1.5, Number.NaN]) {
      const batch = [
        { key: text('a'), value: text('v'), writeEpoch: 1, version: 1 },
        { key: text('b'), value: text('v'), writeEpoch: 1, version: bad },
      ];
      await expect(engine.applyIfNewer(batch)).rejects.toThrow(RangeError);
    }
    expect(engine.header(text('k'))).toBeUndefined();
    expect(engine.header(text('a'))).toBeUndefined();
  });

  it('raises the clock to every version a copy brings, stored or skipped', async () => {
    const ahead = engine.clock.current + 10 ** 12;
    // Stored: the key's next client write is above the copy's version.
    expect(
      await engine.applyIfNewer([{ key: text('moved'), value: text('v'), writeEpoch: 1, version: ahead }]),
    ).toBe(1);
    expect(engine.header(text('moved'))!.version).toBe(ahead);
    await engine.set(text('moved'), text('w'), 2);
    expect(engine.header(text('moved'))!.version).toBeGreaterThan(ahead);
    // Skipped (the local entry is newer): the clock still moves past the copy's version.
    await engine.set(text('local'), text('v'), 5);
    const further = engine.clock.current + 10 ** 12;
    expect(
      await engine.applyIfNewer([
        { key: text('local'), value: text('old'), writeEpoch: 4, version: further },
      ]),
    ).toBe(0);
    await engine.tombstone(text('local'), 5);
    expect(engine.header(text('local'))!.version).toBeGreaterThan(further);
  });

  it('keeps tombstones invisible to reads, counts and scans', async () => {
    for (const first of [1, 5, 10]) await engine.set(bytes(first, 9), text('v'), 1);
    expect(await engine.tombstone(bytes(5, 9), 3)).toBe(true);
    expect(await engine.tombstone(bytes(6, 9), 3)).toBe(false);
    for (const key of [bytes(5, 9), bytes(6, 9)]) {
      expect(engine.get(key)).toBeUndefined();
      expect(engine.has(key)).toBe(false);
      expect(engine.getEntry(key)).toBeUndefined();
    }
    expect(engine.header(bytes(5, 9))).toEqual({
      writeEpoch: 3,
      version: expect.any(Number),
      tombstone: true,
      expireAt: 0,
    });
    expect(engine.header(bytes(6, 9))).toEqual({
      writeEpoch: 3,
      version: expect.any(Number),
      tombstone: true,
      expireAt: 0,
    });
    expect(engine.count()).toBe(2);
    expect(engine.tombstoneCount()).toBe(2);
    const firsts = (keys: Iterable<Uint8Array>): number[] => [...keys].map(firstByte).sort((a, b) => a - b);
    expect(firsts(engine.keysInRange({ start: 0, end: 0 }, firstByte))).toEqual([1, 10]);
    const scanned = [...engine.entriesInRange({ start: 0, end: 0 }, firstByte)];
    expect(scanned.map((entry) => [firstByte(entry.key), entry.tombstone, entry.writeEpoch])).toEqual(
      expect.arrayContaining([
        [1, false, 1],
        [10, false, 1],
      ]),
    );
    expect(scanned).toHaveLength(2);
    const all = [...engine.entriesInRange({ start: 4, end: 6 }, firstByte, { tombstones: true })];
    expect(all.map((entry) => [firstByte(entry.key), entry.tombstone, entry.writeEpoch])).toEqual(
      expect.arrayContaining([
        [5, true, 3],
        [6, true, 3],
      ]),
    );
    expect(all).toHaveLength(2);
    // A tombstone over a tombstone: no value existed, the newer version is kept.
    expect(await engine.tombstone(bytes(6, 9), 4)).toBe(false);
    expect(engine.header(bytes(6, 9))).toEqual({
      writeEpoch: 4,
      version: expect.any(Number),
      tombstone: true,
      expireAt: 0,
    });
    expect(engine.tombstoneCount()).toBe(2);
    // DEL of a tombstone answers "no value" and removes it.
    expect(await engine.delete(bytes(6, 9))).toBe(false);
    expect(engine.header(bytes(6, 9))).toBeUndefined();
    expect(engine.tombstoneCount()).toBe(1);
    // A client write replaces a tombstone in one write.
    await engine.set(bytes(5, 9), text('back'), 4);
    expect(new TextDecoder().decode(engine.get(bytes(5, 9)))).toBe('back');
    expect(engine.header(bytes(5, 9))).toEqual({
      writeEpoch: 4,
      version: expect.any(Number),
      tombstone: false,
      expireAt: 0,
    });
    expect(engine.count()).toBe(3);
    expect(engine.tombstoneCount()).toBe(0);
  });

  it('applies a copy only when it is newer than the entry, value or tombstone', async () => {
    await engine.set(text('value'), text('client'), 5);
    await engine.tombstone(text('deleted'), 5);
    await engine.set(text('old'), text('stale'), 2);
    await engine.tombstone(text('old-tombstone'), 2);
    const copy = (key: string, writeEpoch: number) => ({
      key: text(key),
      value: text(`copy-${writeEpoch}`),
      writeEpoch,
      version: 40,
    });
    const applied = await engine.applyIfNewer([
      copy('value', 4),
      copy('value', 5),
      copy('deleted', 4),
      copy('deleted', 5),
      copy('old', 3),
      copy('old-tombstone', 3),
      copy('absent', 0),
    ]);
    expect(applied).toBe(3);
    const read = (key: string): string | undefined => {
      const value = engine.get(text(key));
      return value === undefined ? undefined : new TextDecoder().decode(value);
    };
    expect(read('value')).toBe('client');
    expect(read('deleted')).toBeUndefined();
    expect(engine.header(text('deleted'))?.tombstone).toBe(true);
    expect(read('old')).toBe('copy-3');
    expect(read('old-tombstone')).toBe('copy-3');
    expect(read('absent')).toBe('copy-0');
    // A copy keeps the version it had on the old owner.
    expect(engine.header(text('old'))).toEqual({ writeEpoch: 3, version: 40, tombstone: false, expireAt: 0 });
    expect(engine.count()).toBe(4);
    expect(engine.tombstoneCount()).toBe(1);
  });

  it('orders copies of one writeEpoch by version: a replicated write or delete applies once, in order', async () => {
    const k = text('replicated');
    const put = (version: number, value: string) => ({ key: k, value: text(value), writeEpoch: 7, version });
    expect(await engine.applyIfNewer([put(100, 'a'), put(200, 'b')])).toBe(2);
    // Sent again (a re-sent batch) or out of date: skipped.
    expect(await engine.applyIfNewer([put(100, 'a'), put(200, 'b'), put(150, 'c')])).toBe(0);
    expect(new TextDecoder().decode(engine.get(k))).toBe('b');
    const remove = { key: k, value: new Uint8Array(0), writeEpoch: 7, version: 300, deleted: true };
    expect(await engine.applyIfNewer([remove])).toBe(1);
    expect(engine.header(k)).toBeUndefined();
    // A newer copy that already expired removes the older value too.
    await engine.applyIfNewer([put(400, 'd')]);
    await engine.applyIfNewer([{ ...put(500, 'e'), expireAt: Date.now() - 1 }]);
    expect(engine.get(k)).toBeUndefined();
    expect(engine.count()).toBe(0);
  });

  it('compares a copy with a client write issued before it, even if not yet committed', async () => {
    const k = text('race');
    const client = engine.set(k, text('client'), 6);
    const copy = engine.applyIfNewer([{ key: k, value: text('copy'), writeEpoch: 5, version: 1 }]);
    const deleted = engine.tombstone(text('race-del'), 6);
    const resurrect = engine.applyIfNewer([
      { key: text('race-del'), value: text('x'), writeEpoch: 5, version: 1 },
    ]);
    expect(await Promise.all([client, copy, deleted, resurrect])).toEqual([undefined, 0, false, 0]);
    expect(new TextDecoder().decode(engine.get(k))).toBe('client');
    expect(engine.get(text('race-del'))).toBeUndefined();
  });

  it('gives writes increasing versions in call order when puts, deletes and tombstones interleave', async () => {
    const k = text('interleave');
    const versions: number[] = [];
    // Issued in one turn: two puts, a delete queued behind them, then a write after the delete.
    const first = [engine.set(k, text('a'), 1), engine.set(k, text('b'), 1)];
    const deleted = engine.delete(k);
    await deleted;
    // The delete has committed; the puts before it may not have reported yet.
    const afterDelete = engine.set(k, text('c'), 1);
    await Promise.all([...first, afterDelete]);
    expect(engine.header(k)).toEqual({
      writeEpoch: 1,
      version: expect.any(Number),
      tombstone: false,
      expireAt: 0,
    });
    versions.push(engine.header(k)!.version);
    await engine.tombstone(k, 2);
    versions.push(engine.header(k)!.version);
    // A put queued behind a tombstone's callback takes its version after it, in the transaction.
    await Promise.all([engine.set(k, text('d'), 2), engine.set(k, text('e'), 2)]);
    expect(engine.header(k)).toMatchObject({ writeEpoch: 2, tombstone: false, expireAt: 0 });
    versions.push(engine.header(k)!.version);
    expect(engine.tombstoneCount()).toBe(0);
    // No tombstone is left: plain writes again (lmdb's native puts), versions taken at the call.
    await Promise.all([engine.set(k, text('f'), 2), engine.set(k, text('g'), 2)]);
    versions.push(engine.header(k)!.version);
    expect(new TextDecoder().decode(engine.get(k))).toBe('g');
    expect(versions.every((v, i) => i === 0 || v > versions[i - 1]!)).toBe(true);
  });

  it('removes tombstones no newer than the given epoch, never values', async () => {
    await engine.tombstone(text('t2'), 2);
    await engine.tombstone(text('t3'), 3);
    await engine.set(text('v'), text('value'), 1);
    expect(await engine.removeTombstones([text('t2'), text('t3'), text('v'), text('none')], 2)).toBe(1);
    expect(engine.header(text('t2'))).toBeUndefined();
    expect(engine.header(text('t3'))?.tombstone).toBe(true);
    expect(engine.has(text('v'))).toBe(true);
    expect(engine.tombstoneCount()).toBe(1);
    expect(await engine.removeTombstones([text('t3')], 3)).toBe(1);
    expect(engine.tombstoneCount()).toBe(0);
    expect(engine.count()).toBe(1);
  });

  it("removes values and tombstones no newer than the given epoch (a returning replica's stale copies), keeps newer ones", async () => {
    await engine.tombstone(text('t2'), 2);
    await engine.set(text('v1'), text('old'), 1);
    await engine.set(text('v2'), text('old'), 2);
    await engine.set(text('v3'), text('new'), 3);
    await engine.tombstone(text('t3'), 3);
    const keys = ['t2', 'v1', 'v2', 'v3', 't3', 'none'].map(text);
    expect(await engine.removeUpTo(keys, 2)).toBe(3);
    for (const gone of ['t2', 'v1', 'v2']) expect(engine.header(text(gone)), gone).toBeUndefined();
    expect(new TextDecoder().decode(engine.get(text('v3')))).toBe('new');
    expect(engine.header(text('t3'))?.tombstone).toBe(true);
    expect(engine.count()).toBe(1);
    expect(engine.tombstoneCount()).toBe(1);
  });

  it('matches a Map model under random set/delete sequences', async () => {
    const key = fc.uint8Array({ minLength: 1, maxLength: 4, min: 0, max: 3 });
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), key, value: fc.uint8Array({ maxLength: 300 }) }),
      fc.record({ kind: fc.constant('delete' as const), key }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        for (const k of [...engine.keysInRange({ start: 0, end: 0 }, () => 1)]) await engine.delete(k);
        const model = new Map<string, string>();
        for (const step of ops) {
          const id = hex(step.key);
          if (step.kind === 'set') {
            await engine.set(step.key, step.value);
            model.set(id, hex(step.value));
          } else {
            expect(await engine.delete(step.key)).toBe(model.delete(id));
          }
        }
        expect(engine.count()).toBe(model.size);
        for (const [id, value] of model) expect(hex(engine.get(Buffer.from(id, 'hex'))!)).toBe(value);
        const listed = [...engine.keysInRange({ start: 0, end: 0 }, () => 1)].map(hex).sort();
        expect(listed).toEqual([...model.keys()].sort());
      }),
      { numRuns: 40 },
    );
  });

  it('reports bytesUsed that grows with data', async () => {
    const before = engine.bytesUsed();
    for (let i = 0; i < 100; i++) await engine.set(text(`key-${i}`), new Uint8Array(100));
    expect(engine.bytesUsed()).toBeGreaterThanOrEqual(before + 100 * 100);
  });

  it('matches a versioned model under random writes, tombstones, copies and purges', async () => {
    interface Model {
      value: string | undefined;
      writeEpoch: number;
      /** A copy's version; undefined for a client write (the engine's clock chose it). */
      version: number | undefined;
    }
    const key = fc.uint8Array({ minLength: 1, maxLength: 3, min: 0, max: 3 });
    const epoch = fc.integer({ min: 0, max: 6 });
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), key, value: fc.uint8Array({ maxLength: 80 }), epoch }),
      fc.record({ kind: fc.constant('delete' as const), key }),
      fc.record({ kind: fc.constant('tombstone' as const), key, epoch }),
      fc.record({
        kind: fc.constant('copy' as const),
        key,
        value: fc.uint8Array({ maxLength: 80 }),
        epoch,
        version: fc.nat(),
      }),
      fc.record({ kind: fc.constant('purge' as const), key, epoch }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const everything = [...engine.entriesInRange({ start: 0, end: 0 }, () => 1, { tombstones: true })];
        for (const entry of everything) await engine.delete(entry.key);
        const model = new Map<string, Model>();
        // Issued without awaiting, then awaited together: order must hold inside one batch too.
        const pending: Promise<unknown>[] = [];
        for (const step of ops) {
          const id = hex(step.key);
          const before = model.get(id);
          switch (step.kind) {
            case 'set':
              pending.push(engine.set(step.key, step.value, step.epoch));
              model.set(id, { value: hex(step.value), writeEpoch: step.epoch, version: undefined });
              break;
            case 'delete':
              pending.push(
                engine.delete(step.key).then((existed) => expect(existed).toBe(before?.value !== undefined)),
              );
              model.delete(id);
              break;
            case 'tombstone':
              pending.push(
                engine
                  .tombstone(step.key, step.epoch)
                  .then((existed) => expect(existed).toBe(before?.value !== undefined)),
              );
              model.set(id, { value: undefined, writeEpoch: step.epoch, version: undefined });
              break;
            case 'copy': {
              // (writeEpoch, version) in that order; a client write's version (from the clock, far
              // above the copies' small versions) beats a copy of its own writeEpoch.
              const newer =
                before === undefined ||
                step.epoch > before.writeEpoch ||
                (step.epoch === before.writeEpoch &&
                  before.version !== undefined &&
                  step.version > before.version);
              pending.push(
                engine
                  .applyIfNewer([
                    { key: step.key, value: step.value, writeEpoch: step.epoch, version: step.version },
                  ])
                  .then((applied) => expect(applied).toBe(newer ? 1 : 0)),
              );
              if (newer)
                model.set(id, { value: hex(step.value), writeEpoch: step.epoch, version: step.version });
              break;
            }
            case 'purge': {
              const ends =
                before !== undefined && before.value === undefined && before.writeEpoch <= step.epoch;
              pending.push(
                engine
                  .removeTombstones([step.key], step.epoch)
                  .then((removed) => expect(removed).toBe(ends ? 1 : 0)),
              );
              if (ends) model.delete(id);
              break;
            }
          }
        }
        await Promise.all(pending);
        const values = [...model.values()].filter((entry) => entry.value !== undefined);
        expect(engine.count()).toBe(values.length);
        expect(engine.tombstoneCount()).toBe(model.size - values.length);
        for (const [id, entry] of model) {
          const k = Buffer.from(id, 'hex');
          const expected: EntryHeader = {
            writeEpoch: entry.writeEpoch,
            version: entry.version ?? (expect.any(Number) as number),
            expireAt: 0,
            tombstone: entry.value === undefined,
          };
          expect(engine.header(k)).toEqual(expected);
          expect(engine.get(k) === undefined ? undefined : hex(engine.get(k)!)).toBe(entry.value);
        }
        const listed = [...engine.entriesInRange({ start: 0, end: 0 }, () => 1, { tombstones: true })];
        expect(listed.map((entry) => hex(entry.key)).sort()).toEqual([...model.keys()].sort());
      }),
      { numRuns: 40 },
    );
  });

  it('keeps data across reopen (lmdb only)', async () => {
    if (harness.name !== 'lmdb') return;
    await engine.set(bytes(0, 0xff), text('durable'));
    await engine.close();
    engine = await harness.open(true);
    expect(new TextDecoder().decode(engine.get(bytes(0, 0xff)))).toBe('durable');
  });

  it('keeps headers and tombstones across reopen (lmdb only)', async () => {
    if (harness.name !== 'lmdb') return;
    await engine.set(text('v'), text('value'), 9);
    await engine.set(text('v'), text('value2'), 9);
    await engine.set(text('gone'), text('x'), 3);
    await engine.tombstone(text('gone'), 9);
    await engine.tombstone(text('never'), 8);
    await engine.close();
    engine = await harness.open(true);
    expect(engine.header(text('v'))).toEqual({
      writeEpoch: 9,
      version: expect.any(Number),
      tombstone: false,
      expireAt: 0,
    });
    expect(engine.header(text('gone'))).toEqual({
      writeEpoch: 9,
      version: expect.any(Number),
      tombstone: true,
      expireAt: 0,
    });
    expect(engine.header(text('never'))).toEqual({
      writeEpoch: 8,
      version: expect.any(Number),
      tombstone: true,
      expireAt: 0,
    });
    expect(engine.get(text('gone'))).toBeUndefined();
    expect(engine.count()).toBe(1);
    expect(engine.tombstoneCount()).toBe(2);
    // A copy older than the tombstone still cannot bring the key back after the restart.
    expect(
      await engine.applyIfNewer([{ key: text('gone'), value: text('x'), writeEpoch: 3, version: 1 }]),
    ).toBe(0);
    expect(engine.get(text('gone'))).toBeUndefined();
  });
});

describe('LmdbEngine data format', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-format-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Writes `keys` the way a node before entry versions did: bare values in the main database. */
  async function writeFormat1(keys: string[]): Promise<void> {
    const db = openLmdb<Uint8Array, Uint8Array>({ path: dir, encoding: 'binary', keyEncoding: 'binary' });
    for (const key of keys) await db.put(text(key), text(`value of ${key}`));
    await db.close();
  }

  it('refuses a data dir written before entry versions (format 1), naming the format', async () => {
    await writeFormat1(['a', 'b']);
    const error = await LmdbEngine.open({ dataDir: dir }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StorageEngineError);
    expect(error).toMatchObject({ code: 'UNSUPPORTED_FORMAT' });
    expect((error as Error).message).toMatch(/format 1/);
    expect((error as Error).message).toContain(`format ${LMDB_FORMAT}`);
    expect((error as Error).message).toContain(dir);
    // Nothing was written: the old data is still there for the version that can read it.
    const db = openLmdb<Uint8Array, Uint8Array>({ path: dir, encoding: 'binary', keyEncoding: 'binary' });
    expect(new TextDecoder().decode(db.getBinary(text('a')))).toBe('value of a');
    expect((db.getStats() as { entryCount: number }).entryCount).toBe(2);
    await db.close();
  });

  it('refuses format 1 data even with a key named like the meta database', async () => {
    await writeFormat1(['dstore-meta', 'dstore-entries']);
    await expect(LmdbEngine.open({ dataDir: dir })).rejects.toMatchObject({ code: 'UNSUPPORTED_FORMAT' });
  });

  it('refuses an unknown format number', async () => {
    const engine = await LmdbEngine.open({ dataDir: dir });
    await engine.close();
    const root = openLmdb<Uint8Array, Uint8Array>({ path: dir, encoding: 'binary', keyEncoding: 'binary' });
    const meta = root.openDB<Uint8Array, Uint8Array>({
      name: 'dstore-meta',
      encoding: 'binary',
      keyEncoding: 'binary',
    });
    await meta.put(text('format'), text('9'));
    await root.close();
    await expect(LmdbEngine.open({ dataDir: dir })).rejects.toThrow(/format 9/);
  });

  it('opens an empty directory written by any version as the current format', async () => {
    await writeFormat1([]);
    const engine = await LmdbEngine.open({ dataDir: dir });
    await engine.set(text('k'), text('v'), 1);
    await engine.close();
    const reopened = await LmdbEngine.open({ dataDir: dir });
    expect(reopened.header(text('k'))).toEqual({
      writeEpoch: 1,
      version: expect.any(Number),
      tombstone: false,
      expireAt: 0,
    });
    await reopened.close();
  });
});

describe('LmdbEngine group commit', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(['flush', 'commit'] as const)(
    'shares commits and flushes across 1,000 concurrent sets (%s)',
    async (durability) => {
      const engine = await LmdbEngine.open({ dataDir: dir, durability });
      const before = engine.stats();
      const writes = Array.from({ length: 1000 }, (_, i) => engine.set(text(`key-${i}`), bytes(i & 0xff)));
      await Promise.all(writes);
      const after = engine.stats();
      expect(after.commits - before.commits).toBeLessThanOrEqual(3);
      expect(after.flushWaits - before.flushWaits).toBeLessThanOrEqual(durability === 'flush' ? 3 : 0);
      expect(engine.count()).toBe(1000);
      await engine.close();
    },
  );

  it('resolves every in-flight write when closed right after issuing them', async () => {
    const engine = await LmdbEngine.open({ dataDir: dir });
    const writes = Array.from({ length: 100 }, (_, i) => engine.set(text(`k${i}`), bytes(i)));
    await engine.close();
    await Promise.all(writes);
    const reopened = await LmdbEngine.open({ dataDir: dir });
    expect(reopened.count()).toBe(100);
    await reopened.close();
  });
});

/**
 * Room checks at a limit (memory cap, lmdb map size): client writes of `bytes`-byte values under
 * `k0`, `k1`, … until the engine refuses one; how many were stored, and the refusal.
 */
async function setUntilRefused(
  engine: StorageEngine,
  bytes: number,
): Promise<{ stored: number; refusal: unknown }> {
  for (let stored = 0; stored < 100_000; stored++) {
    try {
      await engine.set(text(`k${stored}`), new Uint8Array(bytes));
    } catch (refusal) {
      return { stored, refusal };
    }
  }
  throw new Error('no write was refused');
}

/** Entries the cluster places (`applyIfNewer`, as a chain member takes them) until one is refused. */
async function placeUntilRefused(
  engine: StorageEngine,
  bytes: number,
): Promise<{ placed: number; refusal: unknown }> {
  for (let placed = 0; placed < 100_000; placed++) {
    const entry = {
      key: text(`r${placed}`),
      value: new Uint8Array(bytes),
      writeEpoch: 1,
      version: 1_000_000 + placed,
    };
    try {
      await engine.applyIfNewer([entry]);
    } catch (refusal) {
      return { placed, refusal };
    }
  }
  throw new Error('no placed entry was refused');
}

/**
 * Older copies of `k0` … `k<count - 1>` than their {@link replicatedDeletes}, `bytes` each: a
 * batch sent again after a refusal for room, whose keys were deleted meanwhile.
 */
function olderCopies(count: number, bytes: number): VersionedEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    key: text(`k${i}`),
    value: new Uint8Array(bytes),
    writeEpoch: 1,
    version: 1 + i,
  }));
}

/** Replicated deletes (tombstones, as a chain member takes them) of `k0` … `k<count - 1>`. */
function replicatedDeletes(count: number): VersionedEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    key: text(`k${i}`),
    value: new Uint8Array(0),
    writeEpoch: 1,
    version: 2_000_000 + i,
    deleted: true,
    tombstone: true,
  }));
}

describe('LmdbEngine at its map size', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('entries the cluster places (applyIfNewer) take the headroom past it; deletes, GETDEL and EXPIRE any time', async () => {
    const MAP = 2 ** 20;
    const engine = await LmdbEngine.open({ dataDir: dir, mapSize: MAP });
    expect(engine.pastClientRoom()).toBe(false);
    const filled = await setUntilRefused(engine, 3000);
    expect(filled.stored).toBeGreaterThan(0);
    expect((filled.refusal as StorageEngineError).code).toBe('OUT_OF_SPACE');
    expect(engine.pastClientRoom()).toBe(true);
    const { placed, refusal } = await placeUntilRefused(engine, 3000);
    expect(placed).toBeGreaterThan(0);
    expect((refusal as StorageEngineError).code).toBe('OUT_OF_SPACE');
    expect((refusal as StorageEngineError).message).toContain('headroom');
    expect(engine.health().usedBytes).toBeGreaterThan(MAP);
    expect(engine.health().usedBytes).toBeLessThanOrEqual(MAP + MAP / 8);
    // Client writes stay refused; deletes of every kind go through however full the data is.
    await expect(engine.set(text('client'), new Uint8Array(3000))).rejects.toMatchObject({
      code: 'OUT_OF_SPACE',
    });
    expect(await engine.applyIfNewer(replicatedDeletes(20))).toBe(20);
    expect(engine.get(text('k0'))).toBeUndefined();
    // Far more than the room left, but all older than the deletes: skipped, so not refused.
    expect(await engine.applyIfNewer(olderCopies(20, 50_000))).toBe(0);
    expect(engine.get(text('k0'))).toBeUndefined();
    const noValue = { writeEpoch: 1, tombstone: false };
    expect(
      await engine.update(text('k20'), noValue, (current) => ({
        mutation: { kind: 'delete' },
        result: current !== undefined,
      })),
    ).toBe(true);
    expect(
      await engine.update(text('k21'), noValue, () => ({
        mutation: { kind: 'expire', expireAt: Date.now() + 60_000 },
        result: true,
      })),
    ).toBe(true);
    await engine.close();
  });
});

describe('LmdbEngine at its map size under concurrent writes', () => {
  it('keeps client writes within --map-size when thousands are in flight together (one commit)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-'));
    const MAP = 2 ** 20;
    const engine = await LmdbEngine.open({ dataDir: dir, mapSize: MAP });
    try {
      // All issued in one turn, as a pipelined preload does: each is admitted against the data
      // before any of them commits, so what the writes in flight are priced at is what bounds them.
      const writes = Array.from({ length: 12_000 }, (_, i) =>
        engine.set(text(`bulk:${String(i).padStart(6, '0')}`), new Uint8Array(100).fill(i % 251)).then(
          () => 'stored',
          (error: unknown) => (error as StorageEngineError).code,
        ),
      );
      const outcomes = await Promise.all(writes);
      expect(outcomes.filter((outcome) => outcome === 'stored').length).toBeGreaterThan(1000);
      expect(outcomes.filter((outcome) => outcome !== 'stored' && outcome !== 'OUT_OF_SPACE')).toEqual([]);
      expect(outcomes).toContain('OUT_OF_SPACE');
      // Priced at a node's bytes alone they took the data ~30-80% past the map size.
      expect(engine.health().usedBytes).toBeLessThanOrEqual(MAP);
    } finally {
      await engine.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('MemoryEngine space reclamation', () => {
  it('does not grow under an overwrite loop', async () => {
    const engine = new MemoryEngine();
    const keys = Array.from({ length: 1000 }, (_, i) => text(`key-${i}`));
    for (const key of keys) await engine.set(key, new Uint8Array(100));
    const settled = engine.stats().arenaReservedBytes;
    for (let round = 0; round < 50; round++) {
      for (const key of keys) await engine.set(key, new Uint8Array(90 + (round % 20)).fill(round));
    }
    expect(engine.stats().arenaReservedBytes).toBeLessThanOrEqual(settled * 2);
    expect(engine.bytesUsed()).toBe(engine.stats().keyBytes + engine.stats().valueBytes);
  });

  it('reuses space freed by deletes and releases emptied size classes', async () => {
    const engine = new MemoryEngine();
    const fill = async (round: number): Promise<void> => {
      for (let i = 0; i < 2000; i++)
        await engine.set(text(`r${round}-${i}`), new Uint8Array(100 + (i % 300)));
    };
    await fill(0);
    const peak = engine.stats().arenaReservedBytes;
    for (let round = 1; round < 20; round++) {
      for (const key of [...engine.keysInRange({ start: 0, end: 0 }, () => 1)]) await engine.delete(key);
      await fill(round);
    }
    expect(engine.stats().arenaReservedBytes).toBeLessThanOrEqual(peak * 1.5);
    for (const key of [...engine.keysInRange({ start: 0, end: 0 }, () => 1)]) await engine.delete(key);
    expect(engine.count()).toBe(0);
    expect(engine.bytesUsed()).toBe(0);
    expect(engine.stats().arenaReservedBytes).toBeLessThan(peak / 4);
  });

  it('returns views that read correctly after neighbouring slots change', async () => {
    const engine = new MemoryEngine();
    await engine.set(text('a'), bytes(1, 2, 3));
    await engine.set(text('b'), bytes(4, 5, 6));
    await engine.delete(text('a'));
    await engine.set(text('c'), bytes(7, 8, 9));
    expect(hex(engine.get(text('b'))!)).toBe(hex(bytes(4, 5, 6)));
    expect(hex(engine.get(text('c'))!)).toBe(hex(bytes(7, 8, 9)));
  });
});

describe('LmdbEngine scan iterations', () => {
  it('forgets the least recently used iteration past 1,024 and says so with SCAN_EXPIRED', async () => {
    const harness = lmdbHarness();
    const engine = await harness.open();
    try {
      for (let i = 0; i < 20; i++) await engine.set(text(`k${i}`), text('v'));
      const first = engine.scan(0, 1, () => true);
      expect(first.cursor).not.toBe(0);
      for (let i = 0; i < 1024; i++) expect(engine.scan(0, 1, () => true).cursor).not.toBe(0);
      expect(() => engine.scan(first.cursor, 1, () => true)).toThrow(
        expect.objectContaining({ code: 'SCAN_EXPIRED' }),
      );
    } finally {
      await engine.close();
      await harness.cleanup();
    }
  });
});

describe('MemoryEngine key index', () => {
  it('finds every key after random inserts, overwrites and deletes (a Map as the model)', async () => {
    const engine = new MemoryEngine();
    const model = new Map<string, string>();
    let seed = 12345;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    // Plain comparisons, asserted once: an expect per delete and per key read back (some 25,000)
    // cost most of this test's time.
    const wrong: string[] = [];
    for (let step = 0; step < 60_000; step++) {
      // Few distinct keys of varied lengths (1..40 bytes): long probe runs, many deletes.
      const name = `${random(5000)}`.padEnd(1 + random(40), '#');
      if (random(3) === 0) {
        const deleted = await engine.delete(text(name));
        const present = model.delete(name);
        if (deleted !== present)
          wrong.push(`step ${step}: delete ${name} said ${deleted}, the model ${present}`);
      } else {
        const value = `${step}`.repeat(random(30));
        await engine.set(text(name), text(value));
        model.set(name, value);
      }
    }
    expect(wrong).toEqual([]);
    expect(engine.count()).toBe(model.size);
    for (const [name, value] of model) {
      const stored = Buffer.from(engine.get(text(name))!).toString();
      if (stored !== value) wrong.push(`${name}: ${stored}, the model ${value}`);
    }
    expect(wrong).toEqual([]);
    const scanned = [...engine.keysInRange({ start: 0, end: 0 }, () => 1)].map((key) =>
      Buffer.from(key).toString(),
    );
    expect(scanned.sort()).toEqual([...model.keys()].sort());
    for (const name of model.keys()) await engine.delete(text(name));
    expect(engine.count()).toBe(0);
    expect(engine.bytesUsed()).toBe(0);
  });
});

describe('MemoryEngine updateNow', () => {
  it('decides and applies like update, in the same call: the current entry in, the version out, the mutation stored', () => {
    const engine = new MemoryEngine();
    const seen: (string | undefined)[] = [];
    const put = (value: string) =>
      engine.updateNow(text('k'), { writeEpoch: 3, tombstone: false }, (current, _now, version) => {
        seen.push(current === undefined ? undefined : Buffer.from(current.value).toString());
        return { mutation: { kind: 'put', value: text(value), expireAt: 0 }, result: version };
      });
    const first = put('one');
    expect(Buffer.from(engine.get(text('k'))!).toString()).toBe('one');
    const second = put('two');
    expect(second).toBeGreaterThan(first);
    expect(seen).toEqual([undefined, 'one']);
    expect(engine.getEntry(text('k'))).toMatchObject({ writeEpoch: 3, version: second });
    const deleted = engine.updateNow(text('k'), { writeEpoch: 3, tombstone: false }, () => ({
      mutation: { kind: 'delete' },
      result: 'gone',
    }));
    expect(deleted).toBe('gone');
    expect(engine.has(text('k'))).toBe(false);
    // Throws what update would reject with.
    expect(() =>
      engine.updateNow(new Uint8Array(0), { writeEpoch: 3, tombstone: false }, () => ({
        mutation: { kind: 'none' },
        result: undefined,
      })),
    ).toThrow();
  });
});

describe('MemoryEngine under a memory cap', () => {
  const CAP = 4 * 2 ** 20;

  it.each(['allkeys-lru', 'allkeys-random'] as const)(
    '%s: writes of any size succeed while values of other sizes can be evicted, within the cap',
    async (eviction) => {
      const engine = new MemoryEngine({ maxMemory: CAP, eviction });
      const written = new Map<string, number>();
      // Plain comparisons, asserted once at the end: an expect per write (142,050 of them, and
      // two per key read back) cost most of this test's time.
      const overCap: string[] = [];
      const set = async (name: string, size: number): Promise<void> => {
        await engine.set(text(name), new Uint8Array(size).fill(size & 0xff));
        written.set(name, size);
        const footprint = engine.footprint();
        if (footprint > CAP) overCap.push(`after ${name} (${size} bytes): footprint ${footprint}`);
      };
      // One size class fills the cap, then each other size (slab classes and entries over
      // 64 KiB) must take space from it, and back.
      for (let i = 0; i < 60_000; i++) await set(`small-${i}`, 100);
      for (let i = 0; i < 2_000; i++) await set(`mid-${i}`, 4000);
      for (let i = 0; i < 50; i++) await set(`huge-${i}`, 200_000);
      for (let i = 0; i < 60_000; i++) await set(`tiny-${i}`, 10);
      let seed = 7;
      for (let i = 0; i < 20_000; i++) {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        await set(`mixed-${i % 3000}`, [1, 60, 500, 3000, 20_000, 70_000][seed % 6]!);
      }
      expect(overCap).toEqual([]);
      expect(engine.stats().evictions).toBeGreaterThan(0);
      // What is left reads back whole; evicted keys read as absent.
      const damaged: string[] = [];
      for (const [name, size] of written) {
        const value = engine.get(text(name));
        if (value === undefined) continue;
        if (value.byteLength !== size || value[0] !== (size & 0xff))
          damaged.push(
            `${name}: ${value.byteLength} bytes starting ${value[0]}, written ${size} of ${size & 0xff}`,
          );
      }
      expect(damaged).toEqual([]);
    },
  );

  it('an overwrite whose own old value is evicted with a slab stores the new value', async () => {
    const engine = new MemoryEngine({ maxMemory: 2 ** 20, eviction: 'allkeys-lru' });
    // Fill the cap with 100-byte values until the first eviction: the key written just before it
    // was the last item carved, in the last slab of its class (the last one took an evicted item).
    let i = 0;
    const name = (n: number): Uint8Array => text(`k${String(n).padStart(6, '0')}`);
    while (engine.stats().evictions === 0) await engine.set(name(i++), new Uint8Array(100));
    const last = name(i - 2);
    const before = engine.header(last)!.version;
    // A 4,000-byte value has no class of its own yet: the 100-byte class's last slab is emptied,
    // this key's own value with it, and the key is stored anew with a new version.
    await engine.set(last, new Uint8Array(4000).fill(9));
    expect(engine.get(last)?.byteLength).toBe(4000);
    expect(engine.get(last)?.[3999]).toBe(9);
    expect(engine.header(last)).toEqual({
      writeEpoch: 0,
      version: expect.any(Number),
      tombstone: false,
      expireAt: 0,
    });
    expect(engine.header(last)!.version).toBeGreaterThan(before);
    expect(engine.footprint()).toBeLessThanOrEqual(2 ** 20);
    expect(engine.count()).toBeLessThan(i);
    expect(engine.bytesUsed()).toBe(engine.stats().keyBytes + engine.stats().valueBytes);
  });

  it('noeviction: OUT_OF_MEMORY once full, reads and deletes go on, deletes make room', async () => {
    const engine = new MemoryEngine({ maxMemory: CAP });
    let stored = 0;
    let refusal: unknown;
    for (; stored < 100_000; stored++) {
      try {
        await engine.set(text(`k${stored}`), new Uint8Array(100));
      } catch (error) {
        refusal = error;
        break;
      }
    }
    expect(refusal).toBeInstanceOf(StorageEngineError);
    expect((refusal as StorageEngineError).code).toBe('OUT_OF_MEMORY');
    expect(engine.footprint()).toBeLessThanOrEqual(CAP);
    expect(stored).toBeGreaterThan(CAP / 200);
    expect(engine.get(text('k0'))?.byteLength).toBe(100);
    // Space is per size class without eviction: keys of the same length take the freed items.
    for (let i = 10_000; i < 10_100; i++) expect(await engine.delete(text(`k${i}`))).toBe(true);
    for (let i = 10_000; i < 10_100; i++) await engine.set(text(`a${i}`), new Uint8Array(100));
    expect(engine.health().degraded).toBe('');
  });

  it('noeviction: entries the cluster places (applyIfNewer) take the headroom past the cap, deletes any time', async () => {
    const engine = new MemoryEngine({ maxMemory: CAP });
    expect(engine.pastClientRoom()).toBe(false);
    await setUntilRefused(engine, 100);
    // What a chain member tells its heads (REPLICATED's `full`) once client writes are refused.
    expect(engine.pastClientRoom()).toBe(true);
    // A chain member takes what its head admitted: past the cap, up to its eighth more.
    const { placed, refusal } = await placeUntilRefused(engine, 100);
    expect(placed).toBeGreaterThan(0);
    expect((refusal as StorageEngineError).code).toBe('OUT_OF_MEMORY');
    expect((refusal as StorageEngineError).message).toContain('headroom');
    expect(engine.footprint()).toBeGreaterThan(CAP);
    expect(engine.footprint()).toBeLessThanOrEqual(CAP + CAP / 8);
    // Client writes stay refused at the cap; replicated deletes (tombstones) go through.
    await expect(engine.set(text('client'), new Uint8Array(100))).rejects.toMatchObject({
      code: 'OUT_OF_MEMORY',
    });
    expect(await engine.applyIfNewer(replicatedDeletes(50))).toBe(50);
    expect(engine.get(text('k0'))).toBeUndefined();
    // Far more than the headroom, but all older than the deletes: skipped, so not refused.
    expect(await engine.applyIfNewer(olderCopies(50, CAP / 16))).toBe(0);
    expect(engine.get(text('k0'))).toBeUndefined();
  });

  it('with an eviction policy, OUT_OF_MEMORY only when nothing is evictable (tombstones)', async () => {
    const engine = new MemoryEngine({ maxMemory: 2 ** 20, eviction: 'allkeys-lru' });
    // Tombstones are never refused (a delete must go through) and never evicted.
    for (let i = 0; engine.footprint() < 2 ** 20; i++) await engine.tombstone(text(`t${i}`), 1);
    const refused = await engine.set(text('value'), new Uint8Array(100)).then(
      () => undefined,
      (error: StorageEngineError) => error.code,
    );
    expect(refused).toBe('OUT_OF_MEMORY');
    expect(engine.health().degraded).toMatch(/out of memory/);
  });
});

describe('MemoryEngine eviction with replication (an eviction scope)', () => {
  const CAP = 4 * 2 ** 20;
  const VALUE_BYTES = 4000;

  /** A scope under which this node heads the keys starting with `k`, recording what it is told. */
  function headingK(active: boolean): { scope: EvictionScope; evicted: { key: string; version: number }[] } {
    const evicted: { key: string; version: number }[] = [];
    const scope: EvictionScope = {
      active,
      mayEvict: (key) => key[0] === 0x6b,
      evicted: (key, version) => evicted.push({ key: new TextDecoder().decode(key), version }),
    };
    return { scope, evicted };
  }

  /** Other heads' keys (`o0`, `o1`, …) placed here as a chain member would take them. */
  async function placeOthers(engine: MemoryEngine, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const entry = {
        key: text(`o${i}`),
        value: new Uint8Array(VALUE_BYTES),
        writeEpoch: 1,
        version: 500 + i,
      };
      await engine.applyIfNewer([entry]);
    }
  }

  it.each(['allkeys-lru', 'allkeys-random'] as const)(
    '%s: client writes evict only keys the node heads, each told at a newer version; placed entries evict nothing',
    async (eviction) => {
      const engine = new MemoryEngine({ maxMemory: CAP, eviction });
      const { scope, evicted } = headingK(true);
      engine.setEvictionScope(scope);
      await placeOthers(engine, 400);
      const versions = new Map<string, number>();
      for (let i = 0; i < 2000; i++) {
        await engine.set(text(`k${i}`), new Uint8Array(VALUE_BYTES));
        versions.set(`k${i}`, engine.header(text(`k${i}`))!.version);
        expect(engine.footprint()).toBeLessThanOrEqual(CAP);
      }
      expect(evicted.length).toBeGreaterThan(400);
      expect(engine.stats().evictions).toBe(evicted.length);
      for (const { key, version } of evicted) {
        expect(key).toMatch(/^k/);
        expect(engine.header(text(key))).toBeUndefined();
        expect(version).toBeGreaterThan(versions.get(key)!);
      }
      for (let i = 0; i < 400; i++) expect(engine.has(text(`o${i}`))).toBe(true);
      expect(engine.pastClientRoom()).toBe(false);

      // What other heads admitted is taken past the cap into the headroom, evicting nothing, and
      // the engine says it is past its room (its heads then evict for it); then it is refused.
      const told = evicted.length;
      const { placed, refusal } = await placeUntilRefused(engine, VALUE_BYTES);
      expect(placed).toBeGreaterThan(0);
      expect((refusal as StorageEngineError).code).toBe('OUT_OF_MEMORY');
      expect(evicted.length).toBe(told);
      expect(engine.footprint()).toBeGreaterThan(CAP);
      expect(engine.footprint()).toBeLessThanOrEqual(CAP + CAP / 8);
      expect(engine.pastClientRoom()).toBe(true);

      // A head making room on such a member: one value it heads that the filter takes, told as any.
      const headed = (key: Uint8Array): boolean => key[0] === 0x6b;
      expect(engine.evictFor(5 + VALUE_BYTES, headed)).toBe(true);
      expect(evicted.length).toBe(told + 1);
      const gone = evicted[told]!.key;
      expect(gone).toMatch(/^k/);
      expect(engine.has(text(gone))).toBe(false);
      expect(engine.evictFor(5 + VALUE_BYTES, () => false)).toBe(false);
    },
  );

  it('an inactive scope (factor 1) evicts any value and is told nothing', async () => {
    const engine = new MemoryEngine({ maxMemory: CAP, eviction: 'allkeys-lru' });
    const { scope, evicted } = headingK(false);
    engine.setEvictionScope(scope);
    await placeOthers(engine, 400);
    for (let i = 0; i < 2000; i++) await engine.set(text(`k${i}`), new Uint8Array(VALUE_BYTES));
    // The oldest values went first, whoever heads them.
    expect(engine.has(text('o0'))).toBe(false);
    expect(evicted).toEqual([]);
    expect(engine.stats().evictions).toBeGreaterThan(400);
    expect(engine.footprint()).toBeLessThanOrEqual(CAP);
    expect(engine.pastClientRoom()).toBe(false);
    expect(engine.evictFor(VALUE_BYTES, () => true)).toBe(false);
  });
});
