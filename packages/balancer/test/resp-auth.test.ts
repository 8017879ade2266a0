/**
 * The RESP port with a users file: AUTH and HELLO AUTH against the stored verifiers, NOAUTH before,
 * per-key grants answered NOPERM, a users-file reload, with redis-cli, ioredis and node-redis 5;
 * and the per-address budget of failed authentications shared with the native port.
 */
import { writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { Connection, ErrorCode, handshake, hashPassword } from '@dstore/protocol';
import { Redis } from 'ioredis';
import { createClient } from 'redis5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { connect, Resources, refusal, startBalancer, temporaryDir, waitFor } from './helpers.js';
import { exchange as exchangeOnce, redisCli, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let balancer: Balancer;
let port: number;
let usersFile: string;

async function writeUsers(names: string[]): Promise<void> {
  const all = [
    { name: 'writer', password: await hashPassword('writer-password') },
    { name: 'reader', password: await hashPassword('reader-password'), access: 'read' },
    { name: 'scoped', password: await hashPassword('scoped-password'), prefixes: ['tenant-a:'] },
  ];
  writeFileSync(usersFile, JSON.stringify({ users: all.filter((user) => names.includes(user.name)) }));
}

beforeAll(async () => {
  usersFile = join(temporaryDir(resources, 'resp-users-'), 'users.json');
  await writeUsers(['writer', 'reader', 'scoped']);
  ({ balancer, respPort: port } = await startRespCluster(resources, 2, { usersFile }));
}, 60_000);
afterAll(() => resources.releaseAll());

/** The value of an unlabelled series of `balancer`'s `/metrics` (0 when absent). */
async function metricOf(balancer: Balancer, name: string): Promise<number> {
  const text = await balancer.metrics.registry.metrics();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/** An ioredis client as `username`, disconnected at release. */
async function login(username: string, password: string): Promise<Redis> {
  const redis = new Redis({ port, username, password, lazyConnect: true, maxRetriesPerRequest: 0 });
  redis.on('error', () => undefined);
  resources.add(() => redis.disconnect());
  await redis.connect();
  return redis;
}

describe('RESP authentication and grants', () => {
  it('refuses commands before AUTH and wrong passwords with Redis errors', async () => {
    expect(await redisCli(port, 'GET', 'k')).toBe('NOAUTH Authentication required.');
    expect(await redisCli(port, 'PING')).toBe('NOAUTH Authentication required.');
    expect(await redisCli(port, 'AUTH', 'writer', 'wrong')).toBe(
      'WRONGPASS invalid username-password pair or user is disabled.',
    );
    expect(await redisCli(port, 'AUTH', 'nobody', 'writer-password')).toBe(
      'WRONGPASS invalid username-password pair or user is disabled.',
    );
    expect(
      await redisCli(port, '--user', 'writer', '--pass', 'writer-password', '--no-auth-warning', 'PING'),
    ).toBe('PONG');
  });

  it('runs commands pipelined behind AUTH with its outcome', async () => {
    const reply = await new Promise<string>((resolve) => {
      const socket = netConnect({ host: '127.0.0.1', port });
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        if (text.endsWith('+PONG\r\n')) {
          socket.destroy();
          resolve(text);
        }
      });
      socket.write('AUTH writer writer-password\r\nGET never-set\r\nPING\r\n');
    });
    expect(reply).toBe('+OK\r\n$-1\r\n+PONG\r\n');
  });

  it("holds a client that has not authenticated to Redis's limits (10 elements, 16 KiB bulks), then closes it", async () => {
    const exchange = (bytes: string): Promise<string> => exchangeOnce(port, bytes);
    const elevenArgs = `*11\r\n${'$1\r\nx\r\n'.repeat(11)}`;
    expect(await exchange(elevenArgs)).toBe('-ERR Protocol error: unauthenticated multibulk length\r\n');
    // The bulk's header alone is refused: its megabyte is never waited for.
    expect(await exchange('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n')).toBe(
      '-ERR Protocol error: unauthenticated bulk length\r\n',
    );
    // Within the limits: NOAUTH, and the connection stays open (closed here by QUIT).
    expect(await exchange(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16384\r\n${'v'.repeat(16384)}\r\nQUIT\r\n`)).toBe(
      '-NOAUTH Authentication required.\r\n+OK\r\n',
    );
    // An AUTH pipelined before a large command lifts them, as Redis (which runs the AUTH first).
    const value = 'w'.repeat(100_000);
    expect(
      await exchange(
        `AUTH writer writer-password\r\n*3\r\n$3\r\nSET\r\n$7\r\npre:big\r\n$${value.length}\r\n${value}\r\n*2\r\n$6\r\nSTRLEN\r\n$7\r\npre:big\r\nQUIT\r\n`,
      ),
    ).toBe('+OK\r\n+OK\r\n:100000\r\n+OK\r\n');
  });

  it('checks read/write grants and key prefixes per key (NOPERM)', async () => {
    const writer = await login('writer', 'writer-password');
    await writer.set('shared', 'from writer');
    const reader = await login('reader', 'reader-password');
    expect(await reader.get('shared')).toBe('from writer');
    await expect(reader.set('shared', 'x')).rejects.toThrow(/^NOPERM user 'reader' is read-only/);
    await expect(reader.del('shared')).rejects.toThrow(/^NOPERM/);
    const scoped = await login('scoped', 'scoped-password');
    await scoped.mset('tenant-a:1', 'a', 'tenant-a:2', 'b');
    expect(await scoped.mget('tenant-a:1', 'tenant-a:2')).toEqual(['a', 'b']);
    await expect(scoped.get('shared')).rejects.toThrow(
      /^NOPERM user 'scoped' may only use keys starting with/,
    );
    await expect(scoped.mget('tenant-a:1', 'shared')).rejects.toThrow(/^NOPERM/);
    await expect(scoped.dbsize()).rejects.toThrow(/^NOPERM .*whole-keyspace commands are refused/);
    // SCAN shows a scoped user its own keys only.
    const seen = new Set<string>();
    let cursor = '0';
    do {
      const [next, keys] = await scoped.scan(cursor, 'COUNT', 100);
      for (const key of keys) seen.add(key);
      cursor = next;
    } while (cursor !== '0');
    expect([...seen].sort()).toEqual(['tenant-a:1', 'tenant-a:2']);
    // ... and so does KEYS (the other user's key 'shared' matches '*' too).
    expect((await scoped.keys('*')).sort()).toEqual(['tenant-a:1', 'tenant-a:2']);
  });

  it('authenticates node-redis 5 over RESP3 with HELLO 3 AUTH', async () => {
    const client = createClient({
      socket: { port },
      RESP: 3,
      username: 'writer',
      password: 'writer-password',
    });
    client.on('error', () => undefined);
    await client.connect();
    try {
      await client.set('redis5-auth', 'ok');
      expect(await client.get('redis5-auth')).toBe('ok');
    } finally {
      client.destroy();
    }
  });

  it('drops a user removed from the users file at the next command', async () => {
    const scoped = await login('scoped', 'scoped-password');
    expect(await scoped.get('tenant-a:1')).toBe('a');
    await writeUsers(['writer', 'reader']);
    await balancer.reloadUsers();
    await expect(scoped.get('tenant-a:1')).rejects.toThrow(/^NOPERM user 'scoped' no longer exists/);
    await waitFor(() => scoped.status !== 'ready', 'the connection closed');
    await writeUsers(['writer', 'reader', 'scoped']);
    await balancer.reloadUsers();
  });
});

describe('online password guessing', () => {
  it('locks an address out after its failure budget on either port, without checking passwords, until the window passes', async () => {
    const limit = 4;
    const dir = temporaryDir(resources, 'resp-guess-');
    const file = join(dir, 'users.json');
    writeFileSync(
      file,
      JSON.stringify({ users: [{ name: 'writer', password: await hashPassword('writer-password') }] }),
    );
    // A short window so that the test can wait for the lockout's end (a condition, not a delay).
    const guarded = await startBalancer(resources, {
      respPort: 0,
      usersFile: file,
      authFailureLimit: limit,
      authFailureWindowMs: 2000,
    });
    const resp = guarded.address.respPort;
    const counter = (name: string): Promise<number> => metricOf(guarded, name);
    const wrong = 'AUTH writer wrong\r\n';
    // Three wrong AUTHs on one RESP connection: each answered WRONGPASS, then it is closed.
    expect(await exchangeOnce(resp, wrong.repeat(5))).toBe(
      '-WRONGPASS invalid username-password pair or user is disabled.\r\n'.repeat(3),
    );
    expect(await counter('dstore_balancer_auth_failures_total')).toBe(3);
    // The native port shares the budget: its failure spends the last one.
    const native = await connect(resources, guarded.address.port);
    const refused = await refusal(
      handshake(native, 'client', { credentials: { kind: 'user', user: 'writer', password: 'nope' } }),
    );
    expect(refused).toMatchObject({ code: ErrorCode.UNAUTHORIZED, message: 'invalid user or password' });
    expect(await counter('dstore_balancer_auth_failures_total')).toBe(limit);
    expect(await counter('dstore_balancer_auth_lockouts_total')).toBe(1);

    // Locked out: the right password is refused too, at once and typed, on both ports, and no
    // password is checked (the failures stay where they were; the refusals are counted).
    const lockedResp = await exchangeOnce(resp, 'AUTH writer writer-password\r\nPING\r\n');
    expect(lockedResp).toMatch(/^-NOAUTH UNAUTHORIZED: too many failed authentications from this address/);
    expect(lockedResp).not.toContain('+OK');
    const lockedNative = await refusal(
      handshake(await connect(resources, guarded.address.port), 'client', {
        credentials: { kind: 'user', user: 'writer', password: 'writer-password' },
      }),
    );
    expect(lockedNative.code).toBe(ErrorCode.UNAUTHORIZED);
    expect(lockedNative.message).toMatch(/too many failed authentications/);
    expect(await counter('dstore_balancer_auth_failures_total')).toBe(limit);
    expect(await counter('dstore_balancer_auth_lockout_refusals_total')).toBe(2);

    // Once the window has passed, the right password is accepted again, on both ports.
    let answer = '';
    await waitFor(
      async () => {
        answer = await exchangeOnce(resp, 'AUTH writer writer-password\r\nQUIT\r\n');
        return answer.startsWith('+OK');
      },
      'the lockout to end',
      15_000,
    );
    expect(answer).toBe('+OK\r\n+OK\r\n');
    const after = await connect(resources, guarded.address.port);
    await handshake(after, 'client', {
      credentials: { kind: 'user', user: 'writer', password: 'writer-password' },
    });
    expect(await counter('dstore_balancer_auth_failures_total')).toBe(limit);
  });

  it('paces an address after 10 failures (native and RESP together): one attempt per pace, refused at once in between, the right password included', async () => {
    const dir = temporaryDir(resources, 'resp-pace-');
    const file = join(dir, 'users.json');
    writeFileSync(
      file,
      JSON.stringify({ users: [{ name: 'writer', password: await hashPassword('writer-password') }] }),
    );
    // A pace long enough that the attempts right after the tenth failure all fall inside it.
    const paced = await startBalancer(resources, { respPort: 0, usersFile: file, authPaceMs: 60_000 });
    const resp = paced.address.respPort;
    const fromGuesser = (bytes: string): Promise<string> => exchangeOnce(resp, bytes, '127.0.0.3');
    // Nine failures on three RESP connections, the tenth on the native port.
    for (let round = 0; round < 3; round++)
      await fromGuesser('AUTH writer a\r\nAUTH writer b\r\nAUTH writer c\r\n');
    const socket = netConnect({ host: '127.0.0.1', port: paced.address.port, localAddress: '127.0.0.3' });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const native = new Connection(socket);
    resources.add(() => native.destroy());
    expect(
      await refusal(
        handshake(native, 'client', { credentials: { kind: 'user', user: 'writer', password: 'd' } }),
      ),
    ).toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
      message: 'invalid user or password',
    });
    // Paced: the next attempt gets its turn (a wrong one here), the following ones are refused at
    // once, the right password too, and no password is checked for them.
    expect(await fromGuesser('AUTH writer e\r\nQUIT\r\n')).toMatch(/^-WRONGPASS/);
    const refused = await fromGuesser('AUTH writer writer-password\r\nPING\r\n');
    expect(refused).toMatch(
      /^-NOAUTH UNAUTHORIZED: too many failed authentications from this address: one attempt per 60000 ms/,
    );
    expect(refused).not.toContain('+OK');
    const metric = (name: string): Promise<number> => metricOf(paced, name);
    expect(await metric('dstore_balancer_auth_failures_total')).toBe(11);
    expect(await metric('dstore_balancer_auth_paced_refusals_total')).toBe(1);
    expect(await metric('dstore_balancer_auth_lockouts_total')).toBe(0);
    // Another address is not concerned.
    expect(await exchangeOnce(resp, 'AUTH writer writer-password\r\nQUIT\r\n')).toBe('+OK\r\n+OK\r\n');
  });

  it('keeps one address’s flood of AUTH guesses from delaying another address’s AUTH or taking more than one scrypt at a time', async () => {
    const dir = temporaryDir(resources, 'resp-flood-');
    const file = join(dir, 'users.json');
    writeFileSync(
      file,
      JSON.stringify({ users: [{ name: 'writer', password: await hashPassword('writer-password') }] }),
    );
    // Defaults: no failure budget, so every guess is checked.
    const target = await startBalancer(resources, { respPort: 0, usersFile: file });
    const resp = target.address.respPort;
    const metric = (name: string): Promise<number> => metricOf(target, name);
    // The guesser: 20 connections from 127.0.0.2, each one wrong AUTH (all different), so 20 scrypts to run.
    let guessesAnswered = 0;
    for (let index = 0; index < 20; index++) {
      const socket = netConnect({ host: '127.0.0.1', port: resp, localAddress: '127.0.0.2' });
      resources.add(() => socket.destroy());
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        guessesAnswered += chunk.toString('latin1').split('-WRONGPASS').length - 1;
      });
      socket.write(`AUTH writer wrong-guess-${index}\r\n`);
    }
    await waitFor(
      async () => (await metric('dstore_balancer_password_checks_waiting')) >= 12,
      'the guesses to queue',
    );
    // A client from another address: its AUTH takes the next turn but one, not the 12th or later.
    let answeredBefore = -1;
    const reply = await new Promise<string>((resolve) => {
      const socket = netConnect({ host: '127.0.0.1', port: resp, localAddress: '127.0.0.1' });
      resources.add(() => socket.destroy());
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        if (answeredBefore < 0) answeredBefore = guessesAnswered;
        text += chunk.toString('latin1');
        if (text.endsWith('+PONG\r\n')) resolve(text);
      });
      socket.write('AUTH writer writer-password\r\nPING\r\n');
    });
    expect(reply).toBe('+OK\r\n+PONG\r\n');
    // The guess running when it came and one turn of the guesser's address (one more may have
    // been answered while our answer travelled).
    expect(answeredBefore).toBeLessThanOrEqual(3);
    await waitFor(() => guessesAnswered === 20, 'every guess to be answered');
    expect(await metric('dstore_balancer_password_checks_running_peak')).toBe(1);
    expect(await metric('dstore_balancer_password_checks_total')).toBe(21);

    // Clients reconnecting with the right password: answered from the remembered one, no scrypt.
    const again = await Promise.all(
      Array.from({ length: 10 }, () => exchangeOnce(resp, 'AUTH writer writer-password\r\nQUIT\r\n')),
    );
    expect(again).toEqual(Array.from({ length: 10 }, () => '+OK\r\n+OK\r\n'));
    expect(await metric('dstore_balancer_password_checks_total')).toBe(21);
    expect(await metric('dstore_balancer_password_checks_remembered_total')).toBe(10);
  });
});
