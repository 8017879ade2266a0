import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  bytesToString,
  type Connection,
  DstoreError,
  ErrorCode,
  handshake,
  hashPassword,
  Op,
  PeerLink,
  type Response,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { createStorageNode } from '../src/index.js';
import { engineCases, Resources } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

function expectOp<T extends Response['op']>(response: Response, op: T): Extract<Response, { op: T }> {
  expect(response.op).toBe(op);
  return response as Extract<Response, { op: T }>;
}

async function rejection(promise: Promise<unknown>): Promise<DstoreError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(DstoreError);
    return error as DstoreError;
  }
  throw new Error('expected a rejection');
}

const engines = engineCases(resources);

describe.each(engines)('storage node on $name', ({ name, options }) => {
  async function connected(): Promise<{ client: Connection; nodeId: string }> {
    const node = await resources.node({ id: `node-${name}`, ...options() });
    return { client: await resources.client(node.address.port), nodeId: node.id };
  }

  it('answers HELLO with its node id and role node', async () => {
    const node = await resources.node({ id: 'n-hello', ...options() });
    const link = new PeerLink({ host: '127.0.0.1', port: node.address.port, role: 'balancer' });
    resources.defer(() => link.close());
    const ready = new Promise((resolve) => link.once('ready', resolve));
    link.start();
    const hello = await ready;
    expect(hello).toMatchObject({ op: Op.HELLO_OK, role: 'node', serverId: 'n-hello' });
    expect(expectOp(await link.request({ op: Op.PING }), Op.OK).op).toBe(Op.OK);
  });

  it('SET then GET returns the value; GET of a missing key is VALUE null', async () => {
    const { client } = await connected();
    expectOp(await client.request({ op: Op.SET, key: toBytes('k1'), value: toBytes('v1') }), Op.OK);
    const found = expectOp(await client.request({ op: Op.GET, key: toBytes('k1') }), Op.VALUE);
    expect(bytesToString(found.value as Uint8Array)).toBe('v1');
    const missing = expectOp(await client.request({ op: Op.GET, key: toBytes('nope') }), Op.VALUE);
    expect(missing.value).toBeNull();
  });

  it('stores empty and binary values and overwrites', async () => {
    const { client } = await connected();
    const binary = new Uint8Array(5000).map((_, i) => (i * 31) & 0xff);
    await client.request({ op: Op.SET, key: toBytes('bin'), value: binary });
    await client.request({ op: Op.SET, key: toBytes('empty'), value: new Uint8Array(0) });
    const stored = expectOp(await client.request({ op: Op.GET, key: toBytes('bin') }), Op.VALUE).value;
    expect(new Uint8Array(stored as Uint8Array)).toEqual(binary);
    const empty = expectOp(await client.request({ op: Op.GET, key: toBytes('empty') }), Op.VALUE).value;
    expect(empty?.byteLength).toBe(0);
    await client.request({ op: Op.SET, key: toBytes('bin'), value: toBytes('short') });
    const after = expectOp(await client.request({ op: Op.GET, key: toBytes('bin') }), Op.VALUE);
    expect(bytesToString(after.value as Uint8Array)).toBe('short');
  });

  it('DEL answers COUNT 1 for an existing key and 0 otherwise', async () => {
    const { client } = await connected();
    await client.request({ op: Op.SET, key: toBytes('d'), value: toBytes('x') });
    expect(expectOp(await client.request({ op: Op.DEL, key: toBytes('d') }), Op.COUNT).count).toBe(1);
    expect(expectOp(await client.request({ op: Op.DEL, key: toBytes('d') }), Op.COUNT).count).toBe(0);
    expect(expectOp(await client.request({ op: Op.GET, key: toBytes('d') }), Op.VALUE).value).toBeNull();
  });

  it('MSET then MGET in order, with nulls for missing keys', async () => {
    const { client } = await connected();
    const entries = Array.from({ length: 100 }, (_, i) => ({
      key: toBytes(`m${i}`),
      value: toBytes(`value-${i}`),
    }));
    expectOp(await client.request({ op: Op.MSET, entries }), Op.OK);
    const keys = [toBytes('m5'), toBytes('missing'), toBytes('m99'), toBytes('m0')];
    const values = expectOp(await client.request({ op: Op.MGET, keys }), Op.VALUES).values;
    expect(values.map((value) => (value ? bytesToString(value) : null))).toEqual([
      'value-5',
      null,
      'value-99',
      'value-0',
    ]);
  });

  it('SCAN pages through every key with MATCH and COUNT; DBSIZE counts them', async () => {
    const { client } = await connected();
    const entries = Array.from({ length: 600 }, (_, i) => ({
      key: toBytes(i % 3 === 0 ? `user:${i}` : `item:${i}`),
      value: toBytes('v'),
    }));
    for (let i = 0; i < entries.length; i += 200) {
      expectOp(await client.request({ op: Op.MSET, entries: entries.slice(i, i + 200) }), Op.OK);
    }
    expect(expectOp(await client.request({ op: Op.DBSIZE }), Op.COUNT).count).toBe(600);
    const seen = new Set<string>();
    let cursor = 0;
    let pages = 0;
    do {
      const page = expectOp(
        await client.request({ op: Op.SCAN, cursor, count: 25, match: toBytes('user:*') }),
        Op.KEYS,
      );
      for (const key of page.keys) seen.add(bytesToString(key));
      cursor = page.cursor;
      pages++;
    } while (cursor !== 0 && pages < 10_000);
    expect(cursor).toBe(0);
    expect(pages).toBeGreaterThan(1);
    expect([...seen].sort()).toEqual(
      entries
        .map((entry) => bytesToString(entry.key))
        .filter((key) => key.startsWith('user:'))
        .sort(),
    );
    await expect(client.request({ op: Op.SCAN, cursor: 2 ** 31, count: 10 })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });

  it('serves many pipelined requests on one connection', async () => {
    const { client } = await connected();
    const writes = Array.from({ length: 500 }, (_, i) =>
      client.request({ op: Op.SET, key: toBytes(`p${i}`), value: toBytes(`v${i}`) }),
    );
    await Promise.all(writes);
    const reads = await Promise.all(
      Array.from({ length: 500 }, (_, i) => client.request({ op: Op.GET, key: toBytes(`p${i}`) })),
    );
    reads.forEach((response, i) => {
      expect(bytesToString(expectOp(response, Op.VALUE).value as Uint8Array)).toBe(`v${i}`);
    });
  });

  it('STATS returns the flat map with the cluster keys', async () => {
    const { client, nodeId } = await connected();
    await client.request({ op: Op.SET, key: toBytes('a'), value: toBytes('1') });
    await client.request({ op: Op.SET, key: toBytes('b'), value: toBytes('2') });
    await client.request({ op: Op.GET, key: toBytes('a') });
    await client.request({ op: Op.DEL, key: toBytes('b') });
    await client.request({ op: Op.MGET, keys: [toBytes('a')] });
    await client.request({ op: Op.MSET, entries: [{ key: toBytes('c'), value: toBytes('3') }] });
    await client.request({ op: Op.PING });
    await rejection(client.request({ op: Op.JOIN, nodeId: 'x', host: '127.0.0.1', port: 1, weight: 1 }));
    const stats = expectOp(await client.request({ op: Op.STATS }), Op.STATS_RESULT).stats;
    expect(stats).toMatchObject({
      id: nodeId,
      engine: name,
      keys: 2,
      connections: 1,
      'ops.get': 1,
      'ops.set': 2,
      'ops.del': 1,
      'ops.mget': 1,
      'ops.mset': 1,
      'ops.ping': 1,
      'ops.stats': 1,
      errors: 1,
      'latency.count': 6,
    });
    for (const key of ['bytes', 'latency.mean_us', 'latency.p50_us', 'latency.p99_us', 'latency.p999_us']) {
      expect(typeof stats[key]).toBe('number');
    }
    expect(stats['latency.max_us']).toBeGreaterThanOrEqual(stats['latency.p50_us'] as number);
    expect(stats.uptime_s).toBeGreaterThanOrEqual(0);
  });

  it('refuses membership ops (NO_PERMISSION from a client, UNKNOWN_OP from a peer) and keeps serving', async () => {
    const { client } = await connected();
    const join = await rejection(
      client.request({ op: Op.JOIN, nodeId: 'n', host: '127.0.0.1', port: 1, weight: 1 }),
    );
    expect(join.code).toBe(ErrorCode.NO_PERMISSION);
    expect(join.message).toMatch(/cluster operation/);
    const peer = await resources.peer(client.socket.remotePort!);
    const fromPeer = await rejection(
      peer.request({ op: Op.JOIN, nodeId: 'n', host: '127.0.0.1', port: 1, weight: 1 }),
    );
    expect(fromPeer.code).toBe(ErrorCode.UNKNOWN_OP);
    expect(fromPeer.message).toMatch(/balancer/);
    expect((await rejection(peer.request({ op: Op.LEAVE, nodeId: 'n' }))).code).toBe(ErrorCode.UNKNOWN_OP);
    expect((await rejection(peer.request({ op: Op.HEARTBEAT, nodeId: 'n', keyCount: 1 }))).code).toBe(
      ErrorCode.UNKNOWN_OP,
    );
    expectOp(await client.request({ op: Op.PING }), Op.OK);
  });

  it('rejects a key over the limit with KEY_TOO_LARGE and keeps the connection', async () => {
    const { client } = await connected();
    const error = await rejection(
      client.request({ op: Op.SET, key: new Uint8Array(1025), value: toBytes('v') }),
    );
    expect(error.code).toBe(ErrorCode.KEY_TOO_LARGE);
    expectOp(await client.request({ op: Op.PING }), Op.OK);
  });
});

describe('storage node, engine failures', () => {
  it('answers INTERNAL / SHUTTING_DOWN when the engine fails and keeps serving', async () => {
    const node = await resources.node({ engine: 'memory' });
    const client = await resources.client(node.address.port);
    const engine = node.engine;
    const originalSet = engine.set.bind(engine);
    const originalGet = engine.get.bind(engine);
    const originalSetNow = engine.setNow?.bind(engine);
    Object.assign(engine, {
      set: () => Promise.reject(new Error('disk on fire')),
      // The memory engine's synchronous write, which a SET uses instead of `set`.
      setNow: () => {
        throw new Error('disk on fire');
      },
      get: () => {
        throw new Error('read failed');
      },
    });
    const setError = await rejection(client.request({ op: Op.SET, key: toBytes('k'), value: toBytes('v') }));
    expect(setError.code).toBe(ErrorCode.INTERNAL);
    expect(setError.message).toMatch(/disk on fire/);
    expect((await rejection(client.request({ op: Op.GET, key: toBytes('k') }))).code).toBe(
      ErrorCode.INTERNAL,
    );
    expect((await rejection(client.request({ op: Op.MGET, keys: [toBytes('k')] }))).code).toBe(
      ErrorCode.INTERNAL,
    );
    const msetError = await rejection(
      client.request({ op: Op.MSET, entries: [{ key: toBytes('k'), value: toBytes('v') }] }),
    );
    expect(msetError.code).toBe(ErrorCode.INTERNAL);
    expectOp(await client.request({ op: Op.PING }), Op.OK);
    Object.assign(engine, { set: originalSet, setNow: originalSetNow, get: originalGet });
    expectOp(await client.request({ op: Op.SET, key: toBytes('k'), value: toBytes('v') }), Op.OK);
    const stats = node.stats();
    expect(stats.errors).toBe(4);
  });
});

describe('storage node, token', () => {
  it('refuses requests before HELLO with UNAUTHORIZED and a wrong token', async () => {
    const node = await resources.node({ token: 's3cret' });
    const anonymous = await resources.connection(node.address.port);
    expect((await rejection(anonymous.request({ op: Op.PING }))).code).toBe(ErrorCode.UNAUTHORIZED);
    const wrong = await resources.connection(node.address.port);
    const refused = await rejection(
      handshake(wrong, 'client', { credentials: { kind: 'user', user: 'default', password: 'nope' } }),
    );
    expect(refused.code).toBe(ErrorCode.UNAUTHORIZED);
    // One attempt per connection: the refused one is closed, nothing more is served on it.
    expect((await rejection(wrong.request({ op: Op.GET, key: toBytes('k') }))).code).toBe(
      ErrorCode.CONNECTION_CLOSED,
    );
    const client = await resources.client(node.address.port, 's3cret');
    expectOp(await client.request({ op: Op.SET, key: toBytes('k'), value: toBytes('v') }), Op.OK);
  });
});

describe('storage node, users', () => {
  it('refuses STATS to a user limited to key prefixes (its counts are of every key), typed, and keeps serving', async () => {
    const usersFile = join(resources.tempDir(), 'users.json');
    const users = [
      { name: 'admin', password: await hashPassword('admin-password') },
      { name: 'scoped', password: await hashPassword('scoped-password'), prefixes: ['tenant-a:'] },
    ];
    writeFileSync(usersFile, JSON.stringify({ users }));
    const node = await resources.node({ usersFile });
    const admin = await resources.connection(node.address.port);
    await handshake(admin, 'client', {
      credentials: { kind: 'user', user: 'admin', password: 'admin-password' },
    });
    expectOp(await admin.request({ op: Op.SET, key: toBytes('other:1'), value: toBytes('v') }), Op.OK);
    expect(expectOp(await admin.request({ op: Op.STATS }), Op.STATS_RESULT).stats.keys).toBe(1);

    const scoped = await resources.connection(node.address.port);
    await handshake(scoped, 'client', {
      credentials: { kind: 'user', user: 'scoped', password: 'scoped-password' },
    });
    const refused = await rejection(scoped.request({ op: Op.STATS }));
    expect(refused.code).toBe(ErrorCode.NO_PERMISSION);
    expect(refused.message).toMatch(/limited to key prefixes/);
    // The same connection goes on serving the user's own keys.
    expectOp(await scoped.request({ op: Op.SET, key: toBytes('tenant-a:1'), value: toBytes('v') }), Op.OK);
    expectOp(await scoped.request({ op: Op.PING }), Op.OK);
  });

  it('locks an address out of direct-client authentication after its failure budget, the right password too, and counts it in STATS', async () => {
    const usersFile = join(resources.tempDir(), 'users.json');
    writeFileSync(
      usersFile,
      JSON.stringify({ users: [{ name: 'app', password: await hashPassword('app-password') }] }),
    );
    const node = await resources.node({ usersFile, authFailureLimit: 2, authFailureWindowMs: 60_000 });
    const attempt = async (password: string): Promise<DstoreError | undefined> => {
      const connection = await resources.connection(node.address.port);
      return handshake(connection, 'client', { credentials: { kind: 'user', user: 'app', password } }).then(
        () => undefined,
        (error: unknown) => error as DstoreError,
      );
    };
    expect((await attempt('guess-1'))?.message).toMatch(/invalid user or password/);
    expect((await attempt('guess-2'))?.message).toMatch(/invalid user or password/);
    // The budget is spent: the right password is refused too, typed, before any proof is checked.
    const locked = await attempt('app-password');
    expect(locked?.code).toBe(ErrorCode.UNAUTHORIZED);
    expect(locked?.message).toMatch(/too many failed authentications/);
    // Peers are not counted: a balancer's connection from the same address is served.
    const peer = await resources.peer(node.address.port);
    const stats = expectOp(await peer.request({ op: Op.STATS }), Op.STATS_RESULT).stats;
    expect(stats['auth.failures']).toBe(2);
    expect(stats['auth.lockouts']).toBe(1);
    expect(stats['auth.lockout_refusals']).toBe(1);
  });

  it('paces an address after 10 failed direct-client authentications, by default without a lockout', async () => {
    const usersFile = join(resources.tempDir(), 'users.json');
    writeFileSync(
      usersFile,
      JSON.stringify({ users: [{ name: 'app', password: await hashPassword('app-password') }] }),
    );
    const node = await resources.node({ usersFile, authPaceMs: 60_000 });
    const attempt = async (password: string): Promise<DstoreError | undefined> => {
      const connection = await resources.connection(node.address.port);
      return handshake(connection, 'client', { credentials: { kind: 'user', user: 'app', password } }).then(
        () => undefined,
        (error: unknown) => error as DstoreError,
      );
    };
    // Eleven wrong: the first ten fail, the eleventh is the paced address's one attempt.
    for (let guess = 0; guess < 11; guess++)
      expect((await attempt(`guess-${guess}`))?.message).toMatch(/invalid user or password/);
    const paced = await attempt('app-password');
    expect(paced?.code).toBe(ErrorCode.UNAUTHORIZED);
    expect(paced?.message).toMatch(/one attempt per 60000 ms/);
    const stats = expectOp(
      await (await resources.peer(node.address.port)).request({ op: Op.STATS }),
      Op.STATS_RESULT,
    ).stats;
    expect(stats).toMatchObject({ 'auth.failures': 11, 'auth.paced_refusals': 1, 'auth.lockouts': 0 });
  });
});

describe('storage node, options', () => {
  it('refuses lmdb without a data directory with INVALID_ARGUMENT', () => {
    expect(() => createStorageNode({ engine: 'lmdb' })).toThrow(/data directory/);
    try {
      createStorageNode({ engine: 'lmdb' });
    } catch (error) {
      expect((error as DstoreError).code).toBe(ErrorCode.INVALID_ARGUMENT);
    }
  });

  it('refuses bad ports, weights and join addresses', () => {
    expect(() => createStorageNode({ port: 70_000 })).toThrow(/port/);
    expect(() => createStorageNode({ weight: 0 })).toThrow(/weight/);
    expect(() => createStorageNode({ join: 'nohost' })).toThrow(/host:port/);
  });

  it('derives a default id from the host name and the bound port', async () => {
    const node = await resources.node({});
    expect(node.id).toMatch(new RegExp(`^node-.+-${node.address.port}$`));
  });

  it('fails start() with UNAVAILABLE when the port is taken, and releases the engine', async () => {
    const first = await resources.node({});
    const second = createStorageNode({ port: first.address.port, logLevel: 'silent' });
    const error = await rejection(second.start());
    expect(error.code).toBe(ErrorCode.UNAVAILABLE);
  });

  it('fails start() with INTERNAL when the lmdb directory cannot be opened', async () => {
    const file = join(resources.tempDir(), 'not-a-directory');
    writeFileSync(file, 'x');
    const node = createStorageNode({
      port: 0,
      engine: 'lmdb',
      dataDir: join(file, 'sub'),
      logLevel: 'silent',
    });
    const error = await rejection(node.start());
    expect(error.code).toBe(ErrorCode.INTERNAL);
    expect(error.message).toMatch(/cannot open the lmdb engine/);
  });

  it('stop() is idempotent', async () => {
    const node = createStorageNode({ port: 0, logLevel: 'silent' });
    await node.start();
    await Promise.all([node.stop(), node.stop()]);
    await node.stop();
  });
});
