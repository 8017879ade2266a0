/**
 * `StorageEngine.updateMany` (a transaction over keys of one hash tag): the decision sees every
 * key, the mutations apply together with one version, and a refusal applies none of them (the
 * memory engine undoes the puts made before the one refused; lmdb's write transaction commits
 * whole or not at all). Real engines (memory, lmdb in a temporary directory).
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  LmdbEngine,
  type ManyUpdateOptions,
  MemoryEngine,
  type Mutation,
  type StorageEngine,
  StorageEngineError,
  type VersionedValue,
} from '../../src/engines/index.js';
import { type Harness, lmdbHarness, memoryHarness } from './harness.js';

const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const read = (engine: StorageEngine, key: string): string | undefined => {
  const value = engine.get(text(key));
  return value === undefined ? undefined : Buffer.from(value).toString();
};
const options = (count: number, valueBytes: number | undefined = undefined): ManyUpdateOptions => ({
  writeEpoch: 1,
  tombstones: new Array<boolean>(count).fill(false),
  valueBytes: new Array<number | undefined>(count).fill(valueBytes),
});

describe.each([memoryHarness, lmdbHarness])('StorageEngine.updateMany (%o)', (makeHarness) => {
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

  it('decides on every key at once and applies a put, a delete, an expiry change and nothing, with one version', async () => {
    await engine.set(text('{t}:a'), text('1'));
    await engine.set(text('{t}:b'), text('2'));
    await engine.set(text('{t}:c'), text('3'));
    const keys = ['{t}:a', '{t}:b', '{t}:c', '{t}:absent', '{t}:new'].map(text);
    let seen: readonly (VersionedValue | undefined)[] = [];
    const expireAt = Date.now() + 60_000;
    const version = await engine.updateMany(keys, options(keys.length, 1), (current, _now, at) => {
      seen = current.map((entry) =>
        entry === undefined ? undefined : { ...entry, value: entry.value.slice() },
      );
      const mutations: Mutation[] = [
        { kind: 'put', value: text('10'), expireAt: 0 },
        { kind: 'delete' },
        { kind: 'expire', expireAt },
        { kind: 'none' },
        { kind: 'put', value: text('new'), expireAt: 0 },
      ];
      return { mutations, result: at };
    });
    expect(
      seen.map((entry) => (entry === undefined ? undefined : Buffer.from(entry.value).toString())),
    ).toEqual(['1', '2', '3', undefined, undefined]);
    expect(read(engine, '{t}:a')).toBe('10');
    expect(read(engine, '{t}:b')).toBeUndefined();
    expect(read(engine, '{t}:c')).toBe('3');
    expect(engine.getEntry(text('{t}:c'))?.expireAt).toBe(expireAt);
    expect(read(engine, '{t}:new')).toBe('new');
    // One version for every key the write changed.
    for (const key of ['{t}:a', '{t}:c', '{t}:new'])
      expect(engine.getEntry(text(key))?.version).toBe(version);
  });

  it('leaves a tombstone for the keys it is told to (a range moving in), removes the others', async () => {
    await engine.set(text('{t}:kept'), text('x'));
    await engine.set(text('{t}:gone'), text('y'));
    await engine.updateMany(
      [text('{t}:kept'), text('{t}:gone')],
      { writeEpoch: 2, tombstones: [true, false], valueBytes: [undefined, undefined] },
      () => ({ mutations: [{ kind: 'delete' }, { kind: 'delete' }], result: 0 }),
    );
    expect(engine.header(text('{t}:kept'))?.tombstone).toBe(true);
    expect(engine.header(text('{t}:gone'))).toBeUndefined();
  });
});

describe('MemoryEngine.updateMany under a cap (noeviction)', () => {
  it('undoes the puts made before one that is refused: values, versions, absent keys and tombstones as they were', async () => {
    const engine = new MemoryEngine({ maxMemory: 2 ** 20 });
    await engine.set(text('{t}:value'), text('before'));
    await engine.tombstone(text('{t}:tombstone'), 3);
    const before = engine.getEntry(text('{t}:value'))!;
    const tombstoneBefore = engine.header(text('{t}:tombstone'))!;
    const footprint = engine.footprint();
    const keys = ['{t}:value', '{t}:absent', '{t}:tombstone', '{t}:huge'].map(text);
    const refusal = await engine
      .updateMany(keys, options(keys.length), () => ({
        mutations: [
          { kind: 'put', value: text('after'), expireAt: 0 },
          { kind: 'put', value: text('created'), expireAt: 0 },
          { kind: 'put', value: text('over the tombstone'), expireAt: 0 },
          // Past the cap: refused after the three puts above were made.
          { kind: 'put', value: new Uint8Array(2 ** 21), expireAt: 0 },
        ],
        result: 0,
      }))
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(refusal).toBeInstanceOf(StorageEngineError);
    expect(refusal).toMatchObject({ code: 'OUT_OF_MEMORY' });
    const after = engine.getEntry(text('{t}:value'))!;
    expect(Buffer.from(after.value).toString()).toBe('before');
    expect(after.version).toBe(before.version);
    expect(after.writeEpoch).toBe(before.writeEpoch);
    expect(engine.header(text('{t}:absent'))).toBeUndefined();
    expect(engine.header(text('{t}:tombstone'))).toEqual(tombstoneBefore);
    expect(engine.get(text('{t}:huge'))).toBeUndefined();
    expect(engine.stats().keys).toBe(1);
    expect(engine.stats().tombstones).toBe(1);
    expect(engine.footprint()).toBeLessThanOrEqual(footprint + 2 ** 18);
    await engine.close();
  });
});

describe('LmdbEngine.updateMany at its map size', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-many-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses before running when the values it may store do not fit together, and writes nothing', async () => {
    const engine = await LmdbEngine.open({ dataDir: dir, mapSize: 2 ** 20 });
    await engine.set(text('{t}:a'), text('small'));
    let ran = false;
    const keys = ['{t}:a', '{t}:b', '{t}:c'].map(text);
    const refusal = await engine
      .updateMany(keys, { ...options(3), valueBytes: [400_000, 400_000, 400_000] }, () => {
        ran = true;
        return { mutations: keys.map(() => ({ kind: 'none' }) as const), result: 0 };
      })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(refusal).toMatchObject({ code: 'OUT_OF_SPACE' });
    expect(ran).toBe(false);
    expect(read(engine, '{t}:a')).toBe('small');
    await engine.close();
  });
});
