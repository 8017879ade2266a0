import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClusterMap, nextMap, serializeClusterMap } from '../src/cluster-map.js';
import { EtcdMapStore, type EtcdMapStoreOptions } from '../src/etcd-map-store.js';
import { startEtcd, type TestEtcd } from './etcd.js';

let etcd: TestEtcd | undefined;
let raw: Etcd3 | undefined;
/** Released after each test, last first, even when the test failed. */
const cleanups: (() => unknown)[] = [];
let prefixes = 0;

beforeAll(async () => {
  etcd = await startEtcd();
  raw = new Etcd3({ hosts: etcd.endpoint });
});

afterEach(async () => {
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()!();
    } catch {
      // Best effort: one failed cleanup must not leak the rest.
    }
  }
});

afterAll(async () => {
  raw?.close();
  await etcd?.stop();
});

/** A key prefix of its own for each test: tests share one etcd but never each other's keys. */
function freshPrefix(): string {
  prefixes += 1;
  return `/dstore-test/${process.pid}/${prefixes}`;
}

function openStore(prefix: string, options: Partial<EtcdMapStoreOptions> = {}): EtcdMapStore {
  const store = new EtcdMapStore({
    endpoints: [etcd!.endpoint],
    prefix,
    leaseTtlSeconds: 2,
    requestTimeoutMs: 3_000,
    ...options,
  });
  cleanups.push(() => store.close());
  return store;
}

/** Polls until `condition` holds; the test timeout is the only bound (no timing assertion). */
async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const until = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The DstoreError code a promise rejects with. */
async function rejectionCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(DstoreError);
    return (error as DstoreError).code;
  }
  throw new Error('expected a rejection');
}

/** A promise's state, without waiting for it. */
function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  return { promise, settled: () => settled };
}

