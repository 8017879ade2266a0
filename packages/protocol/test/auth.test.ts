import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { newNonce, proveIdentity } from '../src/auth.js';
import {
  AUTH_PACE_AFTER_FAILURES,
  Authenticator,
  type AuthenticatorOptions,
  AuthFailureBudget,
  type Connection,
  type Credentials,
  DstoreError,
  ErrorCode,
  type FrameServer,
  type FrameServerOptions,
  handshake,
  hashPassword,
  keyDenied,
  Op,
  parseUsersFile,
  type Request,
  requestDenied,
  toBytes,
  UserDirectory,
} from '../src/index.js';
import { PROTOCOL_VERSION } from '../src/messages.js';
import { startRogueKdfServer } from '../src/testing-rogue.js';
import { failOnUncaught, Resources, waitFor } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

const SECRET = 'a-cluster-secret-of-32-characters';
/**
 * Cheap scrypt for tests: the cost is the client's, and the algorithm is the same. Clients refuse
 * it by default (below DEFAULT_SCRYPT): the tests' credentials lower their floor to it.
 */
const CHEAP = { N: 1024, r: 8, p: 1 };

/** A server that authenticates with `options` and answers PING to anyone authenticated. */
async function authServer(
  options: Omit<AuthenticatorOptions, 'role' | 'serverId' | 'admit'>,
  server: Partial<FrameServerOptions> = {},
): Promise<{ port: number; frames: FrameServer; seen: Connection[] }> {
  const seen: Connection[] = [];
  let frames: FrameServer | undefined;
  const authenticator = new Authenticator({
    ...options,
    role: 'node',
    serverId: () => 'n1',
    admit: (connection, kind) => frames!.admit(connection, kind),
  });
  const onRequest = (request: Request, connection: Connection): void => {
    seen.push(connection);
    if (authenticator.gate(connection, request)) connection.reply({ op: Op.OK, id: request.id });
  };
  const started = await resources.server({ ...server, requireAuthentication: true, onRequest });
  frames = started.server;
  return { port: started.address.port, frames, seen };
}

async function usersFile(users: unknown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dstore-users-'));
  resources.add(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'users.json');
  await writeFile(path, JSON.stringify({ users }));
  return path;
}

async function attempt(port: number, role: 'client' | 'node', credentials?: Credentials): Promise<unknown> {
  const connection = await resources.connection(port);
  return handshake(connection, role, { credentials }).then(
    () => 'ok',
    (error: unknown) => error,
  );
}

