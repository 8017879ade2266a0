/**
 * Versions and compare-and-set (issue #15) end to end: an in-process balancer in front of REAL
 * storage nodes (the built dstore-node CLI), driven by @dstore/client through the balancer and
 * directly. CAS races, CAS while keys move, ABA (delete + re-create), a version that survives a
 * migration, and FLUSHALL (native, RESP, refused for limited users and during a migration).
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type DstoreClient, ErrorCode, VersionConflictError } from '@dstore/client';
import { hashPassword } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { clientOf, cluster, dstore, inGroups, keysMoving } from './data-model-helpers.js';
import {
  type NodeReady,
  nodeStats,
  Resources,
  refusal,
  type Spawned,
  spawnNode,
  temporaryDir,
  waitFor,
  waitForNodesUp,
} from './helpers.js';
import { redisCli } from './resp-helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

/**
 * Increments the decimal counter under `key` by compare-and-set: read value and version, write
 * value + 1 if the version is unchanged, again on a conflict. Resolves the version the successful
 * write took and how many conflicts it met.
 */
async function casIncrement(
  client: DstoreClient,
  key: string,
): Promise<{ version: number; conflicts: number }> {
  let conflicts = 0;
  for (;;) {
    const current = await client.getWithVersion(key);
    const next = current === null ? 1 : Number(Buffer.from(current.value).toString()) + 1;
    try {
      const version = await client.setWithVersion(key, String(next), { ifVersion: current?.version ?? 0 });
      return { version, conflicts };
    } catch (error) {
      if (!(error instanceof VersionConflictError)) throw error;
      conflicts++;
    }
  }
}

