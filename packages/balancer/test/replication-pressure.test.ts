/**
 * Replication under resource pressure: three nodes capped with `--max-memory` (memory) or
 * `--map-size` (lmdb), factor 3 (every key on all three). Found by hand: once one member was
 * full, it refused the REPLICATE of writes its head had admitted, the head kept them for a re-send
 * that could never succeed, and every write of the cluster, deletes included, failed with
 * UNAVAILABLE or an indeterminate CONNECTION_CLOSED until the deadline: nothing could free space.
 * Now the memory engine admits a client write against its cap where it enters (OUT_OF_MEMORY,
 * not executed), the other members take what was admitted (a headroom of an eighth past their
 * cap), and replicated deletes always go through. The lmdb case passed before that change too
 * (its members count B-tree pages, alike on every member, and reach the limit together): it
 * guards the same outcome.
 *
 * Then one member with less room than the others (found by hand, lmdb `--map-size 4m` next to
 * `64m`): it filled first, refused what its heads kept admitting, and from then on every write of
 * its chains, deletes included, failed with UNAVAILABLE / OUT_OF_SPACE after seconds each, for
 * good. Now a member past its room says so in every REPLICATED (`full`), the heads refuse values
 * of its chains before they run (not executed, at once), deletes go through everywhere, and once
 * they freed room the heads' probe finds it and values are taken again. With memory, a value its
 * own head refused (past the cap) had also already been sent down the chain: the client was told
 * OUT_OF_MEMORY (not executed) while the tail served the write.
 */
import { Nemesis } from '@dstore/checker';
import { createClient, type DstoreClient } from '@dstore/client';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, sleep, waitFor } from './helpers.js';
import { type Engine, FAILOVER_TIMEOUTS, ReplicatedCluster } from './replicated-cluster.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

const VALUE = 'x'.repeat(4000);

/** Three members (factor 3: every key on each), each started with `argsOf(id)`. */
function startThreeMembers(
  engine: Engine,
  argsOf: (id: string) => readonly string[],
): Promise<ReplicatedCluster> {
  nemesis = new Nemesis();
  return ReplicatedCluster.start({
    engine,
    resources,
    nemesis,
    nodes: ['node-1', 'node-2', 'node-3'],
    argsOf,
    balancer: FAILOVER_TIMEOUTS,
  });
}

/** What {@link fillUntilRefused} wrote: the keys acknowledged, the keys refused and their errors. */
interface Fill {
  readonly acknowledged: string[];
  readonly refused: string[];
  readonly refusals: DstoreError[];
}

/** Writes `k0`, `k1`, … one at a time until `refusals` of them were refused (or 4,000 written). */
async function fillUntilRefused(client: DstoreClient, refusals: number): Promise<Fill> {
  const fill: Fill = { acknowledged: [], refused: [], refusals: [] };
  for (let i = 0; i < 4000 && fill.refusals.length < refusals; i++) {
    try {
      await client.set(`k${i}`, VALUE);
      fill.acknowledged.push(`k${i}`);
    } catch (error) {
      if (!(error instanceof DstoreError)) throw error;
      fill.refusals.push(error);
      fill.refused.push(`k${i}`);
    }
  }
  return fill;
}