describe('password hashes', () => {
  it('round-trip through a users file and never contain the password', async () => {
    const hash = await hashPassword('correct horse', CHEAP);
    expect(hash).toMatch(/^scram-scrypt\$1024\$8\$1\$/);
    expect(hash).not.toContain('correct horse');
    const [grant] = parseUsersFile(JSON.stringify({ users: [{ name: 'app', password: hash }] }));
    expect(grant).toMatchObject({ name: 'app', access: 'readwrite', limited: false });
  });

  it('refuses malformed users files with INVALID_ARGUMENT naming the entry', async () => {
    const hash = await hashPassword('pw', CHEAP);
    const cases: [unknown, RegExp][] = [
      [{ users: [{ name: 'a', password: 'plain-text' }] }, /users\[0\]\.password/],
      [{ users: [{ name: 'a', password: hash, role: 'admin' }] }, /unknown field 'role'/],
      [{ users: [{ name: 'a', password: hash, access: 'write' }] }, /access/],
      [{ users: [{ name: 'a', password: hash, prefixes: [] }] }, /prefixes/],
      [
        {
          users: [
            { name: 'a', password: hash },
            { name: 'a', password: hash },
          ],
        },
        /twice/,
      ],
      [{ nope: [] }, /expected/],
    ];
    for (const [document, message] of cases) {
      const refused = (() => {
        try {
          parseUsersFile(JSON.stringify(document));
          return undefined;
        } catch (error) {
          return error;
        }
      })();
      expect(refused).toBeInstanceOf(DstoreError);
      expect((refused as DstoreError).code).toBe(ErrorCode.INVALID_ARGUMENT);
      expect((refused as DstoreError).message).toMatch(message);
    }
  });

  it('limits users to their access and prefixes', async () => {
    const hash = await hashPassword('pw', CHEAP);
    const [reader, scoped] = parseUsersFile(
      JSON.stringify({
        users: [
          { name: 'reader', password: hash, access: 'read' },
          { name: 'scoped', password: hash, prefixes: ['app:', 'shared:'] },
        ],
      }),
    );
    expect(keyDenied(reader!, toBytes('k'), false)).toBeUndefined();
    expect(keyDenied(reader!, toBytes('k'), true)).toMatch(/read-only/);
    expect(keyDenied(scoped!, toBytes('app:1'), true)).toBeUndefined();
    expect(keyDenied(scoped!, toBytes('other:1'), false)).toMatch(/"app:", "shared:"/);
    const mset: Request = {
      op: Op.MSET,
      id: 1,
      entries: [
        { key: toBytes('app:1'), value: toBytes('v') },
        { key: toBytes('x'), value: toBytes('v') },
      ],
    };
    expect(requestDenied(scoped!, mset)).toMatch(/may only use keys/);
    expect(requestDenied(reader!, { op: Op.PURGE, id: 1, epoch: 1, ranges: [] })).toMatch(
      /cluster operation/,
    );
  });

  it('classifies the data-model requests: TTL and EXISTS read, the others write, PULL is a peer op', async () => {
    const hash = await hashPassword('pw', CHEAP);
    const [reader, scoped] = parseUsersFile(
      JSON.stringify({
        users: [
          { name: 'reader', password: hash, access: 'read' },
          { name: 'scoped', password: hash, prefixes: ['app:'] },
        ],
      }),
    );
    const key = toBytes('app:k');
    const reads: Request[] = [
      { op: Op.TTL, id: 1, key },
      { op: Op.PEXPIRETIME, id: 1, key },
      { op: Op.READ_PART, id: 1, key, part: 'getbit', start: 7 },
      { op: Op.EXISTS, id: 1, keys: [key, key] },
      // A transaction of reads only is a read.
      {
        op: Op.TRANSACT,
        id: 1,
        key,
        steps: [
          { op: Op.GET_VERSIONED, key },
          { op: Op.TTL, key },
          { op: Op.READ_PART, key, part: 'bitcount' },
        ],
      },
    ];
    const writes: Request[] = [
      { op: Op.SET_WITH, id: 1, key, value: toBytes('v'), condition: 'nx' },
      { op: Op.SET_WITH, id: 1, key, value: toBytes('v'), get: true },
      { op: Op.EXPIRE, id: 1, key, mode: 'persist', ms: 0 },
      { op: Op.GETDEL, id: 1, key },
      { op: Op.INCRBY, id: 1, key, delta: 1n },
      { op: Op.SETRANGE, id: 1, key, value: toBytes('v') },
      { op: Op.INCRBYFLOAT, id: 1, key, increment: toBytes('1.5') },
      { op: Op.SETBIT, id: 1, key, offset: 7, bit: 1 },
      // One step that may write makes the transaction a write.
      {
        op: Op.TRANSACT,
        id: 1,
        key,
        steps: [
          { op: Op.TTL, key },
          { op: Op.INCRBY, key, delta: 1n },
        ],
      },
    ];
    for (const request of reads) expect(requestDenied(reader!, request)).toBeUndefined();
    for (const request of writes) expect(requestDenied(reader!, request)).toMatch(/read-only/);
    for (const request of [...reads, ...writes]) expect(requestDenied(scoped!, request)).toBeUndefined();
    expect(requestDenied(scoped!, { op: Op.EXISTS, id: 1, keys: [key, toBytes('x')] })).toMatch(
      /may only use keys/,
    );
    expect(requestDenied(scoped!, { op: Op.INCRBY, id: 1, key: toBytes('x'), delta: 1n })).toMatch(
      /may only use keys/,
    );
    expect(requestDenied(scoped!, { op: Op.PULL, id: 1, key })).toMatch(/cluster operation/);
    expect(requestDenied(scoped!, { op: Op.TRANSACT, id: 1, key: toBytes('x'), steps: [] })).toMatch(
      /may only use keys/,
    );
  });
});

