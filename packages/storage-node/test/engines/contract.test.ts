import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  LmdbEngine,
  MAX_KEY_BYTES,
  MemoryEngine,
  openEngine,
  type StorageEngine,
  StorageEngineError,
} from '../../src/engines/index.js';

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const hex = (value: Uint8Array): string => Buffer.from(value).toString('hex');
/** Ring position of a key for tests: its first byte, so ranges are easy to reason about. */
const firstByte = (key: Uint8Array): number => key[0]!;

interface Harness {
  readonly name: 'memory' | 'lmdb';
  /** Opens a fresh engine (or reopens the same lmdb directory when `reopen` is set). */
  open(reopen?: boolean): Promise<StorageEngine>;
  cleanup(): Promise<void>;
}

function memoryHarness(): Harness {
  return { name: 'memory', open: () => openEngine({ engine: 'memory' }), cleanup: async () => {} };
}

function lmdbHarness(): Harness {
  let dir: string | undefined;
  return {
    name: 'lmdb',
    async open(reopen = false) {
      if (!reopen || dir === undefined) dir = await mkdtemp(join(tmpdir(), 'dstore-engine-'));
      return openEngine({ engine: 'lmdb', dataDir: dir });
    },
    async cleanup() {
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}

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

  it('keeps data across reopen (lmdb only)', async () => {
    if (harness.name !== 'lmdb') return;
    await engine.set(bytes(0, 0xff), text('durable'));
    await engine.close();
    engine = await harness.open(true);
    expect(new TextDecoder().decode(engine.get(bytes(0, 0xff)))).toBe('durable');
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