describe.each([
  { engine: 'memory', limit: ['--max-memory', '8m'], code: ErrorCode.OUT_OF_MEMORY },
  { engine: 'lmdb', limit: ['--map-size', '2m'], code: ErrorCode.OUT_OF_SPACE },
] as const)(
  'replication with every member at its limit ($engine $limit, factor 3)',
  ({ engine, limit, code }) => {
    it('writes are refused with a typed error (not executed); reads and deletes go on; the freed room takes writes', {
      timeout: 120_000,
    }, async () => {
      const cluster = await startThreeMembers(engine, () => limit);
      const client = cluster.client(20_000);
      // Fill past the limit (8 MiB of 4,000-byte values is about 2,000 keys, 2 MiB of B-tree
      // pages about 450); 30 writes after the first refusal must all be refused the same way.
      const { acknowledged, refusals } = await fillUntilRefused(client, 30);
      expect(refusals.length).toBe(30);
      expect(new Set(refusals.map((error) => error.code))).toEqual(new Set([code]));
      expect(refusals.every((error) => error.notExecuted)).toBe(true);
      expect(acknowledged.length).toBeGreaterThan(300);
      // Every acknowledged write is on every member.
      for (const key of acknowledged.filter((_, i) => i % 20 === 0)) await cluster.expectOnChain(key, VALUE);

      // Deletes go through while full. Once they freed a good share (memory: what a node holds an
      // eighth under its cap), their room takes values of the same size again (memory: new keys
      // wait for the tombstones of replicated deletes to be reaped, which hold their keys' room).
      const deleted = acknowledged.slice(0, Math.ceil(acknowledged.length * 0.3));
      for (const key of deleted) expect(await client.del(key)).toBe(true);
      const again = (key: string): string => `again-${key}`.padEnd(VALUE.length, 'y');
      for (const key of deleted.slice(0, 50)) expect(await client.set(key, again(key))).toBe('OK');
      for (const key of deleted.slice(0, 50)) await cluster.expectOnChain(key, again(key));
      for (const key of deleted.slice(50, 60)) await cluster.expectOnChain(key, null);
      for (const key of acknowledged.slice(deleted.length, deleted.length + 200))
        expect(await client.getString(key)).toBe(VALUE);
      expect([...cluster.states.values()]).toEqual(['up', 'up', 'up']);
    });
  },
);

describe.each([
  {
    engine: 'memory',
    big: ['--max-memory', '32m'],
    small: ['--max-memory', '8m'],
    code: ErrorCode.OUT_OF_MEMORY,
  },
  { engine: 'lmdb', big: ['--map-size', '16m'], small: ['--map-size', '2m'], code: ErrorCode.OUT_OF_SPACE },
] as const)(
  'replication with one member smaller than the others ($engine $small, factor 3)',
  ({ engine, big, small, code }) => {
    it('its chains refuse values at once (not executed, nowhere stored); deletes go through; freed room takes values again', {
      timeout: 120_000,
    }, async () => {
      const cluster = await startThreeMembers(engine, (id) => (id === 'node-3' ? small : big));
      const client = cluster.client(20_000);
      // Past node-3's room: 150 refusals, first from the other heads (node-3 is full), then also from
      // node-3 as head once it reaches its own cap.
      const { acknowledged, refused, refusals } = await fillUntilRefused(client, 150);
      expect(refusals.length).toBe(150);
      expect(new Set(refusals.map((error) => error.code))).toEqual(new Set([code]));
      expect(refusals.every((error) => error.notExecuted)).toBe(true);
      expect(refused.some((key) => cluster.chainOf(key)[0] === 'node-3')).toBe(true);
      expect(refused.some((key) => cluster.chainOf(key)[0] !== 'node-3')).toBe(true);
      // Not executed means on no member; every acknowledged write is on every member.
      for (const key of refused) await cluster.expectOnChain(key, null);
      for (const key of acknowledged.filter((_, i) => i % 20 === 0)) await cluster.expectOnChain(key, VALUE);

      // Deletes go through on every chain, node-3's included.
      const deleted = acknowledged.slice(0, Math.ceil(acknowledged.length * 0.4));
      for (const key of deleted) expect(await client.del(key)).toBe(true);
      // Room is back: once a head's probe (within a second) finds it, values are taken again.
      const again = (key: string): string => `again-${key}`.padEnd(VALUE.length, 'y');
      const rewritten = deleted.slice(0, 60);
      for (const key of rewritten) {
        await waitFor(
          () =>
            client.set(key, again(key)).then(
              () => true,
              (error: unknown) => {
                if (error instanceof DstoreError && error.code === code) return false;
                throw error;
              },
            ),
          `${key} written again once node-3 has room`,
          30_000,
        );
      }
      for (const key of rewritten) await cluster.expectOnChain(key, again(key));
      for (const key of deleted.slice(60, 70)) await cluster.expectOnChain(key, null);
      expect([...cluster.states.values()]).toEqual(['up', 'up', 'up']);
    });
  },
);