describe('EtcdMapStore', () => {
  it('loads nothing from an empty prefix, and names etcd in its location', async () => {
    const prefix = freshPrefix();
    const store = openStore(prefix);
    expect(store.kind).toBe('etcd');
    expect(store.location).toBe(`etcd ${etcd!.endpoint} ${prefix}`);
    expect(await store.load()).toBeUndefined();
  });

  it('creates the map from nothing, then moves it on from the epoch it read', async () => {
    const prefix = freshPrefix();
    const store = openStore(prefix);
    const first = createClusterMap('vnode');
    await store.compareAndSet(undefined, first);
    const second = nextMap(first, { members: [] });
    await store.compareAndSet(first.epoch, second);
    const third = nextMap(second, {});
    await store.compareAndSet(second.epoch, third);

    // A second client reads what was stored, byte for byte.
    expect(await openStore(prefix).load()).toEqual(third);
    expect(await raw!.get(`${prefix}/map`).string()).toBe(serializeClusterMap(third));
  });

  it('refuses a stale epoch (MAP_CONFLICT) and leaves the stored map unchanged', async () => {
    const prefix = freshPrefix();
    const store = openStore(prefix);
    const first = createClusterMap('vnode');
    await store.compareAndSet(undefined, first);
    const second = nextMap(first, {});
    await store.compareAndSet(first.epoch, second);

    expect(await rejectionCode(store.compareAndSet(first.epoch, nextMap(first, {})))).toBe(
      ErrorCode.MAP_CONFLICT,
    );
    expect(await rejectionCode(store.compareAndSet(undefined, createClusterMap('vnode')))).toBe(
      ErrorCode.MAP_CONFLICT,
    );
    // A store that never read the map gets the same answer.
    const other = openStore(prefix);
    expect(await rejectionCode(other.compareAndSet(first.epoch, nextMap(first, {})))).toBe(
      ErrorCode.MAP_CONFLICT,
    );
    expect(await other.load()).toEqual(second);
  });

  it('lets exactly one of two racing writers win each epoch', async () => {
    const prefix = freshPrefix();
    const a = openStore(prefix);
    const b = openStore(prefix);
    let current = createClusterMap('ketama');
    await a.compareAndSet(undefined, current);
    for (let round = 0; round < 10; round++) {
      expect((await a.load())?.epoch).toBe(current.epoch);
      expect((await b.load())?.epoch).toBe(current.epoch);
      const fromA = nextMap(current, { transition: null }, new Date(1_000 + round));
      const fromB = nextMap(current, { transition: null }, new Date(2_000 + round));
      const results = await Promise.allSettled([
        a.compareAndSet(current.epoch, fromA),
        b.compareAndSet(current.epoch, fromB),
      ]);
      const won = results.filter((result) => result.status === 'fulfilled');
      const lost = results.filter((result) => result.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect((lost[0] as PromiseRejectedResult).reason).toMatchObject({ code: ErrorCode.MAP_CONFLICT });
      const winner = results[0]!.status === 'fulfilled' ? fromA : fromB;
      expect(await openStore(prefix).load()).toEqual(winner);
      current = winner;
    }
  });

  it("shows store A's writes to a watch on store B, in epoch order", async () => {
    const prefix = freshPrefix();
    const a = openStore(prefix);
    const b = openStore(prefix);
    expect(await b.load()).toBeUndefined();
    const seen: number[] = [];
    const unsubscribe = b.watch((map) => seen.push(map.epoch));
    cleanups.push(unsubscribe);

    let map = createClusterMap('vnode');
    await a.compareAndSet(undefined, map);
    for (let i = 0; i < 5; i++) {
      const next = nextMap(map, {});
      await a.compareAndSet(map.epoch, next);
      map = next;
    }
    await waitFor(() => seen.length >= 6, 'six maps on the watch');
    expect(seen).toEqual([0, 1, 2, 3, 4, 5]);

    // B learned the revision from its watch: it can write on the epoch it was told about.
    const fromB = nextMap(map, {});
    await b.compareAndSet(map.epoch, fromB);
    expect((await a.load())?.epoch).toBe(fromB.epoch);
  });

  it('refuses a corrupt map on load (MAP_CORRUPT), and the watch reports and skips it', async () => {
    const prefix = freshPrefix();
    const writer = openStore(prefix);
    const errors: Error[] = [];
    const watcher = openStore(prefix, { onError: (error) => errors.push(error) });
    const seen: number[] = [];
    expect(await watcher.load()).toBeUndefined();
    cleanups.push(watcher.watch((map) => seen.push(map.epoch)));

    await raw!.put(`${prefix}/map`).value('{"format": 1, "cluster": ');
    expect(await rejectionCode(openStore(prefix).load())).toBe(ErrorCode.MAP_CORRUPT);
    await waitFor(() => errors.length > 0, 'the corrupt value to be reported');
    expect(errors[0]).toMatchObject({ code: ErrorCode.MAP_CORRUPT });
    expect(seen).toEqual([]);

    // An operator repairs it by hand (a delete); the watch goes on with the next good map.
    await raw!.delete().key(`${prefix}/map`);
    await writer.compareAndSet(undefined, createClusterMap('vnode'));
    await waitFor(() => seen.length > 0, 'the repaired map on the watch');
    expect(seen).toEqual([0]);
  });

  it('elects one leader; when it closes, the other candidate leads and everyone sees it', async () => {
    const prefix = freshPrefix();
    const a = openStore(prefix);
    const b = openStore(prefix);
    const lost: string[] = [];
    const campaignA = tracked(a.acquireLeadership('balancer-a', () => lost.push('a')));
    const campaignB = tracked(b.acquireLeadership('balancer-b', () => lost.push('b')));
    const first = await Promise.race([
      campaignA.promise.then(() => 'a' as const),
      campaignB.promise.then(() => 'b' as const),
    ]);
    const [leader, follower, followerCampaign] = first === 'a' ? [a, b, campaignB] : [b, a, campaignA];
    const leaderName = `balancer-${first}`;
    const followerName = first === 'a' ? 'balancer-b' : 'balancer-a';
    expect(leader.leader()).toBe(leaderName);
    await waitFor(() => follower.leader() === leaderName, 'the follower to observe the leader');
    expect(followerCampaign.settled()).toBe(false);

    // The leader writes; the follower (not leading) can too, but only on the current epoch.
    const map = createClusterMap('vnode');
    await leader.compareAndSet(undefined, map);

    await leader.close();
    await followerCampaign.promise;
    expect(follower.leader()).toBe(followerName);
    await follower.compareAndSet(map.epoch, nextMap(map, {}));
    // Closing is not losing: onLost is for leadership that ends against the holder's will.
    expect(lost).toEqual([]);
    await leader.close(); // idempotent
  });

  it('fences a leader whose election key is gone: its CAS fails and it is told it lost', async () => {
    const prefix = freshPrefix();
    const leader = openStore(prefix);
    const bystander = openStore(prefix);
    let lostCalls = 0;
    await leader.acquireLeadership('fenced', () => {
      lostCalls += 1;
    });
    const map = createClusterMap('vnode');
    await leader.compareAndSet(undefined, map);
    // A store that never campaigned still follows the election.
    expect((await bystander.load())?.epoch).toBe(map.epoch);
    await waitFor(() => bystander.leader() === 'fenced', 'the bystander to observe the leader');

    // What a lease expiry does, without waiting for one: the election key disappears.
    await raw!.delete().prefix(`${prefix}/coordinator/`);
    expect(await rejectionCode(leader.compareAndSet(map.epoch, nextMap(map, {})))).toBe(
      ErrorCode.MAP_CONFLICT,
    );
    await waitFor(() => lostCalls > 0, 'the leader to learn it lost');
    expect(lostCalls).toBe(1);
    expect((await bystander.load())?.epoch).toBe(map.epoch);
    await waitFor(() => bystander.leader() === undefined, 'the bystander to see no leader');
  });

  it('hands leadership over when the leader process dies without resigning', async () => {
    const prefix = freshPrefix();
    const child = spawnLeader(prefix, 'crashing-leader');
    cleanups.push(() => {
      child.kill('SIGKILL');
    });
    await waitForLine(child, 'leading');

    const survivor = openStore(prefix);
    const campaign = tracked(survivor.acquireLeadership('survivor', () => undefined));
    await waitFor(() => survivor.leader() === 'crashing-leader', 'the survivor to observe the leader');
    expect(campaign.settled()).toBe(false);

    child.kill('SIGKILL'); // no resign, no revoke: etcd expires the lease after its TTL
    await campaign.promise;
    expect(survivor.leader()).toBe('survivor');
  });

  it('rejects with UNAVAILABLE once etcd is gone, and tells a leader it lost', async () => {
    const own = await startEtcd();
    cleanups.push(() => own.stop());
    const prefix = freshPrefix();
    const writer = openStore(prefix, { endpoints: [own.endpoint], requestTimeoutMs: 1_000 });
    const leader = openStore(prefix, {
      endpoints: [own.endpoint],
      leaseTtlSeconds: 1,
      requestTimeoutMs: 1_000,
    });
    const map = createClusterMap('vnode');
    await writer.compareAndSet(undefined, map);
    let lostCalls = 0;
    await leader.acquireLeadership('doomed', () => {
      lostCalls += 1;
    });

    await own.stop();
    expect(await rejectionCode(writer.compareAndSet(map.epoch, nextMap(map, {})))).toBe(
      ErrorCode.UNAVAILABLE,
    );
    expect(await rejectionCode(writer.load())).toBe(ErrorCode.UNAVAILABLE);
    await waitFor(() => lostCalls > 0, 'the leader to learn it lost');
    expect(lostCalls).toBe(1);
    // A deposed leader refuses to write rather than ask an etcd that might accept it.
    expect(await rejectionCode(leader.compareAndSet(map.epoch, nextMap(map, {})))).toBe(
      ErrorCode.MAP_CONFLICT,
    );
  });

  it('rejects with UNAVAILABLE when etcd was never there', async () => {
    const store = openStore(freshPrefix(), { endpoints: ['http://127.0.0.1:1'], requestTimeoutMs: 1_000 });
    expect(await rejectionCode(store.load())).toBe(ErrorCode.UNAVAILABLE);
    expect(await rejectionCode(store.compareAndSet(undefined, createClusterMap('vnode')))).toBe(
      ErrorCode.UNAVAILABLE,
    );
    expect(await rejectionCode(store.acquireLeadership('nobody', () => undefined))).toBe(
      ErrorCode.UNAVAILABLE,
    );
  });
});

/** A separate process (so SIGKILL is a real crash) that takes leadership and prints `leading`. */
function spawnLeader(prefix: string, name: string): ChildProcess {
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  const storeModule = pathToFileURL(fileURLToPath(new URL('../src/etcd-map-store.ts', import.meta.url))).href;
  const script = `
    const { EtcdMapStore } = await import(${JSON.stringify(storeModule)});
    const store = new EtcdMapStore(${JSON.stringify({ endpoints: [etcd!.endpoint], prefix, leaseTtlSeconds: 2 })});
    await store.acquireLeadership(${JSON.stringify(name)}, () => {});
    process.stdout.write('leading\\n');
    setInterval(() => {}, 60_000);
  `;
  return spawn(process.execPath, ['--import', tsx, '--input-type=module', '--eval', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

function waitForLine(child: ChildProcess, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
      if (output.split('\n').includes(line)) resolve();
    });
    child.once('exit', (code) =>
      reject(new Error(`leader process exited (${code}) before printing ${line}`)),
    );
  });
}