describe('peer authentication (cluster secret)', () => {
  it('lets a peer with the secret in, and refuses a wrong secret or none', async () => {
    const { port, frames } = await authServer({ clusterSecret: SECRET });
    expect(await attempt(port, 'node', { kind: 'peer', secret: SECRET })).toBe('ok');
    const wrong = await attempt(port, 'node', { kind: 'peer', secret: `${SECRET}-wrong` });
    expect(wrong).toMatchObject({ code: ErrorCode.UNAUTHORIZED, message: 'wrong cluster secret' });
    const none = await attempt(port, 'node');
    expect(none).toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
      message: expect.stringMatching(/--cluster-secret/),
    });
    await waitFor(() => frames.connectionCounts.peer === 1, 5000, 'one admitted peer');
  });

  it('makes a peer with a secret refuse a server that does not prove it', async () => {
    const { port } = await authServer({});
    const refused = await attempt(port, 'node', { kind: 'peer', secret: SECRET });
    expect(refused).toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
      message: expect.stringMatching(/does not authenticate its peers/),
    });
  });

  it('makes a client with a password refuse a server that does not ask for it, and serves one without', async () => {
    // A server without users: anyone at an address the client dials could answer like this.
    const { port } = await authServer({});
    const refused = await attempt(port, 'client', { kind: 'user', user: 'app', password: 'app-pw' });
    expect(refused).toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
      message: expect.stringMatching(/did not ask for a password/),
    });
    expect(await attempt(port, 'client')).toBe('ok');
  });

  it('does not accept a proof replayed on another connection', async () => {
    const { port } = await authServer({ clusterSecret: SECRET });
    // A recorded exchange: the proof of a real peer's first connection.
    const first = await resources.connection(port);
    const nonce = new Uint8Array(18).fill(7);
    const hello = await first.request({ op: Op.HELLO, version: 2, role: 'node', nonce });
    expect(hello.op === Op.HELLO_OK && hello.challenge !== undefined).toBe(true);
    const proof = new Uint8Array(32).fill(1);
    await expect(first.request({ op: Op.AUTH, proof })).rejects.toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
    });
    // Another connection gets another server nonce, so nothing recorded on one works on another;
    // and AUTH without a HELLO challenge is refused outright.
    const second = await resources.connection(port);
    await expect(second.request({ op: Op.AUTH, proof })).rejects.toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
    });
  });
});

describe('user authentication', () => {
  it('authenticates users from a file and the token user, and refuses wrong passwords alike', async () => {
    const file = await usersFile([{ name: 'app', password: await hashPassword('app-pw', CHEAP) }]);
    const users = await UserDirectory.open({ file, token: 'the-token' });
    const { port } = await authServer({ users });
    const app = { kind: 'user', user: 'app', minScryptCost: CHEAP } as const;
    expect(await attempt(port, 'client', { ...app, password: 'app-pw' })).toBe('ok');
    expect(await attempt(port, 'client', { kind: 'user', user: 'default', password: 'the-token' })).toBe(
      'ok',
    );
    const wrong = await attempt(port, 'client', { ...app, password: 'nope' });
    const unknown = await attempt(port, 'client', { kind: 'user', user: 'ghost', password: 'nope' });
    // The same answer for a wrong password and an unknown user: names cannot be probed.
    expect(wrong).toMatchObject({ code: ErrorCode.UNAUTHORIZED, message: 'invalid user or password' });
    expect(unknown).toMatchObject({ code: ErrorCode.UNAUTHORIZED, message: 'invalid user or password' });
    const anonymous = await resources.connection(port);
    await expect(anonymous.request({ op: Op.PING })).rejects.toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
      notExecuted: true,
    });
  });

  it('revokes a removed user on reload: its open connection loses access', async () => {
    const file = await usersFile([
      { name: 'app', password: await hashPassword('pw', CHEAP) },
      { name: 'other', password: await hashPassword('pw', CHEAP) },
    ]);
    const users = await UserDirectory.open({ file });
    const before = users.get('app')!;
    await writeFile(
      file,
      JSON.stringify({ users: [{ name: 'other', password: await hashPassword('pw', CHEAP) }] }),
    );
    await users.reload();
    expect(before.revoked).toBe(true);
    expect(users.get('app')).toBeUndefined();
    // A broken file keeps the users as they were.
    await writeFile(file, '{ not json');
    await expect(users.reload()).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(users.get('other')).toBeDefined();
  });
});