describe("replication with a write past one member's headroom (memory, node-3 --max-memory 4m, factor 3)", () => {
  it('the refusal keeps its code up the chain, the blocked chain takes deletes at once, the kept write never brings a deleted key back', {
    timeout: 120_000,
  }, async () => {
    // Found with lmdb on a full 8 MB tmpfs (fault audit): 16 writers of 30 KB values passed the
    // full member's headroom before its `full` answer came back. Its REPLICATE refusal reached
    // the head as a CONNECTION_CLOSED relayed by the middle, so the head dropped its healthy link
    // to the middle (every batch in flight on it failed, indeterminate), and the chains with
    // refused writes answered UNAVAILABLE to everything, deletes included, until room was freed
    // through other chains: had every chain been blocked, nothing could have freed it. Here one
    // value larger than node-3's headroom (an eighth of 4 MiB), let through as the heads' probe
    // once node-3 is full, passes it the same way, every time.
    const cluster = await startThreeMembers('memory', (id) =>
      id === 'node-3' ? ['--max-memory', '4m'] : ['--max-memory', '64m'],
    );
    const client = cluster.client(20_000);
    // Retries would hide the refusals this test is about.
    const once = createClient({
      host: '127.0.0.1',
      port: cluster.port,
      commandTimeout: 20_000,
      maxRetriesPerRequest: 0,
    });
    resources.add(() => once.disconnect());
    // Until node-3's heads refuse values for it (its answers say `full`).
    const { acknowledged } = await fillUntilRefused(client, 5);
    // A key whose chain has node-3 as its tail: the refusal is relayed by the middle.
    const probe = cluster.keyWhere('node-3', 2, 'probe');
    const middle = cluster.chainOf(probe)[1]!;
    const neighbours = acknowledged.filter(
      (key) => cluster.chainOf(key).join() === cluster.chainOf(probe).join(),
    );
    expect(neighbours.length).toBeGreaterThan(1);
    // The heads let one value through a second (the probe of a full member): this one.
    let refusal: DstoreError | undefined;
    await waitFor(
      () =>
        once.set(probe, 'p'.repeat(1_000_000)).then(
          () => {
            throw new Error('a value past the headroom was stored');
          },
          (error: unknown) => {
            if (!(error instanceof DstoreError)) throw error;
            // Refused at the head (not executed) until the probe is due.
            if (error.notExecuted && error.code === ErrorCode.OUT_OF_MEMORY) return false;
            refusal = error;
            return true;
          },
        ),
      'the value let through as a probe',
      10_000,
    );
    // Outcome unknown (the head stored it), and the head knows why: the middle answered with
    // node-3's code, not with a closed connection (which made the head drop its link to it).
    expect(refusal!.notExecuted).toBe(false);
    expect(refusal!.message).toContain(`replication to ${middle} failed (OUT_OF_MEMORY)`);

    // The chain holds that write for node-3: its deletes go through at once, with no retry
    // (they were refused UNAVAILABLE), the probe key's own included; values of it are refused.
    expect(await once.del(probe)).toBe(true);
    for (const key of neighbours.slice(0, 2)) expect(await once.del(key)).toBe(true);
    const value = await once.set(neighbours[2] ?? probe, VALUE).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(value).toMatchObject({ code: ErrorCode.OUT_OF_MEMORY, notExecuted: true });
    // Room back (a third of the keys deleted): the kept write leaves the chain (older than the
    // delete's tombstone on node-3: skipped), and values are taken again.
    const freed = acknowledged.slice(0, Math.ceil(acknowledged.length / 3));
    for (const key of freed) if (!neighbours.slice(0, 2).includes(key)) await client.del(key);
    const again = (key: string): string => `again-${key}`.padEnd(VALUE.length, 'y');
    for (const key of freed.slice(0, 30)) {
      await waitFor(
        () =>
          client.set(key, again(key)).then(
            () => true,
            (error: unknown) => {
              if (error instanceof DstoreError && error.code === ErrorCode.OUT_OF_MEMORY) return false;
              throw error;
            },
          ),
        `${key} written again once node-3 has room`,
        30_000,
      );
    }
    // Every member agrees: the deleted probe is nowhere (its kept write did not bring it back).
    await cluster.expectOnChain(probe, null);
    for (const key of freed.slice(0, 30)) await cluster.expectOnChain(key, again(key));
    for (const key of acknowledged.slice(freed.length).filter((_, i) => i % 10 === 0))
      await cluster.expectOnChain(key, VALUE);
    expect([...cluster.states.values()]).toEqual(['up', 'up', 'up']);
  });
});