describe.each(['balancer', 'direct'] as const)('versions through %s routing', (routing) => {
  it('counts compare-and-set increments from four connections exactly', async () => {
    const { balancer } = await cluster(resources, 2);
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => clientOf(resources, balancer.address.port, routing)),
    );
    const ROUNDS = 200;
    const versions: number[] = [];
    let conflicts = 0;
    await Promise.all(
      clients.map(async (client) => {
        for (let round = 0; round < ROUNDS; round++) {
          const done = await casIncrement(client, 'cas-counter');
          versions.push(done.version);
          conflicts += done.conflicts;
        }
      }),
    );
    // Every successful CAS is one increment: no lost update, no double write.
    expect(versions).toHaveLength(4 * ROUNDS);
    expect(await clients[0]!.getString('cas-counter')).toBe(String(4 * ROUNDS));
    // Every success took its own version, and the last one is the key's.
    expect(new Set(versions).size).toBe(versions.length);
    expect((await clients[0]!.getWithVersion('cas-counter'))?.version).toBe(Math.max(...versions));
    // The race happened (four writers on one key must have collided).
    expect(conflicts).toBeGreaterThan(0);
  });

  it('never gives a re-created key a version a client held before (ABA), and checks ifVersion on SET and DEL', async () => {
    const { balancer } = await cluster(resources, 2);
    const client = await clientOf(resources, balancer.address.port, routing);
    expect(await client.getWithVersion('aba')).toBeNull();
    // ifVersion 0: only when absent.
    const v1 = await client.setWithVersion('aba', 'one', { ifVersion: 0 });
    const conflict = await refusal(client.set('aba', 'again', { ifVersion: 0 }));
    expect(conflict).toBeInstanceOf(VersionConflictError);
    expect(conflict).toMatchObject({
      code: ErrorCode.VERSION_CONFLICT,
      currentVersion: v1,
      notExecuted: true,
    });
    expect(conflict.retryable).toBe(false);
    const read = await client.getWithVersion('aba');
    expect([Buffer.from(read!.value).toString(), read!.version]).toEqual(['one', v1]);
    // Every kind of write changes the version: SET, an expiry change, INCR, PERSIST.
    const seen = [v1];
    await client.set('aba', '5');
    seen.push((await client.getWithVersion('aba'))!.version);
    await client.expire('aba', 100);
    seen.push((await client.getWithVersion('aba'))!.version);
    await client.incr('aba');
    seen.push((await client.getWithVersion('aba'))!.version);
    await client.persist('aba');
    seen.push((await client.getWithVersion('aba'))!.version);
    await client.set('aba', '7', { ex: 100, nx: false });
    seen.push((await client.getWithVersion('aba'))!.version);
    expect(seen.every((v, i) => i === 0 || v > seen[i - 1]!)).toBe(true);
    const held = seen.at(-1)!;
    // A stale compare-and-delete is refused; the right one deletes.
    expect(await refusal(client.del('aba', { ifVersion: v1 }))).toMatchObject({ currentVersion: held });
    expect(await client.del('aba', { ifVersion: held })).toBe(true);
    // Gone: the held version no longer matches (0 = the key does not exist).
    expect(await refusal(client.del('aba', { ifVersion: held }))).toMatchObject({ currentVersion: 0 });
    expect(await client.del('aba', { ifVersion: 0 })).toBe(false);
    // Re-created: a new version, above every one before; the old one never matches again.
    await client.set('aba', '7');
    const recreated = (await client.getWithVersion('aba'))!.version;
    expect(recreated).toBeGreaterThan(held);
    expect(await refusal(client.set('aba', 'stale', { ifVersion: held }))).toMatchObject({
      code: ErrorCode.VERSION_CONFLICT,
      currentVersion: recreated,
    });
    expect(await client.getString('aba')).toBe('7');
    // Bad versions are refused before sending.
    expect((await refusal(client.set('aba', 'x', { ifVersion: -1 }))).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect((await refusal(client.set('aba', 'x', { ifVersion: 1, nx: true }))).code).toBe(
      ErrorCode.INVALID_ARGUMENT,
    );
  });

  it('keeps a key’s version when it moves, and answers every CAS right while keys move (join under load)', async () => {
    const KEYS = 200;
    // A slow stream: the new owner is asked about most moving keys before the stream brings them.
    const { balancer, spawned } = await cluster(resources, 3, ['--migration-rate', '40']);
    const port = balancer.address.port;
    const client = await clientOf(resources, port, routing);
    const other = await clientOf(resources, port, routing);
    await inGroups(KEYS, (i) => Promise.all([client.set(`held-${i}`, 'v0'), client.set(`ctr-${i}`, '0')]));
    const held: number[] = new Array(KEYS);
    await inGroups(KEYS, async (i) => {
      held[i] = (await client.getWithVersion(`held-${i}`))!.version;
    });

    spawned.push(await spawnNode(resources, 'node-4', port, ['--migration-rate', '40']));
    await keysMoving(balancer, client, routing);
    await keysMoving(balancer, other, routing);
    const wrong: string[] = [];
    // Per-key history of the counters: every successful CAS's version, in the order it succeeded.
    const history = new Map<number, number[]>();
    await inGroups(KEYS, async (i) => {
      // Two writers with the version read before the join: exactly one succeeds.
      const [first, second] = await Promise.allSettled([
        client.setWithVersion(`held-${i}`, 'a', { ifVersion: held[i]! }),
        other.setWithVersion(`held-${i}`, 'b', { ifVersion: held[i]! }),
      ]);
      const won = [first, second].filter((result) => result.status === 'fulfilled');
      const lost = [first, second].filter((result) => result.status === 'rejected');
      if (won.length !== 1) wrong.push(`held-${i}: ${won.length} CAS succeeded with one version`);
      for (const result of lost) {
        if (!(result.reason instanceof VersionConflictError))
          wrong.push(`held-${i}: ${String(result.reason)}`);
      }
      // Two writers CAS-increment each counter three times each, while it moves.
      const [a, b] = await Promise.all([
        (async () => [
          await casIncrement(client, `ctr-${i}`),
          await casIncrement(client, `ctr-${i}`),
          await casIncrement(client, `ctr-${i}`),
        ])(),
        (async () => [
          await casIncrement(other, `ctr-${i}`),
          await casIncrement(other, `ctr-${i}`),
          await casIncrement(other, `ctr-${i}`),
        ])(),
      ]);
      const versions = [...a, ...b].map((done) => done.version).sort((x, y) => x - y);
      history.set(i, versions);
    });
    await waitForNodesUp(balancer, 4);
    expect(wrong).toEqual([]);
    for (let i = 0; i < KEYS; i++) {
      const counter = await client.getWithVersion(`ctr-${i}`);
      const versions = history.get(i)!;
      if (counter === null || Buffer.from(counter.value).toString() !== '6')
        wrong.push(
          `ctr-${i}: ${counter === null ? 'gone' : Buffer.from(counter.value).toString()}, expected 6`,
        );
      // Six distinct versions, the last one the key's, all above the version before the join.
      else if (new Set(versions).size !== 6 || counter.version !== versions.at(-1))
        wrong.push(`ctr-${i}: versions ${versions.join(',')} but the key is at ${counter.version}`);
      const after = await client.getWithVersion(`held-${i}`);
      if (after === null || after.version <= held[i]!)
        wrong.push(`held-${i}: version ${after?.version} after the move`);
      // The version held before the move never matches again.
      if (
        await client.del(`held-${i}`, { ifVersion: held[i]! }).then(
          () => true,
          () => false,
        )
      )
        wrong.push(`held-${i}: deleted with the version held before the move`);
    }
    expect(wrong).toEqual([]);
    // The path under test ran: the new owner pulled keys the stream had not brought yet.
    const pulled = Number((await nodeStats(spawned[3]!.ready.port))['migration.keys_pulled']);
    expect(pulled).toBeGreaterThan(0);
  });

  it('accepts the version read before a move once after it, and flushes every node', async () => {
    const KEYS = 100;
    const { balancer, spawned } = await cluster(resources, 2, ['--migration-rate', '2000']);
    const port = balancer.address.port;
    const client = await clientOf(resources, port, routing);
    await inGroups(KEYS, (i) => client.set(`moving-${i}`, `v-${i}`));
    const held: number[] = new Array(KEYS);
    await inGroups(KEYS, async (i) => {
      held[i] = (await client.getWithVersion(`moving-${i}`))!.version;
    });
    spawned.push(await spawnNode(resources, 'node-3', port, ['--migration-rate', '2000']));
    // The whole migration is over: keys moved with their versions.
    await waitForNodesUp(balancer, 3);
    const moved = Number((await nodeStats(spawned[2]!.ready.port)).keys);
    expect(moved).toBeGreaterThan(0);
    const results = await Promise.all(
      Array.from({ length: KEYS }, (_, i) =>
        client.set(`moving-${i}`, 'cas', { ifVersion: held[i]! }).then(
          () => 'ok',
          (error: unknown) => String(error),
        ),
      ),
    );
    expect(results.filter((result) => result !== 'ok')).toEqual([]);
    const again = await Promise.all(
      Array.from({ length: KEYS }, (_, i) =>
        client.set(`moving-${i}`, 'twice', { ifVersion: held[i]! }).then(
          () => 'ok',
          (error: unknown) => (error instanceof VersionConflictError ? 'conflict' : String(error)),
        ),
      ),
    );
    expect(new Set(again)).toEqual(new Set(['conflict']));

    // FLUSHALL: every node is empty, the answer counts the keys.
    await inGroups(KEYS, (i) => client.set(`extra-${i}`, 'x'));
    expect(await client.flushAll()).toBe(2 * KEYS);
    for (const node of spawned) expect(Number((await nodeStats(node.ready.port)).keys)).toBe(0);
    expect(await client.dbsize()).toBe(0);
    expect(await client.get('moving-0')).toBeNull();
    // A key written after the flush gets a version above every one before it.
    await client.set('moving-0', 'new');
    expect((await client.getWithVersion('moving-0'))!.version).toBeGreaterThan(Math.max(...held));
  });
});

