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
    expect(engine.getEntry(text('live'))).toMatchObject({ writeEpoch: 3, expireAt: later });
    const first = engine.getEntry(text('live'))!.version;
    expect(engine.header(text('live'))).toMatchObject({ expireAt: later, tombstone: false });
    expect(engine.get(text('gone'))).toBeUndefined();
    expect(engine.has(text('gone'))).toBe(false);
    expect(engine.getEntry(text('gone'))).toBeUndefined();
    expect([...engine.keysInRange({ start: 0, end: 0 }, () => 1)].map(str)).toEqual(['live']);
    // A plain set clears the expiry, as Redis's SET does.
    await engine.set(text('live'), text('w'), 4);
    expect(engine.getEntry(text('live'))).toMatchObject({ expireAt: 0 });
    expect(engine.getEntry(text('live'))!.version).toBeGreaterThan(first);
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
      await engine.applyIfNewer([{ key: text('moving'), value: text('old'), writeEpoch: 6, version: 1 }]),
    ).toBe(0);
    expect(engine.get(text('moving'))).toBeUndefined();
  });

  it('does not store an expired migrated copy, and keeps the expiry of a live one', async () => {
    const later = Date.now() + HOUR;
    const stored = await engine.applyIfNewer([
      { key: text('expired'), value: text('v'), writeEpoch: 1, version: 1, expireAt: Date.now() - 1 },
      { key: text('expiring'), value: text('v'), writeEpoch: 1, version: 4, expireAt: later },
    ]);
    expect(stored).toBe(1);
    expect(engine.header(text('expired'))).toBeUndefined();
    expect(engine.getEntry(text('expiring'))).toMatchObject({ version: 4, expireAt: later });
  });

  it('applies every kind of mutation of update in one step, seeing the entry as it is then', async () => {
    const later = Date.now() + HOUR;
    await engine.set(text('k'), text('one'), 1, later);
    const before = engine.getEntry(text('k'))!.version;
    // `decide` sees the current entry and is told the version its write takes.
    const seen = await engine.update(
      text('k'),
      { writeEpoch: 2, tombstone: false },
      (current, _now, version) => ({
        mutation: { kind: 'put', value: text('two'), expireAt: current?.expireAt ?? 0 },
        result: { value: str(current?.value), had: current?.version, version },
      }),
    );
    expect(seen).toMatchObject({ value: 'one', had: before });
    expect(seen.version).toBeGreaterThan(before);
    expect(engine.getEntry(text('k'))).toMatchObject({
      writeEpoch: 2,
      version: seen.version,
      expireAt: later,
    });
    // An expiry change is a modification: it takes a new version.
    const persisted = await engine.update(text('k'), WRITE, (_current, _now, version) => ({
      mutation: { kind: 'expire', expireAt: 0 },
      result: version,
    }));
    expect(persisted).toBeGreaterThan(seen.version);
    expect(engine.getEntry(text('k'))).toMatchObject({ version: persisted, expireAt: 0 });
    expect(str(engine.get(text('k')))).toBe('two');
    await engine.update(text('k'), WRITE, () => ({ mutation: { kind: 'none' }, result: 0 }));
    expect(engine.getEntry(text('k'))).toMatchObject({ version: persisted });
    const deleted = await engine.update(
      text('k'),
      { writeEpoch: 5, tombstone: true },
      (_current, _now, version) => ({
        mutation: { kind: 'delete' },
        result: version,
      }),
    );
    expect(engine.header(text('k'))).toMatchObject({ tombstone: true, writeEpoch: 5, version: deleted });
    expect(deleted).toBeGreaterThan(persisted);
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
    expect(reopened.getEntry(text('later'))).toMatchObject({ expireAt: later });
    expect(reopened.get(text('soon'))).toBeUndefined();
    await reopened.close();
  });

  it('opens a format 2 or 3 data dir as it is, raises its marker, and never re-issues its versions', async () => {
    for (const format of ['2', '3']) {
      await rm(dir, { recursive: true, force: true });
      // What the versions before format 4 wrote: 9-byte headers (kind 1 value, 2 tombstone; 3 a
      // value with an expiry time at offset 9) with a uint32 per-key counter at offset 5.
      const root = openLmdb<Uint8Array, Uint8Array>({ path: dir, encoding: 'binary', keyEncoding: 'binary' });
      const named = (name: string) =>
        root.openDB<Uint8Array, Uint8Array>({ name, encoding: 'binary', keyEncoding: 'binary' });
      const meta = named('dstore-meta');
      const entries = named('dstore-entries');
      const old = (kind: number, writeEpoch: number, counter: number, value = '', expireAt = 0): Buffer => {
        const header = Buffer.alloc(kind === 3 ? 17 : 9);
        header[0] = kind;
        header.writeUInt32BE(writeEpoch, 1);
        header.writeUInt32BE(counter, 5);
        if (kind === 3) header.writeDoubleBE(expireAt, 9);
        return Buffer.concat([header, Buffer.from(value, 'latin1')]);
      };
      const later = Date.now() + HOUR;
      await meta.put(text('format'), text(format));
      await meta.put(text('tombstones'), text('1'));
      await entries.put(text('old'), old(1, 4, 0xffff_fff0, 'value'));
      await entries.put(text('deleted'), old(2, 4, 7));
      if (format === '3') await entries.put(text('expiring'), old(3, 2, 5, 'soon', later));
      await root.close();

      const engine = await LmdbEngine.open({ dataDir: dir });
      expect(str(engine.get(text('old')))).toBe('value');
      expect(engine.getEntry(text('old'))).toMatchObject({
        writeEpoch: 4,
        version: 0xffff_fff0,
        expireAt: 0,
      });
      expect(engine.header(text('deleted'))).toEqual({
        writeEpoch: 4,
        version: 7,
        tombstone: true,
        expireAt: 0,
      });
      if (format === '3') {
        expect(engine.getEntry(text('expiring'))).toMatchObject({ version: 5, expireAt: later });
        expect(str(engine.get(text('expiring')))).toBe('soon');
      }
      expect(engine.count()).toBe(format === '3' ? 2 : 1);
      // The old counters are below every version issued now: a rewrite moves the key past them.
      await engine.set(text('old'), text('new'), 5);
      expect(engine.getEntry(text('old'))!.version).toBeGreaterThan(0xffff_ffff);
      // A copy older than the old tombstone still cannot bring its key back.
      expect(
        await engine.applyIfNewer([{ key: text('deleted'), value: text('x'), writeEpoch: 3, version: 1 }]),
      ).toBe(0);
      await engine.close();

      const check = openLmdb<Uint8Array, Uint8Array>({
        path: dir,
        encoding: 'binary',
        keyEncoding: 'binary',
      });
      const marker = check
        .openDB<Uint8Array, Uint8Array>({ name: 'dstore-meta', encoding: 'binary', keyEncoding: 'binary' })
        .getBinary(text('format'));
      expect(str(marker)).toBe(String(LMDB_FORMAT));
      await check.close();
    }
  });

  it('never issues a version again after a restart, even with the wall clock stepped back', async () => {
    const engine = await LmdbEngine.open({ dataDir: dir });
    await engine.set(text('k'), text('v'), 1);
    const before = engine.header(text('k'))!.version;
    // A version received far ahead of the clock (a copy from a node whose clock is ahead).
    const ahead = before + 5 * 10 ** 9;
    await engine.applyIfNewer([{ key: text('moved'), value: text('v'), writeEpoch: 1, version: ahead }]);
    await engine.close();
    const now = Date.now();
    // The wall clock goes back an hour across the restart: only the stored mark is left.
    const clock = vi.spyOn(Date, 'now').mockReturnValue(now - HOUR);
    try {
      const reopened = await LmdbEngine.open({ dataDir: dir });
      expect(reopened.clock.current).toBeGreaterThanOrEqual(ahead);
      await reopened.set(text('k'), text('w'), 1);
      await reopened.tombstone(text('moved'), 2);
      expect(reopened.header(text('k'))!.version).toBeGreaterThan(ahead);
      expect(reopened.header(text('moved'))!.version).toBeGreaterThan(ahead);
      await reopened.close();
    } finally {
      clock.mockRestore();
    }
  });
});