describe.each(['allkeys-lru', 'allkeys-random'] as const)(
  'replication with an eviction policy (%s, memory, factor 3, node-3 half the cap of the others)',
  (policy) => {
    it('only heads evict and each eviction reaches the other members: every chain holds the same keys', {
      timeout: 120_000,
    }, async () => {
      const cluster = await startThreeMembers('memory', (id) => [
        '--max-memory',
        id === 'node-3' ? '4m' : '8m',
        '--eviction',
        policy,
      ]);
      const client = cluster.client(20_000);
      // Twice the larger cap of 4,000-byte values, the first 150 keys read again and again on the
      // way: reads are served by each chain's tail, so a member evicting on its own (its order
      // counting reads its head never sees) would keep keys its head evicted, or drop keys its
      // head keeps. node-3 fills first with what the others head: they evict for it.
      const hot = 150;
      const refusals: DstoreError[] = [];
      for (let i = 0; i < 4000; i++) {
        try {
          await client.set(`k${i}`, VALUE);
        } catch (error) {
          if (!(error instanceof DstoreError)) throw error;
          refusals.push(error);
        }
        if (i >= hot) await client.getString(`k${i % hot}`);
      }
      // A write is refused only when its head finds nothing of its own to evict (typed, not executed).
      expect(refusals.length).toBeLessThan(400);
      expect(refusals.every((error) => error.code === ErrorCode.OUT_OF_MEMORY && error.notExecuted)).toBe(
        true,
      );
      for (const id of ['node-1', 'node-2', 'node-3']) {
        const stats = await cluster.stats(id);
        // Each head evicted, and sent every eviction down its chains.
        expect(Number(stats['storage.evictions'])).toBeGreaterThan(200);
        expect(stats['replication.evictions_sent']).toBe(stats['storage.evictions']);
      }
      // Every member of every chain holds the same keys at the same versions, hot ones included.
      for (let i = 0; i < 4000; i += i < hot ? 1 : 7) await cluster.expectOnChain(`k${i}`);
      // So a delete is a delete everywhere: what DEL found missing at the head reads as missing.
      for (let i = 0; i < hot; i++) {
        await client.del(`k${i}`);
        expect(await client.getString(`k${i}`)).toBeNull();
      }
      expect([...cluster.states.values()]).toEqual(['up', 'up', 'up']);
    });
  },
);