/**
 * A storage node whose wall clock is `skewMs` behind: `Date.now` (what its version clock reads)
 * patched by a module preloaded through NODE_OPTIONS, which the child process inherits.
 */
function spawnSkewedNode(id: string, balancerPort: number, skewMs: number): Promise<Spawned<NodeReady>> {
  const previous = process.env.NODE_OPTIONS;
  const patch = `const now = Date.now; Date.now = () => now() - ${skewMs};`;
  process.env.NODE_OPTIONS = `--import=data:text/javascript,${encodeURIComponent(patch)}`;
  try {
    // The child is spawned synchronously here, with the environment as it is now.
    return spawnNode(resources, id, balancerPort);
  } finally {
    if (previous === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = previous;
  }
}

describe('versions across nodes whose clocks disagree', () => {
  it('gives a moved key versions above the ones it had, even on a new owner whose clock is an hour behind', async () => {
    const KEYS = 200;
    const { balancer } = await cluster(resources, 2);
    const port = balancer.address.port;
    const client = await clientOf(resources, port, 'balancer');
    await inGroups(KEYS, (i) => client.set(`skew-${i}`, 'v'));
    const held: number[] = new Array(KEYS);
    await inGroups(KEYS, async (i) => {
      held[i] = (await client.getWithVersion(`skew-${i}`))!.version;
    });
    const behind = await spawnSkewedNode('node-late', port, 3_600_000);
    await waitForNodesUp(balancer, 3);
    const moved = [...Array(KEYS).keys()].filter((i) => balancer.ring.get(`skew-${i}`) === 'node-late');
    expect(moved.length).toBeGreaterThan(0);
    expect(Number((await nodeStats(behind.ready.port)).keys)).toBe(moved.length);
    const wrong: string[] = [];
    for (const i of moved) {
      // Moved with its version; the version held before the move still matches (once).
      const before = await client.getWithVersion(`skew-${i}`);
      if (before?.version !== held[i]) wrong.push(`skew-${i}: moved as ${before?.version}, had ${held[i]}`);
      const written = await client.setWithVersion(`skew-${i}`, 'w', { ifVersion: held[i]! });
      // A write on the late node: above every version the key had.
      if (written <= held[i]!) wrong.push(`skew-${i}: written at ${written} <= ${held[i]}`);
      // ABA: deleted and re-created there, never a version it had before.
      await client.del(`skew-${i}`);
      await client.set(`skew-${i}`, 'again');
      const again = (await client.getWithVersion(`skew-${i}`))!.version;
      if (again <= written) wrong.push(`skew-${i}: re-created at ${again} <= ${written}`);
    }
    expect(wrong).toEqual([]);
  });
});

describe('the dstore CLI', () => {
  it('reads versions, compare-and-sets, compare-and-deletes and flushes with --yes', async () => {
    const { balancer } = await cluster(resources, 1);
    const at = ['--server', `127.0.0.1:${balancer.address.port}`];
    expect(await dstore('set', 'k', 'v', ...at)).toMatchObject({ stdout: 'OK\n', code: 0 });
    const read = await dstore('get', 'k', '--with-version', ...at);
    const [value, version] = read.stdout.trim().split('\n');
    expect([value, read.code]).toEqual(['v', 0]);
    expect(Number(version)).toBeGreaterThan(0);
    const stale = await dstore('set', 'k', 'w', '--if-version', String(Number(version) - 1), ...at);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/^error VERSION_CONFLICT: .* at version /);
    const cas = await dstore('set', 'k', 'w', '--if-version', version!, ...at);
    expect(cas.code).toBe(0);
    const written = Number(cas.stdout.trim().split(' ')[1]);
    expect(written).toBeGreaterThan(Number(version));
    expect((await dstore('del', 'k', '--if-version', version!, ...at)).code).toBe(1);
    expect(await dstore('del', 'k', '--if-version', String(written), ...at)).toMatchObject({
      stdout: '1\n',
      code: 0,
    });
    expect((await dstore('get', 'k', '--with-version', '--json', ...at)).stdout).toBe(
      '{"key":"k","value":null,"version":0}\n',
    );
    await dstore('set', 'a', '1', ...at);
    expect((await dstore('flushall', ...at)).code).toBe(2);
    expect(await dstore('dbsize', ...at)).toMatchObject({ stdout: '1\n' });
    expect(await dstore('flushall', '--yes', ...at)).toMatchObject({ stdout: 'OK 1\n', code: 0 });
    expect(await dstore('dbsize', ...at)).toMatchObject({ stdout: '0\n' });
  });
});