describe('a server asking for a cheap kdf (a rogue server, or a downgrade on a plaintext path)', () => {
  /** {@link startRogueKdfServer} (its AUTHs answered UNAVAILABLE), closed with the test. */
  async function rogueServer(kdf: string): Promise<{ port: number; proofs: Uint8Array[] }> {
    const server = await startRogueKdfServer(kdf, ErrorCode.UNAVAILABLE);
    resources.add(() => server.close());
    return server;
  }

  it('is refused (UNAUTHORIZED) before any proof is sent, unless the caller lowered its floor', async () => {
    const user = { kind: 'user', user: 'app', password: 'app-password' } as const;
    for (const kdf of ['scrypt:1024,1,1', 'scrypt:8192,8,1', 'scrypt:16384,4,2', 'scrypt:16384,1,1']) {
      const { port, proofs } = await rogueServer(kdf);
      const refused = await attempt(port, 'client', user);
      expect(refused).toMatchObject({
        code: ErrorCode.UNAUTHORIZED,
        message: expect.stringMatching(/cheaper than this client's floor scrypt:16384,8,1/),
      });
      expect(proofs).toEqual([]);
    }
    // The default cost, a costlier one, or a floor lowered on purpose: the proof goes out.
    for (const [kdf, minScryptCost] of [
      ['scrypt:16384,8,1', undefined],
      ['scrypt:32768,8,1', undefined],
      ['scrypt:1024,1,1', { N: 1024, r: 1, p: 1 }],
    ] as const) {
      const { port, proofs } = await rogueServer(kdf);
      const answer = await attempt(port, 'client', { ...user, minScryptCost });
      expect(answer).toMatchObject({ code: ErrorCode.UNAVAILABLE });
      expect(proofs).toHaveLength(1);
    }
  });
});

describe('the failed-authentication budget', () => {
  it('locks an address out once, at its limit, tells of it once, and keeps its table bounded', () => {
    const lockouts: string[] = [];
    const budget = new AuthFailureBudget({
      limit: 3,
      maxAddresses: 4,
      onLockout: (address) => lockouts.push(address),
    });
    for (let i = 0; i < 2; i++) budget.failed('::ffff:10.0.0.1');
    expect(budget.refusal('10.0.0.1')).toBeUndefined();
    // The limit spends the budget; every failure after it is counted but told of no more.
    for (let i = 0; i < 20; i++) budget.failed('10.0.0.1');
    expect(budget.refusal('::ffff:10.0.0.1')).toMatch(/too many failed authentications/);
    expect(lockouts).toEqual(['10.0.0.1']);
    expect(budget).toMatchObject({ failures: 22, lockouts: 1, refusals: 1 });
    // Many addresses: the table never holds more than its cap.
    for (let i = 0; i < 100; i++) budget.failed(`10.0.1.${i}`);
    expect(budget.size).toBeLessThanOrEqual(4);
  });

  it('paces an address past its failures, without a lockout: one attempt per pace, whatever the password', async () => {
    const budget = new AuthFailureBudget({ paceMs: 200 });
    for (let i = 0; i < AUTH_PACE_AFTER_FAILURES - 1; i++) {
      expect(budget.refusal('10.0.0.9')).toBeUndefined();
      budget.failed('10.0.0.9');
    }
    // One failure short of the pace: attempts are all let through.
    expect(budget.refusal('10.0.0.9')).toBeUndefined();
    expect(budget.refusal('10.0.0.9')).toBeUndefined();
    budget.failed('10.0.0.9');
    // Paced: one attempt now, the next ones refused at once until the pace has passed.
    expect(budget.refusal('::ffff:10.0.0.9')).toBeUndefined();
    expect(budget.refusal('10.0.0.9')).toMatch(/one attempt per 200 ms, try again in \d+ ms/);
    expect(budget.refusal('10.0.0.9')).toMatch(/too many failed authentications/);
    expect(budget).toMatchObject({ failures: AUTH_PACE_AFTER_FAILURES, paced: 2, refusals: 0, lockouts: 0 });
    // Other addresses are not concerned.
    expect(budget.refusal('10.0.0.10')).toBeUndefined();
    // Once the pace has passed, one more attempt (waited for as a condition, not timed).
    await waitFor(() => budget.refusal('10.0.0.9') === undefined, 5000, 'the next paced attempt');
    expect(budget.refusal('10.0.0.9')).toMatch(/one attempt per 200 ms/);
    // Without pacing (0) and without a limit, nothing is ever refused.
    const open = new AuthFailureBudget({ paceMs: 0 });
    for (let i = 0; i < 50; i++) open.failed('10.0.0.9');
    expect(open.refusal('10.0.0.9')).toBeUndefined();
    expect(open.size).toBe(0);
  });
});

describe('connections before authentication', () => {
  it('closes a connection that does not authenticate in time, with UNAUTHORIZED', async () => {
    const { port, frames } = await authServer({ clusterSecret: SECRET }, { authTimeoutMs: 200 });
    const idle = await resources.connection(port);
    const closed = new Promise<Error | undefined>((resolve) => idle.once('close', resolve));
    await closed;
    expect(frames.connectionCounts.pending).toBe(0);
  });

  it('evicts the oldest unauthenticated connections so a peer always gets in', async () => {
    const { port, frames } = await authServer(
      { clusterSecret: SECRET },
      { maxPendingConnections: 20, maxPendingPerAddress: 10 },
    );
    let evicted = 0;
    frames.on('evicted', () => evicted++);
    const idle = await Promise.all(Array.from({ length: 50 }, () => resources.socket(port)));
    // A socket is connected once the kernel completed its handshake, which can be before the
    // server accepts it: wait until the server has seen all 50 (10 may stay pending).
    await waitFor(() => evicted >= 40, 5000, 'evictions');
    expect(await attempt(port, 'node', { kind: 'peer', secret: SECRET })).toBe('ok');
    expect(frames.connectionCounts.peer).toBe(1);
    expect(idle).toHaveLength(50);
  });

  it('keeps a connection in the middle of its handshake while silent sockets flood in', async () => {
    const { port, frames } = await authServer(
      { clusterSecret: SECRET },
      { maxPendingConnections: 20, maxPendingPerAddress: 10 },
    );
    let evicted = 0;
    frames.on('evicted', () => evicted++);
    const peer = await resources.connection(port);
    const nonce = newNonce();
    const hello = await peer.request({ op: Op.HELLO, version: PROTOCOL_VERSION, role: 'node', nonce });
    if (hello.op !== Op.HELLO_OK || hello.challenge === undefined) throw new Error('no challenge');
    // 30 more unauthenticated sockets from the same address, past the cap of 10: the oldest
    // pending connection is the peer, but it has spoken, so the silent ones go first.
    await Promise.all(Array.from({ length: 30 }, () => resources.socket(port)));
    await waitFor(() => evicted >= 21, 5000, 'evictions');
    const credentials = { kind: 'peer', secret: SECRET } as const;
    const { proof } = await proveIdentity(credentials, 'node', nonce, hello.challenge);
    const accepted = await peer.request({ op: Op.AUTH, proof });
    expect(accepted.op).toBe(Op.AUTH_OK);
    expect(frames.connectionCounts.peer).toBe(1);
  });

  it('keeps peers and clients in separate slots', async () => {
    const users = await UserDirectory.open({ token: 'tok' });
    const { port, frames } = await authServer({ clusterSecret: SECRET, users }, { maxConnections: 1 });
    const client = { kind: 'user', user: 'default', password: 'tok' } as const;
    expect(await attempt(port, 'client', client)).toBe('ok');
    expect(await attempt(port, 'client', client)).toMatchObject({ code: ErrorCode.BUSY });
    // The client slots are full; a peer still gets in.
    expect(await attempt(port, 'node', { kind: 'peer', secret: SECRET })).toBe('ok');
    expect(frames.connectionCounts).toMatchObject({ client: 1, peer: 1 });
  });
});
