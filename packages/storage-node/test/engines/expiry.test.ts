import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open as openLmdb } from 'lmdb';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { decideIncrBy } from '../../src/atomic-ops.js';
import { LMDB_FORMAT, LmdbEngine, type StorageEngine } from '../../src/engines/index.js';
import { type Harness, lmdbHarness, memoryHarness } from './harness.js';

const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const str = (value: Uint8Array | undefined): string | undefined =>
  value === undefined ? undefined : Buffer.from(value).toString('latin1');
const HOUR = 3_600_000;
const WRITE = { writeEpoch: 0, tombstone: false } as const;

/** Sweeps until a whole pass over `entries` found nothing more to reclaim. */
async function sweepAll(engine: StorageEngine, entries: number): Promise<number> {
  let reclaimed = 0;
  for (let pass = 0; pass < entries / 10 + 2; pass++) reclaimed += await engine.sweepExpired(10);
  return reclaimed;
}

describe.each([memoryHarness, lmdbHarness])('expiry and read-modify-write (%o)', (makeHarness) => {
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

  it('stores an expiry time with the value and hides the value once it has passed', async () => {
    const later = Date.now() + HOUR;
    await engine.set(text('live'), text('v'), 3, later);
    await engine.set(text('gone'), text('v'), 3, Date.now() - 1);
    expect(str(engine.get(text('live')))).toBe('v');
    expect(engine.getEntry(text('live'))).toMatchObject({ writeEpoch: 3, seq: 1, expireAt: later });
    expect(engine.header(text('live'))).toMatchObject({ expireAt: later, tombstone: false });
    expect(engine.get(text('gone'))).toBeUndefined();
    expect(engine.has(text('gone'))).toBe(false);
    expect(engine.getEntry(text('gone'))).toBeUndefined();
    expect([...engine.keysInRange({ start: 0, end: 0 }, () => 1)].map(str)).toEqual(['live']);
    // A plain set clears the expiry, as Redis's SET does.
    await engine.set(text('live'), text('w'), 4);
    expect(engine.getEntry(text('live'))).toMatchObject({ expireAt: 0, seq: 2 });
  });

  it('never lists an expired value in a SCAN', async () => {
    await engine.set(text('live'), text('v'), 0, Date.now() + HOUR);
    await engine.set(text('plain'), text('v'));
    for (let i = 0; i < 20; i++) await engine.set(text(`dead${i}`), text('v'), 0, Date.now() - 1);
    const listed: string[] = [];
    let cursor = 0;
    do {
      const page = engine.scan(cursor, 5, () => true);
      listed.push(...page.keys.map((key) => str(key)!));
      cursor = page.cursor;
    } while (cursor !== 0);
    expect(listed.sort()).toEqual(['live', 'plain']);
  });

  it('lets a value expire while it is stored, and reclaims it on access', async () => {
    const soon = Date.now() + 30;
    await engine.set(text('k'), text('v'), 0, soon);
    // Only while it has not expired yet: an fsync on a busy machine may take longer than 30 ms.
    const before = engine.get(text('k'));
    if (Date.now() < soon) expect(str(before)).toBe('v');
    await vi.waitFor(() => expect(Date.now()).toBeGreaterThan(soon), { timeout: 2000, interval: 10 });
    expect(engine.get(text('k'))).toBeUndefined();
    // Reclaimed by the read itself (lmdb: by the write it queued), without a sweep.
    await vi.waitFor(() => expect(engine.count()).toBe(0), { timeout: 2000, interval: 10 });
    expect(engine.header(text('k'))).toBeUndefined();
  });

  it('reclaims expired values with a bounded incremental sweep, without reads', async () => {
    for (let i = 0; i < 40; i++) await engine.set(text(`dead${i}`), text('x'), 0, Date.now() - 1);
    for (let i = 0; i < 25; i++)
      await engine.set(text(`live${i}`), text('x'), 0, i % 2 === 0 ? 0 : Date.now() + HOUR);
    expect(engine.count()).toBe(65);
    // One call examines at most its budget: 10 entries cannot hold all 40 expired ones.
    expect(await engine.sweepExpired(10)).toBeLessThanOrEqual(10);
    await sweepAll(engine, 65);
    expect(engine.count()).toBe(25);
    expect(engine.tombstoneCount()).toBe(0);
  });

  it('turns an expired value of a retained key into a tombstone with its version, which older copies cannot pass', async () => {
    engine.setRetainExpired((key) => str(key)!.startsWith('moving'));
    await engine.set(text('moving'), text('new'), 7, Date.now() - 1);
    await engine.set(text('staying'), text('new'), 7, Date.now() - 1);
    await sweepAll(engine, 2);
    expect(engine.header(text('moving'))).toMatchObject({ tombstone: true, writeEpoch: 7 });
    expect(engine.header(text('staying'))).toBeUndefined();
    expect(engine.tombstoneCount()).toBe(1);
    // The old owner's copy, older than the expired value: never stored.
    expect(
      await engine.applyIfNewer([{ key: text('moving'), value: text('old'), writeEpoch: 6, seq: 1 }]),
    ).toBe(0);
    expect(engine.get(text('moving'))).toBeUndefined();
  });

  it('does not store an expired migrated copy, and keeps the expiry of a live one', async () => {
    const later = Date.now() + HOUR;
    const stored = await engine.applyIfNewer([
      { key: text('expired'), value: text('v'), writeEpoch: 1, seq: 1, expireAt: Date.now() - 1 },
      { key: text('expiring'), value: text('v'), writeEpoch: 1, seq: 4, expireAt: later },
    ]);
    expect(stored).toBe(1);
    expect(engine.header(text('expired'))).toBeUndefined();
    expect(engine.getEntry(text('expiring'))).toMatchObject({ seq: 4, expireAt: later });
  });

  it('applies every kind of mutation of update in one step, seeing the entry as it is then', async () => {
    const later = Date.now() + HOUR;
    await engine.set(text('k'), text('one'), 1, later);
    const seen = await engine.update(text('k'), { writeEpoch: 2, tombstone: false }, (current) => ({
      mutation: { kind: 'put', value: text('two'), expireAt: current?.expireAt ?? 0 },
      result: str(current?.value),
    }));
    expect(seen).toBe('one');
    expect(engine.getEntry(text('k'))).toMatchObject({ writeEpoch: 2, seq: 2, expireAt: later });
    await engine.update(text('k'), WRITE, () => ({ mutation: { kind: 'expire', expireAt: 0 }, result: 0 }));
    expect(engine.getEntry(text('k'))).toMatchObject({ seq: 3, expireAt: 0 });
    expect(str(engine.get(text('k')))).toBe('two');
    await engine.update(text('k'), WRITE, () => ({ mutation: { kind: 'none' }, result: 0 }));
    expect(engine.getEntry(text('k'))).toMatchObject({ seq: 3 });
    await engine.update(text('k'), { writeEpoch: 5, tombstone: true }, () => ({
      mutation: { kind: 'delete' },
      result: 0,
    }));
    expect(engine.header(text('k'))).toMatchObject({ tombstone: true, writeEpoch: 5, seq: 4 });
    // An expired value is no current entry.
    await engine.set(text('e'), text('41'), 0, Date.now() - 1);
    const current = await engine.update(text('e'), WRITE, (entry) => ({
      mutation: { kind: 'none' },
      result: entry,
    }));
    expect(current).toBeUndefined();
  });

  it('serialises concurrent read-modify-writes of one key: no increment is lost', async () => {
    const increments = Array.from({ length: 200 }, () =>
      engine.update(text('n'), WRITE, (current) => {
        const decision = decideIncrBy(1n, current);
        return { mutation: decision.mutation, result: decision.result };
      }),
    );
    // Plain sets of other keys interleaved: lmdb's native puts and its transaction callbacks.
    const sets = Array.from({ length: 50 }, (_, i) => engine.set(text(`s${i}`), text('v')));
    const results = await Promise.all(increments);
    await Promise.all(sets);
    expect(str(engine.get(text('n')))).toBe('200');
    expect(new Set(results.map(String)).size).toBe(200);
  });
});