describe('FLUSHALL', () => {
  it('is refused for read-only and prefix-limited users, on the native and the RESP port', async () => {
    const usersFile = join(temporaryDir(resources, 'dstore-flush-users-'), 'users.json');
    const users = [
      { name: 'admin', password: await hashPassword('admin-password') },
      { name: 'reader', password: await hashPassword('reader-password'), access: 'read' },
      { name: 'scoped', password: await hashPassword('scoped-password'), prefixes: ['tenant-a:'] },
    ];
    writeFileSync(usersFile, JSON.stringify({ users }));
    const { balancer } = await cluster(resources, 2, [], { usersFile, respPort: 0 });
    const port = balancer.address.port;
    const admin = await clientOf(resources, port, 'balancer', { user: 'admin', password: 'admin-password' });
    await admin.set('tenant-a:1', 'x');
    await admin.set('other', 'y');
    for (const [user, password] of [
      ['reader', 'reader-password'],
      ['scoped', 'scoped-password'],
    ] as const) {
      const limited = await clientOf(resources, port, 'balancer', { user, password });
      expect((await refusal(limited.flushAll())).code).toBe(ErrorCode.NO_PERMISSION);
      const resp = balancer.address.respPort;
      expect(
        await redisCli(resp, '--user', user, '--pass', password, '--no-auth-warning', 'FLUSHALL'),
      ).toMatch(/^NOPERM/);
    }
    expect(await admin.dbsize()).toBe(2);
    // The admin may, on both ports; RESP accepts ASYNC / SYNC and refuses anything else.
    const resp = balancer.address.respPort;
    const asAdmin = ['--user', 'admin', '--pass', 'admin-password', '--no-auth-warning'];
    expect(await redisCli(resp, ...asAdmin, 'FLUSHALL', 'NOW')).toMatch(/^ERR syntax error/);
    expect(await redisCli(resp, ...asAdmin, 'FLUSHALL', 'ASYNC')).toBe('OK');
    expect(await admin.dbsize()).toBe(0);
    await admin.set('again', 'z');
    expect(await redisCli(resp, ...asAdmin, 'FLUSHDB', 'SYNC')).toBe('OK');
    expect(await admin.get('again')).toBeNull();
    await admin.set('third', 'z');
    expect(await admin.flushAll()).toBe(1);
  });

  it('is refused (BUSY, retryable, not executed) while keys migrate, and no key comes back afterwards', async () => {
    const KEYS = 300;
    const { balancer, spawned } = await cluster(resources, 2, ['--migration-rate', '40']);
    const port = balancer.address.port;
    const client = await clientOf(resources, port, 'balancer', { maxRetriesPerRequest: 0 });
    await inGroups(KEYS, (i) => client.set(`k-${i}`, 'v'));
    spawned.push(await spawnNode(resources, 'node-3', port, ['--migration-rate', '40']));
    await waitFor(() => balancer.membership.migrator.snapshot().active, 'the migration to start');
    const busy = await refusal(client.flushAll());
    expect(busy).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true, retryable: true });
    expect(busy.message).toMatch(/migration/);
    // A node refuses it too while its ranges move (a FLUSH that raced a ring change).
    const direct = await clientOf(resources, spawned[2]!.ready.port, 'balancer', { maxRetriesPerRequest: 0 });
    expect((await refusal(direct.flushAll())).code).toBe(ErrorCode.BUSY);
    await waitForNodesUp(balancer, 3);
    expect(await client.dbsize()).toBe(KEYS);
    expect(await client.flushAll()).toBe(KEYS);
    // Nothing comes back: not from a stream, not from a purge.
    expect(await client.dbsize()).toBe(0);
    for (const node of spawned) expect(Number((await nodeStats(node.ready.port)).keys)).toBe(0);
  });
});