describe('replication with an eviction policy under a failure (allkeys-lru, memory, factor 3 on 5 nodes)', () => {
  it('a member SIGKILLed and restarted empty mid-load: afterwards every chain holds the same keys, no deleted key is back', {
    timeout: 120_000,
  }, async () => {
    nemesis = new Nemesis();
    const cluster = await ReplicatedCluster.start({
      engine: 'memory',
      resources,
      nemesis,
      nodeArgs: ['--max-memory', '8m', '--eviction', 'allkeys-lru'],
      balancer: FAILOVER_TIMEOUTS,
    });
    const client = cluster.client(20_000);
    // 8 writers of 4,000-byte values (the five caps fill within seconds, then every write
    // evicts), each deleting one of its earlier keys every 10 writes and reading its first 50.
    const written: string[] = [];
    const deleted: string[] = [];
    const failures: DstoreError[] = [];
    let stopped = false;
    const writer = async (w: number): Promise<void> => {
      for (let i = 0; !stopped; i++) {
        try {
          await client.set(`w${w}-${i}`, VALUE);
          written.push(`w${w}-${i}`);
          if (i % 10 === 5) {
            await client.del(`w${w}-${i - 3}`);
            deleted.push(`w${w}-${i - 3}`);
          }
          if (i % 3 === 0) await client.getString(`w${w}-${i % 50}`);
        } catch (error) {
          // The failover's indeterminate and retryable errors: those keys are not checked.
          if (!(error instanceof DstoreError)) throw error;
          failures.push(error);
        }
      }
    };
    const writers = Promise.all(Array.from({ length: 8 }, (_, w) => writer(w)));
    /** Evictions the heads sent down their chains so far. */
    const evictionsSent = async (): Promise<number> => {
      let sent = 0;
      for (const id of cluster.nodes.keys()) {
        if (cluster.stateOf(id) === 'up')
          sent += Number((await cluster.stats(id))['replication.evictions_sent']);
      }
      return sent;
    };
    try {
      // The fault comes once the heads evict.
      await waitFor(async () => (await evictionsSent()) > 500, 'the heads evicting', 60_000);
      const victim = cluster.nodes.get('node-2')!;
      await victim.kill();
      await waitFor(() => cluster.stateOf('node-2') === 'failed', 'node-2 marked failed', 30_000);
      await sleep(1000);
      // A memory node returns empty: a learner that copies its ranges while the heads evict.
      await victim.start();
      await waitFor(() => cluster.stateOf('node-2') === 'up', 'node-2 back up', 90_000);
      await sleep(1000);
    } finally {
      stopped = true;
      await writers;
    }
    expect(failures.length).toBeLessThan(written.length / 10);
    expect(await evictionsSent()).toBeGreaterThan(1000);
    await waitFor(
      () => cluster.balancer.membership.clusterMap.transition === null,
      'the ring settled',
      30_000,
    );
    // Every member of every chain (node-2 included) holds the same keys at the same versions.
    for (let i = 0; i < written.length; i += 3) await cluster.expectOnChain(written[i]!);
    for (const key of deleted) expect(await client.getString(key)).toBeNull();
  });
});

describe('a joining member out of room while it learns (memory members, an lmdb learner, factor 3)', () => {
  it('is taken out of its chains: the change and every write go on without it; it learns once it has room', {
    timeout: 120_000,
  }, async () => {
    // 600 values of 2,100 bytes: an lmdb learner stores each on a 4 KiB overflow page, twice what
    // the memory members report using. Its JOIN passes the capacity check (1,400 KiB against
    // about 1.2 MiB estimated), and its copies fill it at about two thirds.
    const cluster = await startThreeMembers('memory', (id) =>
      id === 'node-4' ? ['--map-size', '1400k'] : [],
    );
    const client = cluster.client(10_000);
    const value = 'y'.repeat(2100);
    const keys = Array.from({ length: 600 }, (_, i) => `learn:${i}`);
    for (let start = 0; start < keys.length; start += 100) {
      await Promise.all(keys.slice(start, start + 100).map((key) => client.set(key, value)));
    }
    const members = () => [...cluster.balancer.membership.nodes];
    await waitFor(
      () => members().every((node) => (node.storage?.usedBytes ?? 0) >= keys.length * value.length),
      'the members reporting the data in their heartbeats',
    );
    await cluster.startNode('node-4', 'lmdb', nemesis);
    // Before: it filled up, refused what its chains' heads replicated to it (most writes of the
    // cluster failed, indeterminate) and the ring change stalled for good.
    await waitFor(() => cluster.stateOf('node-4') === 'failed', 'node-4 out of room, failed', 60_000);
    const map = cluster.balancer.membership;
    await waitFor(() => map.clusterMap.transition === null, 'the ring change done without it', 60_000);
    expect(map.migrator.snapshot().stalled).toBeNull();
    for (let i = 0; i < 100; i++) await client.set(`after:${i}`, 'v');
    // It stays out while its storage is out of room (letting it back would fill it again).
    await sleep(2000);
    expect(cluster.stateOf('node-4')).toBe('failed');

    // The operator gives it room: it returns, learns its ranges and serves.
    await cluster.restartNode('node-4', ['--map-size', '64m'], nemesis);
    await waitFor(() => cluster.stateOf('node-4') === 'up', 'node-4 synced and up', 60_000);
    for (const key of keys.filter((_, i) => i % 5 === 0)) await cluster.expectOnChain(key, value);
    for (let i = 0; i < 100; i += 5) await cluster.expectOnChain(`after:${i}`, 'v');
  });
});