describe('LmdbEngine expiry on disk', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dstore-expiry-disk-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps expiry times across a restart, and an expired key stays gone', async () => {
    const later = Date.now() + HOUR;
    const engine = await LmdbEngine.open({ dataDir: dir });
    await engine.set(text('later'), text('v'), 1, later);
    const soon = Date.now() + 20;
    await engine.set(text('soon'), text('v'), 1, soon);
    await engine.close();
    await vi.waitFor(() => expect(Date.now()).toBeGreaterThan(soon), {
      timeout: 2000,
      interval: 10,
    });
    const reopened = await LmdbEngine.open({ dataDir: dir });
    expect(reopened.getEntry(text('later'))).toMatchObject({ expireAt: later, seq: 1 });
    expect(reopened.get(text('soon'))).toBeUndefined();
    await reopened.close();
  });

  it('opens a format 2 data dir as it is and raises its marker to the current format', async () => {
    // A format 2 environment: what the previous version wrote (no expiring entries).
    const engine = await LmdbEngine.open({ dataDir: dir });
    await engine.set(text('old'), text('value'), 4);
    await engine.close();
    const root = openLmdb<Uint8Array, Uint8Array>({ path: dir, encoding: 'binary', keyEncoding: 'binary' });
    const meta = root.openDB<Uint8Array, Uint8Array>({
      name: 'dstore-meta',
      encoding: 'binary',
      keyEncoding: 'binary',
    });
    await meta.put(text('format'), text('2'));
    await root.close();
    const reopened = await LmdbEngine.open({ dataDir: dir });
    expect(str(reopened.get(text('old')))).toBe('value');
    expect(reopened.getEntry(text('old'))).toMatchObject({ writeEpoch: 4, seq: 1, expireAt: 0 });
    await reopened.close();
    const check = openLmdb<Uint8Array, Uint8Array>({ path: dir, encoding: 'binary', keyEncoding: 'binary' });
    const marker = check
      .openDB<Uint8Array, Uint8Array>({ name: 'dstore-meta', encoding: 'binary', keyEncoding: 'binary' })
      .getBinary(text('format'));
    expect(str(marker)).toBe(String(LMDB_FORMAT));
    await check.close();
  });
});
